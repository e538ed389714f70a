"""The App Home tab: who is on call now and next, the viewer's recent pages and calls, and buttons
to place a call or escalate. Pure Block Kit builders.

Times are Slack's `<!date^…>`, so each viewer reads them in their own time zone (the roster's
`/call oncall` shows the team's zone instead: everyone quotes the same hand-off there).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.audit.trail import AuditRecord
from bot.calls.history_views import what_happened, when
from bot.calls.models import ESCALATION_ORIGIN
from bot.calls.status_views import AckTest, no_ack_outcomes, shown
from bot.oncall.escalation_store import Escalation, EscalationState
from bot.oncall.roster import OnCallStatus
from bot.oncall.roster_views import reach
from bot.slack.blocks import (MAX_TEXT, Block, clip, context, escape, plain, section,
                              slack_time)

HOME_CALL_ACTION = "home_place_call"
HOME_ESCALATE_ACTION = "home_escalate"
HOME_ACTIONS_BLOCK = "home_actions"

_ENDINGS = {
    EscalationState.RUNNING: "📞 going on",
    EscalationState.STOPPING: "⏹ stopped",
    EscalationState.STOPPED: "⏹ stopped",
    EscalationState.ANSWERED: "✅ answered",
    EscalationState.EXHAUSTED: "🚨 nobody acknowledged",
    EscalationState.FAILED: "⚠️ could not go on",
}


def _when(iso_or_ts: str | float) -> str:
    return when(iso_or_ts) if isinstance(iso_or_ts, str) else slack_time(iso_or_ts)


def escalation_line(escalation: Escalation, viewer: str) -> str:
    who = "You" if escalation.requester_id == viewer else f"<@{escalation.requester_id}>"
    if escalation.acknowledged_by is not None:
        how = ("you" if escalation.acknowledged_by == viewer
               else f"<@{escalation.acknowledged_by}>")
        ending = f"✅ acknowledged by {how}"
    else:
        ending = _ENDINGS.get(EscalationState(escalation.state), escape(escalation.state))
    return (f"{_when(escalation.created_at)} · {who} escalated in <#{escalation.channel_id}> · "
            f"{ending}")


def call_line(record: AuditRecord, acknowledges: AckTest = no_ack_outcomes) -> str:
    # How the call went in `/call history`'s words (which are the status message's): "placed"
    # alone left the requester to open the thread to learn whether anyone picked up.
    # The flow's name clipped: five long ones would run past the context's 3,000 characters,
    # and the clip would take the older calls and their outcomes off the tab.
    # An escalation's steps are recorded as its requester's calls: marked, or the call that rang
    # the person on call reads as one the viewer dialled.
    step = "🚨 escalation step · " if record.origin == ESCALATION_ORIGIN else ""
    return (f"{_when(record.at)} · {step}{escape(record.number_masked)} · "
            f"“{shown(record.flow)}” · {what_happened(record, acknowledges)}")


def home_view(
    viewer: str,
    *,
    status: OnCallStatus | None,
    escalations: Sequence[Escalation],
    calls: Sequence[AuditRecord],
    can_call: bool,
    may_escalate: bool,
    unreadable: bool = False,
    unsure: bool = False,
    acknowledges: AckTest = no_ack_outcomes,
) -> dict[str, Any]:
    """`unreadable`: the database failed, so nothing it holds is shown (not even "None yet").
    `unsure`: Slack didn't say whether the viewer is a responder, so the rotation isn't shown;
    `may_escalate` then offers the button, whose form checks them again. `acknowledges`: which
    session outcomes say a person heard a call (`[oncall] ack_outcomes`), as in `/call history`."""
    blocks: list[Block] = [{"type": "header", "text": plain("callbot")}]
    if unreadable:
        blocks.append(section("⚠️ callbot's database isn't answering, so this tab can't show who "
                              "is on call or your recent pages and calls just now. Open this tab "
                              "again in a minute."))
    elif unsure:
        blocks.append(section("⚠️ Slack didn't answer when callbot asked who you are, so this "
                              "tab can't show who is on call just now. Open this tab again in "
                              "a minute."))
    elif status is not None:
        blocks.append(section(f"*On call now:* {reach(status.now)} · until "
                              f"{slack_time(status.next_from.timestamp())}"))
        blocks.append(section(f"*Next:* {reach(status.next)} · from "
                              f"{slack_time(status.next_from.timestamp())}"))
    elif may_escalate:
        blocks.append(section("No on-call rotation is set up."))
    buttons: list[dict[str, Any]] = []
    if may_escalate and (status is not None or unreadable or unsure):
        buttons.append({"type": "button", "action_id": HOME_ESCALATE_ACTION, "style": "danger",
                        "text": plain("🚨 Escalate to on-call"), "value": "escalate"})
    if can_call:
        buttons.append({"type": "button", "action_id": HOME_CALL_ACTION,
                        "text": plain("📞 Place a call"), "value": "call"})
    if buttons:
        blocks.append({"type": "actions", "block_id": HOME_ACTIONS_BLOCK, "elements": buttons})
    if may_escalate and not (unreadable or unsure):
        blocks.append({"type": "divider"})
        blocks.append(section("*Your recent pages and escalations*"))
        lines = [escalation_line(e, viewer) for e in escalations]
        blocks.append(context("\n".join(lines) if lines else "None yet."))
    if can_call and not unreadable:
        blocks.append(section("*Your recent calls*"))
        # Each line within its share of the context's 3,000 characters (five lines of Evo Voice's
        # longest words, about 590 characters each, just fit): a line clipped loses its own end,
        # never another call.
        share = (MAX_TEXT - len(calls) + 1) // max(1, len(calls))
        lines = [clip(call_line(r, acknowledges), share) for r in calls]
        blocks.append(context("\n".join(lines) if lines else "None yet."))
    if not may_escalate and not can_call and not unsure:
        blocks.append(section("You can't escalate to on-call or place calls here: ask an "
                              "administrator of callbot to add you to [oncall] responders."))
    return {"type": "home", "blocks": blocks}
