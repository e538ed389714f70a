"""How the bot logs in to Evo Voice: HTTP Basic on every request, else a session from
``POST /auth/credentials``.

The evidence (docs/evovoice-api.md, Authentication, *likely*) names two equivalent ways, and
nothing public says which a server enables: HTTP Basic needs ServiceStack's Basic provider, while
the vendor's own CLI only ever signs in with ``/auth/credentials`` and sends the session's cookies
(``ss-id``/``ss-pid``), signing in again after a 401. A server that doesn't read Basic answers as
it answers a wrong password (``/auth/status``: no session; other routes: 401).

So the client starts with Basic, which keeps no state, and when a request is refused for want of a
login it signs in with its username and password: if that works, the session's cookies replace the
Basic header from then on, and the refused request is sent again. ServiceStack refuses a request
that needs a login before the service runs, so sending it again can't ring anyone twice. A session
that expires later is renewed the same way. If the sign-in is refused too, the login is wrong
(BadLogin, as before); the next sign-in waits ``SIGN_IN_PAUSE_SECONDS``, so a changed password is
not tried again on every poll. A sign-in Evo Voice fails to answer (a 5xx, a 429, no answer) says
nothing about the login: the request fails as Evo Voice failing (``SignInFailed``), and the next
one signs in again at once. One sign-in at a time: requests refused meanwhile wait for it, and sign
in themselves should it be cancelled before an answer.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable
from http.cookies import CookieError, SimpleCookie
from json import dumps as json_dumps

import httpx

from bot.evovoice.errors import EvoVoiceError, EvoVoiceUnreachable, status_error

logger = logging.getLogger("bot.evovoice.client")

CREDENTIALS_PATH = "/auth/credentials"
SIGN_IN_PAUSE_SECONDS = 30.0


def basic_authorization(username: str, password: str) -> str:
    """The `Authorization` header of HTTP Basic, as httpx.BasicAuth writes it (UTF-8)."""
    credentials = f"{username}:{password}".encode()
    return f"Basic {base64.b64encode(credentials).decode('ascii')}"


def encode_json(body: dict[str, str] | dict[str, object]) -> bytes:
    """A JSON body byte for byte as httpx encodes `json=`."""
    return json_dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def credentials_body(username: str, password: str) -> dict[str, object]:
    """What the vendor's CLI posts to sign in (``rememberMe``: a session that lasts)."""
    return {"provider": "credentials", "userName": username, "password": password,
            "rememberMe": True}


def session_cookies(response: httpx.Response) -> str | None:
    """The ``Cookie`` header that carries the session a sign-in answered with; None without one.

    Every cookie the answer sets is kept (a load balancer's affinity cookie among them), so long as
    it holds ``ss-id`` or ``ss-pid``, ServiceStack's session ids."""
    cookies: dict[str, str] = {}
    for header in response.headers.get_list("set-cookie"):
        parsed: SimpleCookie = SimpleCookie()
        try:
            parsed.load(header)
        except CookieError:
            continue
        # An empty value is a cookie being deleted: nothing to send back.
        cookies.update((name, morsel.value) for name, morsel in parsed.items() if morsel.value)
    if not {"ss-id", "ss-pid"} & cookies.keys():
        return None
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


async def post_credentials(
    transport: httpx.AsyncBaseTransport, url: httpx.URL | str, headers: dict[str, str],
    username: str, password: str, timeouts: dict[str, float | None],
) -> httpx.Response:
    """Send the sign-in (with ``headers``: the client's own, but no Authorization or Cookie)."""
    request = httpx.Request(
        "POST", url, headers=headers | {"Content-Type": "application/json"},
        content=encode_json(credentials_body(username, password)),
        extensions={"timeout": timeouts},
    )
    response = await transport.handle_async_request(request)
    response.request = request
    await response.aread()
    return response


SignIn = Callable[[], Awaitable[httpx.Response]]


class SignInFailed(Exception):
    """Signing in failed for another reason than a refused login: Evo Voice answered ``answer``
    (a 5xx or a 429) or nothing (None). The login may well be right: no pause, no BadLogin."""

    def __init__(self, answer: httpx.Response | None) -> None:
        super().__init__(f"sign-in failed ({answer.status_code if answer else 'no answer'})")
        self.answer = answer

    def as_error(self, password: str) -> EvoVoiceError:
        """The error the request refused for want of a login fails with (nothing was done)."""
        if self.answer is None:
            return EvoVoiceUnreachable(
                "Evo Voice did not answer the bot's sign-in; nothing was done.", attempts=1
            )
        return status_error(self.answer, password)


class _Abandoned(Exception):
    """The sign-in others waited for ended without an answer (its task was cancelled)."""


class Login:
    """Which way the client logs in, and the sign-ins that switch it to (and renew) a session."""

    def __init__(
        self, use_session: Callable[[str], None], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.method = "basic"  # or "credentials", for good once a sign-in worked
        # Bumped by every sign-in that worked: a request sent before it is worth sending again.
        self.generation = 0
        self._use_session = use_session
        self._clock = clock
        self._signing_in: asyncio.Future[bool] | None = None
        self._refused_at: float | None = None

    async def renew(self, seen_generation: int, sign_in: SignIn) -> bool:
        """After a request sent at ``seen_generation`` was refused for want of a login: True when
        a session is in place that it didn't have (send it again), False when none could be had."""
        while self._signing_in is not None and self.generation == seen_generation:
            try:
                return await asyncio.shield(self._signing_in)
            except _Abandoned:
                continue  # nothing refused the login: sign in here (or wait for whoever does)
        if self.generation != seen_generation:
            return True
        if self._refused_at is not None and (
            self._clock() - self._refused_at < SIGN_IN_PAUSE_SECONDS
        ):
            return False
        self._signing_in = asyncio.get_running_loop().create_future()
        try:
            worked = await self._sign_in(sign_in)
        except BaseException as exc:
            done, self._signing_in = self._signing_in, None
            # The requests waiting for it fail as it did; if it was cancelled (its request's task
            # was: an escalation stopped, the bot stopping), nothing refused the login, so they
            # sign in themselves rather than fail as a refused login.
            done.set_exception(exc if isinstance(exc, SignInFailed) else _Abandoned())
            done.exception()  # heard, whether or not anyone waits
            raise
        done, self._signing_in = self._signing_in, None
        done.set_result(worked)
        return worked

    async def _sign_in(self, sign_in: SignIn) -> bool:
        try:
            response = await sign_in()
        except httpx.HTTPError as exc:
            logger.warning("Evo Voice POST %s failed: %s", CREDENTIALS_PATH, type(exc).__name__)
            raise SignInFailed(None) from exc
        cookies = session_cookies(response) if response.is_success else None
        if cookies is None:
            status = response.status_code
            if status >= 500 or status == 429:  # Evo Voice failing, not the login refused
                logger.warning("Evo Voice POST %s -> %d: signing in failed", CREDENTIALS_PATH,
                               status)
                raise SignInFailed(response)
            self._refused_at = self._clock()
            why = ("the login is refused" if status in (400, 401, 403)
                   else "no session cookie in the answer" if response.is_success
                   else "signing in failed")
            logger.warning("Evo Voice POST %s -> %d: %s; next sign-in no sooner than %.0f s",
                           CREDENTIALS_PATH, status, why, SIGN_IN_PAUSE_SECONDS)
            return False
        self._refused_at = None
        self._use_session(cookies)
        self.generation += 1
        if self.method == "basic":
            logger.warning(
                "Evo Voice does not accept HTTP Basic here: signed in with POST %s, and using "
                "its session from now on", CREDENTIALS_PATH,
            )
            self.method = "credentials"
        else:
            logger.info("Evo Voice: signed in again with POST %s", CREDENTIALS_PATH)
        return True
