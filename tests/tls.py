"""A certificate authority of the tests' own, and a certificate it signed for 127.0.0.1: the
stand-ins serve HTTPS and wss:// with it (`server_context`), as Slack and Evo Voice do, and a bot
trusts it through `SSL_CERT_FILE=ca_file()`, as a deployment behind an inspecting proxy would.

Made with the `openssl` command (Debian's, on every machine these tests run on), once a process,
in a folder removed when the process exits. Elliptic-curve keys, valid for two days, with the
extensions strict verification asks for (a CA's key usage, key identifiers, the IP address as a
subject alternative name)."""

from __future__ import annotations

import atexit
import functools
import shutil
import ssl
import subprocess
import tempfile
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


@functools.cache
def _folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="callbot-tests-tls-"))
    atexit.register(shutil.rmtree, folder, True)
    _openssl("req", "-x509", *_KEY, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=callbot tests CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)
    _openssl("req", *_KEY, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=127.0.0.1",
             cwd=folder)
    (folder / "leaf.ext").write_text(_LEAF_EXTENSIONS)
    _openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "leaf.pem", "-days", "2", "-extfile", "leaf.ext",
             cwd=folder)
    return folder


def ca_file() -> str:
    """The CA's certificate: what a client told to trust it loads (`SSL_CERT_FILE`)."""
    return str(_folder() / "ca.pem")


def server_context() -> ssl.SSLContext:
    """What a stand-in serves HTTPS with: the certificate for 127.0.0.1 and its key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(_folder() / "leaf.pem", _folder() / "leaf.key")
    return context
