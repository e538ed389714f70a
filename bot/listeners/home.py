"""The App Home tab (`app_home_opened`) and its buttons: Escalate to on-call, Place a call.

The tab is drawn for the person opening it, from what they may do: responders see who is on call
and their recent pages and escalations; role holders their recent calls too. Every button click is
a new request: the forms they open check the person again.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import CallbotError
from bot.listeners.actions import button_click_from, without_clicker
from bot.listeners.call_form import open_call_form
from bot.listeners.escalation import open_escalation_form
from bot.oncall.home_views import HOME_CALL_ACTION, HOME_ESCALATE_ACTION, home_view
from bot.services import Services
from bot.slack.modals import ModalMetadata
from bot.slack.notify import SLACK_FAILURES, slack_error_code
from bot.storage.faults import DATABASE_FAULTS

logger = logging.getLogger(__name__)

RECENT = 5


class HomeDraws:
    """A person's tab drawn one drawing at a time, and only the latest asked for published.
    Slack shows whichever publish reaches it last: a drawing slowed down (Slack or the database
    slow to answer) landing after one made since would show who was on call before a take or a
    hand-off, until the tab is opened again."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._latest: dict[str, int] = {}
        self._tickets = itertools.count()

    def ask(self, user_id: str) -> int:
        ticket = next(self._tickets)
        self._latest[user_id] = ticket
        return ticket

    @asynccontextmanager
    async def turn(self, user_id: str, ticket: int) -> AsyncIterator[Callable[[], bool]]:
        """Waits for the drawings asked for before; yields "has a later one been asked for?"."""
        lock = self._locks.setdefault(user_id, asyncio.Lock())
        try:
            async with lock:
                yield lambda: self._latest.get(user_id) != ticket
        finally:
            if self._latest.get(user_id) == ticket and not lock.locked():
                del self._latest[user_id], self._locks[user_id]


def register(app: AsyncApp) -> None:
    draws = HomeDraws()

    async def on_home_opened(event: dict[str, Any], client: AsyncWebClient,
                             context: AsyncBoltContext) -> None:
        services: Services = context["services"]
        user_id = event.get("user")
        if event.get("tab") != "home" or not isinstance(user_id, str) or services.tasks.closed:
            return
        ticket = draws.ask(user_id)

        async def draw() -> None:
            async with draws.turn(user_id, ticket) as superseded:
                if not superseded():  # a later opening draws it afresh
                    await publish_home(client, services, user_id, superseded)

        services.tasks.spawn(draw(), name=f"home tab for {user_id}")

    app.event("app_home_opened")(on_home_opened)
    app.action(HOME_CALL_ACTION)(on_home_button)
    app.action(HOME_ESCALATE_ACTION)(on_home_button)


async def publish_home(client: AsyncWebClient, services: Services, user_id: str,
                       superseded: Callable[[], bool] = lambda: False) -> None:
    try:
        can_call = bool(await services.access.roles_of(user_id))
    except CallbotError:  # a user group Slack would not list: shown without what it grants
        can_call = False
    allowed = True if can_call else await services.responders.allows(user_id)
    may_escalate, unsure = allowed is True, False
    if allowed is None:
        # Not "you may not": a responder told to ask to be added, their button gone, would be
        # wrong at the worst moment. Nobody is shown on call (it may be a guest asking).
        logger.warning("the home tab for %s is drawn without knowing whether they are a "
                       "responder (Slack could not say)", user_id)
        unsure = services.oncall.configured
    if unsure:
        view = home_view(user_id, status=None, escalations=[], calls=[], can_call=False,
                         may_escalate=True, unsure=True)
        await _publish(client, user_id, view, superseded)
        return
    status, escalations, calls = None, [], []
    try:
        if may_escalate and services.oncall.configured:
            status = await services.oncall.status(services.oncall.now())
            escalations = await services.escalations.store.recent_for(user_id, RECENT)
        if can_call:
            # Of every team, as `/call history`: a Slack Connect or Enterprise Grid user's calls
            # are recorded under their own team_id, not the one this event names.
            calls = await services.audit.history(None, user_id=user_id, limit=RECENT)
    except DATABASE_FAULTS as exc:
        # Drawn all the same: Slack would go on showing the tab as last drawn, with whoever was
        # on call then.
        logger.warning("the home tab for %s is drawn without the database (%s)", user_id,
                       type(exc).__name__)
        view = home_view(user_id, status=None, escalations=[], calls=[], can_call=can_call,
                         may_escalate=may_escalate and services.oncall.configured,
                         unreadable=True)
    else:
        view = home_view(user_id, status=status, escalations=escalations, calls=calls,
                         can_call=can_call, may_escalate=may_escalate,
                         acknowledges=services.history.acknowledges)
    await _publish(client, user_id, view, superseded)


async def _publish(client: AsyncWebClient, user_id: str, view: dict[str, Any],
                   superseded: Callable[[], bool]) -> None:
    if superseded():  # drawn from what may have changed since: the later drawing is published
        return
    try:
        await client.views_publish(user_id=user_id, view=view)
    except SLACK_FAILURES as exc:
        logger.warning("publishing the home tab for %s failed (%s)", user_id,
                       slack_error_code(exc))


async def on_home_button(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient,
                         context: AsyncBoltContext) -> None:
    """Escalate to on-call or Place a call: the same forms as the shortcuts open."""
    await ack()
    services: Services = context["services"]
    click = button_click_from(body)  # each part a string, whatever the payload's shape
    if without_clicker(click):  # nobody to open a form for, nor to tell
        return
    user_id, action = click.user_id, click.action_id
    trigger_id = str(body.get("trigger_id") or "")
    open_form = open_call_form if action == HOME_CALL_ACTION else open_escalation_form
    services.tasks.spawn(
        open_form(client, services, trigger_id=trigger_id, user_id=user_id,
                  metadata=ModalMetadata()),
        name=f"{action} from home for {user_id}",
    )
