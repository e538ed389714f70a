"""The Block Kit and view limits Slack enforces and bots trip over, checked like Slack does."""

from __future__ import annotations

import re
from typing import Any

from bot.standins.slack.records import (
    JSONDict,
)


def characters(text: str) -> int:
    """How many characters Slack counts in `text` against a limit. Slack's documentation says
    "characters" and no more: the stand-in takes the stricter plausible reading, JavaScript's
    (UTF-16 code units: an emoji outside the Basic Multilingual Plane is two), so a text the
    bot measured in Python's code points alone fails a test. Counted here, not with the bot's
    own measure (bot/slack/blocks.py's slack_length): a stand-in that measured with the bot's
    code would agree with any mistake in it."""
    return len(text.encode("utf-16-le")) // 2


# Slack's date formatting in mrkdwn ("Formatting text for app surfaces", Date formatting):
# `<!date^timestamp^token_string^optional_link|fallback_text>`, the timestamp a Unix time in
# seconds, the token string text with `{tokens}` in it, the fallback what a client that can't
# format the date shows. Slack refuses no post for a token it can't read: it shows the token's
# text as written, garbage to the reader. The stand-in takes the stricter reading and refuses it
# (invalid_blocks), so a test fails where a person would have read `<!date^…>`.
_DATE = re.compile(r"<!date\^(?P<rest>[^>]*)>")
_DATE_PARTS = re.compile(
    r"(?P<timestamp>[0-9]+)\^(?P<tokens>[^^|]+)(?:\^(?P<link>[^^|]+))?\|(?P<fallback>[^|]+)"
)
DATE_TOKENS = frozenset({
    "date_num", "date", "date_short", "date_long", "date_pretty", "date_short_pretty",
    "date_long_pretty", "time", "time_secs", "ago", "day_divider_pretty", "date_slash",
    "date_long_full",
})


def date_problems(text: str, pointer: str) -> list[str]:
    """Why Slack could not format a `<!date^…>` in mrkdwn `text` (empty: none, or all fine)."""
    problems = []
    for found in _DATE.finditer(text):
        parts = _DATE_PARTS.fullmatch(found.group("rest"))
        tokens = re.findall(r"\{([^{}]*)\}", parts.group("tokens")) if parts else []
        if parts is None or not tokens or not set(tokens) <= DATE_TOKENS:
            problems.append(f"[ERROR] unreadable date {found.group()[:80]!r} "
                            f"[json-pointer:{pointer}]")
    return problems


def _text_of(obj: Any) -> str | None:
    if isinstance(obj, dict):
        text = obj.get("text")
        return text if isinstance(text, str) else None
    return None


def _block_problems(blocks: list[Any], pointer: str) -> list[str]:
    problems: list[str] = []

    def walk(node: Any, ptr: str) -> None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{ptr}/{i}")
            return
        if not isinstance(node, dict):
            return
        block_id = node.get("block_id")
        if isinstance(block_id, str) and characters(block_id) > 255:
            problems.append(
                f"[ERROR] must be less than 256 characters [json-pointer:{ptr}/block_id]"
            )
        for key in ("label", "hint"):
            text = _text_of(node.get(key))
            if text is not None and characters(text) > 2000:
                problems.append(
                    f"[ERROR] must be less than 2001 characters [json-pointer:{ptr}/{key}/text]"
                )
        problems.extend(_element_problems(node, ptr))
        options = node.get("options")
        if (
            isinstance(options, list)
            and options
            and all(isinstance(o, dict) and "value" in o for o in options)
        ):
            # An overflow menu holds up to five options, checkboxes and radio buttons ten, a
            # select menu (or an option group, or a block_suggestion's answer) 100.
            most = _MOST_OPTIONS.get(str(node.get("type")), 100)
            if len(options) > most:
                problems.append(
                    f"[ERROR] must provide no more than {most} items [json-pointer:{ptr}/options]"
                )
            for i, option in enumerate(options):
                for key in ("text", "description"):
                    text = _text_of(option.get(key))
                    if text is not None and characters(text) > 75:
                        problems.append(
                            "[ERROR] must be less than 76 characters "
                            f"[json-pointer:{ptr}/options/{i}/{key}/text]"
                        )
                value = option.get("value")
                if isinstance(value, str) and characters(value) > 150:
                    problems.append(
                        "[ERROR] must be less than 151 characters "
                        f"[json-pointer:{ptr}/options/{i}/value]"
                    )
        for key, value in node.items():
            if isinstance(value, (dict, list)) and key != "options":
                walk(value, f"{ptr}/{key}")

    walk(blocks, pointer)
    return problems


_MOST_OPTIONS = {"overflow": 5, "checkboxes": 10, "radio_buttons": 10}


def _option_group_problems(node: JSONDict, ptr: str) -> list[str]:
    """Option groups (Block Kit reference, option group object): "a maximum number of 100 option
    groups with a maximum of 100 options", each label at most 75 characters. Whether the 100
    options are per group or in all, the reference doesn't say: the stand-in takes the stricter
    reading, 100 in all (each group's own list is checked as any list of options)."""
    groups = node.get("option_groups")
    if not isinstance(groups, list):
        return []
    problems = []
    if len(groups) > 100:
        problems.append(
            f"[ERROR] must provide no more than 100 items [json-pointer:{ptr}/option_groups]"
        )
    in_all = sum(len(g.get("options") or []) for g in groups if isinstance(g, dict))
    if in_all > 100:
        problems.append(f"[ERROR] must provide no more than 100 options in all "
                        f"[json-pointer:{ptr}/option_groups]")
    for i, group in enumerate(groups):
        label = _text_of(group.get("label")) if isinstance(group, dict) else None
        if label is not None and characters(label) > 75:
            problems.append(f"[ERROR] must be less than 76 characters "
                            f"[json-pointer:{ptr}/option_groups/{i}/label/text]")
    return problems


def _element_problems(node: JSONDict, ptr: str) -> list[str]:
    """Text objects (1 to 3,000 characters), buttons, confirm dialogs, and the element counts."""
    problems: list[str] = []

    def longer(value: Any, limit: int, where: str) -> None:
        if isinstance(value, str) and characters(value) > limit:
            problems.append(
                f"[ERROR] must be less than {limit + 1} characters [json-pointer:{ptr}/{where}]"
            )

    def more(items: Any, most: int, where: str) -> None:
        if isinstance(items, list) and len(items) > most:
            problems.append(
                f"[ERROR] must provide no more than {most} items [json-pointer:{ptr}/{where}]"
            )

    kind = node.get("type")
    if kind in ("plain_text", "mrkdwn"):
        text = node.get("text")
        if not isinstance(text, str) or not text:
            problems.append(f"[ERROR] must be more than 0 characters [json-pointer:{ptr}/text]")
        longer(text, 3000, "text")
        if kind == "mrkdwn" and isinstance(text, str):
            problems.extend(date_problems(text, f"{ptr}/text"))
    limits: tuple[tuple[str, int], ...] = ()
    if kind == "button":
        limits = (("text", 75),)
        longer(node.get("value"), 2000, "value")
    elif kind == "header":
        limits = (("text", 150),)
    elif "confirm" in node and "deny" in node and "title" in node:
        limits = (("title", 100), ("text", 300), ("confirm", 30), ("deny", 30))
    for key, limit in limits:
        longer(_text_of(node.get(key)), limit, f"{key}/text")
    longer(node.get("action_id"), 255, "action_id")
    # Any element's placeholder: at most 150 characters (Block Kit reference, e.g. select menus).
    longer(_text_of(node.get("placeholder")), 150, "placeholder/text")
    if kind == "plain_text_input" and isinstance(node.get("max_length"), int) and (
        node["max_length"] > 3000
    ):
        problems.append(f"[ERROR] must be no more than 3000 [json-pointer:{ptr}/max_length]")
    problems.extend(_option_group_problems(node, ptr))
    if kind == "plain_text_input" and isinstance(node.get("max_length"), int):
        # Whether Slack opens a text input prefilled beyond its max_length is not documented
        # (docs/slack-platform.md is silent): the stand-in takes the stricter reading and refuses
        # it (invalid_arguments), so a test proves the bot never depends on Slack accepting one.
        longer(node.get("initial_value"), node["max_length"], "initial_value")
    most = {"context": 10, "actions": 25}.get(str(kind))
    if most is not None:
        more(node.get("elements"), most, "elements")
    problems.extend(_initial_option_problems(node, ptr))
    fields = node.get("fields")
    if kind == "section" and isinstance(fields, list):
        more(fields, 10, "fields")
        for i, item in enumerate(fields):
            longer(_text_of(item), 2000, f"fields/{i}/text")
    return problems


def _initial_option_problems(node: JSONDict, ptr: str) -> list[str]:
    """A menu's (or radio buttons', or checkboxes') `initial_option(s)` must "exactly match one of
    the options within options or option_groups" (Block Kit reference, select menu element); a menu
    whose options come from the app (external_select) has none to match."""
    offered: list[Any] = []
    if isinstance(node.get("options"), list):
        offered = list(node["options"])
    elif isinstance(node.get("option_groups"), list):
        offered = [option for group in node["option_groups"] if isinstance(group, dict)
                   for option in group.get("options") or []]
    else:
        return []
    problems: list[str] = []
    for key in ("initial_option", "initial_options"):
        chosen = node.get(key)
        for i, option in enumerate(chosen if isinstance(chosen, list) else [chosen]):
            if chosen is not None and option not in offered:
                where = key if key == "initial_option" else f"{key}/{i}"
                problems.append(
                    f"[ERROR] must match one of the options [json-pointer:{ptr}/{where}]"
                )
    return problems


_BLOCK_TYPES = frozenset({"actions", "context", "divider", "file", "header", "image", "input",
                          "markdown", "rich_text", "section", "video"})


def _shape_problems(blocks: list[Any], pointer: str) -> list[str]:
    """The shapes Slack refuses as ``invalid_blocks`` whatever their sizes: a block of no known
    type, a section with neither text nor fields, an input without its label or element, a
    header or button whose text is not plain_text, one block_id used twice."""
    problems: list[str] = []
    seen: set[str] = set()
    for i, block in enumerate(blocks):
        ptr = f"{pointer}/{i}"
        if not isinstance(block, dict) or block.get("type") not in _BLOCK_TYPES:
            problems.append(f"[ERROR] unsupported type [json-pointer:{ptr}/type]")
            continue
        kind, block_id = block["type"], block.get("block_id")
        if isinstance(block_id, str):
            if block_id in seen:
                problems.append(f"[ERROR] duplicate block_id [json-pointer:{ptr}/block_id]")
            seen.add(block_id)
        if kind == "section" and not block.get("text") and not block.get("fields"):
            problems.append(f"[ERROR] must provide text or fields [json-pointer:{ptr}]")
        if kind == "input":
            problems += [f"[ERROR] missing required field: {key} [json-pointer:{ptr}]"
                         for key in ("label", "element") if not isinstance(block.get(key), dict)]
        plain = [("text", block.get("text"))] if kind == "header" else []
        for j, element in enumerate(block.get("elements") or []):
            if isinstance(element, dict) and element.get("type") == "button":
                plain.append((f"elements/{j}/text", element.get("text")))
        if isinstance(block.get("accessory"), dict) and block["accessory"].get("type") == "button":
            plain.append(("accessory/text", block["accessory"].get("text")))
        problems += [f"[ERROR] must be a plain_text object [json-pointer:{ptr}/{where}]"
                     for where, text in plain
                     if not isinstance(text, dict) or text.get("type") != "plain_text"]
    return problems


def message_problems(body: Any) -> list[str]:
    """Why Slack would refuse ``body`` as a message (an ack, a ``response_url`` post): blocks."""
    if not isinstance(body, dict):
        return []
    # A message's own text is mrkdwn too (what notifications and the blocks' fallback show).
    text = body.get("text")
    problems = date_problems(text, "/text") if isinstance(text, str) else []
    blocks = body.get("blocks")
    if blocks is None:
        return problems
    if not isinstance(blocks, list):
        return [*problems, "[ERROR] must be an array [json-pointer:/blocks]"]
    problems += _block_problems(blocks, "/blocks") + _shape_problems(blocks, "/blocks")
    if len(blocks) > 50:
        problems.append("[ERROR] must provide no more than 50 items [json-pointer:/blocks]")
    return problems


def _view_problems(view: JSONDict) -> list[str]:
    problems: list[str] = []
    vtype = view.get("type")
    if vtype not in ("modal", "home"):
        problems.append("[ERROR] must be one of [modal, home] [json-pointer:/view/type]")
    if vtype == "modal":
        title = _text_of(view.get("title"))
        if title is None:
            problems.append("[ERROR] missing required field: title [json-pointer:/view]")
        elif characters(title) > 24:
            problems.append(
                "[ERROR] must be less than 25 characters [json-pointer:/view/title/text]"
            )
        for key in ("title", "submit", "close"):
            if key in view and view[key] is not None and (
                not isinstance(view[key], dict) or view[key].get("type") != "plain_text"
            ):
                problems.append(
                    f"[ERROR] must be a plain_text object [json-pointer:/view/{key}]"
                )
        for key in ("submit", "close"):
            text = _text_of(view.get(key))
            if text is not None and characters(text) > 24:
                problems.append(
                    f"[ERROR] must be less than 25 characters [json-pointer:/view/{key}/text]"
                )
    blocks = view.get("blocks")
    if not isinstance(blocks, list):
        problems.append("[ERROR] missing required field: blocks [json-pointer:/view]")
    else:
        if len(blocks) > 100:
            problems.append(
                "[ERROR] must provide no more than 100 items [json-pointer:/view/blocks]"
            )
        if (
            vtype == "modal"
            and view.get("submit") is None
            and any(isinstance(b, dict) and b.get("type") == "input" for b in blocks)
        ):
            problems.append(
                "[ERROR] must provide a submit property when using input blocks "
                "[json-pointer:/view]"
            )
        problems += _block_problems(blocks, "/view/blocks")
        problems += _shape_problems(blocks, "/view/blocks")
    for key, limit in (("private_metadata", 3000), ("callback_id", 255), ("external_id", 255)):
        value = view.get(key)
        if isinstance(value, str) and characters(value) > limit:
            problems.append(
                f"[ERROR] must be less than {limit + 1} characters [json-pointer:/view/{key}]"
            )
    return problems


def ack_problems(payload: Any, ack: Any) -> list[str]:
    """Why Slack would refuse ``ack`` as the answer to the interactive ``payload``: the person
    then sees an error instead (docs/slack-platform.md, Deadlines)."""
    if not isinstance(payload, dict) or not isinstance(ack, dict) or not ack:
        return []
    kind = payload.get("type")
    if kind == "block_suggestion":
        # The ack *is* the answer: at most 100 options, each as a select's option.
        return _block_problems([ack], "")
    if kind == "view_submission":
        return _submission_ack_problems(payload, ack)
    return message_problems(ack)


def _submission_ack_problems(payload: JSONDict, ack: JSONDict) -> list[str]:
    action = ack.get("response_action")
    if action is None and set(ack) - {"response_action"}:
        # Slack's reference allows only an empty answer or a response_action: it shows no text,
        # and the person sees "We had some trouble connecting" (or the modal closing, unsaid).
        return [f"[ERROR] a view_submission's answer is empty or a response_action, not "
                f"{sorted(ack)} [json-pointer:/]"]
    if action is None or action == "clear":
        return []
    if action in ("update", "push"):
        view = ack.get("view")
        if not isinstance(view, dict):
            return ["[ERROR] missing required field: view [json-pointer:/view]"]
        return _view_problems(view)
    if action != "errors":
        return [f"[ERROR] invalid response_action {action!r} [json-pointer:/response_action]"]
    errors = ack.get("errors")
    if not isinstance(errors, dict) or not errors:
        return ["[ERROR] must be an object naming input blocks [json-pointer:/errors]"]
    # `errors: {block_id: message}` shows each message under its field: only an input block of
    # the submitted view has one.
    view = payload.get("view")
    blocks = view.get("blocks") if isinstance(view, dict) else None
    inputs = {
        b.get("block_id") for b in blocks or [] if isinstance(b, dict) and b.get("type") == "input"
    }
    problems = []
    for block_id, message in errors.items():
        if block_id not in inputs:
            problems.append(f"[ERROR] no input block {block_id!r} [json-pointer:/errors]")
        if not isinstance(message, str) or not message:
            problems.append(f"[ERROR] must be a message [json-pointer:/errors/{block_id}]")
    return problems
