"""The rankings table people read (`rtrec evaluate`, the demo): the blend's interval against each ranking's."""

from __future__ import annotations

from rich.console import Console

from deploy.rankings_table import intervals_apart, intervals_verdict, rankings_table, verdict


def test_intervals_apart_says_which_side_and_by_how_much() -> None:
    assert intervals_apart([0.74, 0.73, 0.75], [0.70, 0.69, 0.72]) == "blend above by 0.010"
    assert intervals_apart([0.60, 0.58, 0.62], [0.70, 0.65, 0.72]) == "blend below by 0.030"
    assert intervals_apart([0.74, 0.72, 0.75], [0.72, 0.70, 0.73]) == "overlap by 0.010"
    assert intervals_apart(None, [0.7, 0.6, 0.8]) == ""
    assert intervals_apart([0.7, 0.6, 0.8], [float("nan")] * 3) == ""


def test_the_table_lists_every_ranking_best_first_with_its_overlap() -> None:
    metrics = {
        "evaluated_clients": 40,
        "evaluated_distinct_clients": 20,
        "rankings": {
            "popularity": {"map_at_3": [0.5, 0.45, 0.55]},
            "blend": {"map_at_3": [0.7, 0.66, 0.74]},
            "logistic_regression": {"map_at_3": [0.68, 0.63, 0.72]},
        },
        "blend_minus": {"popularity": [0.2, 0.15, 0.25], "logistic_regression": [0.02, -0.01, 0.05]},
    }
    console = Console(width=200, record=True)
    console.print(rankings_table(metrics))
    text = console.export_text()
    lines = [line for line in text.splitlines() if "0." in line]
    assert [line.split()[1] for line in lines] == ["blend", "logistic", "popularity"]
    assert "overlap by 0.060" in lines[1] and "blend above by 0.110" in lines[2]
    assert "20 clients at 40 client-cuts" in text
    assert verdict(metrics, "popularity") == "beats" and verdict(metrics, "logistic_regression").startswith("cannot")


def test_the_verdict_names_where_the_blends_interval_lies_against_each_baseline() -> None:
    """The 24,000-client bank of 2026-11-30: the blend clears the logistic regression by 0.0015, which three
    decimals would round away."""
    metrics = {
        "rankings": {
            "blend": {"map_at_3": [0.7484, 0.7410, 0.7560]},
            "logistic_regression": {"map_at_3": [0.7320, 0.7250, 0.7395]},
            "popularity": {"map_at_3": [0.613, 0.605, 0.621]},
            "xgboost": {"map_at_3": [0.7484, 0.7410, 0.7560]},
        }
    }
    assert intervals_verdict(metrics) == (
        "the served blend's MAP@3 interval lies above the logistic regression's by 0.0015, lies above "
        "popularity's by 0.120, overlaps XGBoost alone's by 0.015"
    )
    metrics["rankings"]["logistic_regression"]["map_at_3"] = [0.75, 0.74, 0.76]
    assert "overlaps the logistic regression's by 0.015" in intervals_verdict(metrics)
    assert intervals_verdict({}) == "no rankings to compare"
