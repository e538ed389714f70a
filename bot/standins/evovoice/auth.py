"""Who a request to the Evo Voice stand-in comes from (docs/evovoice-api.md, Authentication).

Two ways to log in, both *likely*: HTTP Basic on every request, or ``POST /auth/credentials``
(``{"provider": "credentials", "userName", "password", "rememberMe"}``) whose answer sets the
session's cookies, sent afterwards; "log in again after a 401". The vendor's CLI only ever uses the
second. Which a server enables is not public, so ``basic_enabled = False`` tries a server that
doesn't read Basic: it then answers a Basic login as ServiceStack answers no login at all.

ServiceStack keeps a session under ``ss-id``, or under ``ss-pid`` when the sign-in asked to be
remembered (it then sets ``ss-opt=perm``): a client must send back the cookies it was given.
``Logins.expire()`` ends every session, as a server restart or a session's expiry does.
"""

from __future__ import annotations

import base64
import itertools
from typing import Any, Protocol

from aiohttp import web

from bot.standins.evovoice.behaviours import error

_REFUSED = "Invalid UserName or Password"
# Default User-Agents of curl and of HTTP libraries: the vendor warns the server rejects curl.
_REJECTED_AGENTS = ("curl/", "python-httpx/", "python-requests/", "python/", "aiohttp/", "wget/")


def refused_agent(request: web.Request) -> web.Response | None:
    """The 403 for a client the server turns away by its User-Agent; None for others."""
    agent = request.headers.get("User-Agent", "")
    if not agent or agent.lower().startswith(_REJECTED_AGENTS):
        return error(403, "Forbidden", "Access denied")
    return None


def refused_method(request: web.Request, refused: dict[str, int]) -> web.Response | None:
    """The answer of a front end that turns ``request``'s method away (``refused``: method →
    status), before the server sees it; None for others. IIS's WebDAV module answers DELETE and
    PUT 405, an older IIS 501: a plain page, no ServiceStack error body, no role named."""
    status = refused.get(request.method)
    if status is None:
        return None
    return web.Response(status=status, text=f"{status} The HTTP verb used is not allowed.")


def invalid_role(refusal: str) -> web.Response:
    """The 403 for a login lacking the role a route requires: "Invalid Role" in a ServiceStack
    error body, or (``refusal="status_line"``) in the status line alone, with no body, as
    ServiceStack's role attributes answered before they wrote an error body (StatusDescription,
    then EndRequest)."""
    if refusal == "status_line":
        return web.Response(status=403, reason="Invalid Role")
    return error(403, "Forbidden", "Invalid Role")


def basic_login(request: web.Request) -> tuple[str, str] | None:
    """The (username, password) of the request's HTTP Basic header; None without a readable one."""
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except ValueError:
        return None
    return user, password


def no_login(request: web.Request, refused_login: str) -> web.Response:
    """The answer to a request that carries no login the server reads."""
    if request.path == "/auth/status" and request.method == "GET":
        # No [Authenticate] on AuthStatus: a failed login is "no session".
        if refused_login == "no_content":
            return web.Response(status=204)
        return web.json_response({"isAuthenticated": False})
    return error(401, "Unauthorized", _REFUSED)


class Account(Protocol):
    """The one login the stand-in knows."""

    username: str
    password: str
    user_id: str


class Logins:
    """The sessions ``POST /auth/credentials`` handed out that are still live."""

    def __init__(self) -> None:
        self.live: set[str] = set()
        self.signed_in = 0  # sign-ins that worked
        self._ids = itertools.count(1)

    def holds(self, request: web.Request) -> bool:
        cookies = request.cookies
        key = cookies.get("ss-pid") if cookies.get("ss-opt") == "perm" else cookies.get("ss-id")
        return key is not None and key in self.live

    def expire(self) -> None:
        self.live.clear()

    def sign_in(self, body: dict[str, Any] | web.Response, login: Account) -> web.Response:
        """The answer to ``POST /auth/credentials`` with ``body`` (``json_object``'s reading)."""
        if isinstance(body, web.Response):
            return body
        if body.get("provider", "credentials") != "credentials" or (
            body.get("userName"), body.get("password")
        ) != (login.username, login.password):
            return error(401, "Unauthorized", _REFUSED)
        n = next(self._ids)
        temporary, permanent = f"standin-temp-{n}", f"standin-perm-{n}"
        remembered = body.get("rememberMe") is True
        self.live.add(permanent if remembered else temporary)
        self.signed_in += 1
        response = web.json_response(
            {"userId": login.user_id, "sessionId": temporary, "userName": login.username}
        )
        for name, value in (("ss-id", temporary), ("ss-pid", permanent),
                            ("ss-opt", "perm" if remembered else "temp")):
            response.set_cookie(name, value, path="/", httponly=True, samesite="Lax")
        return response
