"""Service level objectives: the SLO document, burn rates, multiwindow alerts, budget burn. Pure.

No I/O apart from `load_slo` reading the document, and no clock reads: the
caller passes counts it read from ClickHouse and the current time, so a test,
the CLI and a replay compute the same verdicts.

The document (policies/slo.yaml documents every field) is validated against
`SloDocument`, pydantic with extra="forbid" at every level; a bad document
raises `SloConfigError` (a `ContractError`) whose message is one line naming
the field, e.g.

    policies/slo.yaml: tiers.A.success.objective: Input should be less than 1

Arithmetic. error budget = 1 - objective; burn rate over a window =
(bad / total) / error budget, 0 when the window is empty. Both are computed
with exact fractions (objectives and rates are read through their decimal
text), so 144 bad turns in 1000 on a 0.99 objective burn at exactly 14.4 and
fire a 14.4 rule. A burn rule fires when BOTH its long and its short window
burn at >= its rate and the long window holds >= burn_alerts.min_events
turns (SRE workbook multiwindow, multi-burn-rate alerts; see the YAML).

Input shape for `slo_status` (what the CLI must read from ClickHouse):

    slo_status(doc, scopes: Iterable[ScopeCounts], budgets: Iterable[BudgetSpend] = ())

    ScopeCounts(
        scope=SloScope(tenant="acme", workflow="triage"),  # workflow None = the whole tenant
        tier="A",                                          # the sessions' tier
        counts={
            "success": {name: WindowCounts(total, bad) for name in doc.window_names()},
            "latency": {name: WindowCounts(total, bad) for name in doc.window_names()},
        },
    )

  - doc.window_names() is every burn-rule window plus the period, e.g.
    ("5m", "30m", "1h", "6h", "30d"); doc.window_seconds(name) its length.
    Every name must be present for both SLIs (a missing window is an error,
    never a silent zero); a scope with no turns passes WindowCounts(0, 0).
  - A window named w covers TurnCompleted events with
    now - w < occurred_at <= now, of the sessions of that tenant (and
    workflow) and tier. Turns whose outcome is in sli.ignored_outcomes are
    not counted at all. success: total = counted turns, bad = outcome in
    sli.bad_outcomes. latency: total = counted turns, bad = latency_ms >
    tiers.<tier>.latency.threshold_ms. `tally_turns` is the reference
    implementation the SQL must agree with.

    BudgetSpend(
        tenant="acme", period="day",        # "day" | "month" (doc.budget_burn.periods)
        limit=100_000_000, used=60_000_000, # micro-dollars, the tenant-day/-month balance
        spent_in_window=5_000_000,          # micro-dollars committed in the last
                                            # doc.budget_burn.rate_window
        seconds_left_in_period=36_000,      # seconds_left_in_period(now, "day")
    )

The result is plain JSON types only (dicts, lists, str, int, float, bool,
None; no NaN or infinity): see `slo_status` for its keys.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from projections.policy_contract import ContractError, read_document, validate_document

__all__ = [
    "DEFAULT_SLO_PATH",
    "SLIS",
    "STATES",
    "Alert",
    "BudgetBurn",
    "BudgetSpend",
    "RuleVerdict",
    "ScopeCounts",
    "SloConfigError",
    "SloDocument",
    "SloScope",
    "WindowCounts",
    "budget_burn",
    "budget_why",
    "burn_rate",
    "deciding_rule",
    "duration_seconds",
    "error_budget",
    "evaluate_burn",
    "format_burn",
    "format_usd",
    "judge_rule",
    "judge_rules",
    "load_slo",
    "parse_slo",
    "seconds_left_in_period",
    "sli_state",
    "slo_status",
    "tally_turns",
    "triage",
    "turn_verdicts",
]

DEFAULT_SLO_PATH = Path(__file__).resolve().parents[1] / "policies" / "slo.yaml"

Sli = Literal["success", "latency"]
SLIS: tuple[Sli, ...] = ("success", "latency")
Severity = Literal["page", "ticket"]
_SEVERITY_ORDER: dict[str, int] = {"page": 0, "ticket": 1}
Outcome = Literal["ok", "error", "timeout", "cancelled"]
BudgetPeriod = Literal["day", "month"]

_DURATION = re.compile(r"([1-9][0-9]{0,5})([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class SloConfigError(ContractError):
    """An SLO document is invalid; str() is one line naming the field.

    A ContractError, so whatever already reports bad policy documents reports
    bad SLO documents the same way.
    """


def duration_seconds(text: str) -> int:
    """Seconds in a duration such as "5m", "1h", "30d"; raises ValueError otherwise."""
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration: a positive whole number followed by s, m, h or d"
        )
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _duration(value: str) -> str:
    duration_seconds(value)
    return value


@functools.lru_cache(maxsize=256)
def _exact(value: float | int) -> Fraction:
    """The decimal the document wrote (0.99 -> 99/100), not the binary float nearest it.
    Cached: a document has a handful of objectives and rates, asked for per scope."""
    return Fraction(repr(value)) if isinstance(value, float) else Fraction(value)


@functools.lru_cache(maxsize=64)
def _error_budget(objective: float) -> Fraction:
    return 1 - _exact(objective)


_NOTHING_BURNT = Fraction(0)


def _not_a_date(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError('must be a string; quote it in YAML, e.g. "2026-11-01"')
    return value


# --- the document schema -----------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


Duration = Annotated[str, AfterValidator(_duration)]
# Strictly inside (0, 1): 1 leaves no error budget (every burn rate infinite), 0 no objective.
Objective = Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]


class SuccessObjective(_Strict):
    objective: Objective


class LatencyObjective(_Strict):
    objective: Objective
    threshold_ms: Annotated[int, Field(ge=1, le=86_400_000)]


class TierObjectives(_Strict):
    success: SuccessObjective
    latency: LatencyObjective

    def objective(self, sli: Sli) -> float:
        return self.success.objective if sli == "success" else self.latency.objective


class Tiers(_Strict):
    """All three tiers are required: a tier without objectives would never alert."""

    A: TierObjectives
    B: TierObjectives
    C: TierObjectives


class SliRules(_Strict):
    bad_outcomes: tuple[Outcome, ...] = Field(min_length=1)
    ignored_outcomes: tuple[Outcome, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> SliRules:
        if "ok" in self.bad_outcomes:
            raise ValueError("bad_outcomes: 'ok' cannot be a bad outcome")
        if "ok" in self.ignored_outcomes:
            raise ValueError("ignored_outcomes: 'ok' cannot be ignored")
        both = sorted(set(self.bad_outcomes) & set(self.ignored_outcomes))
        if both:
            raise ValueError(f"ignored_outcomes: {both} are also bad_outcomes")
        return self


class BurnRule(_Strict):
    long_window: Duration
    short_window: Duration
    burn_rate: Annotated[float, Field(gt=0, allow_inf_nan=False)]

    @model_validator(mode="after")
    def _short_within_long(self) -> BurnRule:
        if duration_seconds(self.short_window) >= duration_seconds(self.long_window):
            raise ValueError(
                f"short_window {self.short_window} must be shorter than "
                f"long_window {self.long_window}"
            )
        return self


class BurnAlerts(_Strict):
    min_events: Annotated[int, Field(ge=0, le=2**31 - 1)]
    rules: dict[Severity, BurnRule] = Field(min_length=1)


class BudgetBurnConfig(_Strict):
    rate_window: Duration
    periods: tuple[BudgetPeriod, ...] = Field(min_length=1)

    @field_validator("periods")
    @classmethod
    def _distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("must not repeat a period")
        return value


class SloDocument(_Strict):
    """A versioned SLO document (schema_version 1)."""

    schema_version: Literal[1]
    version: Annotated[str, BeforeValidator(_not_a_date), Field(min_length=1, max_length=64)]
    description: str = ""
    period: Duration
    sli: SliRules
    tiers: Tiers
    burn_alerts: BurnAlerts
    budget_burn: BudgetBurnConfig

    @model_validator(mode="after")
    def _reachable(self) -> SloDocument:
        period = duration_seconds(self.period)
        for severity, rule in self.burn_alerts.rules.items():
            where = f"burn_alerts.rules.{severity}"
            if duration_seconds(rule.long_window) > period:
                raise ValueError(
                    f"{where}.long_window: {rule.long_window} is longer than "
                    f"the period {self.period}"
                )
            for tier in ("A", "B", "C"):
                for sli in SLIS:
                    objective = getattr(self.tiers, tier).objective(sli)
                    ceiling = 1 / _error_budget(objective)
                    if _exact(rule.burn_rate) > ceiling:
                        raise ValueError(
                            f"{where}.burn_rate: {rule.burn_rate} can never fire for "
                            f"tiers.{tier}.{sli} (objective {objective} allows a burn rate of "
                            f"at most {float(ceiling):g}, when every turn is bad)"
                        )
        if duration_seconds(self.budget_burn.rate_window) > period:
            raise ValueError(
                f"budget_burn.rate_window: {self.budget_burn.rate_window} is longer than "
                f"the period {self.period}"
            )
        return self

    def tier(self, tier: str) -> TierObjectives:
        """The objectives of a tier; ValueError for a tier the document does not know."""
        if tier not in ("A", "B", "C"):
            raise ValueError(f"unknown tier {tier!r} (expected A, B or C)")
        return getattr(self.tiers, tier)

    def window_names(self) -> tuple[str, ...]:
        """Every window a status needs counts for: the burn rules' windows and the period."""
        names = {self.period}
        for rule in self.burn_alerts.rules.values():
            names.update((rule.long_window, rule.short_window))
        return tuple(sorted(names, key=lambda name: (duration_seconds(name), name)))

    def window_seconds(self, name: str) -> int:
        return duration_seconds(name)


# --- loading -------------------------------------------------------------------------


def parse_slo(data: Any, source: str = "slo") -> SloDocument:
    """Validate an already-decoded document; raises SloConfigError (one line)."""
    # Cross-field checks on the whole document name their field in the message.
    return validate_document(SloDocument, data, source, SloConfigError, root=None)


def load_slo(path: str | Path = DEFAULT_SLO_PATH) -> SloDocument:
    """Read and validate an SLO document (.yaml, .yml or .json): the module's only I/O.

    Raises SloConfigError with a one-line message naming the file and the field.
    Duplicate keys are errors, as in policy documents (the last one silently
    winning is how a tightened objective gets lost in a long file).
    """
    return parse_slo(read_document(path, SloConfigError), str(path))


# --- burn-rate arithmetic ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WindowCounts:
    """Counted turns in one window and how many of them were bad (0 <= bad <= total)."""

    total: int
    bad: int

    def __post_init__(self) -> None:
        if not (isinstance(self.total, int) and isinstance(self.bad, int)):
            raise TypeError("WindowCounts takes whole numbers")
        if not 0 <= self.bad <= self.total:
            raise ValueError(f"need 0 <= bad <= total, got bad={self.bad} total={self.total}")


def _burn(bad: int, total: int, objective: float) -> Fraction:
    if not 0 <= bad <= total:
        raise ValueError(f"need 0 <= bad <= total, got bad={bad} total={total}")
    if total == 0:
        return _NOTHING_BURNT  # no turns: nothing burnt (and no alert: see min_events)
    return Fraction(bad, total) / _error_budget(objective)


def error_budget(objective: float) -> float:
    """1 - objective, from the objective's decimal text (error_budget(0.99) == 0.01)."""
    exact = _exact(objective)
    if not 0 < exact < 1:
        raise ValueError(f"objective must be in (0, 1), got {objective}")
    return float(1 - exact)


def burn_rate(bad: int, total: int, objective: float) -> float:
    """How many times faster than sustainable the window spends the error budget.

    (bad / total) / (1 - objective); 0 for an empty window. 1 spends exactly
    the budget over the period; 1 / (1 - objective) is the ceiling (all bad).
    """
    error_budget(objective)  # validates the objective
    return float(_burn(bad, total, objective))


@dataclass(frozen=True, slots=True)
class SloScope:
    """Who an SLO status is about: a tenant, or one workflow of it (workflow None = all)."""

    tenant: str
    workflow: str | None = None

    def label(self) -> str:
        return f"{self.tenant}/{self.workflow}" if self.workflow is not None else self.tenant

    def to_json(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "workflow": self.workflow}


@dataclass(frozen=True, slots=True)
class Alert:
    """A firing burn-rate rule for one scope, tier and SLI."""

    severity: Severity
    scope: SloScope
    tier: str
    sli: Sli
    objective: float
    threshold: float  # the rule's burn rate
    long_window: str
    short_window: str
    long_burn: float
    short_burn: float
    long_counts: WindowCounts
    short_counts: WindowCounts
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "burn_rate",
            "severity": self.severity,
            **self.scope.to_json(),
            "tier": self.tier,
            "sli": self.sli,
            "objective": self.objective,
            "threshold": self.threshold,
            "long_window": self.long_window,
            "short_window": self.short_window,
            "long_burn": self.long_burn,
            "short_burn": self.short_burn,
            "long_counts": {"total": self.long_counts.total, "bad": self.long_counts.bad},
            "short_counts": {"total": self.short_counts.total, "bad": self.short_counts.bad},
            "message": self.message,
        }


def _counts(counts_by_window: Mapping[str, WindowCounts], name: str) -> WindowCounts:
    try:
        counts = counts_by_window[name]
    except KeyError:
        # A missing window is a bug in the query, not an idle tenant: say so.
        raise ValueError(f"no counts for window {name!r}") from None
    if not isinstance(counts, WindowCounts):
        raise TypeError(f"window {name!r}: expected WindowCounts, got {type(counts).__name__}")
    return counts


def _hours(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# Why a rule fires or not, as a code a program can switch on; `RuleVerdict.why` says it
# in words. The order of the checks is the rule itself (see judge_rule).
RuleReason = Literal["firing", "suppressed", "no_events", "burn_below", "recovering"]


@dataclass(frozen=True, slots=True)
class RuleVerdict:
    """One burn rule judged for one scope, tier and SLI: whether it fires, and why.

    reason:
      firing      both windows burn at >= the rule's rate, the long one holds >= min_events
      suppressed  both windows burn fast enough, but the long one holds < min_events turns
                  (the case an operator must still see: 12/12 bad is 100x, and silent)
      no_events   the long window holds no turns
      burn_below  the long window burns below the rate (whatever the short one does)
      recovering  the long window burns fast enough, the short one no longer does
    why is the one-line explanation every output prints (text and --json alike).
    """

    severity: Severity
    long_window: str
    short_window: str
    threshold: float
    min_events: int
    long_counts: WindowCounts
    short_counts: WindowCounts
    long_burn: float
    short_burn: float
    reason: RuleReason
    why: str

    @property
    def fires(self) -> bool:
        return self.reason == "firing"

    @property
    def closeness(self) -> tuple[float, float]:
        return _closeness(self.long_burn, self.short_burn, self.threshold)

    def to_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "long_window": self.long_window,
            "short_window": self.short_window,
            "threshold": self.threshold,
            "min_events": self.min_events,
            "long_burn": self.long_burn,
            "short_burn": self.short_burn,
            "long_counts": {"total": self.long_counts.total, "bad": self.long_counts.bad},
            "short_counts": {"total": self.short_counts.total, "bad": self.short_counts.bad},
            "fires": self.fires,
            "reason": self.reason,
            "why": self.why,
        }


def _closeness(long_burn: float, short_burn: float, threshold: float) -> tuple[float, float]:
    """How near a rule is to firing: the slower window's burn over the rule's rate, then
    the long window's (a 6h window still burning after a quiet 30m beats a quiet hour,
    though both have a slower window at 0). Ignores min_events: that is the state's job."""
    return min(long_burn, short_burn) / threshold, long_burn / threshold


def format_burn(burn: Fraction | float, threshold: Fraction | float) -> str:
    """A burn rate with as few decimals (1 to 4) as keep its comparison with the
    threshold true on the page: 14.38 against 14.4 prints "14.38", not "14.4"."""
    exact, limit = Fraction(burn), Fraction(threshold)
    value = float(exact)
    # One decimal moves the value by 0.05 at most: farther from the threshold than
    # that, the comparison reads true as it is (most scopes; no exact arithmetic).
    if abs(value - float(limit)) > 0.051:
        return f"{value:.1f}"
    for digits in range(1, 5):
        text = f"{value:.{digits}f}"
        if (Fraction(text) >= limit) == (exact >= limit):
            break
    return text


def judge_rule(
    doc: SloDocument,
    tier: str,
    sli: Sli,
    severity: Severity,
    counts_by_window: Mapping[str, WindowCounts],
) -> RuleVerdict:
    """Judge one burn rule (doc.burn_alerts.rules[severity]); the one place the rule lives.

    It fires when BOTH the long and the short window burn at >= its rate (the
    long window proves the spend is significant, the short one that it is
    still going on) and the long window holds >= burn_alerts.min_events turns.
    The burn is judged first, so a scope with too few turns whose burn would
    fire is `suppressed`, not merely quiet.
    """
    if sli not in SLIS:
        raise ValueError(f"unknown SLI {sli!r} (expected success or latency)")
    objective = doc.tier(tier).objective(sli)
    rule = doc.burn_alerts.rules[severity]
    min_events = doc.burn_alerts.min_events
    long = _counts(counts_by_window, rule.long_window)
    short = _counts(counts_by_window, rule.short_window)
    threshold = _exact(rule.burn_rate)
    long_burn = _burn(long.bad, long.total, objective)
    short_burn = _burn(short.bad, short.total, objective)
    rate = f"{rule.burn_rate:g}"
    lw, sw = rule.long_window, rule.short_window
    long_text, short_text = format_burn(long_burn, threshold), format_burn(short_burn, threshold)
    few = long.total < min_events
    events = "1 event" if long.total == 1 else f"{long.total} events"
    few_text = f"{events} < min_events {min_events} in {lw}"
    reason: RuleReason
    if long.total == 0:
        reason, why = "no_events", f"not firing: no events in {lw}"
    elif long_burn < threshold:
        reason = "burn_below"
        if short_burn < threshold:
            why = f"not firing: burn {long_text} over {lw} and {short_text} over {sw} < {rate}"
        else:
            why = f"not firing: burn {long_text} < {rate} over {lw} ({short_text} over {sw})"
        if few:
            why += f"; and {few_text}"
    elif short_burn < threshold:
        reason = "recovering"
        why = (
            f"not firing: burn {long_text} >= {rate} over {lw} "
            f"but {short_text} < {rate} over {sw} (recovering)"
        )
        if few:
            why += f"; and {few_text}"
    elif few:
        reason = "suppressed"
        why = (
            f"not firing: {few_text}, though burn {long_text} over {lw} "
            f"and {short_text} over {sw} >= {rate}"
        )
    else:
        reason = "firing"
        why = f"FIRING: burn {long_text} over {lw} and {short_text} over {sw} >= {rate}"
    return RuleVerdict(
        severity=severity,
        long_window=lw,
        short_window=sw,
        threshold=rule.burn_rate,
        min_events=min_events,
        long_counts=long,
        short_counts=short,
        long_burn=float(long_burn),
        short_burn=float(short_burn),
        reason=reason,
        why=why,
    )


def judge_rules(
    doc: SloDocument, tier: str, sli: Sli, counts_by_window: Mapping[str, WindowCounts]
) -> list[RuleVerdict]:
    """Every burn rule of the document judged, most severe first."""
    severities = sorted(doc.burn_alerts.rules, key=lambda severity: _SEVERITY_ORDER[severity])
    return [judge_rule(doc, tier, sli, severity, counts_by_window) for severity in severities]


def evaluate_burn(
    doc: SloDocument,
    tier: str,
    scope: SloScope,
    sli: Sli,
    counts_by_window: Mapping[str, WindowCounts],
    verdicts: list[RuleVerdict] | None = None,
) -> list[Alert]:
    """The burn rules firing for one scope, tier and SLI, most severe first.

    Whether a rule fires is judge_rule's verdict (`verdicts`: judge_rules' own, when
    the caller has them already). Every firing rule is
    returned (a page usually comes with its ticket); a consumer that wants one
    alert per scope takes the first.
    """
    alerts: list[Alert] = []
    period = duration_seconds(doc.period)
    if verdicts is None:
        verdicts = judge_rules(doc, tier, sli, counts_by_window)
    for verdict in verdicts:
        if not verdict.fires:
            continue
        long, short = verdict.long_counts, verdict.short_counts
        severity, rule = verdict.severity, doc.burn_alerts.rules[verdict.severity]
        budget_left = period / verdict.long_burn
        message = (
            f"{severity.upper()} {scope.label()} tier {tier} {sli}: burning the "
            f"{doc.period} error budget {verdict.long_burn:.1f}x over {rule.long_window} "
            f"({long.bad}/{long.total} bad) and {verdict.short_burn:.1f}x over "
            f"{rule.short_window} ({short.bad}/{short.total} bad), rule >= {rule.burn_rate}x; "
            f"at this rate a full budget lasts {_hours(budget_left)}"
        )
        alerts.append(
            Alert(
                severity=severity,
                scope=scope,
                tier=tier,
                sli=sli,
                objective=doc.tier(tier).objective(sli),
                threshold=rule.burn_rate,
                long_window=rule.long_window,
                short_window=rule.short_window,
                long_burn=verdict.long_burn,
                short_burn=verdict.short_burn,
                long_counts=long,
                short_counts=short,
                message=message,
            )
        )
    return alerts


# --- counting turns (the reference the ClickHouse queries must agree with) -----------


def turn_verdicts(
    doc: SloDocument, tier: str, outcome: str, latency_ms: int
) -> dict[Sli, bool | None]:
    """Per SLI: True good, False bad, None not counted (an ignored outcome)."""
    if outcome not in get_args(Outcome):
        raise ValueError(f"unknown turn outcome {outcome!r}")
    if outcome in doc.sli.ignored_outcomes:
        return {"success": None, "latency": None}
    return {
        "success": outcome not in doc.sli.bad_outcomes,
        "latency": latency_ms <= doc.tier(tier).latency.threshold_ms,
    }


def tally_turns(
    doc: SloDocument,
    tier: str,
    turns: Iterable[tuple[datetime, str, int]],
    now: datetime,
) -> dict[Sli, dict[str, WindowCounts]]:
    """Count (occurred_at, outcome, latency_ms) turns into every window of `doc`.

    A window w holds the turns with now - w < occurred_at <= now. This is the
    in-memory twin of the ClickHouse query behind `govstream slo`.
    """
    names = doc.window_names()
    tallies = {sli: {name: [0, 0] for name in names} for sli in SLIS}
    for occurred_at, outcome, latency_ms in turns:
        age = (now - occurred_at).total_seconds()
        if age < 0:
            continue  # after `now`: not part of this status
        verdicts = turn_verdicts(doc, tier, outcome, latency_ms)
        for name in names:
            if age >= duration_seconds(name):
                continue
            for sli, good in verdicts.items():
                if good is None:
                    continue
                tallies[sli][name][0] += 1
                tallies[sli][name][1] += 0 if good else 1
    return {
        sli: {name: WindowCounts(total, bad) for name, (total, bad) in windows.items()}
        for sli, windows in tallies.items()
    }


# --- budget burn ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BudgetBurn:
    """The spend-rate verdict for one money budget (all amounts micro-dollars).

    projected_spend is used + the window's spend rate times the time left,
    rounded up; seconds_to_exhaustion is None when nothing is being spent
    (the budget never runs out at this rate) and 0 once exhausted.
    """

    used: int
    limit: int
    remaining: int
    spent_in_window: int
    window_seconds: int
    seconds_left_in_period: int
    rate_micros_per_hour: int
    projected_spend: int
    seconds_to_exhaustion: int | None
    exhausted: bool
    fires: bool
    reason: Literal["exhausted", "projected"] | None

    def to_json(self) -> dict[str, Any]:
        return {
            "used": self.used,
            "limit": self.limit,
            "remaining": self.remaining,
            "spent_in_window": self.spent_in_window,
            "window_seconds": self.window_seconds,
            "seconds_left_in_period": self.seconds_left_in_period,
            "rate_micros_per_hour": self.rate_micros_per_hour,
            "projected_spend": self.projected_spend,
            "seconds_to_exhaustion": self.seconds_to_exhaustion,
            "exhausted": self.exhausted,
            "fires": self.fires,
            "reason": self.reason,
        }


def _whole(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")


def budget_burn(
    spent_in_window: int,
    window_seconds: int,
    used: int,
    limit: int,
    seconds_left_in_period: int,
) -> BudgetBurn:
    """Will the current spend rate exhaust the budget before its period ends?

    Fires when used + rate * seconds_left > limit (compared exactly, in
    integers: used * window + spent * left > limit * window) or when the
    budget is already exhausted (used >= limit, mirroring the ledger, where
    reaching 100% is exceeded; a zero budget with nothing used is not).
    """
    _whole("spent_in_window", spent_in_window, 0)
    _whole("window_seconds", window_seconds, 1)
    _whole("used", used, 0)
    _whole("limit", limit, 0)
    _whole("seconds_left_in_period", seconds_left_in_period, 0)
    exhausted = used > 0 and used >= limit
    remaining = max(limit - used, 0)
    projected_extra = -(-spent_in_window * seconds_left_in_period // window_seconds)  # ceil
    over = used * window_seconds + spent_in_window * seconds_left_in_period > limit * window_seconds
    if exhausted:
        seconds_to_exhaustion: int | None = 0
    elif spent_in_window == 0:
        seconds_to_exhaustion = None
    else:
        seconds_to_exhaustion = -(-remaining * window_seconds // spent_in_window)
    reason: Literal["exhausted", "projected"] | None
    reason = "exhausted" if exhausted else "projected" if over else None
    return BudgetBurn(
        used=used,
        limit=limit,
        remaining=remaining,
        spent_in_window=spent_in_window,
        window_seconds=window_seconds,
        seconds_left_in_period=seconds_left_in_period,
        rate_micros_per_hour=-(-spent_in_window * 3600 // window_seconds),
        projected_spend=used + projected_extra,
        seconds_to_exhaustion=seconds_to_exhaustion,
        exhausted=exhausted,
        fires=reason is not None,
        reason=reason,
    )


def seconds_left_in_period(now: datetime, period: BudgetPeriod) -> int:
    """Whole seconds (rounded up) until the UTC day or month of `now` ends.

    Budgets roll over at UTC midnight and on the first of the month (see
    projections.ledger.day_period / month_period).
    """
    if now.tzinfo is None:
        raise ValueError("now must carry a timezone (UTC)")
    now = now.astimezone(UTC)
    if period == "day":
        end = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    elif period == "month":
        year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
        end = datetime(year, month, 1, tzinfo=UTC)
    else:
        raise ValueError(f"unknown budget period {period!r} (expected day or month)")
    return math.ceil((end - now).total_seconds())


# --- status --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScopeCounts:
    """SLI counts of one (scope, tier): sli -> window name -> WindowCounts."""

    scope: SloScope
    tier: str
    counts: Mapping[str, Mapping[str, WindowCounts]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BudgetSpend:
    """One tenant money budget and its recent spend (micro-dollars)."""

    tenant: str
    period: BudgetPeriod
    limit: int
    used: int
    spent_in_window: int
    seconds_left_in_period: int


# The state of one (scope, tier, SLI), worst first; the order `triage` sorts by.
SloState = Literal["firing", "suppressed", "bad", "ok"]
STATES: tuple[SloState, ...] = ("firing", "suppressed", "bad", "ok")


def sli_state(verdicts: Iterable[RuleVerdict]) -> SloState:
    """firing: a rule fires. suppressed: none fires, but one burns fast enough and is
    held back only by min_events. bad: neither, but some rule's long window holds
    bad turns. ok: no bad turn in any rule's window."""
    verdicts = list(verdicts)
    if any(v.fires for v in verdicts):
        return "firing"
    if any(v.reason == "suppressed" for v in verdicts):
        return "suppressed"
    if any(v.long_counts.bad for v in verdicts):
        return "bad"
    return "ok"


def deciding_rule(verdicts: Iterable[RuleVerdict]) -> RuleVerdict:
    """The rule whose verdict explains the state: the most severe firing one, else
    the most severe suppressed one, else the one closest to firing (ties: the
    more severe). `verdicts` come most severe first (judge_rules)."""
    verdicts = list(verdicts)
    if not verdicts:
        raise ValueError("no burn rules to decide between")
    for reason in ("firing", "suppressed"):
        for verdict in verdicts:
            if verdict.reason == reason:
                return verdict
    return max(verdicts, key=lambda v: v.closeness)  # max keeps the first of equals


def _ratio(counts: WindowCounts) -> float | None:
    return None if counts.total == 0 else (counts.total - counts.bad) / counts.total


def _sli_status(doc: SloDocument, row: ScopeCounts, sli: Sli) -> dict[str, Any]:
    try:
        by_window = row.counts[sli]
    except KeyError:
        raise ValueError(
            f"{row.scope.label()} tier {row.tier}: no counts for SLI {sli!r}"
        ) from None
    objective = doc.tier(row.tier).objective(sli)
    windows = {}
    for name in doc.window_names():
        counts = _counts(by_window, name)
        windows[name] = {
            "total": counts.total,
            "bad": counts.bad,
            "good_ratio": _ratio(counts),
            "burn_rate": float(_burn(counts.bad, counts.total, objective)),
        }
    period = _counts(by_window, doc.period)
    allowed = _error_budget(objective) * period.total  # bad turns the period may hold
    remaining = None if period.total == 0 else float(1 - period.bad / allowed)
    verdicts = judge_rules(doc, row.tier, sli, by_window)
    alerts = evaluate_burn(doc, row.tier, row.scope, sli, by_window, verdicts)
    deciding = deciding_rule(verdicts)
    status: dict[str, Any] = {
        "objective": objective,
        "state": sli_state(verdicts),
        # The rule that decides the state, and why it fires or not (what the text prints).
        "why_rule": deciding.severity,
        "why": deciding.why,
        "rules": [verdict.to_json() for verdict in verdicts],
        "windows": windows,
        "error_budget": {
            "period": doc.period,
            "allowed_bad": math.floor(allowed),
            "bad": period.bad,
            # Share of the period's budget left: 1 untouched, 0 spent, negative overspent;
            # None when the period holds no turns (nothing to measure against).
            "remaining_ratio": remaining,
        },
        "alerts": [alert.to_json() for alert in alerts],
    }
    if sli == "latency":
        status["threshold_ms"] = doc.tier(row.tier).latency.threshold_ms
    return status


def slo_status(
    doc: SloDocument,
    scopes: Iterable[ScopeCounts],
    budgets: Iterable[BudgetSpend] = (),
) -> dict[str, Any]:
    """A JSON-able status of every scope and budget; the module docstring gives the input.

    Keys: slo_version, period, min_events, summary ((scope, tier, SLI) pairs
    per state, budgets firing), scopes (one entry per ScopeCounts, in input
    order: tenant, workflow, tier, its worst state, and per SLI its objective,
    state, the deciding rule and its why (why_rule, why), every rule's verdict
    (rules), per-window counts / good_ratio / burn_rate, the period's
    error_budget and firing alerts), budgets (one entry per BudgetSpend with
    the BudgetBurn fields, state, severity, why, and a message when firing),
    and alerts: every firing alert, burn-rate and budget ones, pages first,
    then tickets, then budget alerts. `triage` orders the rows for people.
    """
    scope_entries = []
    firing: list[dict[str, Any]] = []
    for row in scopes:
        slis = {sli: _sli_status(doc, row, sli) for sli in SLIS}
        for sli_status in slis.values():
            firing.extend(sli_status["alerts"])
        state = min((s["state"] for s in slis.values()), key=STATES.index)
        scope_entries.append(
            {**row.scope.to_json(), "tier": row.tier, "state": state, "slis": slis}
        )
    window_seconds = duration_seconds(doc.budget_burn.rate_window)
    budget_entries = []
    for spend in budgets:
        if spend.period not in doc.budget_burn.periods:
            continue  # the document does not watch this period
        verdict = budget_burn(
            spend.spent_in_window,
            window_seconds,
            spend.used,
            spend.limit,
            spend.seconds_left_in_period,
        )
        entry: dict[str, Any] = {
            "tenant": spend.tenant,
            "period": spend.period,
            "rate_window": doc.budget_burn.rate_window,
            **verdict.to_json(),
            "state": "firing" if verdict.fires else "ok",
            # Exhausted: sessions are being refused or degraded now. Projected: hours to act.
            "severity": ("page" if verdict.exhausted else "ticket") if verdict.fires else None,
            "why": budget_why(verdict, doc.budget_burn.rate_window),
        }
        if verdict.fires:
            entry["message"] = _budget_message(spend, verdict, doc.budget_burn.rate_window)
            firing.append({"kind": "budget_burn", **entry})
        budget_entries.append(entry)
    kinds = {"burn_rate": 0, "budget_burn": 1}
    firing.sort(
        key=lambda alert: (
            _SEVERITY_ORDER[alert["severity"]],
            kinds[alert["kind"]],
            alert["tenant"],
            alert.get("workflow") is not None,  # the whole tenant before its workflows
            alert.get("workflow") or "",
            alert.get("tier", ""),
            alert.get("sli", alert.get("period", "")),
        )
    )
    states = [sli["state"] for entry in scope_entries for sli in entry["slis"].values()]
    return {
        "slo_version": doc.version,
        "period": doc.period,
        "min_events": doc.burn_alerts.min_events,
        # (scope, tier, SLI) pairs per state, and budgets firing.
        "summary": {
            **{state: states.count(state) for state in STATES},
            "budgets_firing": sum(1 for b in budget_entries if b["fires"]),
        },
        "scopes": scope_entries,
        "budgets": budget_entries,
        "alerts": firing,
    }


def triage(report: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows a reader scans, worst first: one per (scope, tier, SLI), and the budgets.

    SLI rows: firing (pages, then tickets), suppressed, bad, ok (STATES); within a
    state the deciding rule closest to firing first (the slower of its two
    windows' burn over its rate, then the long window's), then scope, tier, SLI.
    Each row is {tenant, workflow, tier, sli, **the SLI's status}. Budgets:
    firing first (pages, then tickets), then by projected share of the limit.
    """

    def sli_key(row: dict[str, Any]) -> tuple[Any, ...]:
        rule = next(r for r in row["rules"] if r["severity"] == row["why_rule"])
        nearest, long = _closeness(rule["long_burn"], rule["short_burn"], rule["threshold"])
        return (
            STATES.index(row["state"]),
            _SEVERITY_ORDER[row["why_rule"]] if row["state"] == "firing" else 0,
            -nearest,
            -long,
            row["tenant"],
            row["workflow"] is not None,
            row["workflow"] or "",
            row["tier"],
            SLIS.index(row["sli"]),
        )

    rows = [
        {"tenant": e["tenant"], "workflow": e["workflow"], "tier": e["tier"], "sli": sli, **st}
        for e in report["scopes"]
        for sli, st in e["slis"].items()
    ]

    def budget_key(entry: dict[str, Any]) -> tuple[Any, ...]:
        share = entry["projected_spend"] / entry["limit"] if entry["limit"] else float("inf")
        severity = _SEVERITY_ORDER[entry["severity"]] if entry["fires"] else 2
        return (severity, -share, entry["tenant"], entry["period"])

    return sorted(rows, key=sli_key), sorted(report["budgets"], key=budget_key)


BAD_ROWS_SHOWN = 20  # by `govstream slo` and the console: bad rows after the alarming ones


def worst_rows(rows: Sequence[dict[str, Any]], bad_rows: int) -> list[dict[str, Any]]:
    """Of triaged SLI rows (firing, suppressed, bad, ok): every firing and suppressed
    row, then the first `bad_rows` bad ones."""
    shown: list[dict[str, Any]] = []
    bad = 0
    for row in rows:
        if row["state"] == "ok" or (row["state"] == "bad" and bad == bad_rows):
            break
        bad += row["state"] == "bad"
        shown.append(row)
    return shown


def format_usd(micros: int) -> str:
    """Micro-dollars as dollars: cents, unless that would show a non-zero amount as $0.00."""
    if micros == 0 or abs(micros) >= 10_000:
        return f"${micros / 1_000_000:,.2f}"
    return f"${micros / 1_000_000:.6f}"


def budget_why(verdict: BudgetBurn, rate_window: str) -> str:
    """Why a money budget's burn alert fires or not, in one line (text and --json)."""
    used, limit = format_usd(verdict.used), format_usd(verdict.limit)
    if verdict.exhausted:
        return f"FIRING: exhausted, {used} used of {limit}"
    if verdict.spent_in_window == 0:
        return f"not firing: nothing spent in the last {rate_window}; {used} of {limit} used"
    rate = format_usd(verdict.rate_micros_per_hour)
    left = _hours(verdict.seconds_left_in_period)
    projected = format_usd(verdict.projected_spend)
    if verdict.fires:
        runs_out = _hours(verdict.seconds_to_exhaustion or 0)
        return (
            f"FIRING: {rate}/h (last {rate_window}) for the {left} left projects "
            f"{projected} > {limit}; runs out in {runs_out}"
        )
    return (
        f"not firing: {rate}/h (last {rate_window}) for the {left} left projects "
        f"{projected} <= {limit}"
    )


def _budget_message(spend: BudgetSpend, verdict: BudgetBurn, rate_window: str) -> str:
    head = f"BUDGET {spend.tenant} {spend.period}"
    if verdict.exhausted:
        return f"{head}: exhausted ({verdict.used}/{verdict.limit} micro-USD used)"
    runs_out = verdict.seconds_to_exhaustion or 0
    early = verdict.seconds_left_in_period - runs_out
    return (
        f"{head}: at {verdict.rate_micros_per_hour} micro-USD/h (last {rate_window}) the "
        f"remaining {verdict.remaining} micro-USD run out in {_hours(runs_out)}, "
        f"{_hours(early)} before the period ends "
        f"({verdict.projected_spend}/{verdict.limit} projected)"
    )
