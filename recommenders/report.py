"""A training report a person can look at: report.html with per-product metrics, MAP@k against the popularity
baseline, ROC curves and the most important features, as PNG plots next to it."""

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

    k_keys = [key for key in metrics if key.startswith("map_at_")]
    figure, axis = plt.subplots(figsize=(6, 3))
    values: list[float] = [float(metrics[key] or 0.0) for key in k_keys]
    axis.barh(k_keys, values, color=["#2b7", "#27b", "#aaa"][: len(k_keys)])
    axis.set(title="MAP@k on the holdout (higher is better)", xlim=(0.0, max(max(values, default=0.0), 0.01) * 1.2))
    figure.tight_layout()
    figure.savefig(directory / "map.png", dpi=110)
    plt.close(figure)

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
        f"<td>{_fmt(m.get('auc'))}</td><td>{_fmt(m.get('pr_auc'))}</td><td>{_fmt(m.get('pr_auc_base_rate'))}</td></tr>"
        for p, m in metrics["per_product"].items()
    )
    summary = "".join(f"<li>{html.escape(key)}: {_fmt(metrics[key])}</li>" for key in k_keys)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>rtrec model {meta["version"]}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:4px 10px;border-bottom:1px solid #ddd}}</style>
</head><body><h1>Model {html.escape(meta["version"])}</h1>
<p>Training rows {meta["training"]["train_rows"]}, holdout rows {meta["training"]["holdout_rows"]},
horizon {meta["training"]["horizon_days"]} days, clients evaluated {metrics["evaluated_clients"]}.</p>
<h2>Ranking</h2><ul>{summary}</ul><img src="map.png">
<h2>Per product (XGBoost, holdout)</h2>
<table><tr><th>product</th><th>rows</th><th>positives</th><th>AUC</th><th>PR-AUC</th><th>base rate</th></tr>
{table}</table><img src="roc.png"><h2>What the models use</h2><img src="importance.png"></body></html>"""
    path = directory / "report.html"
    path.write_text(page)
    return path


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float | np.floating) else "-"
