"""A followed call's status message and its parent's mark, kept in step with the call's row.

Every edit goes through `refresh()`, which draws the message from the row and edits it only when
the drawing changed (one call at a time): Ringing → Connected → Ended is three versions of one
message, however often the call was polled, and however often the bot restarted.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

from bot.calls import status_views as call_views
from bot.calls.store import CallStore, TrackedCall
from bot.slack.blocks import Message
from bot.slack.notify import Notifier
from bot.slack.threads import Edit, Kept, Relay, Thread

# The outbox's purpose for status messages (kept posts: bot/calls/status_posts.py), here so that
# both who posts them (dialling, the follower) and their owner can name it.
STATUS_POST = "call_status"


def status_post(call_id: int) -> Kept:
    return Kept(STATUS_POST, call_id)


logger = logging.getLogger(__name__)

# The final edit of a status message (or of an escalation's card) is tried again, each pause twice
# the last (from the first poll interval, at most FINAL_EDIT_MAX_PAUSE), for this long: a Slack
# storm of a minute must not leave a call at "Ringing" for good.
FINAL_EDIT_FOR_SECONDS = 600.0
FINAL_EDIT_MAX_PAUSE = 60.0
# A call over while its status message is held by the outbox, its fate unknown (Slack took the
# post, perhaps, and fails to show the thread): its outcome goes to the requester by direct
# message once the message has been held this long, not after the outbox's ten minutes. A
# moment's failure of Slack's is waited out first, so that the outcome is told once.
FINAL_RELAY_AFTER_SECONDS = 30.0


def digest(message: Message) -> str:
    raw = json.dumps({"text": message.text, "blocks": message.blocks}, sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()


async def until_shown(
    show: Callable[[], Awaitable[bool]],
    *,
    first_pause: float,
    pause: Callable[[asyncio.Event, float], Awaitable[None]],
    refused: bool = False,
    wake: asyncio.Event | None = None,
    closing: Callable[[], bool] = lambda: False,
) -> bool:
    """`show()` until Slack takes it (it returns True), for FINAL_EDIT_FOR_SECONDS; False if it
    never did, or `closing()` (the bot stops: its lease, released, leaves it to another replica
    or the next start). `refused`: a try was refused a moment ago, so the first is made after a
    pause; `wake` cuts a pause short. A call's status message and an escalation's card, once
    over, are both shown this way."""
    wait, waited = first_pause, 0.0
    while refused or not await show():
        refused = False
        if waited >= FINAL_EDIT_FOR_SECONDS or closing():
            return False
        await pause(wake or asyncio.Event(), wait)
        if wake is not None:
            wake.clear()
        waited += wait
        wait = min(wait * 2, FINAL_EDIT_MAX_PAUSE)
    return True


async def redraw(
    notifier: Notifier, channel: str, ts: str, message: Message, shown: str | None
) -> tuple[Edit, str | None]:
    """Edit a message whose drawing changed (`shown`: the digest Slack shows). What Slack did, and
    the digest to keep: None if nothing was edited (unchanged, or Slack refused)."""
    drawn = digest(message)
    if drawn == shown:
        return Edit.EDITED, None
    edit = await notifier.update(channel, ts, message)
    return edit, drawn if edit else None


class StatusMessages:
    def __init__(
        self,
        notifier: Notifier,
        store: CallStore,
        *,
        first_pause: float,
        pause: Callable[[asyncio.Event, float], Awaitable[None]],
        acknowledges: call_views.AckTest = call_views.no_ack_outcomes,
    ) -> None:
        self._notifier = notifier
        self._acknowledges = acknowledges
        self._store = store
        self._first_pause = first_pause
        self._wait = pause
        self._locks: dict[int, asyncio.Lock] = {}
        # Kept in memory only: the parent as posted (with its reason), and the response_url relay of
        # a call without a thread. After a restart (or a takeover by another replica) the parent
        # is drawn again from the row.
        self._parents: dict[int, Message] = {}
        self._relays: dict[int, Relay] = {}

    def draw(self, call: TrackedCall, *, buttons: bool = True) -> Message:
        return call_views.call_status(call, buttons=buttons, acknowledges=self._acknowledges)

    def unshown(self, call: TrackedCall) -> bool:
        """Whether Slack shows less than the row says: an edit or the parent's mark refused."""
        if call.status_ts is not None and digest(self.draw(call)) != call.shown_digest:
            return True
        if (call.status_ts is None and call.shown_digest is not None
                and digest(self.draw(call, buttons=False)) != call.shown_digest):
            return True  # relayed (see `_relay`), its end refused until the bot stopped
        return (
            call_views.parent_mark(call, self._acknowledges) is not None
            and not call.marked
            and call.parent_ts is not None
        )

    def keep(self, call_id: int, thread: Thread) -> None:
        """The parent as posted, and the relay of a call without a thread, for later edits."""
        self._parents[call_id] = thread.parent
        if thread.relay is not None:
            self._relays[call_id] = thread.relay

    def relayed(self, call_id: int) -> bool:
        return call_id in self._relays

    def untold(self, call: TrackedCall) -> bool:
        """Whether the call's relay reached nobody yet (Slack refused its parent everywhere, and
        its status since): each poll tries again, not only a change of the call."""
        return call.status_ts is None and call.shown_digest is None and self.relayed(call.id)

    async def keep_shown(self, call: TrackedCall, status_ts: str | None, *,
                         delivered: bool = True) -> None:
        """The status message's ts, and what it shows (or what a relay of it does). `delivered`
        False: its relay reached nobody (Slack failing), so nothing is shown yet and the next
        refresh relays it again (noted as shown, a call over at once was never told)."""
        relayed = status_ts is None and delivered and self.relayed(call.id)
        shown = None
        if status_ts or relayed:
            shown = digest(self.draw(call, buttons=not relayed))
        # Only what is known is written: the row says nothing shown until then, and the outbox
        # may have kept the message's ts meanwhile (both waiting out a failing database), which
        # a None written after it would erase: the message never edited again.
        known = {"status_ts": status_ts, "shown_digest": shown}
        await self._store.update(call.id, **{k: v for k, v in known.items() if v is not None})

    async def refresh(self, call_id: int) -> bool:
        """Make the status message and the parent's mark match the row; False if Slack refused."""
        lock = self._locks.setdefault(call_id, asyncio.Lock())
        async with lock:
            call = await self._store.get(call_id)
            if call is None:
                return True
            shown = True
            relay = self._relay(call)
            if call.status_ts is not None:
                message = self.draw(call)
                drawn = digest(message)
                while drawn != call.shown_digest:
                    edit = await self._notifier.update(call.channel_id, call.status_ts, message)
                    if edit is Edit.GONE:
                        call, relay = await self._relay_from_now(call)
                        break
                    if not edit:
                        shown = False
                        break
                    await self._store.update(call.id, shown_digest=drawn)
                    # Another replica (a button clicked there, the follower here) may have
                    # changed the row and edited the message while this edit was on its way, and
                    # Slack takes edits in the order they arrive: drawn again from the row as it
                    # is now, so the last edit never shows an older state than the row's.
                    latest = await self._store.get(call_id)
                    if latest is None or digest(self.draw(latest)) == drawn:
                        break
                    call = replace(latest, shown_digest=drawn)
                    message = self.draw(call)
                    drawn = digest(message)
            if call.status_ts is None and (relay is not None or call.is_final):
                relay, told = await self._relay_unless_held(call, relay)
                shown = shown and told
            if call.status_ts is None and relay is not None:
                message = self.draw(call, buttons=False)
                drawn = digest(message)
                if drawn != call.shown_digest:
                    if await self._notifier.relay_status(relay, message, final=call.is_final):
                        await self._store.update(call.id, shown_digest=drawn)
                    else:
                        shown = False
            mark = call_views.parent_mark(call, self._acknowledges)
            if mark and not call.marked and call.parent_ts is not None:
                # The channel sees the outcome on the parent itself, not only as a reaction.
                parent = self._parents.get(call_id) or call_views.parent_of(call)
                edited = await self._notifier.update(
                    call.channel_id, call.parent_ts,
                    call_views.parent_with_outcome(parent, call, self._acknowledges),
                )
                # A parent that can't be edited any more (deleted, its channel archived or the
                # bot removed from it) is given up on: the status message tells the outcome.
                if edited is Edit.GONE or (edited and await self._notifier.react(
                        call.channel_id, call.parent_ts, mark)):
                    await self._store.update(call.id, marked=True)
                else:
                    shown = False
        if call.is_final and not call.following and not lock.locked():
            self._locks.pop(call_id, None)
            if shown:
                self._parents.pop(call_id, None)
                self._relays.pop(call_id, None)
        return shown

    async def _relay_unless_held(
        self, call: TrackedCall, relay: Relay | None
    ) -> tuple[Relay | None, bool]:
        """The relay to tell a call without a status message through, None while its message
        waits in the outbox to be sent into the thread again (its first try failed, and so did
        the relay's, or its fate is unknown); and False if its outcome waits so, to be told.

        Relayed meanwhile, the requester would get it twice, and the relay be left at
        "Ringing…" once the thread's arrives and is the one kept current; given up on there,
        it is relayed then (`status_by_dm`). A call over is another matter: its outcome must
        not wait the outbox's ten minutes, and a relay of it can't be left behind. Held
        FINAL_RELAY_AFTER_SECONDS, it is relayed (by direct message if nothing else is kept)."""
        outbox = self._notifier.outbox
        held = None if outbox is None else await outbox.held_for(status_post(call.id))
        if held is None:
            # The row, read before the outbox was asked, may be older than its answer: a post
            # delivered in between had its ts written with the outbox's row gone. Relayed then,
            # the requester would get it twice, and the relay stay at "Ringing…" for good.
            if outbox is not None and (latest := await self._store.get(call.id)) is not None \
                    and latest.status_ts is not None:
                return None, True
            return relay, True
        if not call.is_final:
            return None, True
        if held < FINAL_RELAY_AFTER_SECONDS:
            return None, False
        return relay or self._relay_by_dm(call), True

    def _relay(self, call: TrackedCall) -> Relay | None:
        """The relay of a call without a status message in a thread. A call shown through one
        (`shown_digest` without `status_ts`) that this process never relayed was relayed by a
        process that stopped (a restart, a replica gone): its relay, response_url included, lived
        in that process's memory alone, so the requester is told by direct message from now on."""
        relay = self._relays.get(call.id)
        if relay is None and call.status_ts is None and call.shown_digest is not None:
            relay = self._relay_by_dm(call)
        return relay

    def _relay_by_dm(self, call: TrackedCall) -> Relay:
        """A relay with no response_url: the requester is told by direct message, with the
        call's parent."""
        parent = self._parents.get(call.id) or call_views.parent_of(call)
        relay = self._relays[call.id] = Relay(None, call.requester_id, parent, 0.0, uses=0)
        return relay

    async def _relay_from_now(self, call: TrackedCall) -> tuple[TrackedCall, Relay]:
        """The status message can't be edited any more (deleted, its channel archived, the bot
        removed from a private channel): from now on the requester is told by direct message,
        with the call's parent, as a relayed call is (after a restart too: see `_relay`)."""
        await self._store.update(call.id, status_ts=None, shown_digest="")
        call = replace(call, status_ts=None, shown_digest="")
        relay = self._relay_by_dm(call)
        logger.warning("call %s: its status message can't be edited any more; told by direct "
                       "message from now on", call.id, extra={"call_id": call.id})
        return call, relay

    async def refresh_until_shown(self, call_id: int, *, refused: bool = False) -> None:
        """`refresh()` until Slack takes it (see FINAL_EDIT_FOR_SECONDS); `refused`: a try was
        refused a moment ago, so the first is made after a pause."""
        if not await until_shown(lambda: self.refresh(call_id), first_pause=self._first_pause,
                                 pause=self._wait, refused=refused):
            logger.warning("call %s: the final status could not be shown", call_id,
                           extra={"call_id": call_id})
