"""What Slack sends to an app: signed HTTP bodies and the payloads of every surface."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.parse

from bot.standins.slack.records import (
    APP_ID,
    BOT_ID,
    DEFAULT_TRIGGER_ID,
    TEAM_DOMAIN,
    VERIFICATION_TOKEN,
    JSONDict,
)


def sign(body: bytes, signing_secret: str, timestamp: int | None = None) -> dict[str, str]:
    """Headers Slack puts on an HTTP request: ``v0=hex(HMAC_SHA256(secret, "v0:{ts}:{body}"))``."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    base = b"v0:" + ts.encode() + b":" + body
    digest = hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": "v0=" + digest,
        "Content-Type": "application/x-www-form-urlencoded",
    }


def slash_command_payload(
    *,
    text: str,
    user_id: str = "U0MANAGER",
    channel_id: str = "C0OPS",
    team_id: str = "T0TEAM",
    command: str = "/call",
    response_url: str,
    trigger_id: str = DEFAULT_TRIGGER_ID,
    user_name: str = "manager",
    channel_name: str = "ops",
    team_domain: str = TEAM_DOMAIN,
) -> dict[str, str]:
    """A slash command's fields as Slack sends them (all strings), e.g. the Socket Mode
    ``slash_commands`` envelope payload."""
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": team_id,
        "team_domain": team_domain,
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name,
        "command": command,
        "text": text,
        "api_app_id": APP_ID,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id,
    }


def slash_command_body(*, text: str, response_url: str, **fields: str) -> bytes:
    """The form-encoded body Slack POSTs for a slash command in HTTP mode (sign it with
    :func:`sign`); the fields are those of :func:`slash_command_payload`."""
    payload = slash_command_payload(text=text, response_url=response_url, **fields)
    return urllib.parse.urlencode(payload).encode()


def interactive_body(payload: JSONDict) -> bytes:
    """The form-encoded ``payload=<json>`` body Slack POSTs for interactions in HTTP mode."""
    return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()


def _team(team_id: str) -> JSONDict:
    return {"id": team_id, "domain": TEAM_DOMAIN}


def _user_obj(user_id: str, user_name: str, team_id: str) -> JSONDict:
    return {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id}


def global_shortcut_payload(
    *,
    callback_id: str,
    user_id: str = "U0MANAGER",
    user_name: str = "manager",
    team_id: str = "T0TEAM",
    trigger_id: str = DEFAULT_TRIGGER_ID,
) -> JSONDict:
    """A global shortcut (``type: shortcut``): no channel and no response_url."""
    return {
        "type": "shortcut",
        "token": VERIFICATION_TOKEN,
        "action_ts": "1700000000.123456",
        "team": _team(team_id),
        "user": _user_obj(user_id, user_name, team_id),
        "is_enterprise_install": False,
        "enterprise": None,
        "callback_id": callback_id,
        "trigger_id": trigger_id,
    }


def message_shortcut_payload(
    *,
    callback_id: str,
    channel_id: str = "C0OPS",
    message_ts: str,
    message_text: str = "",
    message_user: str = "U0SOMEONE",
    thread_ts: str | None = None,
    response_url: str,
    user_id: str = "U0MANAGER",
    user_name: str = "manager",
    channel_name: str = "ops",
    team_id: str = "T0TEAM",
    trigger_id: str = DEFAULT_TRIGGER_ID,
    message_attachments: list[JSONDict] | None = None,
) -> JSONDict:
    """A message shortcut (``type: message_action``) on the message ``(channel_id, message_ts)``."""
    message: JSONDict = {
        "type": "message",
        "user": message_user,
        "ts": message_ts,
        "text": message_text,
    }
    if message_attachments is not None:
        message["attachments"] = message_attachments
    if thread_ts is not None:
        message["thread_ts"] = thread_ts
    return {
        "type": "message_action",
        "token": VERIFICATION_TOKEN,
        "action_ts": "1700000000.123456",
        "team": _team(team_id),
        "user": _user_obj(user_id, user_name, team_id),
        "channel": {"id": channel_id, "name": channel_name},
        "is_enterprise_install": False,
        "enterprise": None,
        "callback_id": callback_id,
        "trigger_id": trigger_id,
        "response_url": response_url,
        "message_ts": message_ts,
        "message": message,
        "api_app_id": APP_ID,
    }


def _view_payload(
    view: JSONDict | None,
    *,
    view_id: str,
    callback_id: str,
    private_metadata: str,
    values: dict[str, dict[str, JSONDict]],
    team_id: str,
) -> JSONDict:
    base: JSONDict = {
        "id": view_id,
        "team_id": team_id,
        "type": "modal",
        "blocks": [],
        "private_metadata": private_metadata,
        "callback_id": callback_id,
        "hash": "1700000000.abcdef12",
        "title": {"type": "plain_text", "text": "Modal"},
        "clear_on_close": False,
        "notify_on_close": False,
        "close": None,
        "submit": {"type": "plain_text", "text": "Submit"},
        "previous_view_id": None,
        "root_view_id": view_id,
        "app_id": APP_ID,
        "external_id": "",
        "app_installed_team_id": team_id,
        "bot_id": BOT_ID,
    }
    if view is not None:
        base.update(view)
        base["callback_id"] = view.get("callback_id", callback_id)
        base["private_metadata"] = view.get("private_metadata", private_metadata)
    base["state"] = {"values": values}
    return base


def view_submission_payload(
    *,
    callback_id: str,
    values: dict[str, dict[str, JSONDict]],
    private_metadata: str = "",
    view: JSONDict | None = None,
    view_id: str = "V0VIEW",
    user_id: str = "U0MANAGER",
    user_name: str = "manager",
    team_id: str = "T0TEAM",
    trigger_id: str = DEFAULT_TRIGGER_ID,
    response_urls: list[JSONDict] | None = None,
) -> JSONDict:
    """A ``view_submission``. ``values`` is ``view.state.values``:
    ``{block_id: {action_id: {"type": "plain_text_input", "value": "..."}}}``.
    ``view`` (e.g. the one the app opened, from ``standin.views[id].versions[-1]``) fills the
    rest."""
    return {
        "type": "view_submission",
        "team": _team(team_id),
        "user": _user_obj(user_id, user_name, team_id),
        "api_app_id": APP_ID,
        "token": VERIFICATION_TOKEN,
        "trigger_id": trigger_id,
        "view": _view_payload(
            view,
            view_id=view_id,
            callback_id=callback_id,
            private_metadata=private_metadata,
            values=values,
            team_id=team_id,
        ),
        "response_urls": response_urls or [],
        "is_enterprise_install": False,
        "enterprise": None,
    }


def block_actions_payload(
    *,
    action_id: str,
    block_id: str = "actions",
    value: str | None = None,
    action_type: str = "button",
    channel_id: str | None = "C0OPS",
    message_ts: str | None = None,
    message: JSONDict | None = None,
    view: JSONDict | None = None,
    response_url: str | None = None,
    user_id: str = "U0MANAGER",
    user_name: str = "manager",
    channel_name: str = "ops",
    team_id: str = "T0TEAM",
    trigger_id: str = DEFAULT_TRIGGER_ID,
    extra_action: JSONDict | None = None,
) -> JSONDict:
    """A ``block_actions`` payload for one action, from a message (give ``message_ts``) or from a
    view (give ``view``, a full view as in :func:`view_submission_payload`)."""
    action: JSONDict = {
        "action_id": action_id,
        "block_id": block_id,
        "type": action_type,
        "action_ts": "1700000000.654321",
    }
    if action_type == "button":
        action["text"] = {"type": "plain_text", "text": "Button", "emoji": True}
    if value is not None:
        action["value"] = value
    action.update(extra_action or {})
    payload: JSONDict = {
        "type": "block_actions",
        "user": _user_obj(user_id, user_name, team_id),
        "api_app_id": APP_ID,
        "token": VERIFICATION_TOKEN,
        "trigger_id": trigger_id,
        "team": _team(team_id),
        "enterprise": None,
        "is_enterprise_install": False,
        "actions": [action],
    }
    if view is not None:
        payload["container"] = {"type": "view", "view_id": view.get("id", "V0VIEW")}
        payload["view"] = view
        payload["state"] = view.get("state", {"values": {}})
    else:
        ts = message_ts or (message or {}).get("ts") or "1700000000.000100"
        payload["container"] = {
            "type": "message",
            "message_ts": ts,
            "channel_id": channel_id,
            "is_ephemeral": False,
        }
        payload["channel"] = {"id": channel_id, "name": channel_name}
        payload["message"] = message or {"type": "message", "ts": ts, "text": "", "bot_id": BOT_ID}
        payload["state"] = {"values": {}}
    if response_url is not None:
        payload["response_url"] = response_url
    return payload


def block_suggestion_payload(
    *,
    action_id: str,
    value: str,
    block_id: str = "block",
    view: JSONDict | None = None,
    user_id: str = "U0MANAGER",
    user_name: str = "manager",
    team_id: str = "T0TEAM",
) -> JSONDict:
    """A ``block_suggestion`` (options load for an ``external_select`` in a modal)."""
    full_view = view or _view_payload(
        None, view_id="V0VIEW", callback_id="", private_metadata="", values={}, team_id=team_id
    )
    return {
        "type": "block_suggestion",
        "user": _user_obj(user_id, user_name, team_id),
        "container": {"type": "view", "view_id": full_view.get("id", "V0VIEW")},
        "api_app_id": APP_ID,
        "token": VERIFICATION_TOKEN,
        "action_id": action_id,
        "block_id": block_id,
        "value": value,
        "team": _team(team_id),
        "enterprise": None,
        "is_enterprise_install": False,
        "view": full_view,
    }
