"""The long-lived services a running bot shares, built once at start-up and handed to listeners.

Start-up is where configuration meets the outside world: the bot's Evo Voice login, its roles and
account, the flow aliases and the default caller ID are all checked here, so a broken set-up stops
the bot with a clear message instead of failing on somebody's first call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import httpx

from slack_sdk.web.async_client import AsyncWebClient

from bot.access import AccessControl, Responders, UserGroups
from bot.audit.history import HistoryService
from bot.audit.trail import AuditLog
from bot.calls.confirmations import Confirmations
from bot.calls.controls import CallControls
from bot.calls.follow import CallFollower, FollowTiming
from bot.calls.limits import CallLimits
from bot.calls.retention import NumberRetention
from bot.calls.service import CallService
from bot.calls.status_posts import STATUS_POST, StatusPosts
from bot.certificates import FIX as CERTIFICATE_FIX
from bot.certificates import untrusted
from bot.calls.status_views import no_ack_outcomes
from bot.calls.store import CallStore
from bot.calls.untold import UntoldRequests
from bot.config import KNOWN_ROLES, ConfigError, DependencyUnavailable, Policy, Settings
from bot.evovoice.catalog import Catalog
from bot.evovoice.client import (
    HANG_UP_ROLE,
    BadLogin,
    EvoVoiceClient,
    EvoVoiceError,
    EvoVoiceUnreachable,
    MalformedResponse,
    cannot_answer_now,
    other_host,
)
from bot.evovoice.simulator import BANNER
from bot.oncall.escalation import EscalationService
from bot.oncall.escalation_store import EscalationStore
from bot.oncall.roster import OnCall, Overrides, PhoneBook
from bot.ops.metrics import Metrics
from bot.ops.policy_checks import first_policy_problem
from bot.slack.modals import origin_of
from bot.slack.notify import Notifier
from bot.slack.outbox import Outbox
from bot.storage.claims import Claims
from bot.storage.database import Database
from bot.storage.leases import Leases
from bot.tasks import BackgroundTasks

logger = logging.getLogger(__name__)

# Where the Evo Voice API is (the vendor's CLI), for the words that ask to check EVOVOICE_URL.
API_HOSTS = "production https://evovoice.io, staging https://team.evovoice.io"

HELP_BUDGET_SECONDS = 1.0


@dataclass
class Services:
    settings: Settings
    policy: Policy
    evo: EvoVoiceClient
    catalog: Catalog
    access: AccessControl
    groups: UserGroups
    notifier: Notifier
    calls: CallService
    tasks: BackgroundTasks
    account_ids: list[str]
    db: Database
    oncall: OnCall
    audit: AuditLog
    follower: CallFollower
    controls: CallControls
    history: HistoryService
    escalations: EscalationService
    leases: Leases
    responders: Responders
    outbox: Outbox
    # One for the process: on PostgreSQL it clears expired claims at most once a minute.
    claims: Claims
    # Questions (abroad, repeat) waiting for their answer; what expires is erased.
    confirmations: Confirmations
    # Requests whose replica stopped after taking them and before dialling: their requesters told.
    untold: UntoldRequests
    metrics: Metrics = field(default_factory=Metrics)
    # How long `/call help` waits to learn the asker's roles before listing everything instead
    # (the help is the ack, due within Slack's 3 s).
    help_budget_seconds: float = HELP_BUDGET_SECONDS

    @property
    def trusted_origins(self) -> list[str]:
        """Where a response_url may point besides Slack's own hosts: SLACK_API_URL's origin (a
        proxy, or the stand-in in tests)."""
        return self.notifier.trusted_origins


async def login_works_at(settings: Settings) -> str | None:
    """The other Evo Voice host, if the bot's login works there (EVOVOICE_OTHER_URL, else the
    other of evovoice.io and team.evovoice.io); None if it doesn't or there is none to try."""
    url = settings.evovoice_other_url or other_host(settings.evovoice_url)
    if url is None or url.rstrip("/") == settings.evovoice_url.rstrip("/"):
        return None
    async with EvoVoiceClient(
        url, settings.evovoice_username, settings.evovoice_password.get_secret_value(),
        timeout=httpx.Timeout(settings.evovoice_timeout, connect=5.0), connect_retries=1,
    ) as other:
        try:
            await other.auth_status()
        except EvoVoiceError:
            return None
    return url


def refused_login_problem(settings: Settings, works_at: str | None) -> str:
    if works_at is not None:
        return (
            f"EVOVOICE_URL: Evo Voice at {settings.evovoice_url} refused the login, but it works "
            f"at {works_at}: set EVOVOICE_URL={works_at}"
        )
    return (
        f"EVOVOICE_USERNAME / EVOVOICE_PASSWORD / EVOVOICE_URL: Evo Voice at "
        f"{settings.evovoice_url} refused the login; check the username and password (the bot "
        "logs in as an ordinary Evo Voice user) and that EVOVOICE_URL is the host the login "
        f"belongs to ({API_HOSTS})"
    )


async def choose_account(evo: EvoVoiceClient, settings: Settings) -> str:
    """Check the bot's own Evo Voice login and pick its account; ConfigError says what to fix.

    Also sets how the client hangs up: EndSession needs the role User, PatchSession doesn't.
    """
    try:
        status = await evo.auth_status()
    except BadLogin:
        works_at = await login_works_at(settings)
        raise ConfigError([refused_login_problem(settings, works_at)]) from None
    except EvoVoiceUnreachable as exc:
        refused = untrusted(settings.evovoice_url, exc)
        raise DependencyUnavailable([
            f"EVOVOICE_URL: {refused}; {CERTIFICATE_FIX}" if refused is not None else
            f"EVOVOICE_URL: cannot connect to {settings.evovoice_url}; check the URL and the "
            "network"
        ]) from None
    except EvoVoiceError as exc:
        raise start_up_error(exc, f"EVOVOICE_URL: GET /auth/status failed: {exc.message}") from None
    evo.hang_up_method = "DELETE" if HANG_UP_ROLE in status.roles else "PATCH"
    if not set(status.roles).intersection(KNOWN_ROLES):
        raise ConfigError([
            f"EVOVOICE_USERNAME: the Evo Voice user {settings.evovoice_username!r} lacks the "
            "Manager or SystemAdministrator role, which placing calls requires; "
            "grant it in Evo Voice"
        ])
    # Names are only labels: a shorter (or missing) list must not drop an account from the choice.
    names = list(status.account_names)
    accounts = {
        aid: names[i] if i < len(names) and names[i] else aid
        for i, aid in enumerate(status.account_ids)
    }
    listing = ", ".join(f"{aid} ({name})" for aid, name in accounts.items())
    if settings.evovoice_account_id is not None:
        if settings.evovoice_account_id not in accounts:
            raise ConfigError([
                f"EVOVOICE_ACCOUNT_ID: {settings.evovoice_account_id!r} is not an account this "
                f"login reaches; it reaches: {listing or 'none'}"
            ])
        return settings.evovoice_account_id
    if len(accounts) == 1:
        return next(iter(accounts))
    if not accounts:
        raise ConfigError(["EVOVOICE_USERNAME: the login reaches no Evo Voice account"])
    raise ConfigError([
        f"EVOVOICE_ACCOUNT_ID: the login reaches several accounts; set it to one of: {listing}"
    ])


def start_up_error(exc: EvoVoiceError, problem: str) -> ConfigError:
    """Evo Voice failing (unreachable, slow, 5xx, 429, an answer that is not its API's) is waited
    for, as the flows catalog waits it out (`cannot_answer_now`): exiting on a vendor's
    maintenance page would restart the bot into it until its supervisor gave up. Any other
    answer is a problem with the set-up. An unreadable answer may also be a web site's where
    EVOVOICE_URL names no API: said, for an operator to fix while the bot waits."""
    if isinstance(exc, MalformedResponse):
        problem += (" A maintenance page passes on its own; if this lasts, check that "
                    f"EVOVOICE_URL is the Evo Voice API ({API_HOSTS}).")
    return DependencyUnavailable([problem]) if cannot_answer_now(exc) else ConfigError([problem])


async def check_policy_against_account(catalog: Catalog, policy: Policy) -> None:
    """The policy file against the account, as `callbot check` checks it: the first ✗ stops
    start-up (ConfigError); EvoVoiceError when the account can't be read."""
    problem = await first_policy_problem(catalog, policy, "the policy file")
    if problem is not None:
        raise ConfigError([problem.as_problem()])


async def build_services(
    settings: Settings,
    policy: Policy,
    slack: AsyncWebClient,
    evo: EvoVoiceClient,
    db: Database,
    metrics: Metrics | None = None,
    retention: NumberRetention | None = None,
    leases: Leases | None = None,
) -> Services:
    """`leases`: this replica's, its heartbeat already kept (bot/runtime.py); else new ones."""
    metrics = metrics or Metrics()
    account_id = await choose_account(evo, settings)
    account_ids = [account_id]
    catalog = Catalog(evo, account_ids, policy.flows)
    try:
        await check_policy_against_account(catalog, policy)
    except EvoVoiceError as exc:
        raise start_up_error(
            exc, f"EVOVOICE_URL: reading flows and numbers failed: {exc.message}"
        ) from None
    groups = UserGroups(slack)
    access = AccessControl(policy.roles, groups)
    responders = Responders(access, groups, slack, policy.oncall)
    notifier = Notifier(slack, banner=BANNER if settings.evovoice_mode == "simulate" else None,
                        trusted_origins=[origin_of(settings.slack_api_url)])
    key = settings.audit_hash_key
    audit = await AuditLog.open(
        db, key.get_secret_value() if key else None, default_region=policy.default_region,
        spool=settings.audit_spool_path,
    )
    leases = leases or Leases(db, lease_seconds=settings.lease_seconds)
    # A call that connected was picked up by a person or a voicemail: only an outcome the flow
    # sets after "press 1" (`[oncall] ack_outcomes`, as escalations read it) says a person heard.
    acknowledges = policy.oncall.is_ack_outcome if policy.oncall else no_ack_outcomes
    follower = CallFollower(
        evo=evo,
        notifier=notifier,
        store=CallStore(db),
        audit=audit,
        account_ids=account_ids,
        timing=follow_timing(settings),
        leases=leases,
        acknowledges=acknowledges,
        retention=retention,
    )
    # A call's status message and an escalation's thread posts are kept until delivered.
    outbox = Outbox(db, notifier, leases)
    claims = Claims(db)
    confirmations = Confirmations(db, audit=audit)  # each question's end in the audit trail
    untold = UntoldRequests(claims, notifier, leases, audit)
    notifier.outbox = outbox
    outbox.belongs_to(STATUS_POST, StatusPosts(follower))
    calls = CallService(
        access=access,
        catalog=catalog,
        evo=evo,
        notifier=notifier,
        claims=claims,
        dial_policy=policy.dial_policy,
        default_caller_id=policy.default_caller_id,
        account_ids=account_ids,
        audit=audit,
        follower=follower,
        on_result=metrics.call_finished,
        limits=CallLimits(
            db,
            per_user=policy.rules.per_user,
            per_number=policy.rules.per_number,
            per_day=policy.rules.per_day,
            repeat_window=policy.rules.repeat_window,
            hasher=audit.hasher,
        ),
        confirmations=confirmations,
        untold=untold,
        confirm_outside=policy.confirm_outside,
        on_limit=metrics.rate_limit_refused,
    )
    phones = PhoneBook(slack, policy.people, policy.dial_policy)
    controls = CallControls(
        store=follower.store,
        follower=follower,
        calls=calls,
        access=access,
        evo=evo,
        catalog=catalog,
        audit=audit,
        notifier=notifier,
        own_number=phones.e164_of,  # what a test call's Call again may ring
    )
    history = HistoryService(
        access=access,
        audit=audit,
        notifier=notifier,
        slack=slack,
        default_region=policy.default_region,
        acknowledges=acknowledges,
    )
    oncall = OnCall(
        policy.oncall,
        phones=phones,
        overrides=Overrides(db),
    )
    escalations = EscalationService(
        store=EscalationStore(db),
        oncall=oncall,
        calls=calls,
        callstore=follower.store,
        follower=follower,
        evo=evo,
        notifier=notifier,
        claims=claims,
        access=access,
        responders=responders,
        audit=audit,
        # A chain reads its call's row (kept up to date by the follower) as often as that is polled.
        check_every=settings.call_poll_seconds,
        on_finished=metrics.escalation_finished,
        on_paged=metrics.oncall_paged,
        on_acknowledged=metrics.oncall_acknowledged,
        leases=leases,
    )
    return Services(
        settings=settings,
        policy=policy,
        evo=evo,
        catalog=catalog,
        access=access,
        groups=groups,
        notifier=notifier,
        calls=calls,
        tasks=BackgroundTasks(),
        account_ids=account_ids,
        db=db,
        oncall=oncall,
        audit=audit,
        follower=follower,
        controls=controls,
        history=history,
        escalations=escalations,
        leases=leases,
        responders=responders,
        outbox=outbox,
        claims=claims,
        confirmations=confirmations,
        untold=untold,
        metrics=metrics,
    )


def follow_timing(settings: Settings) -> FollowTiming:
    return FollowTiming(
        first_interval=settings.call_poll_seconds,
        max_interval=settings.call_poll_max_seconds,
        find_for=settings.call_find_seconds,
        follow_for=settings.call_follow_max_minutes * 60,
    )
