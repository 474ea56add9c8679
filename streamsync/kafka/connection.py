"""Connecting to Kafka: bootstrap servers with TLS and SASL, validated, secrets never shown.

Every client streamsync opens outside Faust (streamsync/kafka/clients.py) connects with a
`KafkaConnection` or, for a plaintext broker, a bare bootstrap string.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from aiokafka.helpers import create_ssl_context
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from streamsync.contract.envelope import describe

CONNECT_TIMEOUT = 30.0

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

# Environment variables for every security setting; a secret may also come from a file (`<VAR>_FILE`).
SECURITY_ENV = {
    "security_protocol": "STREAMSYNC_KAFKA_SECURITY_PROTOCOL",
    "sasl_mechanism": "STREAMSYNC_KAFKA_SASL_MECHANISM",
    "sasl_username": "STREAMSYNC_KAFKA_SASL_USERNAME",
    "sasl_password": "STREAMSYNC_KAFKA_SASL_PASSWORD",
    "sasl_password_file": "STREAMSYNC_KAFKA_SASL_PASSWORD_FILE",
    "ssl_cafile": "STREAMSYNC_KAFKA_SSL_CAFILE",
    "ssl_certfile": "STREAMSYNC_KAFKA_SSL_CERTFILE",
    "ssl_keyfile": "STREAMSYNC_KAFKA_SSL_KEYFILE",
    "ssl_key_password": "STREAMSYNC_KAFKA_SSL_KEY_PASSWORD",
    "ssl_key_password_file": "STREAMSYNC_KAFKA_SSL_KEY_PASSWORD_FILE",
}
# A secret and the file it may be read from: set through either, never both.
SECRET_FILES = {"sasl_password": "sasl_password_file", "ssl_key_password": "ssl_key_password_file"}
SASL_PROTOCOLS = {"SASL_PLAINTEXT", "SASL_SSL"}
TLS_PROTOCOLS = {"SSL", "SASL_SSL"}


class BrokerUnavailable(RuntimeError):
    """The Kafka cluster could not be reached: raised at start-up with the address tried."""


class KafkaConfigError(ValueError):
    """Kafka connection settings that cannot work; the message names the setting and never a secret."""


class KafkaSecurity(BaseModel):
    """How streamsync authenticates to Kafka and encrypts the connection (docs/security.md).

    Secrets are `SecretStr`: repr, str and validation errors show `**********`. Files are checked
    when the settings are read, so a wrong path or password fails at start-up, not at first use.
    """

    # Validation errors would otherwise quote the input, passwords included.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: str | None = Field(default=None, description="read into sasl_password")
    ssl_cafile: str | None = Field(default=None, description="CA bundle (PEM) for the brokers' certificates")
    ssl_certfile: str | None = Field(default=None, description="client certificate (PEM), for mutual TLS")
    ssl_keyfile: str | None = Field(default=None, description="the client certificate's private key (PEM)")
    ssl_key_password: SecretStr | None = None
    ssl_key_password_file: str | None = Field(default=None, description="read into ssl_key_password")

    @field_validator("security_protocol", mode="before")
    @classmethod
    def _protocol_name(cls, value: Any) -> Any:
        return value.strip().upper().replace("-", "_") if isinstance(value, str) else value

    @field_validator("sasl_mechanism", mode="before")
    @classmethod
    def _mechanism_name(cls, value: Any) -> Any:
        return value.strip().upper().replace("_", "-") if isinstance(value, str) else value

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = {k: v for k, v in data.items() if v not in (None, "")}
        for secret, file_key in SECRET_FILES.items():
            if file_key not in data:
                continue
            if secret in data:
                raise ValueError(f"{secret} and {file_key} are both set: give one")
            path = Path(str(data[file_key]))
            try:
                # A file written by `echo` or a secrets manager ends with a newline that is not part of the secret.
                data[secret] = path.read_text().rstrip("\r\n")
            except OSError as error:
                raise ValueError(f"{file_key}: cannot read {path}: {error.strerror or error}") from None
        return data

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSecurity:
        protocol = self.security_protocol
        sasl = {"sasl_mechanism": self.sasl_mechanism, "sasl_username": self.sasl_username}
        if protocol in SASL_PROTOCOLS:
            missing = [name for name, value in sasl.items() if not value]
            if self.sasl_password is None or not self.sasl_password.get_secret_value():
                missing.append("sasl_password (or sasl_password_file)")
            if missing:
                raise ValueError(f"security_protocol {protocol} needs {', '.join(missing)}")
        else:
            given = [name for name, value in {**sasl, "sasl_password": self.sasl_password}.items() if value]
            if given:
                raise ValueError(
                    f"{', '.join(given)} set but security_protocol is {protocol}: use SASL_SSL or SASL_PLAINTEXT"
                )
        tls = {
            "ssl_cafile": self.ssl_cafile,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
            "ssl_key_password": self.ssl_key_password,
        }
        if protocol not in TLS_PROTOCOLS:
            given = [name for name, value in tls.items() if value]
            if given:
                raise ValueError(f"{', '.join(given)} set but security_protocol is {protocol}: use SSL or SASL_SSL")
            return self
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = tls[name]
            if path and not os.path.isfile(str(path)):
                raise ValueError(f"{name}: no such file {path}")
        if self.ssl_keyfile and not self.ssl_certfile:
            raise ValueError("ssl_keyfile set without ssl_certfile: give the client certificate too")
        if self.ssl_key_password and not self.ssl_certfile:
            raise ValueError("ssl_key_password set without ssl_certfile and ssl_keyfile")
        key_pem = Path(self.ssl_keyfile or self.ssl_certfile).read_text(errors="replace") if self.ssl_certfile else ""
        if self.ssl_certfile and "PRIVATE KEY" not in key_pem:
            raise ValueError(f"{'ssl_keyfile' if self.ssl_keyfile else 'ssl_certfile'} holds no private key")
        if "ENCRYPTED" in key_pem and self.ssl_key_password is None:
            raise ValueError("the client key is encrypted: set ssl_key_password (or ssl_key_password_file)")
        self.ssl_context()  # a bad PEM file or key password fails here, with the setting named
        return self

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for SSL and SASL_SSL (the brokers' certificate and host name are verified)."""
        if self.security_protocol not in TLS_PROTOCOLS:
            return None
        try:
            context = create_ssl_context(cafile=self.ssl_cafile)
        except (ssl.SSLError, OSError) as error:
            raise ValueError(f"ssl_cafile {self.ssl_cafile} is not a PEM CA bundle: {_ssl_reason(error)}") from None
        if self.ssl_certfile:
            key_password = self.ssl_key_password.get_secret_value() if self.ssl_key_password else None
            try:
                # Never OpenSSL's interactive prompt: an encrypted key without its password fails instead.
                context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile, key_password or _no_password)
            except (ssl.SSLError, OSError) as error:
                raise ValueError(
                    f"ssl_certfile/ssl_keyfile cannot be loaded (a PEM certificate and its key; "
                    f"ssl_key_password if the key is encrypted): {_ssl_reason(error)}"
                ) from None
        return context

    def aiokafka_auth(self) -> dict[str, Any]:
        """The security keyword arguments of aiokafka's clients."""
        auth: dict[str, Any] = {"security_protocol": self.security_protocol}
        context = self.ssl_context()
        if context is not None:
            auth["ssl_context"] = context
        if self.security_protocol in SASL_PROTOCOLS:
            assert self.sasl_password is not None  # checked by _consistent
            auth.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password.get_secret_value(),
            )
        return auth

    def faust_credentials(self) -> Any:
        """Faust's `broker_credentials`: faust hands the same protocol, mechanism and context to aiokafka."""
        import faust

        context = self.ssl_context()
        if self.security_protocol in SASL_PROTOCOLS:
            assert self.sasl_password is not None
            # With an ssl_context faust uses SASL_SSL, without one SASL_PLAINTEXT.
            return faust.SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password.get_secret_value(),
                ssl_context=context,
                mechanism=self.sasl_mechanism,
            )
        if context is not None:
            return faust.SSLCredentials(context)
        return None

    def describe(self) -> dict[str, Any]:
        """What a log line may say about the connection: never a password."""
        shown: dict[str, Any] = {"protocol": self.security_protocol}
        if self.security_protocol in SASL_PROTOCOLS:
            shown.update(mechanism=self.sasl_mechanism, user=self.sasl_username)
        if self.security_protocol in TLS_PROTOCOLS:
            shown.update(cafile=self.ssl_cafile or "system CAs")
            if self.ssl_certfile:
                shown["certfile"] = self.ssl_certfile
        return shown

    def secrets(self) -> list[str]:
        """The secret values, to strip from any text shown to a user."""
        return [s.get_secret_value() for s in (self.sasl_password, self.ssl_key_password) if s is not None]


def _no_password() -> str:
    return ""


def _ssl_reason(error: BaseException) -> str:
    if isinstance(error, ssl.SSLError):
        return str(error.reason or error)
    if isinstance(error, OSError):
        return str(error.strerror or error)
    return str(error)


class KafkaConnection(KafkaSecurity):
    """Where the Kafka cluster is and how to connect to it: what every helper here takes."""

    bootstrap: str = Field(min_length=1, description="host:port[,host:port...]")

    @field_validator("bootstrap")
    @classmethod
    def _servers(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        bad = [s for s in servers if not s.rpartition(":")[2].isdigit()]
        if not servers or bad:
            raise ValueError(f"bootstrap must be host:port[,host:port...], not {value!r}")
        return ",".join(servers)

    @classmethod
    def of(cls, bootstrap: str, security: KafkaSecurity | Mapping[str, Any] | None = None) -> KafkaConnection:
        """`bootstrap` with the given security settings (PLAINTEXT when none); KafkaConfigError when they are wrong."""
        if isinstance(security, KafkaSecurity):
            # Validated already: its secrets are read, so their files are not read a second time.
            fields = security.model_dump(exclude_none=True, exclude=set(SECRET_FILES.values()))
            fields.update({k: v.get_secret_value() for k, v in fields.items() if isinstance(v, SecretStr)})
        else:
            fields = dict(security or {})
        try:
            return cls.model_validate({**fields, "bootstrap": bootstrap})
        except ValidationError as error:
            raise KafkaConfigError(f"Kafka connection settings are invalid: {describe(error)}") from None

    @classmethod
    def from_env(
        cls, bootstrap: str, config: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> KafkaConnection:
        """`bootstrap` with security from `config` (kafka_security), overridden by STREAMSYNC_KAFKA_*."""
        return cls.of(bootstrap, security_with_env(config, environ))

    @property
    def servers(self) -> list[str]:
        """The bootstrap servers, one per item."""
        return self.bootstrap.split(",")

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for any aiokafka client: servers and security."""
        return {"bootstrap_servers": self.bootstrap, **self.aiokafka_auth()}

    def describe(self) -> dict[str, Any]:
        """What a log line may say about the connection: never a password."""
        return {"bootstrap": self.bootstrap, **super().describe()}

    def redact(self, text: str) -> str:
        """`text` with every secret of this connection masked."""
        for secret in self.secrets():
            if secret:
                text = text.replace(secret, "**********")
        return text

    def __str__(self) -> str:
        # Messages that named the bootstrap string keep doing so.
        return self.bootstrap


def security_with_env(
    config: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Security settings from `config`, each overridden by its STREAMSYNC_KAFKA_* variable when that is set.

    A secret from the environment (value or `_FILE`) replaces both forms of it in `config`.
    """
    environ = os.environ if environ is None else environ
    merged = dict(config or {})
    from_env = {key: environ[var] for key, var in SECURITY_ENV.items() if environ.get(var)}
    for secret, file_key in SECRET_FILES.items():
        if secret in from_env or file_key in from_env:
            merged.pop(secret, None)
            merged.pop(file_key, None)
    merged.update(from_env)
    return merged


def as_connection(kafka: KafkaConnection | str) -> KafkaConnection:
    """A connection as given, or a plaintext one to a bootstrap string."""
    return kafka if isinstance(kafka, KafkaConnection) else KafkaConnection.of(kafka)


def describe_error(error: BaseException) -> str:
    """A connection failure as one line, naming refused credentials and TLS failures as such."""
    from aiokafka.errors import AuthenticationFailedError, SaslAuthenticationFailed, UnsupportedSaslMechanismError

    text = str(error).strip()
    if isinstance(error, SaslAuthenticationFailed | AuthenticationFailedError):
        return f"authentication failed: {text}"
    if isinstance(error, UnsupportedSaslMechanismError):
        return f"SASL mechanism refused: {text}"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {error.verify_message or text}"
    if isinstance(error, ssl.SSLError):
        return f"TLS handshake failed: {text}"
    if isinstance(error, TimeoutError):
        return "timed out"
    name = type(error).__name__
    return text if text.startswith(name) else f"{name}: {text}" if text else name
