"""The escalation's pieces without Slack: quoting a message, the modal's metadata, the store's
compare-and-set steps, and the escalation message drawn from its rows."""

from __future__ import annotations

import json

import pytest

from bot.oncall import escalation_form as forms
from bot.oncall import escalation_views as views
from bot.oncall.home_views import escalation_line
from bot.oncall.escalation_store import (
    AckMode,
    AckVia,
    Escalation,
    EscalationState,
    EscalationStore,
    Step,
    StepOutcome,
    Target,
)
from bot.storage.database import Database

HOOK = "https://hooks.slack.com/actions/T0/1/abc"


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("db primary is down", "db primary is down"),
        ("ping <@U0BOB> and <@U0AMY|amy>", "ping @U0BOB and @amy"),
        ("see <#C0OPS|ops> / <#C0X>", "see #ops / #C0X"),
        ("<!here> <!channel> <!subteam^S0LEADS|@leads>", "@here @channel @leads"),
        ("<https://x.example/a?b=1&amp;c=2|dashboard> and <https://y.example>",
         "dashboard (https://x.example/a?b=1&c=2) and https://y.example"),
        ("a &lt;b&gt; &amp; c\n\n  d", "a <b> & c d"),
    ],
)
def test_a_message_is_quoted_as_a_person_reads_it(text: str, plain: str) -> None:
    assert forms.plain_message_text(text) == plain


def test_a_long_message_is_trimmed_and_keeps_its_link() -> None:
    link = "https://test.slack.com/archives/C0OPS/p1700000000000100"
    reason = forms.quote_reason("x" * 2000, link)
    assert reason.endswith(" — " + link)
    assert len(reason) <= forms.MAX_REASON_CHARS
    assert "…”" in reason
    assert forms.quote_reason("", None) == ""
    assert forms.quote_reason("down", None) == "“down”"


def test_an_attachment_with_nothing_else_to_say_is_quoted_by_its_fallback() -> None:
    message = {"text": "", "attachments": [
        {"fallback": "[FIRING] db-primary unreachable"},
        {"fallback": "not shown", "title": "DatabaseDown", "fields": [{"title": "severity",
                                                                       "value": "critical"}]},
        "not an attachment",
    ]}
    assert forms.message_words(message) == (
        "[FIRING] db-primary unreachable · DatabaseDown · severity: critical")


@pytest.fixture
async def store(db: Database) -> EscalationStore:
    return EscalationStore(db)


def _new(**extra: object) -> dict[str, object]:
    values: dict[str, object] = dict(
        request_key="T0:V1", created_at=1.0, team_id="T0", requester_id="U0ADMIN",
        channel_id="C0OPS", origin="message_shortcut", flow_id="flow-esc",
        flow_name="Escalation", reason=None, answer_timeout=90.0,
    )
    values.update(extra)
    return values


async def test_one_escalation_per_request_key(store: EscalationStore) -> None:
    people = [Target("U0ALICE", "rotation"), Target("U0MANAGER", "escalate_to")]
    first = await store.create(people=people, **_new())
    assert first is not None and first.people == tuple(people) and first.step == 0
    assert first.state == EscalationState.RUNNING and first.target == people[0]
    assert await store.create(people=people, **_new()) is None


async def test_steps_begin_and_advance_once(store: EscalationStore) -> None:
    esc = await store.create(people=[Target("U0ALICE", "rotation")], **_new())
    assert esc is not None
    assert await store.begin_step(esc.id, 0, 10.0, 100.0)
    assert not await store.begin_step(esc.id, 0, 11.0, 101.0)  # begun already
    got = await store.get(esc.id)
    assert got is not None and got.step_deadline == 100.0
    assert await store.advance(esc.id, 0)
    assert not await store.advance(esc.id, 0)  # moved on already
    got = await store.get(esc.id)
    assert got is not None and got.step == 1 and got.target is None
    assert got.step_started_at is None and got.step_deadline is None


async def test_state_changes_are_compare_and_set(store: EscalationStore) -> None:
    esc = await store.create(people=[Target("U0ALICE", "rotation")], **_new())
    assert esc is not None
    running = {EscalationState.RUNNING}
    assert await store.set_state(esc.id, running, EscalationState.STOPPING, stopped_by="U0X")
    assert not await store.set_state(esc.id, running, EscalationState.ANSWERED)
    assert not await store.begin_step(esc.id, 0, 1.0, 2.0)  # a stopped chain begins nothing
    assert [e.id for e in await store.active()] == [esc.id]
    assert await store.set_state(esc.id, {EscalationState.STOPPING}, EscalationState.STOPPED)
    assert await store.active() == []


async def test_a_steps_outcome_is_final_once_recorded(store: EscalationStore) -> None:
    esc = await store.create(people=[Target("U0ALICE", "rotation")], **_new())
    assert esc is not None
    await store.record_step(esc.id, 0, "U0ALICE", StepOutcome.CALLING,
                            number_masked="+1 814 ••• 3093", call_id=7)
    await store.record_step(esc.id, 0, "U0ALICE", StepOutcome.NO_ANSWER)
    await store.record_step(esc.id, 0, "U0ALICE", StepOutcome.ENDED)  # e.g. after a restart
    [step] = await store.steps(esc.id)
    assert (step.outcome, step.number_masked, step.call_id) == ("no_answer", "+1 814 ••• 3093", 7)


def _escalation(state: str, step: int = 0, reason: str | None = None,
                **extra: object) -> Escalation:
    values: dict[str, object] = dict(
        id=3, request_key="k", created_at=1.0, team_id="T0", requester_id="U0ADMIN",
        channel_id="C0OPS", thread_ts="1.1", message_ts="1.2", origin="global_shortcut",
        flow_id="flow-esc", flow_name="Escalation <b>", reason=reason, answer_timeout=90.0,
        people=(Target("U0ALICE", "rotation"), Target("U0BOB", "rotation"),
                Target("U0MANAGER", "escalate_to")),
        step=step, step_started_at=None, step_deadline=None, step_call_id=None, state=state,
        answered_by="U0BOB", stopped_by="U0LEAD1", ack_mode=AckMode.ACKNOWLEDGE,
    )
    return Escalation(**{**values, **extra})  # type: ignore[arg-type]


def test_the_escalation_message_shows_every_person_and_stop_while_running() -> None:
    steps = [Step(0, "U0ALICE", StepOutcome.NO_ANSWER, "+1 814 ••• 3093", 1)]
    running = views.escalation_message(
        _escalation(EscalationState.RUNNING, step=1, reason="<!channel> db down"), steps)
    assert "&lt;!channel&gt; db down" in running.text and "<!channel>" not in running.text
    assert "“Escalation &lt;b&gt;”" in json.dumps(running.blocks, ensure_ascii=False)
    lines = running.text.splitlines()
    assert lines[2:] == [
        "1. <@U0ALICE> (+1 814 ••• 3093) — ❌ no answer after 90 s",
        "2. <@U0BOB> — 📞 calling…",
        "3. <@U0MANAGER> (escalate_to) — ⏳ next",
    ]
    [actions] = [b for b in running.blocks if b["type"] == "actions"]
    assert [e["action_id"] for e in actions["elements"]] == [
        views.ACK_ESCALATION_ACTION, views.STOP_ESCALATION_ACTION]
    assert {e["value"] for e in actions["elements"]} == {"3"}
    assert "90 s to acknowledge" in running.text or "90 s to acknowledge" in json.dumps(
        running.blocks, ensure_ascii=False)

    answered = views.escalation_message(_escalation(EscalationState.ANSWERED, step=1), steps + [
        Step(1, "U0BOB", StepOutcome.ANSWERED, "+1 814 ••• 3094", 2)])
    assert answered.text.startswith("✅ *On-call escalation* by <@U0ADMIN>: <@U0BOB> answered.")
    assert "3. <@U0MANAGER> (escalate_to) — – not called" in answered.text
    assert not [b for b in answered.blocks if b["type"] == "actions"]
    stopping = views.escalation_message(_escalation(EscalationState.STOPPING), [])
    assert "stopped by <@U0LEAD1>" in stopping.text
    assert not [b for b in stopping.blocks if b["type"] == "actions"]


def test_an_acknowledged_escalation_says_who_when_and_how() -> None:
    steps = [Step(0, "U0ALICE", StepOutcome.NOT_ACKNOWLEDGED, "+1 814 ••• 3093", 1),
             Step(1, "U0BOB", StepOutcome.CALLED_OFF, "+1 814 ••• 3094", 2)]
    done = views.escalation_message(_escalation(
        EscalationState.ACKNOWLEDGED, step=1, acknowledged_by="U0ALICE",
        acknowledged_at=1_773_151_200.0, acknowledged_via=AckVia.BUTTON, acknowledged_step=1,
    ), steps)
    assert done.text.startswith(
        "✅ *On-call escalation* by <@U0ADMIN>: <@U0ALICE> acknowledged at "
        "<!date^1773151200^{date_short_pretty} {time}|2026-03-10 14:00 UTC>.")
    lines = done.text.splitlines()
    assert ("1. <@U0ALICE> (+1 814 ••• 3093) — ❌ the call was answered but not acknowledged "
            "(voicemail?) · ✅ acknowledged at <!date^1773151200^{date_short_pretty} {time}|"
            "2026-03-10 14:00 UTC>") in lines
    assert "2. <@U0BOB> (+1 814 ••• 3094) — ⏹ called off: someone else acknowledged" in lines
    assert not [b for b in done.blocks if b["type"] == "actions"]
    by_call = views.escalation_message(_escalation(
        EscalationState.ACKNOWLEDGED, acknowledged_by="U0ALICE", acknowledged_at=5.0,
        acknowledged_via=AckVia.OUTCOME, acknowledged_step=0), [])
    assert "<@U0ALICE> acknowledged on the call at" in by_call.text


def test_the_page_offers_i_m_on_it_until_the_escalation_is_over() -> None:
    running = views.page_message(_escalation(EscalationState.RUNNING, reason="db <down>"),
                                 "U0ALICE", 0, "https://test.slack.com/archives/C0OPS/p1")
    text = json.dumps(running.blocks, ensure_ascii=False)
    assert "You are being paged" in running.text and "<@U0ADMIN> escalated" in running.text
    assert "see <https://test.slack.com/archives/C0OPS/p1|the escalation> in <#C0OPS>." in text
    assert "db &lt;down&gt;" in running.text
    assert views.ACK_ESCALATION_ACTION in text
    mine = views.page_message(_escalation(
        EscalationState.ACKNOWLEDGED, acknowledged_by="U0ALICE", acknowledged_at=5.0),
        "U0ALICE", 0, None)
    assert mine.text.startswith("✅ You acknowledged this page at <!date^5^")
    theirs = views.page_message(_escalation(
        EscalationState.ACKNOWLEDGED, acknowledged_by="U0BOB", acknowledged_at=5.0),
        "U0ALICE", 0, None)
    assert theirs.text.startswith("✅ <@U0BOB> acknowledged") and "Nothing more" in theirs.text
    for over in (mine, theirs):
        assert views.ACK_ESCALATION_ACTION not in json.dumps(over.blocks)
    assert "Your phone is ringing too" in running.text
    # Sent late (its call over, or the chain moved on): it never says the phone rings, nor that
    # answering it would tell anyone.
    for mode in AckMode:
        late = views.page_message(_escalation(EscalationState.RUNNING, ack_mode=mode),
                                  "U0ALICE", 0, None, ringing=False)
        assert "ringing" not in late.text and "Answering" not in late.text
        assert "I'm on it tells everyone you are coming" in late.text
        assert views.ACK_ESCALATION_ACTION in json.dumps(late.blocks)
    # Nobody came: a late "I'm on it" still helps.
    exhausted = views.page_message(_escalation(EscalationState.EXHAUSTED), "U0ALICE", 0, None)
    assert views.ACK_ESCALATION_ACTION in json.dumps(exhausted.blocks)


def test_the_only_thread_posts_are_loud_ones() -> None:
    loud = views.exhausted(_escalation(EscalationState.EXHAUSTED), []).text
    assert loud.startswith("🚨 <@U0ADMIN> *Nobody acknowledged the on-call escalation.*")
    assert "<@U0ALICE>, <@U0BOB>, <@U0MANAGER>" in loud
    answer_mode = views.exhausted(
        _escalation(EscalationState.EXHAUSTED, ack_mode=AckMode.ANSWER), [])
    assert "*Nobody answered the on-call escalation.*" in answer_mode.text


async def test_the_first_acknowledgement_wins(store: EscalationStore) -> None:
    esc = await store.create(people=[Target("U0ALICE", "rotation")], **_new())
    assert esc is not None
    assert await store.acknowledge(esc.id, by="U0ALICE", at=5.0, via=AckVia.BUTTON)
    assert not await store.acknowledge(esc.id, by="U0BOB", at=6.0, via=AckVia.BUTTON)
    got = await store.get(esc.id)
    assert got is not None and got.state == EscalationState.ACKNOWLEDGING
    assert (got.acknowledged_by, got.acknowledged_at, got.acknowledged_via) == (
        "U0ALICE", 5.0, "button")
    assert [e.id for e in await store.active()] == [esc.id]  # a restart finishes it


def test_a_submission_is_read_back_shape_checked() -> None:
    view = {
        "blocks": [
            {"type": "input", "block_id": "escalation.reason"},
            {"type": "input", "block_id": "escalation.channel",
             "element": {"type": "conversations_select", "initial_conversation": "C0PRESET"}},
        ],
        "state": {"values": {"escalation.reason": {"escalation.reason": {
            "type": "plain_text_input", "value": "  " + "r" * 900 + "  "}}}},
    }
    hook = {"block_id": "escalation.channel", "channel_id": "C0PRESET", "response_url": HOOK}
    read = forms.read_submission(view, [hook])
    assert read.channel_id == "C0PRESET"  # the untouched preset
    assert read.response_url == HOOK
    assert read.reason is not None and len(read.reason) == forms.MAX_REASON_CHARS
    assert read.fields == {"escalation.reason", "escalation.channel"}
    view["state"]["values"]["escalation.channel"] = {"escalation.channel": {  # type: ignore[index]
        "type": "conversations_select", "selected_conversation": "not a channel"}}
    assert forms.read_submission(view).channel_id is None


@pytest.mark.parametrize(("state", "ending"), [
    (EscalationState.RUNNING, "📞 going on"),
    (EscalationState.STOPPED, "⏹ stopped"),
    (EscalationState.ANSWERED, "✅ answered"),
    (EscalationState.EXHAUSTED, "🚨 nobody acknowledged"),
    (EscalationState.FAILED, "⚠️ could not go on"),
])
def test_the_home_tabs_line_says_how_an_escalation_ended(state: str, ending: str) -> None:
    # An escalation nobody acknowledged must never read as one still going on.
    line = escalation_line(_escalation(state), "U0ALICE")
    assert line.endswith(f" · <@U0ADMIN> escalated in <#C0OPS> · {ending}"), line
    assert escalation_line(_escalation(state), "U0ADMIN").endswith(
        f" · You escalated in <#C0OPS> · {ending}")
