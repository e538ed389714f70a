"""What every check of `callbot check` works with: findings, the shared Checkup, the fixes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.app import create_slack_client, slack_session
from bot.config import Policy, Settings
from bot.evovoice.catalog import Catalog
from bot.evovoice.client import AuthStatus, EvoVoiceClient
from bot.ops.findings import Finding

WAITING = "not checked"  # a skipped check's detail starts so when it waits on an earlier ✗

SETTING_FIXES = {
    "SLACK_BOT_TOKEN": "copy the Bot User OAuth Token (xoxb-…) from the Slack app's OAuth & "
    "Permissions page into .env or the environment",
    "SLACK_APP_TOKEN": "create an app-level token with the connections:write scope (Basic "
    "Information → App-Level Tokens), or leave it empty for HTTP mode",
    "SLACK_SIGNING_SECRET": "copy the Signing Secret from the Slack app's Basic Information page, "
    "or set SLACK_APP_TOKEN to use Socket Mode",
    "EVOVOICE_USERNAME": "set the bot's own Evo Voice login (a user holding the Manager role)",
    "EVOVOICE_PASSWORD": "set the password of the bot's Evo Voice login",
}


@dataclass
class Checkup:
    """What the checks share; each check fills in what later ones need."""

    overrides: dict[str, Any] = field(default_factory=dict)
    settings: Settings | None = None
    policy: Policy | None = None
    policy_path: Path | None = None
    identity: AsyncSlackResponse | None = None
    auth_status: AuthStatus | None = None
    login_has_role: bool = False
    account_id: str | None = None
    catalog: Catalog | None = None
    _http: aiohttp.ClientSession | None = None
    _slack: AsyncWebClient | None = None
    _evo: EvoVoiceClient | None = None

    def slack(self) -> AsyncWebClient:
        assert self.settings is not None
        if self._slack is None:
            self._http = slack_session()
            self._slack = create_slack_client(self.settings, self._http)
        return self._slack

    def evo(self) -> EvoVoiceClient:
        assert self.settings is not None
        if self._evo is None:
            self._evo = EvoVoiceClient(
                self.settings.evovoice_url,
                self.settings.evovoice_username,
                self.settings.evovoice_password.get_secret_value(),
                timeout=httpx.Timeout(self.settings.evovoice_timeout, connect=5.0),
                retry_backoff=self.settings.evovoice_retry_seconds,
            )
        return self._evo

    async def close(self) -> None:
        if self._evo is not None:
            await self._evo.aclose()
        if self._http is not None:
            await self._http.close()


Check = Callable[[Checkup], Awaitable[list[Finding]]]


def count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"
