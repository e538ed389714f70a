"""An escalation in Slack: its card (the escalation's own message, edited in place), the pages (a
direct message to each person paged), and the few posts its thread gets.

    refresh()   make the card match the rows (edited only when the drawing changed): each
                person and how their step went, the current step's call as it goes (calling,
                ringing, on the phone), who acknowledged and when; once the escalation is over,
                the pages too
    page()      the person's direct message when their step begins, once per step
    post()      a post in the escalation's thread (the final broadcast); a post Slack refused is
                delivered later, in the background, rather than never
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from bot.calls import messages as common_views
from bot.calls.follow import digest
from bot.calls.store import CallStore
from bot.oncall import escalation_views as views
from bot.oncall.escalation_store import (
    Escalation,
    EscalationState,
    EscalationStore,
    Page,
    Target,
)
from bot.slack.notify import Notifier, Thread
from bot.storage.claims import Claims

logger = logging.getLogger(__name__)

# A post in an escalation's thread that Slack refused is tried again after 1 s, 2 s, 4 s… (at most
# a minute apart) for up to ten minutes.
POST_RETRY_FIRST_SECONDS = 1.0
POST_RETRY_MAX_PAUSE = 60.0
POST_RETRY_FOR_SECONDS = 600.0


class EscalationCard:
    def __init__(
        self,
        *,
        store: EscalationStore,
        callstore: CallStore,
        notifier: Notifier,
        claims: Claims,
        on_paged: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._callstore = callstore  # the current step's call: how it is going
        self._notifier = notifier
        self._claims = claims
        self._on_paged = on_paged  # metrics: a person paged
        self._locks: dict[int, asyncio.Lock] = {}
        # Posts in a thread that Slack refused, being tried again (see post).
        self._deliveries: set[asyncio.Task[None]] = set()

    def stop(self) -> None:
        for delivery in list(self._deliveries):
            delivery.cancel()

    # ------------------------------------------------------------------------------ the card

    async def refresh(self, escalation_id: int) -> None:
        """Make the escalation's message match its rows (edited only when the drawing changed)."""
        lock = self._locks.setdefault(escalation_id, asyncio.Lock())
        async with lock:
            escalation = await self._store.get(escalation_id)
            if escalation is None or escalation.message_ts is None:
                return
            steps = await self._store.steps(escalation_id)
            call = (await self._callstore.get(escalation.step_call_id)
                    if escalation.active and escalation.step_call_id is not None else None)
            drawn = await self._redraw(
                escalation.channel_id, escalation.message_ts,
                views.escalation_message(escalation, steps, call.state if call else None),
                escalation.shown_digest,
            )
            if drawn is not None:
                await self._store.update(escalation_id, shown_digest=drawn)
            if escalation.state != EscalationState.RUNNING:
                await self._refresh_pages(escalation)
        if not escalation.active and not lock.locked():
            self._locks.pop(escalation_id, None)

    async def _refresh_pages(self, escalation: Escalation) -> None:
        """Once the escalation is over (or winding down), each page says so, without a button."""
        for page in await self._store.pages(escalation.id):
            drawn = await self._redraw(
                page.channel_id, page.message_ts,
                views.page_message(escalation, page.user_id, page.step, page.link),
                page.shown_digest,
            )
            if drawn is not None:
                await self._store.set_page_digest(escalation.id, page.step, drawn)

    async def _redraw(
        self, channel: str, ts: str, message: common_views.Message, shown: str | None
    ) -> str | None:
        """Edit a message whose drawing changed: the new drawing's digest, None if nothing was
        edited (unchanged, or Slack refused: tried again at the next refresh)."""
        drawn = digest(message)
        if drawn == shown or not await self._notifier.update(channel, ts, message):
            return None
        return drawn

    # ------------------------------------------------------------------------------ the page

    async def page(self, escalation: Escalation, target: Target) -> None:
        """The person's direct message: once per step, however often the bot restarts."""
        n = escalation.step
        if not await self._claims.claim(f"escalation:{escalation.id}:step:{n}:page"):
            return
        if self._on_paged is not None:
            self._on_paged()
        link = (await self._notifier.permalink(escalation.channel_id, escalation.message_ts)
                if escalation.message_ts is not None else None)
        current = await self._store.get(escalation.id) or escalation
        message = views.page_message(current, target.user_id, n, link)
        posted = await self._notifier.direct_message(target.user_id, message)
        if posted is None:
            logger.warning("escalation %s: the page to %s could not be sent", escalation.id,
                           target.user_id)
            return
        channel, ts = posted
        await self._store.add_page(Page(escalation.id, n, target.user_id, channel, ts, link,
                                        digest(message)))

    # --------------------------------------------------------------------- posts in the thread

    async def post(self, escalation: Escalation, message: common_views.Message,
                   *, broadcast: bool = False) -> None:
        thread = Thread(channel=escalation.channel_id, ts=escalation.thread_ts, response_url=None,
                        parent=message)
        if (await self._notifier.post_reply(thread, message, broadcast=broadcast)).delivered:
            return
        # Claimed already, so nobody else will post it: delivered later rather than never, and
        # in the background, so a failing Slack delays nobody's call.
        task = asyncio.create_task(
            self._deliver_later(escalation.id, thread, message, broadcast),
            name=f"escalation {escalation.id}: a post to deliver",
        )
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _deliver_later(self, escalation_id: int, thread: Thread,
                             message: common_views.Message, broadcast: bool) -> None:
        pause, waited = POST_RETRY_FIRST_SECONDS, 0.0
        while waited < POST_RETRY_FOR_SECONDS:
            await asyncio.sleep(pause)
            waited += pause
            if (await self._notifier.post_reply(thread, message, broadcast=broadcast)).delivered:
                logger.info("escalation %s: a post delivered after %.0f s", escalation_id, waited)
                return
            pause = min(pause * 2, POST_RETRY_MAX_PAUSE)
        logger.error("escalation %s: a post in its thread was lost", escalation_id)
