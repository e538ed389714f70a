"""What a call to Slack at start-up that failed means: a setting to fix, or Slack to wait for."""

from __future__ import annotations

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.certificates import FIX as CERTIFICATE_FIX
from bot.certificates import untrusted
from bot.config import ConfigError, DependencyUnavailable


def start_failure(
    exc: SlackApiError | TimeoutError | aiohttp.ClientError, *, method: str, token: str, fix: str,
    url: str,
) -> ConfigError:
    """What a start-up call to Slack (`method`, made with `token`) that failed means: Slack
    refusing the token is a setting to fix, so start-up stops; Slack failing (5xx, 429) or out of
    reach is a dependency to wait for."""
    if isinstance(exc, SlackApiError):
        status, error = exc.response.status_code, exc.response.get("error", "unknown error")
        if status >= 500 or status == 429:
            return DependencyUnavailable(
                [f"SLACK_API_URL: Slack answered {method} with HTTP {status} ({error})"]
            )
        return ConfigError([f"{token}: Slack refused it ({error}); {fix}"])
    refused = untrusted(url, exc)
    if refused is not None:
        return DependencyUnavailable([f"SLACK_API_URL: {refused}; {CERTIFICATE_FIX}"])
    return DependencyUnavailable([f"SLACK_API_URL: cannot reach {url} ({type(exc).__name__})"])


async def check_slack_token(slack: AsyncWebClient, api_url: str) -> AsyncSlackResponse:
    """The bot's identity (`auth.test`), or the start-up failure saying why not."""
    try:
        return await slack.auth_test()
    except (SlackApiError, TimeoutError, aiohttp.ClientError) as exc:
        raise start_failure(
            exc, method="auth.test", token="SLACK_BOT_TOKEN",
            fix="copy the Bot User OAuth Token (xoxb-…) from the app's OAuth & Permissions page",
            url=api_url,
        ) from None
