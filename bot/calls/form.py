"""The call form: Block Kit for its modals, the ids its listeners share, and reading it back. Pure.

Built from the kit in bot/slack/modals.py, as the escalation form is. Three views, all with the
same title:

    call_form()                 number, flow (searched through `block_suggestion`), caller ID,
                                reason, and, opened from the global shortcut, the channel to post
                                the confirmation in
    CALL_FORM.loading_view(…)   what the trigger opens when the data behind the form is slow
    CALL_FORM.notice_view()     a closed door in words (not allowed, or the form could not be built)

The channel a `/call` form posts to travels in `private_metadata` (`ModalMetadata`). It comes back
signed by Slack, but it is still parsed as untrusted input: shape-checked, and a `response_url` is
accepted only on Slack's own hosts (or those of `SLACK_API_URL`, for proxies and tests).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bot.evovoice.client import Flow
from bot.phone import FORMAT_HINT, MAX_NUMBER_CHARS, describe_region
from bot.slack.blocks import (
    MAX_OPTION_TEXT,
    MAX_OPTION_VALUE,
    MAX_OPTIONS,
    clip,
    context,
    plain,
    slack_length,
)
from bot.slack.modals import Form, ModalMetadata, View, ViewState

CALL_FORM_CALLBACK_ID = "call_form"
PLACE_CALL_SHORTCUT_ID = "place_call"

TITLE = "Place a call"
SUBMIT = "Call"
MAX_REASON_CHARS = 200

_E164 = re.compile(r"\+[1-9][0-9]{1,14}")


class FormField(StrEnum):
    """The block_id of each input; its element's action_id is the same string."""

    NUMBER = "call_form.number"
    FLOW = "call_form.flow"
    CALLER_ID = "call_form.caller_id"
    REASON = "call_form.reason"
    CHANNEL = "call_form.channel"


# Slack shows errors only under input blocks. Refusals of the request as a whole (role, restart,
# a check that took too long) go under the first one, where the eye starts.
GENERAL_ERROR_FIELD = FormField.NUMBER

Option = dict[str, Any]

# The claims of its submissions (one start per view): bot/listeners/modals.py.
CALL_FORM_CLAIMS = "form"
CALL_FORM = Form(CALL_FORM_CALLBACK_ID, TITLE, SUBMIT, loading="⏳ Loading the call form…")


@dataclass(frozen=True)
class Submission:
    """What the form holds when submitted, as typed; nothing in it is trusted yet."""

    number_text: str
    flow_id: str | None
    flow_label: str | None  # the chosen flow's option text, as the person saw it
    caller_id: str | None
    reason: str | None
    channel_id: str | None
    response_url: str | None  # from the channel select (`response_url_enabled`)
    fields: frozenset[str]  # the inputs this view has (errors may only name these)


def caller_id_option(e164: str) -> Option:
    return {"text": plain(e164), "value": e164}


def caller_id_options(
    owned_numbers: Sequence[str], query: str, default_caller_id: str | None = None
) -> list[Option]:
    """The caller IDs a search offers (a menu of more than Slack's 100 options): the numbers whose
    digits hold the digits typed, in any format ("(814) 555-0240"), the default first."""
    wanted = re.sub(r"[^0-9]", "", query)
    if query.strip() and not wanted:
        return []
    numbers = _default_first(owned_numbers, default_caller_id)
    return [caller_id_option(n) for n in numbers
            if wanted in re.sub(r"[^0-9]", "", n)][:MAX_OPTIONS]


def _default_first(owned_numbers: Sequence[str] | None, default: str | None) -> list[str]:
    numbers = list(dict.fromkeys(owned_numbers or ()))
    if default in numbers:
        numbers.remove(default)
        numbers.insert(0, default)
    return numbers


# Room the ID of a flow takes in an option that shares its name (a GUID's 36 characters fit whole).
_MAX_ID_SHOWN = 40


def _shown_name(flow: Flow) -> str:
    return clip(flow.name or flow.id, MAX_OPTION_TEXT, markup=False).casefold()


def flow_option(flow: Flow, *, with_id: bool = False) -> Option:
    """`with_id`: another flow looks the same in a menu, so this one also shows its ID."""
    if not with_id:
        return {"text": plain(flow.name or flow.id, MAX_OPTION_TEXT), "value": flow.id}
    shown_id = flow.id if len(flow.id) <= _MAX_ID_SHOWN else "…" + flow.id[-_MAX_ID_SHOWN:]
    suffix = f" (ID {shown_id})"
    name = clip(flow.name or "", MAX_OPTION_TEXT - slack_length(suffix), markup=False)
    return {"text": plain(name + suffix, MAX_OPTION_TEXT), "value": flow.id}


def flow_options(flows: Sequence[Flow], account_flows: Sequence[Flow] = ()) -> list[Option]:
    """Options for the flow search; a flow whose ID Slack can't carry is left out. A flow whose
    name looks like another's (in `flows` or anywhere in `account_flows`) is shown with its ID:
    two identical options would have the person pick one blind."""
    usable = [flow for flow in flows if 0 < slack_length(flow.id) <= MAX_OPTION_VALUE]
    seen: dict[str, set[str]] = {}
    for flow in (*account_flows, *flows):
        seen.setdefault(_shown_name(flow), set()).add(flow.id)
    return [flow_option(flow, with_id=len(seen[_shown_name(flow)]) > 1)
            for flow in usable[:MAX_OPTIONS]]


def call_form(
    metadata: ModalMetadata,
    *,
    number_text: str | None = None,
    owned_numbers: Sequence[str] | None = None,
    default_caller_id: str | None = None,
    allowed_regions: Sequence[str] = (),
    ask_channel: bool = False,
) -> View:
    """The form. `owned_numbers` None (unknown) or empty leaves the caller ID to the default."""
    blocks: list[dict[str, Any]] = []
    if metadata.channel_id is not None:
        blocks.append(context(f"The confirmation will be posted in <#{metadata.channel_id}>."))

    regions = ", ".join(describe_region(region) for region in allowed_regions)
    number_input: dict[str, Any] = {
        "type": "plain_text_input",
        "action_id": FormField.NUMBER,
        "max_length": MAX_NUMBER_CHARS,
        "placeholder": plain("+18144043093"),
    }
    if number_text and len(number_text) <= MAX_NUMBER_CHARS:
        # Longer text is not cut short: a truncated number could be someone else's.
        number_input["initial_value"] = number_text
    blocks.append({
        "type": "input",
        "block_id": FormField.NUMBER,
        "label": plain("Number to call"),
        "element": number_input,
        "hint": plain(
            f"With country code or in national format: {FORMAT_HINT}."
            + (f" Calls may go to {regions}." if regions else "")
        ),
    })

    blocks.append({
        "type": "input",
        "block_id": FormField.FLOW,
        "label": plain("Flow"),
        "element": {
            "type": "external_select",
            "action_id": FormField.FLOW,
            "placeholder": plain("Type to search flows by name"),
            "min_query_length": 0,
        },
        "hint": plain("What the call does once answered: the Evo Voice flow."),
    })

    numbers = _default_first(owned_numbers, default_caller_id)
    if numbers:
        preselected = default_caller_id in numbers
        select: dict[str, Any] = {
            "action_id": FormField.CALLER_ID,
            "placeholder": plain("Choose one of the account's numbers"),
        }
        if len(numbers) <= MAX_OPTIONS:
            select.update(type="static_select", options=[caller_id_option(n) for n in numbers])
            how = ""
        else:
            # A menu holds at most 100 options: past that, the first 100 alone left the others
            # impossible to choose, unsaid. A search (`block_suggestion`) reaches every one.
            select.update(type="external_select", min_query_length=0)
            how = (f"The account has {len(numbers)} numbers: type some of the digits to find "
                   "one. ")
        if preselected:
            select["initial_option"] = caller_id_option(default_caller_id or "")
        blocks.append({
            "type": "input",
            "block_id": FormField.CALLER_ID,
            "optional": True,
            "label": plain("Caller ID"),
            "element": select,
            "hint": plain(
                "The number the callee sees. " + how
                + ("Preselected: the default, also used when left empty." if preselected
                   else "Left empty, Evo Voice picks one of the account's numbers.")
            ),
        })

    blocks.append({
        "type": "input",
        "block_id": FormField.REASON,
        "optional": True,
        "label": plain("Reason"),
        "element": {
            "type": "plain_text_input",
            "action_id": FormField.REASON,
            "max_length": MAX_REASON_CHARS,
            "placeholder": plain("e.g. INC-1234: checkout is down"),
        },
        "hint": plain("Shown in the confirmation."),
    })

    if ask_channel:
        blocks.append({
            "type": "input",
            "block_id": FormField.CHANNEL,
            "label": plain("Post the confirmation in"),
            "element": {
                "type": "conversations_select",
                "action_id": FormField.CHANNEL,
                "placeholder": plain("Choose a channel"),
                # Slack fills in the conversation the user is viewing, where it knows it.
                "default_to_current_conversation": True,
                # The submission then carries a response_url for the chosen conversation: the
                # fallback when the bot can't post there, as with /call.
                "response_url_enabled": True,
                "filter": {"exclude_bot_users": True},
            },
        })
    return CALL_FORM.modal(blocks, metadata, submit=True)


def read_submission(
    view: Mapping[str, Any],
    response_urls: Sequence[Mapping[str, Any]] | None = None,
    trusted_origins: Iterable[str] = (),
) -> Submission:
    """The form's values from a `view_submission` (`view.state.values`), shape-checked."""
    state = ViewState(view)
    channel_id, response_url = state.channel(FormField.CHANNEL, response_urls, trusted_origins)
    reason = state.text(FormField.REASON)
    return Submission(
        number_text=state.text(FormField.NUMBER) or "",
        flow_id=state.selected(FormField.FLOW),
        flow_label=state.selected_text(FormField.FLOW),
        caller_id=state.selected(FormField.CALLER_ID),
        reason=clip(reason, MAX_REASON_CHARS, markup=False) if reason else None,
        channel_id=channel_id,
        response_url=response_url,
        fields=state.input_block_ids(),
    )


def is_e164(value: str) -> bool:
    return _E164.fullmatch(value) is not None
