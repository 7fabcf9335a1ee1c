"""The policy engine: a decision table over policies/example.yaml, host parsing, the contract."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.policy import (
    REASON_CODES,
    ContractError,
    Decision,
    PolicyContext,
    PolicyDocument,
    evaluate,
    load_policy,
    parse_policy,
)
from projections.policy_contract import HostError, parse_host, parse_host_pattern
from tests.factories import T0, tenant_profile, tool_proposal

EXAMPLE = Path(__file__).resolve().parents[2] / "policies" / "example.yaml"
POLICY = load_policy(EXAMPLE)
NOW = T0 + timedelta(seconds=1)

CYRILLIC_GOOD = "g\u043e\u043ed.com"  # "good.com" with two Cyrillic o
GREEK_GOOD = "g\u03bf\u03bfd.com"  # ... with two Greek omicron
MIXED_GOOD = "g\u043eod.com"  # one Cyrillic o


proposal = tool_proposal


def context(**overrides: Any) -> PolicyContext:
    fields: dict[str, Any] = {"plan": "team", "environment": "production"}
    fields.update(overrides)
    return PolicyContext(**fields)


def case(
    case_id: str,
    expected: tuple[str, str, str],
    ctx: dict[str, Any] | None = None,
    **proposal_fields: Any,
) -> Any:
    return pytest.param(proposal_fields, ctx or {}, expected, id=case_id)


ALLOW = ("allow", "ALLOWED", "default.allow")
INVALID = ("deny", "EGRESS_INVALID_HOST", "egress.host")
IP_UNLISTED = ("deny", "EGRESS_INVALID_HOST", "egress.ip_literal")
NOT_ALLOWED = ("deny", "EGRESS_NOT_ALLOWED", "egress.production")

TABLE = [
    # --- egress: normalization that must still match ---------------------------------
    case("plain-listed-host", ALLOW, destination_host="good.com"),
    case("upper-case", ALLOW, destination_host="GOOD.COM"),
    case("mixed-case", ALLOW, destination_host="GoOd.CoM"),
    case("one-trailing-dot", ALLOW, destination_host="good.com."),
    case("explicit-port-443", ALLOW, destination_host="good.com:443"),
    case("wildcard-one-level", ALLOW, destination_host="api.good.com"),
    case("wildcard-multi-level", ALLOW, destination_host="a.b.good.com"),
    case("idn-listed-unicode-asked-punycode", ALLOW, destination_host="xn--bcher-kva.example"),
    case("idn-listed-unicode-asked-unicode", ALLOW, destination_host="bücher.example"),
    case("idn-upper-case-unicode", ALLOW, destination_host="BÜCHER.EXAMPLE"),
    case("idn-listed-punycode-asked-unicode", ALLOW, destination_host="münchen.example"),
    case("ip-listed-literally", ALLOW, destination_host="203.0.113.10"),
    case("no-destination-no-egress-check", ALLOW, destination_host=None),
    # --- egress: look-alikes and suffix tricks --------------------------------------
    case("userinfo", INVALID, destination_host="good.com@evil.com"),
    case("listed-host-as-subdomain-of-evil", NOT_ALLOWED, destination_host="good.com.evil.com"),
    case("suffix-without-dot", NOT_ALLOWED, destination_host="evilgood.com"),
    case("cyrillic-look-alike", NOT_ALLOWED, destination_host=CYRILLIC_GOOD),
    case("greek-look-alike", NOT_ALLOWED, destination_host=GREEK_GOOD),
    case("one-cyrillic-letter", NOT_ALLOWED, destination_host=MIXED_GOOD),
    case("cyrillic-look-alike-punycode", NOT_ALLOWED, destination_host="xn--gd-fmca.com"),
    case("cyrillic-look-alike-under-wildcard", NOT_ALLOWED, destination_host="api.g\u043eod.com"),
    case("invalid-punycode", INVALID, destination_host="xn--zz.com"),
    case("fullwidth-letters", INVALID, destination_host="\uff47\uff4f\uff4f\uff44.com"),
    case("ideographic-full-stop", INVALID, destination_host="good\u3002com"),
    case("zero-width-space", INVALID, destination_host="go\u200bod.com"),
    case("soft-hyphen", INVALID, destination_host="go\u00adod.com"),
    # --- egress: not a plain host ----------------------------------------------------
    case("double-trailing-dot", INVALID, destination_host="good.com.."),
    case("leading-dot", INVALID, destination_host=".good.com"),
    case("empty-inner-label", INVALID, destination_host="good..com"),
    case("empty-host", INVALID, destination_host=""),
    case("leading-space", INVALID, destination_host=" good.com"),
    case("trailing-newline", INVALID, destination_host="good.com\n"),
    case("scheme", INVALID, destination_host="https://good.com"),
    case("path", INVALID, destination_host="good.com/path"),
    case("query", INVALID, destination_host="good.com?x=1"),
    case("backslash", INVALID, destination_host="evil.com\\good.com"),
    case("wildcard-as-destination", INVALID, destination_host="*.good.com"),
    case("port-out-of-range", INVALID, destination_host="good.com:99999"),
    case("port-not-numeric", INVALID, destination_host="good.com:abc"),
    case("port-empty", INVALID, destination_host="good.com:"),
    case("port-zero", INVALID, destination_host="good.com:0"),
    case("port-leading-zero", INVALID, destination_host="good.com:0443"),
    case(
        "port-not-allowed",
        ("deny", "EGRESS_NOT_ALLOWED", "egress.port"),
        destination_host="good.com:8443",
    ),
    case("hyphen-label-edge", INVALID, destination_host="-good.com"),
    case("label-too-long", INVALID, destination_host="a" * 64 + ".good.com"),
    # --- egress: IP literals -----------------------------------------------------------
    case("ipv4-loopback", IP_UNLISTED, destination_host="127.0.0.1"),
    case("ipv4-with-port", IP_UNLISTED, destination_host="127.0.0.1:443"),
    case("ipv4-decimal-integer", INVALID, destination_host="2130706433"),
    case("ipv4-hex-integer", INVALID, destination_host="0x7f000001"),
    case("ipv4-octal", INVALID, destination_host="0177.0.0.1"),
    case("ipv4-short", INVALID, destination_host="127.1"),
    case("ipv4-listed-in-integer-form", INVALID, destination_host="3405803786"),
    case("ipv6-bracketed", IP_UNLISTED, destination_host="[::1]"),
    case("ipv6-bare", IP_UNLISTED, destination_host="::1"),
    case("ipv6-bracketed-port", IP_UNLISTED, destination_host="[::1]:443"),
    case("ipv4-mapped-ipv6", IP_UNLISTED, destination_host="::ffff:203.0.113.10"),
    case("ipv4-in-brackets", INVALID, destination_host="[127.0.0.1]"),
    case("ipv6-zone-id", INVALID, destination_host="fe80::1%eth0"),
    case(
        "ipv6-listed-staging",
        ALLOW,
        {"environment": "staging"},
        destination_host="[2001:db8:0:0::1]",
    ),
    # --- egress: environments and the tenant's extra allowlist -------------------------
    case(
        "apex-not-covered-by-wildcard",
        ("deny", "EGRESS_NOT_ALLOWED", "egress.staging"),
        {"environment": "staging"},
        destination_host="good.com",
    ),
    case("wildcard-in-staging", ALLOW, {"environment": "staging"}, destination_host="x.good.com"),
    case(
        "unconfigured-environment",
        ("deny", "EGRESS_NOT_ALLOWED", "egress.dev"),
        {"environment": "dev"},
        destination_host="good.com",
    ),
    case(
        "tenant-extra-host",
        ALLOW,
        {"tenant_egress_allowlist": ["partner.io"]},
        destination_host="PARTNER.io",
    ),
    case(
        "tenant-extra-wildcard",
        ALLOW,
        {"tenant_egress_allowlist": ["bad entry/", "*.partner.io"]},
        destination_host="eu.partner.io",
    ),
    case(
        "tenant-invalid-entry-ignored",
        NOT_ALLOWED,
        {"tenant_egress_allowlist": ["https://partner.io", "*"]},
        destination_host="partner.io",
    ),
    # --- plans and risk tiers ----------------------------------------------------------
    case("risk-at-ceiling", ALLOW, risk_level="medium"),
    case(
        "risk-above-ceiling",
        ("deny", "RISK_ABOVE_PLAN", "plan.team.tool.http_request"),
        risk_level="high",
    ),
    case(
        "tool-denied-by-plan", ("deny", "TOOL_NOT_PERMITTED", "plan.team.tool.shell"), tool="shell"
    ),
    case(
        "tool-not-listed",
        ("deny", "TOOL_NOT_PERMITTED", "plan.team.tool.teleport"),
        tool="teleport",
    ),
    case(
        "tool-names-case-sensitive",
        ("deny", "TOOL_NOT_PERMITTED", "plan.team.tool.HTTP_REQUEST"),
        tool="HTTP_REQUEST",
    ),
    case("free-plan-tool", ALLOW, {"plan": "free"}, tool="web_search", risk_level="medium"),
    case(
        "free-plan-ceiling",
        ("deny", "RISK_ABOVE_PLAN", "plan.free.tool.http_request"),
        {"plan": "free"},
        risk_level="medium",
    ),
    case("unknown-plan", ("deny", "UNKNOWN_PLAN", "plan.unknown"), {"plan": "platinum"}),
    # --- methods -------------------------------------------------------------------------
    case(
        "method-not-allowed",
        ("deny", "METHOD_NOT_ALLOWED", "method.http_request"),
        method="DELETE",
    ),
    case("method-lower-case", ALLOW, method="get"),
    case("method-unconstrained-tool", ALLOW, {"plan": "enterprise"}, tool="shell", method="DELETE"),
    # --- payload ---------------------------------------------------------------------------
    case("payload-at-global-limit", ALLOW, payload_bytes=1_048_576),
    case(
        "payload-over-global-limit",
        ("deny", "PAYLOAD_TOO_LARGE", "payload.global"),
        payload_bytes=1_048_577,
    ),
    case(
        "payload-over-tool-limit",
        ("deny", "PAYLOAD_TOO_LARGE", "payload.tool.web_search"),
        tool="web_search",
        payload_bytes=16_385,
    ),
    case(
        "payload-tool-limit-replaces-global",
        ALLOW,
        tool="file_upload",
        method="PUT",
        risk_level="medium",
        payload_bytes=20_000_000,
    ),
    # --- approval by risk ------------------------------------------------------------------
    case(
        "high-risk-async",
        ("require_approval", "APPROVAL_REQUIRED", "approval.high"),
        {"plan": "enterprise"},
        risk_level="high",
    ),
    case(
        "critical-risk-human",
        ("require_approval", "APPROVAL_REQUIRED", "approval.critical"),
        {"plan": "enterprise"},
        risk_level="critical",
    ),
    case(
        "deny-beats-approval",
        ("deny", "EGRESS_NOT_ALLOWED", "egress.production"),
        {"plan": "enterprise"},
        risk_level="critical",
        destination_host="evil.com",
    ),
    # --- session and budget gates (and their precedence) -------------------------------
    case(
        "quarantined",
        ("deny", "QUARANTINED", "session.quarantined"),
        {"session_status": "quarantined"},
    ),
    case(
        "suspended",
        ("deny", "SESSION_SUSPENDED", "session.suspended"),
        {"session_status": "suspended"},
    ),
    case("closed", ("deny", "SESSION_NOT_ACTIVE", "session.status"), {"session_status": "closed"}),
    case(
        "unknown-tenant-refused",
        ("deny", "UNKNOWN_TENANT", "tenant.unknown"),
        {"tenant_refused": True},
    ),
    case(
        "not-started",
        ("deny", "SESSION_NOT_STARTED", "session.not_started"),
        {"session_status": "none"},
    ),
    case(
        "unknown-status", ("deny", "SESSION_NOT_ACTIVE", "session.status"), {"session_status": "??"}
    ),
    case("waiting-for-tool", ALLOW, {"session_status": "waiting_for_tool"}),
    case(
        "budget-exceeded", ("deny", "BUDGET_EXCEEDED", "budget.exceeded"), {"budget_exceeded": True}
    ),
    case(
        "quarantine-first",
        ("deny", "QUARANTINED", "session.quarantined"),
        {"session_status": "quarantined", "budget_exceeded": True, "plan": "platinum"},
        destination_host="good.com@evil.com",
    ),
    case(
        "budget-before-tool-and-host",
        ("deny", "BUDGET_EXCEEDED", "budget.exceeded"),
        {"budget_exceeded": True},
        tool="shell",
        destination_host="127.0.0.1",
    ),
    # --- tenant overrides ----------------------------------------------------------------
    case(
        "tenant-deny",
        ("deny", "TENANT_DENIED", "tenant.tool.http_request"),
        {"tenant_tool_permissions": {"http_request": "deny"}},
    ),
    case(
        "tenant-unknown-value-fails-closed",
        ("deny", "TENANT_DENIED", "tenant.tool.http_request"),
        {"tenant_tool_permissions": {"http_request": "maybe"}},
    ),
    case(
        "tenant-deny-before-plan",
        ("deny", "TENANT_DENIED", "tenant.tool.teleport"),
        {"tenant_tool_permissions": {"teleport": "deny"}},
        tool="teleport",
    ),
    case(
        "tenant-allow-grants-tool",
        ALLOW,
        {"tenant_tool_permissions": {"shell": "allow"}},
        tool="shell",
    ),
    case(
        "tenant-allow-keeps-egress",
        INVALID,
        {"tenant_tool_permissions": {"shell": "allow"}},
        tool="shell",
        destination_host="2130706433",
    ),
    case(
        "tenant-allow-keeps-approval",
        ("require_approval", "APPROVAL_REQUIRED", "approval.high"),
        {"tenant_tool_permissions": {"http_request": "allow"}},
        risk_level="high",
    ),
    case(
        "tenant-allow-keeps-unknown-plan",
        ("deny", "UNKNOWN_PLAN", "plan.unknown"),
        {"plan": "platinum", "tenant_tool_permissions": {"http_request": "allow"}},
    ),
    case(
        "tenant-approval",
        ("require_approval", "APPROVAL_REQUIRED", "tenant.tool.http_request"),
        {"tenant_tool_permissions": {"http_request": "approval"}},
    ),
    case(
        "tenant-approval-stronger-than-async-risk",
        ("require_approval", "APPROVAL_REQUIRED", "tenant.tool.http_request"),
        {"plan": "enterprise", "tenant_tool_permissions": {"http_request": "approval"}},
        risk_level="high",
    ),
    case(
        "tenant-approval-ties-with-human-risk",
        ("require_approval", "APPROVAL_REQUIRED", "approval.critical"),
        {"plan": "enterprise", "tenant_tool_permissions": {"http_request": "approval"}},
        risk_level="critical",
    ),
]


@pytest.mark.parametrize(("proposal_fields", "context_fields", "expected"), TABLE)
def test_decision_table(
    proposal_fields: dict[str, Any],
    context_fields: dict[str, Any],
    expected: tuple[str, str, str],
) -> None:
    decision = evaluate(POLICY, proposal(**proposal_fields), context(**context_fields), NOW)
    assert (decision.decision, decision.reason_code, decision.rule_id) == expected
    assert decision.policy_version == "2026-11-01"
    assert decision.reason_code in REASON_CODES
    assert (decision.approval_mode != "none") == (decision.decision == "require_approval")


def test_table_is_large_enough_and_covers_every_reason_code() -> None:
    assert len(TABLE) >= 40
    covered = {param.values[2][1] for param in TABLE}
    assert covered == set(REASON_CODES)


@pytest.mark.parametrize(
    ("context_fields", "risk", "mode"),
    [
        ({"plan": "enterprise"}, "high", "async"),
        ({"plan": "enterprise"}, "critical", "human"),
        ({"tenant_tool_permissions": {"http_request": "approval"}}, "low", "human"),
        ({}, "low", "none"),
    ],
)
def test_approval_mode(context_fields: dict[str, Any], risk: str, mode: str) -> None:
    decision = evaluate(POLICY, proposal(risk_level=risk), context(**context_fields), NOW)
    assert decision.approval_mode == mode


def test_evaluation_is_deterministic() -> None:
    for param in TABLE:
        proposal_fields, context_fields, _ = param.values
        first = evaluate(POLICY, proposal(**proposal_fields), context(**context_fields), NOW)
        again = evaluate(POLICY, proposal(**proposal_fields), context(**context_fields), NOW)
        later = evaluate(
            POLICY, proposal(**proposal_fields), context(**context_fields), NOW + timedelta(days=9)
        )
        assert first == again == later
    reloaded = load_policy(EXAMPLE)
    assert evaluate(reloaded, proposal(), context(), NOW) == evaluate(
        POLICY, proposal(), context(), NOW
    )


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone"):
        evaluate(POLICY, proposal(), context(), datetime(2026, 1, 1))


def test_context_is_immutable_copy() -> None:
    allow = ["partner.io"]
    perms = {"shell": "allow"}
    ctx = context(tenant_egress_allowlist=allow, tenant_tool_permissions=perms)
    allow.append("evil.com")
    perms["shell"] = "deny"
    assert ctx.tenant_egress_allowlist == ("partner.io",)
    assert ctx.tenant_tool_permissions["shell"] == "allow"
    with pytest.raises(TypeError):
        ctx.tenant_tool_permissions["x"] = "allow"  # type: ignore[index]


def test_context_from_tenant_profile() -> None:
    profile = tenant_profile(
        plan="enterprise",
        egress_allowlist=["partner.io"],
        tool_permissions={"http_request": "approval"},
    )
    ctx = PolicyContext.from_tenant_profile(
        profile, environment="production", session_status="active", budget_exceeded=False
    )
    assert ctx.plan == "enterprise"
    decision = evaluate(POLICY, proposal(destination_host="partner.io"), ctx, NOW)
    assert decision == Decision(
        "require_approval", "APPROVAL_REQUIRED", "tenant.tool.http_request", "2026-11-01", "human"
    )
    unknown = PolicyContext.from_tenant_profile(
        None, environment="production", session_status="active", budget_exceeded=False
    )
    assert unknown.plan == "free"


def test_reason_code_table_is_documented() -> None:
    for code, meaning in REASON_CODES.items():
        assert code.isupper() and code.replace("_", "").isalpha()
        assert meaning and "\n" not in meaning


# --- host grammar ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("*.good.com", ("wildcard", "good.com")),
        ("*.Bücher.example", ("wildcard", "xn--bcher-kva.example")),
        ("GOOD.com.", ("exact", "good.com")),
        ("[::1]", ("ip", "::1")),
        ("0:0::1", ("ip", "::1")),
        ("10.0.0.1", ("ip", "10.0.0.1")),
    ],
)
def test_allowlist_entries_normalize(entry: str, expected: tuple[str, str]) -> None:
    assert parse_host_pattern(entry) == expected


@pytest.mark.parametrize(
    "entry",
    ["*", "*.", "**.good.com", "*.*.good.com", "a.*.good.com", "*.10.0.0.1", "good.com:443", ""],
)
def test_bad_allowlist_entries(entry: str) -> None:
    with pytest.raises(HostError):
        parse_host_pattern(entry)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_any_text_either_parses_to_a_plain_host_or_is_rejected(text: str) -> None:
    try:
        host = parse_host(text)
    except HostError:
        return
    assert host.value.isascii()
    assert all(ch.isalnum() or ch in ".-:" for ch in host.value)
    assert host.value == host.value.lower()


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="goodcom.@:/[]-x\u043e\u03bf0123456789 \u3002*", max_size=24))
def test_adversarial_hosts_never_crash_and_never_match_outside_the_list(text: str) -> None:
    decision = evaluate(POLICY, proposal(destination_host=text), context(), NOW)
    if decision.decision == "allow":
        host = parse_host(text)
        assert host.value in {"good.com", "203.0.113.10"} or host.value.endswith(".good.com")


# --- the contract -----------------------------------------------------------------------------


def _example_data() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))


def _write(tmp_path: Path, data: dict[str, Any], name: str = "p.yaml") -> Path:
    path = tmp_path / name
    text = json.dumps(data) if name.endswith(".json") else yaml.safe_dump(data, allow_unicode=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_example_policy_loads() -> None:
    assert isinstance(POLICY, PolicyDocument)
    assert set(POLICY.plans) == {"free", "team", "enterprise"}
    assert POLICY.approval.by_risk.critical == "human"


def test_json_documents_load_the_same(tmp_path: Path) -> None:
    assert load_policy(_write(tmp_path, _example_data(), "p.json")) == POLICY


def _mutations() -> list[Any]:
    def unknown_field(d: dict[str, Any]) -> None:
        d["plans"]["free"]["colour"] = "red"

    def bad_approval(d: dict[str, Any]) -> None:
        d["approval"]["by_risk"]["high"] = "sometimes"

    def missing_risk(d: dict[str, Any]) -> None:
        del d["approval"]["by_risk"]["critical"]

    def bad_permission(d: dict[str, Any]) -> None:
        d["plans"]["team"]["tools"]["shell"] = "maybe"

    def bad_host(d: dict[str, Any]) -> None:
        d["egress"]["allowlist"]["production"][1] = "https://good.com/"

    def bad_method(d: dict[str, Any]) -> None:
        d["methods"]["web_search"] = ["get"]

    def negative_payload(d: dict[str, Any]) -> None:
        d["payload"]["max_bytes"] = -1

    def unknown_top(d: dict[str, Any]) -> None:
        d["egres"] = {}

    def schema(d: dict[str, Any]) -> None:
        d["schema_version"] = 2

    return [
        pytest.param(
            unknown_field, "plans.free.colour: Extra inputs are not permitted", id="extra"
        ),
        pytest.param(bad_approval, "approval.by_risk.high: Input should be 'none'", id="mode"),
        pytest.param(missing_risk, "approval.by_risk.critical: Field required", id="missing"),
        pytest.param(bad_permission, "plans.team.tools.shell: Input should be 'low'", id="perm"),
        pytest.param(bad_host, "egress.allowlist.production.1: 'https://good.com/'", id="host"),
        pytest.param(bad_method, "methods.web_search.0: 'get' is not an upper-case", id="method"),
        pytest.param(negative_payload, "payload.max_bytes: Input should be greater", id="size"),
        pytest.param(unknown_top, "egres: Extra inputs are not permitted", id="top"),
        pytest.param(schema, "schema_version: Input should be 1", id="schema"),
    ]


@pytest.mark.parametrize(("mutate", "message"), _mutations())
def test_bad_documents_fail_with_one_line_naming_the_field(
    tmp_path: Path, mutate: Any, message: str
) -> None:
    data = _example_data()
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(ContractError) as info:
        load_policy(path)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: ")
    assert message in text


def test_unquoted_date_version_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    text = EXAMPLE.read_text(encoding="utf-8").replace(
        'version: "2026-11-01"', "version: 2026-11-01"
    )
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ContractError, match=r"version: must be a string; quote it"):
        load_policy(path)


def test_duplicate_keys_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    text = EXAMPLE.read_text(encoding="utf-8").replace(
        "      shell: deny\n  team:", "      shell: deny\n      shell: critical\n  team:"
    )
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ContractError, match=r"duplicate key 'shell' \(line \d+\)"):
        load_policy(path)
    dup_json = tmp_path / "p.json"
    dup_json.write_text('{"version": "1", "version": "2"}', encoding="utf-8")
    with pytest.raises(ContractError, match="duplicate key 'version'"):
        load_policy(dup_json)


def test_other_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="must be a mapping"):
        parse_policy(["not", "a", "mapping"])
    with pytest.raises(ContractError, match="cannot read"):
        load_policy(tmp_path / "missing.yaml")
    other = tmp_path / "p.toml"
    other.write_text("x = 1", encoding="utf-8")
    with pytest.raises(ContractError, match=r"\.yaml, \.yml or \.json"):
        load_policy(other)
    broken = tmp_path / "broken.yaml"
    broken.write_text("plans: [unclosed\n  more: x", encoding="utf-8")
    with pytest.raises(ContractError) as info:
        load_policy(broken)
    assert "\n" not in str(info.value)


def test_readme_documents_every_reason_code() -> None:
    from pathlib import Path

    from projections.policy import REASON_CODES

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for code, meaning in REASON_CODES.items():
        assert f"| `{code}` | {meaning} |" in readme
