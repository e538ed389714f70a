"""Block Kit for a call after it was placed: its status message and the parent's mark.

Pure functions from stored facts to messages. The status message is drawn from the call's row every
time, so an edit after a restart looks exactly like one before it.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from bot.calls.messages import call_parent
from bot.calls.store import CallState, Placement, TrackedCall
from bot.evovoice.client import as_e164
from bot.phone import country_of, mask
from bot.slack.blocks import Block, Message, clip, context, escape, plain, section

HANG_UP_ACTION = "call_hang_up"
CALL_AGAIN_ACTION = "call_again"
CALL_ACTIONS_BLOCK = "call_actions"

# Reactions on the parent message once the call is over (names Slack knows: a name it doesn't is
# refused with invalid_name, bot/standins/slack/emoji.py).
MARK_ACKNOWLEDGED = "white_check_mark"
MARK_PICKED_UP = "phone"  # ☎️: picked up, by a person or a voicemail
MARK_NOT_ANSWERED = "x"
MARK_UNCLEAR = "warning"

# Whether a session's outcome acknowledges the call: `[oncall] ack_outcomes`, compared as an
# escalation compares them (OnCallPolicy.is_ack_outcome).
AckTest = Callable[[str | None], bool]


def no_ack_outcomes(outcome: str | None) -> bool:
    """Without `[oncall] ack_outcomes`, no outcome says a person heard the call."""
    return False


class Ending(StrEnum):
    """How a call that was seen to end went, as far as anyone can tell.

    Evo Voice can't tell a person from a voicemail (a session has callState, outcome and
    answeredByName; no machine detection is documented), so a call connecting only says it was
    picked up. Only the flow's own outcome ("press 1" setting one of `ack_outcomes`) says that a
    person heard it.
    """

    ACKNOWLEDGED = "acknowledged"
    PICKED_UP = "picked_up"
    NOT_ANSWERED = "not_answered"


def ending_of(answered: bool, outcome: str | None, acknowledges: AckTest) -> Ending:
    # An acknowledging outcome counts even if no poll saw the call connected (picked up and over
    # between two polls), as it does for an escalation's step.
    if acknowledges(outcome):
        return Ending.ACKNOWLEDGED
    return Ending.PICKED_UP if answered else Ending.NOT_ANSWERED


def seen_ending(call: TrackedCall, acknowledges: AckTest) -> Ending | None:
    """How the call went as far as it was seen: an ended call's ending; a call given up on
    (LOST: its session lost, or followed for too long) only if it was seen answered, which no
    later loss takes back."""
    ending = ending_of(call.answered, call.outcome, acknowledges)
    if call.state == CallState.ENDED or (
            call.state == CallState.LOST and ending != Ending.NOT_ANSWERED):
        return ending
    return None


_MAX_SHOWN = 80


def shown(text: str | None) -> str:
    """Text from Evo Voice (a name, an outcome): clipped, escaped, and masked if it is a number."""
    if not text:
        return ""
    text = text.strip()
    if as_e164(text):
        return mask(as_e164(text) or "")
    return escape(clip(text, _MAX_SHOWN, markup=False))


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    total = max(0, int(round(seconds)))
    if total < 60:
        return f"{total} s"
    if total < 3600:
        return f"{total // 60}m {total % 60:02d}s"
    return f"{total // 3600}h {total % 3600 // 60:02d}m"


def _headline(call: TrackedCall) -> str:
    if call.placement == Placement.FAILED:
        return f"❌ Call not placed. {escape(call.note or '')}".rstrip()
    if call.placement == Placement.UNKNOWN:
        line = escape(call.note or "⚠️ Outcome unknown.")
        if call.session_id:
            line += (
                f"\nA session to this number turned up in Evo Voice: `{escape(call.session_id)}`."
            )
        return line
    session = (
        f"session `{escape(call.session_id)}`" if call.session_id else "no session id returned yet"
    )
    caller = f"caller ID {call.caller_id}" if call.caller_id else "caller ID chosen by Evo Voice"
    return f"📲 Call placed: {session}, {caller}."


def _state_line(call: TrackedCall, acknowledges: AckTest) -> str | None:
    state = call.state
    if call.unreadable and state in (CallState.CALLING, CallState.RINGING, CallState.CONNECTED):
        return (f"⚠️ I can't read this call's status from Evo Voice. {escape(call.unreadable)} "
                f"Last seen {state}; I keep trying, and meanwhile its call log in Evo Voice "
                "shows how it goes.")
    if state == CallState.FINDING:
        return "🔎 Looking for the call in Evo Voice…"
    if state == CallState.CALLING:
        return "⏳ Calling…"
    if state == CallState.RINGING:
        return "🔔 Ringing…"
    if state == CallState.CONNECTED:
        who = f" (answered by {shown(call.answered_by)})" if call.answered_by else ""
        # A flow may report its "press 1" before the call ends.
        acked = ": acknowledged" if acknowledges(call.outcome) else ""
        return f"🟢 Connected{who}{acked}"
    if state == CallState.ENDED:
        return _ended_line(call, acknowledges)
    if state == CallState.NOT_FOUND:
        if call.unreadable:  # never looked at: Evo Voice failed every lookup
            why = escape(call.unreadable)
            if call.placement == Placement.UNKNOWN:
                return (f"❔ I could not look for the call in Evo Voice, so whether it was placed "
                        f"is unknown. {why} Check the call log in Evo Voice before calling again.")
            return (f"❔ Evo Voice accepted the call, but I could not look for it to follow it. "
                    f"{why} Its call log shows how it went.")
        if call.placement == Placement.UNKNOWN:
            return (
                "❔ No call to this number showed up in Evo Voice, so it was most likely not "
                "placed. Check the call log in Evo Voice before calling again."
            )
        return (
            "❔ Evo Voice accepted the call, but I could not find it to follow. Its call log "
            "shows how it went."
        )
    if state == CallState.LOST:
        why = (f" I could not read its status from Evo Voice. {escape(call.unreadable)}"
               if call.unreadable else "")
        seen = ""
        if (ending := seen_ending(call, acknowledges)) is not None:
            who = f" (answered by {shown(call.answered_by)})" if call.answered_by else ""
            seen = (" after it was acknowledged on the phone" if ending == Ending.ACKNOWLEDGED
                    else " after it was picked up by a person or a voicemail") + who
        return (f"⏱ I stopped following this call{seen}; the call log in Evo Voice shows how it "
                f"ended.{why}")
    return None


# Said after a picked-up call's line: Evo Voice's "connected" doesn't say who heard the call.
PICKED_UP_CAVEAT = "Picked up by a person or a voicemail (can't tell which)."


def _ended_line(call: TrackedCall, acknowledges: AckTest) -> str:
    # "Ended: <outcome>" as Evo Voice says it: README's "Acknowledging on the phone" has a team
    # read its flow's outcome here to put in ack_outcomes.
    ending = ending_of(call.answered, call.outcome, acknowledges)
    outcome = shown(call.outcome)
    if ending == Ending.ACKNOWLEDGED:
        acked = "" if outcome.casefold() == "acknowledged" else " (acknowledged)"
        parts = [f"✅ Ended: {outcome}{acked}"]
    elif ending == Ending.PICKED_UP:
        parts = [f"☎️ Ended: {outcome or 'connected'}"]
    else:
        parts = [f"❌ Ended: {outcome or 'not answered'}"]
    if call.answered_by:
        parts.append(f"answered by {shown(call.answered_by)}")
    if call.duration_seconds is not None:
        parts.append(f"lasted {format_duration(call.duration_seconds)}")
    line = ", ".join(parts) + "."
    if ending == Ending.PICKED_UP:
        line += f" {PICKED_UP_CAVEAT}"
    if call.hung_up_by:
        line += f" Hung up by <@{call.hung_up_by}>."
    return line


def can_hang_up(call: TrackedCall) -> bool:
    return call.following and call.is_live


def can_call_again(call: TrackedCall) -> bool:
    return (
        call.is_final
        and not call.following
        and call.e164 is not None
        and call.called_again_by is None
    )


def _buttons(call: TrackedCall) -> list[Block]:
    value = str(call.id)
    elements: list[Block] = []
    if can_hang_up(call):
        elements.append({
            "type": "button",
            "action_id": HANG_UP_ACTION,
            "text": plain("Hang up"),
            "style": "danger",
            "value": value,
            "confirm": {
                "title": plain("Hang up?"),
                "text": plain(f"End the call to {call.number_masked} now?"),
                "confirm": plain("Hang up"),
                "deny": plain("Keep it"),
                "style": "danger",
            },
        })
    if can_call_again(call):
        flow = clip(call.flow_name, 60, markup=False)
        asked = f"Call {call.number_masked} again with “{flow}”?"
        # What "are you sure?" asks of a number abroad, for whoever clicks (a Manager who never
        # saw the first call's question included): Call again asks nothing more (controls.py).
        # Named wherever the number is, so no change of the policy's home regions since the
        # message was drawn leaves a number abroad unnamed.
        if call.e164 is not None and (country := country_of(call.e164)) is not None:
            asked += f" It is in {country}."
        elements.append({
            "type": "button",
            "action_id": CALL_AGAIN_ACTION,
            "text": plain("Call again"),
            "value": value,
            "confirm": {
                "title": plain("Call again?"),
                "text": plain(asked),
                "confirm": plain("Call"),
                "deny": plain("Cancel"),
            },
        })
    if not elements:
        return []
    return [{"type": "actions", "block_id": CALL_ACTIONS_BLOCK, "elements": elements}]


def call_status(
    call: TrackedCall, *, buttons: bool = True, acknowledges: AckTest = no_ack_outcomes
) -> Message:
    """The status message in the thread: what was placed, how the call is going, its buttons
    (`buttons` False where no thread keeps the message's ts for a click to name)."""
    lines = [_headline(call)]
    state = _state_line(call, acknowledges)
    if state:
        lines.append(state)
    blocks = [section("\n".join(lines))]
    if call.hung_up_by and call.is_live:
        # Evo Voice accepted the hang-up, yet the session is live: until it ends (usually the next
        # poll), or for good should it never end it (PatchSession ending a call is only likely).
        asked = (f"📴 Hanging up (asked by <@{call.hung_up_by}>)… If the call goes on, end it in "
                 "Evo Voice.")
        lines.append(asked)
        blocks.append(context(asked))
    if call.called_again_by:
        again = f"🔁 <@{call.called_again_by}> called this number again."
        lines.append(again)
        blocks.append(context(again))
    if buttons:
        blocks += _buttons(call)
    return Message(text="\n".join(lines), blocks=blocks)


_MARKS = {
    Ending.ACKNOWLEDGED: MARK_ACKNOWLEDGED,
    Ending.PICKED_UP: MARK_PICKED_UP,
    Ending.NOT_ANSWERED: MARK_NOT_ANSWERED,
}


def parent_mark(call: TrackedCall, acknowledges: AckTest = no_ack_outcomes) -> str | None:
    """The reaction that tells the channel how the call went, once it is over."""
    if (ending := seen_ending(call, acknowledges)) is not None:
        return _MARKS[ending]
    if call.state == CallState.FAILED:
        return MARK_NOT_ANSWERED
    if call.state in (CallState.NOT_FOUND, CallState.LOST):
        return MARK_UNCLEAR
    return None


def parent_outcome(call: TrackedCall, acknowledges: AckTest = no_ack_outcomes) -> str | None:
    """The line added to the parent message once the call is over (None before)."""
    if (ending := seen_ending(call, acknowledges)) is not None:
        if ending == Ending.ACKNOWLEDGED:
            who = f" by {shown(call.answered_by)}" if call.answered_by else ""
            return f"✅ Acknowledged{who}."
        if ending == Ending.PICKED_UP:
            if call.state == CallState.LOST:
                return f"☎️ {PICKED_UP_CAVEAT} I stopped following it: see the thread."
            return f"☎️ {PICKED_UP_CAVEAT}"
        return "❌ Not answered."
    if call.state == CallState.FAILED:
        return "❌ Not placed."
    if call.state in (CallState.NOT_FOUND, CallState.LOST):
        return "⚠️ Outcome unclear: see the thread."
    return None


def parent_of(call: TrackedCall) -> Message:
    """The call's parent message drawn again from its row (after a restart: without the reason)."""
    return call_parent(call.requester_id, call.number_masked, call.flow_name)


def parent_with_outcome(
    parent: Message, call: TrackedCall, acknowledges: AckTest = no_ack_outcomes
) -> Message:
    outcome = parent_outcome(call, acknowledges)
    if outcome is None:
        return parent
    return Message(text=f"{parent.text}\n{outcome}", blocks=parent.blocks + [context(outcome)])
