"""The `/call` slash command: parse in the ack (pure and fast), do everything slow after it."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext

from bot import views
from bot.calls import CallRequest
from bot.command import CallArgs, CommandRejected, FormArgs, HelpArgs, SubcommandArgs, parse_command
from bot.metrics import CommandOutcome
from bot.services import Services

logger = logging.getLogger(__name__)

CALL_COMMAND = "/call"


def register(app: AsyncApp) -> None:
    app.command(CALL_COMMAND)(on_call_command)


async def on_call_command(ack: AsyncAck, command: dict[str, Any], context: AsyncBoltContext) -> None:
    services: Services = context["services"]
    if services.tasks.closed:
        services.metrics.command(CALL_COMMAND, CommandOutcome.UNAVAILABLE)
        await ack(text="callbot is restarting; nothing was dialled. Try again in a few seconds.")
        return
    try:
        parsed = parse_command(str(command.get("text") or ""))
    except CommandRejected as exc:
        services.metrics.command(CALL_COMMAND, CommandOutcome.INVALID)
        await ack(**views.refusal(exc.reason).as_kwargs())
        return
    if isinstance(parsed, HelpArgs):
        services.metrics.command(CALL_COMMAND, CommandOutcome.HELP)
        await ack(**views.help_message().as_kwargs())
        return
    if isinstance(parsed, (FormArgs, SubcommandArgs)):
        # The form and the subcommands come with their own features; until then, say how to call.
        services.metrics.command(CALL_COMMAND, CommandOutcome.HELP)
        await ack(**views.help_message().as_kwargs())
        return
    services.metrics.command(CALL_COMMAND, CommandOutcome.ACCEPTED)
    await ack()
    request = call_request_from(command, parsed)
    services.tasks.spawn(services.calls.handle(request), name=f"call by {request.user_id}")


def call_request_from(command: dict[str, Any], args: CallArgs) -> CallRequest:
    return CallRequest(
        team_id=str(command.get("team_id") or ""),
        user_id=str(command["user_id"]),
        channel_id=str(command["channel_id"]),
        number_text=args.number_text,
        flow_text=args.flow_text,
        caller_id_text=args.caller_id_text,
        response_url=command.get("response_url") or None,
        # A trigger_id is unique to one invocation; a redelivered envelope carries the same one.
        idempotency_key=f"command:{command.get('team_id')}:{command.get('trigger_id')}"
        if command.get("trigger_id")
        else None,
    )
