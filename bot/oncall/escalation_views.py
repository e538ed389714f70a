"""Block Kit for on-call escalation: the escalation's message, the pages, the thread's posts (the
form is escalation_form.py).

    escalation_message()  the card: the escalation's own message, drawn from its row, its steps
                          and the current step's call every time, with I'm on it and Stop
                          escalation while the chain runs
    page_message()        the direct message a person gets when their step begins (I'm on it),
                          redrawn once the escalation is over
    exhausted(), acknowledged_late(), failed()   the only posts in the thread
    card_not_posted()     for the requester alone, when the card could not be posted

Pure functions. User text (reasons, quoted messages, reasons a number is unusable) is escaped; Slack
user ids become mentions; numbers are always masked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.calls.status_views import shown
from bot.oncall.escalation_form import seconds, who
from bot.oncall.escalation_store import (
    AckVia,
    Escalation,
    EscalationState,
    Step,
    StepOutcome,
    Target,
)
from bot.slack.blocks import (
    Block,
    Message,
    clip,
    context,
    escape,
    listing,
    plain,
    section,
    sections,
    slack_time,
)

MAX_NAMES_CHARS = 1200  # each list of people in the end's broadcast
STOP_ESCALATION_ACTION = "escalation_stop"
ACK_ESCALATION_ACTION = "escalation_ack"  # I'm on it, on the escalation's message and on pages
ESCALATION_ACTIONS_BLOCK = "escalation_actions"
PAGE_ACTIONS_BLOCK = "escalation_page_actions"
I_M_ON_IT = "I'm on it"

MAX_DETAIL_CHARS = 200


# ------------------------------------------------------------------------ the escalation message


def _detail(text: str | None) -> str:
    if not text or not text.strip():
        return ""
    return escape(clip(text.strip(), MAX_DETAIL_CHARS, markup=False))


def _calling(escalation: Escalation, call_state: str | None) -> str:
    """The current step while its call goes on: how it is going, as the call's row says."""
    if call_state == "ringing":
        return "🔔 ringing…"
    if call_state == "connected":
        return ("🟢 on the phone, not acknowledged yet" if escalation.acknowledges
                else "🟢 connected")
    return "📞 calling…"


def _step_line(escalation: Escalation, index: int, target: Target, step: Step | None,
               call_state: str | None, call_number: str | None) -> str:
    person = who(target.user_id, target.source)
    timeout = seconds(escalation.answer_timeout)
    current = escalation.active and index == escalation.step
    # A step with no row of its own yet (its call found after a restart): its call's number.
    masked = step.number_masked if step is not None else call_number if current else None
    number = f" ({masked})" if masked else ""
    if step is None:
        if current:  # its call's row says how it goes, once a call was made (after a restart)
            state = _calling(escalation, call_state)
        elif escalation.active:
            state = "⏳ next" if index == escalation.step + 1 else "⏳ waiting"
        else:
            state = "– not called"
    elif step.outcome == StepOutcome.CALLING:
        state = (_calling(escalation, call_state if current else None) if escalation.active
                 else "– no longer followed")
    elif step.outcome == StepOutcome.ANSWERED:
        state = "✅ answered"
    elif step.outcome == StepOutcome.ACKNOWLEDGED:
        state = "✅ acknowledged" + _at(escalation.acknowledged_at)
    elif step.outcome == StepOutcome.NOT_ACKNOWLEDGED:
        state = "❌ the call was answered but not acknowledged (voicemail?)"
    elif step.outcome == StepOutcome.CALLED_OFF:
        state = "⏹ called off: someone else acknowledged"
    elif step.outcome == StepOutcome.NO_ANSWER:
        state = f"❌ no answer after {timeout}"
    elif step.outcome == StepOutcome.ENDED:
        state = "❌ didn't answer (the call ended)"
    elif step.outcome == StepOutcome.SKIPPED:
        state = f"⏭ skipped: no usable phone number ({_detail(step.detail) or 'none known'})"
    elif step.outcome == StepOutcome.FAILED:
        state = f"⚠️ couldn't be called: {_detail(step.detail)}"
    elif step.outcome == StepOutcome.UNKNOWN:
        state = "❔ may have rung (the bot restarted while calling)"
    else:
        state = "⏹ stopped while ringing"
    if step is not None and step.detail and step.outcome in _NOTED_OUTCOMES:
        state += f" {_detail(step.detail)}"
    if escalation.acknowledged_by == target.user_id and (
        step is None or step.outcome != StepOutcome.ACKNOWLEDGED
    ):
        state += " · ✅ acknowledged" + _at(escalation.acknowledged_at)
    return f"{index + 1}. {person}{number} — {state}"


def _at(at: float | None) -> str:
    return f" at {slack_time(at)}" if at is not None else ""


# Outcomes whose detail is a note about hanging up (e.g. "it may still ring").
_NOTED_OUTCOMES = frozenset({
    StepOutcome.NO_ANSWER, StepOutcome.STOPPED, StepOutcome.CALLED_OFF, StepOutcome.ACKNOWLEDGED,
})


def _acknowledgement(escalation: Escalation) -> str:
    """`<@bob> acknowledged at …` (and how, when it was the call)."""
    how = " on the call" if escalation.acknowledged_via == AckVia.OUTCOME else ""
    return f"<@{escalation.acknowledged_by}> acknowledged{how}{_at(escalation.acknowledged_at)}"


def _headline(escalation: Escalation, steps: Sequence[Step]) -> str:
    base = f"*On-call escalation* by <@{escalation.requester_id}>"
    state = escalation.state
    if escalation.acknowledged_by is not None:
        late = " (after everybody was tried)" if escalation.acknowledged_step is not None and (
            escalation.acknowledged_step >= len(escalation.people)) else ""
        return f"✅ {base}: {_acknowledgement(escalation)}{late}."
    if state == EscalationState.ANSWERED:
        return f"✅ {base}: <@{escalation.answered_by}> answered."
    if state in (EscalationState.STOPPING, EscalationState.STOPPED):
        return f"⏹ {base}: stopped by <@{escalation.stopped_by}>."
    if state == EscalationState.EXHAUSTED and _nobody_called(escalation, steps):
        return f"🚨 {base}: nobody could be called."
    if state == EscalationState.EXHAUSTED:
        return f"🚨 {base}: nobody {_reached(escalation)}."
    if state == EscalationState.FAILED:
        return f"⚠️ {base}: could not go on."
    return f"🚨 {base}"


def escalation_message(
    escalation: Escalation, steps: Sequence[Step], call_state: str | None = None,
    *, call_number: str | None = None, buttons: bool = True,
) -> Message:
    """The card: `call_state` is the state of the current step's call, as its row says
    (calling, ringing, connected…), None when it has none; `call_number` its number, masked.
    `buttons` False: drawn for the requester alone (the card could not be posted), where a
    button would name no message."""
    by_index = {step.step: step for step in steps}
    headline = _headline(escalation, steps)
    lines = [
        _step_line(escalation, index, target, by_index.get(index), call_state, call_number)
        for index, target in enumerate(escalation.people)
    ]
    # The flow's name shortened (as a call's status message shows it): one of thousands of
    # characters took the footer's 3,000, and how long each person has went with them.
    footer = (
        f"Flow “{shown(escalation.flow_name)}” · each person has "
        f"{seconds(escalation.answer_timeout)} to "
        + ("acknowledge (I'm on it, here or in the page they get)" if escalation.acknowledges
           else "answer")
    )
    blocks: list[Block] = [section(headline)]
    text_lines = [headline]
    if escalation.reason:
        reason = f"Reason: {escape(escalation.reason)}"
        blocks.append(context(reason))
        text_lines.append(reason)
    blocks += sections(lines)
    blocks.append(context(footer))
    text_lines += lines
    if not buttons:
        return Message(text="\n".join(text_lines), blocks=blocks)
    if escalation.state == EscalationState.EXHAUSTED and escalation.acknowledged_by is None:
        blocks.append({"type": "actions", "block_id": ESCALATION_ACTIONS_BLOCK,
                       "elements": [_ack_button(escalation)]})
    if escalation.state == EscalationState.RUNNING:
        blocks.append({
            "type": "actions",
            "block_id": ESCALATION_ACTIONS_BLOCK,
            "elements": [_ack_button(escalation), {
                "type": "button",
                "action_id": STOP_ESCALATION_ACTION,
                "text": plain("Stop escalation"),
                "style": "danger",
                "value": str(escalation.id),
                "confirm": {
                    "title": plain("Stop escalation?"),
                    "text": plain("Nobody else will be called, and a call still ringing is "
                                   "hung up."),
                    "confirm": plain("Stop"),
                    "deny": plain("Keep going"),
                    "style": "danger",
                },
            }],
        })
    return Message(text="\n".join(text_lines), blocks=blocks)


def _ack_button(escalation: Escalation, step: int | None = None) -> dict[str, Any]:
    """On a page, the value names its step too (see `page_value`)."""
    return {
        "type": "button",
        "action_id": ACK_ESCALATION_ACTION,
        "text": plain(f"✋ {I_M_ON_IT}"),
        "style": "primary",
        "value": str(escalation.id) if step is None else page_value(escalation.id, step),
    }


def page_value(escalation_id: int, step: int) -> str:
    """I'm on it's value on the page of step `step`: a click can be checked against the person
    that step pages before the bot has recorded the page (Slack's answer to its post may still
    be on its way when the person clicks)."""
    return f"{escalation_id}:{step}"


def _reached(escalation: Escalation) -> str:
    return "acknowledged" if escalation.acknowledges else "answered"


# ------------------------------------------------------------------------------------- the page


def page_message(
    escalation: Escalation, user_id: str, step: int, link: str | None, *, ringing: bool = True
) -> Message:
    """The direct message paging `user_id` (step `step`): with I'm on it while it may matter,
    and, once the escalation is over, how it ended. `ringing`: whether their phone is ringing
    as the page goes (a page sent late never says it is once their call is over)."""
    # Slack's markup doesn't nest: a channel inside a link's label would end the label early.
    where = (f"<{link}|the escalation>" if link else "the escalation") + (
        f" in <#{escalation.channel_id}>")
    asked = f"<@{escalation.requester_id}> escalated to on-call: see {where}."
    reason = f"Reason: {escape(escalation.reason)}" if escalation.reason else None
    state = escalation.state
    button = False
    if escalation.acknowledged_by is not None:
        who = "You" if escalation.acknowledged_by == user_id else (
            f"<@{escalation.acknowledged_by}>")
        headline = f"✅ {who} acknowledged this page{_at(escalation.acknowledged_at)}."
        if escalation.acknowledged_by != user_id:
            headline += " Nothing more is asked of you."
    elif state == EscalationState.ANSWERED:
        headline = (f"✅ <@{escalation.answered_by}> answered the page. Nothing more is asked "
                    "of you.")
    elif state in (EscalationState.STOPPING, EscalationState.STOPPED):
        headline = f"⏹ <@{escalation.stopped_by}> stopped this escalation. Nothing more is asked."
    elif state == EscalationState.EXHAUSTED:
        headline = (f"🚨 *Nobody {_reached(escalation)} this page* and everybody was tried. If "
                    f"you can help, click {I_M_ON_IT}.")
        button = True
    elif state == EscalationState.FAILED:
        headline = "⚠️ This escalation could not go on; see the thread."
    else:
        headline = "📟 *You are being paged.*" + (" Your phone is ringing too." if ringing else "")
        button = True
    lines = [headline, asked] + ([reason] if reason else [])
    blocks: list[Block] = [section(headline), section(asked)]
    if reason:
        blocks.append(context(reason))
    if button:
        if state == EscalationState.RUNNING:
            if escalation.acknowledges:
                hint = f"{I_M_ON_IT} tells everyone you are coming, and nobody else is called."
            elif ringing:
                hint = f"Answering the call, or {I_M_ON_IT}, tells everyone you are coming."
            else:
                hint = f"{I_M_ON_IT} tells everyone you are coming."
            blocks.append(context(hint))
            lines.append(hint)
        blocks.append({"type": "actions", "block_id": PAGE_ACTIONS_BLOCK,
                       "elements": [_ack_button(escalation, step)]})
    return Message(text="\n".join(lines), blocks=blocks)


# ---------------------------------------------------------------------------- posts in the thread


def _line(markdown: str) -> Message:
    return Message(text=markdown, blocks=[section(markdown)])


# Steps whose person was never rung: no usable number, or the call refused or failed.
_NOT_RUNG = {StepOutcome.SKIPPED: "no usable phone number",
             StepOutcome.FAILED: "couldn't be called"}


def _not_rung(escalation: Escalation, steps: Sequence[Step]) -> list[tuple[str, str]]:
    """The people of `escalation` never rung, with why (the card's step line says more)."""
    why = {s.step: _NOT_RUNG[StepOutcome(s.outcome)] for s in steps if s.outcome in _NOT_RUNG}
    return [(t.user_id, why[i]) for i, t in enumerate(escalation.people) if i in why]


def _nobody_called(escalation: Escalation, steps: Sequence[Step]) -> bool:
    return len(_not_rung(escalation, steps)) == len(escalation.people)


def exhausted(escalation: Escalation, steps: Sequence[Step]) -> Message:
    """Everybody was tried: "Tried" names only those rung (a person skipped for want of a
    number, or whose call Evo Voice refused, was never rung, and must not read as one who
    didn't come)."""
    not_rung = _not_rung(escalation, steps)
    # Each list within its share of a section's 3,000 characters: a long order ends "and N more"
    # rather than cutting off what to do now.
    apart = listing([f"<@{user_id}> ({why})" for user_id, why in not_rung], MAX_NAMES_CHARS)
    if len(not_rung) == len(escalation.people):
        line = (
            f"🚨 <@{escalation.requester_id}> *Nobody could be called for the on-call "
            f"escalation*: {apart}. Nobody is known to be coming: reach someone another way, "
            f"or escalate again once that is fixed."
        )
        return _line(line)
    missed = {user_id for user_id, _ in not_rung}
    tried = listing([f"<@{t.user_id}>" for t in escalation.people if t.user_id not in missed],
                    MAX_NAMES_CHARS)
    line = (
        f"🚨 <@{escalation.requester_id}> *Nobody {_reached(escalation)} the on-call "
        f"escalation.* Tried: {tried}.{f' Not called: {apart}.' if apart else ''} Nobody is "
        f"known to be coming: reach someone another way, or escalate again."
    )
    return _line(line)


def acknowledged_late(escalation: Escalation) -> Message:
    return _line(f"✅ {_acknowledgement(escalation)}: they are on it.")


def failed(escalation: Escalation, why: str) -> Message:
    """`why` is Slack markup (a mention stays a mention): escape any text not the bot's own."""
    return _line(f"⚠️ <@{escalation.requester_id}> The on-call escalation stopped: {why}")


def requester_not_allowed(escalation: Escalation) -> str:
    """Why an escalation failed: the one reason a chain ends it as failed (the row keeps no
    reason, so a run that finds it failed says this)."""
    return f"<@{escalation.requester_id}> is no longer allowed to escalate to on-call."


def card_not_posted(escalation: Escalation) -> Message:
    """For the requester alone, when the card could not be posted in the channel."""
    text = (
        f"⚠️ I could not post the on-call escalation in <#{escalation.channel_id}> (invite the "
        "bot there next time: /invite @callbot). It goes on all the same: the people on call are "
        f"being called one after another, and each gets a direct message with {I_M_ON_IT}, which "
        "stops it. I'll tell you here how it ends."
    )
    return _line(text)
