"""A loopback stand-in for Slack, speaking Slack's real wire protocols.

One aiohttp server on 127.0.0.1 (free port) plays three parts of Slack:

* the **Web API** (``/api/<method>``): point ``AsyncWebClient(base_url=standin.api_url)`` (or
  ``SLACK_API_URL``) at it. Every call is recorded as an :class:`ApiCall`; messages, threads,
  reactions and views are kept as state; failures can be injected with :meth:`SlackStandIn.fail`,
  calls held at a gate with :meth:`SlackStandIn.hold`, every answer delayed by ``latency`` (Slack on
  a bad day), and Slack's per-channel posting limit switched on with
  :meth:`SlackStandIn.limit_posting`.
* **response_url** endpoints (``/response/<id>``): mint one with :meth:`SlackStandIn.response_url`,
  put it in a slash-command or interactive payload, and read what the app posted back.
* **Socket Mode** (``/link/``): ``apps.connections.open`` answers ``ws_url`` with a ticket, which
  expires when a test says (:meth:`SlackStandIn.expire_tickets`); the stand-in sends
  ``hello``, then envelopes (:meth:`SlackStandIn.send_envelope`) and routes the client's acks back
  by ``envelope_id``.

Module-level helpers build what Slack sends to an app: signed HTTP bodies (:func:`sign`,
:func:`slash_command_body`, :func:`interactive_body`) and payloads (:func:`slash_command_payload`,
:func:`message_shortcut_payload`, :func:`global_shortcut_payload`, :func:`block_actions_payload`,
:func:`view_submission_payload`, :func:`block_suggestion_payload`).

Times recorded here (``ApiCall.time``, ``EnvelopeRecord.sent_at`` …) are ``time.monotonic()``,
the same clock as ``asyncio.get_running_loop().time()``.

Nothing here reaches the network beyond the loopback interface.

The package: ``standin.py`` (SlackStandIn and its server), ``core.py`` (state, waits, injected
failures), ``web_api.py`` (dispatch, chat, reactions), ``views.py``, ``people.py`` (users, user
groups, conversations), ``response_urls.py``, ``socket_mode.py``, ``limits.py`` (what Slack
rejects), ``emoji.py`` (the reaction names Slack takes), ``records.py`` (what is recorded),
``payloads.py`` (what Slack sends to an app).
"""

from __future__ import annotations

from bot.standins.slack.limits import (
    ack_problems,
    message_problems,
)
from bot.standins.slack.payloads import (
    block_actions_payload,
    block_suggestion_payload,
    global_shortcut_payload,
    interactive_body,
    message_shortcut_payload,
    sign,
    slash_command_body,
    slash_command_payload,
    view_submission_payload,
)
from bot.standins.slack.records import (
    ApiCall,
    ApiReply,
    EnvelopeRecord,
    Gate,
    JSONDict,
    Message,
    ResponsePost,
    View,
)
from bot.standins.slack.standin import (
    SlackStandIn,
)

__all__ = [
    "ApiCall",
    "ApiReply",
    "EnvelopeRecord",
    "Gate",
    "JSONDict",
    "Message",
    "ResponsePost",
    "SlackStandIn",
    "View",
    "ack_problems",
    "block_actions_payload",
    "block_suggestion_payload",
    "global_shortcut_payload",
    "interactive_body",
    "message_problems",
    "message_shortcut_payload",
    "sign",
    "slash_command_body",
    "slash_command_payload",
    "view_submission_payload",
]
