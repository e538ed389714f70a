"""Escalate to on-call: the message and global shortcuts, their modal, and Stop escalation.

    open      ack → views.open at once (the trigger lives 3 s): the form when the roster, the
              responder check and the message's permalink come quickly, else a loading view
              updated once they do; a notice instead for someone who isn't a responder
              (bot.access.Responders), or without an [oncall] section
    submit    responder (fresh), their own limit when they hold no role
              (`[oncall] escalations_per_person`), channel and flow, checked within
              VALIDATION_BUDGET_SECONDS, errors in the ack under their fields; a valid view is
              claimed (one chain per view, however often Escalate is pressed), the chain starts
              in the background, and the ack closes the modal once its row is written. The own
              limit is counted again as the row is written, which decides between submissions
              racing each other (two tabs, two replicas): a refusal there shows in the form if
              its ack still waits, else it is told privately; nobody is called either way
    stop      ack → `EscalationService.stop_clicked` (which checks who clicked)
    I'm on it ack → `EscalationService.ack_clicked` (which checks who clicked); while the bot
              restarts, the acknowledgement is written before the ack, and the next start acts on it
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot.calls import messages as views
from bot.calls.rates import describe_wait
from bot.errors import (
    AlreadyEscalating,
    CallbotError,
    EscalationLimitReached,
    GroupLookupFailed,
    MembershipUnknown,
    NotAResponder,
    describe,
    describe_any,
    log_unexpected,
)
from bot.evovoice.client import EvoVoiceError
from bot.listeners.actions import button_click_from, user_of, without_clicker
from bot.listeners.modals import (
    Admission,
    FormSpec,
    Submitted,
    Wording,
    accept_submission,
    open_form,
)
from bot.listeners.restarting import answer_later
from bot.oncall import escalation_form as forms
from bot.oncall.escalation import EscalationRequest
from bot.oncall.escalation_form import (
    EscalationField,
    EscalationPreview,
    EscalationSubmission,
)
from bot.oncall.escalation_views import ACK_ESCALATION_ACTION, STOP_ESCALATION_ACTION
from bot.services import Services
from bot.slack.modals import MetadataInvalid, ModalMetadata, View, is_response_url
from bot.storage.faults import DATABASE_FAULTS, database_refusal, refused_when_database_fails

logger = logging.getLogger(__name__)

OPEN_BUDGET_SECONDS = 1.0
ACK_WHILE_RESTARTING_SECONDS = 2.0
VALIDATION_BUDGET_SECONDS = 2.0
ACTION = "escalate to on-call"


RESTARTING_ACK = (
    "callbot is restarting and could not record your I'm on it. Click it again in a few seconds."
)
SPENT_BY_RESTART = (
    "callbot began restarting as this was sent; nobody was called. Open a new form in a few "
    "seconds."
)
TOO_SLOW = (
    "Checking this took too long (Slack or Evo Voice is slow right now). Press Escalate again."
)
NOT_DONE = "nobody was called"  # when the database failed
# When the on-call overrides can't be read as the form opens.
NOT_SHOWN = "the escalation form can't say who would be called, and nobody was called"
STALE_FORM = "This form can't be used any more; nobody was called. Close it and open a new one."
FORM = FormSpec(
    forms.ESCALATION_FORM,
    what="escalation form",
    claim_prefix=forms.ESCALATION_FORM_CLAIMS,
    fields=frozenset(EscalationField),
    read=forms.read_submission,
    wording=Wording(forms.GENERAL_ERROR_FIELD, too_slow=TOO_SLOW,
                    spent_by_restart=SPENT_BY_RESTART, stale_form=STALE_FORM,
                    not_done=NOT_DONE),
)
CHOOSE_CHANNEL = "Choose a channel for the escalation."
NOT_SET_UP_SHORT = "No on-call rotation is set up, so there is nobody to escalate to."


def register(app: AsyncApp) -> None:
    app.message_shortcut(forms.ESCALATE_MESSAGE_SHORTCUT_ID)(on_message_shortcut)
    app.global_shortcut(forms.ESCALATE_GLOBAL_SHORTCUT_ID)(on_global_shortcut)
    app.view_submission(forms.ESCALATION_FORM_CALLBACK_ID)(on_escalation_submitted)
    app.action(STOP_ESCALATION_ACTION)(on_stop_escalation)
    app.action(ACK_ESCALATION_ACTION)(on_acknowledge)


# ------------------------------------------------------------------------------------- opening


async def on_message_shortcut(
    ack: AsyncAck, shortcut: dict[str, Any], client: AsyncWebClient, context: AsyncBoltContext
) -> None:
    await ack()
    services: Services = context["services"]
    # Read as untrusted input: a part of the wrong shape counts as missing.
    message = shortcut.get("message")
    message = message if isinstance(message, dict) else {}
    channel = shortcut.get("channel")
    channel = channel.get("id") if isinstance(channel, dict) else None
    message_ts = message.get("ts") or shortcut.get("message_ts")
    trusted = services.trusted_origins
    url = shortcut.get("response_url")
    try:
        # The escalation goes in the message's thread: its thread_ts when it is a reply.
        metadata = ModalMetadata.decode(ModalMetadata(
            channel_id=str(channel) if channel else None,
            thread_ts=str(message.get("thread_ts") or message_ts or "") or None,
            response_url=str(url) if is_response_url(url, trusted) else None,
        ).encode(), trusted)
    except MetadataInvalid:
        logger.warning("message shortcut with an unusable channel or message; asking for a channel")
        metadata = ModalMetadata()
    quoted = (forms.message_words(message), str(message_ts)) if metadata.channel_id else None
    await _open(client, services, shortcut, metadata, quoted)


async def on_global_shortcut(
    ack: AsyncAck, shortcut: dict[str, Any], client: AsyncWebClient, context: AsyncBoltContext
) -> None:
    await ack()
    await _open(client, context["services"], shortcut, ModalMetadata(), None)


async def _open(
    client: AsyncWebClient,
    services: Services,
    shortcut: dict[str, Any],
    metadata: ModalMetadata,
    quoted: tuple[str, str] | None,
) -> None:
    user_id = user_of(shortcut)
    if not user_id:  # malformed: nobody to open the form for, nor to tell
        logger.warning("an Escalate to on-call shortcut used without a user")
        return
    trigger_id = str(shortcut.get("trigger_id") or "")
    services.tasks.spawn(
        open_escalation_form(
            client, services, trigger_id=trigger_id, user_id=user_id, metadata=metadata,
            quoted=quoted,
        ),
        name=f"escalation form for {user_id}",
    )


async def open_escalation_form(
    client: AsyncWebClient,
    services: Services,
    *,
    trigger_id: str,
    user_id: str,
    metadata: ModalMetadata,
    quoted: tuple[str, str] | None = None,
) -> None:
    """Open the modal; `quoted` is the message (text, ts) a message shortcut was used on."""

    await open_form(
        client,
        services,
        FORM,
        user_id=user_id,
        trigger_id=trigger_id,
        metadata=metadata,
        view=_prepare_view(services, user_id, metadata, quoted),
        budget=OPEN_BUDGET_SECONDS,
    )


async def _prepare_view(
    services: Services,
    user_id: str,
    metadata: ModalMetadata,
    quoted: tuple[str, str] | None,
) -> View:
    """The form, or a notice saying why there is none; never raises."""
    oncall = services.oncall
    if not oncall.configured:
        return forms.ESCALATION_FORM.notice_view(forms.NOT_SET_UP)
    try:
        await services.responders.require(user_id, action=ACTION)
        policy = oncall.policy
        # The overrides are in the database: one that doesn't answer is no bug to report.
        with refused_when_database_fails(NOT_SHOWN, reading=True):
            people = await oncall.chain(oncall.now())
    except Exception as exc:
        return forms.ESCALATION_FORM.notice_view(describe_any(exc))
    try:
        flow_name = (await services.catalog.resolve_flow(policy.flow)).name or policy.flow
    except (CallbotError, EvoVoiceError) as exc:
        # Shown as configured; Escalate checks it again and says what is wrong.
        logger.warning("escalation flow unavailable for the form: %s", type(exc).__name__)
        flow_name = policy.flow
    reason = None
    if quoted is not None and metadata.channel_id is not None:
        text, ts = quoted
        link = await services.notifier.permalink(metadata.channel_id, ts)
        reason = forms.quote_reason(text, link)
    preview = EscalationPreview(people, flow_name, policy.answer_timeout, oncall.rotation.tz,
                                policy.acknowledges)
    return forms.escalation_form(preview, metadata, reason=reason,
                                 ask_channel=metadata.channel_id is None)


# ------------------------------------------------------------------------------------- submitting


async def on_escalation_submitted(
    ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], context: AsyncBoltContext
) -> None:
    services: Services = context["services"]
    admission = Admission()
    await accept_submission(
        ack, body, view, services, FORM,
        validate=partial(validate, services),
        start=partial(start_escalation, services, admission),
        budget=VALIDATION_BUDGET_SECONDS,
        admission=admission,
    )


async def start_escalation(
    services: Services, admission: Admission, request: EscalationRequest
) -> None:
    """Start the chain. Until its row is written nobody is called, and whatever stops it there is
    the requester's to hear: a refusal by their own limit (decided as the row is written), the
    database failing, a bug. It shows in the form while its ack waits, else it is told privately.
    Once the row is written, the chain and its card tell the rest."""
    written = False

    def let_in() -> None:
        nonlocal written
        written = True
        admission.let_in()

    try:
        await services.escalations.start(request, services.oncall.now(), let_in)
    except EscalationLimitReached as refused:
        _refused_by_own_limit(services, request.requester_id, refused)
        await _not_started(services, admission, request, describe(refused))
    except AlreadyEscalating as running:
        await _not_started(services, admission, request, describe(running), running.in_form)
    except Exception as exc:
        if written:
            raise  # the chain's own (the task logs it)
        if isinstance(exc, DATABASE_FAULTS):
            words = describe(database_refusal(exc, NOT_DONE))
        else:
            words = (f"The escalation did not start and {NOT_DONE}. "
                     + log_unexpected(exc, "escalation not started"))
        await _not_started(services, admission, request, words)
    finally:
        admission.let_in()


async def _not_started(
    services: Services, admission: Admission, request: EscalationRequest, words: str,
    in_form: str | None = None,
) -> None:
    """`words` told privately, or `in_form` (plain text: a form's error draws no markup) under
    the form's reason while its ack waits."""
    if not admission.refuse({forms.GENERAL_ERROR_FIELD: in_form or words}):
        await services.notifier.tell(
            user_id=request.requester_id, channel_id=request.channel_id,
            response_url=request.response_url, message=views.refusal(words))


def _refused_by_own_limit(
    services: Services, user_id: str, refused: EscalationLimitReached
) -> None:
    logger.info("escalation by %s refused: their own limit (%d in the last %s)", user_id,
                refused.count, refused.window, extra={"user_id": user_id, "outcome": "refused"})
    services.metrics.rate_limit_refused("escalations_per_person")


async def validate(
    services: Services, submitted: Submitted[EscalationSubmission]
) -> EscalationRequest | dict[EscalationField, str]:
    """The request to start, or an error for each field that needs one."""
    user_id, metadata, submission = submitted.user_id, submitted.metadata, submitted.values
    if not services.oncall.configured:
        return {forms.GENERAL_ERROR_FIELD: NOT_SET_UP_SHORT}
    try:
        # Fresh: access may have changed since the form was opened.
        has_role = await services.responders.require(user_id, action=ACTION)
    except (NotAResponder, GroupLookupFailed, MembershipUnknown) as exc:
        return {forms.GENERAL_ERROR_FIELD: describe(exc)}
    limit = None if has_role else services.oncall.policy.escalations_per_person
    if limit is not None:
        # Early, for the common case; the count made as the row is written decides.
        now = services.escalations.clock()
        try:
            oldest = await services.escalations.store.own_limit_full(
                user_id, now - limit.seconds, limit.count)
        except DATABASE_FAULTS as exc:
            return {forms.GENERAL_ERROR_FIELD:
                    describe(database_refusal(exc, NOT_DONE, reading=True))}
        if oldest is not None:
            refused = EscalationLimitReached(limit.count, limit.window_words,
                                             describe_wait(oldest + limit.seconds - now))
            _refused_by_own_limit(services, user_id, refused)
            return {forms.GENERAL_ERROR_FIELD: describe(refused)}
    channel_id = metadata.channel_id or submission.channel_id
    if channel_id is None:
        return {EscalationField.CHANNEL: CHOOSE_CHANNEL}
    try:
        flow = await services.catalog.resolve_flow(services.oncall.policy.flow)
    except (CallbotError, EvoVoiceError) as exc:
        return {forms.GENERAL_ERROR_FIELD: f"The escalation flow can't be used: {describe(exc)}"}
    from_message = metadata.channel_id is not None
    return EscalationRequest(
        request_key=f"{submitted.team_id}:{submitted.view_id}",
        team_id=submitted.team_id,
        requester_id=user_id,
        channel_id=channel_id,
        thread_ts=metadata.thread_ts if from_message else None,
        flow_id=flow.id,
        flow_name=flow.name or flow.id,
        reason=submission.reason,
        origin="message_shortcut" if from_message else "global_shortcut",
        response_url=metadata.response_url if from_message else submission.response_url,
        limit=limit,
    )


# ------------------------------------------------------------------------------------- stopping


async def on_stop_escalation(
    ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext
) -> None:
    await ack()
    services: Services = context["services"]
    click = button_click_from(body)
    if without_clicker(click):
        return
    # Not once_per_click: its claim, a database write before the stop, would let the chain's
    # next step dial meanwhile. A copy of the click finds the chain stopped by its own clicker
    # and says nothing (stop_clicked).
    services.tasks.spawn(services.escalations.stop_clicked(click),
                         name=f"stop escalation by {click.user_id}")


# ------------------------------------------------------------------------------- acknowledging


async def on_acknowledge(ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
    services: Services = context["services"]
    click = button_click_from(body)
    if without_clicker(click):
        await ack()
        return

    # Not once_per_click: its claim, a database write before the acknowledgement, would let the
    # chain's next step dial meanwhile. A copy of the click hears "You acknowledged…" again.
    acknowledging = services.escalations.ack_clicked(click)
    if services.tasks.closed:
        # Restarting: nobody may be left believing their "I'm on it" was lost. The acknowledgement
        # is written before the click is acked (a database write; the next start hangs up and
        # finishes the escalation), within most of Slack's 3 s.
        try:
            await asyncio.wait_for(acknowledging, ACK_WHILE_RESTARTING_SECONDS)
        except TimeoutError:
            logger.warning("acknowledgement by %s not written while restarting", click.user_id)
            await ack()
            answer_later(services.notifier.tell(
                user_id=click.user_id, channel_id=click.channel_id,
                response_url=click.response_url, message=views.refusal(RESTARTING_ACK),
            ), "refusal of an acknowledgement")
            return
        await ack()
        return
    await ack()
    services.tasks.spawn(acknowledging, name=f"acknowledgement by {click.user_id}")
