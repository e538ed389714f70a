"""`python -m bot.healthcheck`: exit 0 when the bot in this container answers `GET /healthz`.

The container's HEALTHCHECK runs it (the slim image has no curl). It probes liveness, not
readiness: an unreachable Slack is no reason to restart the bot.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

TIMEOUT_SECONDS = 4.0
DEFAULT_PORT = "3000"  # bot/config/settings.py's


def healthy(port: str) -> bool:
    url = f"http://127.0.0.1:{port}/healthz"
    # Straight to the bot: a proxy the container names for the bot's own requests (HTTP_PROXY,
    # without NO_PROXY) can't reach this container's loopback, and urlopen would go through it.
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with direct.open(url, timeout=TIMEOUT_SECONDS) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError):  # 503 (HTTPError) included
        return False


def configured_port() -> str:
    """PORT where the bot reads it (bot/config/settings.py): the file PORT_FILE names, else the
    environment, else the working directory's `.env`, whatever the name's case, spaces around it
    dropped; else the default. A PORT only in `.env` (the container's environment left alone)
    was probed at 3000: unhealthy for ever, restarted."""
    environ = {key.upper(): value for key, value in os.environ.items()}
    if environ.get("PORT_FILE"):
        try:
            # A byte order mark, as some editors begin a file with, dropped as the bot drops it.
            return Path(environ["PORT_FILE"]).read_text(encoding="utf-8-sig").strip()
        except (OSError, UnicodeDecodeError):
            return ""  # the bot can't read it either: it never started
    if environ.get("PORT", "").strip():
        return environ["PORT"].strip()
    from dotenv import dotenv_values  # only when needed: this runs every 30 s

    for name, read in dotenv_values(".env").items():
        if name.upper() == "PORT" and read and read.strip():
            return read.strip()
    return DEFAULT_PORT


def main() -> int:
    return 0 if healthy(configured_port()) else 1


if __name__ == "__main__":
    sys.exit(main())
