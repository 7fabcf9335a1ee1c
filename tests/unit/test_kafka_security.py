"""Kafka client security settings: what every client is built with, and clear errors."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from events.kafka_security import KafkaSecurity
from govstream.errors import UsageError
from govstream.settings import load


def test_plaintext_by_default() -> None:
    assert KafkaSecurity().client_options() == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_options_carry_the_mechanism_credentials_and_a_verifying_context() -> None:
    security = KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", "alice", "secret")
    options = security.client_options()
    context = options.pop("ssl_context")
    assert options == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "alice", "sasl_plain_password": "secret",
    }  # fmt: skip
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    creds = security.faust_credentials()
    assert (creds.username, creds.mechanism.value) == ("alice", "SCRAM-SHA-512")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"protocol": "SASL_PLAINTEXT"}, "needs a SASL mechanism, a username and a password"),
        ({"protocol": "SSL", "ca_file": Path("/no/ca.pem")}, "ca_file /no/ca.pem: no such file"),
        ({"protocol": "SSL", "ca_file": Path("/etc/hostname")}, "TLS material"),
        ({"cert_file": Path("/etc/hostname")}, "needs its key"),
    ],
)
def test_bad_security_is_one_clear_error(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KafkaSecurity(**fields)  # type: ignore[arg-type]


def test_a_bad_security_setting_names_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOVSTREAM_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(UsageError, match=r"Kafka security \(GOVSTREAM_KAFKA_\*\): SASL_SSL needs"):
        load()
