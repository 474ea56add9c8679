"""Kafka connection settings: validation with clear messages, the environment, and secrets kept out of text."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from streamsync.kafka.connection import KafkaConfigError, KafkaConnection, as_connection, security_with_env
from tests.tls import KEY_PASSWORD, Pki, make_pki

SECRET = "s3cr3t-Pa55word"
SCRAM = {
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_username": "streamsync",
    "sasl_password": SECRET,
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _error(security: dict[str, Any]) -> str:
    with pytest.raises(KafkaConfigError) as caught:
        KafkaConnection.of("127.0.0.1:9093", security)
    return str(caught.value)


@pytest.mark.parametrize(
    ("security", "message"),
    [
        ({"security_protocol": "SASL_SSL"}, "SASL_SSL needs sasl_mechanism, sasl_username, sasl_password"),
        ({**SCRAM, "sasl_password": ""}, "SASL_SSL needs sasl_password (or sasl_password_file)"),
        ({**SCRAM, "sasl_mechanism": "GSSAPI"}, "sasl_mechanism: Input should be 'PLAIN', 'SCRAM-SHA-256' or"),
        ({"security_protocol": "TLS"}, "security_protocol: Input should be 'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT'"),
        ({"security_protocol": "SSL", "sasl_username": "u"}, "sasl_username set but security_protocol is SSL"),
        ({"ssl_cafile": "/etc/hostname"}, "ssl_cafile set but security_protocol is PLAINTEXT: use SSL or SASL_SSL"),
        ({**SCRAM, "ssl_cafile": "/no/such/ca.pem"}, "ssl_cafile: no such file /no/such/ca.pem"),
        (
            {**SCRAM, "sasl_password_file": "/no/such/file"},
            "sasl_password and sasl_password_file are both set: give one",
        ),
        ({**SCRAM, "sasl_passwd": SECRET}, "sasl_passwd: Extra inputs are not permitted"),
    ],
)
def test_invalid_settings_are_refused_with_the_setting_named(security: dict[str, Any], message: str) -> None:
    error = _error(security)
    assert message in error
    assert SECRET not in error


def test_a_bootstrap_that_is_not_host_port_is_refused() -> None:
    with pytest.raises(KafkaConfigError, match=r"bootstrap must be host:port\[,host:port\.\.\.\], not 'kafka'"):
        KafkaConnection.of("kafka")


def test_tls_files_are_checked_when_read(pki: Pki, tmp_path: Path) -> None:
    tls = {"security_protocol": "SSL", "ssl_cafile": str(pki.ca)}
    assert "ssl_cafile" in _error({**tls, "ssl_cafile": str(pki.client_key)})  # a key is no CA bundle
    assert "ssl_keyfile set without ssl_certfile" in _error({**tls, "ssl_keyfile": str(pki.client_key)})
    assert "ssl_certfile holds no private key" in _error({**tls, "ssl_certfile": str(pki.client_cert)})
    encrypted = {**tls, "ssl_certfile": str(pki.client_cert), "ssl_keyfile": str(pki.client_key_encrypted)}
    assert "the client key is encrypted: set ssl_key_password" in _error(encrypted)
    wrong = _error({**encrypted, "ssl_key_password": "not-the-password"})
    assert "ssl_certfile/ssl_keyfile cannot be loaded" in wrong and "not-the-password" not in wrong

    mtls = KafkaConnection.of("127.0.0.1:9093", {**encrypted, "ssl_key_password": KEY_PASSWORD})
    assert isinstance(mtls.ssl_context(), ssl.SSLContext)
    # Certificate and key in one file need no ssl_keyfile.
    combined = tmp_path / "client-combined.pem"
    combined.write_text(pki.client_cert.read_text() + pki.client_key.read_text())
    assert KafkaConnection.of("h:1", {**tls, "ssl_certfile": str(combined)}).ssl_certfile == str(combined)


def test_names_are_case_insensitive() -> None:
    connection = KafkaConnection.of(
        "h:1", {**SCRAM, "security_protocol": "sasl_plaintext", "sasl_mechanism": "scram_sha_256"}
    )
    assert (connection.security_protocol, connection.sasl_mechanism) == ("SASL_PLAINTEXT", "SCRAM-SHA-256")


def test_secret_files_are_read_without_their_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text(SECRET + "\n")
    security = {**SCRAM, "security_protocol": "SASL_PLAINTEXT", "sasl_password_file": str(path)}
    del security["sasl_password"]
    connection = KafkaConnection.of("h:1", security)
    assert connection.sasl_password is not None and connection.sasl_password.get_secret_value() == SECRET
    assert "sasl_password_file: cannot read" in _error({**security, "sasl_password_file": str(tmp_path / "none")})


def test_the_environment_overrides_the_configuration_and_a_secret_file_replaces_a_password(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text("from-file")
    config = {**SCRAM, "security_protocol": "SASL_PLAINTEXT"}
    env = {
        "STREAMSYNC_KAFKA_SASL_USERNAME": "other",
        "STREAMSYNC_KAFKA_SASL_PASSWORD_FILE": str(path),
        "STREAMSYNC_KAFKA_SASL_MECHANISM": "",  # empty: not set
    }
    merged = security_with_env(config, env)
    assert merged["sasl_username"] == "other" and merged["sasl_mechanism"] == "SCRAM-SHA-512"
    assert "sasl_password" not in merged
    connection = KafkaConnection.from_env("h:1", config, env)
    assert connection.sasl_password is not None and connection.sasl_password.get_secret_value() == "from-file"
    assert KafkaConnection.from_env("h:1", environ={}).security_protocol == "PLAINTEXT"


def test_secrets_never_show_in_repr_str_logs_or_errors(pki: Pki) -> None:
    connection = KafkaConnection.of("127.0.0.1:9093", {**SCRAM, "ssl_cafile": str(pki.ca)})
    shown = [repr(connection), str(connection), str(connection.describe()), repr(connection.faust_credentials())]
    shown.append(str(connection.model_dump()))
    assert not [text for text in shown if SECRET in text]
    assert connection.describe() == {
        "bootstrap": "127.0.0.1:9093",
        "protocol": "SASL_SSL",
        "mechanism": "SCRAM-SHA-512",
        "user": "streamsync",
        "cafile": str(pki.ca),
    }
    assert connection.redact(f"the broker said {SECRET}") == "the broker said **********"


def test_settings_errors_do_not_quote_a_password(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamsync.settings import ConfigError, StreamsyncSettings

    with pytest.raises(ValueError) as caught:
        StreamsyncSettings.model_validate({"kafka_security": {**SCRAM, "sasl_mechanism": "NOPE"}})
    assert SECRET not in str(caught.value)
    monkeypatch.setenv("STREAMSYNC_KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("STREAMSYNC_KAFKA_SASL_PASSWORD", SECRET)
    with pytest.raises(ConfigError) as refused:
        StreamsyncSettings.load()
    assert "kafka_security: sasl_password set but security_protocol is SSL" in str(refused.value)
    assert SECRET not in str(refused.value) and "\n" not in str(refused.value)


def test_settings_give_the_worker_its_connection(monkeypatch: pytest.MonkeyPatch, pki: Pki) -> None:
    from streamsync.settings import StreamsyncSettings

    for name, value in {**SCRAM, "ssl_cafile": str(pki.ca)}.items():
        monkeypatch.setenv(f"STREAMSYNC_KAFKA_{name.upper()}", value)
    monkeypatch.setenv("STREAMSYNC_KAFKA_BOOTSTRAP", "127.0.0.1:9093, 127.0.0.1:9094")
    settings = StreamsyncSettings.load()
    assert SECRET not in repr(settings)
    connection = settings.kafka()
    assert connection.servers == ["127.0.0.1:9093", "127.0.0.1:9094"]
    assert connection.describe()["user"] == "streamsync"


def test_aiokafka_and_faust_get_the_same_protocol_mechanism_and_context(pki: Pki) -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    scram = KafkaConnection.of("127.0.0.1:9093", {**SCRAM, "ssl_cafile": str(pki.ca)})
    direct = scram.aiokafka_auth()
    via_faust = credentials_to_aiokafka_auth(scram.faust_credentials())
    for auth in (direct, via_faust):
        assert auth["security_protocol"] == "SASL_SSL"
        assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
        assert auth["sasl_plain_username"] == "streamsync" and auth["sasl_plain_password"] == SECRET
        assert isinstance(auth["ssl_context"], ssl.SSLContext)

    plain = KafkaConnection.of("h:1", {**SCRAM, "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN"})
    assert credentials_to_aiokafka_auth(plain.faust_credentials())["security_protocol"] == "SASL_PLAINTEXT"
    assert "ssl_context" not in plain.aiokafka_auth()

    mtls = KafkaConnection.of(
        "h:1",
        {
            "security_protocol": "SSL",
            "ssl_cafile": str(pki.ca),
            "ssl_certfile": str(pki.client_cert),
            "ssl_keyfile": str(pki.client_key),
        },
    )
    assert credentials_to_aiokafka_auth(mtls.faust_credentials())["security_protocol"] == "SSL"
    assert mtls.faust_credentials().context.verify_mode == ssl.CERT_REQUIRED
    assert as_connection("h:1").faust_credentials() is None
    assert as_connection("h:1").client_kwargs() == {"bootstrap_servers": "h:1", "security_protocol": "PLAINTEXT"}


def test_commands_without_nautobot_take_security_from_the_environment() -> None:
    from streamsync.cli import main

    result = CliRunner().invoke(
        main, ["lag"], env={"STREAMSYNC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "STREAMSYNC_KAFKA_SASL_PASSWORD": SECRET}
    )
    assert result.exit_code != 0
    assert "SASL_SSL needs sasl_mechanism, sasl_username" in result.output
    assert SECRET not in result.output
