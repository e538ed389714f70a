"""The modal kit both forms are built from: metadata that survives the round trip through Slack
and refuses what the bot did not write, the views every form shows, errors Slack will accept."""

from __future__ import annotations

import json

import pytest

from bot.calls.form import CALL_FORM
from bot.oncall.escalation_form import ESCALATION_FORM
from bot.slack.modals import Form, MetadataInvalid, ModalMetadata, field_errors

HOOK = "https://hooks.slack.com/actions/T0/1/abc"
TRUSTED = ["http://127.0.0.1:9"]


@pytest.mark.parametrize(
    "metadata",
    [
        ModalMetadata(),
        ModalMetadata("C0OPS", response_url="https://hooks.slack.com/commands/T1/2/abc"),
        ModalMetadata("G0PRIV", response_url="http://127.0.0.1:9/response/x"),  # a trusted origin
        ModalMetadata("C0OPS", "1700000000.000100", HOOK),
    ],
)
def test_metadata_round_trips(metadata: ModalMetadata) -> None:
    assert ModalMetadata.decode(metadata.encode(), TRUSTED) == metadata


@pytest.mark.parametrize(
    "text",
    [
        json.dumps({"channel": "#ops"}),
        json.dumps({"channel": 5}),
        json.dumps({"channel": "C0OPS", "thread_ts": "now"}),
        json.dumps({"thread_ts": "1700000000.000100"}),  # a thread without its channel
        json.dumps({"response_url": HOOK}),  # a response_url without its channel
        json.dumps({"channel": "C0OPS", "response_url": "http://hooks.slack.com/x"}),  # not https
        json.dumps({"channel": "C0OPS", "response_url": "https://hooks.slack.com.evil.io/x"}),
        json.dumps({"channel": "C0OPS", "response_url": "https://evil.example/hook"}),
        json.dumps({"channel": "C0OPS", "extra": 1}),
        "[1]", "{", "x" * 4000,
    ],
)
def test_metadata_the_bot_did_not_write_is_refused(text: str) -> None:
    with pytest.raises(MetadataInvalid):
        ModalMetadata.decode(text, TRUSTED)


def test_a_response_url_too_long_for_slack_is_dropped_not_the_form() -> None:
    metadata = ModalMetadata("C0OPS", response_url="https://hooks.slack.com/" + "x" * 3000)
    assert ModalMetadata.decode(metadata.encode(), TRUSTED) == ModalMetadata("C0OPS")


@pytest.mark.parametrize("form", [CALL_FORM, ESCALATION_FORM])
def test_every_view_of_a_form_reaches_its_listener(form: Form) -> None:
    loading = form.loading_view(ModalMetadata("C0OPS"), "12345.98765.abcd2358fdea")
    notice = form.notice_view("You can't <do> this.")
    for view in (loading, notice):
        assert view["callback_id"] == form.callback_id and view["title"]["text"] == form.title
        assert "submit" not in view
    assert ModalMetadata.decode(loading["private_metadata"]) == ModalMetadata("C0OPS")
    assert "&lt;do&gt;" in json.dumps(notice["blocks"])


def test_an_error_for_a_field_the_view_lacks_goes_to_the_general_spot() -> None:
    errors = field_errors({"caller_id": "bad", "number": "worse"}, ["number", "flow"], "number")
    assert errors == {"number": "bad worse"}
