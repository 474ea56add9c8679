"""streamsync against a secured broker: SASL_SSL with SCRAM-SHA-512, and mutual TLS.

One private broker (deploy/kafka.sh) for the module, with a throwaway CA: a SASL_SSL listener
whose users are SCRAM credentials written when its storage is formatted, and an SSL listener that
requires a client certificate. Its inter-broker and controller listeners stay plaintext.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import PrivateKafka, Stream, free_port, wait_for
from tests.integration.state_helpers import publish, vlan_event
from tests.tls import KEY_PASSWORD, Pki, make_pki

pytestmark = pytest.mark.integration

USER = "streamsync-worker"
PASSWORD = "Scram-Pa55-" + uuid.uuid4().hex[:12]
# A PLAIN user on the same listener: Kafka's PlainLoginModule takes its users from the JAAS line.
PLAIN_USER, PLAIN_PASSWORD = "streamsync-plain", "Plain-Pa55-" + uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class SecureKafka:
    """The module's secured broker: where its listeners are and the CA that signed its certificate."""

    kafka: PrivateKafka
    sasl_ssl_port: int
    mtls_port: int
    pki: Pki

    def scram(
        self, stream: Stream, password: str = PASSWORD, mechanism: str = "SCRAM-SHA-512", user: str = USER, **env: str
    ) -> Stream:
        """`stream` over SASL_SSL, SCRAM-SHA-512 as USER (or another mechanism and user), trusting the test CA."""
        return dataclasses.replace(
            stream,
            bootstrap=f"127.0.0.1:{self.sasl_ssl_port}",
            extra_env={
                **stream.extra_env,
                "STREAMSYNC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "STREAMSYNC_KAFKA_SASL_MECHANISM": mechanism,
                "STREAMSYNC_KAFKA_SASL_USERNAME": user,
                "STREAMSYNC_KAFKA_SASL_PASSWORD": password,
                "STREAMSYNC_KAFKA_SSL_CAFILE": str(self.pki.ca),
                **env,
            },
        )

    def mtls(self, stream: Stream, **env: str) -> Stream:
        """`stream` over TLS with the test's client certificate (its key encrypted)."""
        return dataclasses.replace(
            stream,
            bootstrap=f"127.0.0.1:{self.mtls_port}",
            extra_env={
                **stream.extra_env,
                "STREAMSYNC_KAFKA_SECURITY_PROTOCOL": "SSL",
                "STREAMSYNC_KAFKA_SSL_CAFILE": str(self.pki.ca),
                "STREAMSYNC_KAFKA_SSL_CERTFILE": str(self.pki.client_cert),
                "STREAMSYNC_KAFKA_SSL_KEYFILE": str(self.pki.client_key_encrypted),
                "STREAMSYNC_KAFKA_SSL_KEY_PASSWORD": KEY_PASSWORD,
                **env,
            },
        )


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    home = tmp_path_factory.mktemp("secure-kafka")
    pki = make_pki(home / "pki")
    keystore = home / "pki" / "broker-keystore.pem"  # Kafka's PEM keystore: the key, then the certificate
    keystore.write_text(pki.server_key.read_text() + pki.server_cert.read_text())
    properties = home / "security.properties"
    kafka = PrivateKafka(
        home / "kafka-home",
        {
            "STREAMSYNC_KAFKA_EXTRA_PROPERTIES": str(properties),
            "STREAMSYNC_KAFKA_SCRAM_CREDENTIALS": f"SCRAM-SHA-512=[name={USER},password={PASSWORD}]",
        },
    )
    secure = SecureKafka(kafka, free_port(), free_port(), pki)
    plain, controller = f"127.0.0.1:{kafka.port}", f"127.0.0.1:{kafka.controller_port}"
    sasl_ssl, mtls = f"127.0.0.1:{secure.sasl_ssl_port}", f"127.0.0.1:{secure.mtls_port}"
    properties.write_text(
        f"listeners=PLAINTEXT://{plain},CONTROLLER://{controller},SASL_SSL://{sasl_ssl},SSL://{mtls}\n"
        f"advertised.listeners=PLAINTEXT://{plain},CONTROLLER://{controller},SASL_SSL://{sasl_ssl},SSL://{mtls}\n"
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL\n"
        "sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN\n"
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required;\n"
        "listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule "
        f'required user_{PLAIN_USER}="{PLAIN_PASSWORD}";\n'
        f"ssl.keystore.type=PEM\nssl.keystore.location={keystore}\n"
        f"ssl.truststore.type=PEM\nssl.truststore.location={pki.ca}\n"
        "listener.name.ssl.ssl.client.auth=required\n"
    )
    try:
        kafka.start()
        yield secure
    except BaseException:
        print(kafka.log()[-6000:])
        raise
    finally:
        kafka.stop()


def _lag(stream: Stream) -> tuple[int | None, str]:
    """Total lag of the stream's group on its events topic (None before its first commit), and the output."""
    result = stream.cli("lag", "--json", "--group", stream.group)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    committed = [r for r in rows if r["topic"] == f"{stream.prefix}.ipam.events"]
    total = sum(r["lag"] for r in committed) if committed else None
    return total, result.stdout + result.stderr


def test_publish_worker_and_lag_over_sasl_ssl_scram(
    secure_kafka: SecureKafka, stream: Stream, start_worker: Any, tmp_path: Path
) -> None:
    from nautobot.ipam.models import VLAN, VLANGroup

    password_file = tmp_path / "kafka-password"
    password_file.write_text(PASSWORD + "\n")
    secured = secure_kafka.scram(stream)
    # publish and lag read the password from a file, the worker from the environment.
    from_file = secure_kafka.scram(
        stream, STREAMSYNC_KAFKA_SASL_PASSWORD="", STREAMSYNC_KAFKA_SASL_PASSWORD_FILE=str(password_file)
    )
    group = f"dc-{uuid.uuid4().hex[:6]}"
    VLANGroup.objects.create(name=group)

    publish(
        from_file,
        tmp_path,
        vlan_event("upsert", 10, group, name="secured"),
        vlan_event("upsert", 11, group, name="scram"),
    )
    outputs: list[str] = []
    worker = start_worker("--source", "ipam", "--batch-timeout", "0.2", "--loglevel", "debug", on=secured)
    wait_for(
        lambda: set(VLAN.objects.filter(vlan_group__name=group).values_list("name", flat=True)) == {"secured", "scram"},
        120,
        "both VLANs in Nautobot",
        worker,
    )
    lag: list[int | None] = []

    def caught_up() -> bool:
        total, output = _lag(from_file)
        lag.append(total)
        outputs.append(output)
        return total == 0

    wait_for(caught_up, 60, "lag 0 on the secured connection", worker)
    assert worker.stop() == 0
    log = worker.output()
    starting = [json.loads(line) for line in log.splitlines() if '"worker starting"' in line]
    assert starting and starting[0]["kafka"] == {
        "bootstrap": secured.bootstrap,
        "protocol": "SASL_SSL",
        "mechanism": "SCRAM-SHA-512",
        "user": USER,
        "cafile": str(secure_kafka.pki.ca),
    }
    assert '"level": "debug"' in log  # debug logging was on
    assert PASSWORD not in log
    assert not [output for output in outputs if PASSWORD in output]


def test_a_wrong_password_fails_at_start_up_naming_the_authentication_failure(
    secure_kafka: SecureKafka, stream: Stream
) -> None:
    wrong = "Wrong-" + uuid.uuid4().hex[:10]
    refused = secure_kafka.scram(stream, password=wrong)
    started = time.monotonic()
    worker = refused.cli("worker", "--source", "ipam", "--loglevel", "debug", timeout=90)
    took = time.monotonic() - started
    assert worker.returncode != 0
    message = worker.stderr.strip().splitlines()[-1]
    assert message.startswith(f"Error: cannot reach Kafka at {refused.bootstrap} (SASL_SSL SCRAM-SHA-512 as {USER!r})")
    assert "authentication failed" in message.lower()
    assert "Traceback" not in worker.stderr
    assert wrong not in worker.stdout + worker.stderr and PASSWORD not in worker.stdout + worker.stderr
    assert took < 45, f"took {took:.1f}s"

    lag = refused.cli("lag")
    assert lag.returncode != 0 and "authentication failed" in lag.stderr.lower() and wrong not in lag.stderr


def test_a_broker_certificate_from_another_ca_is_refused(
    secure_kafka: SecureKafka, stream: Stream, tmp_path: Path
) -> None:
    other = make_pki(tmp_path / "other-ca")
    untrusted = secure_kafka.scram(stream, STREAMSYNC_KAFKA_SSL_CAFILE=str(other.ca))
    result = untrusted.cli("lag")
    assert result.returncode != 0
    assert "TLS certificate verification failed" in result.stderr
    assert "Traceback" not in result.stderr


def test_mutual_tls_with_an_encrypted_client_key(secure_kafka: SecureKafka, stream: Stream, tmp_path: Path) -> None:
    secured = secure_kafka.mtls(stream)
    group = f"dc-{uuid.uuid4().hex[:6]}"
    publish(secured, tmp_path, vlan_event("upsert", 20, group, name="mtls"))
    lag = secured.cli("lag")
    assert lag.returncode == 0, lag.stderr
    assert "no consumer group has committed offsets" in lag.stdout  # reached the broker; nothing committed yet

    # Without a client certificate the broker refuses the connection.
    anonymous = secure_kafka.mtls(
        stream, STREAMSYNC_KAFKA_SSL_CERTFILE="", STREAMSYNC_KAFKA_SSL_KEYFILE="", STREAMSYNC_KAFKA_SSL_KEY_PASSWORD=""
    )
    refused = anonymous.cli("lag")
    assert refused.returncode != 0
    assert f"cannot reach Kafka at {anonymous.bootstrap} (SSL): " in refused.stderr
    assert "if the listener requires client certificates, set ssl_certfile and ssl_keyfile" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_sasl_plain_over_tls(secure_kafka: SecureKafka, stream: Stream, tmp_path: Path) -> None:
    plain = secure_kafka.scram(stream, password=PLAIN_PASSWORD, mechanism="PLAIN", user=PLAIN_USER)
    publish(plain, tmp_path, vlan_event("upsert", 30, "dc-plain", name="plain"))
    lag = plain.cli("lag")
    assert lag.returncode == 0, lag.stderr
    assert PLAIN_PASSWORD not in lag.stdout + lag.stderr

    wrong = secure_kafka.scram(stream, password="not-" + PLAIN_PASSWORD, mechanism="PLAIN", user=PLAIN_USER)
    refused = wrong.cli("lag")
    assert refused.returncode != 0 and "authentication failed" in refused.stderr.lower()
    assert PLAIN_PASSWORD not in refused.stderr
