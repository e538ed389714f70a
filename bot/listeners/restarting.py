"""While the bot shuts down, every request is answered "restarting" here, before any listener.

Shutdown closes `services.tasks` first: work in flight finishes, nothing new starts. Each Slack
surface still gets an answer it can show, in one wording, so nobody wonders whether a click did
something:

    /call                 the ack's text
    a button              an ephemeral reply through the click's response_url (the message and its
                          buttons stay, so the same button works once the bot is back)
    a form's submission   an error under the form's first field (the form stays, filled in)
    a shortcut            a notice opened with the trigger (a shortcut must not just do nothing)
    a menu's options      none
Anything else (events) goes on to the listeners, which start no work while the tasks are closed.

A request handled before the shutdown began and delivered again now (Slack never got its ack: a
Socket Mode envelope sent again after the socket closed, an HTTP request answered after 3 s) is
acked and left alone, as its copies always are: "nothing was dialled" would be false.

One click is honoured even now: I'm on it on an on-call page. Someone answering a page must never
be told to come back later; its listener writes the acknowledgement before acking, and the next
start acts on it (bot.oncall.escalation).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncBoltContext
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient

from bot.calls import messages as views
from bot.calls.form import CALL_FORM_CALLBACK_ID, CALL_FORM_CLAIMS
from bot.listeners.actions import button_click_from, click_key, command_key
from bot.listeners.modals import submitted_key
from bot.oncall.escalation_form import ESCALATION_FORM_CALLBACK_ID, ESCALATION_FORM_CLAIMS
from bot.oncall.escalation_views import ACK_ESCALATION_ACTION
from bot.ops.metrics import CommandOutcome
from bot.services import Services
from bot.slack.notify import SLACK_FAILURES, slack_error_code
from bot.storage.faults import DATABASE_FAULTS

logger = logging.getLogger(__name__)

HONOURED_WHILE_RESTARTING = frozenset({ACK_ESCALATION_ACTION})

RESTARTING = (
    "callbot is restarting, so nothing was dialled or changed. Try again in a few seconds."
)

# The answers sent after the ack: shutdown no longer takes tasks, and these must not be lost to
# the garbage collector before they are sent.
_answers: set[asyncio.Task[None]] = set()


class RefuseWhileRestarting(AsyncMiddleware):
    """A middleware object rather than a function: Bolt calls a function middleware with the
    keyword arguments it asks for, built afresh for every request (a few percent of the CPU each
    /call costs during a burst), and this one looks at the request only while stopping."""

    async def async_process(
        self,
        *,
        req: AsyncBoltRequest,
        resp: BoltResponse,
        next: Callable[[], Awaitable[BoltResponse]],
    ) -> BoltResponse | None:
        services: Services = req.context["services"]
        if not services.tasks.closed:
            return await next()
        return await _refuse(req.body, req.context, req.context.client, next)


refuse_while_restarting = RefuseWhileRestarting()


async def _refuse(
    body: dict[str, Any],
    context: AsyncBoltContext,
    client: AsyncWebClient,
    next: Callable[[], Awaitable[BoltResponse]],
) -> BoltResponse | None:
    services: Services = context["services"]
    kind = body.get("type")
    if kind == "block_actions" and _action_id(body) in HONOURED_WHILE_RESTARTING:
        return await next()
    if await _handled_already(services, body):
        logger.info("a request handled before the shutdown, delivered again, ignored")
        return BoltResponse(status=200, body="")
    if "command" in body:
        services.metrics.command(str(body["command"]), CommandOutcome.UNAVAILABLE)
        return BoltResponse(status=200, body={"text": RESTARTING})
    if kind == "block_actions":
        answer_later(_reply(services, body), "reply to a click")
        return BoltResponse(status=200, body="")
    if kind == "view_submission":
        block_id = _first_input(body.get("view"))
        if block_id is None:
            return BoltResponse(status=200, body={"response_action": "clear"})
        return BoltResponse(
            status=200, body={"response_action": "errors", "errors": {block_id: RESTARTING}}
        )
    if kind in ("shortcut", "message_action"):
        trigger_id = body.get("trigger_id")
        if isinstance(trigger_id, str) and trigger_id:
            answer_later(_notice(client, trigger_id), "notice for a shortcut")
        return BoltResponse(status=200, body="")
    if kind == "block_suggestion":
        return BoltResponse(status=200, body={"options": []})
    return await next()


HANDLED_CHECK_SECONDS = 1.0

# Each form's submissions' claims (bot/listeners/modals.py), by the form's callback id.
_FORM_CLAIMS = {CALL_FORM_CALLBACK_ID: CALL_FORM_CLAIMS,
                ESCALATION_FORM_CALLBACK_ID: ESCALATION_FORM_CLAIMS}


def _first_claim(body: dict[str, Any]) -> str | None:
    """The claim the first delivery of this request took (by which its copies are known)."""
    if "command" in body:
        return command_key(body)
    kind = body.get("type")
    if kind == "block_actions":
        return click_key(button_click_from(body))
    if kind == "view_submission":
        view = body.get("view")
        callback_id = view.get("callback_id") if isinstance(view, dict) else None
        prefix = _FORM_CLAIMS.get(callback_id) if isinstance(callback_id, str) else None
        return submitted_key(prefix, body) if prefix is not None else None
    return None


async def _handled_already(services: Services, body: dict[str, Any]) -> bool:
    """Whether this request is a copy of one handled before (its claim is taken). A database
    that can't say: not known to be, and refused as any request now is."""
    key = _first_claim(body)
    if key is None:
        return False
    try:
        # Within the ack's time: a database slow to say is not known to have seen it either.
        return await asyncio.wait_for(services.claims.taken(key), HANDLED_CHECK_SECONDS)
    except TimeoutError:
        why = "no answer in time"
    except DATABASE_FAULTS as exc:
        why = type(exc).__name__
    logger.warning("could not tell whether a request was handled already (%s)", why)
    return False


def answering() -> bool:
    """Whether an answer sent after a shutdown's ack is still on its way (for tests)."""
    return bool(_answers)


def notice_view(text: str) -> dict[str, Any]:
    return {
        "type": "modal",
        "title": {"type": "plain_text", "text": "callbot"},
        "close": {"type": "plain_text", "text": "Close"},
        "blocks": views.refusal(text).blocks,
    }


def _action_id(body: dict[str, Any]) -> str | None:
    actions = body.get("actions")
    first = actions[0] if isinstance(actions, list) and actions else None
    action_id = first.get("action_id") if isinstance(first, dict) else None
    return action_id if isinstance(action_id, str) else None


def _first_input(view: object) -> str | None:
    blocks = view.get("blocks") if isinstance(view, dict) else None
    for block in blocks if isinstance(blocks, list) else ():
        if isinstance(block, dict) and block.get("type") == "input":
            block_id = block.get("block_id")
            if isinstance(block_id, str) and block_id:
                return block_id
    return None


async def _reply(services: Services, body: dict[str, Any]) -> None:
    click = button_click_from(body)
    if click.user_id:
        await services.notifier.tell(
            user_id=click.user_id,
            channel_id=click.channel_id,
            response_url=click.response_url,
            message=views.refusal(RESTARTING),
        )


async def _notice(client: AsyncWebClient, trigger_id: str) -> None:
    try:
        await client.views_open(trigger_id=trigger_id, view=notice_view(RESTARTING))
    except SLACK_FAILURES as exc:
        logger.info("views.open while stopping failed (%s)", slack_error_code(exc))


def answer_later(answer: Awaitable[object], what: str) -> None:
    """Send `answer` after the ack, while stopping (services.tasks no longer takes work)."""
    async def run() -> None:
        try:
            await answer
        except Exception:
            logger.exception("%s during shutdown failed", what)

    task = asyncio.get_running_loop().create_task(run())
    _answers.add(task)
    task.add_done_callback(_answers.discard)
