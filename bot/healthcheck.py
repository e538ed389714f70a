"""`python -m bot.healthcheck`: exit 0 when the bot in this container answers `GET /healthz`.

The container's HEALTHCHECK runs it (the slim image has no curl). It probes liveness, not
readiness: an unreachable Slack is no reason to restart the bot.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_SECONDS = 4.0


def healthy(port: str) -> bool:
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError):  # 503 (HTTPError) included
        return False


def main() -> int:
    return 0 if healthy(os.environ.get("PORT") or "3000") else 1


if __name__ == "__main__":
    sys.exit(main())
