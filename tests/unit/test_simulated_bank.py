"""The simulated bank behaves like the bank it stands for: eligibility as the catalogue says, and life events
(a trip booking, a one-off large inflow) that raise uptake for weeks, which only fresh features can see."""

from __future__ import annotations

import dataclasses
import multiprocessing
import time
from collections import defaultdict

import pytest

from extractors.simulate import DAY, ELIGIBILITY, NEVER, BankSimulator, SimulationConfig, _Client, _Signals
from extractors.simulate_worker import events_from_worker
from recommenders.catalogue import load_catalogue

END = 1_790_000_000.0
TRAVEL_MCC = 4511


def _events(clients: int, days: int, seed: int) -> tuple[BankSimulator, list[tuple[str, str, dict[str, object]]]]:
    sim = BankSimulator(SimulationConfig(clients=clients, days=days, seed=seed, end_ts=END, record_chances=True))
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


# ---- the rules, one at a time, on a plain retail client (pure functions of the client's state) --------------
DAY_INDEX = 100
PLAIN = _Client(
    client_id="c",
    segment="retail",
    age=45.0,
    income=60_000.0,
    saver=0.5,
    traveler=0.2,
    online=0.5,
    tenure_days=1000.0,
    region="moscow",
    industry=None,
    balance=120_000.0,
    held=set(),
    pending={},
)


def _chance(product: str, **changes: object) -> float:
    client = dataclasses.replace(PLAIN, **{"held": set(), **changes})  # type: ignore[arg-type]
    return BankSimulator._propensity(client, product, _Signals.of(client, 30_000.0, DAY_INDEX))


@pytest.mark.parametrize(
    ("product", "event", "days_ago", "lasts_days"),
    [
        ("deposit", "windfall_day", 10, 45),
        ("insurance", "trip_day", 3, 14),
        ("credit_card", "trip_day", 3, 14),
        ("premium_debit_card", "raise_day", 30, 90),
        ("credit_card", "raise_day", 30, 90),
        ("mortgage", "raise_day", 30, 90),
        ("mortgage", "moved_day", 20, 60),
        ("insurance", "moved_day", 20, 60),
    ],
)
def test_a_life_event_raises_the_chance_for_weeks_then_fades(
    product: str, event: str, days_ago: int, lasts_days: int
) -> None:
    before = _chance(product, **{event: -NEVER})
    assert _chance(product, **{event: DAY_INDEX - days_ago}) > 2 * before
    assert _chance(product, **{event: DAY_INDEX - lasts_days - 1}) == before


def test_a_windfall_brings_investments_to_savers_only() -> None:
    recent = DAY_INDEX - 10
    assert _chance("investments", saver=0.6, windfall_day=recent) > 5 * _chance("investments", saver=0.6)
    assert _chance("investments", saver=0.2, windfall_day=recent) == _chance("investments", saver=0.2)


def test_a_move_brings_a_loan_and_a_new_business_brings_acquiring_and_an_overdraft() -> None:
    moved = DAY_INDEX - 20
    assert _chance("consumer_loan", moved_day=moved) > 2 * _chance("consumer_loan")
    assert _chance("consumer_loan", moved_day=DAY_INDEX - 61) == _chance("consumer_loan")
    business = {"segment": "sme", "industry": "62.01"}
    for product in ("sme_acquiring", "sme_overdraft"):
        opened = _chance(product, business_day=DAY_INDEX - 30, **business)
        assert opened > 1.8 * _chance(product, **business), product
        assert _chance(product, business_day=DAY_INDEX - 91, **business) == _chance(product, **business)


def test_profile_changes_are_client_events_with_the_new_facts() -> None:
    """A move or a new business reaches the bank as a client event on its day, after the first one; the
    client's uptake rules see the same day (``moved_day``, ``business_day``)."""
    _, events = _events(300, 120, seed=7)
    versions = defaultdict(list)
    for topic, key, payload in events:
        if topic == "clients":
            versions[key].append(payload)
    changed = {key: v for key, v in versions.items() if len(v) > 1}
    assert changed, "some clients change their profile"
    moves = [v for v in changed.values() if v[0]["region"] != v[1]["region"]]
    businesses = [v for v in changed.values() if v[0]["segment"] == "retail" and v[1]["segment"] == "sme"]
    assert moves and businesses
    assert all(v[1]["ts"] > v[0]["ts"] for v in changed.values())  # type: ignore[operator]


def test_a_move_raises_the_chances_from_its_day() -> None:
    """The uptake rules see the move the client event reports: the day's chances of a mortgage, insurance and
    a loan rise over the day before's (the rest of a client's state moves little in a day)."""
    sim, events = _events(300, 120, seed=7)
    moves = {}
    first_region: dict[str, object] = {}
    for topic, key, payload in events:
        if topic == "clients" and payload["segment"] == "retail":
            if key in first_region and payload["region"] != first_region[key]:
                moves[key] = float(payload["ts"])  # type: ignore[arg-type]
            first_region.setdefault(key, payload["region"])
    rises = []
    for key, ts in moves.items():
        after_day = sim.start_ts + ((ts - sim.start_ts) // DAY + 1) * DAY + 1  # just after the move day's end
        before, after = sim.chances(key, after_day - DAY), sim.chances(key, after_day)
        rises += [
            after[p] / before[p] for p in ("mortgage", "insurance", "consumer_loan") if p in before and p in after
        ]
    assert len(rises) >= 10
    assert sorted(rises)[len(rises) // 2] > 1.8  # the median product's chance almost triples


def test_running_short_brings_a_loan() -> None:
    assert _chance("consumer_loan", balance=10_000.0) > 3 * _chance("consumer_loan", balance=20_000.0)


def test_life_stages_peak_and_fall_off_on_both_sides() -> None:
    assert _chance("mortgage", age=32.0) > 2 * _chance("mortgage", age=50.0)
    assert _chance("mortgage", age=32.0) > 2 * _chance("mortgage", age=22.0)
    assert _chance("investments", age=50.0) > _chance("investments", age=30.0)
    assert _chance("investments", age=50.0) > _chance("investments", age=72.0)
    assert _chance("consumer_loan", age=32.0) > 1.5 * _chance("consumer_loan", age=60.0)
    assert _chance("credit_card", age=27.0) > 1.5 * _chance("credit_card", age=55.0)
    assert _chance("savings_account", age=62.0) > 2 * _chance("savings_account", age=59.0)


def test_minimums_hold_most_clients_back() -> None:
    assert _chance("deposit", balance=40_000.0) < 0.2 * _chance("deposit", balance=60_000.0)
    assert _chance("investments", balance=90_000.0) < 0.3 * _chance("investments", balance=110_000.0)
    assert _chance("premium_debit_card", income=130_000.0) > 4 * _chance("premium_debit_card", income=110_000.0)


def test_cross_selling_and_bundles() -> None:
    assert _chance("consumer_loan", held={"credit_card"}) > 1.5 * _chance("consumer_loan")
    assert _chance("investments", held={"deposit"}) > 1.5 * _chance("investments")
    sme = {"segment": "sme", "industry": "62.01"}
    assert _chance("sme_overdraft", held={"sme_acquiring"}, **sme) > 1.5 * _chance("sme_overdraft", **sme)
    trip = DAY_INDEX - 3
    assert _chance("insurance", trip_day=trip, held={"premium_debit_card"}) < 0.5 * _chance("insurance", trip_day=trip)


@pytest.mark.parametrize(
    ("product", "changes", "eligible"),
    [
        ("credit_card", {"age": 20.0}, False),
        ("credit_card", {"age": 21.0}, True),
        ("credit_card", {"age": 70.5}, False),
        ("credit_card", {"age": 69.9}, False),  # clients age: 69.9 + 100 simulated days > 70
        ("mortgage", {"age": 65.5}, False),
        ("consumer_loan", {"tenure_days": 80.0}, True),  # tenure grows: 80 + 100 simulated days >= 90
        ("mortgage", {"tenure_days": 60.0}, False),  # 160 < 180
        ("mortgage", {"tenure_days": 90.0}, True),
        ("savings_account", {"segment": "sme"}, False),
        ("sme_acquiring", {"segment": "sme"}, True),
        ("sme_acquiring", {}, False),
    ],
)
def test_eligibility_by_age_tenure_and_segment_at_the_day(
    product: str, changes: dict[str, object], eligible: bool
) -> None:
    client = dataclasses.replace(PLAIN, **changes)  # type: ignore[arg-type]
    assert BankSimulator._eligible(client, product, DAY_INDEX) is eligible


# ---- chances(): what the evaluation ranks beside the models -------------------------------------------------
def test_chances_at_a_time_are_those_after_the_last_whole_day_before_it() -> None:
    sim, events = _events(30, 60, seed=3)
    held_at_end: dict[str, set[str]] = defaultdict(set)
    for topic, key, payload in events:
        if topic == "products":
            change = held_at_end[key].add if payload["action"] == "opened" else held_at_end[key].discard
            change(str(payload["product"]))
    assert any(held_at_end.values())
    assert sim.chances("c000000", sim.start_ts) == {}  # no day has ended yet
    assert sim.chances("nobody", sim.end_ts) == {}
    for key in {k for _, k, _ in events}:
        for day in (5, 33, 59):
            midnight = sim.start_ts + day * DAY
            # nothing that happens during a day shows before it ends: no look-ahead for a cut inside the day
            assert sim.chances(key, midnight) == sim.chances(key, midnight + DAY - 1)
        latest = sim.chances(key, sim.end_ts)
        assert latest and all(0 < chance < 1 for chance in latest.values())
        assert not set(latest) & held_at_end[key]  # nothing opens after the last day ends
    unrecorded = BankSimulator(SimulationConfig(clients=3, days=20, seed=3, end_ts=END))
    list(unrecorded.events())
    assert unrecorded.chances("c000000", END) == {}


def test_a_trip_shows_in_the_chances_after_its_day_ends() -> None:
    sim, events = _events(200, 120, seed=11)
    seen = 0
    trips = defaultdict(list)
    for topic, key, payload in events:
        if topic == "transactions" and payload.get("mcc") == TRAVEL_MCC:
            trips[key].append(float(payload["ts"]))  # type: ignore[arg-type]
    for key, times in trips.items():
        for ts in times:
            if any(0 < ts - t <= 16 * DAY for t in times):
                continue  # a trip in the 14 whole days before: insurance was already up
            day_end = sim.start_ts + (int((ts - sim.start_ts) // DAY) + 1) * DAY
            before, after = sim.chances(key, ts), sim.chances(key, day_end)
            if "insurance" in before and "insurance" in after:
                assert after["insurance"] > 2.5 * before["insurance"]
                seen += 1
    assert seen >= 10


# ---- the bank made in parts (a worker process simulates while `rtrec evaluate` loads) -------------------------
def test_a_part_of_the_bank_simulated_alone_gives_the_same_events() -> None:
    config = SimulationConfig(clients=6, days=40, seed=5, end_ts=1.7e9)
    whole = list(BankSimulator(config).events())
    part = list(BankSimulator(config).events(range(2, 4)))
    assert part == [event for event in whole if event[1] in ("c000002", "c000003")] and part


def test_the_worker_gives_the_same_events_in_order_and_the_same_chances() -> None:
    """Parts of two clients each, simulated in a worker process, against the bank simulated in this one; the
    worker's chances land in the caller's simulator."""
    config = SimulationConfig(clients=7, days=40, seed=5, record_chances=True)  # "today" fixed by the caller
    here, there = BankSimulator(config), BankSimulator(config)
    assert list(events_from_worker(there, part_clients=2)) == list(here.events())
    assert here.recorded_chances().keys() == there.recorded_chances().keys() and len(here.recorded_chances()) == 7
    at = here.start_ts + 30 * DAY
    assert all(here.chances(client, at) == there.chances(client, at) for client in here.recorded_chances())


def test_a_caller_that_stops_early_does_not_wait_for_the_parts_simulated_ahead() -> None:
    """Loading failed after the first event: the worker is stopped at once, not left to finish its parts."""
    config = SimulationConfig(clients=600, days=365, seed=5, end_ts=1.7e9)
    events = events_from_worker(BankSimulator(config), part_clients=200)  # a few seconds a part
    next(events)
    started = time.monotonic()
    events.close()
    assert time.monotonic() - started < 1.0
    assert multiprocessing.active_children() == []


def test_no_event_is_dated_after_the_banks_end() -> None:
    """A reversal is dated up to three days after its payment; one that would fall after the bank's end has not
    happened yet (the consumers dead-letter events from the future)."""
    simulator = BankSimulator(SimulationConfig(clients=60, days=30, seed=29, end_ts=1_790_000_000.0))
    times = [float(p["ts"]) for _, _, p in simulator.events()]  # type: ignore[arg-type]
    assert max(times) <= simulator.end_ts
