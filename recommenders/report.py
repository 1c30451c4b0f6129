"""A training report a person can look at: report.html with the served blend and every baseline with their
95 % intervals (drawn in map.png), what each of the blend's sources adds, per-product AUC of XGBoost and of the
logistic regression, ROC curves and the most important features, as PNG plots next to it."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import xgboost as xgb
from sklearn.metrics import roc_curve

from recommenders.dataset import Dataset
from recommenders.evaluation import format_interval


def write_report(
    directory: Path,
    meta: dict[str, Any],
    holdout: Dataset,
    boosters: dict[str, xgb.Booster],
    names: list[str],
    products: list[str],
) -> Path:
    metrics = meta["metrics"]
    figure, axis = plt.subplots(figsize=(6, 5))
    matrix = xgb.DMatrix(holdout.features, feature_names=names)
    for j, product in enumerate(products):
        rows = holdout.mask[:, j] > 0
        y = holdout.labels[rows, j]
        if product in boosters and 0 < y.sum() < len(y):
            fpr, tpr, _ = roc_curve(y, boosters[product].predict(matrix)[rows])
            axis.plot(fpr, tpr, label=f"{product} (AUC {metrics['per_product'][product]['auc']:.2f})")
    axis.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    axis.set(xlabel="false positive rate", ylabel="true positive rate", title="Holdout ROC per product")
    if any(not str(line.get_label()).startswith("_") for line in axis.get_lines()):  # any product curve drawn
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(directory / "roc.png", dpi=110)
    plt.close(figure)

    _draw_rankings(directory / "map.png", metrics)
    importance: dict[str, float] = {}
    for booster in boosters.values():
        for name, gain in booster.get_score(importance_type="gain").items():
            importance[name] = importance.get(name, 0.0) + float(gain)  # type: ignore[arg-type]
    top = sorted(importance.items(), key=lambda kv: -kv[1])[:15]
    figure, axis = plt.subplots(figsize=(7, 4.5))
    axis.barh([n for n, _ in reversed(top)], [g for _, g in reversed(top)])
    axis.set(title="Feature importance (total gain over products)")
    axis.tick_params(axis="y", labelsize=7)
    figure.tight_layout()
    figure.savefig(directory / "importance.png", dpi=110)
    plt.close(figure)

    table = "".join(
        f"<tr><td>{html.escape(p)}</td><td>{m.get('rows', 0)}</td><td>{m.get('positives', 0)}</td>"
        f"<td>{format_interval(m.get('auc_interval'))}</td><td>{format_interval(m.get('auc_logistic_interval'))}</td>"
        f"<td>{format_interval(m.get('auc_minus_logistic'))}</td>"
        f"<td>{_fmt(m.get('pr_auc'))}</td><td>{_fmt(m.get('pr_auc_base_rate'))}</td>"
        f"<td>{'yes' if m.get('too_few_positives') else ''}</td></tr>"
        for p, m in metrics["per_product"].items()
    )
    k = next((key.removeprefix("map_at_") for key in metrics if key.startswith("map_at_")), "k")
    rankings = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{format_interval(values.get(f'map_at_{k}'))}</td>"
        f"<td>{format_interval(values.get(f'ndcg_at_{k}'))}</td>"
        f"<td>{format_interval(metrics.get('blend_minus', {}).get(name))}</td></tr>"
        for name, values in metrics.get("rankings", {}).items()
    )
    gains = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{_fmt(metrics.get('blend_weights', {}).get(name))}</td>"
        f"<td>{format_interval(gain)}</td></tr>"
        for name, gain in metrics.get("source_gain", {}).items()
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>rtrec model {meta["version"]}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:4px 10px;border-bottom:1px solid #ddd}}</style>
</head><body><h1>Model {html.escape(meta["version"])}</h1>
<p>Training rows {meta["training"]["train_rows"]}, holdout rows {meta["training"]["holdout_rows"]},
horizon {meta["training"]["horizon_days"]} days; clients with an uptake
{metrics.get("evaluated_distinct_clients", metrics["evaluated_clients"])} at {metrics["evaluated_clients"]}
client-cuts (each client resampled whole). Figures are
means with 95 % bootstrap intervals over clients.</p>
<h2>Ranking: the served blend and every baseline on the same holdout</h2>
<table><tr><th>ranking</th><th>MAP@{k}</th><th>NDCG@{k}</th><th>blend minus it (paired)</th></tr>{rankings}</table>
<img src="map.png">
<h2>The blend's sources</h2><p>Weights learned on the validation cut; the gain is the blend minus the blend
without the source (paired, MAP@{k}).</p>
<table><tr><th>source</th><th>weight</th><th>gain</th></tr>{gains}</table>
<h2>Per product (holdout)</h2>
<table><tr><th>product</th><th>rows</th><th>positives</th><th>AUC XGBoost</th><th>AUC logistic</th>
<th>difference (paired)</th><th>PR-AUC</th>
<th>base rate</th><th>too few positives</th></tr>
{table}</table><img src="roc.png"><h2>What the models use</h2><img src="importance.png"></body></html>"""
    path = directory / "report.html"
    path.write_text(page)
    return path


def _draw_rankings(path: Path, metrics: dict[str, Any]) -> None:
    """MAP@k of every ranking as a bar with its 95 % interval drawn."""
    k_key = next((key for key in metrics if key.startswith("map_at_")), "map_at_k")
    rows = [(name, values[k_key]) for name, values in metrics.get("rankings", {}).items() if k_key in values]
    figure, axis = plt.subplots(figsize=(6, 3.5))
    if rows:
        names = [name for name, _ in reversed(rows)]
        means = np.array([v[0] for _, v in reversed(rows)])
        spread = np.array([[v[0] - v[1] for _, v in reversed(rows)], [v[2] - v[0] for _, v in reversed(rows)]])
        axis.barh(names, means, xerr=spread, capsize=3, color=["#2b7" if n == "blend" else "#aaa" for n in names])
    axis.set(title=f"MAP@{k_key.removeprefix('map_at_')} on the holdout, 95 % intervals", xlim=(0.0, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float | np.floating) else "-"
