"""The call form: opened by `/call` (see listeners.command) or the global shortcut, fed flow options
through `block_suggestion`, validated in the ack of its submission, then dialled once.

    open      ack → views.open right away (the trigger lives 3 s): the whole form when the
              role check and the owned numbers come quickly, else a loading view that is
              updated once they do
    options   the ack is the answer: flows matching the typed text, only for people with a role
    submit    role, then every field, all within VALIDATION_BUDGET_SECONDS; errors go back in the
              ack under their fields. A valid view is claimed (one call per view, however often
              Submit is pressed), the ack closes the modal, the call is placed in the background.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from functools import partial
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot.calls import form as forms
from bot.calls.form import FormField, Submission
from bot.calls.models import CallRequest, CheckedCall
from bot.calls.untold import untold_note
from bot.errors import (
    CallbotError,
    CallerIdNotOwned,
    FlowAmbiguous,
    FlowNotFound,
    GroupLookupFailed,
    RoleDenied,
    describe,
    describe_any,
)
from bot.evovoice.client import EvoVoiceError, Flow
from bot.listeners.actions import user_of
from bot.listeners.modals import FormSpec, Submitted, Wording, accept_submission, open_form
from bot.listeners.modals import submission_key
from bot.phone import NumberRejected, check_dialable
from bot.services import Services
from bot.slack.blocks import MAX_OPTION_TEXT, MAX_OPTIONS, clip
from bot.slack.modals import ModalMetadata, View

logger = logging.getLogger(__name__)

# How long the open waits for the role check and the owned numbers before showing a loading view.
OPEN_BUDGET_SECONDS = 1.0
# A view_submission must be answered within 3 s; checking gets this much of it.
VALIDATION_BUDGET_SECONDS = 2.0
# block_suggestion likewise: the ack is the answer.
OPTIONS_BUDGET_SECONDS = 2.0
MAX_QUERY_CHARS = 100
# How long "Choose a flow." waits to learn whether there was any flow to choose.
NO_FLOWS_BUDGET_SECONDS = 0.5


SPENT_BY_RESTART = (
    "callbot began restarting as this was sent; nothing was dialled. Open a new form in a few "
    "seconds."
)
TOO_SLOW = (
    "Checking this took too long (Slack or Evo Voice is slow right now). Nothing was dialled; "
    "press Call again."
)
NOT_DONE = "nothing was dialled"  # when the database failed
STALE_FORM = "This form can't be used any more; nothing was dialled. Close it and open a new one."
FORM = FormSpec(
    forms.CALL_FORM,
    what="call form",
    claim_prefix=forms.CALL_FORM_CLAIMS,
    fields=frozenset(FormField),
    read=forms.read_submission,
    wording=Wording(forms.GENERAL_ERROR_FIELD, too_slow=TOO_SLOW,
                    spent_by_restart=SPENT_BY_RESTART, stale_form=STALE_FORM,
                    not_done=NOT_DONE),
)
CHOOSE_FLOW = "Choose a flow."
NO_FLOWS = ("The Evo Voice account has no flows that callbot can use, so there is nothing to "
            "choose; nothing was dialled. Ask an administrator to add one.")
CHOOSE_CHANNEL = "Choose a channel for the confirmation."
BAD_CALLER_ID = "Choose the caller ID from the list."
FLOW_GONE = ("The flow chosen, “{name}”, is no longer in the Evo Voice account; nothing was "
             "dialled. Choose another.")


def register(app: AsyncApp) -> None:
    app.global_shortcut(forms.PLACE_CALL_SHORTCUT_ID)(on_place_call_shortcut)
    app.block_suggestion(FormField.FLOW.value)(on_flow_options)
    app.block_suggestion(FormField.CALLER_ID.value)(on_caller_id_options)
    app.view_submission(forms.CALL_FORM_CALLBACK_ID)(on_form_submitted)


# ------------------------------------------------------------------------------------- opening


async def on_place_call_shortcut(
    ack: AsyncAck, shortcut: dict[str, Any], client: AsyncWebClient, context: AsyncBoltContext
) -> None:
    services: Services = context["services"]
    await ack()
    user_id = user_of(shortcut)
    if not user_id:  # malformed: nobody to open the form for, nor to tell
        logger.warning("the Place a call shortcut used without a user")
        return
    trigger_id = str(shortcut.get("trigger_id") or "")
    services.tasks.spawn(
        open_call_form(
            client, services, trigger_id=trigger_id, user_id=user_id, metadata=ModalMetadata()
        ),
        name=f"call form for {user_id}",
    )


async def open_call_form(
    client: AsyncWebClient,
    services: Services,
    *,
    trigger_id: str,
    user_id: str,
    metadata: ModalMetadata,
    number_text: str | None = None,
) -> None:
    """Open the form for `user_id`; without a channel in `metadata` it also asks for one."""

    await open_form(
        client,
        services,
        FORM,
        user_id=user_id,
        trigger_id=trigger_id,
        metadata=metadata,
        view=_prepare_view(services, user_id, metadata, number_text),
        budget=OPEN_BUDGET_SECONDS,
    )


async def _prepare_view(
    services: Services, user_id: str, metadata: ModalMetadata, number_text: str | None
) -> View:
    """The form, or a notice saying why there is none; never raises."""
    try:
        await services.access.require(user_id)
    except Exception as exc:
        # RoleDenied and GroupLookupFailed say why; anything else gets a reference id (and its log
        # line). Either way the user sees words instead of a form that never opens.
        return forms.CALL_FORM.notice_view(describe_any(exc))
    policy = services.policy
    try:
        owned: list[str] | None = await services.catalog.owned_numbers()
    except EvoVoiceError as exc:
        # The form still works: the caller ID falls back to the default (or Evo Voice's choice).
        logger.warning("owned numbers unavailable for the call form: %s", type(exc).__name__)
        owned = None
    return forms.call_form(
        metadata,
        number_text=number_text,
        owned_numbers=owned,
        default_caller_id=policy.default_caller_id,
        allowed_regions=policy.allowed_regions,
        ask_channel=metadata.channel_id is None,
    )


# ------------------------------------------------------------------------------------- options


async def on_flow_options(ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
    services: Services = context["services"]
    user_id = user_of(body)  # "" for a payload naming no user as Slack does: no options
    query = str(body.get("value") or "")[:MAX_QUERY_CHARS]
    try:
        flows, account_flows = await asyncio.wait_for(
            _flows_for(services, user_id, query), OPTIONS_BUDGET_SECONDS)
    except (TimeoutError, GroupLookupFailed, EvoVoiceError) as exc:
        logger.warning("flow options for %s unavailable: %s", user_id, type(exc).__name__)
        flows, account_flows = [], []
    await ack(options=forms.flow_options(flows, account_flows))


async def on_caller_id_options(
    ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext
) -> None:
    """The caller ID menu's search, for an account of more numbers than a menu holds."""
    services: Services = context["services"]
    user_id = user_of(body)
    query = str(body.get("value") or "")[:MAX_QUERY_CHARS]
    try:
        owned = await asyncio.wait_for(_owned_for(services, user_id), OPTIONS_BUDGET_SECONDS)
    except (TimeoutError, GroupLookupFailed, EvoVoiceError) as exc:
        logger.warning("caller ID options for %s unavailable: %s", user_id, type(exc).__name__)
        owned = []
    await ack(options=forms.caller_id_options(owned, query, services.policy.default_caller_id))


async def _owned_for(services: Services, user_id: str) -> list[str]:
    if not await services.access.roles_of(user_id):
        return []
    return await services.catalog.owned_numbers()


async def _flows_for(
    services: Services, user_id: str, query: str
) -> tuple[list[Flow], list[Flow]]:
    """The flows matching `query`, and all the account's (to tell same-named flows apart)."""
    # Flow names are all the menu shows, but still only to people who may call.
    if not await services.access.roles_of(user_id):
        return [], []
    return (await services.catalog.search_flows(query, MAX_OPTIONS),
            await services.catalog.flows())


# ------------------------------------------------------------------------------------- submitting


async def on_form_submitted(
    ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], context: AsyncBoltContext
) -> None:
    services: Services = context["services"]
    await accept_submission(
        ack, body, view, services, FORM,
        validate=partial(validate, services),
        start=services.calls.proceed_noted,
        budget=VALIDATION_BUDGET_SECONDS,
        repeated=services.calls.repeated,
        untold=untold_note,
        # proceed_noted() dials, or ends soon: a question, a refusal, the database failing (told
        # at once, never waited out: CallService.proceed), each ending the count before it is told.
        dials_first=services.calls.dials_first,
    )


async def validate(
    services: Services, submitted: Submitted[Submission]
) -> CheckedCall | dict[FormField, str]:
    """The checked call, or an error for each field that needs one."""
    user_id, metadata, submission = submitted.user_id, submitted.metadata, submitted.values
    try:
        # First, and fresh: access may have changed since the form was opened.
        await services.access.require(user_id)
    except (RoleDenied, GroupLookupFailed) as exc:
        return {forms.GENERAL_ERROR_FIELD: describe(exc)}

    errors: dict[FormField, str] = {}
    channel_id = metadata.channel_id or submission.channel_id
    if channel_id is None:
        errors[FormField.CHANNEL] = CHOOSE_CHANNEL
    if submission.flow_id is None:
        errors[FormField.FLOW] = CHOOSE_FLOW if await _has_flows(services) else NO_FLOWS
    if submission.caller_id is not None and not forms.is_e164(submission.caller_id):
        errors[FormField.CALLER_ID] = BAD_CALLER_ID
    try:
        check_dialable(submission.number_text, services.policy.dial_policy)
    except NumberRejected as exc:
        errors[FormField.NUMBER] = describe(exc)
    if errors or channel_id is None or submission.flow_id is None:
        return errors

    request = CallRequest(
        team_id=submitted.team_id,
        user_id=user_id,
        channel_id=channel_id,
        number_text=submission.number_text,
        flow_text=submission.flow_id,
        caller_id_text=submission.caller_id,
        reason=submission.reason,
        # The command's response_url reaches the command's channel only.
        response_url=metadata.response_url if metadata.channel_id else submission.response_url,
    )
    try:
        checked = await services.calls.check(request)
    except FlowNotFound:
        # Chosen from the menu, not typed: /call's "No flow is called …, use its slug" would
        # quote an ID the person never saw.
        name = clip(submission.flow_label or submission.flow_id, MAX_OPTION_TEXT, markup=False)
        return {FormField.FLOW: FLOW_GONE.format(name=name)}
    except (CallbotError, EvoVoiceError) as exc:
        return {field_for(exc): describe(exc)}
    # What the view's claim keeps for the requester until the call's row is written.
    key = submission_key(FORM.claim_prefix, submitted.team_id, submitted.view_id)
    untold = services.untold.note_request(key, request, checked.number.masked)
    return dataclasses.replace(checked, request=dataclasses.replace(request, untold=untold))


async def _has_flows(services: Services) -> bool:
    """Whether the flow menu had anything to choose (assumed so when Evo Voice can't say soon:
    the list is cached, and "Choose a flow." must not wait on a slow Evo Voice)."""
    flows = asyncio.ensure_future(services.catalog.flows())
    # Left to finish (it fills the cache); a failure after the wait is no one's to hear.
    flows.add_done_callback(lambda task: task.cancelled() or task.exception())
    try:
        return bool(await asyncio.wait_for(asyncio.shield(flows), NO_FLOWS_BUDGET_SECONDS))
    except (TimeoutError, EvoVoiceError):
        return True


def field_for(exc: BaseException) -> FormField:
    """The field an error from `CallService.check` belongs under."""
    if isinstance(exc, (FlowNotFound, FlowAmbiguous)):
        return FormField.FLOW
    if isinstance(exc, CallerIdNotOwned):
        return FormField.CALLER_ID
    if isinstance(exc, NumberRejected):
        return FormField.NUMBER
    if isinstance(exc, CallbotError) and not isinstance(exc, (RoleDenied, GroupLookupFailed)):
        return FormField.FLOW  # the one other refusal check() makes: an alias pointing nowhere
    return forms.GENERAL_ERROR_FIELD

