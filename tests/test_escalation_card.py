"""The escalation's Slack side, as the requester and the people paged see it: what the card, the
pages and the private notes say when things happen in an awkward order (an end while the card's
post hangs, a page posted after the escalation ended), and what each click is told.

Deadlines run on the escalation service's clock, moved by hand (see test_escalation.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from bot.oncall.escalation_store import EscalationState
from bot.standins.slack import ApiCall, Gate, Message
from tests.conftest import BotFactory, BotUnderTest, until
from tests.databases import on_both_databases
from tests.escalations import (
    NOT_POSTED,
    ALICE,
    ALICE_ONLY,
    ROSTER,
    click_ack,
    click_stop,
    dialled,
    escalation_message,
    in_the_channel,
    has_stop_button,
    hung_up,
    open_on_message,
    page_of,
    running_escalation,
    session_of,
    start,
    submit,
    wait_for_edit,
    wait_for_state,
)
from tests.escalation_ends import (
    an_end_slack_refused_to_tell, to_the_requester, told, told_privately,
    without_a_card_nor_the_shortcut_s_response_url,
)
from tests.follow_helpers import services

NOBODY = "nobody acknowledged."


@pytest.mark.parametrize("button", ["stop", "I'm on it"])
async def test_a_click_on_the_card_before_the_bot_knows_its_ts_is_honoured(
    bot_factory: BotFactory, button: str
) -> None:
    """Slack shows the card as soon as it takes it; the bot writes down its ts once Slack's
    answer comes (held here: a slow Slack, or a database failing meanwhile). Stop escalation or
    I'm on it clicked on the card meanwhile is honoured: told "This button no longer works: its
    escalation is over", the clicker would believe it ended while the phones went on ringing."""
    bot, _ = await start(bot_factory)
    view, _ = await open_on_message(bot)
    held = bot.slack.hold("chat.postMessage", after=True,
                          when=lambda c: "*On-call escalation*" in str(c.params.get("text")))
    assert await submit(bot, view) == {}
    await held.wait_until_held()
    [card] = [m for m in bot.slack.messages.values() if "*On-call escalation*" in (m.text or "")]
    await bot.evo.wait_for_posts(1)  # Alice's phone rings, the card's answer still held
    if button == "stop":
        _, url = await click_stop(bot, card, user_id="U0ADMIN")
        await wait_for_state(bot, EscalationState.STOPPED)
    else:
        _, url = await click_ack(bot, card, user_id="U0ADMIN")
        await wait_for_state(bot, EscalationState.ACKNOWLEDGED)
    assert hung_up(bot, session_of(bot, ALICE))
    assert not any("no longer works" in str(answer) for answer in bot.slack.responses.get(url, []))
    held.open()
    await wait_for_edit(bot, card, "stopped by <@U0ADMIN>." if button == "stop" else "U0ADMIN")
    assert dialled(bot) == [ALICE]


async def test_an_end_that_came_while_a_refused_card_hung_is_told_to_the_requester(
    bot_factory: BotFactory,
) -> None:
    """Alice answers while Slack is still deciding about the card, then refuses it (and her
    page): the requester hears both that the card could not be posted and that Alice
    answered."""
    bot, _ = await start(bot_factory, policy=ROSTER + 'ack = "answer"\n')
    view, _ = await open_on_message(bot)
    gate = bot.slack.hold("chat.postMessage", when=in_the_channel)
    bot.slack.fail("chat.postMessage", "fatal_error")  # the card and the page
    assert await submit(bot, view) == {}
    await gate.wait_until_held()
    await bot.evo.wait_for_posts(1)
    bot.evo.set_session_state(session_of(bot, ALICE), callState="Connected",
                              answeredByName="Alice")
    await wait_for_state(bot, EscalationState.ANSWERED)
    gate.open()
    await told_privately(bot, NOT_POSTED)
    end = await told_privately(bot, "<@U0ALICE> answered.")
    assert "1. <@U0ALICE> (+1 814 ••• 3093) — ✅ answered" in end
    await bot.settle()
    assert sum("<@U0ALICE> answered." in t for t in told(bot)) == 1  # told once


def edits_of(bot: BotUnderTest, message: Message) -> list[str]:
    return [str(c.params.get("text")) for c in bot.slack.calls_to("chat.update")
            if c.params.get("ts") == message.ts and c.ok]


def edit_of(message: Message) -> Callable[[ApiCall], bool]:
    return lambda call: call.params.get("ts") == message.ts


def redrawn_as_it_was(edits: list[str]) -> bool:
    return any(edits[i] == edits[i + 1] for i in range(len(edits) - 1))


async def wait_for_shown(bot: BotUnderTest, message: Message, text: str) -> None:
    """Wait until an edit of `message` saying `text` is taken by Slack."""
    def shown(call: ApiCall) -> bool:
        return call.ok and call.params.get("ts") == message.ts and text in str(
            call.params.get("text"))

    await bot.slack.wait_for_call("chat.update", shown, timeout=10.0)


async def test_the_card_and_the_pages_are_edited_only_when_their_drawing_changes(
    bot_factory: BotFactory,
) -> None:
    bot, clock, card = await running_escalation(bot_factory)
    page = await page_of(bot, "U0ALICE")
    clock.advance(91)  # Alice doesn't answer: Bob's phone rings
    await bot.evo.wait_for_posts(2)
    await wait_for_edit(bot, card, "2. <@U0BOB> (+1 814 ••• 3094) — 🔔 ringing…")
    bob = await page_of(bot, "U0BOB")
    await click_ack(bot, bob, user_id="U0BOB")
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)
    await wait_for_edit(bot, card, "2. <@U0BOB> (+1 814 ••• 3094) — ✅ acknowledged at")
    await wait_for_shown(bot, bob, "You acknowledged this page")
    await wait_for_shown(bot, page, "<@U0BOB> acknowledged this page")
    # Only those who didn't acknowledge are told nothing more is asked of them.
    assert "Nothing more is asked of you" not in (bob.text or "")
    assert "Nothing more is asked of you" in (page.text or "")
    await bot.settle()
    for message in (card, page, bob):
        edits = edits_of(bot, message)
        assert edits, message.text
        assert not redrawn_as_it_was(edits), edits


async def test_stop_escalation_edits_the_card_and_the_page_once_each_way(
    bot_factory: BotFactory,
) -> None:
    bot, _, card = await running_escalation(bot_factory)
    page = await page_of(bot, "U0ALICE")
    await click_stop(bot, card, user_id="U0ADMIN")
    await wait_for_state(bot, EscalationState.STOPPED)
    await wait_for_edit(bot, card, "stopped by <@U0ADMIN>")
    await wait_for_shown(bot, page, "<@U0ADMIN> stopped this escalation")
    await bot.settle()
    for message in (card, page):
        edits = edits_of(bot, message)
        assert not redrawn_as_it_was(edits), edits


def told_blocks(bot: BotUnderTest) -> list[dict[str, Any]]:
    """The blocks of what the requester was told privately."""
    blocks = [b for p in bot.slack.response_posts if p.status == 200 and isinstance(p.body, dict)
              for b in p.body.get("blocks") or []]
    return blocks + [b for m in bot.slack.channel_messages(bot.slack.dm_channel("U0ADMIN"))
                     for b in m.blocks or []]


async def test_without_a_card_nobody_came_then_a_late_i_m_on_it_are_each_told_once(
    bot_factory: BotFactory,
) -> None:
    bot, clock = await start(bot_factory, policy=ALICE_ONLY)
    view, _ = await open_on_message(bot)
    bot.slack.fail("chat.postMessage", "not_in_channel", when=in_the_channel)
    assert await submit(bot, view) == {}
    await told_privately(bot, NOT_POSTED)
    page = await page_of(bot, "U0ALICE")
    clock.advance(91)
    await wait_for_state(bot, EscalationState.EXHAUSTED)
    await told_privately(bot, "nobody acknowledged.")
    # Drawn like the card, without its buttons: there is no message for them to name.
    assert not [b for b in told_blocks(bot) if b.get("type") == "actions"]
    await click_ack(bot, page, user_id="U0ALICE")
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)
    late = await told_privately(bot, "<@U0ALICE> acknowledged at")
    assert "(after everybody was tried)" in late
    await bot.settle()
    assert sum("nobody acknowledged." in t for t in told(bot)) == 1
    assert sum("<@U0ALICE> acknowledged at" in t for t in told(bot)) == 1


async def test_without_a_card_an_end_slack_refuses_to_tell_is_told_on_the_next_try(
    bot_factory: BotFactory,
) -> None:
    """Nobody came, and Slack refuses the direct message saying so (twice): the requester is
    told all the same, once."""
    bot, clock = await start(bot_factory, policy=ALICE_ONLY)
    await without_a_card_nor_the_shortcut_s_response_url(bot)
    bot.slack.fail("chat.postMessage", "fatal_error", times=2, when=to_the_requester)
    clock.advance(91)
    await wait_for_state(bot, EscalationState.EXHAUSTED)
    await told_privately(bot, "nobody acknowledged.")
    await bot.settle()
    assert sum("nobody acknowledged." in t for t in told(bot)) == 1


async def test_without_a_card_a_late_i_m_on_it_slack_refuses_to_tell_is_told_on_the_next_try(
    bot_factory: BotFactory,
) -> None:
    bot, clock = await start(bot_factory, policy=ALICE_ONLY)
    page = await without_a_card_nor_the_shortcut_s_response_url(bot)
    clock.advance(91)
    await wait_for_state(bot, EscalationState.EXHAUSTED)
    await told_privately(bot, "nobody acknowledged.")
    bot.slack.fail("chat.postMessage", "fatal_error", times=2, when=to_the_requester)
    await click_ack(bot, page, user_id="U0ALICE")
    await told_privately(bot, "<@U0ALICE> acknowledged at")
    await bot.settle()
    assert sum("<@U0ALICE> acknowledged at" in t for t in told(bot)) == 1


async def test_without_a_card_an_end_whose_response_url_post_timed_out_is_not_posted_there_again(
    bot_factory: BotFactory,
) -> None:
    """Nobody came; Slack takes the shortcut's response_url post saying so but its answer never
    comes back in time, and refuses the direct message twice. The post may have been shown (it
    was, here): the next tries go by direct message, never the response_url again, so the
    requester reads it at most once there (and once more by DM, rather than maybe never)."""
    bot, clock = await start(bot_factory, policy=ALICE_ONLY)
    services(bot).notifier.response_timeout = 0.2
    view, _ = await open_on_message(bot)
    bot.slack.fail("chat.postMessage", "not_in_channel", when=in_the_channel)
    assert await submit(bot, view) == {}
    await told_privately(bot, NOT_POSTED)
    await page_of(bot, "U0ALICE")
    slow = bot.slack.hold_responses(when=lambda body: NOBODY in str(body.get("text")))
    bot.slack.fail("chat.postMessage", "fatal_error", times=2, when=to_the_requester)
    clock.advance(91)
    await wait_for_state(bot, EscalationState.EXHAUSTED)
    await until(lambda: any(NOBODY in (m.text or "") for m in bot.slack.channel_messages(
        bot.slack.dm_channel("U0ADMIN"))), timeout=10.0)
    await bot.settle()
    slow.open()
    assert sum(NOBODY in str(p.body) for p in bot.slack.response_posts) == 1
    assert sum(NOBODY in t for t in told(bot)) == 2


async def test_without_a_card_an_end_slack_refused_until_the_bot_stopped_is_told_after_it(
    bot_factory: BotFactory,
) -> None:
    first, clock = await an_end_slack_refused_to_tell(bot_factory)
    await first.runtime.stop(grace=5)
    first.slack.off("chat.postMessage")  # Slack takes direct messages again
    second, _ = await start(bot_factory, policy=ALICE_ONLY, clock=clock)
    await told_privately(second, "nobody acknowledged.")
    await second.settle()
    assert sum("nobody acknowledged." in t for t in told(second)) == 1


async def test_an_end_that_came_while_the_card_hung_is_shown_on_the_card_alone(
    bot_factory: BotFactory,
) -> None:
    """The card is posted late: it says how the escalation ended, and the requester gets no
    private note besides (that is for when there is no card)."""
    bot, _ = await start(bot_factory, policy=ROSTER + 'ack = "answer"\n')
    view, _ = await open_on_message(bot)
    gate = bot.slack.hold("chat.postMessage", when=in_the_channel)
    assert await submit(bot, view) == {}
    await gate.wait_until_held()
    await bot.evo.wait_for_posts(1)
    bot.evo.set_session_state(session_of(bot, ALICE), callState="Connected",
                              answeredByName="Alice")
    await wait_for_state(bot, EscalationState.ANSWERED)
    gate.open()
    card = await escalation_message(bot)
    await wait_for_edit(bot, card, "<@U0ALICE> answered.")
    await bot.settle()
    assert told(bot) == []


async def test_without_a_card_an_end_before_the_page_is_recorded_is_told_once(
    bot_factory: BotFactory,
) -> None:
    """Slack answers Alice's page only after she answered: the page, recorded late, is drawn
    as things stand, and the requester hears the end once."""
    bot, _ = await start(bot_factory, policy=ROSTER + 'ack = "answer"\n')
    view, _ = await open_on_message(bot)
    bot.slack.fail("chat.postMessage", "not_in_channel", when=in_the_channel)
    gate = bot.slack.hold("chat.postMessage", when=lambda c: c.params.get("channel") == "U0ALICE",
                          after=True)
    assert await submit(bot, view) == {}
    await told_privately(bot, NOT_POSTED)
    await gate.wait_until_held()
    bot.evo.set_session_state(session_of(bot, ALICE), callState="Connected",
                              answeredByName="Alice")
    await wait_for_state(bot, EscalationState.ANSWERED)
    await told_privately(bot, "<@U0ALICE> answered.")
    gate.open()
    page = await page_of(bot, "U0ALICE")
    await wait_for_shown(bot, page, "<@U0ALICE> answered the page")
    await bot.settle()
    assert sum("<@U0ALICE> answered." in t for t in told(bot)) == 1


@pytest.mark.parametrize("refused", ["card", "page"])
async def test_a_final_edit_slack_refuses_is_tried_again_until_it_shows_the_end(
    bot_factory: BotFactory, refused: str
) -> None:
    """Acknowledged or not, the card is how the channel learns the end: a Slack that refuses
    that edit (twice) must not leave it at "ringing" with its buttons for good. Nor a page."""
    bot, _, card = await running_escalation(bot_factory)
    page = await page_of(bot, "U0ALICE")
    bot.slack.fail("chat.update", "fatal_error", times=2,
                   when=edit_of(card if refused == "card" else page))
    await click_ack(bot, page, user_id="U0ALICE")
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)
    await wait_for_shown(bot, card, "<@U0ALICE> acknowledged at")
    assert not has_stop_button(card)
    await wait_for_shown(bot, page, "You acknowledged this page")


async def test_a_card_in_a_channel_the_bot_was_removed_from_has_its_end_told_privately(
    bot_factory: BotFactory,
) -> None:
    """Someone removes the bot from the (private) channel while Alice's phone rings: Slack
    refuses every edit of the card, and the thread's posts, for good. The requester hears how
    the escalation ended privately, as when there never was a card."""
    bot, clock, card = await running_escalation(bot_factory, policy=ALICE_ONLY)
    bot.slack.channels[card.channel] = {"is_private": True, "is_member": False}
    clock.advance(91)
    await wait_for_state(bot, EscalationState.EXHAUSTED)
    await told_privately(bot, NOBODY)
    await bot.settle()
    assert sum(NOBODY in t for t in told(bot)) == 1


async def test_once_nobody_came_the_card_offers_i_m_on_it_alone(bot_factory: BotFactory) -> None:
    bot, clock, card = await running_escalation(bot_factory, policy=ALICE_ONLY)
    clock.advance(91)
    await wait_for_state(bot, EscalationState.EXHAUSTED)
    await wait_for_shown(bot, card, "nobody acknowledged.")
    assert not has_stop_button(card)
    await click_ack(bot, card, user_id="U0ALICE")  # on the card, in the channel
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)
    await wait_for_shown(bot, card, "<@U0ALICE> acknowledged at")


async def test_a_page_that_fails_on_a_bug_is_logged_once_with_a_reference(
    bot_factory: BotFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page's background task dying of a bug is logged once, with a reference and the
    escalation's id, not left to asyncio's "Task exception was never retrieved"."""
    bot, _ = await start(bot_factory)

    async def a_bug(*_: object, **__: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(services(bot).notifier, "direct_message", a_bug)
    view, _ = await open_on_message(bot)
    assert await submit(bot, view) == {}
    await bot.evo.wait_for_posts(1)

    def failures() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.levelno >= logging.ERROR
                and "the page to U0ALICE" in r.getMessage()]

    async def logged() -> None:
        while not failures():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(logged(), 10)
    await bot.settle()
    [record] = failures()
    assert "escalation 1: the page to U0ALICE failed; reference " in record.getMessage()
    assert getattr(record, "escalation_id", None) == 1 and record.exc_info is not None


async def test_without_a_card_a_chain_that_fails_on_a_bug_tells_the_requester_with_a_reference(
    bot_factory: BotFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The card was refused, and the chain dies of a bug when Bob's step begins (reading his
    number): the requester, who has no thread to read, is told privately that nobody more will
    be called, with the reference of the log line."""
    bot, clock = await start(bot_factory)
    view, _ = await open_on_message(bot)
    bot.slack.fail("chat.postMessage", "not_in_channel", when=in_the_channel)
    assert await submit(bot, view) == {}
    await told_privately(bot, NOT_POSTED)
    await page_of(bot, "U0ALICE")  # her phone rings (paged once her call is recorded)

    async def a_bug(*_: object, **__: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(services(bot).oncall.phones, "lookup", a_bug)
    clock.advance(91)  # Alice's step ends: Bob's begins, and the chain fails
    said = await told_privately(bot, "Nobody more will be called")
    [record] = [r for r in caplog.records if "escalation 1 failed, reference " in r.getMessage()]
    reference = record.getMessage().rsplit("reference ", 1)[1]
    assert f"(reference {reference})" in said and "The on-call escalation stopped" in said
    assert record.exc_info is not None
    assert getattr(record, "escalation_id", None) == 1  # a field the JSON line carries
    await bot.settle()
    assert sum("Nobody more will be called" in t for t in told(bot)) == 1



def hold_the_first_edit_of(bot: BotUnderTest, message: Message) -> Gate:
    """Hold the next edit of `message` only (the replica that makes it), not the edits after."""
    held: list[ApiCall] = []

    def the_first(call: ApiCall) -> bool:
        if call.params.get("ts") != message.ts:
            return False
        held.append(call)
        return len(held) == 1

    return bot.slack.hold("chat.update", when=the_first)


@on_both_databases
async def test_a_stop_drawn_on_another_replica_as_the_chain_ends_never_leaves_the_card_behind(
    bot_factory: BotFactory,
) -> None:
    """Two replicas on one database. Stop is clicked on the one not running the chain, and its
    edit of the card (Alice's phone still ringing) is slow to reach Slack; meanwhile the chain's
    replica hangs her up and shows the end, and is still editing her page when the slow edit
    lands. Slack takes edits in the order they arrive: the card still ends up saying her call
    was stopped, not that it rings on."""
    first, clock, card = await running_escalation(bot_factory)
    page = await page_of(first, "U0ALICE")
    second, _ = await start(bot_factory, clock=clock)
    assert services(second).leases.owner != services(first).leases.owner
    stops_edit = hold_the_first_edit_of(first, card)
    await click_stop(second, card, user_id="U0ADMIN")
    await stops_edit.wait_until_held()  # drawn while her phone still rang
    pages_edit = hold_the_first_edit_of(first, page)
    await wait_for_edit(first, card, "1. <@U0ALICE> (+1 814 ••• 3093) — ⏹ stopped while ringing")
    await pages_edit.wait_until_held()  # the chain's replica, showing the end
    stops_edit.open()
    await second.settle()
    pages_edit.open()
    await wait_for_state(first, EscalationState.STOPPED)
    await first.settle()
    await second.settle()
    shown = first.slack.messages[(card.channel, card.ts)]
    await until(lambda: "⏹ stopped while ringing" in str(shown.text), timeout=10.0)
    assert "ringing…" not in str(shown.text)
