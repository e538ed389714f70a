"""What both forms (the call form, the escalation form) do alike: open, and accept once.

Opening: a `trigger_id` works once and expires 3 s after Slack sent it, so the modal is opened at
once, with a light "loading" view if its data takes longer than the budget, which is then replaced.

Submitting: validate within a budget (the answer to a `view_submission` can carry field errors
only in its ack, and Slack gives up after 3 s), then claim the view so a double-clicked or racing
Submit starts nothing twice, then hand the work to the background and close the modal.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from slack_bolt.async_app import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient

from bot.services import Services
from bot.slack.modals import MetadataInvalid, ModalMetadata
from bot.slack.notify import SLACK_FAILURES, slack_error_code
from bot.storage.claims import Claims

logger = logging.getLogger(__name__)

# Leaves Slack's 3 s for the claim, the ack and the network.
VALIDATION_BUDGET_SECONDS = 2.0

Checked = TypeVar("Checked")
View = dict[str, Any]
# Takes the form's own field-id mapping (each form keys errors by its own enum).
Refuse = Callable[[Any], Awaitable[None]]


@dataclass(frozen=True)
class Wording:
    """What the requester reads when the submission can't go ahead; the field it shows under."""

    general_field: str
    too_slow: str
    spent_by_restart: str


async def accept_once(
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
) -> None:
    """Validate, claim `claim_key`, start the work; every refusal goes back in the ack."""
    try:
        checked = await asyncio.wait_for(validation, budget)
    except TimeoutError:
        logger.warning("%s from %s: validation took too long", what, user_id)
        await refuse({wording.general_field: wording.too_slow})
        return
    if isinstance(checked, Mapping):
        logger.info("%s from %s refused: %s", what, user_id, ", ".join(map(str, checked)))
        await refuse(checked)
        return
    # One start per view: a second Submit, or a racing duplicate, finds the claim taken.
    if not await Claims(services.db).claim(claim_key):
        logger.info("repeated submission of a %s by %s ignored", what, user_id)
        await ack()
        return
    try:
        services.tasks.spawn(start(checked), name=f"{what} by {user_id}")
    except RuntimeError:  # shutdown began after the checks; this view is spent
        await refuse({wording.general_field: wording.spent_by_restart})
        return
    await ack()


async def open_modal(
    client: AsyncWebClient,
    *,
    what: str,
    user_id: str,
    trigger_id: str,
    view: Awaitable[View],
    loading_view: View,
    budget: float,
    on_failure: Callable[[str], Awaitable[None]],
) -> None:
    """Open `view` (a coroutine that never raises) with the trigger; if it isn't ready within
    `budget` s, open `loading_view` and replace it once it is. `on_failure(error_code)` tells the
    user when the modal can't be opened at all."""
    prepared = asyncio.ensure_future(view)
    await asyncio.wait({prepared}, timeout=budget)
    loading = not prepared.done()
    try:
        opened = await client.views_open(
            trigger_id=trigger_id, view=loading_view if loading else prepared.result()
        )
    except SLACK_FAILURES as exc:
        prepared.cancel()
        logger.warning("views.open of the %s for %s failed (%s)", what, user_id,
                       slack_error_code(exc))
        await on_failure(slack_error_code(exc))
        return
    if not loading:
        return
    ready = await prepared
    opened_view = opened.get("view") or {}
    try:
        await client.views_update(
            view_id=str(opened_view.get("id")), hash=opened_view.get("hash"), view=ready
        )
    except SLACK_FAILURES as exc:
        # not_found: the user closed the loading view; hash_conflict: it changed meanwhile.
        logger.info("views.update of the %s for %s failed (%s)", what, user_id,
                    slack_error_code(exc))


def submitted_view(
    view: Mapping[str, Any], trusted_origins: list[str]
) -> tuple[str, ModalMetadata]:
    """A submitted form's view id (the key that makes it act once) and its metadata, read back as
    untrusted input; MetadataInvalid if either is unusable."""
    view_id = view.get("id")
    if not isinstance(view_id, str) or not view_id:
        raise MetadataInvalid("no view id")
    return view_id, ModalMetadata.decode(str(view.get("private_metadata") or ""), trusted_origins)
