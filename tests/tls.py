"""The stand-ins' certificate authority (bot/standins/tls.py) for this test process: made once,
in a folder removed when the process exits."""

from __future__ import annotations

import atexit
import functools
import shutil
import ssl
import tempfile
from pathlib import Path

from bot.standins import tls


@functools.cache
def _folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="callbot-tests-tls-"))
    atexit.register(shutil.rmtree, folder, True)
    return tls.make_certificates(folder)


def ca_file() -> str:
    return tls.ca_file(_folder())


def server_context() -> ssl.SSLContext:
    return tls.server_context(_folder())
