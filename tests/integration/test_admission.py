"""The admission API and the budget processor on a real broker and a worker process."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from events.models import (
    AdmissionDecided,
    BudgetExceeded,
    BudgetWarning,
    PolicyDecided,
    SessionEvent,
    SessionSuspended,
    TenantBudgets,
    TenantProfileUpdated,
)
from events.signing import verify_decision
from events.topics import Topics
from govstream.settings import Settings
from tests.conftest import bearer, poll, worker_fixture
from tests.factories import session_started, tenant_profile, tool_proposal, turn
from tests.kafka_io import read_events_until
from tests.kafka_io import send_events as _send

pytestmark = pytest.mark.integration
KEY_A, KEY_B, KEY_OPS = "key-tenant-a", "key-tenant-b", "key-operator"
WAIT_SECONDS = 60


worker = worker_fixture(
    "admission",
    operator_key=KEY_OPS,
    api_keys=f"{KEY_A}:t-a,{KEY_B}:t-b,{KEY_OPS}:*",
)


def _derived(
    settings: Settings, done: Callable[[list[SessionEvent]], bool], topic: str = "derived"
) -> list[SessionEvent]:
    name = getattr(Topics(settings.topic_prefix), topic)
    return read_events_until(settings.kafka_bootstrap or "", name, done, WAIT_SECONDS)


def _profile(tenant: str, **budgets: int) -> TenantProfileUpdated:
    return tenant_profile(
        tenant_id=tenant,
        plan="team",
        occurred_at=datetime.now(UTC),
        budgets=TenantBudgets(**budgets),
    )


def _wait_for_plan(url: str, tenant: str, key: str, budgets: dict[str, int]) -> None:
    """Until the worker's profile cache holds the tenant's profile."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        response = httpx.get(f"{url}/v1/budgets/{tenant}", headers=bearer(key), timeout=5)
        if response.status_code == 200 and response.json()["plan"] == "team":
            return
        time.sleep(0.2)
    raise AssertionError(f"profile of {tenant} never reached the worker ({budgets})")


def _turn_body(tenant: str, session: str, tokens: int = 100, **extra: Any) -> dict[str, Any]:
    return {"tenant": tenant, "session": session, "model": "gpt-4o",
            "estimated_tokens": tokens, **extra}  # fmt: skip


def test_keys_are_scoped_to_their_tenant_and_bodies_are_checked(
    worker: tuple[Settings, str],
) -> None:
    _, url = worker
    post = f"{url}/v1/admission/turn"
    body = _turn_body("t-b", "s-auth")
    assert httpx.post(post, json=body, timeout=5).status_code == 401
    assert httpx.post(post, json=body, headers=bearer("nope"), timeout=5).status_code == 401
    # Another tenant's key: 404, whether t-b exists is not disclosed.
    forbidden = httpx.post(post, json=body, headers=bearer(KEY_A), timeout=5)
    assert forbidden.status_code == 404
    tool = {**_turn_body("t-b", "s-auth"), "tool": "x"}
    assert (
        httpx.post(f"{url}/v1/admission/tool", json=tool, headers=bearer(KEY_A)).status_code == 422
    )
    bad = httpx.post(post, json={**body, "estimated_tokens": -5}, headers=bearer(KEY_B), timeout=5)
    assert bad.status_code == 422
    assert bad.json()["error"].startswith("estimated_tokens:")
    json_type = {"Content-Type": "application/json", **bearer(KEY_B)}
    not_json = httpx.post(post, content=b"{nope", headers=json_type, timeout=5)
    assert (not_json.status_code, not_json.json()["error"][:18]) == (422, "body: Invalid JSON")
    # The operator's key acts for any tenant.
    ok = httpx.post(post, json=body, headers=bearer(KEY_OPS), timeout=5)
    assert ok.status_code == 200, ok.text
    assert ok.json()["decision"] == "allow"


def test_200_concurrent_admissions_never_overspend(worker: tuple[Settings, str]) -> None:
    settings, url = worker
    tenant, session = "t-a", f"s-conc-{uuid.uuid4().hex[:6]}"
    # 5,000 tokens per session; every request estimates 100: exactly 50 fit.
    _send(settings, [_profile(tenant, tokens_per_session=5_000)])
    _wait_for_plan(url, tenant, KEY_A, {"tokens_per_session": 5_000})
    now = datetime.now(UTC)
    _send(settings, [session_started(tenant_id=tenant, session_id=session, tier="B",
                                     occurred_at=now)])  # fmt: skip

    async def admit_all() -> list[dict[str, Any]]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(limits=limits, timeout=30, headers=bearer(KEY_A)) as client:
            replies = await asyncio.gather(
                *(client.post(f"{url}/v1/admission/turn", json=_turn_body(tenant, session))
                  for _ in range(200))
            )  # fmt: skip
        return [r.json() for r in replies]

    answers = asyncio.run(admit_all())
    decisions = Counter(a.get("decision", a.get("error")) for a in answers)
    assert decisions == {"allow": 50, "deny": 150}, decisions
    assert {a["reason_code"] for a in answers if a["decision"] == "deny"} == {
        "SESSION_TOKENS_EXHAUSTED"
    }
    admitted = [a for a in answers if a["decision"] == "allow"]
    assert len({a["reservation_id"] for a in admitted}) == 50

    # Each admitted turn runs and reports its actual usage (at most the estimate).
    turns = [
        turn(tenant_id=tenant, session_id=session, input_tokens=60, output_tokens=40,
             cost_usd_micros=550, model="gpt-4o", occurred_at=now + timedelta(milliseconds=i + 1))
        for i in range(len(admitted))
    ]  # fmt: skip
    _send(settings, turns)

    def balance() -> dict[str, Any]:
        reply = httpx.get(
            f"{url}/v1/budgets/{tenant}?session={session}", headers=bearer(KEY_A), timeout=5
        )
        assert reply.status_code == 200, reply.text
        return dict(reply.json()["balances"].get("session_tokens", {}))

    deadline = time.monotonic() + WAIT_SECONDS
    while balance().get("used") != 5_000 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert balance() == {"limit": 5_000, "used": 5_000, "reserved": 0, "period": ""}
    # Full: the next request is refused, and every admission was recorded.
    more = httpx.post(f"{url}/v1/admission/turn", json=_turn_body(tenant, session, 1),
                      headers=bearer(KEY_A), timeout=5).json()  # fmt: skip
    assert (more["decision"], more["reason_code"]) == ("deny", "SESSION_TOKENS_EXHAUSTED")

    def recorded(events: list[SessionEvent]) -> bool:
        ours = [e for e in events if e.session_id == session]
        admissions = sum(isinstance(e, AdmissionDecided) for e in ours)
        return admissions >= 201 and any(isinstance(e, BudgetExceeded) for e in ours)

    derived = _derived(settings, recorded)
    records = [e for e in derived if isinstance(e, AdmissionDecided) and e.session_id == session]
    assert Counter(e.decision for e in records) == {"allow": 50, "deny": 151}
    exceeded = [e for e in derived if isinstance(e, BudgetExceeded) and e.session_id == session]
    # Tier B degrades: gpt-4o's next cheaper model by blended price.
    assert [(e.scope, e.used, e.limit, e.action, e.fallback_model) for e in exceeded] == [
        ("session", 5_000, 5_000, "degrade", "claude-haiku-4")
    ]


def test_exceeded_budget_suspends_the_session_and_denies_its_tools(
    worker: tuple[Settings, str],
) -> None:
    settings, url = worker
    tenant, session = "t-b", f"s-over-{uuid.uuid4().hex[:6]}"
    _send(settings, [_profile(tenant, tokens_per_session=1_000)])
    _wait_for_plan(url, tenant, KEY_B, {"tokens_per_session": 1_000})
    now = datetime.now(UTC)
    at = [now + timedelta(seconds=i) for i in range(6)]
    _send(settings, [
        session_started(tenant_id=tenant, session_id=session, tier="C", occurred_at=at[0]),
        turn(tenant_id=tenant, session_id=session, input_tokens=400, output_tokens=200,
             occurred_at=at[1]),  # 60%: a warning
        turn(tenant_id=tenant, session_id=session, input_tokens=400, output_tokens=200,
             occurred_at=at[2]),  # 120%: exceeded, tier C suspends
    ])  # fmt: skip

    def suspended(events: list[SessionEvent]) -> bool:
        return any(isinstance(e, SessionSuspended) and e.session_id == session for e in events)

    derived = [e for e in _derived(settings, suspended) if e.session_id == session]
    kinds = [type(e).__name__ for e in derived]
    assert kinds == ["BudgetWarning", "BudgetWarning", "BudgetWarning", "BudgetExceeded",
                     "SessionSuspended"], kinds  # fmt: skip
    warnings = [e for e in derived if isinstance(e, BudgetWarning)]
    assert [w.threshold_pct for w in warnings] == [50, 80, 100]
    exceeded = derived[3]
    assert isinstance(exceeded, BudgetExceeded)
    assert (exceeded.action, exceeded.used, exceeded.limit) == ("suspend", 1_200, 1_000)

    # The next proposal on the stream and an admission for the session: denied for the budget.
    proposal = tool_proposal(event_id=str(uuid.uuid4()), tenant_id=tenant, session_id=session,
                             idempotency_key=f"{session}/p1", operation_key=f"{session}/op1",
                             destination_host="api.example.com", occurred_at=at[3])  # fmt: skip
    _send(settings, [proposal])

    def decided(events: list[SessionEvent]) -> bool:
        return any(isinstance(e, PolicyDecided) and e.session_id == session for e in events)

    decision = next(e for e in _derived(settings, decided)
                    if isinstance(e, PolicyDecided) and e.session_id == session)  # fmt: skip
    assert (decision.decision, decision.reason_code) == ("deny", "BUDGET_EXCEEDED")
    admitted = httpx.post(f"{url}/v1/admission/tool", headers=bearer(KEY_B), timeout=5, json={
        "tenant": tenant, "session": session, "tool": "http_request", "action": "fetch",
        "operation_key": f"{session}/op2", "destination_host": "api.example.com",
        "method": "GET", "payload_bytes": 10, "risk_level": "low",
    }).json()  # fmt: skip
    assert (admitted["decision"], admitted["reason_code"]) == ("deny", "BUDGET_EXCEEDED")
    signed = PolicyDecided.model_validate(admitted["policy_decision"])
    verify_decision(signed, {settings.policy_key_id: settings.policy_signing_key.encode()},
                    signed.occurred_at)  # fmt: skip
    turn_reply = httpx.post(f"{url}/v1/admission/turn", json=_turn_body(tenant, session),
                            headers=bearer(KEY_B), timeout=5).json()  # fmt: skip
    assert (turn_reply["decision"], turn_reply["reason_code"]) == (
        "deny", "SESSION_SUSPENDED_BY_BUDGET")  # fmt: skip
    # The same operation asked again gets the same signed decision, not a new one.
    again = httpx.post(f"{url}/v1/admission/tool", headers=bearer(KEY_B), timeout=5, json={
        "tenant": tenant, "session": session, "tool": "http_request", "action": "fetch",
        "operation_key": f"{session}/op2", "destination_host": "api.example.com",
        "method": "GET", "payload_bytes": 10, "risk_level": "low",
    }).json()  # fmt: skip
    assert again["policy_decision"] == admitted["policy_decision"]
    review = _derived(settings, lambda evs: sum(e.session_id == session for e in evs) >= 2,
                      topic="review")  # fmt: skip
    assert sorted(e.operation_key for e in review if isinstance(e, PolicyDecided)
                  and e.session_id == session) == [f"{session}/op1", f"{session}/op2"]  # fmt: skip


def _tool_call(settings: Settings, url: str, tenant: str, key: str, host: str) -> dict[str, Any]:
    """A started session of `tenant` (with a profile) and an admission body for one
    low-risk GET to `host` in it."""
    session = f"s-call-{uuid.uuid4().hex[:6]}"
    _send(settings, [_profile(tenant), session_started(tenant_id=tenant, session_id=session,
                                                       occurred_at=datetime.now(UTC))])  # fmt: skip
    _wait_for_plan(url, tenant, key, {})
    return {
        "tenant": tenant, "session": session, "tool": "http_request", "action": "fetch",
        "operation_key": f"{session}:op-1", "destination_host": host,
        "method": "GET", "payload_bytes": 10, "risk_level": "low",
    }  # fmt: skip


def test_an_operation_key_reused_for_another_call_is_a_409(worker: tuple[Settings, str]) -> None:
    """Issue 12: the same operation key naming another tool, host and risk got the
    stored allow. Each field changed: 409 OPERATION_KEY_CONFLICT, never an allow."""
    settings, url = worker
    body = _tool_call(settings, url, "t-a", KEY_A, "api.example.com")
    tenant, session = body["tenant"], body["session"]

    def ask(fields: dict[str, Any]) -> httpx.Response:
        return httpx.post(
            f"{url}/v1/admission/tool", headers=bearer(KEY_A), json=fields, timeout=10
        )

    first = ask(body)
    assert first.status_code == 200 and first.json()["decision"] == "allow", first.text
    decision = PolicyDecided.model_validate(first.json()["policy_decision"])
    keys = {settings.policy_key_id: settings.policy_signing_key}  # str keys are accepted
    call = {**body, "tenant_id": tenant, "session_id": session, "environment": "production"}
    verify_decision(decision, keys, decision.occurred_at, proposal=call)
    changes = {
        "tool": "web_search", "action": "query", "destination_host": "evil.example.net",
        "method": "POST", "payload_bytes": 11, "risk_level": "critical", "environment": "staging",
    }  # fmt: skip
    replies = {field: ask({**body, field: value}) for field, value in changes.items()}
    assert {f: r.status_code for f, r in replies.items()} == dict.fromkeys(changes, 409)
    assert {r.json()["reason_code"] for r in replies.values()} == {"OPERATION_KEY_CONFLICT"}
    assert sum(r.json()["decision"] == "allow" for r in replies.values()) == 0
    again = ask(body)  # the same call still gets its first decision, byte for byte
    assert again.status_code == 200
    assert again.json()["policy_decision"] == first.json()["policy_decision"]


def test_a_denial_made_through_the_api_has_its_destination_on_the_dashboard(
    worker: tuple[Settings, str],
) -> None:
    """Issue 14: the egress panel showed admission denials with no host (there is no
    ToolCallProposed to join); the decision itself names it."""
    from sql.client import open_clickhouse
    from sql.dashboards import load_panel, run_panel

    settings, url = worker
    body = _tool_call(settings, url, "t-b", KEY_B, "exfil.example.org")
    tenant = body["tenant"]
    reply = httpx.post(f"{url}/v1/admission/tool", headers=bearer(KEY_B), json=body, timeout=10)
    assert reply.status_code == 200 and reply.json()["decision"] == "deny", reply.text
    assert reply.json()["reason_code"].startswith("EGRESS_")
    panel = load_panel("egress_denials_by_destination")
    values = {"from": datetime(2000, 1, 1, tzinfo=UTC), "to": datetime(2200, 1, 1, tzinfo=UTC),
              "tenant": tenant}  # fmt: skip

    def denials() -> list[dict[str, Any]]:
        with open_clickhouse(settings, role="client") as ch:
            return run_panel(ch, panel, values).dicts()

    rows = poll("the egress panel's rows", denials, bool, seconds=WAIT_SECONDS)
    assert [(r["destination_host"], r["denials"]) for r in rows] == [("exfil.example.org", 1)]
