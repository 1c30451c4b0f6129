"""Property-based tests of every endpoint from the OpenAPI document (schemathesis): whatever a caller sends,
valid or not, the API answers with a status below 500. The API runs as its own process (`rtrec serve`) over
the session's real cluster and broker, so the generated requests meet the real stack."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from deploy.cluster import StoreCluster
from deploy.kafka_broker import KafkaBroker
from deploy.settings import Settings, load_settings
from manager.app import create_app
from tests.conftest import ROOT, free_port_block, settings_env

KEY = {"Authorization": "Bearer dev-operator-key"}


@pytest.fixture(scope="module")
def fuzz_api(
    settings: Settings, cluster: StoreCluster, broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    port = free_port_block(1)
    env = {
        **os.environ,
        **settings_env(settings),
        "PYTHONPATH": str(ROOT),
        "RTREC_API__PORT": str(port),
        "RTREC_RECOMMENDATIONS__MODELS_DIR": str(tmp_path_factory.mktemp("fuzz-models")),
    }
    log = open(Path(settings.run_dir) / "fuzz-api.log", "ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", "serve", "--config", str(ROOT / "deploy" / "local.toml")],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.2)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(30)
        log.close()


# The OpenAPI document of the app as served (building the app opens nothing: that happens in its lifespan).
schema = schemathesis.openapi.from_dict(create_app(load_settings(ROOT / "deploy" / "local.toml")).openapi())


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_request_gets_a_server_error(case: schemathesis.Case, fuzz_api: str) -> None:
    response = case.call(base_url=fuzz_api, headers=KEY, timeout=15)
    assert response.status_code < 500, (case.method, case.formatted_path, case.body, response.text[:500])
    if response.status_code >= 400:
        body = response.json()
        assert body.get("detail"), response.text[:300]  # a message, always


def _health_count(url: str) -> float:
    text = httpx.get(f"{url}/metrics", headers=KEY, timeout=5).text
    prefix = 'rtrec_http_request_seconds_count{method="GET",route="/health",status="200"}'
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def test_metrics_count_the_requests_of_every_api_worker(fuzz_api: str) -> None:
    """`rtrec serve` runs two workers by default; /metrics, answered by either, counts what both served."""
    before = _health_count(fuzz_api)
    with httpx.Client(base_url=fuzz_api, timeout=5) as api:  # new connections spread over the workers
        for _ in range(40):
            assert api.get("/health", headers={"Connection": "close"}).status_code == 200
    assert _health_count(fuzz_api) - before == 40
