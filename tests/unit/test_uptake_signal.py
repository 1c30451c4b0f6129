"""`rtrec uptake-signal` on a small simulated bank: clients holding or recently applying for the product are
left out, takers are counted from the next 30 days' applications, and each AUC is a number in [0, 1] (or None
when a cut has no taker)."""

from __future__ import annotations

import argparse

from deploy.uptake_signal import run_uptake_signal


def test_the_signal_check_counts_candidates_and_takers_per_cut() -> None:
    args = argparse.Namespace(product="deposit", segment="retail", clients=150, days=150, seed=4, at=[60, 110])
    result = run_uptake_signal(args)
    assert [c["day"] for c in result["cuts"]] == [60, 110]
    for cut in result["cuts"]:
        assert 0 < cut["clients"] <= 150 and 0 <= cut["takers"] <= cut["clients"]
        for auc in (cut["auc_balance_for_income"], cut["auc_sme_over_all_segments"]):
            assert auc is None or 0.0 <= auc <= 1.0
    assert sum(c["takers"] for c in result["cuts"]) > 0
