"""An escalation in Slack: its card (the escalation's own message, edited in place), the pages (a
direct message to each person paged), and the few posts its thread gets.

    open()      post the card, alongside the first dial (never before it); if Slack won't take it,
                the requester is told, privately, and the chain goes on without a card
    refresh()   make the card match the rows (edited only when the drawing changed): each
                person and how their step went, the current step's call as it goes (calling,
                ringing, on the phone), who acknowledged and when; once the escalation is over,
                the pages too
    refresh_until_shown()  the same, once the escalation is over, tried again while Slack
                refuses it (as a call's final status is), under the chain's lease: a replica
                that dies meanwhile leaves it to another (EscalationService.take_over)
    page()      the person's direct message when their step begins, once per step, sent in the
                background (after the card's first try, so it links to it); a database that
                fails meanwhile delays it (until_database_answers) rather than losing it, and a
                page Slack took is recorded once the database answers, so its end is shown
    post()      a post in the escalation's thread (the final broadcast), kept until delivered
                (bot/slack/outbox.py): a post Slack refused is delivered later, in the
                background, after a restart too, rather than never

Without a card (Slack refused it: a channel the bot isn't in, a 5xx, a 429 asking to wait over a
minute; or it can't be edited any more: deleted, its channel archived or left) nothing goes in the
thread: the requester hears of the escalation's end privately, through
the shortcut's response_url, else a direct message, drawn like the card. That telling is part of
showing the end: tried again while Slack refuses it (refresh_until_shown), after a restart too (by
direct message: the response_url is kept in memory only), and made once (under a claim, freed only
when nobody could be told; the next tries then go by direct message, as a response_url post that
timed out may have been shown).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from bot.calls import messages as common_views
from bot.calls.follow import wait_or_wake
from bot.calls.status_message import digest, redraw, until_shown
from bot.calls.store import CallStore
from bot.errors import reference_id
from bot.oncall import escalation_views as views
from bot.oncall.escalation_store import Escalation, EscalationState, EscalationStore, Page, Target
from bot.runner import RowRunner
from bot.slack.notify import Notifier
from bot.slack.threads import Edit, Kept, NotDelivered, Once, Thread, nothing_kept
from bot.storage.claims import Claims
from bot.storage.faults import until_database_answers

logger = logging.getLogger(__name__)

# An escalation's thread posts are kept until delivered (bot/slack/outbox.py).
ESCALATION_POST = "escalation"
# The longest a late page waits to hear whether its call still rings; then it says it does.
PHONE_CHECK_SECONDS = 1.0


class EscalationCard:
    def __init__(
        self,
        *,
        store: EscalationStore,
        callstore: CallStore,
        notifier: Notifier,
        claims: Claims,
        on_paged: Callable[[], None] | None = None,
        runner: RowRunner | None = None,
        first_pause: float = 1.0,
        pause: Callable[[asyncio.Event, float], Awaitable[None]] = wait_or_wake,
    ) -> None:
        self._store = store
        # An end Slack refused is tried again in the chain's task (`runner`), woken when the bot
        # stops; the pauses between tries as a call's final edit has them (until_shown).
        self._runner = runner
        self._first_pause = first_pause
        self._pause = pause
        self._callstore = callstore  # the current step's call: how it is going
        self._notifier = notifier
        self._claims = claims
        self._on_paged = on_paged  # metrics: a person paged
        self._locks: dict[int, asyncio.Lock] = {}
        # Set once the card's first try is over (posted or not): pages wait for it, for its link.
        self._opened: dict[int, asyncio.Event] = {}
        # The requester's way to hear the end when there is no card (kept in memory only).
        self._response_urls: dict[int, str] = {}
        # Cards Slack won't let the bot edit again (Edit.GONE); a restart's first edit finds out.
        self._gone: set[int] = set()
        # Pages and cards being sent; posts Slack refused being tried again (see post).
        self._sending: set[asyncio.Task[None]] = set()
        # The (escalation, step) pages this process is sending: never sent `again` beside them.
        self._paging: set[tuple[int, int]] = set()

    async def stop(self, grace: float) -> None:
        """Give the pages and cards being sent `grace` seconds (a page cut short is sent by the
        next run of its chain, `page(again=True)`); undelivered thread posts stay in the outbox."""
        if self._sending:
            await asyncio.wait(list(self._sending), timeout=grace)
        for task in list(self._sending):
            task.cancel()

    def _spawn(self, work: Coroutine[Any, Any, None], escalation_id: int, what: str) -> None:
        task = asyncio.create_task(work, name=f"escalation {escalation_id}: {what}")
        self._sending.add(task)
        task.add_done_callback(lambda done: self._sent(done, escalation_id))

    def _sent(self, task: asyncio.Task[None], escalation_id: int) -> None:
        self._sending.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # A bug (a failing database is waited out): logged once, never left unretrieved.
            logger.error("%s failed; reference %s", task.get_name(), reference_id(),
                         exc_info=exc, extra={"escalation_id": escalation_id})

    # ------------------------------------------------------------------------------ the card

    def expect(self, escalation_id: int) -> None:
        """The card is about to be posted: pages wait for its first try from now (for its link),
        even if the chain gets there first."""
        self._opened.setdefault(escalation_id, asyncio.Event())

    async def open(self, escalation_id: int, response_url: str | None) -> None:
        """Post the card (through the channel's posting lane, bot/slack/notify.py) and fill it in
        with whatever happened meanwhile; if Slack won't take it, tell the requester."""
        self.expect(escalation_id)
        opened = self._opened[escalation_id]
        if response_url is not None:
            self._response_urls[escalation_id] = response_url
        try:
            await self._post_card(escalation_id, response_url)
        finally:
            opened.set()
        # The chain went on meanwhile: the card shows where it is (without a card, the requester
        # hears of an end that came meanwhile).
        await self.refresh(escalation_id)

    async def _post_card(self, escalation_id: int, response_url: str | None) -> None:
        escalation = await self._store.get(escalation_id)
        if escalation is None:
            return
        message = views.escalation_message(escalation, [])
        try:
            thread = await self._notifier.start_thread(
                escalation.channel_id, message, response_url=None, thread_ts=escalation.thread_ts,
            )
        except NotDelivered as exc:
            logger.warning("escalation %s: its card could not be posted in %s (%s)",
                           escalation.id, escalation.channel_id, exc,
                           extra={"escalation_id": escalation.id})
            await self._notifier.tell(
                user_id=escalation.requester_id, channel_id=None, response_url=response_url,
                message=views.card_not_posted(escalation),
            )
            return
        # Posted: kept track of once the database answers (the pages wait for it, for its link),
        # else the card is never edited and a restart would post another.
        await until_database_answers(
            lambda: self._store.update(escalation_id, thread_ts=thread.ts,
                                       message_ts=thread.parent_ts, shown_digest=digest(message)),
            f"escalation {escalation_id}: its card", extra={"escalation_id": escalation_id})

    def open_in_background(self, escalation_id: int) -> None:
        """After a restart, for an escalation whose card was never posted."""
        self.expect(escalation_id)
        self._spawn(self.open(escalation_id, None), escalation_id, "its card")

    async def refresh(self, escalation_id: int) -> bool:
        """Make the escalation's message match its rows (edited only when the drawing changed);
        False if Slack refused an edit (the card's or a page's)."""
        lock = self._locks.setdefault(escalation_id, asyncio.Lock())
        shown = True
        async with lock:
            escalation = await self._store.get(escalation_id)
            if escalation is None:
                return True
            if (card := self._card(escalation)) is not None:
                shown = await self._redraw_card(escalation, card)
            if not escalation.active and self._card(escalation) is None:
                shown = await self._tell_the_end(escalation)
            if escalation.state != EscalationState.RUNNING:
                shown = await self._refresh_pages(escalation) and shown
        if not escalation.active and not lock.locked():
            self._locks.pop(escalation_id, None)
            if self._opening(escalation_id) is None:
                self._opened.pop(escalation_id, None)
            if shown:  # its end was told (or shown on the card): later words go by DM
                self._response_urls.pop(escalation_id, None)
                self._gone.discard(escalation_id)
        return shown

    def _card(self, escalation: Escalation) -> str | None:
        """The card's ts; None without one to edit (never posted, or gone)."""
        return None if escalation.id in self._gone else escalation.message_ts

    def _opening(self, escalation_id: int) -> asyncio.Event | None:
        """While the card's first try is on, the event set when it is over; None after it (or
        if it was never made here)."""
        opened = self._opened.get(escalation_id)
        return opened if opened is not None and not opened.is_set() else None

    async def refresh_until_shown(self, escalation_id: int) -> None:
        """`refresh()` until Slack takes it: how an escalation's end is shown."""
        runner = self._runner
        shown = await until_shown(
            lambda: self.refresh(escalation_id), first_pause=self._first_pause,
            pause=self._pause, wake=runner.wake(escalation_id) if runner else None,
            closing=lambda: runner is not None and runner.closed,
        )
        if not shown and not (runner is not None and runner.closed):
            logger.warning("escalation %s: its end could not be shown", escalation_id,
                           extra={"escalation_id": escalation_id})

    async def _redraw_card(self, escalation: Escalation, ts: str) -> bool:
        # Another replica (Stop clicked there, the chain here) may edit the card while this edit
        # is on its way, and Slack takes edits in the order they arrive: drawn again from the
        # rows as they are now, so the last edit never shows an older state than theirs.
        current: Escalation | None = escalation
        shown_digest = escalation.shown_digest
        while current is not None:
            steps = await self._store.steps(current.id)
            call = (await self._callstore.get(current.step_call_id)
                    if current.active and current.step_call_id is not None else None)
            message = views.escalation_message(current, steps, call.state if call else None,
                                               call_number=call.number_masked if call else None)
            shown, drawn = await redraw(self._notifier, current.channel_id, ts, message,
                                        shown_digest)
            if drawn is None:
                if shown is Edit.GONE:  # deleted, in a channel archived or the bot was removed from
                    self._gone.add(current.id)
                return bool(shown)
            await self._store.update(current.id, shown_digest=drawn)
            current, shown_digest = await self._store.get(current.id), drawn
        return True

    async def _tell_the_end(self, escalation: Escalation) -> bool:
        """No card: the requester hears how the escalation ended, privately, once per ending (a
        late I'm on it after "nobody acknowledged" is told too). False while that is still to
        do: the card's first try isn't over (open() refreshes when it is), or nobody could be
        told (the next try tells)."""
        if self._opening(escalation.id) is not None:
            return False
        told = f"escalation:{escalation.id}:told:{escalation.state}"
        if not await self._claims.claim_when_answered(
                told, f"escalation {escalation.id}: telling its end",
                extra={"escalation_id": escalation.id}):
            return True
        steps = await self._store.steps(escalation.id)
        if await self._notifier.tell(
            user_id=escalation.requester_id, channel_id=None,
            response_url=self._response_urls.get(escalation.id),
            message=views.escalation_message(escalation, steps, buttons=False),
        ):
            return True
        # Neither the response_url nor a direct message was taken: told on the next try, by
        # direct message only. A response_url post that timed out may have been shown (Slack's
        # answer was lost, not the post): posted there again, it could be read twice, or more.
        self._response_urls.pop(escalation.id, None)
        await self._claims.release(told)
        return False

    async def _refresh_pages(self, escalation: Escalation) -> bool:
        """Once the escalation is over (or winding down), each page says so, without a button;
        False if Slack refused one."""
        every = True
        for page in await self._store.pages(escalation.id):
            shown, drawn = await redraw(
                self._notifier, page.channel_id, page.message_ts,
                views.page_message(escalation, page.user_id, page.step, page.link),
                page.shown_digest,
            )
            if drawn is not None:
                await self._store.set_page_digest(escalation.id, page.step, drawn)
            every = every and bool(shown)
        return every

    # ------------------------------------------------------------------------------ the page

    def page(self, escalation: Escalation, target: Target, *, again: bool = False,
             still_ringing: Callable[[Escalation], Awaitable[bool]] | None = None) -> None:
        """The person's direct message, sent in the background: a slow Slack delays no step.
        `again`: for a step dialled by an earlier run (the bot restarted, or the replica that
        dialled it is gone), sent unless that run's page was recorded. It says their phone
        rings only while their step lasts and `still_ringing(escalation)` doesn't say no."""
        self._spawn(self._page(escalation, target, again, still_ringing), escalation.id,
                    f"the page to {target.user_id}")

    async def _page(self, escalation: Escalation, target: Target, again: bool,
                    still_ringing: Callable[[Escalation], Awaitable[bool]] | None) -> None:
        """Once per step, however often the bot restarts, and at least once (`again`)."""
        step = (escalation.id, escalation.step)
        if again and step in self._paging:
            logger.info("escalation %s: the page to %s is still being sent by an earlier run of "
                        "the chain here", escalation.id, target.user_id,
                        extra={"escalation_id": escalation.id, "user_id": target.user_id})
            return
        self._paging.add(step)
        try:
            await self._page_once(escalation, target, again, still_ringing)
        finally:
            self._paging.discard(step)

    async def _page_once(self, escalation: Escalation, target: Target, again: bool,
                         still_ringing: Callable[[Escalation], Awaitable[bool]] | None) -> None:
        n = escalation.step
        what = f"escalation {escalation.id}: the page to {target.user_id}"
        fields = {"escalation_id": escalation.id, "user_id": target.user_id}
        opened = self._opened.get(escalation.id)
        if opened is not None:
            await opened.wait()  # the card's first try: the page links to it
        if again:
            pages = await until_database_answers(lambda: self._store.pages(escalation.id), what,
                                                 extra=fields)
            if any(page.step == n for page in pages):
                return  # sent, and recorded, by the run that dialled the step
            logger.warning("escalation %s: the page to %s was not sent before the run that "
                           "dialled the step stopped; sending it", escalation.id,
                           target.user_id, extra=fields)
        else:
            key = f"escalation:{escalation.id}:step:{n}:page"
            if not await self._claims.claim_when_answered(key, what, extra=fields):
                return
        if self._on_paged is not None:
            self._on_paged()
        current = await self._store.get(escalation.id) or escalation
        link = (await self._notifier.permalink(current.channel_id, current.message_ts)
                if current.message_ts is not None else None)
        ringing = current.state == EscalationState.RUNNING and current.step == n
        if ringing and still_ringing is not None:
            with contextlib.suppress(TimeoutError):  # a slow Evo Voice delays no page
                async with asyncio.timeout(PHONE_CHECK_SECONDS):
                    ringing = await still_ringing(current)
        message = views.page_message(current, target.user_id, n, link, ringing=ringing)
        posted = await self._send_page(escalation.id, n, target.user_id, message, what, fields)
        if posted is None:
            logger.warning("escalation %s: the page to %s could not be sent", escalation.id,
                           target.user_id, extra=fields)
            return
        channel, ts = posted
        # Slack took it: recorded (never posted again), so it is edited to the escalation's end.
        page = Page(escalation.id, n, target.user_id, channel, ts, link, digest(message))
        await until_database_answers(lambda: self._store.add_page(page), what, extra=fields)
        # It may have been clicked (or the escalation ended) before Slack's answer came: the
        # page, now recorded, is drawn as things stand.
        after = await self._store.get(escalation.id)
        if after is not None and after.state != EscalationState.RUNNING:
            await self.refresh(escalation.id)

    async def _send_page(self, escalation_id: int, step: int, user_id: str,
                         message: common_views.Message, what: str,
                         fields: Mapping[str, object]) -> tuple[str, str] | None:
        """The page's direct message, sent again while Slack refuses it (a 5xx, a 429, no answer
        in time), paced as an end is shown, for as long as the escalation still pages `step`: at
        least once, as the thread's own posts are (bot/slack/outbox.py). None if it never went.
        The first try goes whatever the escalation did meanwhile (a page the database or Slack
        delayed past its step still tells the person they were called, drawn as things stand
        once recorded); only the tries again stop with the step."""
        posted = await self._notifier.direct_message(user_id, message)
        if posted is not None:
            return posted

        async def sent() -> bool:
            nonlocal posted
            current = await until_database_answers(
                lambda: self._store.get(escalation_id), what, extra=fields)
            if current is None or current.state != EscalationState.RUNNING or (
                    current.step != step):
                return True  # nobody is paged for this step any more
            posted = await self._notifier.direct_message(user_id, message)
            return posted is not None

        runner = self._runner
        await until_shown(sent, first_pause=self._first_pause, pause=self._pause, refused=True,
                          closing=lambda: runner is not None and runner.closed)
        return posted

    # --------------------------------------------------------------------- posts in the thread

    async def post(self, escalation: Escalation, message: common_views.Message,
                   *, broadcast: bool = False, or_tell: bool = False,
                   once: Once | None = None) -> None:
        """A post in the card's thread, under the claim `once` if given. Without a card none
        (refresh tells the requester the end, drawn like the card), unless `or_tell`: the post
        says what the card can't (why the chain stopped): the requester is told privately."""
        current = await self._store.get(escalation.id)
        if current is None:
            return
        if self._card(current) is None:
            if or_tell and (once is None or await once(nothing_kept)):
                await self._notifier.tell(user_id=current.requester_id, channel_id=None,
                                          response_url=self._response_urls.get(escalation.id),
                                          message=message)
            return
        thread = Thread(channel=current.channel_id, ts=current.thread_ts, response_url=None,
                        parent=message)
        # Kept until delivered (sent again in the background, after a restart too): a failing
        # Slack delays nobody's call. Claimed as it is kept: never claimed and then lost.
        await self._notifier.post_reply(thread, message, broadcast=broadcast,
                                        kept=Kept(ESCALATION_POST, escalation.id), once=once)
