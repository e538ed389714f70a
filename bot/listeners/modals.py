"""What both forms (the call form, the escalation form) do alike: open, and accept once.

Opening (`open_form`): a `trigger_id` works once and expires 3 s after Slack sent it, so the modal
is opened at once, with a light "loading" view if its data takes longer than the budget, which is
then replaced; a modal that can't be opened is explained to the requester.

Submitting (`accept_submission`): read the view back as untrusted input, validate within a budget
(the answer to a `view_submission` can carry field errors only in its ack, and Slack gives up after
3 s), then claim the view so a double-clicked or racing Submit starts nothing twice, then hand the
work to the background and close the modal. A form whose work makes a last check of its own as it
begins (`Admission`: the escalation's own limit, counted as its row is written) keeps the ack
waiting for that check, within what is left of the budget: a refusal then shows in the form, which
stays open; one that comes later is the work's to tell.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, Protocol, TypeVar

from slack_bolt.async_app import AsyncAck
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.calls.dials_first import DialsFirst
from bot.calls.messages import refusal
from bot.errors import DatabaseUnavailable
from bot.listeners.actions import user_of
from bot.services import Services
from bot.slack.modals import Form, MetadataInvalid, ModalMetadata, field_errors, loading_id
from bot.slack.notify import SLACK_FAILURES, slack_error_code
from bot.storage.claims import Untold
from bot.storage.faults import refused_when_database_fails

logger = logging.getLogger(__name__)

# Leaves Slack's 3 s for the claim, the ack and the network.
VALIDATION_BUDGET_SECONDS = 2.0
# Slack's answers to views.open when a view was opened already by this trigger (it works once),
# or under the loading view's name (which Slack checks first, its documentation doesn't say).
OPENED_ALREADY = frozenset({"exchanged_trigger_id", "duplicate_external_id"})

Checked = TypeVar("Checked")
View = dict[str, Any]
# Takes the form's own field-id mapping (each form keys errors by its own enum).
Refuse = Callable[[Any], Awaitable[None]]


class FormValues(Protocol):
    """A form's values as read from its view (`read_submission` of each form)."""

    @property
    def fields(self) -> frozenset[str]:
        """The inputs the view has (errors may only name these); empty when it doesn't say."""


Values = TypeVar("Values", bound=FormValues)


@dataclass(frozen=True)
class Wording:
    """What the requester reads when the submission can't go ahead; the field it shows under."""

    general_field: str
    too_slow: str
    spent_by_restart: str
    stale_form: str  # the view's metadata is unusable (not ours, or from an older callbot)
    not_done: str  # what did not happen when the database failed ("nothing was dialled")


@dataclass(frozen=True)
class FormSpec(Generic[Values]):
    """One form as the kit runs it: its views, its name in log lines and refusals, the prefix of
    its claims (one start per view), its fields, how its values are read back, its wording."""

    views: Form
    what: str
    claim_prefix: str
    fields: frozenset[str]
    read: Callable[[Mapping[str, Any], Sequence[Mapping[str, Any]] | None, list[str]], Values]
    wording: Wording


class Admission:
    """The work's last word on a submission, heard by its ack while that still waits: `let_in()`
    (the work goes ahead, or failed otherwise: nothing for the form to show) or `refuse(errors)`,
    which says whether the form shows them."""

    def __init__(self) -> None:
        self._answer: asyncio.Future[Mapping[Any, str] | None] = (
            asyncio.get_running_loop().create_future())
        self._heard = False  # the ack stopped waiting

    def let_in(self) -> None:
        if not self._answer.done():
            self._answer.set_result(None)

    def refuse(self, errors: Mapping[Any, str]) -> bool:
        """True: the form shows `errors`. False: the modal has closed, tell the person otherwise."""
        if self._heard or self._answer.done():
            return False
        self._answer.set_result(errors)
        return True

    async def heard(self, timeout: float) -> Mapping[Any, str] | None:
        """The refusal to show, if one came within `timeout`; after this, none will be shown."""
        try:
            return await asyncio.wait_for(asyncio.shield(self._answer), max(0.0, timeout))
        except TimeoutError:
            # A refusal that came as the timeout fired was promised to the form: it is shown.
            return self._answer.result() if self._answer.done() else None
        finally:
            self._heard = True


@dataclass(frozen=True)
class Submitted(Generic[Values]):
    """A submitted form: who sent which view, where its outcome goes, and what it holds (read as
    untrusted input; nothing of it is checked yet)."""

    user_id: str
    team_id: str
    view_id: str
    metadata: ModalMetadata
    values: Values


async def accept_submission(
    ack: AsyncAck,
    body: Mapping[str, Any],
    view: Mapping[str, Any],
    services: Services,
    spec: FormSpec[Values],
    *,
    validate: Callable[[Submitted[Values]], Awaitable[Checked | Mapping[Any, str]]],
    start: Callable[[Checked], Coroutine[Any, Any, Any]],
    budget: float = VALIDATION_BUDGET_SECONDS,
    admission: Admission | None = None,
    repeated: Callable[[Checked], Coroutine[Any, Any, Any]] | None = None,
    untold: Callable[[Checked], str | None] | None = None,
    dials_first: DialsFirst | None = None,
) -> None:
    """A form's Submit: read it back, check it with `validate` (the checked request, or an error
    per field), then start it once per view; every refusal goes back in the ack, under its field
    (any of the form's fields when the view doesn't list its own). With `admission`, which the
    started work answers, the ack waits for it too. `repeated` is started for a Submit of a view
    already started (acked; it records and counts it, and nothing else is done). `untold`: the
    note the view's claim keeps for its requester (bot/calls/untold.py). `dials_first`: the work
    dials, and is counted as on its way to the phone from its start here (DialsFirst.acked): only
    for work that soon dials or ends, never for long work such as an escalation's."""
    user_id = user_of(dict(body))
    team_id = _team_of(body, view)
    trusted = services.trusted_origins
    values = spec.read(view, body.get("response_urls"), trusted)
    shown = values.fields or spec.fields
    wording, what = spec.wording, spec.what

    async def refuse(errors: Mapping[Any, str]) -> None:
        await ack(response_action="errors",
                  errors=field_errors(errors, shown, wording.general_field))

    if not user_id:  # malformed: nobody to check, nor to start anything for
        logger.warning("%s submitted without a user", what)
        await refuse({wording.general_field: wording.stale_form})
        return
    try:
        view_id, metadata = _submitted_view(view, trusted)
    except MetadataInvalid as exc:
        logger.warning("%s from %s with unusable private_metadata (%s)", what, user_id, exc,
                       extra=_refused(user_id))
        await refuse({wording.general_field: wording.stale_form})
        return
    await _accept_once(
        ack,
        refuse,
        services,
        what=what,
        user_id=user_id,
        claim_key=submission_key(spec.claim_prefix, team_id, view_id),
        validation=validate(Submitted(user_id, team_id, view_id, metadata, values)),
        start=start,
        wording=wording,
        budget=budget,
        admission=admission,
        repeated=repeated,
        untold=untold,
        dials_first=dials_first,
    )


def _refused(user_id: str) -> dict[str, str]:
    """The structured fields of a line refusing `user_id`'s submission (bot/ops/logs.py)."""
    return {"user_id": user_id, "outcome": "refused"}


def submission_key(claim_prefix: str, team_id: str, view_id: str) -> str:
    """The claim that starts a form's work once per view: every Submit of it has the same."""
    return f"{claim_prefix}:{team_id}:{view_id}"


def submitted_key(claim_prefix: str, body: Mapping[str, Any]) -> str | None:
    """`submission_key` of a submission as Slack sent it; None if it names no view."""
    view = body.get("view")
    view_id = view.get("id") if isinstance(view, Mapping) else None
    if not isinstance(view, Mapping) or not isinstance(view_id, str) or not view_id:
        return None
    return submission_key(claim_prefix, _team_of(body, view), view_id)


def _team_of(body: Mapping[str, Any], view: Mapping[str, Any]) -> str:
    team = body.get("team")
    return str((team.get("id") if isinstance(team, Mapping) else None)
               or view.get("team_id") or "")


async def _accept_once(
    ack: AsyncAck,
    refuse: Refuse,
    services: Services,
    *,
    what: str,
    user_id: str,
    claim_key: str,
    validation: Awaitable[Checked | Mapping[Any, str]],
    start: Callable[[Checked], Coroutine[Any, Any, Any]],
    wording: Wording,
    budget: float = VALIDATION_BUDGET_SECONDS,
    admission: Admission | None = None,
    repeated: Callable[[Checked], Coroutine[Any, Any, Any]] | None = None,
    untold: Callable[[Checked], str | None] | None = None,
    dials_first: DialsFirst | None = None,
) -> None:
    """Validate, claim `claim_key`, start the work; every refusal goes back in the ack."""
    began = asyncio.get_running_loop().time()
    try:
        checked = await asyncio.wait_for(validation, budget)
    except TimeoutError:
        logger.warning("%s from %s: validation took too long", what, user_id,
                       extra=_refused(user_id))
        await refuse({wording.general_field: wording.too_slow})
        return
    if isinstance(checked, Mapping):
        logger.info("%s from %s refused: %s", what, user_id, ", ".join(map(str, checked)),
                    extra=_refused(user_id))
        await refuse(checked)
        return
    # One start per view: a second Submit, or a racing duplicate, finds the claim taken; not the
    # Submit a refusal asks for (a claim that committed and lost its answer is given back).
    note = untold(checked) if untold is not None else None
    try:
        with refused_when_database_fails(wording.not_done):
            claimed = await services.claims.claim_or_give_back(claim_key, untold=note)
    except DatabaseUnavailable as exc:  # nothing started: this form may be submitted again
        await refuse({wording.general_field: exc.user_message})
        return
    if not claimed:
        await ack()
        if repeated is None:
            logger.info("repeated submission of a %s by %s ignored", what, user_id,
                        extra={"user_id": user_id, "outcome": "duplicate"})
            return
        try:
            services.tasks.spawn(repeated(checked), name=f"repeated {what} by {user_id}")
        except RuntimeError:  # shutting down: only the log knows
            logger.info("repeated submission of a %s by %s ignored", what, user_id,
                        extra={"user_id": user_id, "outcome": "duplicate"})
        return
    try:
        # With `admission` this ack waits on the work: it must not wait for this ack in turn.
        spawn = partial(services.tasks.spawn, start(checked), name=f"{what} by {user_id}",
                        after_acks=admission is None)
        if dials_first is None:
            spawn()
        else:  # on its way to the phone from now: the posts of calls acked before it wait for it
            dials_first.acked(spawn)
    except RuntimeError:  # shutdown began after the checks; this view is spent
        await refuse({wording.general_field: wording.spent_by_restart})
        if note is not None:  # told here: nothing more to tell after the restart
            try:
                await services.claims.told(Untold(claim_key, note))
            except Exception as exc:  # told twice, then: "not placed" after the restart too
                logger.warning("claim %s keeps its note (%s)", claim_key, type(exc).__name__)
        return
    if admission is not None:
        errors = await admission.heard(budget - (asyncio.get_running_loop().time() - began))
        if errors is not None:
            logger.info("%s from %s refused as it began: %s", what, user_id,
                        ", ".join(map(str, errors)), extra=_refused(user_id))
            try:  # nothing was started: Submit on this form again is checked afresh
                await services.claims.release(claim_key)
            except Exception as exc:  # the refusal is still owed, within Slack's 3 s
                logger.warning("claim %s not released (%s)", claim_key, type(exc).__name__)
            await refuse(errors)
            return
    await ack()


async def open_form(
    client: AsyncWebClient,
    services: Services,
    spec: FormSpec[Any],
    *,
    user_id: str,
    trigger_id: str,
    metadata: ModalMetadata,
    view: Awaitable[View],
    budget: float,
) -> None:
    """Open `view` (a coroutine that never raises) with the trigger; if it isn't ready within
    `budget` s, open the form's loading view and replace it once it is. When the modal can't be
    opened at all, the requester is told where the form's outcome would have gone."""
    prepared = asyncio.ensure_future(view)
    await asyncio.wait({prepared}, timeout=budget)
    loading = not prepared.done()
    try:
        opened = await client.views_open(
            trigger_id=trigger_id,
            view=spec.views.loading_view(metadata, trigger_id) if loading else prepared.result(),
        )
    except SLACK_FAILURES as exc:
        code = slack_error_code(exc)
        if loading and (code in OPENED_ALREADY or not isinstance(exc, SlackApiError)):
            # Slack may show the loading view though its answer never came (the connection
            # dropped: the client's retry met the trigger spent, or the view's name taken; no
            # answer in time), or an earlier delivery of this request opened it: replaced by its
            # name, else it stays up for good. Not found, nothing was opened by this trigger's
            # loading view, and only no answer leaves the person untold.
            logger.info("views.open of the %s for %s: %s; the loading view is replaced by its "
                        "name", spec.what, user_id, code)
            await _replace_loading(
                client, services, spec, user_id, metadata, await prepared,
                {"external_id": loading_id(trigger_id)},
                unopened=None if code in OPENED_ALREADY else code)
            return
        prepared.cancel()
        if code in OPENED_ALREADY:
            # The same request delivered again (a Socket Mode envelope after a reconnect, a
            # proxy resending, a copy on each replica): its first delivery used the trigger and
            # opened the modal, or told why not. Told "could not open", the person would go
            # after a form that is there.
            logger.info("views.open of the %s for %s: trigger used by an earlier delivery",
                        spec.what, user_id)
            return
        logger.warning("views.open of the %s for %s failed (%s)", spec.what, user_id, code)
        await _not_opened(services, spec, user_id, metadata, code)
        return
    if not loading:
        return
    opened_view = opened.get("view") or {}
    await _replace_loading(
        client, services, spec, user_id, metadata, await prepared,
        {"view_id": str(opened_view.get("id")), "hash": opened_view.get("hash")})


async def _replace_loading(
    client: AsyncWebClient, services: Services, spec: FormSpec[Any], user_id: str,
    metadata: ModalMetadata, ready: View, which: dict[str, Any], *, unopened: str | None = None,
) -> None:
    """Replace the loading view (`which`: its id and hash, or its name) with the form, ready.
    `unopened`: why views.open may not have opened it; not found, the requester is told that."""
    try:
        await client.views_update(view=ready, **which)
    except SLACK_FAILURES as exc:
        # not_found: the user closed the loading view (or it never opened); hash_conflict: it
        # changed meanwhile.
        code = slack_error_code(exc)
        logger.info("views.update of the %s for %s failed (%s)", spec.what, user_id, code)
        if code == "not_found" and unopened is not None:
            await _not_opened(services, spec, user_id, metadata, unopened)
        elif code not in ("not_found", "hash_conflict"):
            # Slack's own trouble: the loading view would stay up for good, unexplained.
            await _not_opened(services, spec, user_id, metadata, code)


async def _not_opened(
    services: Services, spec: FormSpec[Any], user_id: str, metadata: ModalMetadata, code: str
) -> None:
    """Tell the requester the form could not be shown, where its outcome would have gone."""
    await services.notifier.tell(
        user_id=user_id, channel_id=metadata.channel_id, response_url=metadata.response_url,
        message=refusal(f"I could not open the {spec.what} ({code}). Try again."),
    )


def _submitted_view(
    view: Mapping[str, Any], trusted_origins: list[str]
) -> tuple[str, ModalMetadata]:
    """A submitted form's view id (the key that makes it act once) and its metadata, read back as
    untrusted input; MetadataInvalid if either is unusable."""
    view_id = view.get("id")
    if not isinstance(view_id, str) or not view_id:
        raise MetadataInvalid("no view id")
    return view_id, ModalMetadata.decode(str(view.get("private_metadata") or ""), trusted_origins)
