"""A seeded, realistic simulated agent fleet. Pure: no I/O.

`simulate(FleetConfig(...))` returns the records a fleet of agent runtimes
would send, in send order, plus the ground truth (counts, token and cost sums,
latency quantiles) that the pipeline's outputs are checked against. The same
seed and start give the same records byte for byte, so a run can be replayed
and a failing check reproduced.

Shape of the fleet:
- tenants t-000.. on plans free / team / enterprise, each announced by one
  TenantProfileUpdated (budgets, egress allowlist, tool permissions) before
  any session;
- sessions of tier A (interactive), B (assistive), C (async): SessionStarted,
  turns (TurnCompleted) with tool calls (ToolCallProposed, ApprovalRecorded
  for high risk, ToolCallCompleted), task summaries, checkpoints, sometimes a
  suspension (CheckpointCreated, SessionSuspended, SessionResumed), and an end
  (SessionClosed, SessionFailed, or for a few SessionQuarantined);
- optional noise: exact duplicates (the same event sent twice) and malformed
  records (bad framing, unknown schema id, a well-framed TurnCompleted whose
  fields break the model's constraints);
- optional retry storm (`retries=N`): every valid event, tenant profiles
  included, is sent N times in all. After the original come N - 1 copies,
  alternately an exact redelivery (copy 1, 3, 5, ...: the bytes of the attempt
  sent just before, same event_id) and a runtime retry (copy 2, 4, 6, ...: the
  same idempotency_key and payload, attempt 2, 3, ..., a new event_id derived
  as uuid5 of the original's, and an occurred_at a seeded backoff after the
  previous attempt). With N = 3: original, redelivery, retry (attempt 2).
  Copies follow their event directly (after its duplicate, before a malformed
  record); duplicates and malformed records are not multiplied.

Valid events come from one random stream, the noise from a second one and the
retry backoffs from a third, so turning duplicates, malformed records or
retries on leaves the valid events unchanged. The ground truth describes what
happened, not how it was delivered: it is the same for every `retries` (its
`records_sent` counts the records of one send: events, duplicates, malformed).
"""

from __future__ import annotations

import io
import math
import random
import string
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from events.models import (
    ApprovalRecorded,
    CheckpointCreated,
    SessionClosed,
    SessionEvent,
    SessionFailed,
    SessionQuarantined,
    SessionResumed,
    SessionStarted,
    SessionSuspended,
    TaskSummaryUpdated,
    TenantBudgets,
    TenantProfileUpdated,
    ToolCallCompleted,
    ToolCallProposed,
    TurnCompleted,
)
from events.topics import Topics
from projections.pricing import DEFAULT_PRICES, ModelPrice, cost_usd_micros

if TYPE_CHECKING:
    from events.codec import Codec

__all__ = [
    "MALFORMED_CODES",
    "MAX_RETRIES",
    "PRODUCER",
    "RETRY_NAMESPACE",
    "FleetConfig",
    "SimRecord",
    "Simulation",
    "default_start",
    "quantile_exact",
    "retry_event_id",
    "simulate",
    "storm_copies",
]

PRODUCER = "govstream-simulator/0.1"
POLICY_VERSION = "v1"
# The reason codes events.codec.Codec.decode raises for each kind (DecodeError.code).
MALFORMED_CODES: tuple[str, ...] = ("bad_framing", "unknown_schema", "invalid_event")
UNKNOWN_SCHEMA_ID = 999_999
# Retry storm: the uuid5 namespace of a retry's event_id, the most sends per
# event, and the runtime's backoff before its first retry (doubling after, up
# to the cap; each with +-50% jitter).
RETRY_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:govstream:simulator:retry")
MAX_RETRIES = 1000
RETRY_BACKOFF_MS = 200.0
RETRY_BACKOFF_CAP_MS = 60_000.0

RecordKind = Literal[
    "event",
    "duplicate",
    "redelivery",
    "retry",
    "bad_framing",
    "unknown_schema",
    "invalid_event",
]

# --- the fleet's parameters ---------------------------------------------------

PLANS = ("free", "team", "enterprise")
PLAN_WEIGHTS = (50, 35, 15)
# Bigger customers run more sessions and longer ones.
PLAN_ACTIVITY = {"free": 1.0, "team": 2.5, "enterprise": 5.0}
PLAN_TURN_FACTOR = {"free": 0.8, "team": 1.0, "enterprise": 1.5}

MICROS_PER_USD = 1_000_000
PLAN_BUDGETS = {
    "free": TenantBudgets(
        tokens_per_session=200_000,
        cost_per_day_usd_micros=5 * MICROS_PER_USD,
        cost_per_month_usd_micros=50 * MICROS_PER_USD,
        tokens_per_workflow=1_000_000,
        concurrent_sessions=5,
    ),
    "team": TenantBudgets(
        tokens_per_session=1_000_000,
        cost_per_day_usd_micros=200 * MICROS_PER_USD,
        cost_per_month_usd_micros=4_000 * MICROS_PER_USD,
        tokens_per_workflow=10_000_000,
        concurrent_sessions=50,
    ),
    "enterprise": TenantBudgets(
        tokens_per_session=5_000_000,
        cost_per_day_usd_micros=5_000 * MICROS_PER_USD,
        cost_per_month_usd_micros=None,
        tokens_per_workflow=None,
        concurrent_sessions=500,
    ),
}

TIERS = ("A", "B", "C")
TIER_WEIGHTS = (50, 30, 20)
# Mean turns per session (before the plan factor); counts are geometric.
TIER_MEAN_TURNS = {"A": 5.0, "B": 3.0, "C": 8.0}
MAX_TURNS = 80
TIER_MODELS: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = {
    "A": (("gpt-4o", "claude-sonnet-4", "gpt-4o-mini", "claude-haiku-4"), (35, 30, 20, 15)),
    "B": (("gpt-4o-mini", "claude-haiku-4", "gpt-4o", "llama-3.1-70b"), (35, 30, 20, 15)),
    "C": (("llama-3.1-70b", "gpt-4o-mini", "claude-sonnet-4", "claude-haiku-4"), (35, 25, 25, 15)),
}
PREMIUM_MODELS = {"gpt-4o": "gpt-4o-mini", "claude-sonnet-4": "claude-haiku-4"}
# Output tokens per second while streaming.
MODEL_TPS = {
    "gpt-4o": 90.0,
    "gpt-4o-mini": 140.0,
    "claude-sonnet-4": 70.0,
    "claude-haiku-4": 130.0,
    "llama-3.1-70b": 60.0,
}
PROMPT_VERSIONS = {"A": ("chat-v7", "chat-v8"), "B": ("assist-v3",), "C": ("batch-v2", "batch-v3")}
TIER_SCOPES = {
    "A": ["chat", "read:docs"],
    "B": ["read:docs", "write:tickets"],
    "C": ["batch", "read:db", "write:reports"],
}
# Median token counts; input grows with the turn index as context accumulates.
TIER_INPUT_MEDIAN = {"A": 1800.0, "B": 2500.0, "C": 5000.0}
TIER_OUTPUT_MEDIAN = {"A": 350.0, "B": 500.0, "C": 900.0}
TIER_FIRST_TOKEN_MEDIAN_MS = {"A": 450.0, "B": 700.0, "C": 1500.0}
TIER_TIMEOUT_MS = {"A": 30_000, "B": 60_000, "C": 120_000}
TIER_THINK_MEDIAN_MS = {"A": 9_000.0, "B": 25_000.0, "C": 1_500.0}
TIER_TOOL_PROB = {"A": 0.2, "B": 0.35, "C": 0.45}
TIER_SUMMARY_PROB = {"A": 0.1, "B": 0.15, "C": 0.3}
TIER_CHECKPOINT_PROB = {"A": 0.01, "B": 0.04, "C": 0.15}
TIER_SUSPEND_PROB = {"A": 0.02, "B": 0.06, "C": 0.12}

OUTCOMES = ("ok", "error", "timeout", "cancelled")
OUTCOME_WEIGHTS = (93.5, 3.5, 2.0, 1.0)
ERROR_CLASSES = (
    "RateLimitError",
    "APIConnectionError",
    "InternalServerError",
    "ContextLengthExceeded",
    "ToolTimeout",
)
ERROR_WEIGHTS = (40, 15, 20, 10, 15)
# These fail before the model reads the prompt: nothing is billed.
UNBILLED_ERRORS = {"RateLimitError", "APIConnectionError"}

# tool -> (actions, risk, destination host or None for local, method, weight)
TOOLS: dict[str, tuple[tuple[str, ...], str, str | None, str, int]] = {
    "web.search": (("query",), "low", "api.search.example.com", "GET", 30),
    "docs.read": (("fetch",), "low", "docs.internal.example.com", "GET", 20),
    "github.issues": (("create", "comment"), "medium", "api.github.com", "POST", 15),
    "slack.chat": (("post_message",), "medium", "slack.com", "POST", 10),
    "db.query": (("select",), "medium", "db.internal.example.com", "POST", 10),
    "email.send": (("send",), "high", "api.sendgrid.com", "POST", 6),
    "payments.refund": (("refund",), "high", "api.stripe.com", "POST", 5),
    "shell.exec": (("run",), "critical", None, "POST", 4),
}
TOOL_NAMES = tuple(TOOLS)
TOOL_WEIGHTS = tuple(t[4] for t in TOOLS.values())
TOOL_LATENCY_MEDIAN_MS = {"low": 250.0, "medium": 600.0, "high": 1200.0, "critical": 2500.0}
PLAN_TOOL_PERMISSIONS = {
    "free": {
        "web.search": "allow",
        "docs.read": "allow",
        "github.issues": "allow",
        "slack.chat": "allow",
        "db.query": "deny",
        "email.send": "approval",
        "payments.refund": "deny",
        "shell.exec": "deny",
    },
    "team": {
        "web.search": "allow",
        "docs.read": "allow",
        "github.issues": "allow",
        "slack.chat": "allow",
        "db.query": "allow",
        "email.send": "approval",
        "payments.refund": "approval",
        "shell.exec": "deny",
    },
    "enterprise": {
        "web.search": "allow",
        "docs.read": "allow",
        "github.issues": "allow",
        "slack.chat": "allow",
        "db.query": "allow",
        "email.send": "approval",
        "payments.refund": "approval",
        "shell.exec": "approval",
    },
}
REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2")

OBJECTIVES = {
    "A": (
        "answer the customer's billing question",
        "draft a reply to the support ticket",
        "explain the failing deployment",
        "summarize the meeting notes",
    ),
    "B": (
        "triage new GitHub issues",
        "prepare the weekly status report",
        "review the pull request for style issues",
        "update the on-call runbook",
    ),
    "C": (
        "reconcile yesterday's refunds",
        "re-index the product catalog",
        "classify the backlog of support emails",
        "generate the monthly usage report",
    ),
}
DECISIONS = (
    "use the cached search results",
    "ask the user to confirm the amount",
    "escalate to a human reviewer",
    "split the task into batches of 100",
    "prefer the internal docs over the web",
    "skip records without an order id",
)
FACTS = (
    "customer is on the team plan",
    "the deploy failed at the migration step",
    "42 issues are unlabeled",
    "refunds above $500 need approval",
    "the catalog has 18,204 products",
    "the runbook was last updated in March",
)
SUSPEND_REASONS = ("awaiting user input", "operator pause", "scheduled window closed")
RESUME_REASONS = ("user returned", "operator resumed", "scheduled window opened")
CLOSE_REASONS = ("completed", "completed", "completed", "user_closed", "idle_timeout")
FAIL_REASONS = (
    ("runtime crashed", "RuntimeError"),
    ("model unavailable after retries", "ModelUnavailable"),
    ("tool adapter failed repeatedly", "ToolAdapterError"),
)
QUARANTINE_REASONS = (
    "repeated invalid tool calls",
    "anomalous egress pattern",
    "runtime fault: sandbox violation",
)
CONTENT_SNIPPETS = (
    "Here is the summary you asked for.",
    "I opened the issue and linked the failing build.",
    "Contact jane.doe@example.com for the refund details.",
    "The report is attached; 3 anomalies need review.",
)

SECOND_US = 1_000_000
MS_US = 1_000


def default_start(now: datetime | None = None) -> datetime:
    """Today 00:00 UTC minus one day: a full day of history ending at midnight."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)


@dataclass(frozen=True)
class FleetConfig:
    """What to simulate. Deterministic in (seed, start) and the other fields."""

    seed: int = 7
    tenants: int = 20
    sessions: int = 2000
    start: datetime = field(default_factory=default_start)
    span: timedelta = timedelta(hours=24)
    duplicate_rate: float = 0.0
    malformed_rate: float = 0.0
    environment: str = "production"
    # Sends per valid event (1 = each once); see the module doc for the copies.
    retries: int = 1

    def __post_init__(self) -> None:
        if self.tenants < 1:
            raise ValueError(f"tenants must be >= 1, got {self.tenants}")
        if self.sessions < 1:
            raise ValueError(f"sessions must be >= 1, got {self.sessions}")
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware (UTC)")
        object.__setattr__(self, "start", self.start.astimezone(UTC))
        if self.span <= timedelta(0):
            raise ValueError(f"span must be positive, got {self.span}")
        for name in ("duplicate_rate", "malformed_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:  # also rejects NaN
                raise ValueError(f"{name} must be between 0 and 1, got {rate}")
        if not 1 <= len(self.environment) <= 64:
            raise ValueError("environment must be 1..64 characters")
        if not 1 <= self.retries <= MAX_RETRIES:
            raise ValueError(f"retries must be between 1 and {MAX_RETRIES}, got {self.retries}")


@dataclass(frozen=True, slots=True)
class SimRecord:
    """One record to send: a valid event (or a duplicate, redelivery or retry of
    one), or raw malformed bytes. A duplicate or redelivery holds the very event
    object it repeats, so it is sent as the same bytes."""

    event: BaseModel | None
    raw: bytes | None
    key: str
    kind: RecordKind


@dataclass
class Simulation:
    records: list[SimRecord]
    truth: dict[str, Any]

    def unique_events(self) -> list[BaseModel]:
        """The valid events, once each, in send order."""
        return [r.event for r in self.records if r.kind == "event" and r.event is not None]


def retry_event_id(original_event_id: str, attempt: int) -> str:
    """The event_id of a runtime retry: uuid5 of the original's id and the attempt."""
    return str(uuid.uuid5(RETRY_NAMESPACE, f"{original_event_id}/attempt/{attempt}"))


def storm_copies(
    event: BaseModel, retries: int, rng: random.Random
) -> list[tuple[RecordKind, BaseModel]]:
    """The retries - 1 records a retry storm sends after `event`, as (kind, event).

    Odd copies are "redelivery": the attempt sent just before, the very same
    object (same bytes, same event_id). Even copies are "retry": the same
    idempotency_key and payload, attempt 2, 3, ..., event_id
    retry_event_id(original, attempt) and occurred_at a backoff after the
    previous attempt (RETRY_BACKOFF_MS doubling up to RETRY_BACKOFF_CAP_MS,
    each times a jitter in [0.5, 1.5) drawn from `rng`). Pure given `rng`.
    """
    out: list[tuple[RecordKind, BaseModel]] = []
    original_id: str = event.event_id  # type: ignore[attr-defined]
    current = event
    for copy in range(1, retries):
        if copy % 2:
            out.append(("redelivery", current))
            continue
        attempt = copy // 2 + 1
        backoff_ms = min(RETRY_BACKOFF_MS * 2.0 ** min(attempt - 2, 30), RETRY_BACKOFF_CAP_MS)
        backoff_ms *= rng.uniform(0.5, 1.5)
        current = current.model_copy(
            update={
                "event_id": retry_event_id(original_id, attempt),
                "attempt": attempt,
                "occurred_at": current.occurred_at  # type: ignore[attr-defined]
                + timedelta(microseconds=int(backoff_ms * MS_US)),
            }
        )
        out.append(("retry", current))
    return out


def quantile_exact(sorted_values: list[int], level: float) -> int | None:
    """ClickHouse quantileExact(level): x[int(level * n)] of the sorted values.

    Same arithmetic as ClickHouse's QuantileExact::getImpl (a double product
    truncated to size_t; level >= 1 takes the last value), so truth and SQL
    agree to the millisecond. None for no values (ClickHouse returns NaN/0).
    """
    n = len(sorted_values)
    if n == 0:
        return None
    index = int(level * n) if level < 1 else n - 1
    return sorted_values[index]


# --- generation ---------------------------------------------------------------


@dataclass
class _Tenant:
    tenant_id: str
    plan: str
    activity: float
    allowlist: frozenset[str]
    permissions: dict[str, str]
    actors: int
    workflow: str | None = None
    workflow_left: int = 0


@dataclass
class _Session:
    index: int
    session_id: str
    tenant: _Tenant
    tier: str
    workflow_id: str | None
    correlation_id: str
    # (offset from session start in µs, event class, fields) before placement in time
    steps: list[tuple[int, type[SessionEvent], dict[str, Any]]] = field(default_factory=list)
    clock_us: int = 0

    def at(self, gap_ms: float, cls: type[SessionEvent], **fields: Any) -> None:
        # At least 1 ms between events: occurred_at strictly increases in a session.
        self.clock_us += max(MS_US, int(gap_ms * MS_US))
        self.steps.append((self.clock_us, cls, fields))


class _Generator:
    def __init__(
        self, config: FleetConfig, prices: Mapping[str, ModelPrice], codec: Codec | None
    ) -> None:
        self.config = config
        self.prices = prices
        self._codec = codec
        self.rng = random.Random(config.seed)
        # Noise has its own stream so duplicates/malformed leave valid events alone.
        self.noise = random.Random(f"govstream-noise:{config.seed}")
        # Retry backoffs have a third stream: retries leave events and noise alone.
        self.retry_rng = random.Random(f"govstream-retries:{config.seed}")
        self.span_us = max(1, int(config.span / timedelta(microseconds=1)))
        self._turn_schema: tuple[int, Any] | None = None

    # -- helpers ----------------------------------------------------------------

    def _uuid(self, rng: random.Random | None = None) -> str:
        return str(uuid.UUID(int=(rng or self.rng).getrandbits(128), version=4))

    def _hex(self, bits: int = 48) -> str:
        return f"{self.rng.getrandbits(bits):0{bits // 4}x}"

    def _lognormal_ms(self, median: float, sigma: float) -> float:
        return self.rng.lognormvariate(math.log(median), sigma)

    def _heavy_tail(self, value: float, prob: float, alpha: float, cap: float) -> float:
        # A few calls hit queueing, retries or cold caches: Pareto-multiplied tail.
        if self.rng.random() < prob:
            value *= self.rng.paretovariate(alpha)
        return min(value, cap)

    # -- tenants ------------------------------------------------------------------

    def tenants(self) -> list[_Tenant]:
        out = []
        for i in range(self.config.tenants):
            plan = self.rng.choices(PLANS, weights=PLAN_WEIGHTS)[0]
            permissions = dict(PLAN_TOOL_PERMISSIONS[plan])
            hosts = {
                TOOLS[tool][2]
                for tool, perm in permissions.items()
                if perm != "deny" and TOOLS[tool][2] is not None
            }
            # Some tenants leave a host off their allowlist: real egress denials.
            if self.rng.random() < 0.2:
                hosts.discard(self.rng.choice(sorted(hosts)))
            activity = PLAN_ACTIVITY[plan] * self.rng.lognormvariate(0.0, 0.6)
            out.append(
                _Tenant(
                    tenant_id=f"t-{i:03d}",
                    plan=plan,
                    activity=activity,
                    allowlist=frozenset(h for h in hosts if h is not None),
                    permissions=permissions,
                    actors=self.rng.randint(3, 40),
                )
            )
        return out

    def profile(self, tenant: _Tenant) -> TenantProfileUpdated:
        event_id = self._uuid()
        models, _ = TIER_MODELS["A"]
        return TenantProfileUpdated(
            event_id=event_id,
            occurred_at=self.config.start,
            tenant_id=tenant.tenant_id,
            idempotency_key=f"{tenant.tenant_id}:profile:{event_id}",
            attempt=1,
            correlation_id=f"profile-{tenant.tenant_id}",
            environment=self.config.environment,
            producer=PRODUCER,
            plan=tenant.plan,
            budgets=PLAN_BUDGETS[tenant.plan],
            egress_allowlist=sorted(tenant.allowlist),
            tool_permissions=tenant.permissions,
            preferences={
                "region": self.rng.choice(REGIONS),
                "default_model": self.rng.choice(models),
            },
        )

    # -- sessions -----------------------------------------------------------------

    def _workflow(self, tenant: _Tenant) -> str | None:
        # ~70% of sessions belong to a workflow shared by 1..4 sessions of the tenant.
        if self.rng.random() >= 0.7:
            return None
        if tenant.workflow is None or tenant.workflow_left <= 0:
            tenant.workflow = f"wf-{self._hex()}"
            tenant.workflow_left = self.rng.randint(1, 4)
        tenant.workflow_left -= 1
        return tenant.workflow

    def _pick_model(self, tier: str, plan: str) -> str:
        models, weights = TIER_MODELS[tier]
        model = self.rng.choices(models, weights=weights)[0]
        # Free tenants mostly get downgraded to the cheap sibling of a premium model.
        if plan == "free" and model in PREMIUM_MODELS and self.rng.random() < 0.6:
            model = PREMIUM_MODELS[model]
        return model

    def _turn_count(self, tier: str, plan: str) -> int:
        mean = max(1.0, TIER_MEAN_TURNS[tier] * PLAN_TURN_FACTOR[plan])
        p = 1.0 / mean
        if p >= 1.0:
            return 1
        u = 1.0 - self.rng.random()  # (0, 1]
        return min(MAX_TURNS, 1 + int(math.log(u) / math.log(1.0 - p)))

    def _turn_fields(
        self, s: _Session, model: str, prompt_version: str, index: int, force_error: bool
    ) -> tuple[float, dict[str, Any]]:
        """(latency in ms, TurnCompleted fields) of one model call."""
        rng, tier = self.rng, s.tier
        outcome = "error" if force_error else rng.choices(OUTCOMES, weights=OUTCOME_WEIGHTS)[0]
        growth = 1.0 + 0.12 * index
        input_tokens = int(self._lognormal_ms(TIER_INPUT_MEDIAN[tier] * growth, 0.8))
        input_tokens = min(20_000, max(200, input_tokens))
        output_tokens = min(4_000, max(50, int(self._lognormal_ms(TIER_OUTPUT_MEDIAN[tier], 0.8))))
        first_token = self._heavy_tail(
            self._lognormal_ms(TIER_FIRST_TOKEN_MEDIAN_MS[tier], 0.45), 0.04, 1.6, 60_000.0
        )
        streaming = output_tokens / MODEL_TPS[model] * 1000.0 * rng.lognormvariate(0.0, 0.3)
        latency = self._heavy_tail(first_token + streaming, 0.03, 1.3, 600_000.0)
        error_class: str | None = None
        if outcome == "error":
            error_class = rng.choices(ERROR_CLASSES, weights=ERROR_WEIGHTS)[0]
            if error_class in UNBILLED_ERRORS:
                input_tokens = 0
            output_tokens = 0
            first_token = 0.0  # no token ever arrived
            latency = self._lognormal_ms(800.0, 0.7)
        elif outcome == "timeout":
            error_class = "DeadlineExceeded"
            latency = TIER_TIMEOUT_MS[tier] + rng.uniform(0.0, 500.0)
            output_tokens = rng.randint(0, output_tokens // 2)
            if output_tokens == 0:
                first_token = 0.0
        elif outcome == "cancelled":
            output_tokens = rng.randint(0, output_tokens // 2)
            latency = first_token + streaming * rng.random()
            if output_tokens == 0:
                first_token = 0.0
        first_token_ms = int(first_token)
        latency_ms = max(int(latency), first_token_ms + 1)  # first token strictly earlier
        content = None
        if rng.random() < 0.05 and outcome == "ok":
            content = rng.choice(CONTENT_SNIPPETS)
        return latency_ms, {
            "model": model,
            "prompt_version": prompt_version,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cost_usd_micros": cost_usd_micros(self.prices, model, input_tokens, output_tokens),
            "first_token_ms": first_token_ms,
            "latency_ms": latency_ms,
            "outcome": outcome,
            "error_class": error_class,
            "content": content,
        }

    def _tool_call(self, s: _Session, op_index: int) -> None:
        rng = self.rng
        tool = rng.choices(TOOL_NAMES, weights=TOOL_WEIGHTS)[0]
        actions, risk, host, method, _ = TOOLS[tool]
        operation_key = f"{s.session_id}:op-{op_index}"
        s.at(
            rng.uniform(20.0, 400.0),
            ToolCallProposed,
            tool=tool,
            action=rng.choice(actions),
            operation_key=operation_key,
            destination_host=host,
            method=method,
            payload_bytes=int(self._lognormal_ms(1500.0, 1.0)),
            risk_level=risk,
        )
        # The runtime learns the policy's answer: a denied tool or host is refused.
        refused = s.tenant.permissions.get(tool) == "deny" or (
            host is not None and host not in s.tenant.allowlist
        )
        if not refused and risk in ("high", "critical"):
            granted = rng.random() < 0.88
            human_delay = self._lognormal_ms(45_000.0 if s.tier == "A" else 180_000.0, 1.0)
            s.at(
                min(human_delay, 6 * 3600 * 1000.0),
                ApprovalRecorded,
                operation_key=operation_key,
                approver=f"{s.tenant.tenant_id}/approver-{rng.randint(1, 3)}",
                granted=granted,
            )
            refused = not granted
        if refused:
            s.at(
                rng.uniform(1.0, 20.0),
                ToolCallCompleted,
                operation_key=operation_key,
                status="rejected",
                latency_ms=rng.randint(0, 5),
                result_ref=None,
            )
            return
        status = rng.choices(("succeeded", "failed", "timeout"), weights=(91, 6, 3))[0]
        if status == "timeout":
            latency = 30_000.0 + rng.uniform(0.0, 200.0)
        else:
            latency = self._heavy_tail(
                self._lognormal_ms(TOOL_LATENCY_MEDIAN_MS[risk], 0.6), 0.03, 1.5, 30_000.0
            )
        s.at(
            latency,
            ToolCallCompleted,
            operation_key=operation_key,
            status=status,
            latency_ms=int(latency),
            result_ref=f"result://{s.session_id}/{op_index}" if status == "succeeded" else None,
        )

    def session(self, index: int, tenant: _Tenant) -> _Session:
        rng = self.rng
        tier = rng.choices(TIERS, weights=TIER_WEIGHTS)[0]
        s = _Session(
            index=index,
            session_id=f"s-{self._hex(64)}",
            tenant=tenant,
            tier=tier,
            workflow_id=self._workflow(tenant),
            correlation_id=f"corr-{self._hex(64)}",
        )
        plan = tenant.plan
        actor = (
            f"{tenant.tenant_id}/svc-{rng.randint(1, 3)}"
            if tier == "C"
            else f"{tenant.tenant_id}/user-{rng.randint(1, tenant.actors):03d}"
        )
        s.steps.append(
            (
                0,
                SessionStarted,
                {
                    "tier": tier,
                    "plan": plan,
                    "actor_id": actor,
                    "actor_scope": TIER_SCOPES[tier],
                    "policy_version": POLICY_VERSION,
                },
            )
        )
        turns = self._turn_count(tier, plan)
        end_roll = rng.random()
        ending = "quarantined" if end_roll < 0.015 else "failed" if end_roll < 0.055 else "closed"
        suspend_after = (
            rng.randrange(turns - 1)
            if turns >= 2 and rng.random() < TIER_SUSPEND_PROB[tier]
            else -1
        )
        primary = self._pick_model(tier, plan)
        prompt_version = rng.choice(PROMPT_VERSIONS[tier])
        objective = rng.choice(OBJECTIVES[tier])
        decisions: list[str] = []
        facts: list[str] = []
        ops = 0
        checkpoints = 0
        for t in range(turns):
            model = primary if rng.random() >= 0.15 else self._pick_model(tier, plan)
            last = t == turns - 1
            force_error = last and ending == "failed" and rng.random() < 0.7
            think = self._lognormal_ms(TIER_THINK_MEDIAN_MS[tier], 0.9) if t else 300.0
            latency_ms, fields = self._turn_fields(s, model, prompt_version, t, force_error)
            s.at(think + latency_ms, TurnCompleted, **fields)
            if fields["outcome"] == "ok" and rng.random() < TIER_TOOL_PROB[tier]:
                for _ in range(2 if rng.random() < 0.2 else 1):
                    self._tool_call(s, ops)
                    ops += 1
            if rng.random() < TIER_SUMMARY_PROB[tier] or (last and tier == "C"):
                if rng.random() < 0.6:
                    decisions.append(rng.choice(DECISIONS))
                if rng.random() < 0.6:
                    facts.append(rng.choice(FACTS))
                s.at(
                    rng.uniform(10.0, 200.0),
                    TaskSummaryUpdated,
                    objective=objective,
                    decisions=list(decisions),
                    facts=list(facts),
                )
            if t == suspend_after or rng.random() < TIER_CHECKPOINT_PROB[tier]:
                checkpoints += 1
                s.at(
                    rng.uniform(50.0, 500.0),
                    CheckpointCreated,
                    artifact_ref=(
                        f"s3://govstream-artifacts/{tenant.tenant_id}/{s.session_id}/"
                        f"ckpt-{checkpoints}.json"
                    ),
                    summary=f"after turn {t + 1}: {objective}",
                )
            if t == suspend_after:
                # Checkpoint first, then suspend: the lifecycle's checkpointed -> suspended.
                s.at(rng.uniform(5.0, 50.0), SessionSuspended, reason=rng.choice(SUSPEND_REASONS))
                pause = min(self._lognormal_ms(20 * 60_000.0, 1.0), 6 * 3600 * 1000.0)
                s.at(pause, SessionResumed, reason=rng.choice(RESUME_REASONS))
        gap = rng.uniform(200.0, 30_000.0)
        if ending == "closed":
            s.at(gap, SessionClosed, reason=rng.choice(CLOSE_REASONS))
        elif ending == "failed":
            reason, error_class = rng.choice(FAIL_REASONS)
            s.at(gap, SessionFailed, reason=reason, error_class=error_class)
        else:
            s.at(gap, SessionQuarantined, reason=rng.choice(QUARANTINE_REASONS))
        return s

    def _start_offset(self, duration_us: int) -> int:
        """Where a session starts in the span; more sessions in the (UTC) afternoon."""
        room = max(0, self.span_us - duration_us - 1)
        start_us = int(self.config.start.timestamp() * SECOND_US)
        offset = 0
        for _ in range(20):
            offset = self.rng.randint(0, room)
            hour = ((start_us + offset) // SECOND_US % 86_400) / 3600.0
            daylight = 0.5 + 0.5 * math.cos((hour - 14.0) / 24.0 * 2.0 * math.pi)
            if self.rng.random() < 0.35 + 0.65 * daylight:
                break
        return offset

    def materialize(self, s: _Session) -> list[SessionEvent]:
        """Place the session in the span and build its validated events."""
        cfg = self.config
        offset = self._start_offset(s.clock_us)
        base = cfg.start + timedelta(microseconds=offset)
        events: list[SessionEvent] = []
        previous: str | None = None
        for seq, (at_us, cls, fields) in enumerate(s.steps):
            event_id = self._uuid()
            event = cls(
                event_id=event_id,
                occurred_at=base + timedelta(microseconds=at_us),
                tenant_id=s.tenant.tenant_id,
                session_id=s.session_id,
                workflow_id=s.workflow_id,
                idempotency_key=f"{s.session_id}:{seq}",
                attempt=1,
                causation_id=previous,
                correlation_id=s.correlation_id,
                environment=cfg.environment,
                producer=PRODUCER,
                **fields,
            )
            events.append(event)
            previous = event_id
        return events

    # -- noise --------------------------------------------------------------------

    def _turn_writer(self) -> tuple[int, Any]:
        if self._turn_schema is None:
            import fastavro

            from events.avro import schema_for

            codec = self._codec
            if codec is None:
                from events.codec import Codec
                from events.registry import EmbeddedRegistry

                codec = Codec(EmbeddedRegistry())
            schema_id = codec.schema_id_of("TurnCompleted")
            self._turn_schema = (schema_id, fastavro.parse_schema(schema_for(TurnCompleted)))
        return self._turn_schema

    def malformed(self, code: str, near: BaseModel, key: str, n: int) -> bytes:
        noise = self.noise
        if code == "bad_framing":
            text = "".join(noise.choices(string.ascii_letters + " ", k=noise.randint(8, 60)))
            return b"not avro: " + text.encode()
        if code == "unknown_schema":
            body = noise.randbytes(noise.randint(8, 64))
            return b"\x00" + UNKNOWN_SCHEMA_ID.to_bytes(4, "big") + body
        # invalid_event: framing and schema are right, the values break the model.
        import fastavro

        schema_id, parsed = self._turn_writer()
        record: dict[str, Any] = {
            "event_id": self._uuid(noise),
            "schema_version": 1,
            "occurred_at": near.occurred_at,  # type: ignore[attr-defined]
            "tenant_id": near.tenant_id,  # type: ignore[attr-defined]
            "workflow_id": None,
            "idempotency_key": f"{key}:malformed-{n}",
            "attempt": 1,
            "causation_id": None,
            "correlation_id": None,
            "environment": self.config.environment,
            "producer": PRODUCER,
            "session_id": key,
            "model": "gpt-4o",
            "prompt_version": "v1",
            "input_tokens": 1200,
            "output_tokens": 300,
            "cost_usd_micros": 6000,
            "first_token_ms": 400,
            "latency_ms": 2500,
            "outcome": "ok",
            "error_class": None,
            "content": None,
        }
        violation = n % 4
        if violation == 0:
            record["input_tokens"] = -5
        elif violation == 1:
            record["tenant_id"] = ""
        elif violation == 2:
            record["cost_usd_micros"] = -100
        else:
            record["model"] = ""
        buf = io.BytesIO()
        buf.write(b"\x00" + schema_id.to_bytes(4, "big"))
        fastavro.schemaless_writer(buf, parsed, record)
        return buf.getvalue()

    # -- the whole run ------------------------------------------------------------

    def run(self) -> Simulation:
        cfg = self.config
        tenants = self.tenants()
        profiles = [self.profile(t) for t in tenants]
        cum: list[float] = []
        total = 0.0
        for t in tenants:
            total += t.activity
            cum.append(total)
        sessions: list[_Session] = []
        timeline: list[tuple[datetime, int, SessionEvent]] = []
        for i in range(cfg.sessions):
            tenant = self.rng.choices(tenants, cum_weights=cum)[0]
            s = self.session(i, tenant)
            sessions.append(s)
            for event in self.materialize(s):
                timeline.append((event.occurred_at, len(timeline), event))
        # Send order: by time; ties by creation order, so each session keeps its order.
        timeline.sort(key=lambda item: (item[0], item[1]))
        ordered: list[BaseModel] = [*profiles, *(e for _, _, e in timeline)]

        records: list[SimRecord] = []
        duplicates = 0
        malformed: Counter[str] = Counter()
        session_ids = [s.session_id for s in sessions]
        n_malformed = 0
        for event in ordered:
            key = Topics.key_of(event)  # the tenant: a tenant's records are in log order
            records.append(SimRecord(event, None, key, "event"))
            # Draw both numbers every time: noise placement does not depend on rates.
            dup_roll, bad_roll = self.noise.random(), self.noise.random()
            if dup_roll < cfg.duplicate_rate:
                records.append(SimRecord(event, None, key, "duplicate"))
                duplicates += 1
            for kind, copy in storm_copies(event, cfg.retries, self.retry_rng):
                records.append(SimRecord(copy, None, key, kind))
            if bad_roll < cfg.malformed_rate:
                code = MALFORMED_CODES[n_malformed % len(MALFORMED_CODES)]
                if not isinstance(event, SessionEvent):
                    self.noise.choice(session_ids)  # drawn as before: the same seeded stream
                bad_key = key
                raw = self.malformed(code, event, bad_key, n_malformed)
                records.append(SimRecord(None, raw, bad_key, code))  # type: ignore[arg-type]
                malformed[code] += 1
                n_malformed += 1
        # The truth counts the records of one send: retries are not new facts.
        one_send = len(ordered) + duplicates + n_malformed
        truth = _truth(cfg, tenants, sessions, ordered, duplicates, malformed, one_send)
        return Simulation(records, truth)


def simulate(
    config: FleetConfig,
    *,
    prices: Mapping[str, ModelPrice] | None = None,
    codec: Codec | None = None,
) -> Simulation:
    """Generate the fleet. `codec` supplies the real TurnCompleted schema id for
    invalid_event records (default: the embedded registry's), so they fail as
    invalid_event and not as unknown_schema when a Schema Registry is used."""
    return _Generator(config, prices or DEFAULT_PRICES, codec).run()


# --- ground truth ---------------------------------------------------------------


def _quantiles(values: Iterable[int], prefix: str) -> dict[str, int | None]:
    ordered = sorted(values)
    return {
        f"{prefix}_p50": quantile_exact(ordered, 0.5),
        f"{prefix}_p95": quantile_exact(ordered, 0.95),
        f"{prefix}_p99": quantile_exact(ordered, 0.99),
    }


def _truth(
    cfg: FleetConfig,
    tenants: list[_Tenant],
    sessions: list[_Session],
    events: list[BaseModel],
    duplicates: int,
    malformed: Counter[str],
    records_sent: int,
) -> dict[str, Any]:
    tier_of = {s.session_id: s.tier for s in sessions}
    by_type: Counter[str] = Counter(type(e).__name__ for e in events)
    turns = {
        "count": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd_micros": 0,
        "by_outcome": dict.fromkeys(OUTCOMES, 0),
    }
    per_tenant: dict[str, dict[str, Any]] = {
        t.tenant_id: {
            "plan": t.plan,
            "sessions": 0,
            "turns": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "cost_usd_micros": 0,
            "cost_usd_micros_by_day": {},
        }
        for t in tenants
    }
    per_model: dict[str, dict[str, int]] = defaultdict(
        lambda: {"turns": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd_micros": 0}
    )
    per_workflow: dict[str, dict[str, Any]] = {}
    latencies: dict[str, list[int]] = {t: [] for t in TIERS}
    first_tokens: dict[str, list[int]] = {t: [] for t in TIERS}
    ok_latencies: dict[str, list[int]] = {t: [] for t in TIERS}
    ok_first_tokens: dict[str, list[int]] = {t: [] for t in TIERS}
    tier_sessions: Counter[str] = Counter()
    tool_status: Counter[str] = Counter()
    approvals = Counter[str]()
    for s in sessions:
        tier_sessions[s.tier] += 1
        per_tenant[s.tenant.tenant_id]["sessions"] += 1
        if s.workflow_id is not None:
            wf = per_workflow.setdefault(
                s.workflow_id,
                {
                    "tenant_id": s.tenant.tenant_id,
                    "sessions": 0,
                    "turns": 0,
                    "tokens": 0,
                    "cost_usd_micros": 0,
                },
            )
            wf["sessions"] += 1
    for e in events:
        if isinstance(e, TurnCompleted):
            tokens = e.input_tokens + e.output_tokens
            turns["count"] += 1
            turns["input_tokens"] += e.input_tokens
            turns["output_tokens"] += e.output_tokens
            turns["cost_usd_micros"] += e.cost_usd_micros
            turns["by_outcome"][e.outcome] += 1
            tenant = per_tenant[e.tenant_id]
            tenant["turns"] += 1
            tenant["input_tokens"] += e.input_tokens
            tenant["output_tokens"] += e.output_tokens
            tenant["cost_usd_micros"] += e.cost_usd_micros
            day = e.occurred_at.date().isoformat()
            by_day = tenant["cost_usd_micros_by_day"]
            by_day[day] = by_day.get(day, 0) + e.cost_usd_micros
            model = per_model[e.model]
            model["turns"] += 1
            model["input_tokens"] += e.input_tokens
            model["output_tokens"] += e.output_tokens
            model["cost_usd_micros"] += e.cost_usd_micros
            if e.workflow_id is not None:
                wf = per_workflow[e.workflow_id]
                wf["turns"] += 1
                wf["tokens"] += tokens
                wf["cost_usd_micros"] += e.cost_usd_micros
            tier = tier_of[e.session_id]
            latencies[tier].append(e.latency_ms)
            first_tokens[tier].append(e.first_token_ms)
            if e.outcome == "ok":
                ok_latencies[tier].append(e.latency_ms)
                ok_first_tokens[tier].append(e.first_token_ms)
        elif isinstance(e, ToolCallCompleted):
            tool_status[e.status] += 1
        elif isinstance(e, ApprovalRecorded):
            approvals["granted" if e.granted else "denied"] += 1
    per_tier = {}
    for tier in TIERS:
        per_tier[tier] = {
            "sessions": tier_sessions[tier],
            "turns": len(latencies[tier]),
            **_quantiles(latencies[tier], "latency_ms"),
            **_quantiles(first_tokens[tier], "first_token_ms"),
            "ok_turns": len(ok_latencies[tier]),
            **_quantiles(ok_latencies[tier], "ok_latency_ms"),
            **_quantiles(ok_first_tokens[tier], "ok_first_token_ms"),
        }
    session_events = [e for e in events if isinstance(e, SessionEvent)]
    return {
        "seed": cfg.seed,
        "start": cfg.start.isoformat(),
        "span_seconds": cfg.span.total_seconds(),
        "environment": cfg.environment,
        "producer": PRODUCER,
        "duplicate_rate": cfg.duplicate_rate,
        "malformed_rate": cfg.malformed_rate,
        "tenants": cfg.tenants,
        "sessions": cfg.sessions,
        "first_event_at": min(e.occurred_at for e in events).isoformat(),  # type: ignore[attr-defined]
        "last_event_at": max(e.occurred_at for e in events).isoformat(),  # type: ignore[attr-defined]
        "events_total": len(events),
        "events_by_type": dict(sorted(by_type.items())),
        "session_events_total": len(session_events),
        "duplicates_sent": duplicates,
        "malformed_sent": {code: malformed[code] for code in MALFORMED_CODES},
        "records_sent": records_sent,
        "sessions_by_end": {
            "closed": by_type["SessionClosed"],
            "failed": by_type["SessionFailed"],
            "quarantined": by_type["SessionQuarantined"],
        },
        "tool_calls": {
            "proposed": by_type["ToolCallProposed"],
            "approvals": {"granted": approvals["granted"], "denied": approvals["denied"]},
            "by_status": {
                status: tool_status[status]
                for status in ("succeeded", "failed", "timeout", "rejected")
            },
        },
        "turns": turns,
        "per_tenant": per_tenant,
        "per_tier": per_tier,
        "per_model": dict(sorted(per_model.items())),
        "workflows": len(per_workflow),
        "per_workflow": dict(sorted(per_workflow.items())),
        "quantile_method": (
            "ClickHouse quantileExact(level): sorted values x[0..n-1], x[int(level * n)]; "
            "latency_ms_* and first_token_ms_* over every TurnCompleted of the tier "
            "(first_token_ms is 0 when no token arrived), ok_* over outcome = 'ok' only"
        ),
    }
