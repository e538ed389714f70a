"""A certificate authority of the stand-ins' own and a certificate it signed for 127.0.0.1, so
that they serve HTTPS and wss:// as Slack and Evo Voice do (`server_context`), to a client told to
trust that authority (`SSL_CERT_FILE=ca_file(folder)`, as a deployment behind a proxy that
inspects HTTPS is). The tests use it (tests/tls.py), and so does the benchmark (`--tls`).

Made with the `openssl` command (Debian's). Elliptic-curve keys (P-256), valid for two days, with
the extensions strict verification asks for: a CA's key usage, key identifiers, the IP address as
the subject alternative name."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
_LEAF_EXTENSIONS = """\
subjectAltName = IP:127.0.0.1
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(folder: Path) -> Path:
    """Write the authority's certificate and the server's certificate and key into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", *_KEY, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=callbot stand-ins CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)
    _openssl("req", *_KEY, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=127.0.0.1",
             cwd=folder)
    (folder / "leaf.ext").write_text(_LEAF_EXTENSIONS)
    _openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "leaf.pem", "-days", "2", "-extfile", "leaf.ext",
             cwd=folder)
    return folder


def ca_file(folder: Path) -> str:
    """The authority's certificate: what a client told to trust it loads (`SSL_CERT_FILE`)."""
    return str(folder / "ca.pem")


def server_context(folder: Path) -> ssl.SSLContext:
    """What a stand-in serves HTTPS with: the certificate for 127.0.0.1 and its key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "leaf.pem", folder / "leaf.key")
    return context
