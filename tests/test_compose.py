"""docs/compose.replicas.yaml, checked without Docker: what it sets is what the bot reads."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from bot.config import Settings, load_settings
from bot.runtime import ACK_GRACE_SECONDS, SHUTDOWN_GRACE_SECONDS
from bot.storage.database import POSTGRESQL, dialect_of

ROOT = Path(__file__).parent.parent
COMPOSE = ROOT / "docs" / "compose.replicas.yaml"

# The longest a bot takes to stop: requests in flight (grace), Socket Mode acks, the HTTP server,
# then chains pausing at a safe point (grace again).
LONGEST_STOP = 2 * SHUTDOWN_GRACE_SECONDS + ACK_GRACE_SECONDS + 5


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def bots() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose()["services"].items() if name.startswith("bot")}


def seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", text)
    assert match, text
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


def test_two_bots_share_the_postgresql_service() -> None:
    services = compose()["services"]
    db = services["db"]["environment"]
    assert len(bots()) == 2
    for name, bot in bots().items():
        url = bot["environment"]["DATABASE_URL"]
        assert dialect_of(url) == POSTGRESQL, name
        parts = urlsplit(url)
        assert parts.hostname == "db" and parts.port == 5432
        assert (parts.username, parts.password, parts.path) == (
            db["POSTGRES_USER"], db["POSTGRES_PASSWORD"], "/" + db["POSTGRES_DB"]
        )
        assert bot["depends_on"]["db"]["condition"] == "service_healthy"


def test_every_variable_set_is_a_setting_and_valid() -> None:
    known = {name.upper() for name in Settings.model_fields}
    for name, bot in bots().items():
        env = bot["environment"]
        assert set(env) <= known, f"{name}: {set(env) - known}"
        settings = load_settings(
            _env_file=None, slack_bot_token="xoxb-1", slack_app_token="xapp-1",
            evovoice_username="bot@example.com", evovoice_password="pw",
            **{key.lower(): value for key, value in env.items()},
        )
        assert settings.lease_seconds <= 15


def test_the_stop_grace_outlasts_the_bots_own_shutdown() -> None:
    for name, bot in bots().items():
        assert seconds(bot["stop_grace_period"]) >= LONGEST_STOP, name
