"""The demo judges its models on its own bank only: it refuses a store that holds anything else."""

import argparse
from pathlib import Path
from typing import Any

import pytest

from deploy import cli, demo_bank
from deploy.demo_bank import BankId
from deploy.settings import load_settings

BANK = BankId("simulated", 600, 200, 7, 1_796_515_200.0)


def test_an_empty_store_takes_any_bank() -> None:
    assert demo_bank.conflict(0, 0, None, BANK) is None


def test_the_same_bank_streamed_again_is_welcome() -> None:
    assert demo_bank.conflict(1_200_000, 0, BANK, BANK) is None


def test_a_store_holding_data_nobody_claimed_is_refused() -> None:
    reason = demo_bank.conflict(2_176_957, 0, None, BANK)
    assert reason is not None
    assert "2,176,957 features" in reason and "did not stream" in reason


def test_messages_still_to_consume_count_as_held_data() -> None:
    assert demo_bank.conflict(0, 5_000, None, BANK) is not None


def test_the_same_parameters_on_another_day_are_another_bank() -> None:
    yesterday = BankId("simulated", 600, 200, 7, BANK.end_ts - 86_400)  # type: ignore[operator]
    reason = demo_bank.conflict(1_200_000, 0, yesterday, BANK)
    assert reason is not None
    assert "to 2026-12-05" in reason and "to 2026-12-06" in reason


def test_a_claim_survives_on_disk_until_another_publisher_forgets_it(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert demo_bank.claimed_bank(run_dir) is None
    demo_bank.claim(run_dir, BANK)
    assert demo_bank.claimed_bank(run_dir) == BANK
    demo_bank.forget(run_dir)
    assert demo_bank.claimed_bank(run_dir) is None
    demo_bank.forget(run_dir)  # twice is fine


def test_an_unreadable_claim_proves_nothing(tmp_path: Path) -> None:
    (tmp_path / demo_bank.CLAIM_FILE).write_text('{"dataset": "simulated", "clients": ')
    assert demo_bank.claimed_bank(tmp_path) is None
    (tmp_path / demo_bank.CLAIM_FILE).write_text('{"dataset": "simulated", "colour": "red"}')
    assert demo_bank.claimed_bank(tmp_path) is None


def test_the_berka_dataset_is_one_bank() -> None:
    assert demo_bank.conflict(500_000, 0, BankId("berka"), BankId("berka")) is None
    assert demo_bank.conflict(500_000, 0, BankId("berka"), BANK) is not None


def test_simulating_or_importing_into_the_store_drops_the_demos_claim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from extractors import publish

    async def fake_publish(settings: Any, events: Any, progress: bool = False) -> dict[str, int]:
        return {"events": 0}  # the claim must be gone before anything is published: checked below

    monkeypatch.setattr(publish, "publish_events", fake_publish)
    settings = load_settings().model_copy(update={"run_dir": tmp_path})
    for command, args in [
        (cli.cmd_simulate, argparse.Namespace(clients=1, days=1, seed=1, quiet=True)),
        (cli.cmd_import, argparse.Namespace(path="/nonexistent", quiet=True)),
    ]:
        demo_bank.claim(tmp_path, BANK)
        assert command(settings, args) == 0
        assert demo_bank.claimed_bank(tmp_path) is None, command.__name__


def test_the_demo_says_when_not_even_the_simulators_chances_part_from_the_logistic_regression() -> None:
    """The 2026-12-06 demo's figures: the simulator's own chances 0.745 [0.700, 0.788] against the logistic
    regression's 0.670 [0.621, 0.716]. A newcomer reading "too few clients" should learn that no model could."""
    from deploy.demo import _too_few_clients

    metrics = {
        "evaluated_distinct_clients": 201,
        "rankings": {
            "blend": {"map_at_3": [0.710, 0.660, 0.756]},
            "logistic_regression": {"map_at_3": [0.670, 0.621, 0.716]},
            "simulator_chances": {"map_at_3": [0.745, 0.700, 0.788]},
        },
    }
    assert "even ranking by the simulator's own chances" in _too_few_clients(metrics, judged_below=True)
    metrics["rankings"]["simulator_chances"]["map_at_3"] = [0.800, 0.760, 0.840]
    said = _too_few_clients(metrics, judged_below=False)
    assert said.startswith("201 clients are too few") and "even" not in said and "make evaluate-large" in said
    assert "judged at the end of this demo" in _too_few_clients(metrics, judged_below=True)


def test_the_large_bank_is_one_definition_for_the_cli_and_the_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    """`rtrec evaluate --large` (make evaluate-large) and the end of `rtrec demo` judge the same bank; --large
    overrides the size options, and refuses Berka."""
    from deploy import evaluate
    from deploy.evaluate import LARGE_BANK, large_bank_args

    asked: list[argparse.Namespace] = []

    def evaluated(settings: Any, args: argparse.Namespace) -> dict[str, Any]:
        asked.append(args)
        return {"report": "r", "rankings": {}}

    monkeypatch.setattr(evaluate, "run_evaluation", evaluated)
    assert cli.main(["evaluate", "--large", "--clients", "5", "--json"]) == 0
    demo = large_bank_args()
    for name, value in LARGE_BANK.items():
        assert getattr(asked[0], name) == getattr(demo, name) == value, name
    assert asked[0].dataset == demo.dataset == "simulated"
    with pytest.raises(SystemExit, match="--large is a simulated bank"):
        cli.main(["evaluate", "--large", "--dataset", "berka"])
