"""Two requests Slack sends that the bot must read as Slack means them: the certificate check of a
slash command's URL (`ssl_check`), a message shortcut on a monitoring bot's alert, whose words are
in its attachments rather than its text, and a /call from a Slack Connect user of another team."""

from __future__ import annotations

import pytest

from bot.oncall.escalation_form import ESCALATE_MESSAGE_SHORTCUT_ID
from bot.standins.slack import (
    message_shortcut_payload,
    sign,
    slash_command_body,
    slash_command_payload,
)
from tests.conftest import POLICY_NO_REPEAT_QUESTION, SIGNING_SECRET, BotFactory
from tests.follow_helpers import FULL, history
from tests.escalations import CHANNEL, reason_block, start
from tests.interactions import interact

ALERT = [{
    "fallback": "[FIRING] db-primary unreachable",
    "pretext": "Alertmanager",
    "title": "[FIRING:1] DatabaseDown",
    "text": "db-primary unreachable for 5m",
    "fields": [{"title": "severity", "value": "critical"}],
}]


@pytest.mark.parametrize("signed", [True, False])
async def test_ssl_check_is_answered_as_bolt_answers_it(
    bot_factory: BotFactory, signed: bool
) -> None:
    bot = await bot_factory("http")
    body = b"ssl_check=1&token=verification-token"
    headers = sign(body, SIGNING_SECRET) if signed else {}
    async with bot.http.post(bot.events_url, data=body, headers=headers) as response:
        assert response.status == 200
        assert await response.text() == ""
    assert not bot.evo.outgoing_posts


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_the_reason_quotes_an_alert_with_only_attachments(
    bot_factory: BotFactory, mode: str
) -> None:
    bot, _ = await start(bot_factory, mode)
    message = bot.slack.add_message(CHANNEL, "", user="U0ALERTBOT")
    before = len(bot.slack.calls_to("views.open"))
    await interact(bot, message_shortcut_payload(
        callback_id=ESCALATE_MESSAGE_SHORTCUT_ID, channel_id=CHANNEL, message_ts=message.ts,
        message_text="", message_attachments=ALERT, response_url=bot.slack.response_url(),
        user_id="U0ADMIN", trigger_id=bot.slack.new_trigger_id(),
    ))
    opened = (await bot.slack.wait_for_calls("views.open", before + 1))[-1]
    reason = reason_block(opened.params["view"])["element"]["initial_value"]
    assert "[FIRING:1] DatabaseDown" in reason
    assert "db-primary unreachable for 5m" in reason
    assert "severity: critical" in reason
    assert not reason.startswith("“”")


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_a_slack_connect_users_call_is_in_the_host_workspaces_history(
    bot_factory: BotFactory, mode: str
) -> None:
    bot = await bot_factory(mode, policy=POLICY_NO_REPEAT_QUESTION)
    # A Manager from another organisation's team, calling from the shared channel.
    fields = dict(text=f"{FULL} escalation", user_id="U0LEAD1", team_id="T0PARTNER",
                  response_url=bot.slack.response_url(), trigger_id="91.connect")
    if mode == "socket":
        await bot.slack.send_envelope("slash_commands", slash_command_payload(**fields))
    else:
        await bot.post_signed(slash_command_body(**fields))
    await bot.evo.wait_for_posts(1)
    await bot.settle()
    answer = await history(bot, user_id="U0ADMIN")  # the host workspace's administrator
    assert "<@U0LEAD1>" in answer["text"]
