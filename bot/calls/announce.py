"""Telling requesters of calls they never heard of, after a replica stopped: a call it stopped in
the middle of dialling (CallFollower.reconcile_dialling), or one whose row it filled in with Evo
Voice's answer (placed, or refused) and then stopped before posting its status message, or keeping
it to be posted (bot/calls/status_posts.py). Another replica, or the next start, follows such a
call or shows its end; without this, the requester would have a parent message with no news under
it, or nothing at all where the call was told through `response_url` (which lived in the stopped
process alone).
"""

from __future__ import annotations

import logging

from bot.audit.trail import AuditLog
from bot.calls import messages as call_messages
from bot.calls.models import ESCALATION_ORIGIN
from bot.calls.status_message import StatusMessages, status_post
from bot.calls.store import CallStore, TrackedCall
from bot.slack.notify import Notifier
from bot.slack.threads import Posted, Thread, untold

logger = logging.getLogger(__name__)


class Announcer:
    def __init__(
        self, notifier: Notifier, store: CallStore, audit: AuditLog | None,
        messages: StatusMessages,
    ) -> None:
        self._notifier = notifier
        self._store = store
        self._audit = audit
        self._messages = messages

    async def tell_if_untold(self, call_id: int) -> None:
        """A call taken over (or resumed) whose replica stopped after filling in its row and
        before posting its status message (placed, or refused by Evo Voice): its requester is
        told now; then it is followed, or its end shown, as any other. A failure here stops
        neither: the outcome still marks the parent."""
        try:
            call = await self.untold(call_id)
            if call is None:
                return
            logger.warning("call %s: its requester was never told of it: telling them now",
                           call_id, extra={"call_id": call_id})
            thread, posted = await self.announce(call)
            self._messages.keep(call.id, thread)
            # A relay that reached nobody is not shown: the refresh that follows tries it again
            # (noted as shown, the requester of a call over already is never told).
            await self._messages.keep_shown(call, posted.ts, delivered=posted.delivered)
        except Exception:
            logger.exception("call %s: its requester could not be told of it", call_id,
                             extra={"call_id": call_id})

    async def origin(self, call: TrackedCall) -> str | None:
        """Where the call's request came from (its attempt's record says: bot/audit)."""
        if self._audit is None or call.attempt_id is None:
            return None
        record = await self._audit.record(call.attempt_id)
        return record.origin if record is not None else None

    async def untold(self, call_id: int) -> TrackedCall | None:
        """The call, if its requester was never shown it: no status message, no relay of one,
        none kept to be posted, and not an escalation step's (whose card tells it).

        The outbox is asked first and the row read after: a kept post delivered in between has
        its ts in the row by then (the outbox forgets the post and writes the ts in one
        transaction), where the other order could see neither and post a second message."""
        outbox = self._notifier.outbox
        if outbox is not None and await outbox.holds(status_post(call_id)):
            return None
        call = await self._store.get(call_id)
        if call is None or call.status_ts is not None or call.shown_digest is not None:
            return None
        return call if await self.origin(call) != ESCALATION_ORIGIN else None

    async def announce(self, call: TrackedCall) -> tuple[Thread, Posted]:
        """Post the call's status message: under its parent if one was posted, else under a new
        one, in the channel or by direct message. Its thread and what the post did (its `ts` None
        while Slack refuses it: kept, and sent again; not `delivered` if nobody was told yet);
        its relay, tried again as the call goes on, if Slack took the parent nowhere."""
        parent = call_messages.call_parent(call.requester_id, call.number_masked, call.flow_name)
        if call.parent_posted_ts is not None:  # posted as it was dialled: told under that one
            thread: Thread | None = Thread(call.channel_id, call.parent_ts, None, parent,
                                           call.parent_posted_ts, requester=call.requester_id)
        else:
            thread = await self._notifier.open_thread(
                call.channel_id, parent, user_id=call.requester_id, response_url=None,
                thread_ts=call.parent_ts)
        if thread is None:  # Slack failing everywhere: by direct message once it answers again
            thread = untold(call.channel_id, parent, call.requester_id, None, uses=0,
                            opened=self._notifier.clock())
            return thread, await self._notifier.post_reply(thread, self._messages.draw(call))
        # Kept until Slack takes it, as a call's status message is when it is dialled
        # (bot/calls/status_posts.py): refused now, it is sent again and its ts recorded then.
        posted = await self._notifier.post_reply(thread, self._messages.draw(call),
                                                 kept=status_post(call.id))
        # Where it went: the channel, else a direct message (whose channel its edits must name).
        await self._store.update(call.id, channel_id=thread.channel,
                                 parent_ts=thread.parent_ts or thread.ts)
        return thread, posted
