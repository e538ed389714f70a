"""The bot died (SIGKILL, a lost host, stopped past its grace) after taking a request and before
the call's row was written: nothing was dialled, and the request's claim keeps a second delivery or
click from acting. The requester is told, once, by the next start or another replica's take-over
round, that the call was NOT placed, where they were last told; nothing is dialled on its own.

The bot is stopped with no grace while its task waits at a gate (the write of the call's row
held): cancelled there, as a SIGKILL would leave it. The rows it left
are then moved a lease into the past, as if that long had gone by (`gone_for_a_lease`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from bot.audit.records import NOT_DIALLED
from bot.calls.status_views import CALL_AGAIN_ACTION
from tests.conftest import BotFactory, BotUnderTest, policy_with
from tests.databases import on_both_databases
from tests.follow_helpers import (
    FAST,
    FULL,
    MASKED,
    audit_records,
    history,
    OTHER,
    click,
    ended_call,
    gone_for_a_lease,
    services,
    stall,
)
from tests.interactions import ask, interact, open_from_shortcut, state, submission
from tests.interactions import click as answer

CANADA = "+14165550123"
CANADA_MASKED = "+1 416 ••• 0123"
QUICK = {**FAST, "LEASE_SECONDS": "3"}


def held_before_its_row(bot: BotUnderTest, back: asyncio.Event | None = None) -> asyncio.Event:
    """The bot's next call waits just before its row is written, until `back` is set (it goes on,
    as a stalled replica come back does) or the bot is stopped: the event returned is set once it
    waits there."""
    reached = asyncio.Event()
    follower = services(bot).follower
    note_dialling = follower.note_dialling

    async def held(*args: Any, **kwargs: Any) -> Any:
        reached.set()
        await (back or asyncio.Event()).wait()
        return await note_dialling(*args, **kwargs)

    follower.note_dialling = held  # type: ignore[method-assign]
    return reached


async def died_there(bot: BotUnderTest, reached: asyncio.Event) -> None:
    """Once `bot` waits before its call's row (`held_before_its_row`): stopped with no grace, a
    lease ago."""
    await asyncio.wait_for(reached.wait(), 10)
    await bot.runtime.stop(grace=0)
    await gone_for_a_lease(bot)


def not_placed(told: dict[str, object], number: str) -> None:
    text = str(told["text"])
    assert "was *not* placed" in text and "nothing was dialled" in text, text
    assert number in text, text


async def recorded_once(bot: BotUnderTest, number: str, origin: str = "command") -> None:
    """The audit trail holds the request never dialled, once (told_once ran a round more); a
    question's Call names the question, as every attempt of such a Call does."""
    # Written once the requester is told, by whichever round told them: the keeper's own, beside
    # the others, may still be writing it as the test's round returns.
    async with asyncio.timeout(10):
        while not [r for r in await audit_records(bot) if r.reason == NOT_DIALLED]:
            await asyncio.sleep(0.01)
    records = await audit_records(bot)
    [record] = [r for r in records if r.reason == NOT_DIALLED]
    question = next((r.id for r in records if r.decision == "asked"), None)
    assert (record.decision, record.user_id, record.team_id, record.channel_id, record.origin,
            record.number_masked, record.number_hash, record.confirmed_question) == (
        "failed", "U0MANAGER", bot.slack.team_id, "C0OPS", origin, number, None, question)
    line = (await history(bot))["text"]
    assert "not placed: the bot stopped before dialling" in str(line), line


async def told_once(bot: BotUnderTest, url: str, n: int) -> dict[str, object]:
    """The n-th post to `url`, and no more after another take-over round."""
    answers = await bot.slack.wait_for_response(url, n=n)
    await services(bot).untold.take_over()
    assert len(bot.slack.responses_to(url)) == n
    return answers[-1]


@on_both_databases
async def test_a_confirmed_call_whose_bot_died_before_dialling_is_told_in_its_question(
    bot_factory: BotFactory,
) -> None:
    # "📞 Confirmed: checking again, then calling." is the last the requester heard; the question
    # is gone (taken) and a second click would say it was already answered.
    first = await bot_factory("http", **QUICK)
    question = await ask(first, f"{CANADA} escalation")
    reached = held_before_its_row(first)
    _, url = await answer(first, question)
    [confirmed] = await first.slack.wait_for_response(url)
    assert "Confirmed" in str(confirmed["text"])
    await died_there(first, reached)

    second = await bot_factory("http", **QUICK)  # the same database
    told = await told_once(second, url, 2)
    not_placed(told, CANADA_MASKED)
    assert told["replace_original"] is True  # "Confirmed: … calling" is gone
    assert "/call" in str(told["text"])
    await second.settle()
    assert second.evo.outgoing_posts == []  # never dialled on its own
    await recorded_once(second, CANADA_MASKED)
    assert not second.slack.calls_to("chat.postMessage")


async def test_call_again_whose_bot_died_before_dialling_is_told_and_works_again(
    bot_factory: BotFactory,
) -> None:
    # The click said nothing yet; a second click would hear "already called again from this
    # message" of a call that never was.
    first, status, _ = await ended_call(bot_factory)
    reached = held_before_its_row(first)
    _, url = await click(first, status, CALL_AGAIN_ACTION)
    await died_there(first, reached)

    second = await bot_factory("http", **FAST)
    told = await told_once(second, url, 1)
    not_placed(told, MASKED)
    assert "Call again" in str(told["text"])
    # A message of its own: the ended call's status message, where Call again was clicked, stays.
    assert not told.get("replace_original")
    assert len(second.evo.outgoing_posts) == 1  # the first call only

    _, url = await click(second, status, CALL_AGAIN_ACTION)  # a new click dials
    await second.evo.wait_for_posts(2)
    await second.settle()
    assert not [a for a in second.slack.responses_to(url) if "already" in str(a["text"])]


async def test_call_again_never_dialled_twice_is_recorded_twice(bot_factory: BotFactory) -> None:
    # Told, Call again's claim is given back (its button works again) and the next click claims
    # the same key: the record of that click, never dialled either, is a record of its own.
    first, status, _ = await ended_call(bot_factory)
    reached = held_before_its_row(first)
    await click(first, status, CALL_AGAIN_ACTION)
    await died_there(first, reached)

    second = await bot_factory("http", **FAST)
    await wait_for_records(second, 1)
    reached = held_before_its_row(second)
    _, url = await click(second, status, CALL_AGAIN_ACTION)
    await died_there(second, reached)

    third = await bot_factory("http", **FAST)
    not_placed(await told_once(third, url, 1), MASKED)
    await wait_for_records(third, 2)
    assert len(third.evo.outgoing_posts) == 1  # the first call only


async def wait_for_records(bot: BotUnderTest, n: int) -> None:
    """Once the bot's take-over round has told a request never dialled: `n` records of such."""
    await services(bot).untold.take_over()
    records = [r for r in await audit_records(bot) if r.reason == NOT_DIALLED]
    assert [r.origin for r in records] == ["call_again"] * n, records


async def test_a_call_command_whose_bot_died_before_dialling_is_told(
    bot_factory: BotFactory,
) -> None:
    first = await bot_factory("http", **FAST)
    reached = held_before_its_row(first)
    _, url = await first.command("+1 814 404 3093 escalation")
    await died_there(first, reached)

    second = await bot_factory("http", **FAST)
    not_placed(await told_once(second, url, 1), MASKED)
    assert second.evo.outgoing_posts == []
    await recorded_once(second, MASKED)


async def test_a_number_typed_with_odd_dashes_is_masked_in_the_record_of_a_request_never_dialled(
    bot_factory: BotFactory,
) -> None:
    # "814---404---3093" is dialled as +18144043093; text masking reads three dashes as a break
    # between numbers, so the note kept it whole. The record of it is kept forever, append-only:
    # masked as every other record's number, whatever the text between its digits.
    first = await bot_factory("http", **FAST)
    reached = held_before_its_row(first)
    _, url = await first.command("814---404---3093 escalation")
    await died_there(first, reached)

    second = await bot_factory("http", **FAST)
    told = await told_once(second, url, 1)
    await recorded_once(second, MASKED)
    not_placed(told, MASKED)
    assert "404" not in str(told["text"]) + str((await history(second))["text"])

async def test_a_call_form_whose_bot_died_before_dialling_is_told_by_direct_message(
    bot_factory: BotFactory,
) -> None:
    # From the shortcut: the form closed, and there is no response URL to answer through.
    first = await bot_factory("http", **FAST)
    view = await open_from_shortcut(first)
    reached = held_before_its_row(first)
    closed = await interact(first, submission(view, state(FULL, channel="C0OPS")))
    assert closed.get("response_action") is None, closed
    await died_there(first, reached)

    second = await bot_factory("http", **FAST)
    dm = await second.slack.wait_for_call(
        "chat.postMessage", lambda c: "not* placed" in str(c.params.get("text")))
    assert dm.params["channel"] == "U0MANAGER"
    not_placed(dm.params, MASKED)
    await services(second).untold.take_over()
    assert len(second.slack.calls_to("chat.postMessage")) == 1
    assert second.evo.outgoing_posts == []


@on_both_databases
async def test_a_replica_that_stalled_before_dialling_dials_nothing_once_the_other_told(
    bot_factory: BotFactory,
) -> None:
    # Replica A takes "Call" and stalls before its call's row (a paused VM): B tells the requester
    # the call was not placed. A comes back and goes on: its write before the POST finds the
    # request told, so nothing is dialled, and nothing more is said.
    a = await bot_factory("http", **QUICK)
    question = await ask(a, f"{CANADA} escalation")
    back = asyncio.Event()
    reached = held_before_its_row(a, back)
    _, url = await answer(a, question)
    await a.slack.wait_for_response(url)
    await asyncio.wait_for(reached.wait(), 10)
    await stall(a)
    await gone_for_a_lease(a)

    b = await bot_factory("http", **QUICK)  # the same database
    not_placed(await told_once(b, url, 2), CANADA_MASKED)
    back.set()  # A comes back
    await a.settle()
    assert a.evo.outgoing_posts == []
    assert len(a.slack.responses_to(url)) == 2
    assert not a.slack.calls_to("chat.postMessage")


@on_both_databases
async def test_requests_that_end_as_ever_leave_nothing_to_tell(bot_factory: BotFactory) -> None:
    # Placed, refused (a role, a number, a rate limit), asked, confirmed, a copy, the form, Call
    # again: each ends told, and keeps no note that a restart would take for a request never
    # dialled.
    first = await bot_factory("http", policy=policy_with(per_user="3/10m"), **QUICK)
    await first.command(f"{FULL} escalation")
    await first.command(f"{FULL} escalation", user_id="U0NOBODY")
    await first.command("+44 20 7946 0000 escalation")
    await answer(first, await ask(first, f"{CANADA} escalation"))
    await ask(first, f"{CANADA} wake-up-call")
    view = await open_from_shortcut(first)
    await interact(first, submission(view, state(OTHER, channel="C0OPS")))
    await first.command(f"{OTHER} escalation")  # over the limit
    await first.settle()
    assert len(first.evo.outgoing_posts) == 3
    assert await notes(first) == []
    await first.runtime.stop()
    await gone_for_a_lease(first)

    second = await bot_factory("http", **QUICK)
    await services(second).untold.take_over()
    await second.settle()
    told = [c.params for c in second.slack.calls if "stopped before" in str(c.params)]
    told += [p.body for p in second.slack.response_posts if "stopped before" in str(p.body)]
    assert told == []


async def notes(bot: BotUnderTest) -> list[str]:
    rows = await services(bot).db.fetchall("SELECT key FROM claims WHERE untold IS NOT NULL")
    return [str(row["key"]) for row in rows]


def gated_before_its_row(bot: BotUnderTest) -> tuple[asyncio.Event, asyncio.Event]:
    """The bot's next call waits just before its row is written until the second event is set
    (then it is written as ever): the first is set once it waits there."""
    reached, go_on = asyncio.Event(), asyncio.Event()
    follower = services(bot).follower
    real = follower.note_dialling

    async def gated(*args: object, **kwargs: object) -> object:
        if not reached.is_set():
            reached.set()
            await go_on.wait()
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    follower.note_dialling = gated  # type: ignore[method-assign, assignment]
    return reached, go_on


async def test_a_stalled_call_again_coming_back_leaves_the_next_click_alone(
    bot_factory: BotFactory,
) -> None:
    # A takes Call again and stalls before the call's row; B tells the requester it was not
    # placed and gives the button back. The requester clicks it again, on B. A comes back: its
    # write finds its request told and dials nothing; the click B is handling must still dial.
    a, status, _ = await ended_call(bot_factory)
    a_waits, a_goes_on = gated_before_its_row(a)
    await click(a, status, CALL_AGAIN_ACTION)
    await asyncio.wait_for(a_waits.wait(), 10)
    await stall(a)
    await gone_for_a_lease(a)

    b = await bot_factory("http", **FAST)  # the same database
    await services(b).untold.take_over()
    b_waits, b_goes_on = gated_before_its_row(b)
    _, url = await click(b, status, CALL_AGAIN_ACTION)
    await asyncio.wait_for(b_waits.wait(), 10)
    a_goes_on.set()  # A comes back
    await a.settle()
    b_goes_on.set()
    await b.evo.wait_for_posts(2)
    await b.settle()
    assert len(b.evo.outgoing_posts) == 2  # the first call, and B's click: A dialled nothing


async def test_a_request_never_dialled_that_slack_refused_to_tell_is_told_by_a_later_round(
    bot_factory: BotFactory,
) -> None:
    # The form closed; the only way left is a direct message, and Slack refuses it in the round
    # that finds the request: the note is kept, and a later round tells the requester.
    first = await bot_factory("http", **FAST)
    view = await open_from_shortcut(first)
    reached = held_before_its_row(first)
    await interact(first, submission(view, state(FULL, channel="C0OPS")))
    await died_there(first, reached)
    first.slack.fail("chat.postMessage", "fatal_error")

    second = await bot_factory("http", **FAST)  # the same database, and Slack
    await services(second).untold.take_over()
    assert not [c for c in second.slack.calls_to("chat.postMessage") if c.ok]
    second.slack.off("chat.postMessage")
    await services(second).untold.take_over()
    dm = await second.slack.wait_for_call(
        "chat.postMessage", lambda c: c.ok and "not* placed" in str(c.params.get("text")))
    not_placed(dm.params, MASKED)
    assert second.evo.outgoing_posts == []


async def test_a_request_its_live_replica_is_slow_to_dial_is_not_told_as_never_dialled(
    bot_factory: BotFactory,
) -> None:
    """Replica A took a /call more than a lease ago and is still working on it (its database slow
    to write the call's row), alive all along. Another replica's round does not tell the requester
    the call was not placed: A goes on, and the call is dialled, once."""
    a = await bot_factory("http", **QUICK)
    back = asyncio.Event()
    reached = held_before_its_row(a, back)
    _, url = await a.command(f"{FULL} escalation")
    await asyncio.wait_for(reached.wait(), 10)
    await services(a).db.execute("UPDATE claims SET claimed_at = claimed_at - ?",
                                 (a.runtime.settings.lease_seconds + 1,))

    b = await bot_factory("http", **QUICK)  # the same database
    await services(b).untold.take_over()
    back.set()  # A's write goes through
    await a.evo.wait_for_posts(1)
    await a.settle()
    await b.settle()
    told = [str(r) for r in a.slack.responses_to(url)] + [str(c.params) for c in a.slack.calls]
    assert not [t for t in told if "was *not* placed" in t]
    assert len(a.evo.outgoing_posts) == 1


async def test_a_call_told_the_database_failed_on_its_claim_is_not_told_again_after_a_restart(
    bot_factory: BotFactory,
) -> None:
    """A /call's claim commits and its answer is lost (a connection dropped after COMMIT): the
    requester is told at once that the database failed and nothing was dialled. A later start's
    round does not tell them a second time, as a request its bot stopped before dialling, nor
    record one."""
    first = await bot_factory("http", **QUICK)
    claims = services(first).claims
    real, lost = claims.claim, []

    async def claim(key: str, **kwargs: Any) -> bool:
        taken = await real(key, **kwargs)
        if key.startswith("command:") and not lost:
            lost.append(key)
            raise ConnectionError("connection lost after COMMIT")
        return taken

    claims.claim = claim  # type: ignore[method-assign]
    _, url = await first.command(f"{FULL} escalation")
    [told] = await first.slack.wait_for_response(url, timeout=20)
    assert "could not write to its database" in str(told["text"]), told
    await first.settle()
    assert lost and first.evo.outgoing_posts == []
    await first.runtime.stop()
    await gone_for_a_lease(first)

    second = await bot_factory("http", **QUICK)  # the same database
    await services(second).untold.take_over()
    await second.settle()
    assert len(second.slack.responses_to(url)) == 1
    assert "stopped before" not in everything_sent(second)
    assert not [r for r in await audit_records(second) if r.reason == NOT_DIALLED]


def everything_sent(bot: BotUnderTest) -> str:
    return "\n".join([str(c.params) for c in bot.slack.calls]
                     + [str(p.body) for p in bot.slack.response_posts])
