"""Helpers for the tests of on-call escalations (test_escalation*.py and the tests of other
features that start one): the roster, the escalation service's clock, the shortcuts and the form,
the escalation's message, its pages and buttons."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import generate_latest
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Policy
from bot.oncall.escalation_form import (
    ESCALATE_GLOBAL_SHORTCUT_ID,
    ESCALATE_MESSAGE_SHORTCUT_ID,
    ESCALATION_FORM_CALLBACK_ID,
    EscalationField,
)
from bot.oncall.escalation_store import EscalationState
from bot.oncall.escalation_views import ACK_ESCALATION_ACTION, STOP_ESCALATION_ACTION
from bot.oncall.roster import OnCall, Overrides, PhoneBook
from bot.standins.evovoice import ErrorStatus, Gated
from bot.storage.database import Database
from bot.standins.slack import (
    ApiCall,
    Message,
    View,
    block_actions_payload,
    global_shortcut_payload,
    interactive_body,
    message_shortcut_payload,
    view_submission_payload,
)
from tests.budget_clock import LeapingClock
from tests.conftest import POLICY, Ack, BotFactory, BotUnderTest, until
from tests.follow_helpers import FAST, poll_now, services
from tests.interactions import as_shown, interact

ROSTER = POLICY + """
[people]
U0ALICE = "+18144043093"
U0BOB = "+18144043094"
U0MANAGER = "(814) 404-3090"

[oncall]
flow = "Escalation"
rotation = ["U0ALICE", "U0BOB", "U0CAROL"]
timezone = "America/New_York"
escalate_to = ["U0MANAGER"]
"""

# Alice alone is on call, and nobody comes after her.
ALICE_ONLY = ROSTER.replace('rotation = ["U0ALICE", "U0BOB", "U0CAROL"]', 'rotation = ["U0ALICE"]'
                            ).replace('escalate_to = ["U0MANAGER"]', "")

# The manager alone is on call, and the only person in the phone book: what `/call test` rings
# (test_test_call.py, test_call_counts.py).
MANAGER_ONLY = POLICY + """
[people]
U0MANAGER = "(814) 404-3090"

[oncall]
flow = "Escalation"
rotation = ["U0MANAGER"]
"""

ALICE, BOB, MANAGER = "+18144043093", "+18144043094", "+18144043090"
CHANNEL = "C0OPS"
_ACTION_TS = itertools.count(1)
# What the requester is told when the escalation's card can't be posted in the channel.
NOT_POSTED = "I could not post the on-call escalation in <#C0OPS>"
# Alice's shift: Monday 9 March 09:00 EDT to Monday 16 March 09:00 EDT.
IN_ALICES_SHIFT = dt.datetime(2026, 3, 10, 15, tzinfo=dt.UTC)
IN_CAROLS_SHIFT = dt.datetime(2026, 3, 24, 15, tzinfo=dt.UTC)


class Clock:
    """The escalation service's clock: real time at first, then moved on by the test."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def start(
    bot_factory: BotFactory, mode: str = "http", *, policy: str = ROSTER,
    at: dt.datetime = IN_ALICES_SHIFT, clock: Clock | None = None,
    slack_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, **env: str,
) -> tuple[BotUnderTest, Clock]:
    """`slack_sleep`: what the bot's Slack client waits out 429s with (bot_factory's)."""
    bot = await bot_factory(mode, policy=policy, slack_sleep=slack_sleep,
                            **{**FAST, **env})  # env over FAST
    clock = clock or Clock()
    services(bot).oncall.clock = lambda: at
    services(bot).escalations.clock = clock
    return bot, clock


async def open_on_message(
    bot: BotUnderTest, *, text: str = "db primary is down", user_id: str = "U0ADMIN",
    thread_ts: str | None = None, on: Message | None = None,
) -> tuple[View, Message]:
    """Someone posts `text` (or `on` was posted), `user_id` uses the message shortcut on it: the
    modal, the message."""
    message = on or bot.slack.add_message(CHANNEL, text, user="U0SOMEONE", thread_ts=thread_ts)
    text = message.text or ""
    before = len(bot.slack.calls_to("views.open"))
    trigger = bot.slack.new_trigger_id()
    await interact(bot, message_shortcut_payload(
        callback_id=ESCALATE_MESSAGE_SHORTCUT_ID, channel_id=CHANNEL, message_ts=message.ts,
        message_text=text, thread_ts=message.thread_ts, response_url=bot.slack.response_url(),
        user_id=user_id, trigger_id=trigger,
    ))
    opened = (await bot.slack.wait_for_calls("views.open", before + 1))[-1]
    assert opened.params["trigger_id"] == trigger and opened.ok, opened.brief()
    view = bot.slack.views[opened.response["view"]["id"]]  # type: ignore[index]
    return await as_shown(view), message


async def open_global(bot: BotUnderTest, *, user_id: str = "U0ADMIN") -> View:
    before = len(bot.slack.calls_to("views.open"))
    trigger = bot.slack.new_trigger_id()
    await interact(bot, global_shortcut_payload(
        callback_id=ESCALATE_GLOBAL_SHORTCUT_ID, user_id=user_id, trigger_id=trigger))
    opened = (await bot.slack.wait_for_calls("views.open", before + 1))[-1]
    assert opened.ok, opened.brief()
    return await as_shown(bot.slack.views[opened.response["view"]["id"]])  # type: ignore[index]


def reason_block(view: dict[str, Any]) -> dict[str, Any]:
    return next(b for b in view["blocks"] if b.get("block_id") == EscalationField.REASON)


async def submit(
    bot: BotUnderTest, view: View, *, user_id: str = "U0ADMIN", reason: str | None = None,
    channel: str | None = None,
) -> dict[str, Any]:
    """Press Escalate, with the reason as prefilled unless given; return the ack's body."""
    shown = view.versions[-1]
    if reason is None:
        reason = reason_block(shown)["element"].get("initial_value")
    values: dict[str, dict[str, Any]] = {
        EscalationField.REASON: {EscalationField.REASON: {"type": "plain_text_input",
                                                          "value": reason}},
    }
    if channel is not None:
        values[EscalationField.CHANNEL] = {EscalationField.CHANNEL: {
            "type": "conversations_select", "selected_conversation": channel}}
    return await interact(bot, view_submission_payload(
        callback_id=ESCALATION_FORM_CALLBACK_ID, values=values, view=view.view, view_id=view.id,
        user_id=user_id,
    ))


def in_the_channel(call: ApiCall) -> bool:
    return call.params.get("channel") == CHANNEL


def posts_in(bot: BotUnderTest, channel: str, root: str) -> list[Message]:
    return bot.slack.thread(channel, root)


def broadcasts(bot: BotUnderTest) -> list[str]:
    """The thread posts also shown in the channel that Slack took, in the order it took them."""
    return [str(c.params.get("text")) for c in bot.slack.calls_to("chat.postMessage")
            if c.ok and c.params.get("reply_broadcast") in (True, "true", "1")]


async def wait_for_post(bot: BotUnderTest, text: str, timeout: float = 10.0) -> ApiCall:
    return await bot.slack.wait_for_call(
        "chat.postMessage", lambda c: text in str(c.params.get("text")), timeout=timeout)


async def page_of(bot: BotUnderTest, user_id: str) -> Message:
    """The direct message paging `user_id` (the first, when they were paged more than once)."""
    call = await bot.slack.wait_for_call(
        "chat.postMessage", lambda c: c.params.get("channel") == user_id, timeout=10.0)
    assert call.response is not None
    return bot.slack.messages[(call.response["channel"], call.response["ts"])]


async def escalation_message(bot: BotUnderTest) -> Message:
    call = await wait_for_post(bot, "*On-call escalation*")
    assert call.response is not None
    return bot.slack.messages[(call.response["channel"], call.response["ts"])]


async def wait_for_edit(bot: BotUnderTest, message: Message, text: str) -> None:
    await bot.slack.wait_for_call(
        "chat.update",
        lambda c: c.params.get("ts") == message.ts and text in str(c.params.get("text")),
        timeout=10.0,
    )


def dialled(bot: BotUnderTest) -> list[str]:
    return [str(r.json["numberToDial"]) for r in bot.evo.outgoing_posts]


def retries_on(bot: BotUnderTest, clock: Clock) -> list[float]:
    """A step's pauses before dialling again take no real time: each moves the escalation's
    `clock` on (towards the step's deadline), and the request budget's 429 pauses leap on a clock
    of their own. The list fills with each pause asked for, in seconds."""
    pauses: list[float] = []

    async def pause(seconds: float) -> None:
        pauses.append(seconds)
        clock.advance(seconds)
        await asyncio.sleep(0)

    services(bot).calls.dialler.sleep = pause
    leaping_budget(bot)
    return pauses


class HeldPauses:
    """A step's pauses before dialling again, each held until the test lets it end: the test
    decides what has happened (Evo Voice's answer changed, the clock moved on) when the step
    tries again. The request budget's 429 pauses leap on a clock of their own."""

    def __init__(self, bot: BotUnderTest) -> None:
        self.asked: list[float] = []  # each pause asked for, in seconds
        self._gate = asyncio.Event()
        self._held = asyncio.Condition()
        self._waiting = 0
        services(bot).calls.dialler.sleep = self._pause
        leaping_budget(bot)

    async def _pause(self, seconds: float) -> None:
        gate = self._gate
        async with self._held:
            self.asked.append(seconds)
            self._waiting += 1
            self._held.notify_all()
        await gate.wait()

    async def until_held(self, n: int = 1, timeout: float = 10.0) -> None:
        """Until the `n`-th pause (counted from the first) is being held."""
        async def held() -> None:
            async with self._held:
                await self._held.wait_for(lambda: len(self.asked) >= n and self._waiting > 0)

        await asyncio.wait_for(held(), timeout)

    def release(self) -> None:
        """End the pauses held now; later ones are held again."""
        self._gate.set()
        self._gate, self._waiting = asyncio.Event(), 0


def leaping_budget(bot: BotUnderTest) -> None:
    """The request budget's pauses after a 429 (a Retry-After) take no real time."""
    budget, budget_clock = services(bot).evo.budget, LeapingClock()
    budget.clock, budget.sleep = budget_clock, budget_clock.sleep


def session_of(bot: BotUnderTest, number: str) -> str:
    [session_id] = [sid for sid, s in bot.evo.sessions.items() if s.get("toAddress") == number]
    return session_id


async def alices_post_held(
    bot_factory: BotFactory, *, policy: str = ROSTER, **env: str
) -> tuple[BotUnderTest, Clock, asyncio.Event]:
    """An escalation whose first step's POST (Alice's) has reached Evo Voice, its answer held
    until the event returned is set: the bot, the escalation's clock, that event."""
    bot, clock = await start(bot_factory, policy=policy, **env)
    gate = asyncio.Event()
    bot.evo.queue_outgoing(Gated(gate))
    view, _ = await open_on_message(bot)
    assert await submit(bot, view) == {}
    await escalation_message(bot)
    await bot.evo.wait_for_posts(1)
    return bot, clock, gate


async def died_dialling_alice(bot_factory: BotFactory) -> tuple[BotUnderTest, Clock, str]:
    """An escalation whose bot died with Alice's step POST in flight, a POST Evo Voice answered
    all the same (placing her call): the stopped bot (its stand-ins are the next start's), the
    escalation's clock, her session."""
    first, clock, dial = await alices_post_held(bot_factory)
    await first.runtime.stop(grace=0)
    dial.set()
    await until(lambda: first.evo.sessions)
    return first, clock, session_of(first, ALICE)


def hung_up(bot: BotUnderTest, session_id: str) -> bool:
    return bool(bot.evo.hang_ups(session_id))


async def click_stop(
    bot: BotUnderTest, message: Message, *, user_id: str
) -> tuple[Ack, str]:
    return await click(bot, message, STOP_ESCALATION_ACTION, user_id=user_id)


async def click_ack(bot: BotUnderTest, message: Message, *, user_id: str) -> tuple[Ack, str]:
    """I'm on it, on the escalation's message or on a page."""
    return await click(bot, message, ACK_ESCALATION_ACTION, user_id=user_id)


async def click(
    bot: BotUnderTest, message: Message, action_id: str, *, user_id: str
) -> tuple[Ack, str]:
    url = bot.slack.response_url()
    [(block_id, value)] = [(b.get("block_id"), e["value"]) for b in message.blocks or []
                           if b.get("type") == "actions"
                           for e in b["elements"] if e["action_id"] == action_id]
    payload = block_actions_payload(
        action_id=action_id, block_id=block_id, value=value,
        channel_id=message.channel, message_ts=message.ts,
        message=message.to_api(bot.slack.team_id), response_url=url, user_id=user_id,
        # Every click has its own action_ts; a double click is two clicks.
        extra_action={"action_ts": f"1700000200.{next(_ACTION_TS):06d}"},
    )
    if bot.mode == "socket":
        envelope = await bot.slack.send_envelope("interactive", payload)
        return Ack(200, envelope.get("payload") or {}), url
    return await bot.post_signed(interactive_body(payload)), url


async def end_from_its_message(
    bot: BotUnderTest, escalation: Message, ending: str, *, acknowledged_by: str
) -> None:
    """`ending` "stop": Stop escalation (by a SystemAdministrator); "ack": I'm on it, by
    `acknowledged_by`. Returns once the escalation has ended so."""
    if ending == "stop":
        await click_stop(bot, escalation, user_id="U0ADMIN")
        await wait_for_state(bot, EscalationState.STOPPED)
    else:
        await click_ack(bot, escalation, user_id=acknowledged_by)
        await wait_for_state(bot, EscalationState.ACKNOWLEDGED)


def as_first_drawn(message: Message) -> Message:
    """The message as first posted: what a client that hasn't refreshed still shows and clicks."""
    return Message(channel=message.channel, ts=message.ts, text=message.text,
                   blocks=message.versions[0]["blocks"])


def has_stop_button(message: Message) -> bool:
    return STOP_ESCALATION_ACTION in json.dumps(message.blocks or [])


async def state_of(bot: BotUnderTest) -> str:
    [row] = await services(bot).db.fetchall("SELECT state FROM escalations")
    return str(row["state"])


async def wait_for_state(bot: BotUnderTest, state: str, timeout: float = 10.0) -> None:
    async def reached() -> None:
        while await state_of(bot) != state:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(reached(), timeout)


def metrics_text(bot: BotUnderTest) -> str:
    return generate_latest(bot.runtime.metrics.registry).decode().replace("callbot_", "")


async def running_escalation(
    bot_factory: BotFactory, mode: str = "http", policy: str = ROSTER, **env: str
) -> tuple[BotUnderTest, Clock, Message]:
    """An escalation started from a message's shortcut, Alice's phone ringing: the bot, the
    escalation service's clock, the escalation's message. `env`: the bot's settings (`start`)."""
    bot, clock = await start(bot_factory, mode, policy=policy, **env)
    return bot, clock, await escalated(bot)


async def escalated(bot: BotUnderTest) -> Message:
    """An escalation started from a message's shortcut on `bot`, Alice's phone ringing: its
    message."""
    view, _ = await open_on_message(bot)
    assert await submit(bot, view) == {}
    escalation = await escalation_message(bot)
    await bot.evo.wait_for_posts(1)
    await wait_for_edit(bot, escalation, "🔔 ringing…")
    return escalation


# A roster whose flow writes "Acknowledged" or "Pressed 1" when its person presses 1.
WITH_OUTCOMES = ROSTER + 'ack_outcomes = ["Acknowledged", "Pressed 1"]\n'


async def alice_on_the_phone(
    bot_factory: BotFactory, env: dict[str, str] | None = None, **state: Any
) -> tuple[BotUnderTest, Clock, Message, str]:
    """running_escalation() with WITH_OUTCOMES (and `env`), Alice's call seen answered (her
    session set to `state`, Connected unless said) and not acknowledged: the bot, its clock, the
    escalation's message and Alice's session."""
    bot, clock, escalation = await running_escalation(bot_factory, policy=WITH_OUTCOMES,
                                                      **(env or {}))
    alice = session_of(bot, ALICE)
    bot.evo.set_session_state(alice, **{"callState": "Connected", **state})
    await poll_now(bot)
    await wait_for_edit(bot, escalation, "1. <@U0ALICE> (+1 814 ••• 3093) — 🟢 on the phone, "
                                         "not acknowledged yet")
    return bot, clock, escalation, alice


async def acknowledged_on_the_call_alone(bot: BotUnderTest, escalation: Message) -> None:
    """The card says Alice acknowledged on the call, the escalation is over, and nobody else's
    phone rang."""
    await wait_for_edit(bot, escalation, "<@U0ALICE> acknowledged on the call at")
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)
    await bot.settle()
    assert dialled(bot) == [ALICE]


async def steps_past_alices_refused(bot: BotUnderTest, clock: Clock) -> None:
    """Evo Voice can't list its flows from now on (the catalog forgotten, its next ten listings
    answered 500), so the checks of the steps after Alice's refuse them; her deadline passes,
    and the chain goes down the rest to its end (EXHAUSTED)."""
    services(bot).catalog.forget()
    for _ in range(10):
        bot.evo.queue("GET", "/flows", ErrorStatus(500))
    clock.advance(91)
    await wait_for_state(bot, EscalationState.EXHAUSTED)


def on_call(db: Database, client: AsyncWebClient, policy: Policy) -> OnCall:
    """The on-call service alone, on `db`, its phone book asking Slack through `client` (the
    `client` fixture): for the roster's own tests, without a bot."""
    return OnCall(policy.oncall, phones=PhoneBook(client, policy.people, policy.dial_policy),
                  overrides=Overrides(db))


async def picked_up_unseen(bot: BotUnderTest, session_id: str, **state: Any) -> asyncio.Event:
    """The phone of `session_id` is picked up (its session set to `state`, Connected unless said)
    while the follower's poll is out: that poll hangs until the event returned is set, so only a
    fresh read of the session sees the answer."""
    polls = len(bot.evo.requests_to("GET", "/sessions"))
    poll_answered = asyncio.Event()
    bot.evo.queue("GET", "/sessions", Gated(poll_answered))  # the follower's next poll hangs
    await until(lambda: len(bot.evo.requests_to("GET", "/sessions")) > polls)
    bot.evo.set_session_state(session_id, **{"callState": "Connected", **state})
    return poll_answered
