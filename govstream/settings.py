"""All configuration of govstream, in one place.

Every field reads the environment variable GOVSTREAM_<FIELD NAME> (upper case);
CLI flags override by passing keyword arguments to :func:`load`. The defaults
work on a laptop with nothing set: a local Kafka broker the project starts
itself, embedded ClickHouse (chDB) under ./.govstream, the embedded registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from events.evidence import ManifestKeys
    from events.kafka_security import KafkaSecurity
    from events.provenance import RecordSigner


def _default_cache_dir() -> Path:
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "govstream"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GOVSTREAM_", extra="ignore", frozen=True)

    # Where local state lives: broker data, chDB data, pid files.
    home: Path = Field(default=Path(".govstream"), description="local state directory")
    cache_dir: Path = Field(default_factory=_default_cache_dir, description="download cache")

    # Kafka
    kafka_bootstrap: str | None = Field(
        default=None, description="external broker; when unset the local broker is used"
    )
    # How every Kafka client connects (events/kafka_security.py): for a managed
    # cluster, SASL_SSL with SCRAM and the provider's CA, say.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_username: str | None = None
    kafka_password: str | None = None
    kafka_ca_file: Path | None = Field(default=None, description="unset: the system's CAs")
    kafka_cert_file: Path | None = Field(default=None, description="client certificate (mTLS)")
    kafka_key_file: Path | None = Field(default=None, description="its private key")
    kafka_check_hostname: bool = True
    kafka_version: str = "4.1.1"
    kafka_heap: str = "768m"
    topic_prefix: str = "govstream"
    topic_partitions: int = Field(default=4, ge=1)
    max_record_bytes: int = Field(default=1_048_576, ge=1024)

    # Schemas
    schema_registry_url: str | None = None

    # ClickHouse
    clickhouse_url: str | None = Field(
        default=None, description="http(s)://user:pass@host:port; unset = embedded chDB"
    )
    clickhouse_database: str = "govstream"
    clickhouse_cluster: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="migrate ON CLUSTER with Replicated engines (a ClickHouse server cluster)",
    )
    clickhouse_path: Path | None = Field(
        default=None, description="embedded data directory; default <home>/clickhouse"
    )

    # Worker
    app_id: str = "govstream-worker"
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=1, le=65535)
    worker_agents: Literal["all", "sink", "governor"] = Field(
        default="all", description="which services a worker runs (compose splits them)"
    )
    sink_batch_size: int = Field(default=20_000, ge=1)
    sink_flush_seconds: float = Field(default=0.5, gt=0)
    sink_processes: int = Field(
        default=2, ge=0, le=16, description="decoder processes for the sink; 0 = in-process"
    )

    # The governor (streams/governor.py): checkpoints every N records or T ms
    governor_checkpoint_records: int = Field(
        default=5_000, ge=1, description="records folded per partition between checkpoints, at most"
    )
    governor_checkpoint_ms: int = Field(
        default=200, ge=10, le=60_000, description="milliseconds between checkpoints, at most"
    )
    governor_fetch_records: int = Field(
        default=5_000, ge=1, le=100_000, description="records per fetch, at most"
    )
    # Drills (tests and game days); off by default.
    governor_drill_fail_on: str | None = Field(
        default=None, description="drill: folding this event type raises (a bug on purpose)"
    )
    governor_drill_checkpoint_pause_ms: int = Field(
        default=0, ge=0, le=600_000, description="drill: pause inside each transaction"
    )
    governor_drill_fetch_pause_ms: int = Field(
        default=0, ge=0, le=60_000, description="drill: a slowed consumer, pause per fetch"
    )
    admission_timeout_seconds: float = Field(
        default=10.0, gt=0, description="how long an admission waits for the governor's answer"
    )
    # OTLP/HTTP intake (POST /v1/traces, docs/otlp.md)
    otlp_max_body_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        le=256 * 1024 * 1024,
        description="largest OTLP request body (after decompression); larger is 413",
    )
    otlp_idle_close_seconds: float = Field(
        default=1800.0,
        ge=0,
        description="close a session no OTLP span touched for this long (0: never)",
    )
    otlp_remembered_sessions: int = Field(
        default=100_000, ge=1, description="sessions whose start the OTLP intake remembers"
    )

    # Decisions (lifecycle + dedupe + policy)
    policy_path: Path | None = Field(
        default=None, description="policy document; unset = the packaged policies/example.yaml"
    )
    policy_signing_key: str = Field(
        default="govstream-dev-signing-key-change-me",
        description="HMAC key of PolicyDecided signatures; set a real secret in production",
    )
    policy_key_id: str = Field(default="dev-1", min_length=1)
    policy_decision_ttl_seconds: int = Field(default=300, ge=1)
    dedupe_window: int = Field(
        default=1000, ge=1, description="idempotency keys remembered per session (FIFO)"
    )
    prices_path: Path | None = Field(
        default=None,
        description="price catalog (YAML/JSON, README 'Prices'); unset = the built-in "
        "catalog (projections/pricing.py DEFAULT_PRICES)",
    )
    unknown_model: Literal["deny", "fallback"] = Field(
        default="deny",
        description="a model the catalog does not price: deny (UNKNOWN_MODEL) or charge "
        "GOVSTREAM_FALLBACK_PRICE (ADMITTED_AT_FALLBACK_PRICE)",
    )
    fallback_price: dict[str, str] | None = Field(
        default=None,
        description='USD per Mtok for unpriced models, {"input": "15", "output": "75"}',
    )
    # A tenant with no profile in the log: the default limits (never unlimited by
    # omission), or refused outright.
    unknown_tenant: Literal["default_budgets", "deny"] = Field(
        default="default_budgets",
        description="a tenant with no profile: default_budgets, or deny (UNKNOWN_TENANT)",
    )
    default_tenant_budgets: dict[str, int | None] | None = Field(
        default=None,
        description="JSON limits of a tenant with no profile (TenantBudgets fields); "
        "unset = projections/governor/config.py DEFAULT_TENANT_BUDGETS",
    )

    # Input bounds (streams/ingest.py): how far occurred_at may lie from the
    # record's log time; records outside are dead-lettered (out_of_bounds).
    max_event_age_days: float = Field(
        default=30.0, gt=0, description="occurred_at at most this far before the log time"
    )
    max_event_lead_seconds: float = Field(
        default=300.0, ge=0, description="occurred_at at most this far after the log time"
    )

    retention_days: dict[str, int] = Field(
        default_factory=dict,
        description='JSON table -> days, e.g. {"turns": 400}; 0 removes a TTL (sql/retention.py)',
    )
    backlog_interval_seconds: float = Field(
        default=15.0, ge=0, description="consumer backlog samples into ClickHouse; 0 = none"
    )

    # SLOs
    slo_path: Path | None = Field(
        default=None, description="SLO document; unset = the packaged policies/slo.yaml"
    )

    # Budgets and admission
    api_keys: str = Field(
        default="",
        description="admission API keys, 'key:tenant,key:tenant'; '*' as tenant = every tenant",
    )
    global_tokens_per_minute: int | None = Field(
        default=None, ge=1, description="fleet-wide token envelope; unset = none"
    )
    reservation_timeout_seconds: float = Field(
        default=60.0, gt=0, description="an admitted turn's reservation lapses after this"
    )

    # Memory projections (projections/memory.py) and the context endpoint
    memory_turn_retention_hours: float = Field(
        default=24.0, gt=0, description="turn memory keeps turns this far back from the newest"
    )
    memory_task_retention_days: float = Field(
        default=30.0, gt=0, description="task memory keeps objectives, decisions, facts this long"
    )
    memory_tenant_versions: int = Field(
        default=16, ge=1, description="tenant profile versions kept in tenant memory"
    )
    compaction_threshold_tokens: int = Field(
        default=100_000, ge=1, description="turn-memory tokens that request a context compaction"
    )
    context_token_budget: int = Field(
        default=8_000, ge=0, description="tokens of recent turns the context endpoint returns"
    )
    redaction_patterns: dict[str, str] = Field(
        default_factory=dict,
        description='JSON kind -> regex redacted in memory and ClickHouse, {"tkt": "TKT-[0-9]+"}',
    )

    @field_validator("redaction_patterns")
    @classmethod
    def _redaction_patterns_compile(cls, value: dict[str, str]) -> dict[str, str]:
        from projections.redaction import Redactor

        Redactor.build(value)  # a bad pattern fails at start-up, naming itself
        return value

    @field_validator("default_tenant_budgets")
    @classmethod
    def _default_budgets_parse(
        cls, value: dict[str, int | None] | None
    ) -> dict[str, int | None] | None:
        from events.models import TenantBudgets

        if value is not None:
            try:
                TenantBudgets.model_validate(value)
            except ValidationError as exc:  # unknown fields and negatives, named
                error = exc.errors()[0]
                field = ".".join(str(part) for part in error["loc"])
                raise ValueError(f"{field}: {error['msg']}") from None
        return value

    @field_validator("fallback_price")
    @classmethod
    def _fallback_price_parse(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        from projections.pricing import PriceTable

        if value is not None:
            PriceTable.from_mapping({"fallback": value})  # input and output, numbers >= 0
        return value

    @model_validator(mode="after")
    def _fallback_needs_a_price(self) -> Settings:
        if self.unknown_model == "fallback" and self.fallback_price is None:
            raise ValueError(
                "unknown_model: 'fallback' needs GOVSTREAM_FALLBACK_PRICE "
                '(e.g. {"input": "15", "output": "75"})'
            )
        return self

    @model_validator(mode="after")
    def _kafka_security_valid(self) -> Settings:
        try:  # missing credentials, an unreadable CA or key: one line at start
            kafka_security(self)
        except ValueError as exc:
            raise ValueError(f"Kafka security (GOVSTREAM_KAFKA_*): {exc}") from None
        return self

    @field_validator("policy_signing_key")
    @classmethod
    def _signing_key_long_enough(cls, value: str) -> str:
        # The decision, record and evidence signatures all derive from it: a short
        # key is refused here, before the worker reads a record.
        if len(value.encode()) < 16:
            raise ValueError("the signing key must be at least 16 bytes")
        return value

    @field_validator("api_keys")
    @classmethod
    def _api_keys_parse(cls, value: str) -> str:
        parse_api_keys(value)
        return value

    @property
    def api_key_tenants(self) -> dict[str, str]:
        """API key -> the tenant it may act for ("*" = any tenant)."""
        return parse_api_keys(self.api_keys)

    @property
    def clickhouse_embedded(self) -> bool:
        return self.clickhouse_url is None

    @property
    def consumer_group(self) -> str:
        """The Faust application's own id: workers that split the services (compose)
        run apps of their own."""
        if self.worker_agents == "all":
            return self.app_id
        return f"{self.app_id}-{self.worker_agents}"

    @property
    def governor_group(self) -> str:
        """Consumer group of the governor (and the prefix of its transactional ids):
        the same for every worker of the app, however the services are split."""
        return f"{self.app_id}.governor"

    @property
    def sink_group(self) -> str:
        """Consumer group of the ClickHouse sink (its own aiokafka consumer)."""
        return f"{self.app_id}.sink"

    @property
    def chdb_path(self) -> Path:
        return (self.clickhouse_path or self.home / "clickhouse").resolve()

    @property
    def resolved_policy_path(self) -> Path:
        """The policy document the processor loads (the packaged example by default)."""
        if self.policy_path is not None:
            return self.policy_path
        return Path(__file__).parents[1] / "policies" / "example.yaml"

    @property
    def resolved_slo_path(self) -> Path:
        """The SLO document `govstream slo` evaluates (the packaged default if unset)."""
        if self.slo_path is not None:
            return self.slo_path
        return Path(__file__).parents[1] / "policies" / "slo.yaml"

    @property
    def broker_dir(self) -> Path:
        return (self.home / "kafka").resolve()


def kafka_security(settings: Settings) -> KafkaSecurity:
    """How this deployment's Kafka clients connect."""
    from events.kafka_security import KafkaSecurity

    return KafkaSecurity(
        protocol=settings.kafka_security_protocol,
        mechanism=settings.kafka_sasl_mechanism,
        username=settings.kafka_username,
        password=settings.kafka_password,
        ca_file=settings.kafka_ca_file,
        cert_file=settings.kafka_cert_file,
        key_file=settings.kafka_key_file,
        check_hostname=settings.kafka_check_hostname,
    )


def record_signer(settings: Settings) -> RecordSigner:
    """The deployment's record signer: the worker's appends and the admin's profiles."""
    from events.provenance import RecordSigner

    return RecordSigner.from_policy_key(
        settings.policy_key_id, settings.policy_signing_key.encode()
    )


def manifest_keys(settings: Settings) -> ManifestKeys:
    """The keys that sign evidence exports' manifests and check them."""
    from events.evidence import ManifestKeys

    return ManifestKeys.from_policy_key(settings.policy_key_id, settings.policy_signing_key)


def governor_config(settings: Settings) -> Any:
    """The governor's fold configured from these settings: the one place the worker,
    rebuild, replay, backtest and reprice take it from (a GovernorConfig)."""
    from datetime import timedelta

    from events.models import TenantBudgets
    from govstream.errors import UsageError
    from projections.governor.config import DEFAULT_TENANT_BUDGETS, GovernorConfig
    from projections.policy import load_policy
    from projections.policy_contract import ContractError
    from projections.pricing import DEFAULT_PRICES, PriceTable
    from projections.redaction import Redactor

    try:
        policy = load_policy(settings.resolved_policy_path)
    except (ContractError, OSError) as exc:
        raise UsageError(f"bad setting GOVSTREAM_POLICY_PATH: {exc}") from None
    prices = DEFAULT_PRICES
    if settings.prices_path is not None:
        try:
            prices = PriceTable.load(settings.prices_path)
        except (OSError, ValueError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise UsageError(
                f"bad setting GOVSTREAM_PRICES_PATH: {settings.prices_path}: {detail}"
            ) from None
    fallback = None
    if settings.unknown_model == "fallback" and settings.fallback_price is not None:
        fallback = PriceTable.from_mapping({"fallback": settings.fallback_price})["fallback"]
    return GovernorConfig(
        policy=policy,
        signing_key=settings.policy_signing_key.encode(),
        key_id=settings.policy_key_id,
        decision_ttl=timedelta(seconds=settings.policy_decision_ttl_seconds),
        prices=prices,
        fallback_price=fallback,
        global_tokens_per_minute=settings.global_tokens_per_minute,
        partitions=settings.topic_partitions,
        reservation_timeout=timedelta(seconds=settings.reservation_timeout_seconds),
        dedupe_window=settings.dedupe_window,
        turn_retention=timedelta(hours=settings.memory_turn_retention_hours),
        task_retention=timedelta(days=settings.memory_task_retention_days),
        tenant_versions=settings.memory_tenant_versions,
        compaction_threshold_tokens=settings.compaction_threshold_tokens,
        redactor=Redactor.build(settings.redaction_patterns),
        default_budgets=(
            DEFAULT_TENANT_BUDGETS
            if settings.default_tenant_budgets is None
            else TenantBudgets.model_validate(settings.default_tenant_budgets)
        ),
        refuse_unknown_tenants=settings.unknown_tenant == "deny",
    )


_SECRETS = frozenset({"api_keys", "policy_signing_key", "kafka_password"})  # never echoed in errors


def parse_api_keys(text: str) -> dict[str, str]:
    """'key:tenant,key:tenant' -> {key: tenant}; ValueError on a malformed pair."""
    keys: dict[str, str] = {}
    pairs = [p.strip() for p in text.split(",") if p.strip()]
    for number, pair in enumerate(pairs, 1):
        key, sep, tenant = pair.partition(":")
        # The messages never echo a key: they end up in logs.
        if not sep or not key.strip() or not tenant.strip():
            raise ValueError(f"pair {number} is not key:tenant")
        if key.strip() in keys:
            raise ValueError(f"pair {number} repeats an API key")
        keys[key.strip()] = tenant.strip()
    return keys


def load(**overrides: Any) -> Settings:
    """Settings from the environment, with non-None overrides (CLI flags) on top.

    A bad value is a UsageError naming the variable, not a validation traceback.
    """
    from events.kafka_security import configure
    from govstream.errors import UsageError

    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        error = exc.errors()[0]
        if not error["loc"]:  # a rule across settings
            rule = error["msg"].removeprefix("Value error, ")
            raise UsageError(f"bad settings: {rule}") from None
        name = str(error["loc"][0])
        value = "<redacted>" if name in _SECRETS else error.get("input")
        raise UsageError(
            f"bad setting GOVSTREAM_{name.upper()}={value!r}: {error['msg']}"
        ) from None
    configure(kafka_security(settings))  # every Kafka client of this process connects so
    return settings


def as_environment(settings: Settings) -> dict[str, str]:
    """GOVSTREAM_* variables that reproduce these settings in a child process."""
    import json

    env = {}
    for name, value in settings.model_dump().items():
        if value is not None:
            # Complex values travel as JSON, which is how pydantic-settings reads them.
            text = json.dumps(value) if isinstance(value, dict | list) else str(value)
            env[f"GOVSTREAM_{name.upper()}"] = text
    return env
