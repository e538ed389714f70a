"""The escalation's buttons: I'm on it (on the card and on the pages) and Stop escalation.

A click is checked like any request: it must come from the escalation's card (or, for I'm on it,
from one of its pages: a page Slack has posted but the bot has not recorded yet counts for the
person its step pages), and the clicker must be allowed (see each method). Refusals go to the
clicker alone.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

from bot.access import AccessControl, Responders
from bot.calls import messages as common_views
from bot.calls.controls import ButtonClick, EscalationButtonExpired
from bot.config import KNOWN_ROLES
from bot.errors import CallbotError, NotAResponder, describe
from bot.oncall.escalation_card import EscalationCard
from bot.oncall.escalation_endings import Endings
from bot.oncall.escalation_store import (
    AckVia,
    Escalation,
    EscalationState,
    EscalationStore,
    Page,
)
from bot.slack.blocks import Markup, slack_time
from bot.slack.notify import Notifier
from bot.storage.faults import refused_when_database_fails

logger = logging.getLogger(__name__)


class NotAllowedToStop(CallbotError):
    user_message = (
        "You are not allowed to stop this escalation: only the person who started it, or someone "
        "with the Manager or SystemAdministrator role, may."
    )


class EscalationOver(CallbotError):
    user_message = "This escalation is already over; there is nothing to stop."


class NotAllowedToAcknowledge(CallbotError):
    user_message = (
        "You can't acknowledge this page: only the people it pages, and those allowed to "
        "escalate to on-call, may."
    )


class AlreadyAcknowledged(CallbotError):
    def __init__(self, by: str, at: float, *, you: bool) -> None:
        when = slack_time(at)
        who = "You" if you else f"<@{by}>"
        super().__init__(Markup(
            f"{who} acknowledged this page first, at {when}. Nobody else is being called."
        ))


class AcknowledgedTooLate(CallbotError):
    user_message = (
        "This escalation is already over (it was stopped, or could not go on), so there is "
        "nothing to acknowledge. Escalate again if someone still needs to come."
    )


class EscalationButtons:
    def __init__(
        self,
        *,
        store: EscalationStore,
        notifier: Notifier,
        access: AccessControl,
        responders: Responders,
        card: EscalationCard,
        endings: Endings,
        clock: Callable[[], float],
        nudge: Callable[[int], Awaitable[None]],
        show_end: Callable[[int], Awaitable[None]],
    ) -> None:
        self._store = store
        self._notifier = notifier
        self._access = access
        self._responders = responders
        self._card = card
        self._endings = endings
        self._clock = clock
        # The chain sees a change of its row now (EscalationService._nudge).
        self._nudge = nudge
        # An end shown, tried again while Slack refuses it (EscalationService._show_end).
        self._show_end = show_end

    async def ack_clicked(self, click: ButtonClick) -> None:
        """I'm on it: by a person the escalation pages, or anyone allowed to escalate. The first
        acknowledgement wins; a later click hears whose it was."""
        try:
            with refused_when_database_fails("your acknowledgement was not recorded"):
                escalation = await self._load(click, pages=True)
                if click.user_id not in {t.user_id for t in escalation.people}:
                    await self._may_acknowledge(escalation, click)
                now = self._clock()
                first = await self._store.acknowledge(escalation.id, by=click.user_id, at=now,
                                                      via=AckVia.BUTTON)
                late = not first and await self._store.acknowledge(
                    escalation.id, by=click.user_id, at=now, via=AckVia.BUTTON,
                    before={EscalationState.EXHAUSTED}, after=EscalationState.ACKNOWLEDGED,
                )
                current = None if first or late else await self._store.get(escalation.id)
            if first:
                logger.info("escalation %s: acknowledged by %s", escalation.id, click.user_id,
                            extra=_click_fields(escalation.id, click))
                await self._nudge(escalation.id)
                return
            if late:
                await self._acknowledged_after_exhausted(escalation.id)
                return
            if current is not None and current.acknowledged_by is not None:
                raise AlreadyAcknowledged(current.acknowledged_by,
                                          current.acknowledged_at or now,
                                          you=current.acknowledged_by == click.user_id)
            if current is not None and current.state == EscalationState.ANSWERED:
                raise AlreadyAcknowledged(current.answered_by or "", current.finished_at or now,
                                          you=current.answered_by == click.user_id)
            raise AcknowledgedTooLate()
        except CallbotError as exc:
            await self._refuse(click, exc)

    async def _may_acknowledge(self, escalation: Escalation, click: ButtonClick) -> None:
        """NotAllowedToAcknowledge unless the clicker (not paged by it) may escalate. Slack
        failing to say (a user group it can't list, users.info failing) is told as such, to try
        again: told "you can't", someone who may would not click again, and their
        acknowledgement would be lost."""
        try:
            await self._responders.require(click.user_id, action="acknowledge this page")
        except NotAResponder:
            logger.info("acknowledgement of escalation %s refused to %s", escalation.id,
                        click.user_id, extra=_click_fields(escalation.id, click))
            raise NotAllowedToAcknowledge() from None

    async def _acknowledged_after_exhausted(self, escalation_id: int) -> None:
        """Everybody was tried and the channel was told nobody came; now somebody has: told, and
        shown, under the escalation's lease (as an end is), so that a bot stopping or dying
        meanwhile leaves it to the next start or another replica (EscalationService.take_over)."""
        await self._show_end(escalation_id)

    async def stop_clicked(self, click: ButtonClick) -> None:
        """Stop escalation: the requester, or a Manager/SystemAdministrator."""
        try:
            with refused_when_database_fails("the escalation was not stopped"):
                escalation = await self._load(click)
                if click.user_id != escalation.requester_id:
                    roles = await self._access.roles_of(click.user_id)
                    if roles.isdisjoint(KNOWN_ROLES):
                        logger.info("stop of escalation %s refused to %s", escalation.id,
                                    click.user_id, extra=_click_fields(escalation.id, click))
                        raise NotAllowedToStop()
                stopping = await self._store.set_state(
                    escalation.id, {EscalationState.RUNNING}, EscalationState.STOPPING,
                    stopped_by=click.user_id,
                )
            if not stopping:
                now = await self._store.get(escalation.id)
                if now is not None and now.stopped_by == click.user_id:
                    return  # stopped by this very person: a copy of the click, or a double one
                raise EscalationOver()
        except CallbotError as exc:
            await self._refuse(click, exc)
            return
        logger.info("escalation %s: stop clicked by %s", escalation.id, click.user_id,
                    extra=_click_fields(escalation.id, click))
        await self._card.refresh(escalation.id)
        await self._nudge(escalation.id)

    async def _refuse(self, click: ButtonClick, exc: CallbotError) -> None:
        await self._notifier.tell(
            user_id=click.user_id, channel_id=click.channel_id,
            response_url=click.response_url,
            message=common_views.refusal(describe(exc)),
        )

    async def _load(self, click: ButtonClick, *, pages: bool = False) -> Escalation:
        """The escalation a button names, if the click came from its message (or, `pages`,
        from one of its pages); EscalationButtonExpired otherwise."""
        on_page = _PAGE_VALUE.fullmatch(click.value) if pages else None
        escalation = await self._store.get(int(on_page[1]) if on_page else click.row_id())
        if escalation is None:
            raise EscalationButtonExpired()
        if click.came_from(escalation.team_id, escalation.channel_id, escalation.message_ts):
            return escalation
        if escalation.message_ts is None and click.came_from(
                escalation.team_id, escalation.channel_id, click.message_ts):
            # The card, shown by Slack as it took it, its ts not written down yet (longer while
            # the database fails): only the card has these buttons in the escalation's channel.
            return escalation
        if not pages:
            raise EscalationButtonExpired()
        recorded = await self._store.pages(escalation.id)
        if any(click.came_from(escalation.team_id, page.channel_id, page.message_ts)
               for page in recorded):
            return escalation
        if on_page and _unrecorded_page_of(click, escalation, int(on_page[2]), recorded):
            return escalation
        raise EscalationButtonExpired()


# I'm on it's value on a page: the escalation's id and the step it pages (escalation_views).
_PAGE_VALUE = re.compile(r"([0-9]{1,18}):([0-9]{1,6})")


def _unrecorded_page_of(
    click: ButtonClick, escalation: Escalation, step: int, recorded: list[Page]
) -> bool:
    """A click on the page of `step` that Slack has posted but the bot has not recorded yet
    (recorded when Slack's answer to the post arrives): honoured if it comes from the person
    that step pages, in a step already begun. The person is read from the escalation's row,
    never from the value."""
    return (
        click.team_id == escalation.team_id
        and click.channel_id is not None
        and step <= escalation.step
        and step < len(escalation.people)
        and escalation.people[step].user_id == click.user_id
        and all(page.step != step for page in recorded)
    )


def _click_fields(escalation_id: int, click: ButtonClick) -> dict[str, object]:
    """The structured fields of a line about a click on `escalation_id`'s buttons."""
    return {"escalation_id": escalation_id, "user_id": click.user_id}
