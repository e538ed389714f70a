"""Block Kit builders: pure functions from facts to messages. Every message carries a `text`
fallback."""

from __future__ import annotations

from bot.calls.command_text import USAGE
from bot.slack.blocks import Block as Block
from bot.slack.blocks import Markup
from bot.slack.blocks import Message as Message
from bot.slack.blocks import context, section
from bot.slack.blocks import escape as escape


def help_message(
    *, has_role: bool | None = None, responder: bool | None = None, oncall: bool = True
) -> Message:
    """`/call help`: everything the asker can do, led by the 3 a.m. action. `has_role` and
    `responder` None: not known in time, so everything is listed with who may use it."""
    unknown = has_role is None or responder is None
    lines: list[str] = []
    if oncall and responder is not False:
        lines += [
            "🚨 *Escalate to on-call*: on the message about the problem, ⋮ → *More message "
            "shortcuts* → *Escalate to on-call* (or the ⚡ shortcuts menu). Calls whoever is on "
            "call and pages them in Slack, then the next person, until someone clicks *I'm on it*.",
            "✋ *I'm on it*: on a page or an escalation, tells everyone you are coming; nobody "
            "else is called.",
            "`/call oncall`: who is on call now and next.",
        ]
    role_lines = [
        "`/call <number> <flow> [caller ID]`, e.g. `/call +18144043093 escalation`: call a "
        "number with an Evo Voice flow. `/call` alone opens a form.",
        "`/call history [@person | number]`: recent calls.",
    ]
    if oncall:  # `/call test` rings with the on-call flow
        role_lines += ["`/call test`: rings your own phone with the on-call flow.",
                       "`/call oncall take`: you are on call until the next hand-off."]
    if has_role is not False:
        suffix = " _(Manager or SystemAdministrator)_" if unknown else ""
        lines += [line + suffix for line in role_lines]
    lines.append("`/call help`: this list.")
    # Someone may lack both (a guest, by default): each note is theirs, so neither hides the other.
    notes: list[str] = []
    if has_role is False:
        what = ("Placing calls to any number, `/call history`, `/call test` and `/call oncall "
                "take`" if oncall else "Placing calls to any number and `/call history`")
        notes.append(f"{what} need the Manager or SystemAdministrator role.")
    if oncall and responder is False:
        notes.append("You can't escalate to on-call or see the rotation here: ask an "
                     "administrator of callbot to add you to [oncall] responders.")
    footer = "\n".join(notes) or None
    title = "*What you can do with callbot*"
    blocks: list[Block] = [section(title), section("\n".join(lines))]
    if footer:
        blocks.append(context(footer))
    text = "\n".join([title, *lines, *([footer] if footer else []), "", USAGE])
    return Message(text=text, blocks=blocks)


def refusal(description: str) -> Message:
    shown = description if isinstance(description, Markup) else escape(description)
    return Message(text=description, blocks=[section(shown)])


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


def not_placed(number: str | None, *, again: bool = False) -> Message:
    """A request whose replica stopped after taking it and before dialling (calls/untold.py)."""
    shown = escape(number) if number else None
    if again:
        line = (f"⚠️ callbot stopped before calling {shown or 'this number'} again, so the call "
                "was *not* placed: nothing was dialled. Click Call again once more, or use /call.")
    else:
        line = (f"⚠️ callbot stopped before placing your call{f' to {shown}' if shown else ''}, "
                "so it was *not* placed: nothing was dialled. Use /call to call again.")
    return Message(text=line, blocks=[section(line)])
