"""What the requester hears, and how many POSTs are made, when Evo Voice misbehaves (end to end)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from bot.standins.evovoice import (
    Acted,
    Answered,
    Behaviour,
    DropConnection,
    EmptyObject,
    ErrorStatus,
    Gated,
    HtmlPage,
    MalformedJson,
    NoContent,
    TooManyRequests,
)
from tests.conftest import QUICK_VOICE_RETRY, BotFactory, BotUnderTest
from tests.follow_helpers import (
    FAST, connected_call, looked_for_long_enough, poll_now, status_message, wait_for_edit)

FULL = "+18144043093"


def thread_result(bot: BotUnderTest) -> str:
    replies = [c for c in bot.slack.calls_to("chat.postMessage") if c.params.get("thread_ts")]
    assert len(replies) == 1, replies
    return str(replies[0].params["text"])


# Malformed JSON, 500, 503, a dropped connection, 429 and 400 are each tested once, with others
# served meanwhile: test_each_fault_tells_the_requester_posts_once_and_others_are_served below.


@pytest.mark.parametrize("behaviour", [EmptyObject(), NoContent()])
async def test_any_2xx_is_a_placed_call_even_without_a_session_id(
    bot_factory: BotFactory, behaviour: Behaviour
) -> None:
    bot = await bot_factory("http")
    bot.evo.queue_outgoing(behaviour)
    await bot.command(f"{FULL} escalation")
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1
    assert "Call placed" in thread_result(bot)


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_an_answer_slower_than_the_read_timeout_is_unknown_and_never_resent(
    bot_factory: BotFactory, mode: str
) -> None:
    # A read timeout shorter than the tests' 2 s, for the test to wait out.
    bot = await bot_factory(mode, EVOVOICE_TIMEOUT="0.5")
    held = asyncio.Event()  # never opened: the answer comes only after the bot gave up on it
    bot.evo.queue_outgoing(Gated(held))
    await bot.command(f"{FULL} escalation")
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1
    text = thread_result(bot)
    assert "Outcome unknown" in text and "did not retry" in text


async def test_ambiguous_failure_names_the_session_found_afterwards(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http")
    bot.evo.queue_outgoing(DropConnection())  # the stand-in places the call, then drops the answer
    await bot.command(f"{FULL} escalation")
    await bot.settle()
    [session_id] = bot.evo.sessions
    assert session_id in thread_result(bot)
    assert len(bot.evo.outgoing_posts) == 1


@pytest.mark.parametrize("status", [500, 502])
async def test_a_5xx_for_a_call_that_was_placed_names_the_session_and_dials_once(
    bot_factory: BotFactory, status: int
) -> None:
    # "answered 5xx, may still have placed the call" (docs/evovoice-api.md, Retrying safely).
    bot = await bot_factory("http", **FAST)
    bot.evo.queue_outgoing(Acted(ErrorStatus(status)))
    await bot.command(f"{FULL} escalation")
    status_message_ = await status_message(bot)
    [session_id] = bot.evo.sessions
    assert "Outcome unknown" in str(status_message_.text)
    bot.evo.set_session_state(session_id, callState="Connected")
    await poll_now(bot)
    await wait_for_edit(bot, status_message_, "🟢 Connected")
    assert len(bot.evo.outgoing_posts) == 1


@pytest.mark.parametrize("answer", [
    {"id": "CA0123456789abcdef"}, {"id": 42, "status": "Queued"},
    # Shaped like the session, but with an empty id (a DTO's default): no session to follow.
    {"id": "", "toAddress": FULL, "callState": "Ringing"},
])
async def test_an_id_in_the_answer_that_names_no_session_does_not_lose_the_call(
    bot_factory: BotFactory, answer: dict[str, object]
) -> None:
    # The response type is not declared: "do not rely on an id in it" (docs/evovoice-api.md).
    bot = await bot_factory("http", **FAST)
    bot.evo.queue_outgoing(Answered(answer))
    status, session_id = await connected_call(bot)
    assert len(bot.evo.outgoing_posts) == 1


@pytest.mark.parametrize(("message", "told"), [
    ("This account may not call abroad", "refused the request (HTTP 403: This account may not "
     "call abroad); this is not a missing role."),
    # No words of its own: its status alone, not the default's words inside the sentence again.
    ("", "refused the request (HTTP 403); this is not a missing role."),
], ids=["with-words", "bare"])
async def test_a_403_to_the_post_that_is_no_missing_role_is_told_in_its_own_words(
    bot_factory: BotFactory, message: str, told: str
) -> None:
    bot = await bot_factory("http")
    bot.evo.queue_outgoing(ErrorStatus(403, message))
    await bot.command(f"{FULL} escalation")
    await bot.settle()
    result = thread_result(bot)
    assert told in result and "Nothing was dialled" in result, result


@pytest.mark.parametrize(("status", "message"), [
    # Not 409, which may come after the call was placed: tests/test_conflict_placing.py.
    (404, "Flow not found"), (400, "Flow is disabled"),
    # ServiceStack's validation messages are sentences of their own, full stop included.
    (400, "'Flow Id' must not be empty."),
])
async def test_a_4xx_to_the_post_says_why_and_that_nothing_was_dialled(
    bot_factory: BotFactory, status: int, message: str
) -> None:
    # ServiceStack's statuses (docs/evovoice-api.md, Errors): which one refuses which request is
    # not said, so each is a refusal of the call.
    bot = await bot_factory("http")
    bot.evo.queue_outgoing(ErrorStatus(status, message))
    await bot.command(f"{FULL} escalation")
    await bot.settle()
    result = thread_result(bot)
    assert message in result and "Nothing was dialled" in result, result
    assert ".." not in result, result
    assert len(bot.evo.outgoing_posts) == 1


@pytest.mark.parametrize("retry_after", [None, "date", "soon"])
async def test_a_429_whatever_its_retry_after_says_is_heard_and_nothing_is_dialled(
    bot_factory: BotFactory, retry_after: str | None
) -> None:
    # Nothing public says Evo Voice limits rates, nor how (docs/evovoice-api.md lists no 429):
    # Retry-After absent, an HTTP-date, or unreadable are each plausible.
    if retry_after == "date":
        retry_after = format_datetime(datetime.now(UTC) + timedelta(seconds=9), usegmt=True)
    bot = await bot_factory("http")
    bot.evo.queue_outgoing(TooManyRequests(retry_after=retry_after))
    await bot.command(f"{FULL} escalation")
    await bot.settle()
    result = thread_result(bot)
    assert "rate-limiting" in result and "nothing was dialled" in result, result
    assert len(bot.evo.outgoing_posts) == 1


async def test_lost_login_is_an_operator_problem(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")
    bot.evo.password = "changed while the bot ran"  # Basic and /auth/credentials both refused
    await bot.command(f"{FULL} escalation")
    await bot.settle()
    assert "EVOVOICE_PASSWORD" in thread_result(bot)
    assert bot.evo.requests_to("POST", "/auth/credentials") and not bot.evo.sessions


async def test_unreachable_voice_api_dials_nothing_and_says_so(
    bot_factory: BotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.evovoice.client")
    bot = await bot_factory("http", **QUICK_VOICE_RETRY)
    await bot.evo.stop()  # connections are now refused
    await bot.command(f"{FULL} escalation")
    await bot.settle()
    # The flow list was cached at start-up, so the refusal comes from the POST itself.
    result = thread_result(bot)
    assert "could not be reached" in result and "nothing was dialled" in result
    # Retried with back-off (by default 0.5 s, then 1 s; see test_evovoice), and bounded: three
    # attempts.
    attempts = [
        r
        for r in caplog.records
        if "POST /sessions/outgoing failed: ConnectError" in r.getMessage()
    ]
    assert len(attempts) == 3
    assert bot.evo.outgoing_posts == []


async def test_a_slow_call_does_not_hold_up_other_requesters(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")
    gate = asyncio.Event()  # the first call's answer is held until the second is confirmed
    bot.evo.queue_outgoing(Gated(gate))
    await bot.command(f"{FULL} escalation", user_id="U0MANAGER")
    await bot.evo.wait_for_posts(1)
    await bot.command("+18144043094 escalation", user_id="U0ADMIN")
    placed = await bot.slack.wait_for_call(
        "chat.postMessage", lambda c: "Call placed" in str(c.params.get("text"))
    )
    parents = [c for c in bot.slack.calls_to("chat.postMessage") if "thread_ts" not in c.params]
    second_parent = next(p for p in parents if "<@U0ADMIN>" in p.params["text"])
    assert placed.params["thread_ts"] == second_parent.response["ts"]
    assert reply_in_thread_of(bot, "U0MANAGER") == [], "the first is still waiting"
    gate.set()
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 2
    # A server slower than EVOVOICE_TIMEOUT is the read-timeout case of the test above.
    [result] = reply_in_thread_of(bot, "U0MANAGER")
    assert "Call placed" in result
    assert [p.json["numberToDial"] for p in bot.evo.outgoing_posts].count(FULL) == 1


# ---------------------------------------------------------------- each fault, while others call

OTHER = "+18144043094"


def reply_in_thread_of(bot: BotUnderTest, user_id: str) -> list[str]:
    """Results posted under the parent message of `user_id`'s call."""
    calls = bot.slack.calls_to("chat.postMessage")
    parents = [
        c
        for c in calls
        if "thread_ts" not in c.params and f"<@{user_id}>" in str(c.params.get("text")) and c.ok
    ]
    if not parents:
        return []
    ts = parents[0].response["ts"]
    return [str(c.params["text"]) for c in calls if c.params.get("thread_ts") == ts and c.ok]


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        (ErrorStatus(500), ("Outcome unknown", "did not retry")),
        (ErrorStatus(503, "Service unavailable"), ("Outcome unknown", "did not retry")),
        (DropConnection(), ("Outcome unknown", "Check the call log")),
        (TooManyRequests(retry_after="7"), ("rate-limiting", "7 s", "nothing was dialled")),
        # A Retry-After no clock can hold: no wait given, not an error of its own.
        (TooManyRequests(retry_after="Mon, 01 Jan 2020 99999999999999999999:00:00 GMT"),
         ("rate-limiting", "nothing was dialled")),
        (MalformedJson(), ("Call placed", "no session id")),
        # Nested deeper than a JSON parser recurses: unreadable, as any other malformed body.
        (MalformedJson("[" * 100_000), ("Call placed", "no session id")),
        (ErrorStatus(400, "Flow is disabled"), ("Flow is disabled", "Nothing was dialled")),
    ],
    ids=["500", "503", "dropped", "429", "429-unreadable-retry-after", "malformed-json",
         "nested-json", "400"],
)
async def test_each_fault_tells_the_requester_posts_once_and_others_are_served(
    bot_factory: BotFactory, behaviour: Behaviour, expected: tuple[str, ...]
) -> None:
    # A long read timeout: the gate, not the clock, decides when the faulty answer comes.
    bot = await bot_factory("http", EVOVOICE_TIMEOUT="30")
    gate = asyncio.Event()
    bot.evo.queue_outgoing(Gated(gate, behaviour))
    await bot.command(f"{FULL} escalation", user_id="U0MANAGER")
    await bot.evo.wait_for_posts(1)

    # While the first call waits for its answer, someone else calls and is confirmed.
    await bot.command(f"{OTHER} escalation", user_id="U0ADMIN")
    await bot.slack.wait_for_call(
        "chat.postMessage", lambda c: "Call placed" in str(c.params.get("text"))
    )
    assert reply_in_thread_of(bot, "U0MANAGER") == []

    gate.set()
    await bot.settle()
    [result] = reply_in_thread_of(bot, "U0MANAGER")
    for words in expected:
        assert words in result, result
    assert [p.json["numberToDial"] for p in bot.evo.outgoing_posts].count(FULL) == 1
    assert len(bot.evo.outgoing_posts) == 2


@pytest.mark.parametrize("error", [
    {"responseStatus": {"errorCode": "ArgumentException", "message": "Flow is disabled"}},
    {"ResponseStatus": {"ErrorCode": "InvalidOperationException", "Message": "Busy"}},
])
async def test_a_2xx_carrying_a_servicestack_error_is_no_placed_call(
    bot_factory: BotFactory, error: dict[str, object]
) -> None:
    # A service that returns its ResponseStatus instead of throwing answers 200 with the error
    # inside: whether the call was placed is then not known. It was reported "Call placed".
    bot = await bot_factory("http", **FAST)
    bot.evo.queue_outgoing(Answered(error))  # the stand-in placed the call all the same
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    assert "Outcome unknown" in str(status.text) and "Call placed" not in str(status.text)
    [session_id] = bot.evo.sessions
    bot.evo.set_session_state(session_id, callState="Connected")
    await poll_now(bot)
    await wait_for_edit(bot, status, "🟢 Connected")
    assert len(bot.evo.outgoing_posts) == 1


async def test_a_2xx_with_an_empty_response_status_is_a_placed_call(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http")
    bot.evo.queue_outgoing(Answered({"responseStatus": {}, "id": ""}))
    await bot.command(f"{FULL} escalation")
    await bot.settle()
    assert "Call placed" in thread_result(bot)


async def test_a_web_page_answered_200_to_the_post_is_no_placed_call(
    bot_factory: BotFactory,
) -> None:
    # A front end's maintenance page (HtmlPage) answers for a service that may never have run: it
    # was told "📲 Call placed" and, the call never found, "Evo Voice accepted the call".
    bot = await bot_factory("http", **FAST)
    bot.evo.queue_outgoing(HtmlPage())
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    assert "Outcome unknown" in str(status.text) and "Call placed" not in str(status.text)
    await looked_for_long_enough(bot)
    await wait_for_edit(bot, status, "most likely not placed")
    assert len(bot.evo.outgoing_posts) == 1


async def test_a_web_page_answered_200_for_a_call_that_rings_finds_and_follows_it(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http", **FAST)
    bot.evo.queue_outgoing(Acted(HtmlPage()))
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    assert "Outcome unknown" in str(status.text) and session_id in str(status.text)
    bot.evo.set_session_state(session_id, callState="Connected")
    await poll_now(bot)
    await wait_for_edit(bot, status, "🟢 Connected")
    assert len(bot.evo.outgoing_posts) == 1
