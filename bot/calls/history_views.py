"""Block Kit for `/call history`: one line a call request, from its audit record.

Pure functions, as the status message's (bot/calls/status_views.py), whose endings they share:
a call's line says what its status message said once it was over.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from bot.audit.records import NOT_DIALLED, QUESTION_ENDINGS
from bot.audit.trail import AuditEvent, AuditRecord, Decision, EventKind
from bot.calls.status_views import (
    AckTest,
    Ending,
    ending_of,
    format_duration,
    no_ack_outcomes,
    shown,
)
from bot.slack.blocks import Message, escape, section, sections, slack_time

_HISTORY_ENDINGS = {
    Ending.ACKNOWLEDGED: "✅ acknowledged",
    Ending.PICKED_UP: "☎️ picked up (a person or a voicemail)",
    Ending.NOT_ANSWERED: "❌ not answered",
}


def when(iso: str) -> str:
    """When a record was made, as each reader's own time zone shows it (UTC the fallback); the
    Home tab's lines too."""
    try:
        at = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return escape(iso)
    return slack_time(at.timestamp())


def what_happened(record: AuditRecord, acknowledges: AckTest) -> str:
    """How the request went, in the status message's words (the Home tab's recent calls too)."""
    reason = f" ({escape(record.reason)})" if record.reason else ""
    if record.decision == Decision.DENIED:
        return f"⛔ denied{reason}"
    if record.decision == Decision.REFUSED:
        return f"🚫 refused{reason}"
    if record.decision == Decision.FAILED and record.reason == NOT_DIALLED:
        return "❌ not placed: the bot stopped before dialling; its requester was told"
    if record.decision == Decision.FAILED:
        return f"⚠️ could not be checked{reason}"
    if record.decision == Decision.DUPLICATE:
        return "♻️ duplicate, ignored"
    if record.decision == Decision.ASKED:
        return _question(record)
    result = record.result
    if result is None:
        return "❔ allowed, no result recorded"
    result_reason = f" ({escape(result.reason)})" if result.reason else ""
    if result.kind == EventKind.FAILED:
        return f"❌ not placed{result_reason}"
    if result.kind == EventKind.UNTOLD:
        return "❌ not dialled: nobody could be told"
    if result.kind == EventKind.CALLED_OFF:
        return f"⏹️ not dialled: the escalation went on without it{result_reason}"
    # An on-call page acknowledged (I'm on it, or the call's outcome) on this call: the card
    # says so, whatever the phone did (a ringing call is hung up once someone is on it).
    acked = record.last(EventKind.ACKNOWLEDGED)
    by = f" by <@{acked.actor_id}>" if acked is not None and acked.actor_id else ""
    ended = record.last(EventKind.ENDED)
    if ended is not None:
        answered = bool(ended.answered_by) or record.last(EventKind.ANSWERED) is not None
        ending = (Ending.ACKNOWLEDGED if acked is not None
                  else ending_of(answered, ended.outcome, acknowledges))
        parts = [_HISTORY_ENDINGS[ending] + by]
        if ended.answered_by:
            parts.append(f"answered by {shown(ended.answered_by)}")
        if ended.outcome:
            parts.append(shown(ended.outcome))
        if ended.duration_seconds is not None:
            parts.append(format_duration(ended.duration_seconds))
        hang_up = record.last(EventKind.HANG_UP)
        if hang_up is not None and hang_up.actor_id:
            parts.append(f"hung up by <@{hang_up.actor_id}>")
        return ", ".join(parts)
    went = _not_ended(record, result, result_reason, acknowledges)
    return f"{_HISTORY_ENDINGS[Ending.ACKNOWLEDGED]}{by}; {went}" if acked is not None else went


# What a question asked about (its reason: `region`, `repeat` or both), in the question's words.
_ASKED_ABOUT = {"region": "outside the home regions", "repeat": "a repeat call"}


def _question(record: AuditRecord) -> str:
    """An "are you sure?" question, and how it ended: the call a confirmed one led to is an
    attempt (and a line) of its own, marked `confirmed`."""
    about = ", ".join(_ASKED_ABOUT.get(r, r) for r in (record.reason or "").split(",") if r)
    asked = f"❓ asked to confirm ({escape(about)})" if about else "❓ asked to confirm"
    ended = record.last(*QUESTION_ENDINGS)
    if ended is None:
        return f"{asked}, not answered yet"
    by = f" by <@{ended.actor_id}>" if ended.actor_id else ""
    if ended.kind == EventKind.CONFIRMED:
        return f"{asked}: confirmed{by}"
    if ended.kind == EventKind.CANCELLED:
        return f"{asked}: cancelled{by}, nothing dialled"
    return f"{asked}: expired unanswered, nothing dialled"


def _not_ended(
    record: AuditRecord, result: AuditEvent, result_reason: str, acknowledges: AckTest
) -> str:
    """A call placed (or maybe placed) that was not seen to end."""
    if record.last(EventKind.NOT_FOUND) is not None:
        if result.kind == EventKind.UNKNOWN:
            return "❔ placed?, no session found"
        return "❔ not found"
    if (unfollowed := record.last(EventKind.UNFOLLOWED)) is not None:
        if record.last(EventKind.ANSWERED) is None and not acknowledges(unfollowed.outcome):
            return "⏱ no longer followed"
        ending = ending_of(True, unfollowed.outcome, acknowledges)
        return f"⏱ no longer followed, {_HISTORY_ENDINGS[ending]}"
    if result.kind == EventKind.UNKNOWN and record.last(EventKind.SESSION_FOUND) is None:
        return f"⚠️ outcome unknown{result_reason}"
    if record.last(EventKind.ANSWERED) is not None:
        return "🟢 in progress, picked up"
    return "📞 placed, in progress"


def history_line(record: AuditRecord, acknowledges: AckTest = no_ack_outcomes) -> str:
    parts = [
        when(record.at),  # no code span: Slack formats no `<!date>` in one
        f"<@{record.user_id}>",
        record.number_masked,
        # Clipped, as Evo Voice's other words are: a flow name of thousands of characters would
        # push the line past a section's limit, and the clip would cut off how the call went.
        f"“{shown(record.flow)}”" if record.flow else "no flow",
        what_happened(record, acknowledges),
    ]
    extra = []
    session = record.session_id
    if session:
        extra.append(f"session `{escape(session)}`")
    if record.caller_id:
        extra.append(f"from {record.caller_id}")
    if record.origin != "command":
        extra.append(escape(record.origin.replace("_", " ")))
    if record.confirmed_question is not None:
        extra.append("confirmed")  # after a question, an older line of its own
    line = " · ".join(parts)
    return line + (f" ({', '.join(extra)})" if extra else "")


def history(
    records: Sequence[AuditRecord], heading: str, acknowledges: AckTest = no_ack_outcomes
) -> Message:
    if not records:
        text = f"{heading}: nothing recorded."
        return Message(text=text, blocks=[section(text)])
    lines = [history_line(r, acknowledges) for r in records]
    title = f"*{heading}* (newest first)"
    return Message(
        text="\n".join([title, *lines]),
        blocks=[section(title), *sections(lines)],
    )
