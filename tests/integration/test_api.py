"""HTTP API against a real uvicorn server (lifespan and all) on loopback, over the real cluster."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn

from deploy.cluster import StoreCluster
from deploy.settings import Settings
from manager.app import create_app

READER = {"Authorization": "Bearer dev-reader-key"}
WRITER = {"Authorization": "Bearer dev-writer-key"}
OPERATOR = {"Authorization": "Bearer dev-operator-key"}
SCORER = {"Authorization": "Bearer dev-scorer-key"}


@pytest.fixture(scope="module")
async def api(settings: Settings, cluster: StoreCluster) -> AsyncIterator[httpx.AsyncClient]:
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=settings.api.port, log_level="warning", lifespan="on"
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    async with httpx.AsyncClient(base_url=settings.api.url, timeout=10) as client:
        yield client
    server.should_exit = True
    await task


def _tx(uid: str, i: int, ts: float, amount: float, direction: str = "out", **extra: object) -> dict[str, object]:
    return {
        "tx_id": f"{uid}-{i}",
        "client_id": f"{uid}-c",
        "ts": ts,
        "amount": amount,
        "currency": "RUB",
        "direction": direction,
        **extra,
    }


async def _replace(
    api: httpx.AsyncClient, subject: str, version: float, features: list[Any], source: str = "client_profile"
) -> httpx.Response:
    """``PUT /v1/subjects/{subject}/sources/{source}``: the subject's ``source`` becomes ``features``."""
    return await api.put(
        f"/v1/subjects/{subject}/sources/{source}", headers=WRITER, json={"version": version, "features": features}
    )


async def test_ops_endpoints_need_no_key(api: httpx.AsyncClient) -> None:
    assert (await api.get("/health")).json() == {"status": "ok"}
    assert (await api.get("/ready")).json() == {"status": "ready", "warnings": []}
    await api.get("/v1/subjects/x/features", headers=READER)
    metrics = await api.get("/metrics")
    assert metrics.status_code == 200 and "rtrec_http_request_seconds" in metrics.text
    # the store's health as gauges, one per instance (the first round runs at startup)
    assert metrics.text.count("rtrec_store_instance_up{") == 6
    assert 'rtrec_store_replication_following{instance="storage-1-b",peer="storage-1-a",replicaset="1"} 1.0' in (
        metrics.text
    )
    assert "rtrec_store_memory_used_ratio{" in metrics.text
    assert (await api.get("/openapi.json")).status_code == 200


async def test_auth_roles(api: httpx.AsyncClient, uid: str) -> None:
    body = [_tx(uid, 1, time.time(), 10)]
    missing = await api.post("/v1/features/transactions", json=body)
    assert missing.status_code == 401 and "bearer" in missing.json()["detail"].lower()
    unknown = await api.post("/v1/features/transactions", json=body, headers={"Authorization": "Bearer nope"})
    assert unknown.status_code == 401 and unknown.json()["detail"] == "unknown API key"
    forbidden = await api.post("/v1/features/transactions", json=body, headers=READER)
    assert forbidden.status_code == 403 and "writer" in forbidden.json()["detail"]
    assert (await api.post("/v1/features/transactions", json=body, headers=WRITER)).status_code == 200
    assert (await api.delete(f"/v1/subjects/{uid}-c/objects/{uid}-1", headers=READER)).status_code == 403
    assert (await api.get(f"/v1/subjects/{uid}-c/features", headers=OPERATOR)).status_code == 200
    assert (await api.get(f"/v1/subjects/{uid}-c/features")).status_code == 401
    # least privilege: the client x product matrix is the scorer's alone, and the scorer reads nothing else
    for role in (READER, WRITER, OPERATOR):
        assert (await api.get("/v1/als/matrix", headers=role)).status_code == 403
    assert (await api.get("/v1/als/matrix", headers=SCORER)).status_code == 200
    assert (await api.get(f"/v1/subjects/{uid}-c/features", headers=SCORER)).status_code == 403
    assert (await api.get(f"/v1/recommendations/{uid}-c", headers=SCORER)).status_code == 403


async def test_a_rejected_key_is_logged_without_the_key(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-live-0123456789abcdef"
    with caplog.at_level("WARNING", logger="rtrec.auth"):
        answer = await api.get("/v1/subjects/x/features", headers={"Authorization": f"Bearer {secret}"})
    assert answer.status_code == 401
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert "rejected API key" in logged and secret not in logged and secret[:8] not in logged


async def test_hostile_http_input_is_a_4xx_with_a_message_and_a_request_id(api: httpx.AsyncClient, uid: str) -> None:
    tx = _tx(uid, 1, time.time(), 10)
    nan = await api.post(
        "/v1/features/transactions",
        content=f'[{{"tx_id": "a", "client_id": "{uid}", "ts": 1790000000, "amount": NaN, '
        '"currency": "RUB", "direction": "out"}]',
        headers={**WRITER, "Content-Type": "application/json"},
    )
    assert nan.status_code == 422 and "amount" in str(nan.json()["detail"]) and nan.json()["request_id"]
    assert nan.headers["x-request-id"] == nan.json()["request_id"]
    ahead = time.time() + 3600  # a fast clock: stored, it would hide itself from reads until then
    future = await api.post("/v1/features/transactions", json=[{**tx, "ts": ahead}], headers=WRITER)
    assert future.status_code == 422 and "events[0].ts is 3600 s ahead" in future.json()["detail"]
    frozen = await _replace(api, uid, ahead, [{"name": "profile.segment", "value": "retail"}])
    assert frozen.status_code == 422 and "version is" in frozen.json()["detail"]
    huge_now = await api.post(
        f"/v1/subjects/{uid}/aggregate",
        content='{"now": 1' + "0" * 400 + ', "specs": [{"feature": "x", "fn": "sum"}]}',
        headers={**READER, "Content-Type": "application/json"},
    )
    assert huge_now.status_code == 422 and "now" in str(huge_now.json()["detail"])
    for query in ({"from": "1e400"}, {"to": "-inf"}, {"from": "nan"}, {"limit": "99999999999999999999"}):
        answer = await api.get(f"/v1/subjects/{uid}/features", params=query, headers=READER)
        assert answer.status_code == 422, (query, answer.text)
    deep = await api.post(f"/v1/subjects/{uid}/aggregate", content="[" * 100_000, headers=READER)
    assert 400 <= deep.status_code < 500
    too_big = await api.post("/v1/features/transactions", json=[tx] * 40_000, headers=WRITER)  # ~5 MB
    assert too_big.status_code == 413 and "larger than" in too_big.json()["detail"]

    async def chunks() -> Any:
        for _ in range(10):
            yield b"[" + b" " * (1024 * 1024) + b"]"

    streamed = await api.post("/v1/features/transactions", content=chunks(), headers=WRITER)
    assert streamed.status_code == 413
    echoed = await api.post("/v1/features/transactions", json=[{**tx, "amount": "x" * 100_000}], headers=WRITER)
    assert echoed.status_code == 422 and len(echoed.content) < 2000  # the input is not echoed back
    for value in ("123456789012345678901234567890", "NaN", "Infinity", '"' + "x" * 5000 + '"'):
        put = await api.put(
            f"/v1/subjects/{uid}/sources/client_profile",
            content='{"features": [{"name": "n", "value": ' + value + "}]}",
            headers={**WRITER, "Content-Type": "application/json"},
        )
        assert put.status_code == 422, (value[:20], put.text[:200])
    view = await api.get(f"/v1/subjects/{uid}/aggregates", params={"view": "v" * 5000}, headers=READER)
    assert view.status_code == 404 and len(view.content) < 1000 and view.json()["request_id"]
    unauthorized = await api.get(f"/v1/subjects/{uid}/features")
    assert unauthorized.status_code == 401 and unauthorized.json()["request_id"]


async def test_validation_errors_are_422_with_a_message(api: httpx.AsyncClient, uid: str) -> None:
    bad_amount = await api.post("/v1/features/transactions", json=[_tx(uid, 1, time.time(), -5)], headers=WRITER)
    assert bad_amount.status_code == 422 and "amount" in str(bad_amount.json()["detail"])
    bad_ts = await api.post("/v1/features/transactions", json=[_tx(uid, 1, "yesterday", 5)], headers=WRITER)  # type: ignore[arg-type]
    assert bad_ts.status_code == 422 and "timestamp" in str(bad_ts.json()["detail"])
    bad_subject = await api.get("/v1/subjects/bad%20id!/features", headers=READER)
    assert bad_subject.status_code == 422
    specs = {"specs": [{"feature": "tx.out.amount", "fn": "sum", "window": "30x"}]}
    bad_window = await api.post(f"/v1/subjects/{uid}/aggregate", json=specs, headers=READER)
    assert bad_window.status_code == 422 and "window" in str(bad_window.json()["detail"])
    bad_fn = await api.post(
        f"/v1/subjects/{uid}/aggregate", json={"specs": [{"feature": "x", "fn": "median"}]}, headers=READER
    )
    assert bad_fn.status_code == 422
    empty = await api.post(f"/v1/subjects/{uid}/aggregate", json={"specs": []}, headers=READER)
    assert empty.status_code == 422
    unknown_view = await api.get(f"/v1/subjects/{uid}/aggregates", params={"view": "nope"}, headers=READER)
    assert unknown_view.status_code == 404 and "client_profile" in unknown_view.json()["detail"]
    reversed_range = await api.get(f"/v1/subjects/{uid}/features", params={"from": 10, "to": 5}, headers=READER)
    assert reversed_range.status_code == 422


async def test_ad_hoc_aggregate_contract(api: httpx.AsyncClient, uid: str) -> None:
    now = 1_790_000_000.0
    day = 86400.0
    events = [
        _tx(uid, 1, now, 100.0),  # exactly now: inside every window
        _tx(uid, 2, now - 30 * day, 50.0),  # exactly now - 30d: outside the 30d window
        _tx(uid, 3, now - 10 * day, 20.0, mcc=5411),
        _tx(uid, 4, now + 1, 1000.0),  # after now: never counted
        _tx(uid, 5, now - 5 * day, 7.0, direction="in"),
    ]
    written = await api.post("/v1/features/transactions", json=events, headers=WRITER)
    assert written.status_code == 200 and written.json()["accepted_events"] == 5
    specs = [
        {"feature": "tx.out.amount", "fn": "sum", "window": "30d"},
        {"feature": "tx.out.amount", "fn": "count", "window": "30d"},
        {"feature": "tx.out.amount", "fn": "min", "window": "30d"},
        {"feature": "tx.out.amount", "fn": "max", "window": "31d"},
        {"feature": "tx.out.amount", "fn": "avg", "window": "30d"},
        {"feature": "tx.out.amount", "fn": "last"},
        {"feature": "tx.out.mcc.groceries", "fn": "sum", "window": "30d"},
        {"feature": "tx.in.amount", "fn": "count"},
        {"feature": "tx.out.mcc.travel", "fn": "count", "window": "30d"},
        {"feature": "tx.out.mcc.travel", "fn": "sum", "window": "30d"},
        {"feature": "tx.out.mcc.travel", "fn": "last"},
    ]
    answer = await api.post(f"/v1/subjects/{uid}-c/aggregate", json={"now": now, "specs": specs}, headers=READER)
    assert answer.status_code == 200
    assert answer.json() == {"values": [120.0, 2, 20.0, 100.0, 60.0, 100.0, 20.0, 1, 0, None, None]}
    # ISO 8601 `now` works the same; without `now` the current time is used (the t+1 event is then past)
    iso = await api.post(
        f"/v1/subjects/{uid}-c/aggregate", headers=READER, json={"now": "2026-09-21T14:13:20Z", "specs": specs[:1]}
    )
    assert iso.json() == {"values": [120.0]}
    current = await api.post(f"/v1/subjects/{uid}-c/aggregate", json={"specs": [specs[5]]}, headers=READER)
    assert current.json() == {"values": [1000.0]}


async def test_a_client_fact_is_checked_as_a_client_event_checks_it(api: httpx.AsyncClient, uid: str) -> None:
    """A birth date of ``true`` was stored, and serving read it as 1970: a minor looked 56 and was offered
    loans. A fact now passes as the consumer's decoding passes it: refused with its place and reason, or
    normalised (an ISO date to epoch seconds, blank text to absent)."""
    subject = f"{uid}-facts"
    segment = {"name": "profile.segment", "value": "retail"}
    refused = (("profile.birth_date", True), ("profile.registered_at", "soon"), ("profile.region", 7))
    for name, value in (*refused, ("profile.segment", "bogus")):
        put = await _replace(api, subject, 1700000000, [segment, {"name": name, "value": value}])
        assert put.status_code == 422 and put.json()["detail"].startswith(f"features[1] ({name}): "), put.text
    # a name another source's extractor writes: aggregates read names whatever their source
    for source, name in (("client_profile", "history.profile.birth_date"), ("bureau", "tx.out.amount")):
        put = await _replace(api, subject, 1700000000, [{"name": name, "value": 1.0}], source)
        assert put.status_code == 422 and f"features[0] ({name}): a name of source" in put.json()["detail"], put.text
    # a segment but no valid one: the value is refused first, with its place
    put = await _replace(api, subject, 1700000000, [{"name": "profile.segment", "value": " retail "}])
    assert put.status_code == 422 and put.json()["detail"].startswith("features[0] (profile.segment): "), put.text
    birth_date, blank_region = (
        {"name": "profile.birth_date", "value": "1990-01-01"},
        {"name": "profile.region", "value": "  "},
    )
    put = await _replace(api, subject, 1700000000, [segment, birth_date, blank_region])
    assert put.status_code == 200 and put.json()["written"] == 2
    rows = (await api.get(f"/v1/subjects/{subject}/features", headers=READER)).json()["features"]
    stored = {row["name"]: row["value"] for row in rows if row["source"] == "client_profile"}
    assert stored == {"profile.segment": "retail", "profile.birth_date": 631152000.0}


async def test_replace_delete_and_raw_reads(api: httpx.AsyncClient, uid: str, settings: Settings) -> None:
    subject = f"{uid}-c"
    put = await _replace(
        api,
        subject,
        1700000000,
        [{"name": "profile.segment", "value": "sme"}, {"name": "profile.region", "value": "kazan"}],
    )
    assert put.status_code == 200 and put.json()["applied"] and put.json()["written"] == 2
    assert put.json()["history_refused"] == 0
    # a profile without its segment would leave an older version's segment visible; the history is the store's
    partial = await _replace(api, subject, 1700000100, [{"name": "profile.region", "value": "ufa"}])
    assert partial.status_code == 422 and "profile.segment" in partial.json()["detail"]
    erase = await api.put(f"/v1/subjects/{subject}/sources/client_history", headers=WRITER, json={"features": []})
    assert erase.status_code == 422 and "append-only" in erase.json()["detail"]
    older = await _replace(api, subject, 1600000000, [{"name": "profile.segment", "value": "retail"}])
    assert older.json()["applied"] is False and older.json()["stored_version"] == 1700000000
    rows = (await api.get(f"/v1/subjects/{subject}/features", headers=READER)).json()["features"]
    profile = {(r["name"], r["value"]) for r in rows if r["source"] == "client_profile"}
    assert profile == {("profile.segment", "sme"), ("profile.region", "kazan")}
    # client data is kept as history too, the late older version included: the facts as of a past time
    history = {(r["name"], r["value"], r["time_use"]) for r in rows if r["source"] == "client_history"}
    assert history == {
        ("history.profile.segment", "sme", 1700000000),
        ("history.profile.region", "kazan", 1700000000),
        ("history.profile.segment", "retail", 1600000000),
    }
    as_of = await api.post(
        f"/v1/subjects/{subject}/aggregate",
        headers=READER,
        json={
            "now": 1650000000,
            "specs": [
                {"feature": "history.profile.segment", "fn": "last"},
                {"feature": "profile.segment", "fn": "last"},
            ],
        },
    )
    assert as_of.json()["values"] == ["retail", None]
    changed = await api.post(
        f"/v1/subjects/{subject}/aggregate",
        headers=READER,
        json={"now": 1700000001, "specs": [{"feature": "history.profile.segment", "fn": "changes", "window": "365d"}]},
    )
    assert changed.json()["values"] == [1]
    view = await api.get(
        f"/v1/subjects/{subject}/aggregates", params={"view": "client_profile", "now": 1700000001}, headers=READER
    )
    assert view.status_code == 200 and view.json()["values"]["last(profile.segment)"] == "sme"
    assert len(view.json()["values"]) == len(settings.views["client_profile"])

    now = time.time()
    await api.post(
        "/v1/features/transactions", headers=WRITER, json=[_tx(uid, i, now - i * 100, 1.0 + i) for i in range(5)]
    )
    ranged = await api.get(
        f"/v1/subjects/{subject}/features",
        headers=READER,
        params={"from": now - 250, "to": now - 100, "name": "tx.out.amount"},
    )
    assert [r["object"] for r in ranged.json()["features"]] == [f"{uid}-2", f"{uid}-1"]
    deleted = await api.delete(
        f"/v1/subjects/{subject}/objects/{uid}-1", headers=WRITER, params={"source": "transactions"}
    )
    assert deleted.json() == {"deleted": 1}
    wrong = await api.delete(f"/v1/subjects/{subject}/objects/{uid}-1", headers=WRITER, params={"source": "Tx!"})
    assert wrong.status_code == 422
    again = await api.post("/v1/features/transactions", headers=WRITER, json=[_tx(uid, 1, now - 100, 2.0)])
    assert again.json()["tombstoned"] == 1
    # a transaction sent again with another category replaces its first version (the first one's row goes)
    for mcc, superseded in ((4511, 0), (5411, 1)):
        resent = await api.post(
            "/v1/features/transactions", headers=WRITER, json=[_tx(uid, 2, now - 200, 3.0, mcc=mcc)]
        )
        assert resent.json()["superseded"] == superseded
    rows = (await api.get(f"/v1/subjects/{subject}/features", headers=READER)).json()["features"]
    assert {r["name"] for r in rows if r["object"] == f"{uid}-2"} == {"tx.out.amount", "tx.out.mcc.groceries"}
