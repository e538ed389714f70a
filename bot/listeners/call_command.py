"""The `/call` slash command: parse in the ack (pure and fast), do everything slow after it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.request.payload_utils import is_slash_command
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient

from bot.audit.history import HistoryRequest
from bot.calls import messages as views
from bot.calls.command_text import (
    CallArgs,
    CommandRejected,
    FormArgs,
    HelpArgs,
    SubcommandArgs,
    parse_command,
)
from bot.calls.models import CallRequest
from bot.errors import CallbotError
from bot.listeners.actions import command_key
from bot.listeners.call_form import open_call_form
from bot.listeners.oncall import on_oncall_subcommand
from bot.listeners.test_call import on_test_subcommand
from bot.ops.metrics import CommandOutcome
from bot.services import Services
from bot.slack.modals import ModalMetadata, is_channel_id, is_response_url

logger = logging.getLogger(__name__)

CALL_COMMAND = "/call"

# What answers a listener's exception (bot.app.on_error): its words, or None once acked.
ErrorHandler = Callable[..., Awaitable[BoltResponse | None]]


def register(app: AsyncApp, on_error: ErrorHandler) -> None:
    """Registered after the global middleware that every request meets first (services, "the
    bot is restarting"): see CallCommandFirst."""
    app.middleware(CallCommandFirst(on_error))


class CallCommandFirst(AsyncMiddleware):
    """`/call` goes to its listener from here, the last global middleware, instead of through
    Bolt's listener matching and runner, which on every request build every argument a listener
    or matcher could ask for (a dozen payload lookups and context objects), twice: once to match
    the listener, once to call it. That was about 200 of Bolt's 350 µs per command, all of it on
    the event loop before the call's work starts: in a burst of 1,000 commands, 0.2 s before the
    last POST. /call was the first listener, so nothing else could have taken the request.

    What Bolt's runner does with `process_before_response` is done here the same way: the ack's
    answer is the response; an exception before the ack is answered by the app's error handler
    (status 500 unless the handler answers: then its answer)."""

    def __init__(self, on_error: ErrorHandler) -> None:
        self._on_error = on_error

    async def async_process(
        self,
        *,
        req: AsyncBoltRequest,
        resp: BoltResponse | None,
        next: Callable[[], Awaitable[BoltResponse | None]],
    ) -> BoltResponse | None:
        body = req.body
        # Bolt's own matcher for app.command(CALL_COMMAND).
        if not (is_slash_command(body) and body["command"] == CALL_COMMAND):
            return await next()
        context = req.context
        ack = context.ack
        try:
            await on_call_command(ack, body, context.client, context)
        except Exception as exc:
            answer = resp if resp is not None else BoltResponse(status=500)
            answer.status = 500
            handled = await self._on_error(error=exc, body=body, response=answer)
            if handled is not None:
                answer.status, answer.headers, answer.body = (
                    handled.status, handled.headers, handled.body
                )
            ack.response = answer
            return answer
        return resp if resp is not None else ack.response


async def on_call_command(
    ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient, context: AsyncBoltContext
) -> None:
    services: Services = context["services"]
    if not command.get("user_id"):
        # Slack always names the user: a malformed request, with nobody to check or to tell.
        logger.warning("%s without a user ignored", CALL_COMMAND)
        services.metrics.command(CALL_COMMAND, CommandOutcome.INVALID)
        await ack()
        return
    try:
        parsed = parse_command(str(command.get("text") or ""))
    except CommandRejected as exc:
        services.metrics.command(CALL_COMMAND, CommandOutcome.INVALID)
        await ack(**services.notifier.for_ack(views.refusal(exc.reason)))
        return
    if isinstance(parsed, HelpArgs):
        services.metrics.command(CALL_COMMAND, CommandOutcome.HELP)
        help_text = await help_for(services, str(command.get("user_id") or ""))
        await ack(**services.notifier.for_ack(help_text))
        return
    if isinstance(parsed, SubcommandArgs):
        services.metrics.command(CALL_COMMAND, CommandOutcome.SUBCOMMAND)
        if parsed.name == "oncall":
            await on_oncall_subcommand(ack, command, parsed.args, services)
            return
        if parsed.name == "test":
            await on_test_subcommand(ack, command, parsed.args, services)
            return
        # history: parse_command knows no other subcommand (SUBCOMMANDS)
        await ack()
        history = history_request_from(command, parsed)
        services.tasks.spawn(services.history.show(history), name=f"history for {history.user_id}")
        return
    if isinstance(parsed, FormArgs):
        services.metrics.command(CALL_COMMAND, CommandOutcome.FORM)
        await ack()
        # Right after the ack: the trigger_id expires 3 s after Slack sent the command.
        services.tasks.spawn(
            open_call_form(
                client,
                services,
                trigger_id=str(command.get("trigger_id") or ""),
                user_id=str(command["user_id"]),
                metadata=form_metadata_from(command, services),
                number_text=parsed.number_text,
            ),
            name=f"call form for {command['user_id']}",
        )
        return
    services.metrics.command(CALL_COMMAND, CommandOutcome.ACCEPTED)
    await ack()
    request = call_request_from(command, parsed)
    # On its way to the phone from now: the parent posts of calls acked before it wait for it.
    services.calls.dials_first.acked(lambda: services.tasks.spawn(
        services.calls.handle(request), name=f"call by {request.user_id}"))


async def help_for(services: Services, user_id: str) -> views.Message:
    """The help that fits the asker, if their roles are known within the services'
    help_budget_seconds (the help is the ack); else all of it, saying who may use what."""

    async def tailored() -> views.Message:
        has_role = bool(await services.access.roles_of(user_id))
        responder = True if has_role else await services.responders.allows(user_id)
        if responder is None:  # Slack can't say: no "you can't", everything as when roles can't
            return views.help_message(oncall=services.oncall.configured)
        return views.help_message(has_role=has_role, responder=responder,
                                  oncall=services.oncall.configured)

    try:
        return await asyncio.wait_for(tailored(), services.help_budget_seconds)
    except (TimeoutError, CallbotError):
        return views.help_message(oncall=services.oncall.configured)


def form_metadata_from(command: dict[str, Any], services: Services) -> ModalMetadata:
    """Where the form's confirmation goes: this channel, with this command's response_url as the
    fallback. Whatever doesn't look right is left out (the form then asks for a channel)."""
    channel = command.get("channel_id")
    url = command.get("response_url")
    trusted = services.trusted_origins
    if not is_channel_id(channel):
        return ModalMetadata()
    return ModalMetadata(
        channel_id=str(channel),
        response_url=str(url) if is_response_url(url, trusted) else None,
    )


def call_request_from(command: dict[str, Any], args: CallArgs) -> CallRequest:
    return CallRequest(
        team_id=str(command.get("team_id") or ""),
        user_id=str(command["user_id"]),
        channel_id=str(command.get("channel_id") or ""),
        number_text=args.number_text,
        flow_text=args.flow_text,
        caller_id_text=args.caller_id_text,
        response_url=command.get("response_url") or None,
        idempotency_key=command_key(command),
    )


def history_request_from(command: dict[str, Any], args: SubcommandArgs) -> HistoryRequest:
    return HistoryRequest(
        team_id=str(command.get("team_id") or ""),
        user_id=str(command["user_id"]),
        channel_id=str(command.get("channel_id") or ""),
        args=args.args,
        response_url=command.get("response_url") or None,
    )
