"""The escalation form: its modal (who is on call, who comes next, the flow, a reason quoting the
message, the channel), read back on submission. Built from the kit in bot/slack/modals.py.

User text is escaped, Slack user ids become mentions, numbers are always masked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from bot.oncall.roster import OnCallPerson, Source
from bot.oncall.roster_views import local_time, reach
from bot.slack.blocks import (
    ELLIPSIS,
    MAX_TEXT,
    Block,
    clip,
    context,
    escape,
    listing,
    plain,
    section,
    slack_length,
)
from bot.slack.modals import Form, ModalMetadata, View, ViewState

ESCALATE_MESSAGE_SHORTCUT_ID = "escalate_message"
ESCALATE_GLOBAL_SHORTCUT_ID = "escalate_global"
ESCALATION_FORM_CALLBACK_ID = "escalation_form"
TITLE = "Escalate to on-call"
SUBMIT = "Escalate"
MAX_REASON_CHARS = 500
MAX_QUOTE_CHARS = 300  # leaves room in the reason for the permalink


class EscalationField(StrEnum):
    """The block_id of each input; its element's action_id is the same string."""

    REASON = "escalation.reason"
    CHANNEL = "escalation.channel"


# Errors about the whole request (role, restart) go under the reason: every form has it.
GENERAL_ERROR_FIELD = EscalationField.REASON

# The claims of its submissions (one start per view): bot/listeners/modals.py.
ESCALATION_FORM_CLAIMS = "escalation-form"
ESCALATION_FORM = Form(
    ESCALATION_FORM_CALLBACK_ID, TITLE, SUBMIT, loading="⏳ Looking up who is on call…"
)


@dataclass(frozen=True)
class EscalationPreview:
    """What the form shows: the order of people as it is now, the flow, the timeout."""

    people: Sequence[OnCallPerson]
    flow_name: str
    answer_timeout: float
    tz: ZoneInfo
    acknowledges: bool = True  # `[oncall] ack`: "acknowledge" (else the call connecting ends it)


@dataclass(frozen=True)
class EscalationSubmission:
    reason: str | None
    channel_id: str | None
    response_url: str | None  # from the channel select (`response_url_enabled`)
    fields: frozenset[str]


# ------------------------------------------------------------------------------- quoting a message

# Slack's markup never holds a `<` (text escapes it as `&lt;`): read up to the next one, each
# pattern stops there. Read on past it, every `<!` or `<http:` left unclosed in a message read to
# the end of the text, over and over: a 40,000-character alert held the event loop for seconds.
_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|([^<>]*))?>")
_CHANNEL = re.compile(r"<#([CGD][A-Z0-9]+)(?:\|([^<>]*))?>")
_SPECIAL = re.compile(r"<!(?:subteam\^[A-Z0-9]+\|)?([^<>|]*)(?:\|([^<>]*))?>")
_LINK = re.compile(r"<((?:https?|mailto):[^<>|]+)(?:\|([^<>]*))?>")
# An address at the end of a quote, in the parentheses plain_message_text writes it in.
_LAST_ADDRESS = re.compile(r"\(?(?:https?://|mailto:)\S*\Z")


def plain_message_text(text: str) -> str:
    """A message's text as a person reads it: Slack's markup and entities turned into plain text,
    whitespace collapsed onto one line."""
    text = _MENTION.sub(lambda m: "@" + (m.group(2) or m.group(1)), text)
    text = _CHANNEL.sub(lambda m: "#" + (m.group(2) or m.group(1)), text)
    text = _SPECIAL.sub(lambda m: (m.group(2) or "@" + m.group(1).lstrip("@")), text)
    text = _LINK.sub(lambda m: f"{m.group(2)} ({m.group(1)})" if m.group(2) else m.group(1), text)
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return " ".join(text.split())


def message_words(message: Mapping[str, Any]) -> str:
    """What a message says, attachments included: a monitoring bot's alert often has no `text`
    of its own, only attachments (pretext, title, text, fields; the fallback when nothing else)."""
    parts = [str(message.get("text") or "")]
    attachments = message.get("attachments")
    for attachment in attachments if isinstance(attachments, list) else []:
        if not isinstance(attachment, dict):
            continue
        said = [str(attachment.get(key) or "") for key in ("pretext", "title", "text")]
        fields = attachment.get("fields")
        for item in fields if isinstance(fields, list) else []:
            if isinstance(item, dict):
                said.append(f"{item.get('title') or ''}: {item.get('value') or ''}".strip(": "))
        said = [s for s in said if s.strip()]
        parts += said or [str(attachment.get("fallback") or "")]
    return " · ".join(p.strip() for p in parts if p.strip())


def _quote(text: str) -> str:
    """`text` within MAX_QUOTE_CHARS; an address the cut would split is left out whole: its head
    is a link to some other page (Slack links an address it sees in the text)."""
    quoted = clip(text, MAX_QUOTE_CHARS, markup=False)
    if quoted == text:
        return quoted
    kept = quoted.removesuffix(ELLIPSIS)
    address = _LAST_ADDRESS.search(kept)
    if address is None or text[len(kept):len(kept) + 1].isspace():
        return quoted
    return kept[: address.start()].rstrip() + ELLIPSIS


def quote_reason(message_text: str, permalink: str | None) -> str:
    """The reason a message shortcut prefills: the message, quoted and trimmed, and its link."""
    quoted = _quote(plain_message_text(message_text))
    parts = [f"“{quoted}”" if quoted else ""]
    if permalink:
        parts.append(permalink)
    return clip(" — ".join(p for p in parts if p), MAX_REASON_CHARS, markup=False)


# ------------------------------------------------------------------------------------------ modal


def seconds(value: float) -> str:
    return f"{int(round(value))} s"


def who(user_id: str, source: str) -> str:
    return f"<@{user_id}>" + (" (escalate_to)" if source == Source.ESCALATE_TO else "")


def next_in_line(person: OnCallPerson) -> str:
    """Someone after the first, as the form lists them: flagged when the chain will skip them."""
    if person.number is None:
        return f"{who(person.user_id, person.source)} (⚠️ no usable phone number: skipped)"
    return who(person.user_id, person.source)


def escalation_form(
    preview: EscalationPreview,
    metadata: ModalMetadata,
    *,
    reason: str | None = None,
    ask_channel: bool = False,
) -> View:
    first, rest = preview.people[0], preview.people[1:]
    on_call = f"*On call now:* {reach(first)}"
    if first.until is not None:
        on_call += f" · until {local_time(first.until, preview.tz)}"
    if first.number is None and any(p.number is not None for p in rest):
        on_call += "\nThey will be skipped; the escalation starts with the next person."
    elif first.number is None:
        on_call += (
            "\nNobody in the order has a usable phone number, so nobody would be called: ask an "
            "administrator of callbot to add their numbers under [people] in the policy file, or "
            "to their Slack profiles."
        )
    blocks: list[Block] = [section(on_call)]
    # With acknowledgements a call answered but not acknowledged moves on at the deadline.
    to_do = "acknowledge the page" if preview.acknowledges else "answer"
    timeout = seconds(preview.answer_timeout)
    if rest:
        head = f"Each person has {timeout} to {to_do}. Then: "
        # A long order ends "and N more" rather than cut off mid-name, `escalate_to` unsaid.
        after = listing([next_in_line(p) for p in rest], MAX_TEXT - slack_length(head) - 1,
                        separator=", then ")
        blocks.append(context(f"{head}{after}."))
    else:
        blocks.append(context(f"They have {timeout} to {to_do}; nobody comes after them."))
    blocks.append(section(f"*Flow:* “{escape(preview.flow_name)}”"))

    reason_input: dict[str, Any] = {
        "type": "plain_text_input",
        "action_id": EscalationField.REASON,
        "multiline": True,
        "max_length": MAX_REASON_CHARS,
        "placeholder": plain("What is wrong, e.g. INC-1234: db primary is down"),
    }
    if reason:
        reason_input["initial_value"] = clip(reason, MAX_REASON_CHARS, markup=False)
    blocks.append({
        "type": "input",
        "block_id": EscalationField.REASON,
        "optional": True,
        "label": plain("Reason"),
        "element": reason_input,
        "hint": plain("Shown in the thread with the escalation."),
    })
    if ask_channel:
        blocks.append({
            "type": "input",
            "block_id": EscalationField.CHANNEL,
            "label": plain("Post the escalation in"),
            "element": {
                "type": "conversations_select",
                "action_id": EscalationField.CHANNEL,
                "placeholder": plain("Choose a channel"),
                "default_to_current_conversation": True,
                "response_url_enabled": True,
                "filter": {"exclude_bot_users": True},
            },
        })
        where = "in a new thread in the channel you choose"
    else:
        where = "in the thread of the message"
    blocks.append(context(
        f"*Escalate* calls them at once. Every update, and a *Stop escalation* button, appear "
        f"{where}."
    ))
    return ESCALATION_FORM.modal(blocks, metadata, submit=True)


NOT_SET_UP = (
    "No on-call rotation is set up, so there is nobody to escalate to. An administrator can add "
    "one to the policy file (CALLBOT_CONFIG):\n\n"
    "[oncall]\n"
    "flow = \"Escalation\"              # the Evo Voice flow for escalation calls\n"
    "rotation = [\"U0ALICE\", \"U0BOB\"]  # Slack user IDs, in order\n\n"
    "and the phone numbers under [people] (else they are read from Slack profiles). README.md, "
    "\"On-call roster\", explains every key."
)


def read_submission(
    view: Mapping[str, Any],
    response_urls: Sequence[Mapping[str, Any]] | None = None,
    trusted_origins: Iterable[str] = (),
) -> EscalationSubmission:
    state = ViewState(view)
    channel_id, response_url = state.channel(
        EscalationField.CHANNEL, response_urls, trusted_origins
    )
    reason = state.text(EscalationField.REASON)
    return EscalationSubmission(
        reason=clip(reason, MAX_REASON_CHARS, markup=False) if reason else None,
        channel_id=channel_id,
        response_url=response_url,
        fields=state.input_block_ids(),
    )
