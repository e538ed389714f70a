"""Block Kit for "are you sure?": the question with its buttons, and what replaces it once answered.

The button values carry only the pending call's random id (see confirmations.py), never the number.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.calls.rates import describe_ago
from bot.calls.status_views import shown
from bot.slack.blocks import Block, Message, context, escape, plain, section

CONFIRM_CALL_ACTION = "call_confirm"
CANCEL_CALL_ACTION = "call_cancel"
CONFIRM_BLOCK = "call_confirmation"


@dataclass(frozen=True)
class Asked:
    """What a question says of its call; kept with it (confirmations.py), to ask it again as it
    was should its Call be refused for a while."""

    masked_number: str
    flow_name: str
    region: str | None  # set: the number is outside `home_regions`
    home_regions: str
    seconds_ago: float | None  # set: a repeat, of a call this long before it was asked

    @classmethod
    def read(cls, kept: object) -> Asked | None:
        """`kept` (what `dataclasses.asdict` made of one) read back; None if it isn't one."""
        if not isinstance(kept, dict):
            return None
        try:
            asked = cls(**kept)
        except TypeError:
            return None
        texts = (asked.masked_number, asked.flow_name, asked.home_regions)
        if not all(isinstance(t, str) for t in texts) or not isinstance(
                asked.region, str | None) or not isinstance(asked.seconds_ago, int | float | None):
            return None
        return asked


def confirm_call(
    confirmation_id: str, asked: Asked, *, expires_minutes: int, refused: bool = False,
) -> Message:
    """`refused`: asked again, its Call refused a moment ago for a while (a limit, the database)."""
    masked_number, flow_name, region = asked.masked_number, asked.flow_name, asked.region
    home_regions, seconds_ago = asked.home_regions, asked.seconds_ago
    if seconds_ago is not None:
        ago = describe_ago(seconds_ago)
        question = f"You called this number {ago} ago — call again?"
    else:
        question = f"{masked_number} is in {region} — are you sure you want to call it?"
    # The flow's name shortened, as the status message shows it: one of thousands of characters
    # took the context's 3,000 and left out where the number is, and when the question expires.
    details = [f"{masked_number} with flow “{shown(flow_name)}”."]
    if region is not None:
        details.append(
            f"It is in {escape(region)}; calls outside {escape(home_regions)} ask first."
        )
    if refused:
        details.append("Your Call was refused just now, so nothing has been dialled (the refusal "
                       "says why): click Call to try again.")
    else:
        details.append("Nothing has been dialled.")
    minutes = f"{expires_minutes} minute{'' if expires_minutes == 1 else 's'}"
    details.append(f"This question expires in {minutes}.")
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
