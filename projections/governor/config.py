"""What the governor's fold is configured with: one frozen value, built from settings
at the edge (govstream/), never read from the environment here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from events.models import TenantBudgets
from projections.ledger import DEFAULT_POLICY, BudgetPolicy
from projections.lifecycle import LifecyclePolicy
from projections.policy import PolicyDocument
from projections.pricing import DEFAULT_PRICES, ModelPrice, PriceTable
from projections.redaction import DEFAULT_REDACTOR, Redactor

# The lifecycle machine's quarantine policy. Idempotency is not the machine's but
# the fold's (one mechanism, one window: the session's `applied` keys).
LIFECYCLE = LifecyclePolicy()

# The limits of a tenant with no profile in the log (GOVSTREAM_DEFAULT_TENANT_BUDGETS
# overrides them): a typo in a tenant id gets small budgets, not unlimited ones.
DEFAULT_TENANT_BUDGETS = TenantBudgets(
    tokens_per_session=200_000,
    cost_per_day_usd_micros=10_000_000,  # $10
    cost_per_month_usd_micros=100_000_000,  # $100
    tokens_per_workflow=2_000_000,
    concurrent_sessions=50,
    concurrent_calls_per_tool=10,
)


@dataclass(frozen=True)
class GovernorConfig:
    policy: PolicyDocument
    signing_key: bytes
    key_id: str
    decision_ttl: timedelta = timedelta(seconds=300)
    prices: PriceTable = field(default_factory=lambda: DEFAULT_PRICES)
    # An unpriced model: None refuses it (UNKNOWN_MODEL); a price charges it at that
    # price and says so (ADMITTED_AT_FALLBACK_PRICE).
    fallback_price: ModelPrice | None = None
    budget_policy: BudgetPolicy = DEFAULT_POLICY
    global_tokens_per_minute: int | None = None
    partitions: int = 1
    reservation_timeout: timedelta = timedelta(seconds=60)
    dedupe_window: int = 1000  # idempotency keys remembered per session
    lifecycle: LifecyclePolicy = LIFECYCLE
    turn_retention: timedelta = timedelta(hours=24)
    task_retention: timedelta = timedelta(days=30)
    tenant_versions: int = 16
    compaction_threshold_tokens: int = 100_000
    redactor: Redactor = DEFAULT_REDACTOR
    default_budgets: TenantBudgets = DEFAULT_TENANT_BUDGETS  # a tenant with no profile
    refuse_unknown_tenants: bool = False  # True: UNKNOWN_TENANT instead of the defaults

    @property
    def global_share(self) -> int | None:
        """This partition's share of the global tokens-per-minute envelope."""
        if self.global_tokens_per_minute is None:
            return None
        return max(1, self.global_tokens_per_minute // self.partitions)

    @property
    def reservation_ms(self) -> int:
        return int(self.reservation_timeout.total_seconds() * 1000)
