"""The memory strata (projections/memory.py): pure folds over crafted events.

Turn, task, policy and tenant-profile memory; retention per stratum from the
config; dedupe of retried inputs and re-emitted decisions; one compaction
request per crossing of the token threshold; the policy hash chain; the
compact context's token budget; redaction before anything is stored; and the
independence of the result from how the two input streams interleave.
"""

from __future__ import annotations

import copy
import json
import random
import uuid
from datetime import timedelta
from typing import Any

import pytest

from events.models import (
    CheckpointCreated,
    ContextCompactionRequested,
    PolicyDecided,
    SessionEvent,
    TaskSummaryUpdated,
)
from govstream.settings import Settings
from projections.memory import (
    MEMORY_VERSION,
    MemoryConfig,
    canonical_json,
    compact_context,
    fold_session,
    fold_tenant,
    migrate_session,
    policy_chain_ok,
    policy_genesis,
    session_step,
)
from projections.policy import PolicyDocument, load_policy
from projections.redaction import Redactor
from streams.processors import Signing, process
from tests.factories import T0, session_started, tenant_profile, tool_proposal, turn

SETTINGS = Settings()
SIGNING = Signing.from_settings(SETTINGS)
SESSION, TENANT = "s-mem", "t-001"


@pytest.fixture(scope="module")
def policy() -> PolicyDocument:
    return load_policy(SETTINGS.resolved_policy_path)


def at(**delta: float) -> Any:
    return T0 + timedelta(**delta)


def t(seconds: float = 0, tokens: tuple[int, int] = (100, 50), **overrides: Any) -> Any:
    """A turn of SESSION `seconds` after T0 with (input, output) tokens."""
    fields: dict[str, Any] = {
        "session_id": SESSION,
        "occurred_at": at(seconds=seconds),
        "input_tokens": tokens[0],
        "output_tokens": tokens[1],
    }
    fields.update(overrides)
    return turn(**fields)


def summary(
    when: Any, objective: str, decisions: list[str], facts: list[str]
) -> TaskSummaryUpdated:
    event_id = str(uuid.uuid4())
    return TaskSummaryUpdated(
        event_id=event_id,
        occurred_at=when,
        tenant_id=TENANT,
        session_id=SESSION,
        idempotency_key=f"key-{event_id}",
        objective=objective,
        decisions=decisions,
        facts=facts,
    )


def checkpoint(when: Any, ref: str = "s3://ckpt/1", text: str = "") -> CheckpointCreated:
    event_id = str(uuid.uuid4())
    return CheckpointCreated(
        event_id=event_id,
        occurred_at=when,
        tenant_id=TENANT,
        session_id=SESSION,
        idempotency_key=f"key-{event_id}",
        artifact_ref=ref,
        summary=text,
    )


def decisions_for(policy: PolicyDocument, proposals: list[Any]) -> list[PolicyDecided]:
    """The session processor's real, signed decisions for `proposals` (after a start and a turn)."""
    entry, _ = process(None, session_started(session_id=SESSION), policy=policy,
                       signing=SIGNING, now=T0)  # fmt: skip
    entry, _ = process(entry, t(0.5), policy=policy, signing=SIGNING, now=T0)
    out: list[PolicyDecided] = []
    for proposal in proposals:
        entry, derived = process(entry, proposal, policy=policy, signing=SIGNING, now=T0)
        out += [d for d in derived if isinstance(d, PolicyDecided)]
    return out


def proposal(n: int, host: str = "good.com", **overrides: Any) -> Any:
    return tool_proposal(
        event_id=f"p-{n}", idempotency_key=f"prop-{n}", operation_key=f"op-{n}",
        session_id=SESSION, destination_host=host, occurred_at=at(seconds=10 + n), **overrides,
    )  # fmt: skip


def fold_with(config: MemoryConfig, events: list[SessionEvent]) -> tuple[dict[str, Any], list]:
    state: dict[str, Any] | None = None
    emitted: list[SessionEvent] = []
    for event in events:
        state, out = session_step(state, event, config)
        emitted += out
    assert state is not None
    return state, emitted


# --- turn memory ------------------------------------------------------------------


def test_turn_memory_keeps_metadata_and_tokens_of_each_turn() -> None:
    state = fold_session([t(0, (1200, 300), model="gpt-4o", cost_usd_micros=900)])
    assert state is not None
    assert state["version"] == MEMORY_VERSION
    assert (state["session_id"], state["tenant_id"]) == (SESSION, TENANT)
    [record] = state["turns"]
    assert record["model"] == "gpt-4o"
    assert (record["input_tokens"], record["output_tokens"]) == (1200, 300)
    assert record["cost_usd_micros"] == 900
    assert record["outcome"] == "ok"
    assert record["at"] == "2026-11-22T12:00:00.000000Z"
    assert (record["content"], record["redaction"]) == (None, None)  # no content, nothing stored
    assert state["turn_tokens"] == 1500


def test_turn_retention_is_configured_in_hours() -> None:
    hours = [0, 2, 5, 6]
    events = [t(h * 3600, (10, 0)) for h in hours]
    day, three_hours = MemoryConfig(turn_retention_hours=24), MemoryConfig(turn_retention_hours=3)
    kept_day = fold_session(events, day)
    kept_three = fold_session(events, three_hours)
    assert kept_day is not None and kept_three is not None
    assert [r["at"][11:13] for r in kept_day["turns"]] == ["12", "14", "17", "18"]
    assert kept_day["turn_tokens"] == 40
    # Three hours back from the newest turn (18:00): 15:00, so 12:00 and 14:00 are gone.
    assert [r["at"][11:13] for r in kept_three["turns"]] == ["17", "18"]
    assert kept_three["turn_tokens"] == 20
    # Half an hour is not enough for the turn one hour earlier.
    half = fold_session(events, MemoryConfig(turn_retention_hours=0.5))
    assert half is not None and [r["at"][11:13] for r in half["turns"]] == ["18"]


def test_task_retention_is_configured_in_days() -> None:
    events = [
        summary(at(days=0), "draft the report", ["use the Q3 numbers"], ["revenue is up"]),
        checkpoint(at(days=1), "s3://ckpt/day1", "outline done"),
        summary(at(days=5), "finish the report", ["add a chart"], ["costs are flat"]),
    ]
    month = fold_session(events, MemoryConfig(task_retention_days=30))
    short = fold_session(events, MemoryConfig(task_retention_days=2))
    assert month is not None and short is not None
    assert month["task"]["objective"]["text"] == "finish the report"
    assert [d["text"] for d in month["task"]["decisions"]] == ["use the Q3 numbers", "add a chart"]
    assert [f["text"] for f in month["task"]["facts"]] == ["revenue is up", "costs are flat"]
    assert [c["artifact_ref"] for c in month["task"]["checkpoints"]] == ["s3://ckpt/day1"]
    # Two days back from day 5: the items of day 0 and the checkpoint of day 1 are gone.
    assert short["task"]["objective"]["text"] == "finish the report"
    assert [d["text"] for d in short["task"]["decisions"]] == ["add a chart"]
    assert [f["text"] for f in short["task"]["facts"]] == ["costs are flat"]
    assert short["task"]["checkpoints"] == []


def test_task_items_merge_without_repeating_a_text() -> None:
    events = [
        summary(at(seconds=0), "goal", ["a", "b"], ["x"]),
        summary(at(seconds=5), "goal 2", ["b", "c", "c"], ["x", "y"]),
    ]
    state = fold_session(events)
    assert state is not None
    assert [(d["text"], d["at"][17:19]) for d in state["task"]["decisions"]] == [
        ("a", "00"), ("b", "00"), ("c", "05")
    ]  # fmt: skip
    assert [f["text"] for f in state["task"]["facts"]] == ["x", "y"]
    assert state["task"]["objective"] == {"text": "goal 2", "at": "2026-11-22T12:00:05.000000Z"}


def test_retried_turn_is_applied_once() -> None:
    first = t(0, (500, 100), idempotency_key="turn-1", event_id="ev-1")
    retry = t(1, (500, 100), idempotency_key="turn-1", event_id="ev-1-retry", attempt=2)
    config = MemoryConfig()
    once, _ = fold_with(config, [first])
    twice, emitted = fold_with(config, [first, retry])
    assert canonical_json(twice) == canonical_json(once)
    assert [r["event_id"] for r in twice["turns"]] == ["ev-1"]
    assert twice["turn_tokens"] == 600
    assert emitted == []


def test_dedupe_window_is_bounded() -> None:
    config = MemoryConfig(dedupe_window=3)
    events = [t(i, (1, 0), idempotency_key=f"turn-{i}") for i in range(5)]
    state, _ = fold_with(config, events)
    assert state["seen_inputs"] == ["turn-2", "turn-3", "turn-4"]
    # A key older than the window is no longer recognised (the window is the bound).
    again, _ = fold_with(config, [*events, t(9, (1, 0), idempotency_key="turn-0")])
    assert len(again["turns"]) == 6


# --- compaction -------------------------------------------------------------------


def test_compaction_is_requested_once_then_again_after_a_checkpoint() -> None:
    config = MemoryConfig(compaction_threshold_tokens=1_000)
    turns = [t(i, (200, 50)) for i in range(12)]  # 250 tokens each: crosses at the 5th
    state, emitted = fold_with(config, turns)
    assert len(emitted) == 1
    [request] = emitted
    assert isinstance(request, ContextCompactionRequested)
    assert (request.turn_tokens, request.threshold) == (1_250, 1_000)
    assert request.causation_id == turns[4].event_id
    assert (request.session_id, request.tenant_id) == (SESSION, TENANT)
    assert request.occurred_at == turns[4].occurred_at
    assert state["compaction"] == {"requested_at": "2026-11-22T12:00:04.000000Z",
                                   "turn_tokens": 1_250}  # fmt: skip
    assert state["turn_tokens"] == 12 * 250  # later turns are kept, not re-requested

    # The same turn folded again (a rebuild) names the same request: its id derives from the turn.
    _, again = fold_with(config, turns)
    assert again[0].event_id == request.event_id

    # The runtime compacts: turns up to the checkpoint leave turn memory, the flag resets.
    ckpt = checkpoint(at(seconds=11), "s3://ckpt/compacted", "turns 0-11 summarised")
    state, out = session_step(state, ckpt, config)
    assert out == []
    assert state is not None
    assert (state["turns"], state["turn_tokens"], state["compaction"]) == ([], 0, None)
    assert [c["artifact_ref"] for c in state["task"]["checkpoints"]] == ["s3://ckpt/compacted"]

    later = [t(20 + i, (200, 50)) for i in range(10)]
    emitted = []
    for event in later:
        state, out = session_step(state, event, config)
        emitted += out
    assert [e.causation_id for e in emitted] == [later[4].event_id]  # once more, not per turn
    assert state is not None and state["turn_tokens"] == 10 * 250


def test_checkpoint_keeps_turns_after_it() -> None:
    config = MemoryConfig()
    events = [t(0), t(1), checkpoint(at(seconds=1)), t(2)]
    state, _ = fold_with(config, events)
    assert [r["at"][17:19] for r in state["turns"]] == ["02"]
    assert state["turn_tokens"] == 150


def test_no_compaction_at_exactly_the_threshold() -> None:
    config = MemoryConfig(compaction_threshold_tokens=300)
    _, emitted = fold_with(config, [t(0), t(1)])  # 300 tokens: at, not past
    assert emitted == []
    _, emitted = fold_with(config, [t(0), t(1), t(2, (1, 0))])
    assert len(emitted) == 1


# --- policy memory ----------------------------------------------------------------


def test_policy_memory_is_hash_chained_and_tamper_evident(policy: PolicyDocument) -> None:
    decided = decisions_for(policy, [proposal(1), proposal(2, "evil.example"), proposal(3)])
    assert [d.decision for d in decided] == ["allow", "deny", "allow"]
    state = fold_session(decided)
    assert state is not None
    records = state["policy"]
    assert [r["seq"] for r in records] == [0, 1, 2]
    assert [r["operation_key"] for r in records] == ["op-1", "op-2", "op-3"]
    assert records[1]["reason_code"] == "EGRESS_NOT_ALLOWED"
    assert [r["signature"] for r in records] == [d.signature for d in decided]
    # Each record carries the hash of the previous one; the first the session's genesis.
    assert records[0]["prev_hash"] == policy_genesis(SESSION)
    assert [r["prev_hash"] for r in records[1:]] == [r["hash"] for r in records[:-1]]
    assert state["policy_head"] == records[-1]["hash"]
    assert policy_chain_ok(state) is None

    tampered = copy.deepcopy(state)
    tampered["policy"][1]["reason_code"] = "ALLOWED"
    assert policy_chain_ok(tampered) == 1
    rehashed = copy.deepcopy(state)  # fixing the hash of 1 breaks the link of 2
    rehashed["policy"][1]["hash"] = rehashed["policy"][2]["prev_hash"] = "0" * 64
    assert policy_chain_ok(rehashed) == 1
    dropped = copy.deepcopy(state)  # removing the newest record leaves the head dangling
    dropped["policy"].pop()
    assert policy_chain_ok(dropped) == 2
    reordered = copy.deepcopy(state)
    reordered["policy"][0], reordered["policy"][1] = reordered["policy"][1], reordered["policy"][0]
    assert policy_chain_ok(reordered) == 1  # the record now first has seq 1 and the wrong link


def test_re_emitted_decision_is_recorded_once(policy: PolicyDocument) -> None:
    [decision] = decisions_for(policy, [proposal(1)])
    once = fold_session([decision])
    twice = fold_session([decision, decision, PolicyDecided.model_validate(decision.model_dump())])
    assert once is not None and twice is not None
    assert canonical_json(twice) == canonical_json(once)
    assert len(twice["policy"]) == 1


def test_policy_memory_is_kept_beyond_every_retention(policy: PolicyDocument) -> None:
    decided = decisions_for(policy, [proposal(1)])
    config = MemoryConfig(turn_retention_hours=0.001, task_retention_days=0.001)
    state, _ = fold_with(config, [*decided, t(90 * 24 * 3600), summary(at(days=90), "g", [], [])])
    assert len(state["policy"]) == 1
    assert policy_chain_ok(state) is None


# --- tenant profile memory --------------------------------------------------------


def test_tenant_profiles_are_versioned_and_capped() -> None:
    profiles = [
        tenant_profile(event_id=f"prof-{i}", occurred_at=at(minutes=i), plan=f"plan-{i}",
                       tool_permissions={"shell": "deny", "http_request": "allow"})
        for i in range(5)
    ]  # fmt: skip
    state = fold_tenant(profiles, MemoryConfig(tenant_versions=3))
    assert state is not None
    assert state["tenant_id"] == TENANT
    assert state["latest_version"] == 5
    assert [v["profile_version"] for v in state["versions"]] == [3, 4, 5]
    assert [v["plan"] for v in state["versions"]] == ["plan-2", "plan-3", "plan-4"]
    assert list(state["versions"][-1]["tool_permissions"]) == ["http_request", "shell"]
    # A redelivered profile does not make a new version.
    again = fold_tenant([*profiles, profiles[-1]], MemoryConfig(tenant_versions=3))
    assert again == state
    # The default keeps them all.
    full = fold_tenant(profiles)
    assert full is not None and [v["profile_version"] for v in full["versions"]] == [1, 2, 3, 4, 5]


# --- the compact context ----------------------------------------------------------


def test_compact_context_takes_the_newest_turns_within_the_budget(
    policy: PolicyDocument,
) -> None:
    sizes = [(100, 0), (200, 0), (300, 0), (400, 0)]
    turns = [t(i, size) for i, size in enumerate(sizes)]
    decided = decisions_for(policy, [proposal(1), proposal(2, "evil.example")])
    task = summary(at(seconds=5), "ship it", ["no Friday deploys"], ["CI is green"])
    state = fold_session([*turns, task, *decided])
    profiles = fold_tenant([tenant_profile(plan="team", event_id="prof-1")])
    assert state is not None
    context = compact_context(
        state,
        token_budget=750,
        constraints={"status": "active", "budget": None},
        tenant=profiles,
    )
    # Newest first: 400, then 300 (700); 200 would pass 750. Back in time order.
    assert [r["input_tokens"] for r in context["recent_turns"]] == [300, 400]
    assert context["recent_turn_tokens"] == 700
    assert context["turn_memory_tokens"] == 1000
    assert context["task"]["objective"]["text"] == "ship it"
    assert [d["text"] for d in context["task"]["decisions"]] == ["no Friday deploys"]
    assert context["constraints"]["status"] == "active"
    assert context["constraints"]["tenant"]["plan"] == "team"
    assert context["constraints"]["tenant"]["profile_version"] == 1
    assert [(d["operation_key"], d["reason_code"]) for d in context["recent_denials"]] == [
        ("op-2", "EGRESS_NOT_ALLOWED")
    ]
    assert context["policy_head"] == state["policy_head"]
    assert context["compaction_requested"] is False

    assert compact_context(state, token_budget=0)["recent_turns"] == []
    everything = compact_context(state, token_budget=10_000)
    assert [r["input_tokens"] for r in everything["recent_turns"]] == [100, 200, 300, 400]
    # Exactly the budget fits.
    exact = compact_context(state, token_budget=400)
    assert [r["input_tokens"] for r in exact["recent_turns"]] == [400]


# --- redaction --------------------------------------------------------------------

SECRETS = {
    "email": "alice.smith@example.com",
    "phone": "+1 415 555 2671",
    "card": "4111 1111 1111 1111",
    "api_key": "sk-proj-abcdefghijklmnopqrstuvwxyz012345",
    "bearer_token": "eyZ0aGlz1234567890abcdefXYZ",
    "ticket": "TKT-884211",
}


def secret_text() -> str:
    s = SECRETS
    return (
        f"Mail {s['email']} or call {s['phone']}. Card {s['card']} on file. "
        f"Use key {s['api_key']} with header Authorization: Bearer {s['bearer_token']}; "
        f"see {s['ticket']}."
    )


def test_content_is_redacted_before_it_enters_memory() -> None:
    redactor = Redactor.build({"ticket": r"TKT-[0-9]{4,}"})
    config = MemoryConfig(redactor=redactor)
    text = secret_text()
    events = [
        checkpoint(at(seconds=-1), "s3://ckpt/1", f"called {SECRETS['phone']}"),
        t(0, content=text),
        t(1, content="nothing to hide here"),
        summary(
            at(seconds=2),
            f"help {SECRETS['email']}",
            [f"bill {SECRETS['card']}"],
            [f"token {SECRETS['api_key']}"],
        ),
        t(4, content=f"ticket {SECRETS['ticket']} and Bearer {SECRETS['bearer_token']}"),
    ]
    state, _ = fold_with(config, events)
    stored = canonical_json(state).decode()
    for kind, raw in SECRETS.items():
        assert raw not in stored, f"raw {kind} stored"
    assert "4111" not in stored and "555 2671" not in stored  # no fragment either
    first, clean, last = state["turns"]
    assert first["content"] == (
        "Mail [REDACTED:email] or call [REDACTED:phone]. Card [REDACTED:card] on file. "
        "Use key [REDACTED:api_key] with header Authorization: Bearer [REDACTED:bearer_token]; "
        "see [REDACTED:ticket]."
    )
    assert first["redaction"]["counts"] == {
        "api_key": 1, "bearer_token": 1, "card": 1, "email": 1, "phone": 1, "ticket": 1,
    }  # fmt: skip
    assert first["redaction"]["total"] == 6
    # The hash of the original is recorded (the same text can be recognised), not the text.
    assert first["redaction"]["sha256"] == redactor.redact(text).record.sha256
    assert clean["content"] == "nothing to hide here"
    assert clean["redaction"]["total"] == 0
    assert last["redaction"]["counts"] == {"bearer_token": 1, "ticket": 1}
    task = state["task"]
    assert task["objective"]["text"] == "help [REDACTED:email]"
    assert [d["text"] for d in task["decisions"]] == ["bill [REDACTED:card]"]
    assert [f["text"] for f in task["facts"]] == ["token [REDACTED:api_key]"]
    assert task["checkpoints"][0]["summary"] == "called [REDACTED:phone]"


def test_custom_pattern_only_with_its_configuration() -> None:
    text = f"See {SECRETS['ticket']} from {SECRETS['email']}"
    default = fold_session([t(0, content=text)])
    configured = fold_session(
        [t(0, content=text)], MemoryConfig(redactor=Redactor.build({"ticket": r"TKT-[0-9]+"}))
    )
    assert default is not None and configured is not None
    assert default["turns"][0]["content"] == f"See {SECRETS['ticket']} from [REDACTED:email]"
    assert configured["turns"][0]["content"] == "See [REDACTED:ticket] from [REDACTED:email]"


def test_memory_config_from_settings_uses_the_redaction_patterns() -> None:
    from streams.memory import memory_config

    settings = Settings(
        redaction_patterns={"ticket": "TKT-[0-9]+"},
        memory_turn_retention_hours=2,
        memory_task_retention_days=3,
        memory_tenant_versions=4,
        compaction_threshold_tokens=5,
    )
    config = memory_config(settings)
    assert (config.turn_retention_hours, config.task_retention_days) == (2, 3)
    assert (config.tenant_versions, config.compaction_threshold_tokens) == (4, 5)
    assert config.redactor.redact("TKT-1").text == "[REDACTED:ticket]"
    with pytest.raises(ValueError, match="bad"):
        Settings(redaction_patterns={"bad": "("})


# --- determinism and versions -----------------------------------------------------


def interleave(a: list[Any], b: list[Any], rng: random.Random) -> list[Any]:
    """A random merge of `a` and `b` keeping each one's own order."""
    out: list[Any] = []
    i = j = 0
    while i < len(a) or j < len(b):
        if j >= len(b) or (i < len(a) and rng.random() < 0.5):
            out.append(a[i])
            i += 1
        else:
            out.append(b[j])
            j += 1
    return out


def test_interleaving_of_inputs_and_decisions_cannot_change_memory(
    policy: PolicyDocument,
) -> None:
    proposals = [proposal(1), proposal(2, "evil.example"), proposal(3, risk_level="high")]
    decided = decisions_for(policy, proposals)
    retried_turn = t(4, (300, 30), idempotency_key="turn-4", event_id="turn-4-retry", attempt=2)
    inputs: list[SessionEvent] = [
        session_started(session_id=SESSION),
        t(0, (300, 30), content=f"reach me at {SECRETS['email']}"),
        summary(at(seconds=1), "goal", ["d1"], ["f1"]),
        t(2, (300, 30)),
        proposals[0],
        t(3, (300, 30), content="Bearer abcdef1234567890"),
        t(4, (300, 30), idempotency_key="turn-4"),
        retried_turn,
        checkpoint(at(seconds=4), "s3://ckpt/4"),
        t(5, (300, 30)),
        proposals[1],
        summary(at(seconds=6), "goal 2", ["d2"], ["f1", "f2"]),
        proposals[2],
        t(7, (300, 30)),
    ]
    outputs: list[SessionEvent] = [decided[0], decided[1], decided[0], decided[2]]  # a re-emit
    config = MemoryConfig(compaction_threshold_tokens=600)
    reference, reference_out = fold_with(config, inputs + outputs)
    expected = canonical_json(reference)
    assert len(reference["policy"]) == 3 and len(reference["turns"]) == 2
    for seed in range(40):
        merged = interleave(inputs, outputs, random.Random(seed))
        state, out = fold_with(config, merged)
        assert canonical_json(state) == expected, f"seed {seed}"
        assert [e.event_id for e in out] == [e.event_id for e in reference_out]
    assert json.loads(expected) == reference


def test_current_state_passes_migration_unchanged_and_a_newer_one_is_refused() -> None:
    state = fold_session([t(0)])
    assert state is not None
    assert migrate_session(state) == state
    with pytest.raises(ValueError, match="newer"):
        migrate_session({**state, "version": MEMORY_VERSION + 1})
    with pytest.raises(ValueError, match="newer"):
        session_step({**state, "version": MEMORY_VERSION + 1}, t(1), MemoryConfig())


def test_events_that_do_not_touch_memory_leave_it_alone(policy: PolicyDocument) -> None:
    state = fold_session([t(0)])
    after, out = session_step(state, proposal(1), MemoryConfig())
    assert (after, out) == (state, [])
    assert session_step(None, proposal(1), MemoryConfig()) == (None, [])


def test_a_record_of_another_tenant_does_not_enter_the_sessions_memory() -> None:
    mine = t(0, content="mine")
    theirs = t(1, content="theirs", tenant_id="t-other")
    state = fold_session([mine, theirs])
    assert state is not None and state["tenant_id"] == TENANT
    assert [r["content"] for r in state["turns"]] == ["mine"]
