"""`rtrec uptake-signal`: how well one behaviour ranks a product's next takers in the simulated bank's raw
events, with no store and no model (a ceiling check for docs/models.md).

At each cut day, among clients of the segment who neither hold the product nor applied for it in the blocking
period, the AUC of balance for the income (average balance over the 90 days before the cut divided by a third
of the inflows in them) for applying within the next 30 days; and, over every segment, the AUC of being an SME
client.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from extractors.simulate import DAY, BankSimulator, SimulationConfig

BLOCK_DAYS, WINDOW_DAYS, HORIZON_DAYS = 180, 90, 30


def _auc(labels: list[bool], scores: list[float]) -> float | None:
    return round(float(roc_auc_score(labels, scores)), 3) if 0 < sum(labels) < len(labels) else None


def _clients_at(events: list[tuple[str, str, dict[str, Any]]], cut: float, product: str) -> dict[str, dict[str, Any]]:
    clients: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"balances": [], "inflow": 0.0, "held": False, "applied": False, "takes": False, "segment": None}
    )
    for topic, key, event in events:
        client, ts = clients[key], float(event.get("ts", 0.0))  # type: ignore[arg-type]
        if topic == "clients" and ts < cut:
            client["segment"] = event["segment"]
        elif topic == "transactions" and cut - WINDOW_DAYS * DAY <= ts < cut:
            client["balances"].append(event["balance"])
            client["inflow"] += float(event["amount"]) if event["direction"] == "in" else 0.0  # type: ignore[arg-type]
        elif topic == "products" and ts < cut and event["product"] == product:
            client["held"] = event["action"] == "opened"
        elif topic == "applications" and event["product"] == product:
            client["applied"] |= cut - BLOCK_DAYS * DAY < ts < cut
            client["takes"] |= cut <= ts < cut + HORIZON_DAYS * DAY and event["status"] == "submitted"
    return {k: c for k, c in clients.items() if c["balances"] and not c["held"] and not c["applied"]}


def run_uptake_signal(args: argparse.Namespace) -> dict[str, Any]:
    simulator = BankSimulator(SimulationConfig(clients=args.clients, days=args.days, seed=args.seed))
    events = list(simulator.events())
    cuts = []
    for day in args.at:
        candidates = _clients_at(events, simulator.start_ts + day * DAY, args.product)
        chosen = [c for c in candidates.values() if c["segment"] == args.segment]
        everyone = list(candidates.values())
        cuts.append(
            {
                "day": day,
                "clients": len(chosen),
                "takers": sum(c["takes"] for c in chosen),
                "auc_balance_for_income": _auc(
                    [c["takes"] for c in chosen],
                    [float(np.mean(c["balances"])) / max(c["inflow"] / 3, 1.0) for c in chosen],
                ),
                "auc_sme_over_all_segments": _auc(
                    [c["takes"] for c in everyone], [float(c["segment"] == "sme") for c in everyone]
                ),
            }
        )
    return {"check": "uptake-signal", "product": args.product, "segment": args.segment, "seed": args.seed, "cuts": cuts}
