"""Block Kit builders for the on-call roster (`/call oncall`). Pure functions, with text fallbacks.

Times are shown in the rotation's own time zone (the team's), never the reader's, so everyone quotes
the same hand-off time. Numbers are always masked.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from bot.oncall.roster import OnCallPerson, OnCallStatus, Override
from bot.slack.blocks import Message, context, escape, section

ONCALL_USAGE = (
    "Usage: /call oncall        (who is on call now and next)\n"
    "       /call oncall take   (take the current shift until the next hand-off; "
    "Manager or SystemAdministrator)"
)


def local_time(instant: dt.datetime, tz: ZoneInfo) -> str:
    """`Mon 12 Jan 09:00 EST`: short, unambiguous thanks to the zone's abbreviation."""
    local = instant.astimezone(tz)
    return f"{local:%a} {local.day} {local:%b %H:%M %Z}"


def reach(person: OnCallPerson) -> str:
    """`<@U…> · +1 814 ••• 3093`, or the mention and why there is no number."""
    if person.number is not None:
        return f"<@{person.user_id}> · {person.number.masked}"
    reason = escape(person.no_number_reason or "none known")
    return f"<@{person.user_id}> · ⚠️ no usable phone number ({reason})"


def status_message(status: OnCallStatus) -> Message:
    tz = status.tz
    now_line = f"*On call now:* {reach(status.now)} · until {local_time(status.next_from, tz)}"
    next_line = f"*Next:* {reach(status.next)} · from {local_time(status.next_from, tz)}"
    lines = [now_line, next_line]
    blocks = [section(now_line)]
    if status.override is not None:
        override_line = override_note(status.override, tz)
        blocks.append(context(override_line))
        lines.insert(1, override_line)
    blocks.append(section(next_line))
    footer = f"Hand-off {escape(status.handoff)} ({escape(tz.key)}). "
    if status.begins is not None:
        # No shift is current yet: a take lasts until the rotation begins (OnCall.take).
        footer += (f"The rotation begins {local_time(status.begins, tz)}; `/call oncall take` "
                   "puts you on call until then.")
    else:
        footer += "`/call oncall take` takes the current shift until then."
    blocks.append(context(footer))
    return Message(text="\n".join(lines), blocks=blocks)


def override_note(override: Override, tz: ZoneInfo) -> str:
    took = ("took their own shift" if override.replaces == override.user_id
            else f"took the shift from <@{override.replaces}>")
    return (
        f"Override: <@{override.user_id}> {took} "
        f"at {local_time(override.starts, tz)}, until {local_time(override.ends, tz)}."
    )


def taken_message(override: Override, person: OnCallPerson, tz: ZoneInfo) -> Message:
    until = f"until {local_time(override.ends, tz)} (the next hand-off)"
    if override.replaces == override.user_id:
        line = f"📟 <@{override.user_id}> stays on call {until}."
    else:
        line = (
            f"📟 <@{override.user_id}> is now on call instead of <@{override.replaces}>, {until}."
        )
    detail = f"Escalation calls will ring {reach(person)}."
    return Message(text=f"{line} {detail}", blocks=[section(line), context(detail)])
