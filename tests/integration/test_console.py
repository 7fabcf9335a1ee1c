"""The console the worker serves, driven in headless Chromium (Playwright) over a
simulated fleet: sign in, pick a tenant and see that tenant's figures (checked
against SQL), drill down to its sessions and a session's timeline; a tenant key
sees its own tenant only. Screenshots are kept in .govstream/test-artifacts/."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from govstream.browser import ensure_chromium
from govstream.console_html import SLO_ROWS_SHOWN
from govstream.settings import Settings
from govstream.simulate import FleetConfig
from projections.slo import triage
from sql.dashboards import load_panels
from tests.conftest import BACKENDS
from tests.fleet_run import Run, fleet_run

pytestmark = pytest.mark.integration

FLEET = FleetConfig(seed=47, tenants=3, sessions=60, start=datetime(2026, 11, 21, tzinfo=UTC))
OPS, KEY_A, KEY_B = "console-ops", "console-a", "console-b"
ARTIFACTS = Path(__file__).parents[2] / ".govstream" / "test-artifacts"
TIMEOUT_MS = 60_000  # a page waits for ClickHouse; generous for a slow machine


@pytest.fixture(scope="module")
def run(
    brokers: Any, clickhouse_servers: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Run]:
    base = tmp_path_factory.mktemp("console")
    keys = f"{OPS}:*,{KEY_A}:t-000,{KEY_B}:t-001"
    with fleet_run(BACKENDS[0], brokers, clickhouse_servers, base, FLEET, api_keys=keys) as fleet:
        yield fleet


def _url(run: Run) -> str:
    return f"http://{run.settings.web_host}:{run.settings.web_port}"


def _scalar(run: Run, sql: str, **params: Any) -> Any:
    return run.ch.query(sql, params or None).rows[0][0]


def _turns(run: Run, tenant: str = "") -> int:
    return int(
        _scalar(
            run,
            "SELECT count() FROM turns FINAL WHERE {t:String} = '' OR tenant_id = {t:String}",
            t=tenant,
        )
    )


def _cost_per_model(run: Run, tenant: str) -> dict[str, int]:
    rows = run.ch.query(
        "SELECT model, sum(cost_usd_micros) FROM turns FINAL WHERE tenant_id = {t:String} "
        "GROUP BY model",
        {"t": tenant},
    ).rows
    return {model: int(cost) for model, cost in rows}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    chromium = ensure_chromium(Settings().cache_dir)  # where `make test` keeps it
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(chromium.binary), env=chromium.env, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


def _sign_in(browser: Any, url: str, key: str) -> Any:
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{url}/console")  # no cookie yet: sent to the sign-in page
    assert page.url.endswith("/console/login")
    page.fill("input[name=key]", key)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/console$"))
    return page


def slo_status_now(run: Run) -> dict[str, Any]:
    from govstream.commands.slo import status
    from projections.slo import load_slo

    doc = load_slo(run.settings.resolved_slo_path)
    return status(run.settings, doc, datetime.now(UTC), None)


def _until_computed(page: Any) -> None:
    """The worker reads every tenant's figures and computes the SLO status off the
    page's time: the first page says so (and every tenant's view reloads itself)."""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    pending = '[data-pending="fleet"], section.slo[data-slo="pending"]'
    while page.locator(pending).count():
        assert time.monotonic() < deadline, "every tenant's figures were never read"
        page.wait_for_timeout(250)
        page.reload()


def _kpi(page: Any, name: str) -> str:
    return page.inner_text(f'[data-kpi="{name}"] b')


def _bars(page: Any, title: str) -> dict[str, float]:
    """Label -> plotted value of each bar of the panel titled `title`."""
    panel = page.locator(f'section.panel:has(h2:text-is("{title}"))')
    marks = panel.locator("rect.mark").evaluate_all(
        "marks => marks.map(m => [m.dataset.label, m.dataset.value])"
    )
    return {label: float(value) for label, value in marks}


def test_an_operator_picks_a_tenant_and_drills_down_to_a_session(run: Run, browser: Any) -> None:
    url = _url(run)
    page = _sign_in(browser, url, OPS)
    page.goto(f"{url}/console?range=all&refresh=0")
    # Nothing read for this view yet: a page at once that says so (and reloads itself).
    assert page.locator('[data-pending="fleet"]').count() == 1
    page.screenshot(path=str(ARTIFACTS / "console-reading.png"), full_page=False)
    _until_computed(page)
    assert _kpi(page, "turns") == f"{_turns(run):,}"
    assert page.locator("[data-as-of]").count() == 1  # the worker's read, and when
    assert page.locator("section.panel").count() == len(load_panels())
    # The SLO table: the same rows, worst first, as `govstream slo` (one rule, one place).
    report = slo_status_now(run)
    rows, _ = triage(report)
    alarming = [r["state"] for r in rows if r["state"] in ("firing", "suppressed")]
    not_ok = alarming + [r["state"] for r in rows if r["state"] == "bad"][:SLO_ROWS_SHOWN]
    states = page.locator("section.slo tr[data-slo-state]").evaluate_all(
        "rows => rows.map(r => r.dataset.sloState)"
    )
    assert states == not_ok
    text = page.inner_text("section.slo")
    assert ("why (deciding rule)" in text) if not_ok else ("no scope has a bad turn" in text)
    budgets = page.locator("section.slo h4 + table tbody tr").count()
    assert budgets == len(report["budgets"]) > 0  # every tenant's day and month budget
    assert _kpi(page, "firing alerts") == f"{len(report['alerts']):,}"
    page.screenshot(path=str(ARTIFACTS / "console-overview.png"), full_page=False)

    # Pick a tenant: every figure becomes that tenant's.
    page.select_option("select[name=tenant]", "t-000")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*tenant=t-000.*"))
    assert _kpi(page, "turns") == f"{_turns(run, 't-000'):,}"
    assert _kpi(page, "turns") != f"{_turns(run):,}"
    assert page.locator("[data-as-of]").count() == 1  # its first page waited for its read
    assert _bars(page, "Cost per model") == {
        model: float(cost) for model, cost in _cost_per_model(run, "t-000").items()
    }
    page.screenshot(path=str(ARTIFACTS / "console-tenant.png"), full_page=False)

    # Drill down: the tenant's sessions, then one session's timeline.
    page.click('a[data-drill="sessions"]')
    page.wait_for_url(re.compile(r".*/console/sessions\?.*tenant=t-000.*"))
    rows = page.locator("tr[data-session]")
    started = _scalar(run, "SELECT count() FROM sessions FINAL WHERE tenant_id = 't-000'")
    assert rows.count() == min(int(started), 200)
    session = rows.first.get_attribute("data-session")
    rows.first.locator("a").click()
    page.wait_for_url(re.compile(rf".*/console/sessions/{re.escape(session)}\?tenant=t-000"))
    archived = _scalar(
        run,
        "SELECT count() FROM events_archive FINAL WHERE tenant_id = 't-000' "
        "AND session_id = {s:String}",
        s=session,
    )
    assert page.locator("tr[data-event]").count() == int(archived) > 0
    assert page.locator('tr[data-event="SessionStarted"]').count() == 1
    page.screenshot(path=str(ARTIFACTS / "console-session.png"), full_page=True)
    page.close()


def test_a_tenant_key_sees_its_own_tenant_only(run: Run, browser: Any) -> None:
    url = _url(run)
    page = _sign_in(browser, url, KEY_A)
    # Asking for another tenant (or all) still shows t-000's figures.
    for query in ("range=all", "range=all&tenant=t-001", "range=all&tenant="):
        page.goto(f"{url}/console?{query}&refresh=0")
        assert _kpi(page, "turns") == f"{_turns(run, 't-000'):,}"
        assert page.locator("select[name=tenant]").count() == 0
        assert "t-001" not in page.content()
    other = run.ch.query(
        "SELECT session_id FROM sessions FINAL WHERE tenant_id = 't-001' LIMIT 1"
    ).rows[0][0]
    page.goto(f"{url}/console/sessions/{other}?tenant=t-001")
    assert page.locator("tr[data-event]").count() == 0  # looked up as t-000's: nothing
    page.goto(f"{url}/console/sessions?range=all&tenant=t-001")
    tenants = set(page.locator("tr[data-session] td:first-child").all_inner_texts())
    assert tenants == {"t-000"}
    page.close()


def test_the_console_refuses_other_sites_and_keeps_the_api_closed(run: Run) -> None:
    url = _url(run)
    cross = {"Sec-Fetch-Site": "cross-site", "Cookie": f"govstream_console={OPS}"}
    assert httpx.get(f"{url}/console", headers=cross, timeout=30).status_code == 403
    foreign = {"Origin": "http://evil.example", "Sec-Fetch-Site": "same-origin"}
    login = httpx.post(f"{url}/console/login", data={"key": OPS}, headers=foreign, timeout=30)
    assert login.status_code == 403
    # A browser without the cookie is sent to sign in; a script without a key gets 401.
    navigate = httpx.get(f"{url}/console", headers={"Sec-Fetch-Site": "none"}, timeout=30)
    assert (navigate.status_code, navigate.headers["Location"]) == (303, "/console/login")
    assert httpx.get(f"{url}/console", timeout=30).status_code == 401
    wrong = httpx.post(f"{url}/console/login", data={"key": "nope"}, timeout=30)
    assert wrong.status_code == 401 and "unknown key" in wrong.text
    # The console's cookie opens the console only, never the API.
    api = httpx.get(
        f"{url}/v1/budgets/t-000", headers={"Cookie": f"govstream_console={OPS}"}, timeout=30
    )
    assert api.status_code == 401
    # The same overview as a script (bearer key), and a bad range is a 400.
    answer = httpx.get(
        f"{url}/console", params={"range": "all"}, headers={"X-API-Key": OPS}, timeout=60
    )
    assert answer.status_code == 200 and "govstream console" in answer.text
    bad = httpx.get(
        f"{url}/console", params={"range": "9y"}, headers={"X-API-Key": OPS}, timeout=30
    )
    assert bad.status_code == 400 and "range '9y'" in bad.text
