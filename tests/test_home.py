"""The App Home tab end to end in both modes: who is on call now and next (in the viewer's own time
zone), the viewer's recent pages and calls, and the buttons that open the forms."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.oncall.home_views import HOME_ACTIONS_BLOCK, HOME_CALL_ACTION, HOME_ESCALATE_ACTION
from bot.standins.slack import block_actions_payload, interactive_body, sign
from tests.conftest import SIGNING_SECRET, BotFactory, BotUnderTest
from tests.escalations import (
    escalation_message,
    open_on_message,
    page_of,
    start,
    submit,
)


async def open_home(bot: BotUnderTest, user_id: str) -> dict[str, Any]:
    before = len([c for c in bot.slack.calls_to("views.publish")
                  if c.params.get("user_id") == user_id])
    event = {"type": "app_home_opened", "user": user_id, "channel": "D" + user_id[1:],
             "tab": "home", "event_ts": "1700000000.000100"}
    payload = {"type": "event_callback", "team_id": bot.slack.team_id, "api_app_id": "A0APP",
               "event": event, "event_id": f"Ev{user_id}{before}", "event_time": 1700000000}
    if bot.mode == "socket":
        await bot.slack.send_envelope("events_api", payload)
    else:
        body = json.dumps(payload).encode()
        headers = {**sign(body, SIGNING_SECRET), "Content-Type": "application/json"}
        async with bot.http.post(bot.events_url, data=body, headers=headers) as response:
            assert response.status == 200
    published = (await bot.slack.wait_for_calls(
        "views.publish", before + 1, lambda c: c.params.get("user_id") == user_id))[-1]
    assert published.ok, published.brief()
    return bot.slack.home_views[user_id].view


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_the_home_tab_shows_who_is_on_call_and_my_pages(
    bot_factory: BotFactory, mode: str
) -> None:
    bot, _ = await start(bot_factory, mode)
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    await escalation_message(bot)
    await page_of(bot, "U0ALICE")  # her step has begun
    await bot.settle()

    home = json.dumps(await open_home(bot, "U0ALICE"), ensure_ascii=False)
    assert "*On call now:* <@U0ALICE> · +1 814 ••• 3093 · until <!date^" in home
    assert "*Next:* <@U0BOB>" in home
    assert "<@U0ADMIN> escalated in <#C0OPS> · 📞 going on" in home  # her page
    assert HOME_ESCALATE_ACTION in home and HOME_CALL_ACTION not in home  # no role: no calls

    admin = json.dumps(await open_home(bot, "U0ADMIN"), ensure_ascii=False)
    assert "You escalated in <#C0OPS>" in admin and HOME_CALL_ACTION in admin
    assert "Your recent calls" in admin and "+1 814 ••• 3093" in admin

    bob = json.dumps(await open_home(bot, "U0BOB"), ensure_ascii=False)  # next, not paged yet
    assert "*Next:* " in bob and "escalated in" not in bob  # pages are their own people's

    bot.slack.users["U0GUEST"] = {"is_restricted": True}
    guest = json.dumps(await open_home(bot, "U0GUEST"), ensure_ascii=False)
    assert "On call now" not in guest and HOME_ESCALATE_ACTION not in guest


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_the_escalate_button_opens_the_form(bot_factory: BotFactory, mode: str) -> None:
    bot, _ = await start(bot_factory, mode)
    home = await open_home(bot, "U0DEV")
    before = len(bot.slack.calls_to("views.open"))
    payload = block_actions_payload(
        action_id=HOME_ESCALATE_ACTION, block_id=HOME_ACTIONS_BLOCK, value="escalate",
        view={**home, "id": bot.slack.home_views["U0DEV"].id}, user_id="U0DEV",
        trigger_id=bot.slack.new_trigger_id(),
    )
    if mode == "socket":
        await bot.slack.send_envelope("interactive", payload)
    else:
        await bot.post_signed(interactive_body(payload))
    opened = (await bot.slack.wait_for_calls("views.open", before + 1))[-1]
    assert opened.ok, opened.brief()
    shown = json.dumps(bot.slack.views[opened.response["view"]["id"]].versions[-1],
                       ensure_ascii=False)
    assert "Escalate to on-call" in shown and "Post the escalation in" in shown


async def test_my_recent_calls_are_mine_alone(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")
    await bot.command("+18144043093 escalation", user_id="U0MANAGER")
    await bot.command("+18144043094 escalation", user_id="U0ADMIN")
    await bot.settle()
    admin = json.dumps(await open_home(bot, "U0ADMIN"), ensure_ascii=False)
    assert "Your recent calls" in admin and "+1 814 ••• 3094" in admin
    assert "+1 814 ••• 3093" not in admin  # the Manager's call is theirs to see
