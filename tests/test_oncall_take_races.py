"""`/call oncall take` racing the rotation's hand-off: the running bot against the stand-ins."""

from __future__ import annotations

import datetime as dt

from bot.standins.slack import ApiCall
from tests.conftest import BotFactory
from tests.escalations import ROSTER
from tests.test_oncall_command import HANDOFF, ask, set_clock


def _admin_profile(call: ApiCall) -> bool:
    return call.params.get("user") == "U0ADMIN"


async def test_a_take_held_across_the_handoff_takes_the_shift_in_effect_as_it_is_written(
    bot_factory: BotFactory,
) -> None:
    # The admin takes Alice's shift a second before it ends; Slack is slow to show their profile
    # (their number), and the hand-off passes meanwhile. Bob's shift begins, and the manager
    # takes it: the channel is told the pager reaches the manager. The admin's take, written
    # last, used to cover Alice's shift, over already, and so hand Bob's back to Bob behind
    # everyone's back: the pager rang Bob, the channel believed it rang the manager.
    bot = await bot_factory("http", policy=ROSTER, slack_timeout=30)
    set_clock(bot, HANDOFF - dt.timedelta(seconds=1))
    bot.slack.users["U0ADMIN"] = {"profile": {"phone": "+1 (814) 404-3099"}}
    profile = bot.slack.hold("users.info", when=_admin_profile)
    await bot.command("oncall take", user_id="U0ADMIN")
    await profile.wait_until_held()

    set_clock(bot, HANDOFF + dt.timedelta(minutes=1))
    await bot.command("oncall take", user_id="U0MANAGER")
    announced = await bot.slack.wait_for_call("chat.postMessage")
    assert "<@U0MANAGER> is now on call instead of <@U0BOB>" in str(announced.params["text"])

    profile.open()
    await bot.settle()
    # The admin's take is of the shift in effect as it is written, Bob's: the manager's.
    status = str((await ask(bot, user_id="U0ADMIN"))["text"])
    assert "On call now:* <@U0ADMIN>" in status, status
    assert "Override: <@U0ADMIN> took the shift from <@U0MANAGER>" in status, status
    last = str(bot.slack.calls_to("chat.postMessage")[-1].params["text"])
    assert "<@U0ADMIN> is now on call instead of <@U0MANAGER>, until Mon 23 Mar" in last, last
