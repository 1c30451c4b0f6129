"""What the feature store client is configured with: where the cluster is, who connects, how long features
live. Composed into the project settings by ``deploy/settings.py`` (section ``[store]`` and ``[ttl]``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

StoreRole = Literal["ops", "ingest", "api"]


class StoreSettings(BaseModel):
    """The Tarantool cluster: replica sets of one master and N-1 replicas each, on loopback ports."""

    host: str = "127.0.0.1"
    base_port: int = 3301
    # Instance j of replica set i listens on base_port + (i - 1) * port_stride + j.
    port_stride: int = 10
    replicasets: int = 2
    instances_per_replicaset: int = 3
    # The operations user (schema, bucket moves, failover, replication): the launcher and ops commands.
    user: str = "rtrec"
    password: str = "change-me"
    # Least privilege for the services: the consumers may only write features; the API may also read,
    # aggregate and use the recommendation cache (lua/access.lua).
    ingest_user: str = "rtrec_ingest"
    ingest_password: str = "change-me-ingest"
    api_user: str = "rtrec_api"
    api_password: str = "change-me-api"
    bucket_count: int = 3000
    memtx_memory_mb: int = 1024
    # Tarantool's write-ahead log: "write" keeps every change across a crash; "none" only for throwaway
    # stores whose data can be made again (`rtrec evaluate`), where dropping it saved about 12 % of the load
    # time (within the noise).
    wal_mode: Literal["write", "none"] = "write"
    max_features_per_subject: int = 100_000
    # distinct feature names per replica set (lua/constants.lua DEFAULT_MAX_NAMES says why)
    max_names: int = Field(default=2000, ge=100)
    deny_subjects: list[str] = Field(default_factory=list)
    expiry_interval_s: float = 60.0
    # least time between two walks over the features for expired ones (lua/expiry.lua)
    feature_sweep_interval_s: float = 3600.0
    # How long a deletion's tombstone blocks its object. None: as long as a row of the deleted source may live
    # (TtlPolicy.longest_days, 500 days for transactions), so a replay of an old window, whose deletion lies
    # outside it, cannot bring a deleted transaction back (7 days did, for any replay a week later).
    tombstone_ttl_s: float | None = None
    read_from: Literal["master", "replica"] = "master"
    # The write lease (lua/mastership.lua): a master takes client data only while all its replicas but one
    # follow it, so a master cut off from its replicas cannot take writes that replicas serving reads never
    # get. False keeps ingest going on a master alone, at that risk; the instances read it at their start.
    writes_need_replica: bool = True

    def followers_needed(self, instances: int) -> int:
        """Replicas that must follow a master for it to take client data: enough that those which do not are
        one at most, and one replica alone, following nobody, is never trusted for reads (freshness.py)."""
        return max(instances - 2, 0) if self.writes_need_replica else 0

    @model_validator(mode="after")
    def _replicas_need_the_log(self) -> StoreSettings:
        """Replicas follow their master through its write-ahead log: without one they would never get a row."""
        if self.wal_mode == "none" and self.instances_per_replicaset > 1:
            raise ValueError("store.wal_mode = 'none' needs instances_per_replicaset = 1 (replicas read the log)")
        return self

    def credentials(self, role: StoreRole) -> tuple[str, str]:
        """(user, password) of a store role: ``ops``, ``ingest`` or ``api``."""
        if role == "ingest":
            return self.ingest_user, self.ingest_password
        if role == "api":
            return self.api_user, self.api_password
        return self.user, self.password

    write_batch_rows: int = 5000
    request_timeout_s: float = 5.0


HELD_UNTIL_CHANGED_DAYS = 36525.0  # a century


class TtlSettings(BaseModel):
    """How long features live after their ``time_use``; the most specific rule wins (name, source, default).

    Facts that hold until replaced or closed (what a client holds, the current client data) live a century: at 10
    years a card opened in 2015 and never closed expired, and its holder was offered the card again."""

    # 500 days: a 365-day window at the earliest training cut of `rtrec train` (130 days back) reaches 495 days
    # back; at 400 those windows were cut short at training time only, a skew between training and serving
    default_days: float = 500.0
    sources: dict[str, float] = Field(
        default_factory=lambda: {
            "transactions": 500.0,
            "client_profile": HELD_UNTIL_CHANGED_DAYS,
            "client_history": 3650.0,
            "registry": HELD_UNTIL_CHANGED_DAYS,
            "applications": 500.0,
            "products": HELD_UNTIL_CHANGED_DAYS,
        }
    )
    names: dict[str, float] = Field(default_factory=dict)
