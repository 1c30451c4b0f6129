"""The real Berka (PKDD'99) Czech bank data as the project's events: a real-data mode for the product.

Subjects are accounts (``a<account_id>``): the Berka transaction table is per account and each account has
one owner. Dates are shifted by a whole number of years, a multiple of four so 29 February stays valid and
month-of-year seasonality is kept, so the slice ends in the recent past and 400-day TTLs keep it.

Mapping (documented approximations):
- trans.asc: PRIJEM -> ``in``, VYDAJ/VYBER -> ``out``; operation -> channel (card, cash, atm, transfer);
  k_symbol -> MCC (SIPO household -> 4900 utilities, POJISTNE -> 6300 insurance, UVER loan -> 6012) or
  counterparty (DUCHOD pension -> government, UROK interest -> bank); partner bank -> ``bank:<code>``.
- client.asc/disp.asc/district.asc: one client event per account (owner's birth date, region, retail).
- loan.asc -> ``consumer_loan`` opened; card.asc gold -> ``premium_debit_card``, classic/junior ->
  ``credit_card``; standing insurance orders -> ``insurance``. Only those dated on or before the last
  transaction day (the cutoff) are published; later ones are the labels of an honest time-split evaluation.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

CUTOFF = date(1994, 3, 30)

OPERATION_CHANNEL = {
    "VYBER KARTOU": "card",
    "VKLAD": "cash",
    "PREVOD Z UCTU": "transfer",
    "VYBER": "atm",
    "PREVOD NA UCET": "transfer",
}
K_SYMBOL_MCC = {"SIPO": 4900, "POJISTNE": 6300, "UVER": 6012, "LEASING": 6012}
K_SYMBOL_COUNTERPARTY = {
    "DUCHOD": "government:pension",
    "UROK": "bank:interest",
    "SANKC. UROK": "bank:penalty",
    "SLUZBY": "bank:fees",
}
CARD_PRODUCT = {"gold": "premium_debit_card", "classic": "credit_card", "junior": "credit_card"}


def _rows(path: Path) -> Iterator[dict[str, str]]:
    with open(path, newline="", encoding="latin-1") as handle:
        yield from csv.DictReader(handle, delimiter=";")


def _yymmdd(text: str) -> date:
    digits = text.strip()[:6]
    return date(1900 + int(digits[:2]), int(digits[2:4]), int(digits[4:6]))


def birth_date(birth_number: str) -> date:
    """Berka birth numbers are YYMMDD with 50 added to the month for women."""
    yy, mm, dd = int(birth_number[:2]), int(birth_number[2:4]), int(birth_number[4:6])
    return date(1900 + yy, mm - 50 if mm > 50 else mm, dd)


def default_shift_years(today: date | None = None) -> int:
    today = today or datetime.now(UTC).date()
    shift = (today.year - CUTOFF.year) // 4 * 4
    while CUTOFF.replace(year=CUTOFF.year + shift) > today:
        shift -= 4
    return shift


@dataclass(frozen=True)
class BerkaShift:
    years: int

    def ts(self, day: date, hour: float = 12.0) -> float:
        shifted = day.replace(year=day.year + self.years)
        return datetime(shifted.year, shifted.month, shifted.day, tzinfo=UTC).timestamp() + hour * 3600


def berka_events(
    path: Path,
    shift_years: int | None = None,
    products_until: date = CUTOFF,
) -> Iterator[tuple[str, str, dict[str, object]]]:
    """Berka as events. ``products_until`` > CUTOFF also publishes later loans and cards: only for the
    time-split evaluation (`rtrec evaluate --dataset berka`), whose holdout labels they are."""
    shift = BerkaShift(shift_years if shift_years is not None else default_shift_years())
    regions = {row["A1"]: row["A3"] for row in _rows(path / "district.asc")}
    clients = {row["client_id"]: row for row in _rows(path / "client.asc")}
    owner_of: dict[str, str] = {}
    disp_account: dict[str, str] = {}
    for row in _rows(path / "disp.asc"):
        disp_account[row["disp_id"]] = row["account_id"]
        if row["type"] == "OWNER":
            owner_of[row["account_id"]] = row["client_id"]
    accounts = {row["account_id"]: row for row in _rows(path / "account.asc")}

    for account_id, account in accounts.items():
        opened = _yymmdd(account["date"])
        if opened > CUTOFF:
            continue
        subject = f"a{account_id}"
        owner = clients.get(owner_of.get(account_id, ""))
        payload: dict[str, object] = {
            "client_id": subject,
            "ts": shift.ts(opened, 0.5),
            "segment": "retail",
            "region": regions.get(account["district_id"], "unknown"),
            "registered_at": shift.ts(opened, 0),
        }
        if owner is not None:
            payload["birth_date"] = shift.ts(birth_date(owner["birth_number"]), 0)
        yield "clients", subject, payload

    for row in _rows(path / "loan.asc"):
        day = _yymmdd(row["date"])
        if day <= products_until:
            subject = f"a{row['account_id']}"
            yield (
                "products",
                subject,
                {"client_id": subject, "product": "consumer_loan", "action": "opened", "ts": shift.ts(day)},
            )
    for row in _rows(path / "card.asc"):
        day = _yymmdd(row["issued"])
        card_account = disp_account.get(row["disp_id"])
        if day <= products_until and card_account is not None:
            subject = f"a{card_account}"
            yield (
                "products",
                subject,
                {
                    "client_id": subject,
                    "product": CARD_PRODUCT.get(row["type"], "credit_card"),
                    "action": "opened",
                    "ts": shift.ts(day),
                },
            )
    for row in _rows(path / "order.asc"):
        if row["k_symbol"].strip() == "POJISTNE" and row["account_id"] in accounts:
            day = _yymmdd(accounts[row["account_id"]]["date"])
            if day <= CUTOFF:
                subject = f"a{row['account_id']}"
                yield (
                    "products",
                    subject,
                    {"client_id": subject, "product": "insurance", "action": "opened", "ts": shift.ts(day, 13)},
                )

    for row in _rows(path / "trans.asc"):
        amount = float(row["amount"])
        if amount <= 0:
            continue
        subject = f"a{row['account_id']}"
        k_symbol = row["k_symbol"].strip()
        payload = {
            "tx_id": f"b{row['trans_id']}",
            "client_id": subject,
            "ts": shift.ts(_yymmdd(row["date"])),
            "amount": amount,
            "currency": "CZK",
            "direction": "in" if row["type"] == "PRIJEM" else "out",
            "balance": float(row["balance"]),
        }
        channel = OPERATION_CHANNEL.get(row["operation"].strip())
        if channel:
            payload["channel"] = channel
        if k_symbol in K_SYMBOL_MCC:
            payload["mcc"] = K_SYMBOL_MCC[k_symbol]
        counterparty = K_SYMBOL_COUNTERPARTY.get(k_symbol)
        if counterparty is None and row["bank"].strip():
            counterparty = f"bank:{row['bank'].strip()}"
        if counterparty:
            payload["counterparty"] = counterparty
        yield "transactions", subject, payload
