"""`/call test`: ring the requester's own phone with the on-call flow: what a page sounds like.

Routed here by the `/call` listener. The number is the requester's own, from `[people]` or their
Slack profile (the same lookup as the on-call roster), never typed: so a test call can only ever
ring the person who asked. Everything else is an ordinary call: the role, the dialling rules, the
rate limits, the confirmation in the channel and the status message that follows it.
"""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck

from bot.calls import messages as views
from bot.calls.models import TEST_ORIGIN, CallRequest, Outcome
from bot.errors import Expected, NoUsableNumber, describe_any
from bot.listeners.actions import command_key
from bot.services import Services

TEST_REASON = "test call: this is how an on-call page sounds"


async def on_test_subcommand(
    ack: AsyncAck, command: dict[str, Any], args: tuple[str, ...], services: Services
) -> None:
    if args:
        await ack(**services.notifier.for_ack(views.refusal(
            "`/call test` takes nothing after it: it rings your own phone with the on-call flow."
        )))
        return
    await ack()
    # On its way to the phone from now (bot/calls/dials_first.py), as any /call: its work dials
    # (handle()) or soon ends, the count ended before a refusal is told. Looking up the number
    # is a check before the dial, as handle()'s role check is; Slack's calls time out in seconds.
    services.calls.dials_first.acked(lambda: services.tasks.spawn(
        place_test_call(services, command), name=f"test call by {command.get('user_id')}"))


async def place_test_call(services: Services, command: dict[str, Any]) -> None:
    user_id = str(command["user_id"])
    try:
        flow = services.oncall.policy.flow
        found = await services.oncall.phones.lookup(user_id)
        if found.number is None:
            # Who may not place calls at all learns that, not how to add a number.
            await services.access.require(user_id)
            raise NoUsableNumber(user_id, found.problem or "none found", "get a test call")
    except Exception as exc:  # every refusal reaches the requester, in words
        services.calls.dials_first.ended()  # nothing is dialled: other calls' posts go on
        if not await _first_answer(services, command):
            # The same command delivered again, refused again: told once, as a call is placed once.
            services.calls.count_ending(Outcome.DUPLICATE)
            return
        await services.notifier.tell(
            user_id=user_id, channel_id=str(command.get("channel_id") or "") or None,
            response_url=command.get("response_url") or None,
            message=views.refusal(describe_any(exc)),
        )
        if isinstance(exc, Expected):  # a bug is no refusal (nor counted, as in handle())
            # In the audit trail as any refused /call is: who asked, and why.
            await services.audit.refused(_request(command, "", ""), exc)
            services.calls.count_ending(Outcome.REFUSED, exc)
        return
    await services.calls.handle(_request(command, found.number.e164, flow))


def _request(command: dict[str, Any], number_text: str, flow_text: str) -> CallRequest:
    return CallRequest(
        team_id=str(command.get("team_id") or ""),
        user_id=str(command["user_id"]),
        channel_id=str(command.get("channel_id") or ""),
        number_text=number_text,
        flow_text=flow_text,
        reason=TEST_REASON,
        response_url=command.get("response_url") or None,
        idempotency_key=command_key(command),
        origin=TEST_ORIGIN,
    )


async def _first_answer(services: Services, command: dict[str, Any]) -> bool:
    """Whether this delivery of the command is the first to be answered: it claims the command's
    key, as placing its call would have. A database failing to say is no reason to stay silent."""
    key = command_key(command)
    if key is None:
        return True
    return await services.claims.first_or_unsure(key, "telling a refused test call")
