"""The demo prints the rows around the incident, not the whole timeline; its fleet has one."""

from govstream.demo import incident_excerpt


def test_the_excerpt_centres_on_the_first_incident_row() -> None:
    rows = ["time  event", "----  -----"] + [f"t{i}  TurnCompleted  ok" for i in range(30)]
    rows[12] = "t10  BudgetExceeded  session exceeded"
    lines = [*rows, "", "state of session s-1 at after the last event", "  status  suspended"]
    out = incident_excerpt(lines, "BudgetExceeded", before=2, after=3)
    assert out[:3] == ["time  event", "----  -----", "... 8 earlier rows"]
    assert out[3:9] == rows[10:16]
    assert out[9] == "... 16 later rows"
    assert out[-2:] == ["state of session s-1 at after the last event", "  status  suspended"]


def test_a_short_timeline_or_no_incident_row_is_printed_whole() -> None:
    lines = ["time  event", "----  -----", "t0  TurnCompleted", "", "state of session s-1"]
    assert incident_excerpt(lines, "BudgetExceeded") == lines


def test_the_demo_fleet_is_the_same_whatever_the_hour_and_has_an_incident() -> None:
    """The simulator places sessions by the hour of day, so the demo's fleet starts at
    midnight UTC (default_start): at 14:00 UTC a start on the hour gave the test's fleet
    (seed 7, 2 tenants, 40 sessions) no incident to replay, and the demo failed."""
    from collections import Counter
    from datetime import UTC, datetime

    from govstream.simulate import FleetConfig, default_start, simulate

    def fleet(now: datetime) -> Counter[str]:
        config = FleetConfig(
            seed=7, tenants=2, sessions=40, start=default_start(now), malformed_rate=0.001
        )
        return Counter(type(e).__name__ for e in simulate(config).unique_events())

    morning, afternoon = (fleet(datetime(2026, 11, 30, h, 7, tzinfo=UTC)) for h in (3, 14))
    assert morning == afternoon == fleet(datetime(2026, 12, 24, 20, 59, tzinfo=UTC))
    assert morning["SessionQuarantined"] >= 1  # the demo replays it
