from __future__ import annotations

from collections import Counter
from datetime import date
from pathlib import Path

import orjson
import pytest

from deploy.settings import TOPICS
from extractors.berka import berka_events, birth_date, default_shift_years
from extractors.decode import decode_event
from extractors.simulate import BankSimulator, SimulationConfig

BERKA = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "berka"


def test_simulator_is_deterministic_for_a_seed_and_end_date() -> None:
    config = SimulationConfig(clients=8, days=40, seed=3, end_ts=1_790_000_000.0)
    first = list(BankSimulator(config).events())
    assert first == list(BankSimulator(config).events())
    other = list(BankSimulator(SimulationConfig(clients=8, days=40, seed=4, end_ts=1_790_000_000.0)).events())
    assert first != other


def test_simulated_events_are_valid_and_cover_every_kind() -> None:
    events = list(BankSimulator(SimulationConfig(clients=30, days=90, seed=1, end_ts=1_790_000_000.0)).events())
    kinds = Counter(topic for topic, _, _ in events)
    assert set(kinds) == {"transactions", "transaction_deletes", "clients", "applications", "products"}
    for topic, key, payload in events:
        event = decode_event(TOPICS[topic], orjson.dumps(payload))
        assert event.client_id == key  # type: ignore[union-attr]


def test_simulated_uptake_depends_on_behaviour() -> None:
    """Savers with high balances should open deposits more often than others (signal for the models)."""
    sim = BankSimulator(SimulationConfig(clients=400, days=180, seed=9, end_ts=1_790_000_000.0))
    balance: dict[str, list[float]] = {}
    deposit: set[str] = set()
    for topic, key, payload in sim.events():
        if topic == "transactions":
            balance.setdefault(key, []).append(float(payload["balance"]))  # type: ignore[arg-type]
        elif topic == "applications" and payload["product"] == "deposit":
            deposit.add(key)
    median_balance = {k: sorted(v)[len(v) // 2] for k, v in balance.items()}
    takers = [median_balance[k] for k in deposit if k in median_balance]
    others = [v for k, v in median_balance.items() if k not in deposit]
    assert takers and others
    assert sorted(takers)[len(takers) // 2] > sorted(others)[len(others) // 2]


def test_berka_birth_numbers_and_shift() -> None:
    assert birth_date("706213") == date(1970, 12, 13)  # women: month + 50
    assert birth_date("450204") == date(1945, 2, 4)
    shift = default_shift_years(date(2026, 11, 22))
    assert shift % 4 == 0 and date(1994 + shift, 3, 30) <= date(2026, 11, 22)


@pytest.mark.skipif(not BERKA.exists(), reason="the Berka files live in ../shared/datasets/berka")
def test_berka_events_are_valid_and_complete() -> None:
    counts: Counter[str] = Counter()
    for topic, _, payload in berka_events(BERKA, shift_years=32):
        decode_event(TOPICS[topic], orjson.dumps(payload))
        counts[topic] += 1
    assert counts["transactions"] == 49102
    assert counts["clients"] > 1000 and counts["products"] > 100
