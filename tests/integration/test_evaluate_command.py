"""`rtrec evaluate` as a user runs it: a small simulated bank through the extractors into the command's own
throwaway cluster (one instance per replica set, no replicas), trained and judged, every figure with its
interval, the report kept and the cluster gone afterwards."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from deploy.cli import main


def _tarantools() -> int:
    return len(subprocess.run(["pgrep", "-x", "tarantool"], capture_output=True, text=True).stdout.split())


def test_rtrec_evaluate_reports_every_figure_with_an_interval_from_its_own_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _tarantools()
    argv = ["evaluate", "--dataset", "simulated", "--clients", "150", "--days", "160", "--seed", "9", "--json"]
    assert main([*argv, "--end-date", "2026-11-30", "--report-dir", str(tmp_path)]) == 0
    result = json.loads(capsys.readouterr().out)

    assert result["store"]["instances_per_replicaset"] == 1 and result["features_loaded"] > 50_000
    assert result["end"] == "2026-11-30T00:00:00+00:00"
    served, logistic = result["rankings"]["blend"]["map_at_3"], result["rankings"]["logistic_regression"]["map_at_3"]
    assert served[0] == pytest.approx(result["map_at_3"], abs=1e-4)
    for mean, low, high in (served, logistic, result["blend_minus"]["logistic_regression"]):
        assert low <= mean <= high and high > low
    assert result["evaluated_distinct_clients"] >= 30
    assert result["load_seconds"] > 0 and set(result["training"]["seconds"]) >= {"point_in_time_rows", "holdout"}
    assert Path(result["report"]).is_file() and Path(result["report"]).is_relative_to(tmp_path)
    assert _tarantools() == before  # the private cluster was stopped
