"""Redaction of content fields before they reach turn memory or ClickHouse. Pure.

Issue 5, item 3: emails, phone numbers, card numbers, API keys and bearer
tokens (plus configurable patterns) are replaced by `[REDACTED:<kind>]`. The
redaction is recorded (`Redaction`: counts per kind and a sha256 of the
original text, so the same input can be recognised later) but the raw matched
values are never stored anywhere in the result.

Overlaps: every rule proposes spans; they are ordered by start, then by length
(longest first), then by rule order. The earliest, longest span names the
redaction; any later span that overlaps it is absorbed into it (the union is
redacted under the winner's kind), so no fragment of a losing match survives.

Idempotence: text already of the form `[REDACTED:<kind>]` is protected; no span
that touches a placeholder is redacted, and no built-in rule can match the
characters a placeholder leaves behind (`[`, `]`, `:` and lowercase words).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

PLACEHOLDER_RE = re.compile(r"\[REDACTED:[a-z][a-z0-9_]*\]")
KIND_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")


def placeholder(kind: str) -> str:
    return f"[REDACTED:{kind}]"


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum over a string of digits (separators already removed)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _digits(s: str) -> str:
    return "".join(ch for ch in s if ch.isdigit())


def _card_ok(s: str) -> bool:
    d = _digits(s)
    return 13 <= len(d) <= 19 and luhn_ok(d)


def _intl_phone_ok(s: str) -> bool:
    # E.164 allows at most 15 digits; fewer than 8 is a short code, not a number.
    return 8 <= len(_digits(s)) <= 15


def _national_phone_ok(s: str) -> bool:
    return 9 <= len(_digits(s)) <= 12


@dataclass(frozen=True)
class Rule:
    """One pattern for one kind. If the pattern has a group named `value`,
    only that group is redacted (the key name or auth scheme stays readable)."""

    kind: str
    pattern: re.Pattern[str]
    validate: Callable[[str], bool] | None = None


def _rule(kind: str, regex: str, validate: Callable[[str], bool] | None = None) -> Rule:
    return Rule(kind, re.compile(regex), validate)


# Token characters for bearer tokens (RFC 6750 b64token) and generic key values.
_TOKEN = r"[A-Za-z0-9\-._~+/]"

DEFAULT_RULES: tuple[Rule, ...] = (
    # --- bearer_token -------------------------------------------------------
    # `Bearer <token>` in any case. Only the token is redacted, the scheme stays
    # so a reader still sees an Authorization header was there. The token must
    # be 8+ characters and contain a digit: prose such as "the bearer
    # instrument" or "bearer bonds" is left alone.
    _rule(
        "bearer_token",
        rf"(?i)(?<![A-Za-z0-9])bearer\s+(?P<value>(?=[A-Za-z\-._~+/]*\d){_TOKEN}{{8,}}=*)",
    ),
    # JWTs: header and payload are base64url JSON objects, so both start with
    # `eyJ` (`{"`). Requiring two `eyJ` segments avoids any base64 blob that
    # merely starts with `eyJ`; the signature may be empty (alg "none").
    _rule(
        "bearer_token",
        r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
    ),
    # --- api_key ------------------------------------------------------------
    # Vendor prefixes. Each is anchored on a non-alphanumeric left edge so words
    # that merely end in the prefix ("task-force-...", "desk-...") do not match,
    # and each requires a long random tail so a bare "sk-" or "AKIA" is ignored.
    # OpenAI / Anthropic style `sk-...` (incl. sk-proj-, sk-ant-).
    _rule("api_key", r"(?<![A-Za-z0-9_-])sk-[A-Za-z0-9_-]{20,}"),
    # Stripe secret / publishable / restricted keys, live and test.
    _rule("api_key", r"(?<![A-Za-z0-9_])(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"),
    # AWS access key ids: exactly AKIA + 16 uppercase alphanumerics; the right
    # edge is checked so a longer uppercase identifier is not cut in two.
    _rule("api_key", r"(?<![A-Za-z0-9])AKIA[0-9A-Z]{16}(?![0-9A-Za-z])"),
    # GitHub tokens: ghp_/gho_/ghu_/ghs_/ghr_ + 36 chars, fine-grained github_pat_.
    _rule("api_key", r"(?<![A-Za-z0-9_])gh[pousr]_[A-Za-z0-9]{36,}"),
    _rule("api_key", r"(?<![A-Za-z0-9_])github_pat_[A-Za-z0-9_]{22,}"),
    # Slack tokens: xoxb-, xoxa-, xoxp-, xoxr-, xoxs-.
    _rule("api_key", r"(?<![A-Za-z0-9_])xox[baprs]-[A-Za-z0-9-]{10,}"),
    # Google API keys: AIza + 35 base64url characters, exactly.
    _rule("api_key", r"(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])"),
    # Generic `api_key = value` / `"apiKey": "value"` / `API-KEY: value`. Only
    # the value is redacted. The value must be 8+ token characters, so
    # "api key: none" or "api_key=xxx" placeholders in docs stay readable.
    _rule(
        "api_key",
        rf"(?i)(?<![A-Za-z0-9])api[_-]?key[\"']?\s*[:=]\s*[\"']?(?P<value>{_TOKEN}{{8,}})",
    ),
    # --- card ---------------------------------------------------------------
    # 13-19 digits, either contiguous or in the printed shapes (4-4-4-4[-1..3],
    # Amex 4-6-5, Diners 4-6-4) with one consistent separator (space or dash).
    # Every candidate must pass the Luhn checksum, which rejects 90% of random
    # long numbers (order ids, trace ids). Not preceded by a digit or a dot and
    # not followed by a digit or a decimal part, so the fraction digits of a
    # float or a slice of a longer number are never taken.
    _rule(
        "card",
        r"(?<![\d.])(?:\d{13,19}|\d{4}([ -])\d{4}\1\d{4}\1\d{4}(?:\1\d{1,3})?"
        r"|\d{4}([ -])\d{6}\2\d{4,5})(?!\d|[.,]\d)",
        _card_ok,
    ),
    # --- email --------------------------------------------------------------
    # local@domain.tld with an alphabetic TLD. A numeric "TLD" is required not
    # to match, so npm/pip specifiers like pkg@1.2.3 and decorators (@property,
    # no local part) are left alone.
    _rule(
        "email",
        r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?![A-Za-z0-9-])",
    ),
    # --- phone --------------------------------------------------------------
    # International: `+` then 8-15 digits (E.164 bounds), with optional spaces,
    # dots, dashes or parentheses between digit groups. The leading `+` is what
    # makes an unseparated digit run a phone number rather than an amount.
    _rule("phone", r"(?<![\w+])\+[1-9][\d ().-]{6,24}\d(?![\d])", _intl_phone_ok),
    # National forms: three groups with one consistent separator (415-555-2671,
    # 415.555.2671, 020 7946 0958) or a parenthesised area code ((415)
    # 555-2671), 9-12 digits in all. Two separators and a 3-4 digit middle
    # group are required, so plain 4-6 digit numbers, years, dates (2024-01-15,
    # 15.01.2024), versions (1.2.3) and IPv4 addresses are not phones. The
    # left edge excludes word characters, dots and dashes so the tail of an
    # identifier (ORD-2024-...) or of a dotted number is not taken.
    _rule(
        "phone",
        r"(?<![\w.-])(?:\d{2,4}([ .-])\d{3,4}\1\d{3,4}|\(\d{2,4}\)\s?\d{3,4}[ .-]\d{3,4})"
        r"(?!\d|[.-]\d)",
        _national_phone_ok,
    ),
    # French-style national numbers: 0X XX XX XX XX.
    _rule("phone", r"(?<![\w.-])0[1-9](?:([ .])\d{2})(?:\1\d{2}){3}(?!\d|[.-]\d)"),
)


@dataclass(frozen=True)
class Redaction:
    """What was redacted: counts per kind and the sha256 of the original text.
    Never the matched values."""

    counts: tuple[tuple[str, int], ...]
    sha256: str

    @property
    def total(self) -> int:
        return sum(n for _, n in self.counts)

    def count(self, kind: str) -> int:
        return dict(self.counts).get(kind, 0)

    def to_dict(self) -> dict[str, object]:
        return {"counts": dict(self.counts), "sha256": self.sha256, "total": self.total}


@dataclass(frozen=True)
class Redacted:
    text: str
    record: Redaction


def _compile_extra(name: str, regex: str) -> Rule:
    if not isinstance(name, str) or not KIND_NAME_RE.fullmatch(name):
        raise ValueError(
            f"redaction pattern {name!r}: name must match {KIND_NAME_RE.pattern} "
            "(lowercase, digits, underscore)"
        )
    try:
        pattern = re.compile(regex)
    except (re.error, TypeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"redaction pattern {name!r}: invalid regex: {msg}") from None
    if pattern.fullmatch("") is not None:
        raise ValueError(f"redaction pattern {name!r}: matches the empty string")
    return Rule(name, pattern)


def _longest_valid_prefix(rule: Rule, text: str, start: int, end: int) -> int | None:
    """End of the longest valid match at `start` shorter than a greedy one that failed.

    A greedy match can swallow its neighbour: "+14155552671  020 7946 0958"
    is two phone numbers, not one of 21 digits. The shorter match must end on
    a digit that no digit follows in the text itself.
    """
    assert rule.validate is not None
    for stop in range(end - 1, start, -1):
        if not text[stop - 1].isdigit() or text[stop : stop + 1].isdigit():
            continue
        if rule.pattern.fullmatch(text, start, stop) and rule.validate(text[start:stop]):
            return stop
    return None


@dataclass(frozen=True)
class Redactor:
    """Redacts text with `rules` (the defaults unless built otherwise)."""

    rules: tuple[Rule, ...] = field(default=DEFAULT_RULES)

    @classmethod
    def build(cls, extra_patterns: Mapping[str, str] | None = None) -> Redactor:
        """The default rules plus `extra_patterns` (kind name -> regex). An extra
        kind may reuse a built-in name to add a rule to that kind. Invalid
        names or regexes raise ValueError naming the pattern."""
        extra = tuple(_compile_extra(n, r) for n, r in (extra_patterns or {}).items())
        return cls(DEFAULT_RULES + extra)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.kind for r in self.rules))

    def _spans(self, text: str) -> list[tuple[int, int, str]]:
        protected = [m.span() for m in PLACEHOLDER_RE.finditer(text)]

        def touches_placeholder(start: int, end: int) -> bool:
            return any(start < pe and ps < end for ps, pe in protected)

        candidates: list[tuple[int, int, int, str]] = []
        for order, rule in enumerate(self.rules):
            has_value = "value" in rule.pattern.groupindex
            for m in rule.pattern.finditer(text):
                start, end = m.span("value") if has_value else m.span()
                if start < 0 or end <= start:
                    continue
                if rule.validate is not None and not rule.validate(text[start:end]):
                    shorter = _longest_valid_prefix(rule, text, start, end)
                    if shorter is None:
                        continue
                    end = shorter
                if touches_placeholder(start, end):
                    continue
                candidates.append((start, -(end - start), order, rule.kind))
        candidates.sort()
        spans: list[tuple[int, int, str]] = []
        for start, neg_len, _, kind in candidates:
            end = start - neg_len
            if spans and start < spans[-1][1]:
                # Overlaps the current winner: absorb it so nothing leaks.
                ws, we, wk = spans[-1]
                spans[-1] = (ws, max(we, end), wk)
            else:
                spans.append((start, end, kind))
        return spans

    def redact(self, text: str) -> Redacted:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        spans = self._spans(text)
        parts: list[str] = []
        counts: dict[str, int] = {}
        pos = 0
        for start, end, kind in spans:
            parts.append(text[pos:start])
            parts.append(placeholder(kind))
            counts[kind] = counts.get(kind, 0) + 1
            pos = end
        parts.append(text[pos:])
        record = Redaction(tuple(sorted(counts.items())), digest)
        return Redacted("".join(parts), record)


DEFAULT_REDACTOR = Redactor()


def redact(text: str) -> Redacted:
    """Redact with the default rules."""
    return DEFAULT_REDACTOR.redact(text)
