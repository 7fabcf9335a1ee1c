"""Redaction: the hand-written rules (projections.redaction) against Yelp's detect-secrets.

On the corpus of tests/data/redaction_corpus.json (planted values of every
kind, and clean text that must stay as it is) this measures, for our
Redactor, for detect-secrets 1.5.0 with all its default plugins and default
filters, and for the union (detect-secrets' findings redacted on top of ours):

* recall per kind: a planted value counts as found when the redacted spans
  cover every character of it (for detect-secrets alone: when one finding's
  secret_value covers it);
* false positives: clean texts with any finding;
* throughput in one process: texts/s and MB/s over the corpus repeated to at
  least `--megabytes`, and over the same text joined and cut at whitespace into
  texts of about 200 bytes, the size the sink redacts (it must keep up with
  20,000 of those a second on one core); the fastest of `--rounds` rounds.

Beyond the corpus, a dozen secrets of kinds the rules do not claim but
detect-secrets has plugins for (keyword passwords, Twilio, Discord, ...) show
what the union would add.

detect-secrets is a line scanner: each text is split into lines and run
through `_process_line_based_plugins`, the per-line path of `scan_file` (every
plugin's `analyze_line`, then the default filters), under `transient_settings`
with the default plugin list. `scan_line` is the ad-hoc mode: it turns on
eager search, in which the high-entropy plugins report every token of a line
without the entropy limit; it is measured on one pass for comparison only.

Run: python -m bench.redaction  (writes its section of BENCHMARKS.md; needs the
`bench` extra: pip install -e '.[bench]')
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import string
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
from detect_secrets.core.scan import _process_line_based_plugins, scan_line
from detect_secrets.settings import transient_settings

from bench.report import write_section
from projections.redaction import DEFAULT_REDACTOR, KIND_NAME_RE, placeholder

BEGIN, FINISH = "<!-- redaction:begin -->", "<!-- redaction:end -->"
CORPUS = Path(__file__).resolve().parents[1] / "tests" / "data" / "redaction_corpus.json"
SINK_TEXTS_PER_S = 20_000  # the sink's rate on ~200-byte texts, one core
FILENAME = "turn.txt"  # what detect-secrets' filename filters see
WHITESPACE = re.compile(r"\s")

Finding = tuple[int, int, str]  # start, end, kind (ours) or secret type (detect-secrets)


# Secrets of kinds the rules do not claim but detect-secrets has plugins for,
# with random (fake) values: what the union could add. (kind, value, text).
def outside_our_kinds(seed: int = 7) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)

    def pick(alphabet: str, n: int) -> str:
        return "".join(rng.choice(alphabet) for _ in range(n))

    alnum, hexl = string.ascii_letters + string.digits, "0123456789abcdef"
    b64 = alnum + "+/"
    values = [
        ("keyword", pick(alnum, 14), 'password = "{v}"'),
        ("keyword", pick(alnum + "#$%", 12), "DB_PASSWORD='{v}'"),
        ("keyword", pick(alnum, 20), '{{"client_secret": "{v}"}}'),
        ("keyword", pick(alnum, 16), "secret_token: {v}"),
        ("high entropy", pick(alnum + "-_=", 32), 'token = "{v}"'),
        ("twilio", "SK" + pick(hexl, 32), "TWILIO_API_KEY_SID={v}"),
        ("mailchimp", pick(hexl, 32) + "-us12", "mailchimp key {v}"),
        ("discord", "M" + pick(alnum, 23) + "." + pick(alnum, 6) + "." + pick(alnum, 27),
         "DISCORD_TOKEN={v}"),
        ("telegram", pick("123456789", 9) + ":AA" + pick(alnum + "_-", 33), "bot token {v}"),
        ("azure storage", pick(b64, 86) + "==",
         "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={v};"),
        ("square", "sq0csp-" + pick(alnum + "-_", 43), "SQUARE_SECRET={v}"),
        ("artifactory", "AKC" + pick(alnum, 60), "artifactory token {v}"),
    ]  # fmt: skip
    return [(kind, v, text.format(v=v)) for kind, v, text in values]


# --- detectors ----------------------------------------------------------------------


def ours(text: str) -> list[Finding]:
    return DEFAULT_REDACTOR.spans(text)


@contextmanager
def detect_secrets_defaults() -> Iterator[None]:
    """All default plugins and filters, restored afterwards."""
    plugins = [{"name": cls.__name__} for cls in get_mapping_from_secret_type_to_class().values()]
    with transient_settings({"plugins_used": plugins}):
        yield


def _line_findings(text: str, found: Iterator[tuple[int, str, str]]) -> list[Finding]:
    """(1-based line, secret value, type) -> spans of every occurrence in the text."""
    starts = [0]
    for line in text.split("\n")[:-1]:
        starts.append(starts[-1] + len(line) + 1)
    lines = text.split("\n")
    spans: list[Finding] = []
    for number, secret, kind in found:
        line = lines[number - 1]
        at = line.find(secret)
        while secret and at >= 0:
            spans.append((starts[number - 1] + at, starts[number - 1] + at + len(secret), kind))
            at = line.find(secret, at + 1)
    return sorted(set(spans))


def detect_secrets(text: str) -> list[Finding]:
    """The file-scan path, line by line (call inside detect_secrets_defaults())."""
    numbered = list(enumerate(text.split("\n"), 1))
    found = _process_line_based_plugins(numbered, FILENAME)
    return _line_findings(text, ((s.line_number, s.secret_value or "", s.type) for s in found))


def detect_secrets_adhoc(text: str) -> list[Finding]:
    """`scan_line` on every line (eager search; for comparison only)."""
    found = (
        (number, s.secret_value or "", s.type)
        for number, line in enumerate(text.split("\n"), 1)
        for s in scan_line(line)
    )
    return _line_findings(text, found)


def merge(spans: list[Finding]) -> list[Finding]:
    """Overlapping spans become one, named by the first (as the Redactor does)."""
    merged: list[Finding] = []
    for start, end, kind in sorted(spans, key=lambda s: (s[0], -s[1])):
        if merged and start < merged[-1][1]:
            s, e, k = merged[-1]
            merged[-1] = (s, max(e, end), k)
        else:
            merged.append((start, end, kind))
    return merged


def union(text: str) -> list[Finding]:
    return merge(ours(text) + detect_secrets(text))


def redact_with(find: Callable[[str], list[Finding]], text: str) -> str:
    """The redacted text for any detector (what the sink would store)."""
    parts, pos = [], 0
    for start, end, kind in merge(find(text)):
        name = kind if KIND_NAME_RE.fullmatch(kind) else "secret"  # detect-secrets' types
        parts += [text[pos:start], placeholder(name)]
        pos = end
    parts.append(text[pos:])
    return "".join(parts)


def redact_ours(text: str) -> str:
    return DEFAULT_REDACTOR.redact(text).text


# --- measurements ------------------------------------------------------------------


def covered(spans: list[Finding], start: int, end: int, single: bool) -> bool:
    if single:
        return any(s <= start and end <= e for s, e, _ in spans)
    pos = start
    for s, e, _ in merge(spans):
        if s <= pos < e:
            pos = e
        if pos >= end:
            return True
    return False


@dataclass
class Quality:
    found: Counter[str]  # kind -> planted values found
    flagged_clean: int  # clean texts with any finding
    clean_findings: Counter[str]  # finding kind/type -> count on clean texts
    outside: int = 0  # secrets of kinds the rules do not claim, found


def quality(find: Callable[[str], list[Finding]], corpus: dict[str, list], single: bool) -> Quality:
    found: Counter[str] = Counter()
    for entry in corpus["planted"]:
        start = entry["text"].index(entry["value"])
        if covered(find(entry["text"]), start, start + len(entry["value"]), single):
            found[entry["kind"]] += 1
    flagged, kinds = 0, Counter[str]()
    for text in corpus["clean"]:
        spans = find(text)
        flagged += bool(spans)
        kinds.update(kind for _, _, kind in spans)
    return Quality(found, flagged, kinds, outside_found(find, single))


def outside_found(find: Callable[[str], list[Finding]], single: bool) -> int:
    found = 0
    for _, value, text in outside_our_kinds():
        start = text.index(value)
        found += covered(find(text), start, start + len(value), single)
    return found


@dataclass(frozen=True)
class Speed:
    texts: int
    megabytes: float
    seconds: float

    @property
    def texts_per_s(self) -> float:
        return self.texts / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.megabytes / self.seconds


def speed(run: Callable[[str], object], texts: list[str], rounds: int) -> Speed:
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for text in texts:
            run(text)
        best = min(best, time.perf_counter() - started)
    return Speed(len(texts), megabytes, best)


def repeated(texts: list[str], megabytes: float) -> list[str]:
    size = sum(len(t.encode()) for t in texts)
    copies = max(1, -(-int(megabytes * 1e6) // size))
    return texts * copies


def about_200_bytes(texts: list[str], megabytes: float) -> list[str]:
    """The corpus (repeated) joined with spaces and cut at the first whitespace
    after 200 characters: texts of about 200 bytes, long ones (a PEM block) cut
    like any other."""
    stream = " ".join(repeated(texts, megabytes))
    cuts: list[str] = []
    start = 0
    while start < len(stream):
        space = WHITESPACE.search(stream, start + 200)
        end = space.start() if space else len(stream)
        cuts.append(stream[start:end])
        start = end + 1
    return cuts


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{platform.platform()}, {os.cpu_count()} CPUs ({cpu}), "
        f"Python {platform.python_version()}; load average {load} when the report "
        f"was written (the machine is shared)"
    )


# --- report ------------------------------------------------------------------------


def pct(n: int, d: int) -> str:
    return f"{n}/{d} ({100 * n / d:.0f}%)" if d else "-"


PII = ("email", "phone", "card", "ssn", "iban")


def verdict(q: dict[str, Quality], s200: dict[str, Speed], per_kind: Counter[str]) -> str:
    """Which one we keep: whichever finds more at the rate the sink needs."""
    planted = sum(per_kind.values())
    found = {k: sum(q[k].found.values()) for k in ("ours", "detect-secrets", "union")}
    rate = {k: s200[k].texts_per_s for k in ("ours", "detect-secrets", "union")}
    fast_enough = {k: r >= SINK_TEXTS_PER_S for k, r in rate.items()}
    pii = sum(per_kind[k] for k in PII)
    ds_pii = sum(q["detect-secrets"].found[k] for k in PII)
    extra = found["union"] - found["ours"]
    extra_fp = q["union"].flagged_clean - q["ours"].flagged_clean
    if found["detect-secrets"] > found["ours"] and fast_enough["detect-secrets"]:
        keep = "**detect-secrets finds more at the sink's rate: it should replace the rules.**"
    elif extra > 0 and fast_enough["union"]:
        keep = "**detect-secrets adds findings at the sink's rate: run it after the rules.**"
    else:
        keep = (
            "**We keep the hand-written rules; `projections/redaction.py` stays dependency-free.**"
        )
    speed_line = (
        f"The sink must redact >= {SINK_TEXTS_PER_S:,} texts/s of ~200 bytes on one core "
        f"to not be the bottleneck. Measured here: the rules {rate['ours']:,.0f}/s "
        f"({100 * (rate['ours'] / SINK_TEXTS_PER_S - 1):+.0f}% against the target, on a "
        f"corpus much denser in secrets and digits than turn text), detect-secrets "
        f"{rate['detect-secrets']:,.0f}/s and the union {rate['union']:,.0f}/s "
        f"({SINK_TEXTS_PER_S / rate['union']:.0f}x too slow)."
    )
    return (
        f"{keep} They find {found['ours']} of {planted} planted values, detect-secrets "
        f"{found['detect-secrets']}; its findings on top of ours add {extra} "
        f"and flag {extra_fp} more clean texts. Where it is strong is outside our kinds: "
        f"passwords and secrets named by a keyword, quoted high-entropy strings and "
        f"vendors we have no rule for ({q['detect-secrets'].outside} of "
        f"{len(outside_our_kinds())} above, the rules {q['ours'].outside}). It is a "
        f"scanner for secrets in source files, with no plugin for personal data "
        f"(it found {ds_pii} of the {pii} emails, "
        f"phones, cards, SSNs and IBANs), it reports a PEM key by its BEGIN line only, "
        f"and its entropy and keyword plugins need quoted strings or assignments. "
        f"{speed_line} The corpus was written together with the rules (every planted "
        f"value is one of our kinds), so 100% for the rules is a regression check, not a "
        f"contest; the fair question is what detect-secrets catches that the rules miss, "
        f"which is the union column, and at what cost."
    )


def report(
    corpus: dict[str, list],
    q: dict[str, Quality],
    s: dict[str, Speed],
    s200: dict[str, Speed],
    s_adhoc: Speed,
    version: str,
) -> str:
    per_kind = Counter(entry["kind"] for entry in corpus["planted"])
    planted, clean = sum(per_kind.values()), len(corpus["clean"])
    names = ("ours", "detect-secrets", "union", "adhoc")
    rows = "\n".join(
        f"| {kind} | {n} | " + " | ".join(pct(q[k].found[kind], n) for k in names) + " |"
        for kind, n in sorted(per_kind.items())
    )
    total = (
        f"| **all** | **{planted}** | "
        + " | ".join(f"**{pct(sum(q[k].found.values()), planted)}**" for k in names)
        + " |"
    )
    fp = {k: pct(q[k].flagged_clean, clean) for k in names}

    def top(k: str) -> str:
        items = q[k].clean_findings.most_common(6)
        return ", ".join(f"{kind} {n}" for kind, n in items) or "none"

    throughput = "\n".join(
        f"| {label} | {s[k].texts_per_s:,.0f} | {s[k].mb_per_s:.2f} | "
        f"{s200[k].texts_per_s:,.0f} | {s200[k].mb_per_s:.2f} |"
        for k, label in (
            ("ours", "hand-written rules (`Redactor.redact`)"),
            ("detect-secrets", f"detect-secrets {version}, default plugins and filters"),
            ("union", "union (the rules, then detect-secrets' findings on top)"),
        )
    )
    n200 = s200["ours"].texts
    avg200 = s200["ours"].megabytes * 1e6 / n200
    return f"""{BEGIN}
## Redaction: hand-written rules vs detect-secrets ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)

`python -m bench.redaction`. Machine: {machine()}; one process.
Corpus: `tests/data/redaction_corpus.json`, {planted} planted values in
realistic text (prose, JSON, log and env lines, YAML, stack traces) and {clean}
clean texts that must come back unchanged. detect-secrets {version}: all
{len(_plugin_names())} default plugins and the default filters, each text's lines
through the per-line path of `scan_file`; "adhoc" is its `scan_line` (eager
search: every token of a line is reported), for comparison only. A planted value
counts as found when redacted spans cover all of it (detect-secrets alone: one
finding's secret_value covers it; union: the rules' spans and its findings).

| kind | planted | rules | detect-secrets | union | adhoc scan_line |
|---|---:|---:|---:|---:|---:|
{rows}
{total}

Beyond the corpus, {len(outside_our_kinds())} secrets of kinds the rules do not claim but
detect-secrets has plugins for ({", ".join(sorted({k for k, _, _ in outside_our_kinds()}))}):
rules {q["ours"].outside}, detect-secrets {q["detect-secrets"].outside},
union {q["union"].outside}, adhoc {q["adhoc"].outside}.

False positives, clean texts with any finding: rules {fp["ours"]},
detect-secrets {fp["detect-secrets"]}, union {fp["union"]}, adhoc {fp["adhoc"]}.
Findings on clean texts: rules: {top("ours")}; detect-secrets: {top("detect-secrets")}.

Throughput, fastest of the rounds, one core: the corpus repeated to
{s["ours"].megabytes:.1f} MB ({s["ours"].texts:,} texts of
{s["ours"].megabytes * 1e6 / s["ours"].texts:.0f} bytes on average), and the
corpus joined and cut at whitespace into {n200:,} texts of {avg200:.0f} bytes
on average (the sink's size):

| detector | texts/s (corpus) | MB/s (corpus) | texts/s (~200 B) | MB/s (~200 B) |
|---|---:|---:|---:|---:|
{throughput}

(adhoc `scan_line`: {s_adhoc.texts_per_s:,.0f} texts/s over one pass of the corpus.)

{verdict(q, s200, per_kind)}
{FINISH}
"""


def _plugin_names() -> list[str]:
    return [cls.__name__ for cls in get_mapping_from_secret_type_to_class().values()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=5.0, help="text per timed round")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (fastest kept)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    corpus = json.loads(CORPUS.read_text("utf-8"))
    texts = [entry["text"] for entry in corpus["planted"]] + corpus["clean"]
    big = repeated(texts, args.megabytes)
    small = about_200_bytes(texts, args.megabytes)

    quality_of: dict[str, Quality] = {}
    speed_of: dict[str, Speed] = {}
    speed_200: dict[str, Speed] = {}
    quality_of["ours"] = quality(ours, corpus, single=False)
    print("timing the rules ...", flush=True)
    speed_of["ours"] = speed(redact_ours, big, args.rounds)
    speed_200["ours"] = speed(redact_ours, small, args.rounds)
    with detect_secrets_defaults():
        quality_of["detect-secrets"] = quality(detect_secrets, corpus, single=True)
        quality_of["union"] = quality(union, corpus, single=False)
        print("timing detect-secrets and the union ...", flush=True)
        speed_of["detect-secrets"] = speed(detect_secrets, big, args.rounds)
        speed_200["detect-secrets"] = speed(detect_secrets, small, args.rounds)
        speed_of["union"] = speed(lambda t: redact_with(union, t), big, args.rounds)
        speed_200["union"] = speed(lambda t: redact_with(union, t), small, args.rounds)
    with detect_secrets_defaults():
        quality_of["adhoc"] = quality(detect_secrets_adhoc, corpus, single=True)
        adhoc = speed(detect_secrets_adhoc, texts, 1)
    text = report(corpus, quality_of, speed_of, speed_200, adhoc, version("detect-secrets"))
    print(text)
    if not args.no_write:
        write_section(text, BEGIN, FINISH)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
