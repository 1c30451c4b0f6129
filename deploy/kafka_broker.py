"""A single-node Apache Kafka broker in KRaft mode, run from the jars `make setup` fetched from Maven Central
(deploy/kafka/pom.xml) with the machine's JDK, plus topic creation from config."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from deploy import processes
from deploy.settings import TOPICS, Settings

# Topic config: records carry the time the broker appended them (see create_topics).
ARRIVAL_TIMESTAMPS = {"message.timestamp.type": "LogAppendTime"}

LOG4J = """log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=WARN
log4j.logger.org.apache.kafka=WARN
"""


class KafkaBroker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.kafka = settings.kafka
        self.dir = settings.run_dir / "kafka"
        self.libs = settings.kafka_home / "libs"

    @property
    def pid_path(self) -> Path:
        return self.dir / "kafka.pid"

    @property
    def log_path(self) -> Path:
        return self.dir / "kafka.log"

    def _java(self) -> str:
        java_home = os.environ.get("JAVA_HOME")
        if java_home and (Path(java_home) / "bin" / "java").exists():
            return str(Path(java_home) / "bin" / "java")
        java = shutil.which("java")
        if java is None:
            raise processes.ProcessError("no java on PATH; run `make setup` (installs a JDK from Debian)")
        return java

    def _classpath(self) -> str:
        if not any(self.libs.glob("kafka_2.13-*.jar")):
            raise processes.ProcessError(f"Kafka jars missing in {self.libs}; run `make setup`")
        return str(self.libs.resolve() / "*")

    def _write_config(self) -> Path:
        k = self.kafka
        data_dir = (self.dir / "data").resolve()
        properties = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{k.host}:{k.controller_port}",
            "listeners": f"PLAINTEXT://{k.host}:{k.port},CONTROLLER://{k.host}:{k.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{k.host}:{k.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(data_dir),
            "num.partitions": str(k.default_partitions),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.retention.hours": "168",
            # a record's timestamp is when it arrived (replay windows select by it), not the producer's clock
            "log.message.timestamp.type": "LogAppendTime",
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / "server.properties"
        path.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
        (self.dir / "log4j.properties").write_text(LOG4J)
        return path

    def _java_cmd(self, main_class: str, *args: str) -> list[str]:
        log4j = (self.dir / "log4j.properties").resolve()
        return [
            self._java(),
            f"-Xmx{self.kafka.heap_mb}m",
            f"-Xms{min(self.kafka.heap_mb, 256)}m",
            "-XX:+UseG1GC",
            f"-Dlog4j.configuration=file:{log4j}",
            "-cp",
            self._classpath(),
            main_class,
            *args,
        ]

    def start(self, timeout: float = 90.0) -> None:
        """Format storage on first start, launch the broker, wait for it, create the topics. Idempotent."""
        if processes.is_alive(processes.read_pid(self.pid_path)):
            asyncio.run(self.create_topics(timeout))
            return
        config = self._write_config()
        if not (self.dir / "data" / "meta.properties").exists():
            cid = _cluster_id()
            subprocess.run(  # noqa: S603
                self._java_cmd("kafka.tools.StorageTool", "format", "-t", cid, "-c", str(config)),
                check=True,
                capture_output=True,
            )
        processes.spawn(
            self._java_cmd("kafka.Kafka", str(config.resolve())), log_path=self.log_path, pid_path=self.pid_path
        )
        processes.wait_port(self.kafka.host, self.kafka.port, timeout, pid_path=self.pid_path, what="Kafka")
        asyncio.run(self.create_topics(timeout))

    async def create_topics(self, timeout: float = 60.0) -> None:
        """Create the DESIGN.md topics with the configured partition counts (existing ones are kept), stamped
        with arrival times: a replay window selects records by timestamp, and a producer's clock (CreateTime)
        would move its records out of the window (a slow clock) or hide every later record of a partition
        behind one stamped in the future (Kafka's offset lookup returns the first record at or after a time)."""
        deadline = time.monotonic() + timeout
        while True:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka.bootstrap, request_timeout_ms=10000)
            try:
                await admin.start()
                existing = set(await admin.list_topics())
                topics = [self.kafka.topic(key) for key in TOPICS]
                wanted = [
                    NewTopic(
                        name=topic,
                        num_partitions=self.kafka.partitions_for(topic),
                        replication_factor=1,
                        topic_configs=ARRIVAL_TIMESTAMPS,
                    )
                    for topic in topics
                    if topic not in existing
                ]
                if wanted:
                    try:
                        await admin.create_topics(wanted)
                    except TopicAlreadyExistsError:
                        pass
                return
            except (KafkaConnectionError, KafkaError, OSError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
            finally:
                await admin.close()

    def stop(self) -> bool:
        return processes.stop(self.pid_path, timeout=30.0)

    def running(self) -> bool:
        """This stack's broker process is alive."""
        return processes.is_alive(processes.read_pid(self.pid_path))

    def reachable(self) -> bool:
        """A broker answers on the configured port (whoever started it)."""
        return processes.port_open(self.kafka.host, self.kafka.port)


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes in URL-safe base64 without padding, never starting with '-' (the
    storage tool would read it as an option; Kafka's own Uuid.randomUuid avoids it the same way)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid
