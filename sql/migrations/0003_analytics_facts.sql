-- 0003 analytics facts: tool calls, policy and admission decisions, session
-- transitions, budget events and suppressed duplicates.
-- Frozen once shipped: change the schema with a new numbered file.
--
-- Sources. Tool calls and runtime lifecycle events come from the sessions
-- topic; everything else from the derived topic, which the processors write
-- (partly inside Kafka transactions; the sink reads read_committed).
--
-- Idempotency, as in 0001/0002: every table is a ReplacingMergeTree whose
-- sorting key is the identity of the row, so the at-least-once sink never
-- double counts; read with FINAL (or GROUP BY the key) for exact figures
-- before background merges have run. Where a runtime retry can reach the table
-- (same idempotency key or operation key, new event_id, higher attempt), the
-- version is 65535 - attempt: the lowest attempt, the original that the
-- session processor applied, stays (the rule of 0002). Derived facts carry
-- deterministic event ids (and attempt 1), so they are keyed by what they are.
--
-- Sorting keys start with tenant_id (every dashboard filters by tenant), then
-- time where the identity allows it (an event_id always has the same
-- occurred_at), else the identity. Tenant, model, tool, reason and tier-like
-- columns are LowCardinality.

-- Tool calls: one operation (tenant_id, operation_key) has two sources, the
-- ToolCallProposed and, later, the ToolCallCompleted. They are two tables,
-- each keyed (tenant_id, operation_key), joined in queries (the tool_calls
-- view below). One table filled by both would need each row to keep the
-- columns the other source does not send: a ReplacingMergeTree keeps one whole
-- row (a completion would erase the proposal's columns), and an
-- AggregatingMergeTree of any()/argMin() states makes every column an
-- aggregate, keeps which attempt wins only through -State functions and is
-- exact only after GROUP BY or FINAL anyway. Two plain tables stay exact with
-- FINAL, keep the first attempt of each source (a retried completion does not
-- count twice) and are written without any state functions.
CREATE TABLE IF NOT EXISTS tool_proposals
(
    tenant_id         LowCardinality(String),
    operation_key     String,
    session_id        String,
    workflow_id       Nullable(String),
    environment       LowCardinality(String),
    event_id          String,
    proposed_at       DateTime64(6, 'UTC'),
    tool              LowCardinality(String),
    action            LowCardinality(String),
    destination_host  Nullable(String),
    method            LowCardinality(String),
    payload_bytes     UInt32,
    risk_level        LowCardinality(String),
    attempt           UInt16,
    first_attempt_version UInt16 MATERIALIZED 65535 - attempt
)
ENGINE = ReplacingMergeTree(first_attempt_version)
ORDER BY (tenant_id, operation_key);

CREATE TABLE IF NOT EXISTS tool_completions
(
    tenant_id      LowCardinality(String),
    operation_key  String,
    session_id     String,
    event_id       String,
    completed_at   DateTime64(6, 'UTC'),
    status         LowCardinality(String),
    latency_ms     UInt32,
    result_ref     Nullable(String),
    attempt        UInt16,
    first_attempt_version UInt16 MATERIALIZED 65535 - attempt
)
ENGINE = ReplacingMergeTree(first_attempt_version)
ORDER BY (tenant_id, operation_key);

-- One row per proposed operation, with its completion when there is one
-- (status '' and completed 0 until then). A completion without a proposal
-- (not sent by a well-behaved runtime) is only in tool_completions.
CREATE VIEW IF NOT EXISTS tool_calls AS
SELECT
    p.tenant_id AS tenant_id,
    p.operation_key AS operation_key,
    p.session_id AS session_id,
    p.workflow_id AS workflow_id,
    p.environment AS environment,
    p.tool AS tool,
    p.action AS action,
    p.destination_host AS destination_host,
    p.method AS method,
    p.payload_bytes AS payload_bytes,
    p.risk_level AS risk_level,
    p.proposed_at AS proposed_at,
    c.status != '' AS completed,
    c.status AS status,
    c.latency_ms AS latency_ms,
    c.completed_at AS completed_at
FROM tool_proposals AS p FINAL
LEFT JOIN tool_completions AS c FINAL
    ON p.tenant_id = c.tenant_id AND p.operation_key = c.operation_key;

-- One decision per operation: the session processor decides an operation key
-- once and answers every repeat with the stored decision, so rows of one key
-- are the same decision.
CREATE TABLE IF NOT EXISTS policy_decisions
(
    tenant_id       LowCardinality(String),
    operation_key   String,
    session_id      String,
    workflow_id     Nullable(String),
    environment     LowCardinality(String),
    event_id        String,
    decided_at      DateTime64(6, 'UTC'),
    tool            LowCardinality(String),
    action          LowCardinality(String),
    decision        LowCardinality(String),
    reason_code     LowCardinality(String),
    rule_id         LowCardinality(String),
    policy_version  LowCardinality(String),
    evaluation_us   UInt32,
    key_id          LowCardinality(String),
    expires_at      DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant_id, operation_key);

CREATE TABLE IF NOT EXISTS admission_decisions
(
    tenant_id         LowCardinality(String),
    decided_at        DateTime64(6, 'UTC'),
    event_id          String,
    session_id        String,
    workflow_id       Nullable(String),
    environment       LowCardinality(String),
    request_kind      LowCardinality(String),
    decision          LowCardinality(String),
    reason_code       LowCardinality(String),
    model             LowCardinality(Nullable(String)),
    estimated_tokens  UInt32,
    remaining_tokens  Nullable(Int64),
    reservation_id    Nullable(String)
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant_id, decided_at, event_id);

-- Every lifecycle fact of a session, one row per operation (idempotency key):
-- SessionStarted, CheckpointCreated, SessionSuspended, SessionResumed,
-- SessionClosed, SessionFailed, SessionQuarantined, from the runtime
-- (source 'runtime', the sessions topic) or from the processors (source
-- 'processor': a budget suspension, a quarantine), with outcome 'applied';
-- and every InvalidTransitionRejected with outcome 'rejected', event_type the
-- type it rejected and causation_id the rejected event. A runtime event the
-- processor rejected has both rows; applied transitions are the applied rows
-- whose event_id is no rejected row's causation_id.
--
-- Keyed by (tenant_id, session_id, idempotency_key): a retried SessionClosed
-- (new event_id, same key) is one row, the original's (lowest attempt); its
-- DuplicateSuppressed is in duplicates_suppressed. Derived facts have keys of
-- their own (lifecycle:<suffix>:..., budget-suspend/...), so they never
-- collide with the runtime event they derive from.
CREATE TABLE IF NOT EXISTS session_transitions
(
    tenant_id        LowCardinality(String),
    session_id       String,
    idempotency_key  String,
    event_id         String,
    occurred_at      DateTime64(6, 'UTC'),
    workflow_id      Nullable(String),
    environment      LowCardinality(String),
    event_type       LowCardinality(String),
    outcome          LowCardinality(String),
    source           LowCardinality(String),
    from_state       LowCardinality(String),
    reason           String,
    error_class      Nullable(String),
    causation_id     Nullable(String),
    attempt          UInt16,
    first_attempt_version UInt16 MATERIALIZED 65535 - attempt
)
ENGINE = ReplacingMergeTree(first_attempt_version)
ORDER BY (tenant_id, session_id, idempotency_key);

-- BudgetWarning (threshold_pct set, action NULL) and BudgetExceeded (action
-- set, threshold_pct NULL). limit/used are in the scope's unit (tokens or
-- micro-dollars).
CREATE TABLE IF NOT EXISTS budget_events
(
    tenant_id       LowCardinality(String),
    occurred_at     DateTime64(6, 'UTC'),
    event_id        String,
    session_id      String,
    workflow_id     Nullable(String),
    environment     LowCardinality(String),
    event_type      LowCardinality(String),
    scope           LowCardinality(String),
    scope_key       String,
    budget_limit    UInt64,
    used            UInt64,
    threshold_pct   Nullable(UInt16),
    action          LowCardinality(Nullable(String)),
    fallback_model  LowCardinality(Nullable(String))
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant_id, occurred_at, event_id);

-- DuplicateSuppressed with its retry lineage: which send repeated which.
CREATE TABLE IF NOT EXISTS duplicates_suppressed
(
    tenant_id           LowCardinality(String),
    occurred_at         DateTime64(6, 'UTC'),
    event_id            String,
    session_id          String,
    workflow_id         Nullable(String),
    environment         LowCardinality(String),
    duplicate_event_id  String,
    original_event_id   String,
    duplicate_attempt   UInt16,
    original_attempt    UInt16,
    suppressed_by       LowCardinality(String)
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant_id, occurred_at, event_id);
