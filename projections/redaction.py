"""Redaction of content fields before they reach turn memory or ClickHouse. Pure.

Issue 5, item 3: emails, phone numbers, card numbers, API keys and bearer
tokens (plus configurable patterns) are replaced by `[REDACTED:<kind>]`. The
built-in kinds also cover AWS secrets (`aws_secret`), PEM private key blocks
(`private_key`), US social security numbers (`ssn`), IBANs (`iban`) and
passwords in URLs (`url_credentials`). The redaction is recorded
(`Redaction`: counts per kind and a sha256 of the original text, so the same
input can be recognised later) but the raw matched values are never stored
anywhere in the result.

Overlaps: every rule proposes spans; they are ordered by start, then by length
(longest first), then by rule order. The earliest, longest span names the
redaction; any later span that overlaps it is absorbed into it (the union is
redacted under the winner's kind), so no fragment of a losing match survives.

Idempotence: text already of the form `[REDACTED:<kind>]` is protected; no span
that touches a placeholder is redacted, and no built-in rule can match the
characters a placeholder leaves behind (`[`, `]`, `:` and lowercase words).

Speed: a rule may name literals of which its every match contains at least
one (`needs`), or a least number of digits its match holds within one number
(`min_digits`, see NUMBER_CHARS); a text that lacks them is not scanned with
that rule. These are necessary conditions only, so they never change what is
redacted, just how often a regex runs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from itertools import pairwise

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


# A number as the digit rules see it: digits joined by whitespace, dots, dashes
# and parentheses (every character a card, phone or SSN pattern may hold).
NUMBER_CHARS = r"[\d\s().\-\u2013\u2014]"
_NOT_DIGITS = str.maketrans("", "", " \t\n\r\f\v().-\u2013\u2014")


@lru_cache(maxsize=16)
def _numbers_of(length: int) -> re.Pattern[str]:
    return re.compile(rf"\d{NUMBER_CHARS}{{{max(length - 1, 0)},}}")


def _longest_number(text: str, shortest: int) -> int:
    """The most digits in one number (a run of NUMBER_CHARS starting with a
    digit), counting only numbers of `shortest` characters or more; 0 if there
    is none. An upper bound: a Unicode space counts as a digit."""
    runs = _numbers_of(shortest).findall(text)
    return max(len(run.translate(_NOT_DIGITS)) for run in runs) if runs else 0


def _card_ok(s: str) -> bool:
    d = _digits(s)
    return 13 <= len(d) <= 19 and luhn_ok(d)


def _intl_phone_ok(s: str) -> bool:
    # E.164 allows at most 15 digits; fewer than 8 is a short code, not a number.
    return 8 <= len(_digits(s)) <= 15


def _national_phone_ok(s: str) -> bool:
    return 9 <= len(_digits(s)) <= 12


def _nanp_ok(s: str) -> bool:
    # North American numbers: the area code's middle digit is never 9 (reserved)
    # and neither area code nor exchange is an N11 service code. The 32-bit
    # integer limits have the shape but are counters and ids far more often.
    d = _digits(s)[-10:]
    return d not in _INTEGER_LIMITS and d[1] != "9" and d[1:3] != "11" and d[4:6] != "11"


_INTEGER_LIMITS = frozenset({"2147483647", "2147483648", "4294967295", "4294967296"})

# ISO 13616 registry: country code -> IBAN length (SEPA countries and the
# other registered ones). An IBAN must have its country's exact length.
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27,
    "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


def iban_ok(s: str) -> bool:
    """Country length and the ISO 13616 mod-97 check (spaces and dashes allowed)."""
    compact = s.replace(" ", "").replace("-", "").upper()
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _case_digit_changes(s: str) -> int:
    """How often, between two adjacent alphanumerics, the class (upper, lower,
    digit) changes. Symbols are skipped: a `/` is not randomness."""

    def cls(ch: str) -> int:
        return 0 if ch.isupper() else 1 if ch.islower() else 2 if ch.isdigit() else 3

    return sum(1 for a, b in pairwise(s) if cls(a) != cls(b) and cls(a) < 3 and cls(b) < 3)


def _aws_secret_shape_ok(s: str) -> bool:
    # A standalone AWS secret is 30 random bytes in base64: upper, lower, digits
    # and `/` or `+` all occur (the last in 72% of keys), and between adjacent
    # alphanumerics the class changes about 23 times (fewer than 11 in 1 key of
    # 10,000; AWS's documented example has 12). Paths and URL tails of exactly
    # 40 characters (/home/User1/Projects/MyApp/src/Components: 7) change far
    # less often, because words are runs of one case.
    return (
        any(c.isupper() for c in s)
        and any(c.islower() for c in s)
        and any(c.isdigit() for c in s)
        and ("/" in s or "+" in s)
        and _case_digit_changes(s) >= 11
    )


def _json_object_b64(segment: str) -> bool:
    # The first bytes of a base64url JSON object: `{`, optional whitespace, then
    # `"` (a key) or `}` (empty object).
    head = segment[: min(len(segment), 12) // 4 * 4]
    try:
        raw = base64.urlsafe_b64decode(head)
    except (binascii.Error, ValueError):
        return False
    if raw[:1] != b"{":
        return False
    return raw[1:].lstrip(b" \t\r\n")[:1] in (b"", b'"', b"}")


def _jwt_ok(s: str) -> bool:
    header, payload = s.split(".")[:2]
    return _json_object_b64(header) and _json_object_b64(payload)


def _basic_credentials_ok(s: str) -> bool:
    try:
        decoded = base64.b64decode(s + "=" * (-len(s) % 4), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return False
    return ":" in decoded and decoded.isprintable()


def _url_password_ok(s: str) -> bool:
    # `http://host:8080?mail=a@b.example` is a port and a query, not a password.
    return re.match(r"\d{1,5}[?#]", s) is None


@dataclass(frozen=True)
class Rule:
    """One pattern for one kind. If the pattern has a group named `value`,
    only that group is redacted (the key name or auth scheme stays readable);
    a match in which `value` took no part proposes nothing, so a rule can
    consume text it must leave alone.

    `needs` and `min_digits` are screens, necessary conditions for any match:
    a text containing none of `needs` (compared casefolded when `fold`), or
    no number (NUMBER_CHARS) of `min_digits` digits, is not scanned."""

    kind: str
    pattern: re.Pattern[str]
    validate: Callable[[str], bool] | None = None
    needs: tuple[str, ...] = ()
    fold: bool = False
    min_digits: int = 0


def _password_ok(value: str) -> bool:
    """A password-like value: several distinct characters, not a mask of one."""
    return len(set(value.lower()) - set("*x.")) >= 4


def _rule(
    kind: str,
    regex: str,
    validate: Callable[[str], bool] | None = None,
    *,
    needs: tuple[str, ...] = (),
    fold: bool = False,
    min_digits: int = 0,
) -> Rule:
    return Rule(kind, re.compile(regex), validate, needs, fold, min_digits)


# Token characters for bearer tokens (RFC 6750 b64token) and generic key values.
_TOKEN = r"[A-Za-z0-9\-._~+/]"

# PEM private keys. The label covers RSA, EC, DSA, OPENSSH, ENCRYPTED, PGP (a
# "BLOCK") and plain PKCS#8. The body may use real line breaks, JSON-escaped
# ones (`\n` in a service-account file) or spaces (a key flattened into an env
# variable), and encrypted keys carry `Proc-Type:` / `DEK-Info:` headers. Lines
# may be quoted (`> ` in a mail, `# ` in a config comment), and a sloppy copy
# may have lost a dash of the five.
_PEM_BEGIN = r"-{3,}BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-{3,}"
_PEM_END = r"-{3,}END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-{3,}"
_PEM_CHAR = r"(?:(?!-+BEGIN )[A-Za-z0-9+/=\s\\:,.>#-])"
_PEM_BREAK = r"(?:[ \t]*(?:\r?\n|\\r\\n|\\n))+[ \t>#]*"
_PEM_HEADER = r"(?:Proc-Type|DEK-Info|Version|Comment|Hash|Charset)"
# A body line is base64 (taken whole: possessive) not followed on its line by
# a short word, so the first line of prose after a truncated body ("The paste
# stopped here") is not one.
_PEM_LINE = r"[A-Za-z0-9+/]++=*+(?![ \t]+(?![A-Za-z0-9+/]{16})\S)"
_PEM_BODY = (
    rf"(?:[A-Za-z0-9+/]+=*)?(?:{_PEM_BREAK}(?:{_PEM_HEADER}: [^\r\n\\]*|{_PEM_LINE})"
    rf"|[ \t]+[A-Za-z0-9+/]{{16,}}=*)*"
)

# Credentials in a URL: `scheme://user:password@host`. The host is a dotted
# name, an IPv4 address, a bracketed IPv6 address or a single label (`cache`).
# The password runs to the last `@` before whitespace or `/` that is followed
# by a host, so `@`, `#`, `?`, `&`, `$` and `!` inside it are all covered.
_URL_HOST = r"(?:\[[0-9A-Fa-f:.]+\]|[\w-]+(?:\.[\w-]+)*)(?![\w@-])"


def _url_userinfo(group: str | None) -> str:
    """`://user:password@` before a host, the password in `group`; without a
    group, the user information of any URL, password or not (`ssh://git@...`)."""
    password = rf":(?P<{group}>[^\s/]+)" if group else r"(?::[^\s/]+)?"
    return rf"://(?<=[A-Za-z0-9]://)[^\s:/@]*{password}@(?={_URL_HOST})"


# local@domain.tld with an alphabetic TLD (any script, or punycode `xn--`).
# Local part and labels may be Unicode (jürgen@bücher.de). No apostrophe in
# the local part, though RFC 5322 allows one: in `VAR='ops@example.com'` the
# name and quote would be taken too. A numeric "TLD" is required not to match,
# so npm/pip specifiers like pkg@1.2.3 and decorators (@property, no local
# part) are left alone.
_EMAIL = (
    r"(?<![\w.%+-])\w[\w.%+-]*@[^\W_](?:[\w-]*[^\W_])?"
    r"(?:\.[^\W_](?:[\w-]*[^\W_])?)*\.(?:[^\W\d_]{2,24}|xn--[a-z0-9-]{1,59})(?![\w-])"
)

# 40 characters of the base64 alphabet standing alone: the shape of an AWS
# secret access key. Not part of a longer base64 run, a token or a data URI.
_B64_40 = r"[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=_-])"

# A pattern whose first element is a lookbehind is tried at every position of
# the text; several below therefore start with a one-character lookahead of what
# their match starts with (`(?=\d)`), which changes nothing matched but lets
# the engine reject the other positions at once (2-3x faster per rule). The
# IBAN rule goes further: `[A-Z](?<![\w-][A-Z])` is "an uppercase letter not
# preceded by a word character or dash" written letter first, so the engine
# jumps from uppercase letter to uppercase letter.
DEFAULT_RULES: tuple[Rule, ...] = (
    # --- private_key --------------------------------------------------------
    # The whole block from BEGIN to END. Without an END line (a truncated
    # paste), from BEGIN to the end of the base64 body: lines of base64 or
    # headers separated by line breaks, or 16+ base64 characters after spaces,
    # so a prose sentence after the body is not swallowed. A body never
    # crosses another BEGIN line, so two keys stay two redactions.
    _rule(
        "private_key",
        rf"{_PEM_BEGIN}(?:{_PEM_CHAR}*?{_PEM_END}|{_PEM_BODY})",
        needs=("PRIVATE KEY",),
    ),
    # --- url_credentials ----------------------------------------------------
    # Only the password is redacted; scheme, user and host stay readable. It
    # comes before email and phone so a password that looks like either (or
    # begins one) is counted as what it is.
    _rule("url_credentials", _url_userinfo("value"), _url_password_ok, needs=("://",)),
    # --- bearer_token -------------------------------------------------------
    # `Bearer <token>` in any case. Only the token is redacted, the scheme stays
    # so a reader still sees an Authorization header was there. The token must
    # be 8+ characters and contain a digit: prose such as "the bearer
    # instrument" or "bearer bonds" is left alone.
    _rule(
        "bearer_token",
        rf"(?i)(?<![A-Za-z0-9])bearer\s+(?P<value>(?=[A-Za-z\-._~+/]*\d){_TOKEN}{{8,}}=*)",
        needs=("bearer",),
        fold=True,
    ),
    # The other Authorization schemes: Basic carries base64 of user:password
    # (the validator decodes it and wants printable text with a colon, so
    # "basic building blocks" stays), Token and ApiKey an opaque token, which
    # must be 8+ characters with a digit, as for Bearer.
    _rule(
        "bearer_token",
        r"(?i)(?<![A-Za-z0-9])basic\s+(?P<value>[A-Za-z0-9+/]{6,}={0,2})(?![A-Za-z0-9+/=])",
        _basic_credentials_ok,
        needs=("basic",),
        fold=True,
    ),
    _rule(
        "bearer_token",
        r"(?i)authorization[\"']?\s*[:=]\s*[\"']?(?:token|apikey)\s+"
        rf"(?P<value>(?=[A-Za-z\-._~+/]*\d){_TOKEN}{{8,}}=*)",
        needs=("authorization",),
        fold=True,
    ),
    # JWTs: three dot-separated base64url parts, header and payload JSON
    # objects. `{"` encodes as `eyJ`, but `{ "` is `eyA`, `{\n` is `ewo`, `{\r`
    # `ew0` and `{\t` `ewk`: both parts start with `ey` or `ew`, and the
    # validator decodes their first bytes and requires `{` then optional
    # whitespace then `"` or `}`, so prose (eyeball.eyewitness.com) and base64
    # blobs are not taken. The signature may be empty (alg "none"); an empty
    # payload (`{}`, base64 `e30`) is not taken: no claims, nothing to hide.
    _rule(
        "bearer_token",
        r"(?<![A-Za-z0-9_-])e[yw][A-Za-z0-9_-]{5,}\.e[yw][A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
        _jwt_ok,
        needs=(".ey", ".ew"),
    ),
    # --- api_key ------------------------------------------------------------
    # Vendor prefixes. Each is anchored on a non-alphanumeric left edge so words
    # that merely end in the prefix ("task-force-...", "desk-...") do not match,
    # and each requires a long random tail so a bare "sk-" or "AKIA" is ignored.
    # OpenAI / Anthropic style `sk-...` (incl. sk-proj-, sk-ant-).
    _rule("api_key", r"(?<![A-Za-z0-9_-])sk-[A-Za-z0-9_-]{20,}", needs=("sk-",)),
    # Stripe secret / publishable / restricted keys, live and test.
    _rule(
        "api_key",
        r"(?<![A-Za-z0-9_])(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}",
        needs=("_live_", "_test_"),
    ),
    # Stripe webhook signing secrets: whsec_ + 32 base64 characters.
    _rule("api_key", r"(?<![A-Za-z0-9_])whsec_[A-Za-z0-9+/=]{24,}", needs=("whsec_",)),
    # AWS access key ids: exactly AKIA + 16 uppercase alphanumerics; the right
    # edge is checked so a longer uppercase identifier is not cut in two.
    _rule("api_key", r"(?<![A-Za-z0-9])AKIA[0-9A-Z]{16}(?![0-9A-Za-z])", needs=("AKIA",)),
    # GitHub tokens: ghp_/gho_/ghu_/ghs_/ghr_ + 36 chars, fine-grained github_pat_.
    _rule(
        "api_key",
        r"(?<![A-Za-z0-9_])gh[pousr]_[A-Za-z0-9]{36,}",
        needs=("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
    ),
    _rule("api_key", r"(?<![A-Za-z0-9_])github_pat_[A-Za-z0-9_]{22,}", needs=("github_pat_",)),
    # Slack tokens: xoxb-, xoxa-, xoxp-, xoxr-, xoxs-, xoxo-, refresh xoxe- and
    # app-level xapp- tokens.
    _rule(
        "api_key",
        r"(?<![A-Za-z0-9_])(?:xox[abeoprs]|xapp)-[A-Za-z0-9-]{10,}",
        needs=("xox", "xapp-"),
    ),
    # Slack incoming webhooks and workflow triggers: the path after the host is
    # the credential (team, bot and secret); the host stays readable.
    _rule(
        "api_key",
        r"hooks\.slack\.com/(?:services|workflows|triggers)/(?P<value>[A-Za-z0-9_/-]{20,})",
        needs=("hooks.slack.com/",),
    ),
    # GitLab personal/project access tokens (glpat-), npm automation and
    # publish tokens (npm_), PyPI upload tokens (pypi- + a macaroon whose first
    # bytes always encode "pypi.org"), SendGrid keys (SG.<22>.<43>).
    _rule("api_key", r"(?<![A-Za-z0-9_-])glpat-[A-Za-z0-9_-]{20,}", needs=("glpat-",)),
    _rule("api_key", r"(?<![A-Za-z0-9_])npm_[A-Za-z0-9]{36}(?![A-Za-z0-9])", needs=("npm_",)),
    _rule("api_key", r"(?<![A-Za-z0-9_-])pypi-AgE[A-Za-z0-9_-]{50,}", needs=("pypi-AgE",)),
    _rule(
        "api_key",
        r"(?<![A-Za-z0-9_-])SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])",
        needs=("SG.",),
    ),
    # Google API keys: AIza + 35 base64url characters, exactly.
    _rule(
        "api_key",
        r"(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])",
        needs=("AIza",),
    ),
    # Generic `api_key = value` / `"apiKey": "value"` / `API-KEY: value`. Only
    # the value is redacted. The value must be 8+ token characters, so
    # "api key: none" or "api_key=xxx" placeholders in docs stay readable.
    _rule(
        "api_key",
        rf"(?i)(?<![A-Za-z0-9])api[_-]?key[\"']?\s*[:=]\s*[\"']?(?P<value>{_TOKEN}{{8,}})",
        needs=("api",),
        fold=True,
    ),
    # --- aws_secret ---------------------------------------------------------
    # A secret access key named as such (aws_secret_access_key=..., the
    # "SecretAccessKey" of STS JSON, "AWS Secret Access Key [None]:" of `aws
    # configure`, "aws secret is ..."): 40 or more base64 characters within 40
    # characters of the name on the same line, whatever their shape (a key
    # with junk appended is still the key).
    _rule(
        "aws_secret",
        r"(?i)(?<![a-z0-9])(?:aws[\W_]{0,3}secret(?:[\W_]{0,3}access)?(?:[\W_]{0,3}key)?"
        r"|secret[\W_]?access[\W_]?key)[^\n]{0,40}?(?<![A-Za-z0-9/+])"
        r"(?P<value>[A-Za-z0-9/+]{40,}={0,2})(?![A-Za-z0-9/+=_-])",
        needs=("aws", "access"),
        fold=True,
    ),
    # Session tokens (STS "SessionToken", aws_session_token, X-Amz-Security-
    # Token): 100+ base64 characters after the name.
    _rule(
        "aws_secret",
        r"(?i)(?<![a-z0-9])(?:aws[\W_]{0,3}session[\W_]{0,3}token|sessiontoken"
        r"|security[\W_]?token)[^\n]{0,20}?(?<![A-Za-z0-9/+=])(?P<value>[A-Za-z0-9/+=]{100,})",
        needs=("token",),
        fold=True,
    ),
    # Standalone: exactly 40 characters with the AWS shape (see
    # _aws_secret_shape_ok). A sha1 or git commit (40 lowercase hex) has no
    # uppercase and no `/`/`+`; base64 right after `base64,` is a data URI.
    _rule(
        "aws_secret",
        rf"(?=[A-Za-z0-9/+])(?<![A-Za-z0-9/+_-])(?<!base64,){_B64_40}",
        _aws_secret_shape_ok,
        needs=("/", "+"),
    ),
    # --- card ---------------------------------------------------------------
    # 13-19 digits, either contiguous or in the printed shapes (4-4-4-4[-1..3],
    # Amex 4-6-5, Diners 4-6-4) separated by spaces or dashes, mixed or not
    # (4111-1111 1111 1111 is how people retype a card). Every candidate must
    # pass the Luhn checksum, which rejects 90% of random long numbers (order
    # ids, trace ids). Not preceded by a digit or a dot and not followed by a
    # digit or a decimal part, so the fraction digits of a float or a slice of
    # a longer number are never taken. The first digit (major industry
    # identifier) is 2-6: Mastercard 2/5, Amex/Diners/JCB 3, Visa 4, Discover/
    # UnionPay/Maestro 6. A 1 (UATP airline cards, rare) is what every
    # millisecond and microsecond unix timestamp starts with until 2033.
    _rule(
        "card",
        r"(?=[2-6])(?<![\d.])(?:\d{13,19}|\d{4}[ -]\d{4}[ -]\d{4}[ -]\d{4}(?:[ -]\d{1,3})?"
        r"|\d{4}[ -]\d{6}[ -]\d{4,5})(?!\d|[.,]\d)",
        _card_ok,
        min_digits=13,
    ),
    # --- iban ---------------------------------------------------------------
    # Country code, two check digits, then the 11-30 characters of the BBAN:
    # compact (DE89370400440532013000), printed in groups of four (GB82 WEST
    # 1234 5698 7654 32) or grouped any other way with single spaces or dashes.
    # The country code must be uppercase, as printed: allowing "de89" would
    # make every lowercase letter a place to try a match and cost the scan
    # three times as much (the BBAN may be in any case). The validator requires
    # the country's registered length and the mod-97 check, so product codes,
    # ids and words (1 in 97 would pass the checksum alone) are left alone; a
    # match that ran on into the next word fails it and the longest valid
    # prefix is taken instead. The digit groups of a printed IBAN look like a
    # phone number, which the earlier-starting IBAN span absorbs.
    _rule(
        "iban",
        r"[A-Z](?<![\w-][A-Z])[A-Z]\d{2}(?:[ -]?[A-Za-z0-9]){11,30}(?![\w-])",
        iban_ok,
    ),
    # --- ssn ----------------------------------------------------------------
    # US social security numbers, 3-2-4 digits with one consistent separator
    # (dash, en or em dash, dot or space), under the SSA rules: area not 000,
    # 666 or 9xx, group not 00, serial not 0000. Dates (4-2-2), phones (3-3-4)
    # and ISO weeks do not have this shape. Neither side may continue the number (another digit
    # group, a decimal part, an identifier), so a slice of a longer number or
    # of an id is never taken.
    _rule(
        "ssn",
        r"(?=\d)(?<![\w.+/-])(?<!\d )(?!000|666|9)\d{3}(?P<sep>[-\u2013\u2014. ])"
        r"(?!00)\d{2}(?P=sep)(?!0000)\d{4}(?!\w|[.,]\d|(?P=sep)\d)",
        min_digits=9,
    ),
    # Nine plain digits are only an SSN when named as one ("SSN: 123456789").
    _rule(
        "ssn",
        r"(?i)(?<![a-z0-9])(?:ssn|social[ _-]?security(?:[ _-]?(?:number|num|no\.?|#))?)"
        r"\W{0,4}(?P<value>(?!000|666|9)\d{3}(?!00)\d{2}(?!0000)\d{4})(?!\w|[.,]\d)",
        needs=("ssn", "social"),
        fold=True,
        min_digits=9,
    ),
    # --- email --------------------------------------------------------------
    # The first alternative consumes the user information of a URL without
    # proposing anything: `ssh://git@github.com` names a login, not a mailbox,
    # and in `redis://u:pw@cache.example.com` the password is url_credentials.
    _rule("email", rf"{_url_userinfo(None)}|(?P<value>{_EMAIL})", needs=("@",)),
    # --- phone --------------------------------------------------------------
    # International: `+` then 8-15 digits (E.164 bounds), with optional spaces,
    # dots, dashes or parentheses between digit groups. The leading `+` is what
    # makes an unseparated digit run a phone number rather than an amount.
    _rule(
        "phone",
        r"\+(?<![\w+]\+)[1-9][\d ().-]{6,24}\d(?![\d])",
        _intl_phone_ok,
        needs=("+",),
    ),
    # National forms: three groups with one consistent separator (415-555-2671,
    # 415.555.2671, 020 7946 0958) or a parenthesised area code ((415)
    # 555-2671), 9-12 digits in all. Two separators and a 3-4 digit middle
    # group are required, so plain 4-6 digit numbers, years, dates (2024-01-15,
    # 15.01.2024), versions (1.2.3) and IPv4 addresses are not phones. The
    # left edge excludes word characters, dots and dashes so the tail of an
    # identifier (ORD-2024-...) or of a dotted number is not taken; a digit
    # group with the same separator on either side means the three groups are
    # a slice of a longer sequence (a card, an IBAN), not a phone number.
    _rule(
        "phone",
        r"(?=[\d(])(?<![\w.-])(?<!\d )"
        r"(?:\d{2,4}([ .-])\d{3,4}\1\d{3,4}|\(\d{2,4}\)\s?\d{3,4}[ .-]\d{3,4})(?!\d|[.-]\d|\1\d)",
        _national_phone_ok,
        min_digits=9,
    ),
    # French-style national numbers: 0X XX XX XX XX.
    _rule(
        "phone",
        r"(?=0)(?<![\w.-])0[1-9](?:([ .])\d{2})(?:\1\d{2}){3}(?!\d|[.-]\d)",
        min_digits=10,
    ),
    # North American numbers with the trunk prefix 1: 1-800-555-0199,
    # 1.800.555.0199, 1 (800) 555-0199. Area code and exchange start with 2-9
    # (NANP), which dates and versions beginning with 1 rarely do.
    _rule(
        "phone",
        r"(?=1)(?<![\w.+/-])1(?:([ .-])[2-9]\d{2}\1[2-9]\d{2}\1\d{4}"
        r"|[ .-]?\([2-9]\d{2}\)[ .-]?[2-9]\d{2}[ .-]\d{4})(?!\w|[.-]\d)",
        _nanp_ok,
        min_digits=11,
    ),
    # Ten plain digits in the NANP shape NXX NXX XXXX (4155552671). Unix
    # timestamps (10 digits until 2033) start with 1, so they never match; ids
    # are excluded by the edges: no word character, dot, sign, dash, slash, #,
    # $ or @ before, no word character, decimal part or -suffix after, and so
    # never a slice of a longer digit run.
    _rule(
        "phone",
        r"(?=[2-9])(?<![\w.+/#$@-])[2-9]\d{2}[2-9]\d{6}(?!\w|[.,]\d|-\w)",
        _nanp_ok,
        min_digits=10,
    ),
    # --- password -----------------------------------------------------------
    # A secret named by its key in an assignment: password=..., DB_PASSWORD='...',
    # "client_secret": "...", pwd: ..., auth_token=... . Only the value is
    # redacted. It must be 8+ characters and hold a digit or a symbol, so prose
    # ("the password: required field", "secret: enabled") stays readable, and
    # a mask ("********", "xxxxxxxx") is no secret. Last in the list: a vendor
    # key or AWS secret at the same span keeps its own kind.
    _rule(
        "password",
        # The name may have a prefix (DB_PASSWORD, client_secret): a non-letter
        # before it is enough, no scan over the prefix.
        r"(?i)(?<![A-Za-z0-9])(?:password|passwd|passphrase|pwd|secret"
        r"|secret[_-]?key|auth[_-]?token|access[_-]?token|private[_-]?token)[\"']?\s*[:=]\s*"
        r"[\"']?(?P<value>(?=[^\s\"',;]*[0-9!#$%&*+/=?@^~-])[^\s\"',;]{8,})",
        _password_ok,
        needs=("pass", "pwd", "secret", "token"),
        fold=True,
    ),
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

    def __hash__(self) -> int:
        # Redactors key caches of redacted text: hash the rules once, not per lookup.
        return self._hash

    @cached_property
    def _hash(self) -> int:
        return hash(self.rules)

    @classmethod
    def build(cls, extra_patterns: Mapping[str, str] | None = None) -> Redactor:
        """The default rules plus `extra_patterns` (kind name -> regex). An extra
        kind may reuse a built-in name to add a rule to that kind. Invalid
        names or regexes raise ValueError naming the pattern."""
        extra = tuple(_compile_extra(n, r) for n, r in (extra_patterns or {}).items())
        return cls(DEFAULT_RULES + extra)

    @cached_property
    def _shortest_number(self) -> int:
        """The fewest digits any rule's `min_digits` asks for (0: none asks)."""
        return min((r.min_digits for r in self.rules if r.min_digits), default=0)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.kind for r in self.rules))

    def spans(self, text: str) -> list[tuple[int, int, str]]:
        """The (start, end, kind) spans `redact` replaces, in text order, without
        redacting (for measurements: which characters a rule covered)."""
        return self._spans(text)

    def _spans(self, text: str) -> list[tuple[int, int, str]]:
        protected = [m.span() for m in PLACEHOLDER_RE.finditer(text)]

        def touches_placeholder(start: int, end: int) -> bool:
            return any(start < pe and ps < end for ps, pe in protected)

        # The screens (Rule.needs, Rule.min_digits) only skip texts a rule cannot
        # match.
        folded = text.casefold()
        digits = _longest_number(text, self._shortest_number)
        candidates: list[tuple[int, int, int, str]] = []
        for order, rule in enumerate(self.rules):
            if digits < rule.min_digits:
                continue
            if rule.needs:
                haystack = folded if rule.fold else text
                for literal in rule.needs:
                    if literal in haystack:
                        break
                else:
                    continue
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
