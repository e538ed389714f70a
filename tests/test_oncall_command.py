"""`/call oncall` and `/call oncall take` end to end: the real bot against the stand-ins."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from bot.standins.slack import ApiCall, slash_command_body
from tests.conftest import BotFactory, BotUnderTest
from tests.database_locks import (
    tables_locked,
    with_short_busy_timeout,
    with_short_lock_timeout,
    write_lock,
)
from tests.databases import POSTGRESQL, on_both_databases
from tests.escalations import IN_ALICES_SHIFT, IN_CAROLS_SHIFT, ROSTER

# Alice's shift ends and Bob's begins: Monday 16 March 09:00 EDT (13:00 UTC).
HANDOFF = dt.datetime(2026, 3, 16, 13, tzinfo=dt.UTC)


async def start(bot_factory: BotFactory, mode: str, at: dt.datetime,
                policy: str = ROSTER) -> BotUnderTest:
    bot = await bot_factory(mode, policy=policy)
    set_clock(bot, at)
    return bot


def set_clock(bot: BotUnderTest, at: dt.datetime) -> None:
    assert bot.runtime.services is not None
    bot.runtime.services.oncall.clock = lambda: at


async def ask(bot: BotUnderTest, text: str = "oncall", **kwargs: str) -> dict[str, object]:
    """Run a command and return the one answer that reached the requester."""
    _, url = await bot.command(text, **kwargs)
    [answer] = await bot.slack.wait_for_response(url)
    await bot.settle()
    return answer


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_oncall_shows_now_and_next_with_masked_numbers(
    bot_factory: BotFactory, mode: str
) -> None:
    bot = await start(bot_factory, mode, IN_ALICES_SHIFT)
    answer = await ask(bot, user_id="U0LEAD1")  # a role through a user group is enough
    assert answer["response_type"] == "ephemeral"
    text = str(answer["text"])
    assert "On call now:* <@U0ALICE> · +1 814 ••• 3093 · until Mon 16 Mar 09:00 EDT" in text
    assert "Next:* <@U0BOB> · +1 814 ••• 3094 · from Mon 16 Mar 09:00 EDT" in text
    assert "Override" not in text
    assert "+18144043093" not in str(answer) and "+18144043094" not in str(answer)
    blocks = str(answer["blocks"])
    assert "monday 09:00 (America/New_York)" in blocks
    assert bot.evo.outgoing_posts == []


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_a_manager_takes_the_shift_until_the_next_handoff(
    bot_factory: BotFactory, mode: str
) -> None:
    bot = await start(bot_factory, mode, IN_ALICES_SHIFT)
    ack, _ = await bot.command("oncall take", user_id="U0MANAGER")
    assert ack.status == 200
    await bot.settle()
    [announcement] = bot.slack.calls_to("chat.postMessage")
    assert announcement.params["channel"] == "C0OPS"
    text = announcement.params["text"]
    assert "<@U0MANAGER> is now on call instead of <@U0ALICE>, until Mon 16 Mar 09:00 EDT" in text
    assert "+1 814 ••• 3090" in text and "+18144043090" not in text
    # Slack shows the blocks (the text is the notification's): whom the pager reaches is there.
    assert ("Escalation calls will ring <@U0MANAGER> · +1 814 ••• 3090."
            in str(announcement.params["blocks"]))

    answer = await ask(bot, user_id="U0ADMIN")
    status = str(answer["text"])
    assert "On call now:* <@U0MANAGER> · +1 814 ••• 3090 · until Mon 16 Mar 09:00 EDT" in status
    assert "Override: <@U0MANAGER> took the shift from <@U0ALICE>" in status
    assert "Next:* <@U0BOB>" in status
    # The blocks are what Slack shows (the text is the notification's): the override is there too.
    blocks = str(answer["blocks"])
    assert ("Override: <@U0MANAGER> took the shift from <@U0ALICE> at Tue 10 Mar 11:00 EDT, "
            "until Mon 16 Mar 09:00 EDT.") in blocks
    assert "until Mon 16 Mar 09:00 EDT" in blocks and "Next:* <@U0BOB>" in blocks

    set_clock(bot, HANDOFF)  # the hand-off ends the override
    status = str((await ask(bot))["text"])
    assert "On call now:* <@U0BOB>" in status and "Override" not in status


async def test_oncall_take_typed_in_full_width_letters_takes_the_shift(
    bot_factory: BotFactory,
) -> None:
    bot = await start(bot_factory, "http", IN_ALICES_SHIFT)
    # Full-width letters, an ideographic space between them, as a CJK input mode types them.
    ack, _ = await bot.command("ｏｎｃａｌｌ　ｔａｋｅ", user_id="U0MANAGER")
    assert ack.status == 200
    await bot.settle()
    [announcement] = bot.slack.calls_to("chat.postMessage")
    assert "<@U0MANAGER> is now on call instead of <@U0ALICE>" in announcement.params["text"]


@on_both_databases
async def test_override_survives_a_restart(bot_factory: BotFactory) -> None:
    first = await start(bot_factory, "http", IN_ALICES_SHIFT)
    await first.command("oncall take", user_id="U0MANAGER")
    await first.settle()
    await first.runtime.stop()

    second = await start(bot_factory, "http", IN_ALICES_SHIFT + dt.timedelta(days=2))
    status = str((await ask(second))["text"])
    assert "On call now:* <@U0MANAGER>" in status
    assert "until Mon 16 Mar 09:00 EDT" in status


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_take_needs_manager_or_administrator(bot_factory: BotFactory, mode: str) -> None:
    bot = await start(bot_factory, mode, IN_ALICES_SHIFT)
    bot.slack.users["U0INTRUDER"] = {"profile": {"phone": "+18144043098"}}
    answer = await ask(bot, "oncall take", user_id="U0INTRUDER")
    assert answer["response_type"] == "ephemeral"
    assert "not allowed to take the on-call shift" in str(answer["text"])
    assert "Manager or SystemAdministrator" in str(answer["text"])
    assert bot.slack.calls_to("chat.postMessage") == []
    assert "On call now:* <@U0ALICE>" in str((await ask(bot))["text"])


async def test_a_guest_may_not_see_the_roster(bot_factory: BotFactory) -> None:
    bot = await start(bot_factory, "http", IN_ALICES_SHIFT)
    bot.slack.users["U0INTRUDER"] = {"is_restricted": True}  # a guest: not a responder
    answer = await ask(bot, user_id="U0INTRUDER")
    assert "not allowed to see who is on call" in str(answer["text"])
    assert "3093" not in str(answer)


async def test_take_is_refused_without_a_phone_number(bot_factory: BotFactory) -> None:
    bot = await start(bot_factory, "http", IN_ALICES_SHIFT)
    answer = await ask(bot, "oncall take", user_id="U0ADMIN")  # not in [people], empty profile
    text = str(answer["text"])
    assert answer["response_type"] == "ephemeral"
    assert "can't take the on-call shift without a phone number" in text
    assert "Slack profile has no phone number" in text
    assert bot.slack.calls_to("chat.postMessage") == []
    assert "On call now:* <@U0ALICE>" in str((await ask(bot))["text"])


async def test_take_with_the_slack_profile_phone(bot_factory: BotFactory) -> None:
    bot = await start(bot_factory, "http", IN_ALICES_SHIFT)
    bot.slack.users["U0ADMIN"] = {"profile": {"phone": "+1 (814) 404-3099"}}
    await bot.command("oncall take", user_id="U0ADMIN")
    await bot.settle()
    [announcement] = bot.slack.calls_to("chat.postMessage")
    assert "<@U0ADMIN> is now on call" in announcement.params["text"]
    assert "+1 814 ••• 3099" in announcement.params["text"]


async def test_the_slack_profile_phone_is_shown_for_someone_not_in_people(
    bot_factory: BotFactory,
) -> None:
    bot = await start(bot_factory, "http", IN_CAROLS_SHIFT)
    bot.slack.users["U0CAROL"] = {"profile": {"phone": "(814) 404-3095"}}
    text = str((await ask(bot))["text"])
    assert "On call now:* <@U0CAROL> · +1 814 ••• 3095 · until Mon 30 Mar 09:00 EDT" in text
    assert "Next:* <@U0ALICE> · +1 814 ••• 3093" in text
    await ask(bot)
    assert [c.params["user"] for c in bot.slack.calls_to("users.info")] == ["U0CAROL"]  # cached


async def test_each_persons_profile_phone_is_their_own(bot_factory: BotFactory) -> None:
    # Profile phones are cached per person: the admin taking Carol's shift is reached on the
    # admin's phone, not on the number just read for Carol.
    bot = await start(bot_factory, "http", IN_CAROLS_SHIFT)
    bot.slack.users["U0CAROL"] = {"profile": {"phone": "(814) 404-3095"}}
    bot.slack.users["U0ADMIN"] = {"profile": {"phone": "(814) 404-3099"}}
    assert "On call now:* <@U0CAROL> · +1 814 ••• 3095" in str((await ask(bot))["text"])
    await bot.command("oncall take", user_id="U0ADMIN")
    await bot.settle()
    [announcement] = bot.slack.calls_to("chat.postMessage")
    assert "Escalation calls will ring <@U0ADMIN> · +1 814 ••• 3099." in announcement.params["text"]
    text = str((await ask(bot))["text"])
    assert "On call now:* <@U0ADMIN> · +1 814 ••• 3099" in text
    assert "took the shift from <@U0CAROL>" in text


async def test_someone_without_a_usable_number_is_flagged(bot_factory: BotFactory) -> None:
    bot = await start(bot_factory, "http", IN_CAROLS_SHIFT)
    text = str((await ask(bot))["text"])
    assert ("On call now:* <@U0CAROL> · ⚠️ no usable phone number (not in [people], and the "
            "Slack profile has no phone number)") in text


async def test_a_redelivered_take_is_announced_once(bot_factory: BotFactory) -> None:
    bot = await start(bot_factory, "http", IN_ALICES_SHIFT)
    body = slash_command_body(text="oncall take", user_id="U0MANAGER",
                              response_url=bot.slack.response_url(), trigger_id="77.88.take")
    assert (await bot.post_signed(body)).status == 200
    assert (await bot.post_signed(body)).status == 200
    await bot.settle()
    assert len(bot.slack.calls_to("chat.postMessage")) == 1


async def test_oncall_without_a_rotation_says_how_to_set_one_up(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")
    text = str((await ask(bot))["text"])
    assert "No on-call rotation is set up" in text and "[oncall]" in text


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_unknown_oncall_words_get_the_usage_in_the_ack(
    bot_factory: BotFactory, mode: str
) -> None:
    bot = await start(bot_factory, mode, IN_ALICES_SHIFT)
    # One word alone too: "takeover" must not read as "show me the roster" (nor as a take).
    for text in ("oncall give U0BOB", "oncall takeover"):
        ack, url = await bot.command(text, user_id="U0MANAGER")
        assert "/call oncall take" in ack.text, text
        await bot.settle()
        assert bot.slack.responses_to(url) == [], text
    assert bot.slack.calls_to("chat.postMessage") == []


async def test_the_same_manager_takes_a_later_shift_too(bot_factory: BotFactory) -> None:
    # A take is deduplicated per invocation (a redelivery), never per person: next week's take
    # by the same manager is a new one, announced and in effect.
    bot = await start(bot_factory, "http", IN_ALICES_SHIFT)
    await bot.command("oncall take", user_id="U0MANAGER")
    await bot.settle()
    set_clock(bot, HANDOFF + dt.timedelta(days=1))  # Bob's week
    await bot.command("oncall take", user_id="U0MANAGER")
    await bot.settle()
    first, second = (c.params["text"] for c in bot.slack.calls_to("chat.postMessage"))
    assert "instead of <@U0ALICE>" in first and "instead of <@U0BOB>" in second
    assert "On call now:* <@U0MANAGER>" in str((await ask(bot))["text"])


async def test_take_with_a_name_after_it_is_not_a_take(bot_factory: BotFactory) -> None:
    # "/call oncall take @bob" reads as handing the shift to Bob: the requester must not take it
    # instead. Only the usage answers, in the ack.
    bot = await start(bot_factory, "http", IN_ALICES_SHIFT)
    for text in ("oncall take <@U0BOB>", "oncall take now"):
        ack, _ = await bot.command(text, user_id="U0MANAGER")
        assert "/call oncall take" in ack.text, text
    await bot.settle()
    assert bot.slack.calls_to("chat.postMessage") == []
    assert "On call now:* <@U0ALICE>" in str((await ask(bot))["text"])


async def test_the_person_on_call_may_take_their_own_shift(bot_factory: BotFactory) -> None:
    policy = ROSTER.replace('Manager = ["U0MANAGER"', 'Manager = ["U0MANAGER", "U0ALICE"')
    bot = await start(bot_factory, "http", IN_ALICES_SHIFT, policy=policy)
    await bot.command("oncall take", user_id="U0ALICE")
    await bot.settle()
    [announcement] = bot.slack.calls_to("chat.postMessage")
    assert "<@U0ALICE> stays on call until Mon 16 Mar 09:00 EDT" in announcement.params["text"]
    # Not "<@U0ALICE> took the shift from <@U0ALICE>".
    status = str((await ask(bot))["blocks"])
    assert ("Override: <@U0ALICE> took their own shift at Tue 10 Mar 11:00 EDT, until Mon 16 Mar "
            "09:00 EDT.") in status, status


async def test_oncall_words_are_read_whatever_their_case(bot_factory: BotFactory) -> None:
    # Like `/call HELP` and `/call History`: a capital letter is not an unknown word.
    bot = await start(bot_factory, "http", IN_ALICES_SHIFT)
    ack, _ = await bot.command("Oncall TAKE", user_id="U0MANAGER")
    assert "/call oncall take" not in ack.text
    await bot.settle()
    [announcement] = bot.slack.calls_to("chat.postMessage")
    assert "<@U0MANAGER> is now on call instead of <@U0ALICE>" in announcement.params["text"]


@pytest.mark.parametrize(
    ("zone", "handoff", "at", "now", "upcoming", "boundary"),
    [
        # Lord Howe skips 02:00–02:29 on Sunday 4 October 2026 (+10:30 → +11): a 02:15 hand-off
        # happens at 02:45 on the new time, and says so.
        ("Australia/Lord_Howe", "sunday 02:15", dt.datetime(2026, 10, 3, 3, tzinfo=dt.UTC),
         "U0BOB", "U0CAROL", "Sun 4 Oct 02:45 +11"),
        # New York has 01:30 twice on Sunday 1 November 2026: the hand-off is the first, EDT.
        ("America/New_York", "sunday 01:30", dt.datetime(2026, 10, 31, 15, tzinfo=dt.UTC),
         "U0CAROL", "U0ALICE", "Sun 1 Nov 01:30 EDT"),
    ],
)
async def test_oncall_tells_a_handoff_on_a_clock_change_night_in_the_teams_zone(
    bot_factory: BotFactory, zone: str, handoff: str, at: dt.datetime, now: str, upcoming: str,
    boundary: str,
) -> None:
    policy = ROSTER.replace('timezone = "America/New_York"',
                            f'timezone = "{zone}"\nhandoff = "{handoff}"')
    bot = await start(bot_factory, "http", at, policy=policy)
    text = str((await ask(bot))["text"])
    assert f"On call now:* <@{now}>" in text and f"until {boundary}" in text
    assert f"Next:* <@{upcoming}>" in text and f"from {boundary}" in text


async def test_a_take_before_the_rotation_begins_is_shown_until_its_first_handoff(
    bot_factory: BotFactory,
) -> None:
    # Until the first hand-off (Monday 6 April) Alice covers; a take on the Wednesday before lasts
    # until that hand-off, and `/call oncall` must say so, not the end of Alice's first shift.
    policy = ROSTER.replace('timezone = "America/New_York"',
                            'timezone = "America/New_York"\nstart = 2026-04-06')
    bot = await start(bot_factory, "http", dt.datetime(2026, 4, 1, 15, tzinfo=dt.UTC),
                      policy=policy)
    await bot.command("oncall take", user_id="U0MANAGER")
    await bot.settle()
    [announcement] = bot.slack.calls_to("chat.postMessage")
    assert "instead of <@U0ALICE>, until Mon 6 Apr 09:00 EDT" in announcement.params["text"]
    text = str((await ask(bot))["text"])
    assert "On call now:* <@U0MANAGER> · +1 814 ••• 3090 · until Mon 6 Apr 09:00 EDT" in text
    assert "Next:* <@U0ALICE> · +1 814 ••• 3093 · from Mon 6 Apr 09:00 EDT" in text


async def test_before_the_rotation_begins_the_footer_says_a_take_lasts_until_it_begins(
    bot_factory: BotFactory,
) -> None:
    # No shift is current before the first hand-off (Monday 6 April): "takes the current shift"
    # would be untrue, and a take then ends where the rotation begins.
    policy = ROSTER.replace('timezone = "America/New_York"',
                            'timezone = "America/New_York"\nstart = 2026-04-06')
    bot = await start(bot_factory, "http", dt.datetime(2026, 4, 1, 15, tzinfo=dt.UTC),
                      policy=policy)
    blocks = str((await ask(bot))["blocks"])
    assert ("The rotation begins Mon 6 Apr 09:00 EDT; `/call oncall take` puts you on call until "
            "then.") in blocks
    assert "current shift" not in blocks
    set_clock(bot, dt.datetime(2026, 4, 6, 13, tzinfo=dt.UTC))  # the rotation has begun
    blocks = str((await ask(bot))["blocks"])
    assert "`/call oncall take` takes the current shift until then." in blocks
    assert "rotation begins" not in blocks


async def test_a_take_in_a_channel_the_bot_cannot_post_in_is_announced_there_all_the_same(
    bot_factory: BotFactory,
) -> None:
    # The team must learn whom the pager reaches: through the command's response_url, in the
    # channel, not only to the person who took the shift.
    bot = await start(bot_factory, "http", IN_ALICES_SHIFT)
    bot.slack.fail("chat.postMessage", "not_in_channel")
    _, url = await bot.command("oncall take", user_id="U0MANAGER", channel_id="G0PRIVATE")
    [answer] = await bot.slack.wait_for_response(url)
    await bot.settle()
    assert answer["response_type"] == "in_channel"
    assert "<@U0MANAGER> is now on call instead of <@U0ALICE>" in str(answer["text"])


async def test_a_take_while_the_database_is_locked_is_refused_in_words(
    bot_factory: BotFactory, database_url: str
) -> None:
    bot = await bot_factory("http", policy=ROSTER,
                            DATABASE_URL=with_short_busy_timeout(database_url))
    set_clock(bot, IN_ALICES_SHIFT)
    with write_lock(bot):
        answer = await ask(bot, "oncall take", user_id="U0MANAGER")
    text = str(answer["text"])
    assert answer["response_type"] == "ephemeral"
    assert "callbot could not write to its database, so the on-call shift was not taken" in text
    assert "Try again in a minute" in text
    assert bot.slack.calls_to("chat.postMessage") == []
    assert "On call now:* <@U0ALICE>" in str((await ask(bot))["text"])
    # Once the database answers, the same command takes the shift (a new invocation).
    await bot.command("oncall take", user_id="U0MANAGER")
    await bot.settle()
    [announcement] = bot.slack.calls_to("chat.postMessage")
    assert "<@U0MANAGER> is now on call instead of <@U0ALICE>" in announcement.params["text"]


async def test_a_take_nobody_in_the_channel_can_hear_is_told_to_the_taker(
    bot_factory: BotFactory,
) -> None:
    # The channel refuses the bot and the command's response_url is spent: the shift is taken
    # all the same, and the person who took it learns so (here by a direct message).
    bot = await start(bot_factory, "http", IN_ALICES_SHIFT)
    bot.slack.fail("chat.postMessage", "not_in_channel",
                   when=lambda c: c.params.get("channel") == "G0PRIVATE")
    url = bot.slack.response_url()
    bot.slack.expire_response_url(url)
    body = slash_command_body(text="oncall take", user_id="U0MANAGER", channel_id="G0PRIVATE",
                              response_url=url, trigger_id="77.88.unheard")
    assert (await bot.post_signed(body)).status == 200
    await bot.settle()
    told = [c.params for c in bot.slack.calls
            if c.method in ("chat.postEphemeral", "chat.postMessage") and c.ok
            and "<@U0MANAGER> is now on call" in str(c.params.get("text"))]
    assert len(told) == 1 and told[0].get("user", told[0]["channel"]) == "U0MANAGER"
    assert "On call now:* <@U0MANAGER>" in str((await ask(bot))["text"])


@pytest.mark.parametrize("database_url", [POSTGRESQL], indirect=True)
async def test_oncall_while_the_database_is_not_answering_says_so_in_words(
    bot_factory: BotFactory, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Overrides are in the database: without it, nobody can say who is on call. That is the
    # database failing, not a bug: the person is told to try again, not to report one.
    bot = await bot_factory("http", policy=ROSTER,
                            DATABASE_URL=with_short_lock_timeout(database_url))
    set_clock(bot, IN_ALICES_SHIFT)
    async with tables_locked(database_url, "oncall_overrides", reads_too=True):
        answer = await ask(bot, user_id="U0MANAGER")
    text = str(answer["text"])
    assert answer["response_type"] == "ephemeral"
    assert "callbot could not read its database, so it can't say who is on call just now" in text
    assert "Try again in a minute" in text and "Something went wrong" not in text
    assert not [r for r in caplog.records if "unexpected error" in r.getMessage()]
    assert "On call now:* <@U0ALICE>" in str((await ask(bot))["text"])


async def test_oncall_tells_afternoon_times_on_the_24_hour_clock(bot_factory: BotFactory) -> None:
    # "05:30" for a 17:30 hand-off would send the next person to their phone twelve hours early.
    policy = ROSTER.replace('timezone = "America/New_York"',
                            'timezone = "America/New_York"\nhandoff = "friday 17:30"')
    bot = await start(bot_factory, "http", dt.datetime(2026, 3, 10, 19, tzinfo=dt.UTC),
                      policy=policy)
    await bot.command("oncall take", user_id="U0MANAGER")
    await bot.settle()
    [announcement] = bot.slack.calls_to("chat.postMessage")
    assert "until Fri 13 Mar 17:30 EDT (the next hand-off)" in announcement.params["text"]
    answer = await ask(bot)
    text = str(answer["text"])
    assert "until Fri 13 Mar 17:30 EDT" in text and "from Fri 13 Mar 17:30 EDT" in text
    assert "at Tue 10 Mar 15:00 EDT, until Fri 13 Mar 17:30 EDT." in text
    assert "Hand-off friday 17:30 (America/New_York)" in str(answer["blocks"])


async def test_a_take_without_a_channel_is_told_to_the_taker(bot_factory: BotFactory) -> None:
    # Nowhere to announce it: the shift is taken all the same, and the taker hears so.
    bot = await start(bot_factory, "http", IN_ALICES_SHIFT)
    answer = await ask(bot, "oncall take", user_id="U0MANAGER", channel_id="")
    assert "<@U0MANAGER> is now on call instead of <@U0ALICE>" in str(answer["text"])
    assert bot.slack.calls_to("chat.postMessage") == []
    assert "On call now:* <@U0MANAGER>" in str((await ask(bot))["text"])


@pytest.mark.parametrize("database_url", [POSTGRESQL], indirect=True)
async def test_two_takes_at_once_on_two_replicas_each_say_whom_they_took_over_from(
    bot_factory: BotFactory, database_url: str
) -> None:
    # Alice is on call; the manager and the admin each take the shift at the same moment, on
    # two replicas. One of them ends up on call: the channel must not be told by both that they
    # took over from Alice, leaving the first believing they still carry the pager.
    first = await start(bot_factory, "http", IN_ALICES_SHIFT)
    second = await start(bot_factory, "http", IN_ALICES_SHIFT)
    second.slack.users["U0ADMIN"] = {"profile": {"phone": "+1 (814) 404-3099"}}
    async with tables_locked(database_url, "oncall_overrides") as holder:
        await first.command("oncall take", user_id="U0MANAGER")
        await second.command("oncall take", user_id="U0ADMIN")
        while await holder.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted") < 2:
            await asyncio.sleep(0.01)  # both takes are waiting to write
    await first.settle()
    await second.settle()
    status = str((await ask(first, user_id="U0ADMIN"))["text"])
    now = "U0ADMIN" if "On call now:* <@U0ADMIN>" in status else "U0MANAGER"
    before = "U0MANAGER" if now == "U0ADMIN" else "U0ADMIN"
    assert f"Override: <@{now}> took the shift from <@{before}>" in status
    announced = [str(c.params["text"]) for c in first.slack.calls_to("chat.postMessage")]
    assert len(announced) == 2
    assert any(f"<@{before}> is now on call instead of <@U0ALICE>" in t for t in announced)
    assert any(f"<@{now}> is now on call instead of <@{before}>" in t for t in announced), announced


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
    bot = await start(bot_factory, "http", HANDOFF - dt.timedelta(seconds=1))
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
