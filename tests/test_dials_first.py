"""The phone rings first (bot/calls/dials_first.py): a call's parent post waits until the calls on
their way to Evo Voice have sent their POST, at most `max_wait`; the Evo Voice transport says when a
request has left."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial

import httpx
import pytest

from bot.calls.dials_first import DialsFirst
from bot.evovoice.transport import REQUEST_SENT, AiohttpTransport
from bot.standins.evovoice import Delayed, EvoVoiceStandIn, Gated, Respond
from bot.standins.slack import ApiCall, Message
from bot.calls.status_views import CALL_AGAIN_ACTION
from tests.conftest import QUICK_VOICE_RETRY, BotFactory, BotUnderTest, policy_with, until
from tests.escalations import MANAGER_ONLY
from tests.follow_helpers import FAST, click, end_session, status_message, status_ts_recorded
from tests.follow_helpers import poll_now, wait_for_edit
from tests.interactions import ask, interact, open_form, state, submission
from tests.interactions import click as answer

FULL = "+18144043093"
OTHER = "+18145550199"


def is_parent_post(call: ApiCall) -> bool:
    return call.ok and not call.params.get("thread_ts")


def dialled_before_each_parent_post(bot: BotUnderTest) -> list[int]:
    """For each parent post, how many POSTs Evo Voice had received when it reached Slack."""
    dialled = [post.time for post in bot.evo.outgoing_posts]
    return [sum(sent < call.time for sent in dialled)
            for call in bot.slack.calls_to("chat.postMessage") if is_parent_post(call)]


async def test_a_call_counts_until_it_is_dialled_or_its_work_ends() -> None:
    first = DialsFirst(max_wait=60)
    with first.on_its_way():
        assert first.count == 1
        with first.on_its_way():  # place() inside handle(): one call, counted once
            assert first.count == 1
        assert first.count == 1
        first.dialled()
        assert first.count == 0
        first.dialled()  # a retried POST: still one call
        assert first.count == 0
        with first.on_its_way():  # the next call in this task (an escalation's next step)
            assert first.count == 1
        assert first.count == 0
    with first.on_its_way():
        pass  # refused, or a question asked: it ends without a POST
    assert first.count == 0
    await first.idle()  # nobody on the way: at once


async def test_a_call_acked_counts_from_its_ack_until_its_work_has_dialled_or_ended() -> None:
    first = DialsFirst(max_wait=60)
    go = asyncio.Event()

    async def work(dial: bool) -> None:
        await go.wait()  # the acks still being sent
        with first.on_its_way():  # handle(): the same call, still counted once
            assert first.count == 1
            with first.on_its_way():  # place()
                assert first.count == 1
            if dial:
                first.dialled()
                assert first.count == 0
        assert first.count == 0
        with first.on_its_way():  # the next call in this task: counted afresh
            assert first.count == 1

    for dial in (True, False):  # dialled, or ended without a POST
        go.clear()
        call = first.acked(partial(asyncio.create_task, work(dial)))
        await asyncio.sleep(0)
        assert first.count == 1  # before its work has begun
        go.set()
        await call
        assert first.count == 0
    dropped = first.acked(partial(asyncio.create_task, work(dial=True)))
    dropped.cancel()  # before it began (a shutdown): counted no more all the same
    await asyncio.gather(dropped, return_exceptions=True)
    assert first.count == 0


async def test_idle_waits_for_the_calls_on_their_way_and_no_longer_than_max_wait() -> None:
    first = DialsFirst(max_wait=60)
    went: list[bool] = []

    async def slack_post() -> None:
        await first.idle()
        went.append(True)

    with first.on_its_way():
        post = asyncio.create_task(slack_post())
        for _ in range(20):
            await asyncio.sleep(0)
        assert went == []
        first.dialled()
        await asyncio.wait_for(post, 5)
    assert went == [True]
    capped = DialsFirst(max_wait=0.01)
    with capped.on_its_way():  # one stuck before its POST (a 429's pause, say)
        await asyncio.wait_for(capped.idle(), 5)


async def test_the_transport_says_when_a_request_has_left_before_its_answer(
    evo: EvoVoiceStandIn,
) -> None:
    evo.queue_outgoing(Delayed(60, Respond()))  # never answered within the test
    transport = AiohttpTransport()
    left = asyncio.Event()
    heard = REQUEST_SENT.set(left.set)
    request = httpx.Request(
        "POST", f"{evo.url}/sessions/outgoing", json={"numberToDial": FULL},
        headers={"Authorization": "Basic Ym90QGV4YW1wbGUuY29tOnNlY3JldA=="},
    )
    sending = asyncio.create_task(transport.handle_async_request(request))
    try:
        await asyncio.wait_for(left.wait(), 5)
        assert not sending.done()  # it left; its answer has not come
    finally:
        REQUEST_SENT.reset(heard)
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
        await transport.aclose()


async def test_a_parent_post_waits_for_the_calls_still_on_their_way(bot: BotUnderTest) -> None:
    assert bot.runtime.services is not None
    first = bot.runtime.services.calls.dials_first
    first.max_wait = 60
    with first.on_its_way():  # another call, still before its POST
        await bot.command(f"{FULL} escalation")
        await bot.evo.wait_for_posts(1)  # this one's phone rings...
        # ...and its parent post waits (ungated, it would be out well within this).
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(bot.settle()), 0.5)
        assert bot.slack.calls_to("chat.postMessage") == []
    await bot.settle()
    assert any(FULL[-4:] in c.params["text"] for c in bot.slack.calls_to("chat.postMessage"))


async def test_a_call_that_fails_before_its_post_does_not_hold_its_own_parent_post(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http", **QUICK_VOICE_RETRY)
    assert bot.runtime.services is not None
    bot.runtime.services.calls.dials_first.max_wait = 60
    await bot.evo.stop()  # every try of the POST is refused: nothing is sent
    await bot.command(f"{FULL} escalation")
    # Its parent post waits for the calls on their way, and this one no longer is.
    await asyncio.wait_for(bot.settle(), 10)
    replies = [c for c in bot.slack.calls_to("chat.postMessage") if c.params.get("thread_ts")]
    assert len(replies) == 1 and "nothing was dialled" in replies[0].params["text"]


async def test_a_wave_of_calls_posts_only_once_the_calls_acked_after_it_have_dialled(
    bot: BotUnderTest,
) -> None:
    assert bot.runtime.services is not None
    services = bot.runtime.services
    services.calls.dials_first.max_wait = 60
    # The first call's work is under way, held before its POST (the flows are read afresh).
    services.catalog.forget()
    flows = asyncio.Event()
    bot.evo.queue("GET", "/flows", Gated(flows))
    read = len(bot.evo.requests_to("GET", "/flows"))
    await bot.command(f"{FULL} escalation")
    await until(lambda: len(bot.evo.requests_to("GET", "/flows")) > read)
    # The wave goes on: with a request still being answered (never, here), the second call's
    # work waits for the acks being sent (at most their cap) once it is acked itself.
    services.tasks.acks.entered()
    try:
        await bot.command(f"{OTHER} escalation")
        flows.set()
        await bot.settle()
    finally:
        services.tasks.acks.left()
    # The first call's parent post waited for the second call, acked before it was posted.
    assert dialled_before_each_parent_post(bot) == [2, 2]


@pytest.mark.parametrize(("text", "user_id"), [
    (f"{FULL} escalation", "U0NOBODY"),  # no role
    ("+44 20 7946 0018 escalation", "U0MANAGER"),  # a region the policy doesn't allow
    ("+14165550123 escalation", "U0MANAGER"),  # outside the home region: a question first
    ], ids=["role", "number", "question"])
async def test_a_refused_call_does_not_hold_the_others_posts_while_it_is_told(
    bot: BotUnderTest, text: str, user_id: str,
) -> None:
    await told_slowly_while_another_dials(bot, text, user_id)


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_a_call_over_a_limit_does_not_hold_the_others_posts_while_it_is_told(
    bot_factory: BotFactory, mode: str,
) -> None:
    bot = await bot_factory(mode, policy=policy_with(per_number="1/10m"))
    await bot.command(f"{FULL} escalation")
    await bot.settle()
    await told_slowly_while_another_dials(bot, f"{FULL} escalation", "U0MANAGER")


async def told_slowly_while_another_dials(bot: BotUnderTest, text: str, user_id: str) -> None:
    """`/call text` by `user_id` is told it is not placed (or asked first), Slack slow to take
    it; meanwhile another call dials, and its parent post goes."""
    await refused_slowly_while_another_dials(bot, lambda: bot.command(text, user_id=user_id))


async def refused_slowly_while_another_dials(
    bot: BotUnderTest, asking: Callable[[], Awaitable[object]],
) -> None:
    """`asking` is told its call is not placed (or asked first), Slack slow to take it;
    meanwhile another call dials, and its parent post goes."""
    assert bot.runtime.services is not None
    bot.runtime.services.calls.dials_first.max_wait = 60
    dialled = len(bot.evo.outgoing_posts)
    telling = bot.slack.hold_responses()
    await asking()
    await telling.wait_until_held()
    await bot.command(f"{OTHER} escalation")
    await bot.evo.wait_for_posts(dialled + 1)
    try:
        # Its parent post goes once its own POST has left, the other call still being told.
        await bot.slack.wait_for_call(
            "chat.postMessage", lambda c: is_parent_post(c) and OTHER[-4:] in c.params["text"]
        )
    finally:
        telling.open()
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == dialled + 1


# ------------------------------------------------------------- the other ways to ask for a call


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_a_wave_waits_for_a_call_form_submitted_after_it(
    bot_factory: BotFactory, mode: str,
) -> None:
    bot = await bot_factory(mode)
    view = await open_form(bot)
    await in_a_wave(bot, lambda: interact(bot, submission(view, state(FULL))), "call form by")


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_a_wave_waits_for_a_call_again_clicked_after_it(
    bot_factory: BotFactory, mode: str,
) -> None:
    bot, status = await an_ended_call(bot_factory, mode)
    await in_a_wave(bot, lambda: click(bot, status, CALL_AGAIN_ACTION), "call again by")


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_a_wave_waits_for_a_call_confirmed_after_it(
    bot_factory: BotFactory, mode: str,
) -> None:
    bot = await bot_factory(mode)
    question = await ask(bot, "+14165550123 escalation")  # outside the home region
    await in_a_wave(bot, lambda: answer(bot, question), "confirmed call by")


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_a_wave_waits_for_a_test_call_asked_after_it(
    bot_factory: BotFactory, mode: str,
) -> None:
    bot = await bot_factory(mode, policy=MANAGER_ONLY)
    await in_a_wave(bot, lambda: bot.command("test"), "test call by")


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_a_call_again_refused_does_not_hold_the_others_posts_while_it_is_told(
    bot_factory: BotFactory, mode: str,
) -> None:
    bot, status = await an_ended_call(bot_factory, mode)
    # Someone with no role may not use the call's buttons.
    await refused_slowly_while_another_dials(
        bot, lambda: click(bot, status, CALL_AGAIN_ACTION, user_id="U0NOBODY"))


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_a_confirmation_refused_does_not_hold_the_others_posts_while_it_is_told(
    bot_factory: BotFactory, mode: str,
) -> None:
    bot = await bot_factory(mode)
    question = await ask(bot, "+14165550123 escalation")
    # Only the person who asked may confirm: the question is answered so, in its place.
    await refused_slowly_while_another_dials(bot, lambda: answer(bot, question, user_id="U0ADMIN"))


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_a_test_call_refused_does_not_hold_the_others_posts_while_it_is_told(
    bot_factory: BotFactory, mode: str,
) -> None:
    bot = await bot_factory(mode, policy=MANAGER_ONLY)
    # Not in [people], and nothing in the Slack profile: no number to ring.
    await refused_slowly_while_another_dials(bot, lambda: bot.command("test", user_id="U0ADMIN"))


async def an_ended_call(bot_factory: BotFactory, mode: str) -> tuple[BotUnderTest, Message]:
    """A bot that placed a call to FULL, ended since (Call again can be clicked); its status
    message."""
    bot = await bot_factory(mode, **FAST)
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    await status_ts_recorded(bot, 1)
    [session_id] = bot.evo.sessions
    end_session(bot, session_id, after_seconds=5, outcome="Busy")
    await poll_now(bot)
    await wait_for_edit(bot, status, "Ended")
    return bot, status


async def in_a_wave(bot: BotUnderTest, later: Callable[[], Awaitable[object]], work: str) -> None:
    """A wave: a /call to OTHER is under way, held before its POST (its requester's role comes
    from a user group, which Slack is slow to list); then `later` asks for another call, acked
    while an ack is still being sent (its `work` waits for that before it starts). The held
    call's parent post goes once the call acked after it has dialled too."""
    assert bot.runtime.services is not None
    services = bot.runtime.services
    services.calls.dials_first.max_wait = 60
    services.access.forget_groups()
    listing = bot.slack.hold("usergroups.users.list")
    await bot.command(f"{OTHER} escalation", user_id="U0LEAD1")
    await listing.wait_until_held()
    services.tasks.acks.entered()
    try:
        await later()
        # Acked, its work spawned (right after the ack): only then does the held call go on.
        await until(lambda: any(t.get_name().startswith(work) for t in asyncio.all_tasks()))
        listing.open()
        await bot.settle()
    finally:
        services.tasks.acks.left()
    await bot.settle()
    [held] = [c for c in bot.slack.calls_to("chat.postMessage")
              if is_parent_post(c) and OTHER[-4:] in c.params["text"]]
    dialled = [post.time for post in bot.evo.outgoing_posts]
    assert OTHER in [post.json["numberToDial"] for post in bot.evo.outgoing_posts]
    assert len(dialled) >= 2  # the held call, the one acked after it (and any before)
    # How many of the POSTs Evo Voice had when the held call's parent post reached Slack: all.
    assert sum(sent < held.time for sent in dialled) == len(dialled)
