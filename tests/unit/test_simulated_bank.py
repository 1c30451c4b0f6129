"""The simulated bank behaves like the bank it stands for: eligibility as the catalogue says, and life events
(a trip booking, a one-off large inflow) that raise uptake for weeks, which only fresh features can see."""

from __future__ import annotations

from collections import defaultdict

from extractors.simulate import DAY, ELIGIBILITY, BankSimulator, SimulationConfig
from recommenders.catalogue import load_catalogue

END = 1_790_000_000.0
TRAVEL_MCC = 4511


def _events(clients: int, days: int, seed: int) -> tuple[BankSimulator, list[tuple[str, str, dict[str, object]]]]:
    sim = BankSimulator(SimulationConfig(clients=clients, days=days, seed=seed, end_ts=END))
    return sim, list(sim.events())


def test_simulator_eligibility_is_the_catalogues() -> None:
    catalogue = load_catalogue("deploy/products.toml")
    assert set(ELIGIBILITY) == set(catalogue.ids)
    for product in catalogue.products:
        segments, min_age, max_age, min_tenure = ELIGIBILITY[product.id]
        rule = product.eligibility
        assert set(segments) == set(rule.segments), product.id
        assert min_age == (rule.min_age or 0), product.id
        assert max_age == (rule.max_age or 200), product.id
        assert min_tenure == (rule.min_tenure_days or 0), product.id


def test_no_client_applies_for_a_product_its_segment_cannot_take() -> None:
    _, events = _events(300, 120, seed=5)
    segment: dict[str, object] = {}
    applied = 0
    for topic, key, payload in events:  # a client's events come in time order
        if topic == "clients":
            segment[key] = payload["segment"]
        elif topic == "applications":
            applied += 1
            assert segment[key] in ELIGIBILITY[str(payload["product"])][0], payload
    assert applied


def _weekly_rates(
    events: list[tuple[str, str, dict[str, object]]], product: str, recent: dict[str, list[float]], window_days: float
) -> tuple[float, float]:
    """Applications for ``product`` per client-week shortly after one of the client's ``recent`` times, and
    per client-week otherwise."""
    applications = defaultdict(list)
    first, last = min(float(p["ts"]) for _, _, p in events), max(float(p["ts"]) for _, _, p in events)
    for topic, key, payload in events:
        if topic == "applications" and payload["product"] == product and payload["status"] == "submitted":
            applications[key].append(float(payload["ts"]))  # type: ignore[arg-type]
    counts = {True: [0, 0], False: [0, 0]}  # after an event? -> [weeks, applications]
    clients = {key for _, key, _ in events}
    for key in clients:
        week = first
        while week < last:
            after = any(0 <= week - t <= window_days * DAY for t in recent.get(key, []))
            counts[after][0] += 1
            counts[after][1] += sum(week <= t < week + 7 * DAY for t in applications[key])
            week += 7 * DAY
    return counts[True][1] / max(counts[True][0], 1), counts[False][1] / max(counts[False][0], 1)


def test_a_trip_booking_brings_travel_insurance() -> None:
    _, events = _events(400, 180, seed=11)
    trips = defaultdict(list)
    for topic, key, payload in events:
        if topic == "transactions" and payload.get("mcc") == TRAVEL_MCC:
            trips[key].append(float(payload["ts"]))  # type: ignore[arg-type]
    after_trip, otherwise = _weekly_rates(events, "insurance", trips, 14)
    assert after_trip > 3 * otherwise > 0


def test_a_large_inflow_brings_deposits() -> None:
    _, events = _events(400, 180, seed=12)
    salary = {}
    large = defaultdict(list)
    for topic, key, payload in events:
        if topic == "transactions" and payload["channel"] == "payroll":
            salary[key] = float(payload["amount"])  # type: ignore[arg-type]
    for topic, key, payload in events:
        if topic == "transactions" and payload["direction"] == "in" and payload["channel"] == "transfer":
            if key in salary and float(payload["amount"]) > 3 * salary[key]:  # type: ignore[arg-type]
                large[key].append(float(payload["ts"]))  # type: ignore[arg-type]
    assert large
    after_inflow, otherwise = _weekly_rates(events, "deposit", large, 45)
    assert after_inflow > 2 * otherwise > 0


def test_chances_are_the_latest_weekly_decisions_and_leave_out_what_is_held() -> None:
    sim, events = _events(30, 60, seed=3)
    held: dict[str, set[str]] = defaultdict(set)
    for topic, key, payload in events:
        if topic == "products" and payload["action"] == "opened":
            held[key].add(str(payload["product"]))
        elif topic == "products":
            held[key].discard(str(payload["product"]))
    assert sim.chances("c000000", sim.start_ts) == {}  # before the first weekly decision
    for key in {k for _, k, _ in events}:
        latest = sim.chances(key, sim.end_ts)
        assert latest and all(0 < chance < 1 for chance in latest.values())
        assert not set(latest) & held[key]  # nothing opens after the last weekly decision
