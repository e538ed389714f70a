"""Block Kit builders: pure functions from facts to messages. Every message carries a `text`
fallback."""

from __future__ import annotations

from bot.calls.command_text import USAGE
from bot.slack.blocks import Block as Block
from bot.slack.blocks import Message as Message
from bot.slack.blocks import context, section
from bot.slack.blocks import escape as escape


def help_message() -> Message:
    return Message(text=USAGE, blocks=[section(escape(USAGE))])


def refusal(description: str) -> Message:
    return Message(text=description, blocks=[section(escape(description))])


def call_parent(
    requester_id: str, masked_number: str, flow_name: str, reason: str | None = None
) -> Message:
    line = f"📞 <@{requester_id}> is calling {masked_number} with flow “{escape(flow_name)}”"
    blocks = [section(line)]
    if reason:
        blocks.append(context(f"Reason: {escape(reason)}"))
    text = line + (f" — reason: {escape(reason)}" if reason else "")
    return Message(text=text, blocks=blocks)


def call_placed(session_id: str | None, caller_id: str | None) -> Message:
    session = f"session `{escape(session_id)}`" if session_id else "no session id returned yet"
    caller = f"caller ID {caller_id}" if caller_id else "caller ID chosen by Evo Voice"
    line = f"📲 Call placed: {session}, {caller}."
    return Message(text=line, blocks=[section(line)])


def call_failed(description: str) -> Message:
    line = f"❌ Call not placed. {description}"
    return Message(text=line, blocks=[section(escape(line))])


def call_unknown(description: str, session_id: str | None = None) -> Message:
    line = description
    if session_id:
        line += (
            f" A session to this number appeared just after the attempt: `{escape(session_id)}`."
        )
    return Message(text=line, blocks=[section(escape(line))])


def combined(parent: Message, result: Message) -> Message:
    """One message for where no thread is possible (a `response_url` keeps no `ts`)."""
    return Message(text=f"{parent.text}\n{result.text}", blocks=parent.blocks + result.blocks)
