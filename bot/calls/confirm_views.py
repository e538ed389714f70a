"""Block Kit for "are you sure?": the question with its buttons, and what replaces it once answered.

The button values carry only the pending call's random id (see confirmations.py), never the number.
"""

from __future__ import annotations

from bot.calls.rates import describe_ago
from bot.slack.blocks import Block, Message, context, escape, plain, section

CONFIRM_CALL_ACTION = "call_confirm"
CANCEL_CALL_ACTION = "call_cancel"
CONFIRM_BLOCK = "call_confirmation"


def confirm_call(
    confirmation_id: str,
    *,
    masked_number: str,
    flow_name: str,
    region: str | None,
    home_regions: str,
    seconds_ago: float | None,
    expires_minutes: int,
) -> Message:
    """`region` set: the number is outside `home_regions`; `seconds_ago` set: a repeat."""
    if seconds_ago is not None:
        ago = describe_ago(seconds_ago)
        question = f"You called this number {ago} ago — call again?"
    else:
        question = f"{masked_number} is in {region} — are you sure you want to call it?"
    details = [f"{masked_number} with flow “{escape(flow_name)}”."]
    if region is not None:
        details.append(
            f"It is in {escape(region)}; calls outside {escape(home_regions)} ask first."
        )
    details.append(f"Nothing has been dialled. This question expires in {expires_minutes} minutes.")
    details_line = " ".join(details)
    blocks: list[Block] = [
        section(f"*{escape(question)}*"),
        context(details_line),
        {
            "type": "actions",
            "block_id": CONFIRM_BLOCK,
            "elements": [
                {
                    "type": "button",
                    "action_id": CONFIRM_CALL_ACTION,
                    "text": plain("Call"),
                    "style": "primary",
                    "value": confirmation_id,
                },
                {
                    "type": "button",
                    "action_id": CANCEL_CALL_ACTION,
                    "text": plain("Cancel"),
                    "value": confirmation_id,
                },
            ],
        },
    ]
    return Message(text=f"{question} {details_line}", blocks=blocks)


def confirmation_answered(line: str) -> Message:
    """Replaces the question (its buttons gone) once it is answered."""
    return Message(text=line, blocks=[section(escape(line))])
