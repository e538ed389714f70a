"""What the status message and the parent say at each stage of a call, and the hang-up's words:
the drawing alone, from the call's row (bot/calls/status_views.py)."""

from __future__ import annotations

import pytest

from bot.calls import status_views as call_views
from bot.calls.store import CallState, Placement
from bot.config.oncall_policy import OnCallPolicy
from tests.follow_fakes import tracked

NOTE = "⚠️ Outcome unknown: Evo Voice did not answer in time."
# What a team's "press 1" sets, as its [oncall] section lists it.
ACKNOWLEDGES = OnCallPolicy(
    flow="Escalation", rotation=("U0ALICE",), ack_outcomes=("Acknowledged", "Pressed 1")
).is_ack_outcome
PICKED_UP = "Picked up by a person or a voicemail (can't tell which)."
WHY = "Evo Voice is failing (HTTP 500: Internal error.)"


@pytest.mark.parametrize(
    ("row", "line"),
    [
        ({"state": CallState.FINDING, "session_id": None}, "🔎 Looking for the call in Evo Voice…"),
        ({"state": CallState.CALLING}, "⏳ Calling…"),
        ({"state": CallState.RINGING}, "🔔 Ringing…"),
        ({"state": CallState.CONNECTED, "answered": True}, "🟢 Connected"),
        ({"state": CallState.CONNECTED, "answered": True, "answered_by": "Alice Example"},
         "🟢 Connected (answered by Alice Example)"),
        ({"state": CallState.CONNECTED, "answered": True, "answered_by": "Alice Example",
          "outcome": "acknowledged"},
         "🟢 Connected (answered by Alice Example): acknowledged"),
        ({"state": CallState.ENDED, "following": False}, "❌ Ended: not answered."),
        ({"state": CallState.ENDED, "following": False, "outcome": "No answer"},
         "❌ Ended: No answer."),
        # Connected says picked up, never that a person heard it: a voicemail connects too.
        ({"state": CallState.ENDED, "following": False, "answered": True, "duration_seconds": 0},
         f"☎️ Ended: connected, lasted 0 s. {PICKED_UP}"),
        ({"state": CallState.ENDED, "following": False, "outcome": "Voicemail",
          "answered": True, "duration_seconds": 60},
         f"☎️ Ended: Voicemail, lasted 1m 00s. {PICKED_UP}"),
        ({"state": CallState.ENDED, "following": False, "outcome": "Completed",
          "answered": True, "answered_by": "Alice Example"},
         f"☎️ Ended: Completed, answered by Alice Example. {PICKED_UP}"),
        # Only an outcome in ack_outcomes says a person heard it, seen connected or not.
        ({"state": CallState.ENDED, "following": False, "outcome": "Acknowledged",
          "answered": True, "answered_by": "Alice Example", "duration_seconds": 40},
         "✅ Ended: Acknowledged, answered by Alice Example, lasted 40 s."),
        ({"state": CallState.ENDED, "following": False, "outcome": "PRESSED 1"},
         "✅ Ended: PRESSED 1 (acknowledged)."),
        ({"state": CallState.NOT_FOUND, "following": False, "session_id": None},
         "❔ Evo Voice accepted the call, but I could not find it to follow. Its call log shows "
         "how it went."),
        ({"state": CallState.NOT_FOUND, "following": False, "session_id": None,
          "placement": Placement.UNKNOWN, "note": NOTE},
         "❔ No call to this number showed up in Evo Voice, so it was most likely not placed. "
         "Check the call log in Evo Voice before calling again."),
        # Every lookup failed: nothing was seen either way.
        ({"state": CallState.NOT_FOUND, "following": False, "session_id": None,
          "unreadable": "Evo Voice is failing (HTTP 503: Unavailable.)"},
         "❔ Evo Voice accepted the call, but I could not look for it to follow it. Evo Voice is "
         "failing (HTTP 503: Unavailable.) Its call log shows how it went."),
        ({"state": CallState.NOT_FOUND, "following": False, "session_id": None,
          "placement": Placement.UNKNOWN, "note": NOTE,
          "unreadable": "Evo Voice is failing (HTTP 503: Unavailable.)"},
         "❔ I could not look for the call in Evo Voice, so whether it was placed is unknown. Evo "
         "Voice is failing (HTTP 503: Unavailable.) Check the call log in Evo Voice before "
         "calling again."),
        ({"state": CallState.LOST, "following": False},
         "⏱ I stopped following this call; the call log in Evo Voice shows how it ended."),
        # Reads failing for CALL_FIND_SECONDS: said instead of the state last seen, answered or
        # not; once no longer followed, why the bot stopped.
        ({"state": CallState.CONNECTED, "answered": True, "unreadable": WHY},
         f"⚠️ I can't read this call's status from Evo Voice. {WHY} Last seen connected; I keep "
         "trying, and meanwhile its call log in Evo Voice shows how it goes."),
        ({"state": CallState.LOST, "following": False, "unreadable": WHY},
         "⏱ I stopped following this call; the call log in Evo Voice shows how it ended. I could "
         f"not read its status from Evo Voice. {WHY}"),
    ],
)
def test_each_stage_has_its_own_line(row: dict[str, object], line: str) -> None:
    text = call_views.call_status(tracked(**row), acknowledges=ACKNOWLEDGES).text
    assert text.splitlines()[-1] == line, text
    # ✅ only once the call is over and acknowledged; "Ringing" only while it rings.
    outcome = row.get("outcome")
    acknowledged = isinstance(outcome, str) and ACKNOWLEDGES(outcome)
    assert ("✅" in text) == (row["state"] == CallState.ENDED and acknowledged)
    assert ("Ringing" in text) == (row["state"] == CallState.RINGING)


def test_the_headline_says_what_was_placed() -> None:
    placed = call_views.call_status(tracked()).text.splitlines()[0]
    assert placed == "📲 Call placed: session `sess-1`, caller ID +18145550100."
    chosen = call_views.call_status(tracked(caller_id=None, session_id=None,
                                            state=CallState.FINDING)).text
    assert chosen.startswith("📲 Call placed: no session id returned yet, caller ID chosen by "
                             "Evo Voice.")
    unknown = call_views.call_status(tracked(placement=Placement.UNKNOWN, note=NOTE)).text
    assert unknown.startswith(NOTE + "\nA session to this number turned up in Evo Voice: "
                              "`sess-1`.")
    failed = call_views.call_status(tracked(
        placement=Placement.FAILED, state=CallState.FAILED, following=False, session_id=None,
        note="Evo Voice refused the call: Invalid number. Nothing was dialled.",
    )).text
    assert failed == ("❌ Call not placed. Evo Voice refused the call: Invalid number. Nothing was "
                      "dialled.")


def test_hanging_up_is_said_until_the_end_then_who_hung_up() -> None:
    asked = call_views.call_status(tracked(state=CallState.CONNECTED, answered=True,
                                           hung_up_by="U0LEAD"))
    line = "📴 Hanging up (asked by <@U0LEAD>)… If the call goes on, end it in Evo Voice."
    assert asked.text.splitlines()[-1] == line and "Hung up by" not in asked.text
    assert {"type": "context", "elements": [{"type": "mrkdwn", "text": line}]} in asked.blocks
    # Still live: the button stays, to try again.
    assert call_views.HANG_UP_ACTION in str(asked.blocks)

    ended = call_views.call_status(tracked(
        state=CallState.ENDED, following=False, answered=True, hung_up_by="U0LEAD",
        outcome="Completed", duration_seconds=42,
    ))
    assert ended.text.splitlines()[-1] == (
        f"☎️ Ended: Completed, lasted 42 s. {PICKED_UP} Hung up by <@U0LEAD>."
    )
    assert "Hanging up" not in ended.text


@pytest.mark.parametrize(
    ("row", "outcome", "mark"),
    [
        ({"state": CallState.ENDED, "answered": True}, f"☎️ {PICKED_UP}",
         call_views.MARK_PICKED_UP),
        ({"state": CallState.ENDED, "answered": True, "outcome": "Completed",
          "answered_by": "Alice Example"}, f"☎️ {PICKED_UP}", call_views.MARK_PICKED_UP),
        ({"state": CallState.ENDED, "answered": True, "outcome": " acknowledged ",
          "answered_by": "Alice Example"}, "✅ Acknowledged by Alice Example.",
         call_views.MARK_ACKNOWLEDGED),
        ({"state": CallState.ENDED, "outcome": "Pressed 1"}, "✅ Acknowledged.",
         call_views.MARK_ACKNOWLEDGED),
        ({"state": CallState.ENDED}, "❌ Not answered.", call_views.MARK_NOT_ANSWERED),
        ({"state": CallState.ENDED, "outcome": "No answer"}, "❌ Not answered.",
         call_views.MARK_NOT_ANSWERED),
        ({"state": CallState.FAILED, "placement": Placement.FAILED}, "❌ Not placed.",
         call_views.MARK_NOT_ANSWERED),
        ({"state": CallState.NOT_FOUND}, "⚠️ Outcome unclear: see the thread.",
         call_views.MARK_UNCLEAR),
        ({"state": CallState.LOST}, "⚠️ Outcome unclear: see the thread.",
         call_views.MARK_UNCLEAR),
        ({"state": CallState.FINDING}, None, None),
        ({"state": CallState.CALLING}, None, None),
        ({"state": CallState.RINGING}, None, None),
        ({"state": CallState.CONNECTED, "answered": True}, None, None),
    ],
)
def test_the_parent_tells_the_channel_how_it_went_once_it_is_over(
    row: dict[str, object], outcome: str | None, mark: str | None
) -> None:
    call = tracked(following=outcome is None, **row)
    assert call_views.parent_outcome(call, ACKNOWLEDGES) == outcome
    assert call_views.parent_mark(call, ACKNOWLEDGES) == mark


def test_without_ack_outcomes_no_outcome_acknowledges() -> None:
    # No [oncall] ack_outcomes: "Acknowledged" is Evo Voice's word like any other.
    call = tracked(state=CallState.ENDED, following=False, answered=True, outcome="Acknowledged")
    assert call_views.parent_outcome(call) == f"☎️ {PICKED_UP}"
    assert call_views.parent_mark(call) == call_views.MARK_PICKED_UP


@pytest.mark.parametrize(
    ("seconds", "shown"), [(59.4, "59 s"), (60, "1m 00s"), (3599, "59m 59s"), (-3, "0 s")]
)
def test_durations_at_their_edges(seconds: float, shown: str) -> None:
    assert call_views.format_duration(seconds) == shown


def test_each_button_asks_first_naming_the_number_masked() -> None:
    def confirm(row: dict[str, object]) -> dict[str, object]:
        [actions] = [b for b in call_views.call_status(tracked(**row)).blocks
                     if b["type"] == "actions"]
        [button] = actions["elements"]
        return {key: value["text"] for key, value in button["confirm"].items()
                if isinstance(value, dict)}

    assert confirm({}) == {
        "title": "Hang up?", "text": "End the call to +1 814 ••• 3093 now?",
        "confirm": "Hang up", "deny": "Keep it",
    }
    assert confirm({"state": CallState.ENDED, "following": False}) == {
        "title": "Call again?",
        "text": "Call +1 814 ••• 3093 again with “Escalation”? It is in the United States (US).",
        "confirm": "Call", "deny": "Cancel",
    }
