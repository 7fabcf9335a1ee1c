"""Memory on a real broker and worker: the context endpoint, compaction, redaction.

One worker for the module (the governor holds memory with the rest of its state).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from events.models import (
    ContextCompactionRequested,
    PolicyDecided,
    SessionEvent,
    TaskSummaryUpdated,
)
from events.topics import Topics
from govstream.settings import Settings
from tests.conftest import bearer, worker_fixture
from tests.factories import session_started, tool_proposal, turn
from tests.kafka_io import read_events_until, read_topic
from tests.kafka_io import send_events as _send

pytestmark = pytest.mark.integration
KEY_A, KEY_B, KEY_OPS = "key-mem-a", "key-mem-b", "key-mem-ops"
WAIT_SECONDS = 40
THRESHOLD = 1_000

SECRETS = {
    "email": "carol.jones@example.org",
    "phone": "+1 212 555 0199",
    "card": "5555 5555 5555 4444",
    "api_key": "sk-live0123456789abcdefghijklmnop",
    "bearer_token": "tok9876543210ZYXWVUTsecret",
    "ticket": "TKT-770019",
}


worker = worker_fixture(
    "memory",
    operator_key=KEY_OPS,
    api_keys=f"{KEY_A}:t-a,{KEY_B}:t-b,{KEY_OPS}:*",
    compaction_threshold_tokens=THRESHOLD,
    redaction_patterns={"ticket": "TKT-[0-9]+"},
)


def _derived(settings: Settings, done: Callable[[list[SessionEvent]], bool]) -> list[SessionEvent]:
    topic = Topics(settings.topic_prefix).derived
    return read_events_until(settings.kafka_bootstrap or "", topic, done, WAIT_SECONDS)


def _context(url: str, session: str, key: str | None, query: str = "") -> httpx.Response:
    headers = bearer(key) if key else {}
    return httpx.get(f"{url}/v1/sessions/{session}/context{query}", headers=headers, timeout=5)


def _poll_context(
    url: str, session: str, key: str, ready: Callable[[dict[str, Any]], bool], query: str = ""
) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_SECONDS
    last: Any = None
    while time.monotonic() < deadline:
        reply = _context(url, session, key, query)
        if reply.status_code == 200:
            last = reply.json()
            if ready(last):
                return last
        else:
            last = (reply.status_code, reply.text)
            assert reply.status_code in (404, 503), last
        time.sleep(0.3)
    raise AssertionError(f"context of {session} never got ready: {last}")


def test_context_endpoint_compaction_and_redaction(worker: tuple[Settings, str]) -> None:
    settings, url = worker
    tenant, session = "t-a", f"s-mem-{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC).replace(microsecond=0)

    def at(seconds: float) -> datetime:
        return now + timedelta(seconds=seconds)

    s = SECRETS
    contents = [
        f"write to {s['email']} or call {s['phone']}",
        f"card {s['card']} and key {s['api_key']}",
        None,
        f"Authorization: Bearer {s['bearer_token']} for {s['ticket']}",
        "plain text",
        None,
    ]
    # 300 tokens each: 1,200 after the 4th turn passes the threshold of 1,000.
    turns = [
        turn(tenant_id=tenant, session_id=session, input_tokens=250, output_tokens=50,
             occurred_at=at(1 + i), idempotency_key=f"{session}/turn-{i}", content=content)
        for i, content in enumerate(contents)
    ]  # fmt: skip
    summary_id = str(uuid.uuid4())
    summary = TaskSummaryUpdated(
        event_id=summary_id, occurred_at=at(8), tenant_id=tenant, session_id=session,
        idempotency_key=f"{session}/summary-1", objective=f"answer {s['email']}",
        decisions=["use the EU region"], facts=[f"customer card {s['card']}", "plan is team"],
    )  # fmt: skip
    proposals = [
        tool_proposal(event_id=str(uuid.uuid4()), tenant_id=tenant, session_id=session,
                      idempotency_key=f"{session}/p{i}", operation_key=f"{session}/op{i}",
                      destination_host=host, occurred_at=at(9 + i))
        for i, host in enumerate(["good.com", "evil.example"])
    ]  # fmt: skip
    retried_turn = turn(
        tenant_id=tenant, session_id=session, input_tokens=250, output_tokens=50,
        occurred_at=at(4), idempotency_key=f"{session}/turn-3", attempt=2,
        event_id=str(uuid.uuid4()),
    )  # fmt: skip
    started = session_started(tenant_id=tenant, session_id=session, occurred_at=at(0))
    _send(settings, [started, *turns[:4], retried_turn, *turns[4:], summary, *proposals])

    def settled(events: list[SessionEvent]) -> bool:
        ours = [e for e in events if e.session_id == session]
        decided = sum(isinstance(e, PolicyDecided) for e in ours)
        return decided >= 2 and any(isinstance(e, ContextCompactionRequested) for e in ours)

    _derived(settings, settled)
    memory_tokens = 6 * 300
    context = _poll_context(
        url, session, KEY_A,
        lambda c: c["turn_memory_tokens"] == memory_tokens and len(c["recent_denials"]) == 1
        and c["task"]["objective"] is not None and c["constraints"]["status"] != "unknown",
        query="?tokens=700",
    )  # fmt: skip

    assert (context["session_id"], context["tenant_id"]) == (session, tenant)
    # Recent turns within the budget: the two newest (600 tokens), in time order.
    recent = context["recent_turns"]
    assert [r["event_id"] for r in recent] == [turns[4].event_id, turns[5].event_id]
    assert context["recent_turn_tokens"] == 600 <= 700
    assert context["compaction_requested"] is True
    task = context["task"]
    assert task["objective"]["text"] == "answer [REDACTED:email]"
    assert [d["text"] for d in task["decisions"]] == ["use the EU region"]
    assert [f["text"] for f in task["facts"]] == ["customer card [REDACTED:card]", "plan is team"]
    assert context["constraints"]["status"] == "waiting_for_tool"
    assert context["constraints"]["budget"] is None
    [denial] = context["recent_denials"]
    assert (denial["operation_key"], denial["reason_code"]) == (
        f"{session}/op1", "EGRESS_NOT_ALLOWED")  # fmt: skip

    # A larger budget returns every turn, redacted, with what was redacted recorded.
    full = _context(url, session, KEY_A, "?tokens=100000").json()
    assert [r["event_id"] for r in full["recent_turns"]] == [t.event_id for t in turns]
    assert [r["content"] for r in full["recent_turns"]] == [
        "write to [REDACTED:email] or call [REDACTED:phone]",
        "card [REDACTED:card] and key [REDACTED:api_key]",
        None,
        "Authorization: Bearer [REDACTED:bearer_token] for [REDACTED:ticket]",
        "plain text",
        None,
    ]
    assert [r["redaction"] and r["redaction"]["counts"] for r in full["recent_turns"]] == [
        {"email": 1, "phone": 1}, {"api_key": 1, "card": 1}, None,
        {"bearer_token": 1, "ticket": 1}, {}, None,
    ]  # fmt: skip
    # Without ?tokens the configured budget (8,000) applies.
    default = _context(url, session, KEY_A).json()
    assert len(default["recent_turns"]) == 6
    # The operator's key reads any tenant's session.
    operator = _context(url, session, KEY_OPS, f"?tenant={tenant}").json()
    assert operator["policy_head"] == context["policy_head"]
    # An operator names the tenant: session ids are the tenant's own.
    assert _context(url, session, KEY_OPS).status_code == 422

    # Tenant scope and parameters, like the admission API.
    assert _context(url, session, None).status_code == 401
    assert _context(url, session, "no-such-key").status_code == 401
    # Another tenant's session answers like a session that does not exist.
    other = _context(url, session, KEY_B)
    unknown = _context(url, f"{session}-unknown", KEY_A)
    assert (other.status_code, unknown.status_code) == (404, 404)
    assert other.json() == {"error": f"no memory for session {session!r}"}
    assert unknown.json() == {"error": f"no memory for session {session + '-unknown'!r}"}
    for bad in ("?tokens=abc", "?tokens=-1", "?tokens=1.5", "?tokens="):
        reply = _context(url, session, KEY_A, bad)
        assert reply.status_code == 422, (bad, reply.text)
        assert reply.json()["error"].startswith("tokens:")
    assert _context(url, session, None, "?tokens=abc").status_code == 401  # the key comes first

    # Exactly one compaction request, from the turn that crossed the threshold.
    time.sleep(1.5)  # past a transaction commit: a second request would be visible now
    derived = [e for e in _derived(settings, settled) if e.session_id == session]
    requests = [e for e in derived if isinstance(e, ContextCompactionRequested)]
    assert len(requests) == 1, requests
    [request] = requests
    assert (request.turn_tokens, request.threshold) == (1_200, THRESHOLD)
    assert request.causation_id == turns[3].event_id

    # No raw secret in any answer, nor anywhere in the memory changelog.
    replies = (
        _context(url, session, KEY_A, "?tokens=100000"),
        _context(url, session, KEY_OPS, f"?tenant={tenant}"),
    )
    answers = "".join(r.text for r in replies)
    topic = Topics(settings.topic_prefix).governor_changelog(settings.governor_group)
    key = f"s/{tenant}/{session}".encode()

    def committed() -> list[Any]:
        # The changelog commits with the governor's next checkpoint.
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            records = asyncio.run(read_topic(settings.kafka_bootstrap or "", topic))
            if any(r.key == key for r in records) or time.monotonic() > deadline:
                return records
            time.sleep(0.3)

    changelog = committed()
    ours = [r.value for r in changelog if r.key == key]
    assert ours, "no changelog record of the session's memory"
    assert b"[REDACTED:email]" in ours[-1]
    stored = b"\n".join(r.value or b"" for r in changelog)
    for kind, raw in SECRETS.items():
        assert raw not in answers, f"raw {kind} in a context answer"
        assert raw.encode() not in stored, f"raw {kind} in the governor's changelog"


def test_no_seeded_secret_reaches_clickhouse(worker: tuple[Settings, str]) -> None:
    """The corpus (every built-in kind and the configured `ticket` pattern) in turn
    content and task summaries: redacted in the archive, raw nowhere in any table."""
    from govstream.commands.lag import wait_for_zero_lag
    from sql.client import open_clickhouse, quote_identifier

    settings, _ = worker
    tenant, session = "t-b", f"s-corpus-{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC).replace(microsecond=0)
    corpus = [
        f"Authorization: Bearer {raw}" if kind == "bearer_token" else f"{kind} {raw} noted"
        for kind, raw in SECRETS.items()
    ]
    events: list[Any] = [session_started(tenant_id=tenant, session_id=session, occurred_at=now)]
    for i, text in enumerate(corpus):
        events.append(
            turn(tenant_id=tenant, session_id=session, occurred_at=now + timedelta(seconds=i + 1),
                 idempotency_key=f"{session}/turn-{i}", content=f"user said {text}")
        )  # fmt: skip
    events.append(
        TaskSummaryUpdated(
            event_id=str(uuid.uuid4()), occurred_at=now + timedelta(seconds=30),
            tenant_id=tenant, session_id=session, idempotency_key=f"{session}/summary",
            objective=" ".join(corpus), decisions=corpus, facts=corpus,
        )
    )  # fmt: skip
    _send(settings, events)
    bootstrap = settings.kafka_bootstrap or ""
    asyncio.run(wait_for_zero_lag(settings, bootstrap, timeout=60, which="sink"))

    with open_clickhouse(settings, role="client") as ch:
        archived = ch.query(
            "SELECT count() FROM events_archive FINAL WHERE session_id = {s:String}",
            {"s": session},
        ).scalar()
        assert archived >= len(events)  # and what the processors derived
        for kind in SECRETS:
            marked = ch.query(
                "SELECT count() FROM events_archive FINAL WHERE session_id = {s:String}"
                " AND position(payload, {mark:String}) > 0",
                {"s": session, "mark": f"[REDACTED:{kind}]"},
            ).scalar()
            assert marked == 2, f"{kind}: redacted in its turn and in the summary"
        columns = ch.query(
            "SELECT table, name FROM system.columns WHERE database = {db:String}"
            " AND type LIKE '%String%'",
            {"db": settings.clickhouse_database},
        ).rows
        by_table: dict[str, list[str]] = {}
        for table, name in columns:
            by_table.setdefault(str(table), []).append(str(name))
        assert "events_archive" in by_table and "turns" in by_table
        for table, names in by_table.items():
            for kind, raw in SECRETS.items():
                where = " OR ".join(
                    f"position(toString({quote_identifier(n)}), {{raw:String}}) > 0" for n in names
                )
                leaked = ch.query(
                    f"SELECT count() FROM {quote_identifier(table)} WHERE {where}", {"raw": raw}
                ).scalar()
                assert leaked == 0, f"raw {kind} in ClickHouse table {table}"
