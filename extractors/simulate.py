"""A simulated bank for demos, tests and training: deterministic for a seed and an end date.

Clients of three segments (retail, sme, corporate) with latent traits (income, saving habit, travel taste,
online use, age, tenure) that show in what they do: a saver spends less on what is optional, a traveller
buys tickets abroad, an online client pays online. Each day they earn (monthly salary from an employer, or
business revenue for companies), spend by MCC with seasonality (travel peaks in summer and December,
seasonal SME industries), sometimes reverse a transaction, change their profile, and apply for and open
products.

Uptake follows what banks see in their own data (and what real-time features exist for):
- steady traits: a saver with a steady balance opens a deposit, a traveller a credit card, a shop with many
  card payments takes acquiring;
- life events that raise the chance for weeks: a one-off large inflow (a bonus, the sale of a car or a flat)
  brings deposits and, for savers, investments; a trip booking brings travel insurance and a credit card; a
  salary raise brings a premium card and a mortgage; running short of money before payday brings a loan;
  life events in the client data: a move to another region brings a mortgage, home insurance and a loan
  for the furniture, and a retail client who opens a business takes acquiring and an overdraft;
- thresholds: a deposit has a minimum amount and a brokerage account wants a cushion, so few open them below;
- cross-selling: credit card holders take loans, deposit holders investments, acquiring clients an overdraft,
  while a premium card includes travel insurance;
- eligibility as in deploy/products.toml (segments, ages, tenure at the bank).
So models trained on the features have real signal, not all of it linear in the traits.

``events()`` yields ``(topic_key, partition_key, payload)`` with payloads in the DESIGN.md event shapes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

DAY = 86400.0
NEVER = 10**6
# Life events per retail client and day: a one-off large inflow about once in 16 months, a salary raise
# (new job, promotion) about once in three years.
WINDFALL_DAILY = 1 / 480
RAISE_DAILY = 1 / 1100
# Product minimums: a term deposit's smallest amount and the cushion a brokerage client keeps (RUB).
MIN_DEPOSIT = 50_000.0
MIN_INVESTMENT = 100_000.0
# Monthly income from which a premium card's fee pays for itself.
PREMIUM_INCOME = 120_000.0

REGIONS = ("moscow", "spb", "kazan", "novosibirsk", "ekb", "samara", "sochi", "krasnodar", "ufa", "perm")
# Seasonal SME industries (OKVED-like codes): tourism and agriculture peak in summer, retail in December.
SME_INDUSTRIES = {"55.10": "tourism", "01.11": "agriculture", "47.11": "retail", "62.01": "it", "41.20": "building"}

# MCC -> base daily rate multiplier by spending category for retail clients.
SPENDING = {
    "groceries": (5411, 0.55),
    "restaurants": (5812, 0.25),
    "fuel": (5541, 0.12),
    "clothing": (5651, 0.06),
    "electronics": (5732, 0.03),
    "health": (5912, 0.05),
    "utilities": (4900, 0.035),
    "entertainment": (7832, 0.05),
    "travel": (4511, 0.02),
    "transport": (4121, 0.12),
    "cash": (6011, 0.06),
}
# Spending a saver cuts down on (the saving habit shows in the balance and in spending for the income).
DISCRETIONARY = ("restaurants", "clothing", "electronics", "entertainment")
AMOUNT_SCALE = {
    "groceries": 1800,
    "restaurants": 1500,
    "fuel": 2500,
    "clothing": 4500,
    "electronics": 25000,
    "health": 1200,
    "utilities": 5000,
    "entertainment": 900,
    "travel": 30000,
    "transport": 300,
    "cash": 5000,
}

# product -> (segments, min age, max age, min tenure in days), as in deploy/products.toml
ELIGIBILITY: dict[str, tuple[tuple[str, ...], float, float, float]] = {
    "deposit": (("retail", "sme", "corporate"), 18, 200, 0),
    "savings_account": (("retail",), 14, 200, 0),
    "credit_card": (("retail",), 21, 70, 30),
    "premium_debit_card": (("retail",), 18, 200, 0),
    "consumer_loan": (("retail",), 21, 70, 90),
    "mortgage": (("retail",), 21, 65, 180),
    "investments": (("retail", "sme"), 18, 200, 0),
    "insurance": (("retail", "sme"), 18, 200, 0),
    "sme_overdraft": (("sme", "corporate"), 0, 200, 90),
    "sme_acquiring": (("sme", "corporate"), 0, 200, 0),
}
PRODUCTS = tuple(ELIGIBILITY)


@dataclass(frozen=True)
class SimulationConfig:
    clients: int = 1000
    days: int = 365
    seed: int = 42
    # The last simulated day ends at this epoch second (default: today's midnight UTC), so "now" aggregates
    # see recent activity while the same seed and date always give the same events.
    end_ts: float | None = None
    reversal_rate: float = 0.01
    currency: str = "RUB"
    # Client ids are f"{client_prefix}{index:06d}" (tests give each run its own prefix).
    client_prefix: str = "c"
    # Keep each client's daily chances of uptake for ``chances()`` (evaluations; 40 bytes per client and day).
    record_chances: bool = False


@dataclass
class _Client:
    client_id: str
    segment: str
    age: float
    income: float
    saver: float
    traveler: float
    online: float
    tenure_days: float
    region: str
    industry: str | None
    balance: float
    held: set[str]
    pending: dict[str, float]  # product -> day index when the application is decided
    # Day indices of the latest life events (NEVER before one happened).
    windfall_day: int = -NEVER
    trip_day: int = -NEVER
    raise_day: int = -NEVER
    moved_day: int = -NEVER  # a move to another region (a client event says so)
    business_day: int = -NEVER  # a retail client who opened a business (now an SME client)


def _today_midnight() -> float:
    now = datetime.now(UTC)
    return datetime(now.year, now.month, now.day, tzinfo=UTC).timestamp()


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _life_stage(age: float, peak: float, width: float) -> float:
    """1 at the age when a product suits most (a mortgage at about 32), falling off on both sides."""
    return math.exp(-(((age - peak) / width) ** 2))


@dataclass(frozen=True, slots=True)
class _Signals:
    """What drives uptake on one day, computed once for all of a client's products (each product's chance
    used to recompute every one of them: half the simulation's time)."""

    wealth: float  # log of the balance over the monthly income
    spend: float  # log1p of the last 30 days' spending over the monthly income
    log_income: float
    windfall: bool  # life events still in effect
    trip: bool
    raised: bool
    moved: bool
    new_business: bool
    short: bool  # running short before payday

    @classmethod
    def of(cls, c: _Client, spend_30d: float, day: int) -> _Signals:
        return cls(
            wealth=math.log(max(c.balance, 1.0) / max(c.income, 1.0) + 1e-3),
            spend=math.log1p(spend_30d / max(c.income, 1.0)),
            log_income=math.log(c.income / 60000.0 + 1e-3),
            windfall=day - c.windfall_day <= 45,
            trip=day - c.trip_day <= 14,
            raised=day - c.raise_day <= 90,
            moved=day - c.moved_day <= 60,
            new_business=day - c.business_day <= 90,
            short=c.balance < 0.3 * c.income,
        )


# product -> the log-odds of applying within about a month
_LOGITS: dict[str, Callable[[_Client, _Signals], float]] = {
    "deposit": lambda c, s: -3.6 + 2.2 * c.saver + 0.9 * s.wealth + 2.5 * s.windfall,
    "savings_account": lambda c, s: -3.2 + 1.5 * c.saver + 0.4 * s.wealth + 1.0 * s.windfall + 1.0 * (c.age >= 60),
    "credit_card": lambda c, s: (
        -3.8
        + 1.6 * s.spend
        + 1.4 * c.online
        + 0.8 * c.traveler
        + 1.0 * _life_stage(c.age, 27, 8)
        + 1.2 * s.trip
        + 1.0 * s.raised
    ),
    "premium_debit_card": lambda c, s: -4.4 + 1.8 * (c.income >= PREMIUM_INCOME) + 1.5 * c.traveler + 1.8 * s.raised,
    "consumer_loan": lambda c, s: (
        -4.0
        - 0.6 * s.wealth
        + 0.6 * s.spend
        + 1.2 * _life_stage(c.age, 32, 10)
        + 1.6 * s.short
        + 0.6 * ("credit_card" in c.held)
        + 1.0 * s.moved
    ),
    "mortgage": lambda c, s: (
        -5.2 + 1.2 * s.log_income + 2.0 * _life_stage(c.age, 32, 7) + 0.8 * c.saver + 1.5 * s.raised + 1.5 * s.moved
    ),
    "investments": lambda c, s: (
        -4.8
        + 1.2 * s.wealth
        + 1.2 * _life_stage(c.age, 50, 10)
        + 1.0 * c.saver
        + 2.5 * (s.windfall and c.saver > 0.4)
        + 0.7 * ("deposit" in c.held)
    ),
    "insurance": lambda c, s: (
        -5.0
        + 1.0 * c.traveler
        + 0.01 * (c.age - 30)
        + 3.5 * s.trip
        - 1.5 * ("premium_debit_card" in c.held)
        + 1.5 * s.moved
    ),
    "sme_overdraft": lambda c, s: -2.6 - 0.8 * s.wealth + 0.6 * ("sme_acquiring" in c.held) + 1.0 * s.new_business,
    "sme_acquiring": lambda c, s: (
        -2.4 + (1.8 if SME_INDUSTRIES.get(c.industry or "") == "retail" else -0.6) + 1.5 * s.new_business
    ),
}


class BankSimulator:
    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self.end_ts = config.end_ts if config.end_ts is not None else _today_midnight()
        self.start_ts = self.end_ts - config.days * DAY
        # client -> days x products: each day's monthly chance of applying at the day's end (NaN where the
        # client held the product or was not eligible); kept only with config.record_chances
        self._chances: dict[str, np.ndarray] = {}
        # day index -> (month, day of the month), shared by every client
        self._calendar = [
            (when.month, when.day)
            for when in (datetime.fromtimestamp(self.start_ts + day * DAY, UTC) for day in range(config.days))
        ]

    def recorded_chances(self) -> dict[str, np.ndarray]:
        """Client -> the daily chances kept so far (``config.record_chances``), to hand to another simulator."""
        return dict(self._chances)

    def keep_chances(self, chances: dict[str, np.ndarray]) -> None:
        """Adopt chances recorded by another simulator of the same bank (a worker process's part of it)."""
        self._chances.update(chances)

    def chances(self, client_id: str, at: float) -> dict[str, float]:
        """The simulator's own monthly chance of each product the client could apply for, as of ``at``: after
        the last whole simulated day before it (empty before the first day ends, for a client ``events()`` has
        not produced, or without ``config.record_chances``).

        An evaluation ranks by it beside the models: how much of the signal that drew the uptake they recover.
        It is a reference, not a ceiling: a label counts uptake over the next weeks, which also depends on what
        happens after the cut (a trip's effect fades, a windfall's lasts), and models learn that from history."""
        by_day = self._chances.get(client_id)
        day = min(math.floor((at - self.start_ts) / DAY) - 1, self.config.days - 1)
        if by_day is None or day < 0:
            return {}
        return {p: float(v) for p, v in zip(PRODUCTS, by_day[day], strict=True) if not math.isnan(v)}

    def events(self, clients: range | None = None) -> Iterator[tuple[str, str, dict[str, object]]]:
        """Every client's events in turn (or those of the client indices in ``clients``: each client has its
        own random stream, so a part of the bank simulated alone gives the same events)."""
        for index in clients if clients is not None else range(self.config.clients):
            rng = np.random.default_rng([self.config.seed, index])
            client = self._new_client(rng, index)
            yield from self._client_events(rng, client)

    # ---- one client --------------------------------------------------------------------------------
    def _new_client(self, rng: np.random.Generator, index: int) -> _Client:
        segment = str(rng.choice(["retail", "sme", "corporate"], p=[0.78, 0.18, 0.04]))
        income = float(rng.lognormal(11.0 if segment == "retail" else 12.3, 0.5))  # monthly, RUB
        return _Client(
            client_id=f"{self.config.client_prefix}{index:06d}",
            segment=segment,
            age=float(rng.uniform(19, 75)),
            income=income,
            saver=float(rng.beta(2, 3)),
            traveler=float(rng.beta(1.5, 4)),
            online=float(rng.beta(3, 2)),
            tenure_days=float(rng.exponential(900)),
            region=str(rng.choice(REGIONS)),
            industry=str(rng.choice(list(SME_INDUSTRIES))) if segment != "retail" else None,
            balance=float(income * rng.uniform(0.2, 3.0)),
            held=set(),
            pending={},
        )

    def _client_events(self, rng: np.random.Generator, c: _Client) -> Iterator[tuple[str, str, dict[str, object]]]:
        yield self._client_event(c, self.start_ts + 60, rng)
        # Products held before the simulated period.
        at_start = _Signals.of(c, 0.0, 0)
        for product in PRODUCTS:
            if self._eligible(c, product, 0) and rng.random() < 0.25 * self._propensity(c, product, at_start):
                c.held.add(product)
                yield (
                    "products",
                    c.client_id,
                    {"client_id": c.client_id, "product": product, "action": "opened", "ts": self.start_ts + 120},
                )
        if self.config.record_chances:
            self._chances[c.client_id] = np.full((self.config.days, len(PRODUCTS)), np.nan, dtype=np.float32)
        tx_seq = 0
        spend_30d: list[float] = []
        profile_change_day = int(rng.integers(30, max(self.config.days, 31))) if rng.random() < 0.1 else -1
        salary_day = int(rng.integers(1, 28))
        for day in range(self.config.days):
            day_ts = self.start_ts + day * DAY
            month, day_of_month = self._calendar[day]
            spent_today = 0.0
            for payload in self._day_transactions(rng, c, day, day_ts, month, day_of_month, salary_day):
                tx_seq += 1
                payload["tx_id"] = f"{c.client_id}-t{tx_seq}"
                if payload["direction"] == "out":
                    spent_today += float(payload["amount"])  # type: ignore[arg-type]
                yield "transactions", c.client_id, payload
                if payload["direction"] == "out" and rng.random() < self.config.reversal_rate:
                    c.balance += float(payload["amount"])  # type: ignore[arg-type]
                    reversed_at = float(payload["ts"]) + float(rng.uniform(3600, 3 * DAY))  # type: ignore[arg-type]
                    if reversed_at <= self.end_ts:  # the bank's now: a later reversal has not happened yet
                        yield (
                            "transaction_deletes",
                            c.client_id,
                            {"tx_id": payload["tx_id"], "client_id": c.client_id, "ts": reversed_at},
                        )
            spend_30d.append(spent_today)
            if len(spend_30d) > 30:
                spend_30d.pop(0)
            if day == profile_change_day:
                region = str(rng.choice(REGIONS))
                if region != c.region:
                    c.region, c.moved_day = region, day
                if c.segment == "retail" and rng.random() < 0.2:
                    c.segment, c.industry = "sme", str(rng.choice(list(SME_INDUSTRIES)))
                    c.business_day = day
                yield self._client_event(c, day_ts + 3600 * 10, rng)
            spent_30d = sum(spend_30d)
            if day % 7 == 3:
                yield from self._product_events(rng, c, day, day_ts, spent_30d)
            if self.config.record_chances:
                signals = _Signals.of(c, spent_30d, day)
                self._chances[c.client_id][day] = [
                    self._propensity(c, p, signals) if p not in c.held and self._eligible(c, p, day) else math.nan
                    for p in PRODUCTS
                ]

    def _client_event(self, c: _Client, ts: float, rng: np.random.Generator) -> tuple[str, str, dict[str, object]]:
        payload: dict[str, object] = {
            "client_id": c.client_id,
            "ts": ts,
            "segment": c.segment,
            "region": c.region,
            "birth_date": self.start_ts - c.age * 365.25 * DAY,
            "registered_at": self.start_ts - c.tenure_days * DAY,
        }
        if c.industry is not None:
            payload["industry_code"] = c.industry
            payload["director_birth_date"] = self.start_ts - float(rng.uniform(28, 65)) * 365.25 * DAY
        return "clients", c.client_id, payload

    def _day_transactions(
        self,
        rng: np.random.Generator,
        c: _Client,
        day: int,
        day_ts: float,
        month: int,
        day_of_month: int,
        salary_day: int,
    ) -> Iterator[dict[str, object]]:
        cur = self.config.currency
        travel_season = 3.0 if month in (6, 7, 8, 12) else 1.0
        if c.segment == "retail":
            if rng.random() < RAISE_DAILY:
                c.income *= float(rng.uniform(1.2, 1.5))
                c.raise_day = day
            if rng.random() < WINDFALL_DAILY:
                amount = round(c.income * float(rng.uniform(3.0, 12.0)), 2)
                c.balance += amount
                c.windfall_day = day
                yield self._tx(
                    day_ts + float(rng.uniform(9, 18)) * 3600,
                    amount,
                    cur,
                    "in",
                    None,
                    "transfer",
                    f"person:p{int(rng.integers(0, 20000))}",
                    c,
                )
            if day_of_month == salary_day:
                amount = round(c.income * float(rng.uniform(0.95, 1.05)), 2)
                c.balance += amount
                yield self._tx(
                    day_ts + 9 * 3600, amount, cur, "in", None, "payroll", f"employer:e{int(c.client_id[-6:]) % 500}", c
                )
            wealth = min(c.income / 60000.0, 3.0)
            thrift = 1.3 - 0.75 * c.saver  # a saver spends less on what is optional, so the balance grows
            for category, (mcc, rate) in SPENDING.items():
                lam = (
                    rate
                    * (0.6 + wealth * 0.5)
                    * (travel_season * (0.5 + 3 * c.traveler) if category == "travel" else 1.0)
                    * (thrift if category in DISCRETIONARY else 1.0)
                )
                for _ in range(int(rng.poisson(lam))):
                    amount = round(float(rng.lognormal(math.log(AMOUNT_SCALE[category] * (0.5 + wealth / 2)), 0.6)), 2)
                    if amount > c.balance and rng.random() < 0.9:
                        continue  # most clients do not spend money they do not have
                    c.balance -= amount
                    if category == "travel":
                        c.trip_day = day
                    channel = "atm" if category == "cash" else ("online" if rng.random() < c.online else "pos")
                    currency = "EUR" if category == "travel" and rng.random() < 0.4 else cur
                    yield self._tx(
                        day_ts + float(rng.uniform(8, 22)) * 3600,
                        amount,
                        currency,
                        "out",
                        mcc,
                        channel,
                        f"merchant:m{int(rng.integers(0, 5000))}",
                        c,
                    )
        else:
            kind = SME_INDUSTRIES.get(c.industry or "", "it")
            season = 1.0
            if kind in ("tourism", "agriculture") and month in (5, 6, 7, 8, 9):
                season = 2.5
            elif kind == "retail" and month == 12:
                season = 2.0
            scale = c.income / 30.0 * (5 if c.segment == "corporate" else 1)
            for _ in range(int(rng.poisson(3.0 * season * (1.5 if kind == "retail" else 1.0)))):
                amount = round(float(rng.lognormal(math.log(scale / 3 * season), 0.7)), 2)
                c.balance += amount
                payer = "person" if kind == "retail" and rng.random() < 0.7 else "merchant"
                channel = "acquiring" if payer == "person" else "transfer"
                yield self._tx(
                    day_ts + float(rng.uniform(9, 20)) * 3600,
                    amount,
                    cur,
                    "in",
                    None,
                    channel,
                    f"{payer}:p{int(rng.integers(0, 20000))}",
                    c,
                )
            for _ in range(int(rng.poisson(2.0))):
                # suppliers and payroll: about 80% of a normal day's revenue, so a business stays solvent
                amount = round(float(rng.lognormal(math.log(scale * 0.4), 0.6)), 2)
                c.balance -= amount
                yield self._tx(
                    day_ts + float(rng.uniform(9, 20)) * 3600,
                    amount,
                    cur,
                    "out",
                    5045,
                    "transfer",
                    f"merchant:s{int(rng.integers(0, 3000))}",
                    c,
                )
            if day_of_month == 28:
                tax = round(scale * 2.0, 2)
                c.balance -= tax
                yield self._tx(day_ts + 12 * 3600, tax, cur, "out", 9311, "transfer", "government:fns", c)

    @staticmethod
    def _tx(
        ts: float,
        amount: float,
        currency: str,
        direction: str,
        mcc: int | None,
        channel: str,
        counterparty: str,
        c: _Client,
    ) -> dict[str, object]:
        payload: dict[str, object] = {
            "client_id": c.client_id,
            "ts": round(ts, 3),
            "amount": max(round(amount, 2), 0.01),
            "currency": currency,
            "direction": direction,
            "channel": channel,
            "counterparty": counterparty,
            "balance": round(c.balance, 2),
        }
        if mcc is not None:
            payload["mcc"] = mcc
        return payload

    # ---- products ----------------------------------------------------------------------------------
    @staticmethod
    def _eligible(c: _Client, product: str, day: int) -> bool:
        """The catalogue's eligibility (deploy/products.toml): a client the bank would refuse does not apply."""
        segments, min_age, max_age, min_tenure_days = ELIGIBILITY[product]
        age = c.age + day / 365.25
        return c.segment in segments and min_age <= age <= max_age and c.tenure_days + day >= min_tenure_days

    @staticmethod
    def _propensity(c: _Client, product: str, signals: _Signals) -> float:
        """Monthly-ish chance of applying, from the client's behaviour (the signal models should learn)."""
        chance = _sigmoid(_LOGITS[product](c, signals))
        if product == "deposit" and c.balance < MIN_DEPOSIT:
            chance *= 0.1
        if product == "investments" and c.balance < MIN_INVESTMENT:
            chance *= 0.2
        return chance

    def _product_events(
        self,
        rng: np.random.Generator,
        c: _Client,
        day: int,
        day_ts: float,
        spend_30d: float,
    ) -> Iterator[tuple[str, str, dict[str, object]]]:
        for product, decide_day in list(c.pending.items()):
            if day >= decide_day:
                del c.pending[product]
                approved = rng.random() < 0.8
                app_id = f"{c.client_id}-{product}-{int(decide_day)}"
                yield (
                    "applications",
                    c.client_id,
                    {
                        "application_id": app_id,
                        "client_id": c.client_id,
                        "product": product,
                        "ts": day_ts + 11 * 3600,
                        "status": "approved" if approved else "rejected",
                    },
                )
                if approved:
                    c.held.add(product)
                    yield (
                        "products",
                        c.client_id,
                        {"client_id": c.client_id, "product": product, "action": "opened", "ts": day_ts + 15 * 3600},
                    )
        signals = _Signals.of(c, spend_30d, day)
        for product in PRODUCTS:
            if product in c.held or product in c.pending or not self._eligible(c, product, day):
                continue
            if rng.random() < self._propensity(c, product, signals) / 4.3:  # weekly from monthly
                decide = day + int(rng.integers(1, 6))
                c.pending[product] = decide
                yield (
                    "applications",
                    c.client_id,
                    {
                        "application_id": f"{c.client_id}-{product}-{decide}",
                        "client_id": c.client_id,
                        "product": product,
                        "status": "submitted",
                        "ts": day_ts + 10 * 3600,
                    },
                )
        if c.held and rng.random() < 0.01:
            product = sorted(c.held)[int(rng.integers(0, len(c.held)))]
            c.held.discard(product)
            yield (
                "products",
                c.client_id,
                {"client_id": c.client_id, "product": product, "action": "closed", "ts": day_ts + 16 * 3600},
            )
