"""Helpers for the tests of calls after placing: the status message, its buttons, the audit
trail."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import re
import time
from typing import Any

import pytest

from bot.audit.trail import AuditRecord
from bot.calls.status_views import CALL_ACTIONS_BLOCK
from bot.services import Services
from bot.standins.evovoice import Gated
from bot.standins.slack import ApiCall, Message, block_actions_payload, interactive_body
from bot.storage.database import Database
from tests.budget_clock import BudgetClock
from tests.conftest import Ack, BotFactory, BotUnderTest, until

FULL = "+18144043093"
MASKED = "+1 814 ••• 3093"
OTHER = "+18145551234"  # a second number, for the audit trail's history
CHANNEL = "C0OPS"

# Following fast: tests wait for what the bot does, never for how long it takes.
FAST = {"CALL_POLL_SECONDS": "0.05", "CALL_POLL_MAX_SECONDS": "0.2", "CALL_FIND_SECONDS": "30"}

_ACTION_TS = itertools.count(1)


def services(bot: BotUnderTest) -> Services:
    assert bot.runtime.services is not None
    return bot.runtime.services


async def stall(bot: BotUnderTest) -> None:
    """The replica stalls (a paused VM, or cut off from its database): nothing renews its leases,
    which lapse at once."""
    leases = services(bot).leases
    await leases.stop()
    await services(bot).db.execute("UPDATE leases SET expires_at = 0 WHERE owner = ?",
                                   (leases.owner,))


def come_back(bot: BotUnderTest) -> None:
    """A stalled replica (`stall`) comes back: its lease keeper runs again, its first round (renew
    its leases, take over work, let go of work another replica took over) at once."""
    s = services(bot)
    s.leases.keep([s.follower.take_over, s.escalations.take_over])


def is_thread_reply(call: ApiCall) -> bool:
    return call.method == "chat.postMessage" and bool(call.params.get("thread_ts"))


async def gone_for_a_lease(stopped: BotUnderTest) -> None:
    """Move the rows that `stopped` left a lease into the past, as if that long had gone by since
    it stopped: its kept posts, leases, heartbeat and claims (a request it never finished)."""
    settings = stopped.runtime.settings
    db = Database(settings.database_url)
    await db.open()
    try:
        for table, column in (("slack_posts", "created_at"), ("leases", "expires_at"),
                              ("replicas", "seen_at"), ("claims", "claimed_at")):
            await db.execute(f"UPDATE {table} SET {column} = {column} - ?",
                             (settings.lease_seconds,))
    finally:
        await db.close()


async def status_message(bot: BotUnderTest, n: int = 1) -> Message:
    """The n-th status message (a reply in a call's thread) the bot posted: a post Slack refused
    (over the channel's posting limit, say) is no message."""
    posts = await bot.slack.wait_for_calls(
        "chat.postMessage", n, lambda c: is_thread_reply(c) and c.ok
    )
    post = posts[n - 1]
    assert post.response is not None
    return bot.slack.messages[(post.response["channel"], post.response["ts"])]


async def status_ts_recorded(bot: BotUnderTest, call_id: int, timeout: float = 10.0) -> None:
    """Until the bot has written down the ts of call `call_id`'s status message (once Slack's
    answer to its post came): before that, no click can be matched to the message."""

    async def recorded() -> None:
        while (await services(bot).db.fetchone(
                "SELECT status_ts FROM calls WHERE id = ?", (call_id,)))["status_ts"] is None:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(recorded(), timeout)


async def placed_call(bot_factory: BotFactory) -> tuple[BotUnderTest, Message, str]:
    """A bot (in HTTP mode, following FAST) that placed one call to FULL: the bot, the call's
    status message and its Evo Voice session."""
    bot = await bot_factory("http", **FAST)
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    # Its buttons work once the bot has written the message's ts down (a click before that is
    # told the call is still being set up).
    await status_ts_recorded(bot, 1)
    return bot, status, session_id


async def ended_call(bot_factory: BotFactory) -> tuple[BotUnderTest, Message, str]:
    """placed_call()'s call, ended Busy after 5 s and shown ended (Call again can be clicked)."""
    bot, status, session_id = await placed_call(bot_factory)
    end_session(bot, session_id, after_seconds=5, outcome="Busy")
    await wait_for_edit(bot, status, "Ended")
    return bot, status, session_id


async def died_before_telling(first: BotUnderTest, **command: str) -> str | None:
    """`first` places a call, fills its row in with Evo Voice's answer, and is stopped before its
    status message is posted or kept (the attempt's result being written: its task cancelled
    there, as a SIGKILL would leave it). The call's session id (None: Evo Voice refused it)."""
    reached, held = asyncio.Event(), asyncio.Event()

    async def held_result(*_: object) -> None:
        reached.set()
        await held.wait()

    services(first).audit.result = held_result  # type: ignore[method-assign]
    await first.command(f"{FULL} escalation", **command)
    await asyncio.wait_for(reached.wait(), 10)
    await first.runtime.stop(grace=0)
    assert not [c for c in first.slack.calls_to("chat.postMessage") if c.params.get("thread_ts")]
    return next(iter(first.evo.sessions), None)


def parent_of(bot: BotUnderTest, status: Message) -> Message:
    assert status.thread_ts is not None
    return bot.slack.messages[(status.channel, status.thread_ts)]


async def wait_for_edit(
    bot: BotUnderTest, status: Message, text: str, timeout: float = 10.0
) -> None:
    """Wait until the status message was edited to contain `text`."""
    await bot.slack.wait_for_call(
        "chat.update",
        lambda c: c.params.get("ts") == status.ts and text in str(c.params.get("text")),
        timeout=timeout,
    )


async def wait_for_mark(bot: BotUnderTest, parent: Message, timeout: float = 10.0) -> str:
    call = await bot.slack.wait_for_call(
        "reactions.add", lambda c: c.params.get("timestamp") == parent.ts, timeout=timeout
    )
    return str(call.params["name"])


def buttons(message: Message) -> dict[str, str]:
    """action_id -> value of the buttons the message shows now."""
    found: dict[str, str] = {}
    for block in message.blocks or []:
        if block.get("type") == "actions":
            for element in block.get("elements", []):
                found[element["action_id"]] = element.get("value", "")
    return found


def confirm_dialog(message: Message, action_id: str) -> str | None:
    """The text of the confirm dialog Slack shows before sending a click of that button."""
    for block in message.blocks or []:
        for element in block.get("elements", []) if block.get("type") == "actions" else []:
            if element["action_id"] == action_id:
                return str(element["confirm"]["text"]["text"]) if "confirm" in element else None
    return None


def texts(message: Message) -> list[str]:
    return [str(v.get("text")) for v in message.versions]


async def click(
    bot: BotUnderTest,
    status: Message,
    action_id: str,
    *,
    user_id: str = "U0MANAGER",
    value: str | None = None,
    response_url: str | None = None,
    team_id: str | None = None,
) -> tuple[Ack, str]:
    """Click a button of the status message as Slack sends it; return the ack and response_url."""
    url = response_url or bot.slack.response_url()
    payload = block_actions_payload(
        action_id=action_id,
        block_id=CALL_ACTIONS_BLOCK,
        value=value if value is not None else buttons(status)[action_id],
        channel_id=status.channel,
        message_ts=status.ts,
        message=status.to_api(bot.slack.team_id),
        response_url=url,
        user_id=user_id,
        team_id=team_id or bot.slack.team_id,
        # Every click has its own action_ts; a double click is two clicks.
        extra_action={"action_ts": f"1700000100.{next(_ACTION_TS):06d}"},
    )
    if bot.mode == "socket":
        envelope = await bot.slack.send_envelope("interactive", payload)
        return Ack(200, envelope.get("payload") or {}), url
    return await bot.post_signed(interactive_body(payload)), url


def end_session(bot: BotUnderTest, session_id: str, *, after_seconds: float, **fields: Any) -> None:
    """Let Evo Voice end the call `after_seconds` after it was created."""
    created = dt.datetime.fromisoformat(
        bot.evo.sessions[session_id]["dateCreated"].replace("Z", "+00:00")
    )
    completed = created + dt.timedelta(seconds=after_seconds)
    fields.setdefault("callState", "Disconnected")
    bot.evo.set_session_state(
        session_id,
        ended=True,
        dateCompleted=completed.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        **fields,
    )


async def poll_now(bot: BotUnderTest) -> None:
    """The follower reads each call it follows now rather than at its next poll, as it does after
    a hang-up (`CallFollower.poke`): after a test changed a session in Evo Voice, how soon the bot
    would have polled is no business of the test's. The bot still learns the change by reading
    the session; a poke during a read is kept for the next one (bot/calls/polling.py)."""
    follower = services(bot).follower
    for call in await follower.store.being_followed():
        follower.poke(call.id)


def polls_ahead(bot: BotUnderTest, seconds: float) -> None:
    """From now on the follower's polls (`poll_clock`) see `seconds` more gone by than have: in
    a call's age, and in how long its session has gone unfound or unreadable."""
    services(bot).follower.poll_clock = lambda: time.time() + seconds


async def looked_for_long_enough(bot: BotUnderTest) -> None:
    """CALL_FIND_SECONDS go by for the follower's look for a call's session, as its polls measure
    them, instead of in real time: once a look has been answered (the one after it has been
    sent), they leap past and the follower looks again at once."""

    def lookups() -> int:  # a poll reads sessions by id instead
        return len([r for r in bot.evo.requests_to("GET", "/sessions") if "to" in r.query])

    looked = lookups()
    await until(lambda: lookups() > looked + 1)
    polls_ahead(bot, bot.runtime.settings.call_find_seconds + 1)
    await poll_now(bot)


async def audit_records(bot: BotUnderTest, limit: int = 100) -> list[AuditRecord]:
    return await services(bot).audit.history(bot.slack.team_id, limit=limit)


# A bidi embedding, override or isolate, as sent or as escaped in a repr or a JSON string.
BIDI_CONTROL = re.compile(r"[\u202a-\u202e\u2066-\u2069]|\\u20(?:2[a-e]|6[6-9])", re.IGNORECASE)


def everything_sent_to_slack(bot: BotUnderTest) -> str:
    parts = [str(call.params) for call in bot.slack.calls]
    parts += [str(body) for bodies in bot.slack.responses.values() for body in bodies]
    return "\n".join(parts)


async def history(bot: BotUnderTest, args: str = "", user_id: str = "U0MANAGER") -> dict[str, Any]:
    _, url = await bot.command(f"history {args}".strip(), user_id=user_id)
    [answer] = await bot.slack.wait_for_response(url)
    assert answer["response_type"] == "ephemeral"
    return answer


def lines(answer: dict[str, Any]) -> list[str]:
    """The history's lines, one a call request, after its heading."""
    return str(answer["text"]).splitlines()[1:]


def lanes_on(bot: BotUnderTest, clock: BudgetClock) -> list[float]:
    """Run the bot's Slack posting lanes (their Retry-After waits) on `clock`, and the Slack
    stand-in's posting limit with them; the list fills with each wait asked for, in seconds."""
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await clock.sleep(seconds)

    lanes = services(bot).notifier.lanes
    lanes.clock, lanes.sleep = clock, sleep
    bot.slack.posting_clock = clock
    return waits


async def died_while_dialling(first: BotUnderTest, **command: str) -> str:
    """`first` is asked for a call and stopped with its POST in flight (its task cancelled there,
    the answer never recorded); then Evo Voice places the call all the same: its session id."""
    gate = asyncio.Event()
    first.evo.queue_outgoing(Gated(gate))
    await first.command(f"{FULL} escalation", **command)
    await first.evo.wait_for_posts(1)
    await first.runtime.stop(grace=0)
    gate.set()
    while not first.evo.sessions:
        await asyncio.sleep(0.01)
    [session_id] = first.evo.sessions
    return session_id


async def announced(second: BotUnderTest) -> Message:
    """The status message the next start posted (and Slack took) for the call it found."""
    post = await second.slack.wait_for_call(
        "chat.postMessage",
        lambda c: c.ok and "restarted while placing" in str(c.params.get("text")))
    assert post.response is not None
    return second.slack.messages[(post.response["channel"], post.response["ts"])]


def first_insert_loses_its_answer(bot: BotUnderTest, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The first call row written before a POST (with its attempt's record and lease) commits,
    then its answer is lost; the ids of the rows so written."""
    store = services(bot).follower.store
    real = store.insert_together
    lost: list[int] = []

    async def insert_together(values: Any, **kwargs: Any) -> Any:
        row = await real(values, **kwargs)
        if not lost:
            lost.append(row.id)
            raise ConnectionError("connection lost after COMMIT")
        return row

    monkeypatch.setattr(store, "insert_together", insert_together)
    return lost


async def connected_call(bot: BotUnderTest) -> tuple[Message, str]:
    """A `/call` placed and answered: its status message, showing "🟢 Connected", and its
    session's id."""
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    bot.evo.set_session_state(session_id, callState="Connected")
    await poll_now(bot)
    await wait_for_edit(bot, status, "🟢 Connected")
    return status, session_id
