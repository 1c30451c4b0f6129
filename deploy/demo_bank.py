"""Which bank the local stack's store holds, so `rtrec demo` judges its models on its own bank only.

The demo trains and evaluates on everything the store holds. Streamed into a store that already held another
bank (an earlier `rtrec simulate`, `rtrec import berka`, or the demo of another day, whose simulated bank ends
on another date), it mixed the two under the same client ids: its table then ranked "the simulator's own
chances" for clients the simulator never described (0.43 against the models' 0.70). The demo therefore claims
the store for its bank in a small file under the run directory before it publishes, and refuses a store that
holds anything else; the other publishers drop the claim.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

CLAIM_FILE = "demo_bank.json"


@dataclass(frozen=True)
class BankId:
    """What makes two streamed banks the same: re-streaming it rewrites the same rows (idempotent upserts)."""

    dataset: str
    clients: int | None = None
    days: int | None = None
    seed: int | None = None
    end_ts: float | None = None

    def describe(self) -> str:
        if self.dataset != "simulated":
            return f"the {self.dataset} dataset"
        end = time.strftime("%Y-%m-%d", time.gmtime(self.end_ts or 0))
        return f"a simulated bank of {self.clients} clients over {self.days} days to {end} (seed {self.seed})"


def claimed_bank(run_dir: Path) -> BankId | None:
    """The bank the store was claimed for, or None (never claimed, or another publisher wrote since)."""
    try:
        return BankId(**json.loads((run_dir / CLAIM_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None  # a missing or unreadable claim proves nothing: the store counts as someone else's


def claim(run_dir: Path, bank: BankId) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CLAIM_FILE).write_text(json.dumps(asdict(bank)))


def forget(run_dir: Path) -> None:
    """Called by every other publisher: the store no longer holds the demo's bank alone."""
    (run_dir / CLAIM_FILE).unlink(missing_ok=True)


def conflict(features_stored: int, messages_unconsumed: int, claimed: BankId | None, bank: BankId) -> str | None:
    """Why the demo must not stream ``bank`` into this store, or None when it may: the store is empty (nothing
    stored and nothing left to consume), or it holds the same bank (a demo run again the same day)."""
    if (features_stored == 0 and messages_unconsumed == 0) or claimed == bank:
        return None
    held = claimed.describe() if claimed is not None else "data the demo did not stream"
    return (
        f"the store already holds {features_stored:,} features ({messages_unconsumed:,} Kafka messages still to "
        f"consume) of {held}, and this demo streams {bank.describe()}: it trains and judges its models on "
        "everything stored, so its figures would mix the two banks"
    )
