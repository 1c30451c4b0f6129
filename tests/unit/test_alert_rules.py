"""The alert rules parse and only use metrics the code exports (a renamed metric must not silence an alert)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ["extractors/metrics.py", "manager/metrics.py", "manager/store_watch.py"]
STANDARD = {"up", "process_start_time_seconds"}  # exported by Prometheus and the client library themselves


def test_every_alert_uses_exported_metrics() -> None:
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus-alerts.yml").read_text())
    exported = set()
    for source in SOURCES:
        exported |= set(re.findall(r'"(rtrec_[a-z_]+)"', (ROOT / source).read_text()))
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert len(alerts) >= 14
    for alert in alerts:
        used = set(re.findall(r"\b(rtrec_[a-z_]+|up|process_start_time_seconds)\b", alert["expr"]))
        assert used and not used - exported - STANDARD, (alert["alert"], used - exported - STANDARD)
        assert alert["annotations"]["summary"]
