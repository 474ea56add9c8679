"""A throwaway certificate authority for tests, made with the `openssl` command line.

The broker's certificate names 127.0.0.1 and localhost (clients verify the host name); the client
certificate is for mutual TLS. Every key is PEM, as Kafka's `ssl.keystore.type=PEM` takes them.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

KEY_PASSWORD = "client-key-secret"


@dataclass(frozen=True)
class Pki:
    """Paths of one test's CA, broker and client certificates and keys (all PEM)."""

    ca: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    # The client key again, encrypted with KEY_PASSWORD.
    client_key_encrypted: Path


def _openssl(*args: str | Path) -> None:
    result = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, check=False, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(map(str, args))} failed: {result.stderr}")


def _signed(home: Path, ca: Path, ca_key: Path, name: str, extensions: str) -> tuple[Path, Path]:
    """A key and a certificate for `name`, signed by the CA, valid for two days."""
    key, csr, cert, ext = (home / f"{name}.{suffix}" for suffix in ("key", "csr", "pem", "ext"))
    ext.write_text(extensions)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={name}")
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-days", "2", "-extfile", ext, "-out", cert,
    )  # fmt: skip
    return cert, key


def make_pki(home: Path) -> Pki:
    """A CA, a broker certificate for 127.0.0.1/localhost and a client certificate, under `home`."""
    home.mkdir(parents=True, exist_ok=True)
    ca, ca_key = home / "ca.pem", home / "ca.key"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
        "-days", "2", "-subj", "/CN=streamsync test CA",
    )  # fmt: skip
    server_cert, server_key = _signed(
        home, ca, ca_key, "broker", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    )
    client_cert, client_key = _signed(home, ca, ca_key, "streamsync-client", "extendedKeyUsage=clientAuth\n")
    encrypted = home / "streamsync-client.encrypted.key"
    _openssl("pkey", "-in", client_key, "-aes256", "-passout", f"pass:{KEY_PASSWORD}", "-out", encrypted)
    return Pki(ca, ca_key, server_cert, server_key, client_cert, client_key, encrypted)
