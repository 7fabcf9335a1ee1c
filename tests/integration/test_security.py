"""Hostile tests of a running worker (issue 10): every door a fresh clone left open.

One worker for the module, with two tenants (a victim and an attacker) and an
operator key. Each test plays an attacker or a careless producer and then
checks real outcomes: HTTP answers, the decisions on the log, rows in
ClickHouse.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from events.codec import Codec
from events.emitter import Emitter
from events.models import (
    AdmissionDecided,
    BudgetExceeded,
    CheckpointCreated,
    PolicyDecided,
    SessionEvent,
    SessionFailed,
    SessionResumed,
    SessionSuspended,
    TaskSummaryUpdated,
    ToolCallCompleted,
    TurnCompleted,
)
from events.registry import EmbeddedRegistry
from events.signing import verify_decision
from events.topics import Topics
from govstream.processes import WorkerProcess
from govstream.settings import Settings
from sql.client import ClickHouse, open_clickhouse
from streams.http_guard import ROUTES, read_local_secret
from tests.conftest import bearer, poll, worker_fixture
from tests.factories import sample_events, session_started, tool_proposal
from tests.factories import turn as turn_event
from tests.kafka_io import read_events_until, read_topic
from tests.kafka_io import send_events as _send

pytestmark = pytest.mark.integration
KEY_VICTIM, KEY_ATTACKER, KEY_OPS = "key-victim", "key-attacker", "key-ops"
WAIT_SECONDS = 90
CODEC = Codec(EmbeddedRegistry())


worker = worker_fixture(
    "security",
    operator_key=KEY_OPS,
    yield_url=False,
    api_keys=f"{KEY_VICTIM}:t-victim,{KEY_ATTACKER}:t-attacker,{KEY_OPS}:*",
    # This module sends events of now: the default bounds hold.
    max_event_age_days=30,
    max_event_lead_seconds=300,
)


def _now() -> datetime:
    return datetime.now(UTC)


def _send_raw(settings: Settings, records: list[tuple[str, bytes | None, bytes]]) -> None:
    """(topic, key, value) as they are: what a hostile or careless producer writes."""

    async def go() -> None:
        async with Emitter(settings.kafka_bootstrap or "") as emitter:
            for topic, key, value in records:
                await emitter.send_raw(topic, value, key)

    asyncio.run(go())


def _clickhouse(settings: Settings) -> ClickHouse:
    return open_clickhouse(settings, role="client")


_poll = partial(poll, seconds=WAIT_SECONDS)


def _dead_letters(settings: Settings, offsets_of: str | None = None) -> list[dict[str, Any]]:
    with _clickhouse(settings) as ch:
        return ch.query(
            "SELECT source_topic, source_partition, source_offset, reason_code, reason,"
            " raw_preview, raw_sha256, raw_bytes FROM dead_letters FINAL"
            " ORDER BY source_topic, source_partition, source_offset"
        ).dicts()


def _derived(settings: Settings, done: Callable[[list[SessionEvent]], bool]) -> list[SessionEvent]:
    topic = Topics(settings.topic_prefix).derived
    return read_events_until(settings.kafka_bootstrap or "", topic, done, WAIT_SECONDS)


# --- 1. every route needs a credential; framework views are gone ---------------------------

FAUST_VIEWS = [
    "/", "/table/", "/table/session-memory/", "/table/session-memory/s-1/",
    "/table/session-state/s-1/", "/table/tenant-memory/t-victim/", "/router/",
    "/router/session-state/s-1/", "/graph/", "/stats/", "/performance/", "/nope",
]  # fmt: skip


PROBE_SQL = {"sql": "CREATE TABLE probe (x UInt8) ENGINE = Memory"}


def _requests() -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every route the guard lists, Faust's old views and a gone route, with a body."""
    filled = {"{tenant}": "t-victim", "{session_id}": "s-1"}
    turn = {"tenant": "t-victim", "session": "s-1", "model": "m", "estimated_tokens": 1}
    out: list[tuple[str, str, dict[str, Any] | None]] = []
    for route in ROUTES:
        if route.public:
            continue  # the console sign-in answers anyone (tests/integration/test_console.py)
        path = route.path
        for name, value in filled.items():
            path = path.replace(name, value)
        body = PROBE_SQL if "clickhouse" in path else turn
        if path.endswith("/tool"):
            body = _tool_body("t-victim", "s-1", "op-probe")
        out.append((route.method, path, body if route.method == "POST" else None))
    out += [("GET", path, None) for path in FAUST_VIEWS]
    out += [("POST", "/v1/clickhouse/command", PROBE_SQL)]
    return out


def _call(url: str, method: str, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    return httpx.request(method, url + path, json=body, headers=headers, timeout=10)


def test_every_route_refuses_callers_without_a_valid_credential(
    worker: tuple[Settings, WorkerProcess],
) -> None:
    settings, process = worker
    answers: dict[tuple[str, str, str], int] = {}
    for method, path, body in _requests():
        for name, headers in (("none", {}), ("wrong", bearer("not-a-key"))):
            reply = _call(process.url, method, path, body, headers)
            answers[(name, method, path)] = reply.status_code
            assert set(reply.json()) == {"error"}, (path, reply.text)  # no data, ever
    assert set(answers.values()) == {401}, {k: v for k, v in answers.items() if v != 401}
    # Nothing ran: the probe table does not exist (asked with the owner's own secret).
    with _clickhouse(settings) as ch:
        assert ch.query("EXISTS TABLE probe").scalar() == 0


def test_credentials_reach_only_their_routes(worker: tuple[Settings, WorkerProcess]) -> None:
    settings, process = worker
    secret = read_local_secret(settings)
    assert secret is not None
    for method, path, body in _requests():
        tenant = _call(process.url, method, path, body, bearer(KEY_ATTACKER)).status_code
        operator = _call(process.url, method, path, body, bearer(KEY_OPS)).status_code
        local = _call(process.url, method, path, body, bearer(secret)).status_code
        if path.startswith("/v1/clickhouse/"):
            assert (tenant, operator) == (403, 403) or path.endswith("/command"), path
        if path in FAUST_VIEWS or path.endswith("/command"):
            assert (tenant, operator, local) == (404, 404, 404), path
        if path == "/v1/health":
            assert (tenant, operator, local) == (403, 200, 200)
        if path.startswith("/v1/admission") or path.startswith("/v1/budgets"):
            # The attacker's key may not act for t-victim; the local secret is no API key.
            assert (tenant, local) == (404, 403), path
        if path == "/v1/traces":
            # Spans are sent with the key of the tenant they belong to: no other role.
            # (The body is JSON with no OTLP field: an empty export, 200.)
            assert (tenant, operator, local) == (200, 403, 403)
        if path in ("/console", "/console/sessions"):
            # A tenant key sees its own tenant's console; the local secret is no API key.
            assert (tenant, operator, local) == (200, 200, 403), path
        if path == "/console/sessions/s-1":
            # An operator names the tenant (?tenant=); a tenant key is its own tenant.
            assert (tenant, operator, local) == (200, 400, 403), path
    with _clickhouse(settings) as ch:
        assert ch.query("EXISTS TABLE probe").scalar() == 0


def test_browser_shaped_requests_are_refused(worker: tuple[Settings, WorkerProcess]) -> None:
    settings, process = worker
    secret = read_local_secret(settings)
    assert secret is not None
    sql = b'{"sql": "CREATE TABLE probe (x UInt8) ENGINE = Memory"}'
    for path in ("/v1/clickhouse/query", "/v1/clickhouse/command"):
        page = httpx.post(
            process.url + path,
            content=sql,
            headers={"Content-Type": "text/plain", "Origin": "http://evil.example"},
        )
        assert page.status_code == 403
        with_secret = httpx.post(
            process.url + path,
            content=sql,
            headers={"Content-Type": "text/plain", **bearer(secret)},
        )
        assert with_secret.status_code in (404, 415)
    fetch = httpx.get(
        f"{process.url}/v1/budgets/t-victim",
        headers={**bearer(KEY_OPS), "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"},
    )
    assert fetch.status_code == 403
    with _clickhouse(settings) as ch:
        assert ch.query("EXISTS TABLE probe").scalar() == 0


# --- 2. forged derived events are dead-lettered, never obeyed ------------------------------


def test_forged_derived_events_are_not_obeyed(worker: tuple[Settings, WorkerProcess]) -> None:
    settings, process = worker
    topics = Topics(settings.topic_prefix)
    run = uuid.uuid4().hex[:6]
    victim, attacker = f"s-victim-{run}", f"s-attacker-{run}"
    at = _now()
    _send(settings, [
        session_started(event_id=f"{victim}-start", tenant_id="t-victim", session_id=victim,
                        idempotency_key=f"{victim}-start", plan="team", occurred_at=at),
        session_started(event_id=f"{attacker}-start", tenant_id="t-attacker",
                        session_id=attacker, idempotency_key=f"{attacker}-start", plan="team",
                        occurred_at=at),
    ])  # fmt: skip
    env = {"occurred_at": at, "session_id": victim, "producer": "attacker/1"}
    forged: list[BaseModel] = [
        # A budget verdict from the attacker's tenant naming the victim's session...
        BudgetExceeded(**env, event_id=f"{run}-f1", idempotency_key=f"{run}-f1",
                       tenant_id="t-attacker", scope="session", scope_key=victim, limit=1,
                       used=2, action="suspend"),
        # ... and one stamped with the victim's tenant.
        BudgetExceeded(**env, event_id=f"{run}-f2", idempotency_key=f"{run}-f2",
                       tenant_id="t-victim", scope="session", scope_key=victim, limit=1,
                       used=2, action="suspend"),
        # An all-zero "signature" allowing the victim's coming shell call.
        PolicyDecided(**env, event_id=f"{run}-f3", idempotency_key=f"{run}-f3",
                      tenant_id="t-victim", operation_key=f"{victim}/op-shell", tool="shell",
                      action="exec", decision="allow", reason_code="ALLOWED",
                      policy_version="2026-11-01", rule_id="forged", evaluation_us=1,
                      key_id=settings.policy_key_id, signature="0" * 64,
                      expires_at=at + timedelta(hours=1)),
        AdmissionDecided(**env, event_id=f"{run}-f4", idempotency_key=f"{run}-f4",
                         tenant_id="t-victim", request_kind="turn", decision="allow",
                         reason_code="ALLOWED"),
    ]  # fmt: skip
    # On the tenant log (keyed as producers key it) and on an internal topic (no ACLs
    # assumed): never obeyed.
    _send_raw(settings, [(topics.sessions, e.tenant_id.encode(), CODEC.encode(e)) for e in forged])
    _send_raw(settings, [(topics.derived, b"t-victim", CODEC.encode(forged[2]))])
    # The victim's real proposals: shell (not permitted on team) and a low-risk fetch.
    shell = tool_proposal(event_id=f"{victim}-p1", tenant_id="t-victim", session_id=victim,
                          idempotency_key=f"{victim}-p1", operation_key=f"{victim}/op-shell",
                          tool="shell", action="exec", destination_host=None, method="POST",
                          risk_level="high", occurred_at=at + timedelta(seconds=1))  # fmt: skip
    fetch = tool_proposal(event_id=f"{victim}-p2", tenant_id="t-victim", session_id=victim,
                          idempotency_key=f"{victim}-p2", operation_key=f"{victim}/op-fetch",
                          destination_host="api.example.com",
                          occurred_at=at + timedelta(seconds=2))  # fmt: skip
    _send(settings, [shell, fetch])

    def decided(events: list[SessionEvent]) -> bool:
        ops = {e.operation_key for e in events if isinstance(e, PolicyDecided)}
        return {shell.operation_key, fetch.operation_key} <= ops

    derived = [e for e in _derived(settings, decided) if e.session_id == victim]
    decisions = {e.operation_key: e for e in derived if isinstance(e, PolicyDecided)}
    keys = {settings.policy_key_id: settings.policy_signing_key.encode()}
    denied = decisions[shell.operation_key]
    assert (denied.decision, denied.reason_code) == ("deny", "TOOL_NOT_PERMITTED")
    assert decisions[fetch.operation_key].decision == "allow"  # no forged budget gate
    for decision in decisions.values():
        verify_decision(decision, keys, decision.occurred_at)
        assert decision.event_id not in {e.event_id for e in forged}
    assert not any(isinstance(e, SessionSuspended | BudgetExceeded) for e in derived)
    # The API answers the real decision too.
    reply = httpx.post(f"{process.url}/v1/admission/tool", headers=bearer(KEY_VICTIM), json={
        "tenant": "t-victim", "session": victim, "tool": "shell", "action": "exec",
        "operation_key": f"{victim}/op-shell", "method": "POST", "risk_level": "high",
    }, timeout=10).json()  # fmt: skip
    assert reply["decision"] == "deny"
    # In ClickHouse: each forged record a dead letter with its reason, and only the
    # real decisions in policy_decisions.
    offsets = _poll(
        "forged records dead-lettered",
        lambda: [d for d in _dead_letters(settings) if f"{run}-f" in d["raw_preview"]],
        lambda rows: len(rows) >= 5,
    )
    reasons = sorted((d["source_topic"], d["reason_code"]) for d in offsets)
    assert reasons == sorted(
        [(topics.sessions, "derived_from_producer")] * 4 + [(topics.derived, "unsigned_internal")]
    )

    def real_decisions() -> list[tuple[Any, ...]]:
        with _clickhouse(settings) as ch:
            return ch.query(
                "SELECT operation_key, decision, rule_id FROM policy_decisions FINAL"
                " WHERE tenant_id = 't-victim' AND session_id = {s:String} ORDER BY operation_key",
                {"s": victim},
            ).rows

    rows = _poll("the real decisions in ClickHouse", real_decisions, lambda r: len(r) >= 2)
    with _clickhouse(settings) as ch:
        archived = ch.query(
            "SELECT count() FROM events_archive WHERE event_id LIKE {p:String}", {"p": f"{run}-f%"}
        ).scalar()
    assert rows == [
        (fetch.operation_key, "allow", decisions[fetch.operation_key].rule_id),
        (shell.operation_key, "deny", decisions[shell.operation_key].rule_id),
    ]
    assert archived == 0


# --- 3. a record of every schema on every input topic: dead-lettered, the worker lives -----


def test_misplaced_records_of_every_schema_are_dead_lettered(
    worker: tuple[Settings, WorkerProcess],
) -> None:
    settings, process = worker
    topics = Topics(settings.topic_prefix)
    samples = sample_events()
    producer_types = {"TenantProfileUpdated"} | {
        name for name in samples if name not in {
            "PolicyDecided", "BudgetWarning", "BudgetExceeded", "AdmissionDecided",
            "InvalidTransitionRejected", "ContextCompactionRequested", "DuplicateSuppressed",
            "RecordDeadLettered", "AdmissionRequested",
        }
    }  # fmt: skip
    run = uuid.uuid4().hex[:6]
    sent: list[tuple[str, bytes | None, bytes]] = []
    for name, event in samples.items():
        data = event.model_dump()
        data["event_id"] = f"{run}-{name}"
        if name != "RecordDeadLettered":
            data["occurred_at"] = _now()
        value = CODEC.encode(type(event).model_validate(data))
        for topic in (topics.sessions, topics.tenants, topics.derived):
            on_sessions = topic == topics.sessions and name != "TenantProfileUpdated"
            belongs = (
                name in producer_types
                and (on_sessions or topic == topics.tenants)
                and ((topic == topics.tenants) == (name == "TenantProfileUpdated"))
            )
            if not belongs:  # every misplaced (schema, topic) pair, unsigned, keyed right
                sent.append((topic, str(data.get("tenant_id", "t-1")).encode(), value))
    _send_raw(settings, sent)
    letters = _poll(
        "every misplaced record dead-lettered",
        lambda: [d for d in _dead_letters(settings) if run in d["raw_preview"]],
        lambda rows: len(rows) >= len(sent),
    )
    assert len(letters) == len(sent)
    assert {d["reason_code"] for d in letters} <= {
        "wrong_topic", "derived_from_producer", "unsigned_internal", "key_mismatch",
    }  # fmt: skip
    # Alive and still working: a good event after them reaches the archive.
    assert process.proc.poll() is None
    assert process.health()["status"] == "ok"
    good = session_started(event_id=f"{run}-after", idempotency_key=f"{run}-after",
                           session_id=f"s-after-{run}", occurred_at=_now())  # fmt: skip
    _send(settings, [good])

    def archived() -> int:
        with _clickhouse(settings) as ch:
            return int(ch.query(
                "SELECT count() FROM events_archive WHERE event_id = {e:String}",
                {"e": good.event_id},
            ).scalar())  # fmt: skip

    _poll("the next good event archived", archived, lambda n: n == 1)


# --- 4. operation keys are the tenant's own ----------------------------------------------


def _tool_body(tenant: str, session: str, operation_key: str) -> dict[str, Any]:
    return {"tenant": tenant, "session": session, "tool": "http_request", "action": "fetch",
            "operation_key": operation_key, "destination_host": "api.example.com",
            "method": "GET", "payload_bytes": 10, "risk_level": "low"}  # fmt: skip


def test_operation_keys_are_scoped_by_tenant(worker: tuple[Settings, WorkerProcess]) -> None:
    _, process = worker
    run = uuid.uuid4().hex[:6]
    url = f"{process.url}/v1/admission/tool"
    for attempt in range(3):
        key = f"op-shared-{run}-{attempt}"

        async def race(key: str = key) -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=10) as client:
                first = client.post(url, headers=bearer(KEY_ATTACKER),
                                    json=_tool_body("t-attacker", f"s-a-{run}", key))  # fmt: skip
                second = client.post(url, headers=bearer(KEY_VICTIM),
                                     json=_tool_body("t-victim", f"s-v-{run}", key))  # fmt: skip
                return list(await asyncio.gather(first, second))

        attacker, victim = asyncio.run(race())
        assert (attacker.status_code, victim.status_code) == (200, 200), victim.text
        mine = PolicyDecided.model_validate(victim.json()["policy_decision"])
        theirs = PolicyDecided.model_validate(attacker.json()["policy_decision"])
        assert (mine.tenant_id, mine.session_id) == ("t-victim", f"s-v-{run}")
        assert (theirs.tenant_id, theirs.session_id) == ("t-attacker", f"s-a-{run}")
        assert mine.event_id != theirs.event_id
    # A reservation of one tenant is not counted for another.
    turn = {"tenant": "t-attacker", "session": f"s-a-{run}", "model": "gpt-4o",
            "estimated_tokens": 10}  # fmt: skip
    assert httpx.post(f"{process.url}/v1/admission/turn", json=turn,
                      headers=bearer(KEY_ATTACKER)).status_code == 200  # fmt: skip
    balances = httpx.get(f"{process.url}/v1/budgets/t-victim", headers=bearer(KEY_VICTIM)).json()
    assert balances["pending_reservations"] == 0


# --- 5. implausible input is dead-lettered with the reason --------------------------------


def test_out_of_bounds_events_are_dead_lettered(worker: tuple[Settings, WorkerProcess]) -> None:
    settings, _ = worker
    topics = Topics(settings.topic_prefix)
    run = uuid.uuid4().hex[:6]

    def turn_with(n: int, **fields: Any) -> tuple[str, bytes, bytes]:
        data = {
            "event_id": f"{run}-b{n}", "occurred_at": _now(), "tenant_id": "t-victim",
            "session_id": "s-bounds", "idempotency_key": f"{run}-b{n}", "model": "gpt-4o",
            "input_tokens": 1, "output_tokens": 1, "cost_usd_micros": 1, "first_token_ms": 1,
            "latency_ms": 1, "outcome": "ok", **fields,
        }  # fmt: skip
        event = TurnCompleted.model_construct(**data)  # what a careless producer encodes
        return topics.sessions, data["tenant_id"].encode(), CODEC.encode(event)

    records = [
        turn_with(1, occurred_at=datetime(9999, 12, 31, tzinfo=UTC)),
        turn_with(2, occurred_at=datetime(1, 1, 1, tzinfo=UTC)),
        turn_with(3, occurred_at=_now() - timedelta(days=31)),
        turn_with(4, content="x" * 100_000),
        turn_with(5, correlation_id="c" * 100_000),
        turn_with(6, workflow_id="w" * 100_000),
        turn_with(7, producer="p" * 100_000),
        turn_with(8, session_id="../../etc/passwd"),
    ]
    _send_raw(settings, records)
    letters = _poll(
        "out-of-bounds records dead-lettered",
        lambda: [d for d in _dead_letters(settings) if f"{run}-b" in d["raw_preview"]],
        lambda rows: len(rows) >= len(records),
    )
    codes = sorted(d["reason_code"] for d in letters)
    assert codes == ["invalid_event"] * 5 + ["out_of_bounds"] * 3
    # The raw bytes stay in the dead-letter topic only: ClickHouse has a preview.
    assert all(len(d["raw_preview"]) <= 512 and d["raw_bytes"] > 0 for d in letters)


# --- 7. API details ------------------------------------------------------------------------


def test_api_authenticates_first_types_strictly_and_hides_other_tenants(
    worker: tuple[Settings, WorkerProcess],
) -> None:
    _, process = worker
    url = process.url
    turn = f"{url}/v1/admission/turn"
    body = {"tenant": "t-victim", "session": "s-api", "model": "gpt-4o", "estimated_tokens": 100}
    json_type = {"Content-Type": "application/json"}
    # No key and a bad body: 401, the body is not looked at.
    assert httpx.post(turn, content=b"{garbage", headers=json_type).status_code == 401
    for bad in ("100", True, 1.5, None):
        reply = httpx.post(turn, json={**body, "estimated_tokens": bad}, headers=bearer(KEY_VICTIM))
        assert reply.status_code == 422, (bad, reply.text)
    traversal = httpx.post(turn, json={**body, "session": "../../etc/passwd"},
                           headers=bearer(KEY_VICTIM))  # fmt: skip
    assert traversal.status_code == 422 and "session" in traversal.json()["error"]
    # Not yours: 404 on every endpoint, whether it exists or not.
    start = session_started(
        event_id="api-start", idempotency_key="api-start", tenant_id="t-victim",
        session_id="s-api", occurred_at=_now(),
    )  # fmt: skip
    _send(worker[0], [start])
    not_yours = [
        httpx.post(turn, json=body, headers=bearer(KEY_ATTACKER)),
        httpx.post(f"{url}/v1/admission/tool", headers=bearer(KEY_ATTACKER),
                   json=_tool_body("t-victim", "s-api", "op-x")),
        httpx.get(f"{url}/v1/budgets/t-victim", headers=bearer(KEY_ATTACKER)),
        httpx.get(f"{url}/v1/sessions/s-api/context?tenant=t-victim",
                  headers=bearer(KEY_ATTACKER)),
        httpx.get(f"{url}/v1/sessions/..%2F..%2Fetc%2Fpasswd/context", headers=bearer(KEY_VICTIM)),
    ]  # fmt: skip
    assert [r.status_code for r in not_yours] == [404] * 5
    assert all(set(r.json()) == {"error"} for r in not_yours)


# --- 6. redaction: every kind, every free-text field, through a real worker ----------------

CORPUS = json.loads((Path(__file__).parents[1] / "data" / "redaction_corpus.json").read_text())


def _free_text_events(tenant: str, session: str, texts: list[str]) -> list[BaseModel]:
    """The corpus spread over every free-text field of the session events."""
    at = _now() - timedelta(minutes=10)
    n = iter(range(10_000))

    def env(seconds: int) -> dict[str, Any]:
        i = next(n)
        return {"event_id": f"{session}-e{i}", "idempotency_key": f"{session}-k{i}",
                "tenant_id": tenant, "session_id": session,
                "occurred_at": at + timedelta(seconds=seconds)}  # fmt: skip

    events: list[BaseModel] = [session_started(**env(0))]
    for i, text in enumerate(texts):
        slot = i % 8
        if slot == 0:
            events.append(turn_event(**env(i + 1), content=text))
        elif slot == 1:
            events.append(TaskSummaryUpdated(**env(i + 1), objective=text, decisions=[text],
                                             facts=[f"fact: {text}"]))  # fmt: skip
        elif slot == 2:
            events.append(CheckpointCreated(**env(i + 1), artifact_ref=text[:1000],
                                            summary=text))  # fmt: skip
        elif slot == 3:
            events.append(ToolCallCompleted(**env(i + 1), operation_key=f"{session}-op{i}",
                                            status="succeeded", latency_ms=1,
                                            result_ref=text[:1000]))  # fmt: skip
        elif slot == 4 and len(text) <= 500:
            events.append(SessionSuspended(**env(i + 1), reason=text))
            events.append(SessionResumed(**env(i + 1), reason=text))
        else:
            events.append(turn_event(**env(i + 1), content=f"the user wrote: {text}"))
    events.append(SessionFailed(**env(len(texts) + 2), reason=texts[0][:500]))
    return events


def test_no_planted_secret_is_stored_anywhere(worker: tuple[Settings, WorkerProcess]) -> None:
    settings, process = worker
    topics = Topics(settings.topic_prefix)
    run = uuid.uuid4().hex[:6]
    session = f"s-redact-{run}"
    planted = [entry["value"] for entry in CORPUS["planted"]]
    events = _free_text_events("t-victim", session, [e["text"] for e in CORPUS["planted"]])
    _send(settings, events)
    # A record that is not Avro at all, full of secrets: a dead letter.
    junk = ("junk-" + run + " " + " ".join(e["text"] for e in CORPUS["planted"][:40])).encode()
    _send_raw(settings, [(topics.sessions, b"t-victim", junk)])

    def archived() -> int:
        with _clickhouse(settings) as ch:
            return int(ch.query(
                "SELECT count() FROM events_archive FINAL WHERE session_id = {s:String}"
                " AND topic = {t:String}", {"s": session, "t": topics.sessions},
            ).scalar())  # fmt: skip

    _poll("the session archived", archived, lambda n: n == len(events))
    _poll("the junk dead-lettered",
          lambda: [d for d in _dead_letters(settings) if f"junk-{run}" in d["raw_preview"]],
          lambda rows: len(rows) == 1)  # fmt: skip

    # 0 raw values in any String column of any ClickHouse table.
    with _clickhouse(settings) as ch:
        tables = [r[0] for r in ch.query(
            "SELECT DISTINCT table FROM system.columns WHERE database = currentDatabase()"
            " AND type LIKE '%String%' AND NOT startsWith(table, '.')"
        ).rows]  # fmt: skip
        stored = {
            table: "\n".join(repr(row) for row in ch.query(f"SELECT * FROM `{table}`").rows)
            for table in tables
        }
    assert session in stored["events_archive"]  # the rows are there...
    leaked = {t: [v for v in planted if v in text] for t, text in stored.items()}
    assert {t: v for t, v in leaked.items() if v} == {}  # ...and no planted value in them
    # The context answer and the memory state hold none either.
    context = httpx.get(f"{process.url}/v1/sessions/{session}/context?tokens=1000000",
                        headers=bearer(KEY_VICTIM), timeout=10)  # fmt: skip
    assert context.status_code == 200, context.text
    assert "[REDACTED:" in context.text
    assert [value for value in planted if value in context.text] == []

    # The memory changelog commits with the worker's next transaction: wait for it.
    def changelog() -> list[Any]:
        topic = topics.governor_changelog(settings.governor_group)
        return asyncio.run(read_topic(settings.kafka_bootstrap or "", topic))

    records = _poll(
        "the session's memory in the changelog",
        changelog,
        lambda rs: any(r.key == f"s/t-victim/{session}".encode() for r in rs),
    )
    memory = b"\n".join(r.value or b"" for r in records).decode("utf-8", "replace")
    assert [value for value in planted if value in memory] == []
