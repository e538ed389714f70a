"""The call form: Block Kit for its modals, the ids its listeners share, and reading it back. Pure.

Three views, all with the same title:

    call_form()     number, flow (searched through `block_suggestion`), caller ID, reason, and,
                    opened from the global shortcut, the channel to post the confirmation in
    loading_view()  what the trigger opens when the data behind the form is slow; updated in place
    notice_view()   a closed door in words (not allowed, or the form could not be built)

The channel a `/call` form posts to travels in `private_metadata` (`FormMetadata`). It comes back
signed by Slack, but it is still parsed as untrusted input: shape-checked, and a `response_url` is
accepted only on Slack's own hosts (or those of `SLACK_API_URL`, for proxies and tests).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar
from urllib.parse import urlsplit

from bot.evovoice.client import Flow
from bot.phone import FORMAT_HINT, MAX_NUMBER_CHARS, describe_region
from bot.slack.blocks import (
    MAX_METADATA,
    MAX_OPTION_TEXT,
    MAX_OPTION_VALUE,
    MAX_OPTIONS,
    clip,
    context,
    escape,
    plain,
    section,
)

CALL_FORM_CALLBACK_ID = "call_form"
PLACE_CALL_SHORTCUT_ID = "place_call"

TITLE = "Place a call"
SUBMIT = "Call"
MAX_REASON_CHARS = 200
# Slack documents no limit for a field error; long ones (a list of numbers) only get in the way.
MAX_ERROR_CHARS = 600

# Hosts a response_url may point at (Slack's commercial and GovSlack webhooks).
SLACK_RESPONSE_HOSTS = frozenset({"hooks.slack.com", "hooks.slack-gov.com"})

_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{2,30}")
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

View = dict[str, Any]
Option = dict[str, Any]


class FormMetadataInvalid(Exception):
    """`private_metadata` is not something this bot wrote."""


@dataclass(frozen=True)
class FormMetadata:
    """Where the confirmation goes, when known at open time (`/call`); empty from the shortcut."""

    channel_id: str | None = None
    response_url: str | None = None

    def encode(self) -> str:
        data = {"channel": self.channel_id, "response_url": self.response_url}
        text = json.dumps({k: v for k, v in data.items() if v is not None}, separators=(",", ":"))
        if len(text) > MAX_METADATA:
            # A response_url is ~100 characters; rather lose the fallback than the form.
            return FormMetadata(self.channel_id).encode()
        return text

    @classmethod
    def decode(cls, text: str, trusted_origins: Iterable[str] = ()) -> FormMetadata:
        if not text:
            return cls()
        if len(text) > MAX_METADATA:
            raise FormMetadataInvalid("too long")
        try:
            data = json.loads(text)
        except ValueError:
            raise FormMetadataInvalid("not JSON") from None
        if not isinstance(data, dict) or set(data) - {"channel", "response_url"}:
            raise FormMetadataInvalid("unexpected shape")
        channel = data.get("channel")
        if channel is not None and not is_channel_id(channel):
            raise FormMetadataInvalid("bad channel")
        url = data.get("response_url")
        if url is not None and (channel is None or not is_response_url(url, trusted_origins)):
            raise FormMetadataInvalid("bad response_url")
        return cls(channel, url)


def is_channel_id(value: object) -> bool:
    return isinstance(value, str) and _CHANNEL_ID.fullmatch(value) is not None


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def is_response_url(value: object, trusted_origins: Iterable[str] = ()) -> bool:
    """A URL we may POST a message to: https on Slack's webhook hosts, or a trusted origin."""
    if not isinstance(value, str) or len(value) > 1000 or not value.isascii():
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    if parts.scheme == "https" and parts.hostname in SLACK_RESPONSE_HOSTS and parts.port is None:
        return True
    return origin_of(value) in {origin.lower() for origin in trusted_origins}


@dataclass(frozen=True)
class Submission:
    """What the form holds when submitted, as typed; nothing in it is trusted yet."""

    number_text: str
    flow_id: str | None
    caller_id: str | None
    reason: str | None
    channel_id: str | None
    response_url: str | None  # from the channel select (`response_url_enabled`)
    fields: frozenset[str]  # the inputs this view has (errors may only name these)


def _modal(blocks: list[dict[str, Any]], metadata: FormMetadata, *, submit: bool) -> View:
    view: View = {
        "type": "modal",
        "callback_id": CALL_FORM_CALLBACK_ID,
        "title": plain(TITLE),
        "close": plain("Cancel" if submit else "Close"),
        "blocks": blocks,
        "private_metadata": metadata.encode(),
    }
    if submit:
        view["submit"] = plain(SUBMIT)
    return view


def caller_id_option(e164: str) -> Option:
    return {"text": plain(e164), "value": e164}


def flow_option(flow: Flow) -> Option:
    return {"text": plain(flow.name or flow.id, MAX_OPTION_TEXT), "value": flow.id}


def flow_options(flows: Sequence[Flow]) -> list[Option]:
    """Options for the flow search; a flow whose ID Slack can't carry is left out."""
    usable = [flow for flow in flows if 0 < len(flow.id) <= MAX_OPTION_VALUE]
    return [flow_option(flow) for flow in usable[:MAX_OPTIONS]]


def call_form(
    metadata: FormMetadata,
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

    numbers = list(dict.fromkeys(owned_numbers or ()))
    if numbers:
        if default_caller_id in numbers:
            # Keep the default among the first hundred, so it can be preselected.
            numbers.remove(default_caller_id)
            numbers.insert(0, default_caller_id)
        options = [caller_id_option(n) for n in numbers[:MAX_OPTIONS]]
        select: dict[str, Any] = {
            "type": "static_select",
            "action_id": FormField.CALLER_ID,
            "placeholder": plain("Choose one of the account's numbers"),
            "options": options,
        }
        if default_caller_id in numbers:
            select["initial_option"] = caller_id_option(default_caller_id)
        blocks.append({
            "type": "input",
            "block_id": FormField.CALLER_ID,
            "optional": True,
            "label": plain("Caller ID"),
            "element": select,
            "hint": plain(
                "The number the callee sees. "
                + ("Preselected: the default." if default_caller_id in numbers
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
    return _modal(blocks, metadata, submit=True)


def loading_view(metadata: FormMetadata) -> View:
    blocks = [section("⏳ Loading the call form…")]
    return _modal(blocks, metadata, submit=False)


def notice_view(text: str) -> View:
    blocks = [section(escape(text))]
    return _modal(blocks, FormMetadata(), submit=False)


_FieldId = TypeVar("_FieldId", bound=str)


def field_errors(
    errors: Mapping[_FieldId, str], fields: Iterable[str], general: str = GENERAL_ERROR_FIELD
) -> dict[str, str]:
    """`response_action: errors` keyed by block_id; an error for a field the view lacks moves to
    the `general` spot (Slack rejects errors naming a block it doesn't show)."""
    present = set(fields)
    out: dict[str, str] = {}
    for field_id, message in errors.items():
        key = str(field_id) if field_id in present else str(general)
        text = clip(message, MAX_ERROR_CHARS)
        out[key] = f"{out[key]} {text}" if key in out else text
    return out


class ViewState:
    """A submitted modal's `view.state.values`, read defensively: any shape Slack (or a forger)
    sends gives values or None, never an exception. Block and action ids are the same here."""

    def __init__(self, view: Mapping[str, Any]) -> None:
        self._view = view
        state = view.get("state")
        values = state.get("values") if isinstance(state, Mapping) else None
        self._values: Mapping[str, Any] = values if isinstance(values, Mapping) else {}

    def element(self, block_id: str) -> Mapping[str, Any]:
        block = self._values.get(block_id)
        value = block.get(block_id) if isinstance(block, Mapping) else None
        return value if isinstance(value, Mapping) else {}

    def text(self, block_id: str) -> str | None:
        value = self.element(block_id).get("value")
        return value.strip() if isinstance(value, str) and value.strip() else None

    def selected(self, block_id: str) -> str | None:
        option = self.element(block_id).get("selected_option")
        value = option.get("value") if isinstance(option, Mapping) else None
        return value if isinstance(value, str) and value else None

    def input_block_ids(self) -> frozenset[str]:
        return frozenset(_input_block_ids(self._view))

    def channel(
        self,
        block_id: str,
        response_urls: Sequence[Mapping[str, Any]] | None,
        trusted_origins: Iterable[str],
    ) -> tuple[str | None, str | None]:
        """The chosen conversation, and the response URL Slack minted for it (if trustworthy)."""
        chosen = self.element(block_id)
        channel = (
            chosen.get("selected_conversation")
            or chosen.get("initial_conversation")
            or _initial_conversation(self._view, block_id)
        )
        channel_id = str(channel) if is_channel_id(channel) else None
        for entry in response_urls or ():
            if (
                entry.get("block_id") == block_id
                and entry.get("channel_id") == channel_id
                and is_response_url(entry.get("response_url"), trusted_origins)
            ):
                return channel_id, str(entry["response_url"])
        return channel_id, None


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
        caller_id=state.selected(FormField.CALLER_ID),
        reason=clip(reason, MAX_REASON_CHARS) if reason else None,
        channel_id=channel_id,
        response_url=response_url,
        fields=state.input_block_ids(),
    )


def is_e164(value: str) -> bool:
    return _E164.fullmatch(value) is not None


def _blocks(view: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    blocks = view.get("blocks")
    return [b for b in blocks if isinstance(b, Mapping)] if isinstance(blocks, list) else []


def _input_block_ids(view: Mapping[str, Any]) -> list[str]:
    return [
        str(b.get("block_id")) for b in _blocks(view)
        if b.get("type") == "input" and isinstance(b.get("block_id"), str)
    ]


def _initial_conversation(view: Mapping[str, Any], block_id: str) -> str | None:
    """The channel select's preset, if Slack left an untouched default out of the state."""
    for block in _blocks(view):
        if block.get("block_id") == block_id:
            element = block.get("element")
            if isinstance(element, Mapping):
                value = element.get("initial_conversation")
                return value if isinstance(value, str) else None
    return None
