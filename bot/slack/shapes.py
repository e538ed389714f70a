"""The shape of a request Bolt takes for granted, checked before Bolt reads it (both modes).

Bolt (1.30) reads some parts of what Slack sends without looking at their types first: its
authorisation middleware reads `event` as an object, its listener matchers `actions[0]` and
`view`, its "unhandled request" warning `view` and `actions[0]` again, its context the ids (`user`,
`team`, `channel`, `enterprise`) as a string or an object. Slack never sends them otherwise, but a
request that does (signed by whoever holds the signing secret, or Slack getting it wrong) made Bolt
raise: inside its middleware chain, the one error handler logged an ERROR and answered "Something
went wrong" with 200; outside it (the context, the listeners' arguments), the HTTP side answered
400 while Socket Mode logged slack_sdk's own ERROR. A text holding half of a UTF-16 pair (a
lone surrogate, from a JSON escape), which no database, log line or Slack post can encode, failed
after the ack likewise (a click's claim). A form's `response_urls` that is no list of objects
failed the forms' own listeners. Such a request is refused here instead, with a warning
naming the part (never its content): 400 in HTTP mode (bot/slack/http.py), no ack in Socket Mode
(bot/slack/socket_mode.py), as Bolt leaves a request it has no listener for.

A NUL (JSON's "\u0000") is a character of its own, which a message posted by an integration may
hold, but PostgreSQL stores no text holding one: an escalation's reason quoting it failed as its
row was written ("Something went wrong"), a click's claim after its ack. `replace_nul` writes
each as U+FFFD before Bolt reads the request, which then goes on as any other: a number holding
one is still refused by the number rules, as any symbol in it is.
"""

from __future__ import annotations

import re
from typing import Any

# Half of a UTF-16 pair, which JSON's "\ud800" escape decodes to (Slack never sends one): no
# database, log line or Slack post can encode it as UTF-8, so whatever stored or sent the text of
# such a request failed after its ack, as an unhandled error.
_SURROGATE = re.compile("[\ud800-\udfff]")
# What a NUL in a request's text is written as (replace_nul): the replacement character.
NUL_STAND_IN = "\ufffd"
# The ids Bolt reads as a string or an object (`"id" in user`), wherever it looks for them.
_IDS = ("user", "team", "channel", "enterprise")
# Where Bolt looks for those ids besides the payload itself (each only when it is an object).
_HOLDING_IDS = ("event", "message", "previous_message", "item", "assistant_thread")


class MalformedRequest(ValueError):
    """A request with a part Bolt would fail on; its words name the part, never its content."""

    def __init__(self, part: str) -> None:
        super().__init__(f"a request of a shape Slack never sends ({part})")


def unreadable_part(body: object) -> str | None:
    """The first part of `body` that Bolt would fail on (see the module's text), else None."""
    if not isinstance(body, dict):
        return "payload"
    for key in ("event", "view"):
        if key in body and not isinstance(body[key], dict):
            return key
    view = body.get("view")
    if isinstance(view, dict) and "callback_id" in view and "type" not in view:
        return "view.type"
    kind = body.get("type")
    steps = (kind == "workflow_step_edit" and "callback_id" in body) or (
        kind == "view_submission" and isinstance(view, dict) and "callback_id" in view
        and view["type"] == "workflow_step")
    if steps and "workflow_step" not in body:
        return "workflow_step"  # a step from apps' edit or save: Bolt reads the step
    if (kind == "block_actions" and "actions" in body) or (
            kind == "interactive_message" and "callback_id" in body):
        actions = body.get("actions")
        if not isinstance(actions, list) or not actions or not _objects(actions):
            return "actions"
        if kind == "block_actions" and "action_id" not in actions[0]:
            return "actions"
    if kind == "block_suggestion" and body.get("action_id") is not None \
            and not isinstance(body["action_id"], str):
        return "action_id"  # the warning of a menu no listener serves joins it to text
    event = body.get("event")
    if isinstance(event, dict) and event.get("type") == "function_executed" and (
            "function_execution_id" in event and "function" in event
            and not isinstance(event["function"], dict)):
        return "event.function"
    authorizations = body.get("authorizations")
    if authorizations is not None and not (isinstance(authorizations, list)
                                           and _objects(authorizations)):
        return "authorizations"
    # A form's channel choices (response_url_enabled; the call form has one), read by the forms'
    # listeners as a list of objects, beside a response_url too. Without one, two or more make
    # Bolt write a debug line to a context that has no logger yet: it fails on them itself.
    urls = body.get("response_urls")
    if "response_urls" in body and not (
            isinstance(urls, list) and _objects(urls)
            and ("response_url" in body or len(urls) <= 1)):
        return "response_urls"
    for part, where in [(body, ""), *((each, "authorizations.") for each in authorizations or [])]:
        if (found := _unreadable_ids(part, where)) is not None:
            return found
    if _holds_surrogate(body):
        return "unpaired surrogate"
    return None


def _holds_surrogate(body: dict[str, Any]) -> bool:
    """Whether a text anywhere in `body` (a key too) holds half of a UTF-16 pair."""
    parts: list[object] = [body]
    while parts:
        part = parts.pop()
        if isinstance(part, str):
            if not part.isascii() and _SURROGATE.search(part):
                return True
        elif isinstance(part, dict):
            parts.extend(part)
            parts.extend(part.values())
        elif isinstance(part, list):
            parts.extend(part)
    return False


def replace_nul(body: object) -> bool:
    """Every NUL in `body`'s texts (its keys too) written as U+FFFD, in place; True if any was."""
    replaced = False
    parts: list[object] = [body]
    while parts:
        part = parts.pop()
        if isinstance(part, dict):
            for key, value in list(part.items()):
                if isinstance(value, str) and "\0" in value:
                    part[key] = value = value.replace("\0", NUL_STAND_IN)
                    replaced = True
                if isinstance(key, str) and "\0" in key:
                    del part[key]
                    part[key.replace("\0", NUL_STAND_IN)] = value
                    replaced = True
                if isinstance(value, (dict, list)):
                    parts.append(value)
        elif isinstance(part, list):
            for index, value in enumerate(part):
                if isinstance(value, str) and "\0" in value:
                    part[index] = value.replace("\0", NUL_STAND_IN)
                    replaced = True
                elif isinstance(value, (dict, list)):
                    parts.append(value)
    return replaced


def _objects(items: list[Any]) -> bool:
    return all(isinstance(item, dict) for item in items)


def _unreadable_ids(part: dict[str, Any], where: str) -> str | None:
    for key in _IDS:
        if part.get(key) is not None and not isinstance(part[key], (str, dict)):
            return f"{where}{key}"
    for key in _HOLDING_IDS:
        if isinstance(part.get(key), dict):
            found = _unreadable_ids(part[key], f"{where}{key}.")
            if found is not None:
                return found
    return None
