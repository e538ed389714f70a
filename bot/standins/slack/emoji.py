"""Emoji names Slack knows, for reactions.add.

Slack refuses a reaction whose name is no emoji of the workspace with `invalid_name` ("Value
passed for name was invalid", reactions.add's documented errors): the standard emoji, plus the
workspace's custom ones (the stand-in's `custom_emoji`). The standard names below are a few of
those Slack uses, each checked against iamcal/emoji-data's `categories.json` (the short names of
Slack's emoji set; `phone` is ☎️, `telephone_receiver` 📞). A name not listed is refused here even
if Slack has it: check it there before adding it, so that a mark the bot reacts with is one Slack
takes.
"""

from __future__ import annotations

STANDARD_EMOJI = frozenset({
    "+1", "-1", "ballot_box_with_check", "bell", "calling", "eyes", "exclamation", "fire",
    "grey_question", "heavy_check_mark", "hourglass", "hourglass_flowing_sand",
    "mailbox_with_mail", "no_bell", "no_entry", "no_entry_sign", "pager", "phone", "pray",
    "question", "red_circle", "rotating_light", "sos", "speech_balloon", "stopwatch", "tada",
    "telephone_receiver", "warning", "white_check_mark", "x", "zzz",
})
