"""The demo prints the rows around the incident, not the whole timeline."""

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
