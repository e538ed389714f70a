"""The kit both forms are built from (the call form, the escalation form): one kit, two forms.

    ModalMetadata   where the outcome goes (channel, thread, response_url), carried through Slack in
                    `private_metadata` and parsed back as untrusted input
    Form            one form's callback id, title and labels: its modal, loading view (named by
                    `loading_id`, found without the answer to views.open) and notice
    ViewState       a submitted view's values, read so that no shape raises
    field_errors    `response_action: errors` keyed by block id, with a general spot for the rest
    is_channel_id, is_response_url, origin_of   the checks metadata and submissions share

Pure functions and values, no I/O.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from bot.slack.blocks import MAX_METADATA, Block, clip, escape, plain, section

View = dict[str, Any]

# Hosts a response_url may point at (Slack's commercial and GovSlack webhooks).
SLACK_RESPONSE_HOSTS = frozenset({"hooks.slack.com", "hooks.slack-gov.com"})
# Slack documents no limit for a field error; long ones (a list of numbers) only get in the way.
MAX_ERROR_CHARS = 600

_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{2,30}")
_TS = re.compile(r"[0-9]{1,12}\.[0-9]{1,9}")
_METADATA_KEYS = frozenset({"channel", "thread_ts", "response_url"})


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
        port = parts.port  # raises for a port that is not a number from 0 to 65535
    except ValueError:
        return False
    if parts.scheme == "https" and parts.hostname in SLACK_RESPONSE_HOSTS and port is None:
        return True
    return origin_of(value) in {origin.lower() for origin in trusted_origins}


class MetadataInvalid(Exception):
    """`private_metadata` is not something this bot wrote."""


@dataclass(frozen=True)
class ModalMetadata:
    """Where a form's outcome goes, when known at open time: the channel (and, from a message
    shortcut, its thread), and the response_url that reaches the requester when the bot can't post
    there. Empty from a global shortcut: the form then asks for a channel."""

    channel_id: str | None = None
    thread_ts: str | None = None
    response_url: str | None = None

    def encode(self) -> str:
        data = {"channel": self.channel_id, "thread_ts": self.thread_ts,
                "response_url": self.response_url}
        text = json.dumps({k: v for k, v in data.items() if v is not None}, separators=(",", ":"))
        if len(text) > MAX_METADATA:
            # A response_url is ~100 characters; rather lose the fallback than the form.
            return ModalMetadata(self.channel_id, self.thread_ts).encode()
        return text

    @classmethod
    def decode(cls, text: str, trusted_origins: Iterable[str] = ()) -> ModalMetadata:
        if not text:
            return cls()
        if len(text) > MAX_METADATA:
            raise MetadataInvalid("too long")
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):  # nested deeper than Python reads: not ours either
            raise MetadataInvalid("not JSON") from None
        if not isinstance(data, dict) or set(data) - _METADATA_KEYS:
            raise MetadataInvalid("unexpected shape")
        channel, thread_ts = data.get("channel"), data.get("thread_ts")
        url = data.get("response_url")
        if channel is not None and not is_channel_id(channel):
            raise MetadataInvalid("bad channel")
        if thread_ts is not None and (
            channel is None or not isinstance(thread_ts, str) or not _TS.fullmatch(thread_ts)
        ):
            raise MetadataInvalid("bad thread_ts")
        if url is not None and (channel is None or not is_response_url(url, trusted_origins)):
            raise MetadataInvalid("bad response_url")
        return cls(channel, thread_ts, url)


@dataclass(frozen=True)
class Form:
    """One form: every view it shows has its callback id and title, so Slack routes its
    submission to the same listener whichever view was on screen."""

    callback_id: str
    title: str
    submit: str
    loading: str  # what the loading view says while the form's data is fetched

    def modal(self, blocks: list[Block], metadata: ModalMetadata, *, submit: bool) -> View:
        view: View = {
            "type": "modal",
            "callback_id": self.callback_id,
            "title": plain(self.title),
            "close": plain("Cancel" if submit else "Close"),
            "blocks": blocks,
            "private_metadata": metadata.encode(),
        }
        if submit:
            view["submit"] = plain(self.submit)
        return view

    def loading_view(self, metadata: ModalMetadata, trigger_id: str) -> View:
        """The loading view opened with `trigger_id`, named by `loading_id(trigger_id)`: should
        the answer to views.open be lost, it is still replaced by that name."""
        view = self.modal([section(self.loading)], metadata, submit=False)
        view["external_id"] = loading_id(trigger_id)
        return view

    def notice_view(self, text: str) -> View:
        """A closed door in words (not allowed, or the form could not be built)."""
        return self.modal([section(escape(text))], ModalMetadata(), submit=False)


def loading_id(trigger_id: str) -> str:
    """The `external_id` of the loading view opened with `trigger_id` (Slack: unique in the
    workspace, at most 255 characters): a trigger opens one view, and every delivery of the same
    request carries the same trigger, so each finds the view by it."""
    return "loading-" + hashlib.sha256(trigger_id.encode()).hexdigest()[:40]


_FieldId = TypeVar("_FieldId", bound=str)


def field_errors(
    errors: Mapping[_FieldId, str], fields: Iterable[str], general: str
) -> dict[str, str]:
    """`response_action: errors` keyed by block_id; an error for a field the view lacks moves to
    the `general` spot (Slack rejects errors naming a block it doesn't show)."""
    present = set(fields)
    out: dict[str, str] = {}
    for field_id, message in errors.items():
        key = str(field_id) if field_id in present else str(general)
        text = clip(message, MAX_ERROR_CHARS, markup=False)
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

    def selected_text(self, block_id: str) -> str | None:
        """The chosen option's text, as shown in the menu (what the person picked it by)."""
        option = self.element(block_id).get("selected_option")
        text = option.get("text") if isinstance(option, Mapping) else None
        value = text.get("text") if isinstance(text, Mapping) else None
        return value.strip() if isinstance(value, str) and value.strip() else None

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
