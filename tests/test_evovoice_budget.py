"""The request budget (bot/evovoice/budget.py) and polls read in batches (bot/evovoice/lookups.py),
against the Evo Voice stand-in; time is a clock the test moves, never waited for."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot.evovoice.budget import Priority, RequestBudget
from bot.evovoice.client import EvoVoiceClient, NotFound, RateLimited
from bot.evovoice.lookups import BATCH_SIZE, MAX_IDS_CHARS
from bot.standins.evovoice import (
    Answered,
    ErrorStatus,
    EvoVoiceStandIn,
    Gated,
    RateLimit,
    Respond,
    TooManyRequests,
)
from tests.budget_clock import BudgetClock
from tests.conftest import until

USER, PASSWORD = "bot@example.com", "secret"
ACCOUNTS = ["acct-1"]


async def admitted(budget: RequestBudget, *priorities: Priority) -> list[int]:
    """Ask for a turn for each priority, in this order; the indexes admitted so far, in order."""
    order: list[int] = []

    async def ask(index: int, priority: Priority) -> None:
        await budget.admit(priority)
        order.append(index)

    for index, priority in enumerate(priorities):
        asyncio.get_running_loop().create_task(ask(index, priority))
    for _ in range(5):
        await asyncio.sleep(0)
    return order


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def turn_awaited(budget: RequestBudget, clock: BudgetClock) -> bool:
    """A request waits for its turn and the budget's timer sleeps on the clock. The timer is a task
    of its own that starts sleeping a moment after the request queued: advancing the clock in
    that moment wakes nobody, and the timer then sleeps a whole turn from the new time."""
    return budget.waiting == 1 and clock.sleepers == 1


# ----------------------------------------------------------------------------------- budget


async def test_routine_requests_wait_for_tokens_and_first_ones_do_not() -> None:
    clock = BudgetClock()
    budget = RequestBudget(60, clock=clock, sleep=clock.sleep)  # a token a second, 5 at once
    assert budget.burst == 5
    order = await admitted(budget, *[Priority.ROUTINE] * 7)
    assert order == [0, 1, 2, 3, 4]  # the burst
    assert budget.waiting == 2
    # A call placed now goes at once, and spends a token the polls would have had.
    order_first = await admitted(budget, Priority.FIRST)
    assert order_first == [0] and budget.waiting == 2
    clock.advance(1)
    await settle()
    assert order == [0, 1, 2, 3, 4] and budget.waiting == 2  # that token paid for the call
    clock.advance(1)
    await settle()
    assert order == [0, 1, 2, 3, 4, 5]
    clock.advance(1)
    await settle()
    assert order == [0, 1, 2, 3, 4, 5, 6] and budget.waiting == 0


async def test_first_requests_go_before_routine_ones_already_waiting() -> None:
    clock = BudgetClock()
    budget = RequestBudget(60, clock=clock, sleep=clock.sleep)
    budget.back_off(10)
    order = await admitted(
        budget, Priority.ROUTINE, Priority.ROUTINE, Priority.FIRST, Priority.ROUTINE,
        Priority.FIRST,
    )
    assert order == [] and budget.paused and budget.waiting == 5  # nobody during a 429's pause
    clock.advance(9)
    await settle()
    assert order == []
    clock.advance(1)
    await settle()
    assert order[:2] == [2, 4]  # the calls first, then the polls in their order
    assert order[2:] == [0, 1, 3]


def pause_left(budget: RequestBudget, clock: BudgetClock) -> int:
    seconds = 0
    while budget.paused:
        clock.advance(1)
        seconds += 1
    return seconds


def test_a_429_without_retry_after_pauses_longer_each_time_until_an_answer() -> None:
    clock = BudgetClock()
    budget = RequestBudget(6000, clock=clock, sleep=clock.sleep)
    pauses = []
    for _ in range(7):
        budget.back_off(None)
        pauses.append(pause_left(budget, clock))
    assert pauses == [2, 4, 8, 16, 32, 60, 60]
    budget.answered()
    budget.back_off(None)
    assert pause_left(budget, clock) == 2


def test_a_retry_after_of_no_time_pauses_as_one_not_given() -> None:
    # `Retry-After: 0`, or a date already past (parsed as 0): no pause at all would let every
    # request meet the limit again at once.
    clock = BudgetClock()
    budget = RequestBudget(6000, clock=clock, sleep=clock.sleep)
    pauses = []
    for _ in range(3):
        budget.back_off(0.0)
        pauses.append(pause_left(budget, clock))
    assert pauses == [2, 4, 8]


def test_a_retry_after_beyond_a_minute_is_read_as_a_minute() -> None:
    clock = BudgetClock()
    budget = RequestBudget(60, clock=clock, sleep=clock.sleep)
    budget.back_off(86400)
    assert pause_left(budget, clock) == 60


def test_a_shorter_retry_after_never_cuts_a_longer_pause_short() -> None:
    clock = BudgetClock()
    budget = RequestBudget(60, clock=clock, sleep=clock.sleep)
    budget.back_off(30)
    budget.back_off(5)  # another request's 429, asking for less
    assert pause_left(budget, clock) == 30


async def test_a_quiet_hour_saves_up_no_more_than_the_burst() -> None:
    clock = BudgetClock()
    budget = RequestBudget(60, clock=clock, sleep=clock.sleep)  # a token a second, 5 at once
    assert await admitted(budget, Priority.ROUTINE) == [0]
    clock.advance(3600)
    # An hour's tokens would let 3,600 polls go at once, and Evo Voice meet them all together.
    assert await admitted(budget, *[Priority.ROUTINE] * 20) == [0, 1, 2, 3, 4]
    budget.close()


async def test_a_burst_of_calls_holds_polls_back_by_the_burst_at_most() -> None:
    clock = BudgetClock()
    budget = RequestBudget(60, clock=clock, sleep=clock.sleep)  # a token a second, 5 at once
    assert await admitted(budget, *[Priority.FIRST] * 20) == list(range(20))
    poll = asyncio.ensure_future(budget.admit(Priority.ROUTINE))
    # Twenty calls went at once; the polls after them wait for the burst to refill, no longer.
    for _ in range(6):
        await settle()
        assert not poll.done()
        clock.advance(1)
    await asyncio.wait_for(poll, 5)


async def test_a_request_cancelled_while_waiting_takes_no_turn() -> None:
    clock = BudgetClock()
    budget = RequestBudget(60, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        await budget.admit(Priority.ROUTINE)
    waiting = asyncio.ensure_future(budget.admit(Priority.ROUTINE))
    later = asyncio.ensure_future(budget.admit(Priority.ROUTINE))
    await settle()
    waiting.cancel()
    await settle()
    clock.advance(1)
    await settle()
    assert later.done() and waiting.cancelled()


# ------------------------------------------------------------------------- batched lookups


@pytest.fixture
async def evo() -> AsyncIterator[EvoVoiceStandIn]:
    standin = EvoVoiceStandIn(username=USER, password=PASSWORD)
    await standin.start()
    yield standin
    await standin.stop()


@pytest.fixture
async def client(evo: EvoVoiceStandIn) -> AsyncIterator[EvoVoiceClient]:
    async with EvoVoiceClient(evo.url, USER, PASSWORD, budget=RequestBudget(6000)) as client:
        yield client


async def poll_all(client: EvoVoiceClient, ids: list[str]) -> list[str]:
    sessions = await asyncio.gather(*(client.poll_session(i, ACCOUNTS) for i in ids))
    return [s.id for s in sessions]


async def test_polls_made_together_are_read_a_batch_a_request(
    evo: EvoVoiceStandIn, client: EvoVoiceClient
) -> None:
    ids = [evo.add_session()["id"] for _ in range(BATCH_SIZE + 5)]
    assert await poll_all(client, ids) == ids
    listings = evo.requests_to("GET", "/sessions")
    assert len(evo.requests) <= 1 + len(ids) // BATCH_SIZE + 1  # not one request a session
    asked = [i for r in listings for i in r.query["specificIds"].split(",")]
    assert sorted(asked) == sorted(ids)
    assert all(len(r.query["specificIds"].split(",")) <= BATCH_SIZE for r in listings)
    assert all(r.query["accountIds"] == "acct-1" for r in listings)
    assert client.polls.batching


async def test_a_session_id_too_long_for_a_batch_is_read_alone_and_holds_up_no_other(
    evo: EvoVoiceStandIn, client: EvoVoiceClient
) -> None:
    # An answer naming a session by an id longer than a batch's URL may hold: it is asked for on
    # its own, and the polls of the others are answered all the same.
    long = evo.add_session(id="sess-" + "9" * MAX_IDS_CHARS)["id"]
    others = [evo.add_session()["id"] for _ in range(3)]
    ids = await asyncio.wait_for(poll_all(client, [long, *others]), 10)
    assert ids == [long, *others]
    listings = [r.query["specificIds"].split(",") for r in evo.requests_to("GET", "/sessions")]
    assert [long] in listings


async def test_a_session_id_holding_a_comma_or_a_slash_is_read_alone(
    evo: EvoVoiceStandIn, client: EvoVoiceClient
) -> None:
    # specificIds is a comma-separated list: "a,b" in it would be two ids, neither of them this.
    odd = evo.add_session(id="sess-1,2")["id"]
    assert await poll_all(client, [odd]) == [odd]
    assert [r.path for r in evo.requests] == [f"/sessions/{odd}"]
    # A slash is part of the id too, never a path segment of its own.
    slashed = evo.add_session(id="sess/3")["id"]
    assert (await client.get_session(slashed)).id == slashed


async def test_a_server_ignoring_specific_ids_is_noticed_and_each_session_read_alone(
    evo: EvoVoiceStandIn, client: EvoVoiceClient
) -> None:
    evo.specific_ids = "ignored"
    others = [evo.add_session(callState="Connected")["id"] for _ in range(30)]  # not ours
    ours = [evo.add_session()["id"] for _ in range(3)]
    evo.set_session_state(ours[1], ended=True, outcome="Completed")
    sessions = await asyncio.gather(*(client.poll_session(i, ACCOUNTS) for i in ours))
    assert [s.id for s in sessions] == ours
    assert [s.ended for s in sessions] == [False, True, False]
    assert not client.polls.batching
    before = len(evo.requests)
    await poll_all(client, ours)
    assert [r.path for r in evo.requests[before:]] == [f"/sessions/{i}" for i in ours]
    assert others  # listed, never taken for ours


async def test_a_session_a_listing_leaves_out_is_read_alone_from_then_on(
    evo: EvoVoiceStandIn, client: EvoVoiceClient
) -> None:
    ids = [evo.add_session()["id"] for _ in range(4)]
    evo.omitted_from_listings.add(ids[2])
    assert await poll_all(client, ids) == ids
    assert client.polls.batching  # the others were listed: batching is kept
    before = len(evo.requests)
    assert await poll_all(client, ids) == ids
    paths = sorted(r.path for r in evo.requests[before:])
    assert paths == ["/sessions", f"/sessions/{ids[2]}"]
    [listing] = [r for r in evo.requests[before:] if r.path == "/sessions"]
    assert ids[2] not in listing.query["specificIds"].split(",")  # no longer asked for there
    gone = "sess-gone"
    with pytest.raises(NotFound):
        await client.poll_session(gone, ACCOUNTS)


async def test_one_unreadable_session_in_a_batch_fails_its_own_poll_only(
    evo: EvoVoiceStandIn, client: EvoVoiceClient
) -> None:
    ids = [evo.add_session()["id"] for _ in range(3)]
    evo.set_session_state(ids[1], ended="perhaps")  # not a boolean: the listing can't be read
    results = await asyncio.gather(
        *(client.poll_session(i, ACCOUNTS) for i in ids), return_exceptions=True
    )
    assert [type(r).__name__ for r in results] == ["Session", "MalformedResponse", "Session"]
    evo.set_session_state(ids[1], ended=False)
    before = len(evo.requests)
    assert await poll_all(client, ids) == ids
    assert [r.path for r in evo.requests[before:]] == ["/sessions"]  # batched again, all three


async def test_small_pages_are_followed(evo: EvoVoiceStandIn, client: EvoVoiceClient) -> None:
    evo.max_page_size = 10
    ids = [evo.add_session()["id"] for _ in range(BATCH_SIZE)]
    assert await poll_all(client, ids) == ids
    assert [r.path for r in evo.requests] == ["/sessions"] * 3  # pages 0, 1 and 2
    assert [r.query["page"] for r in evo.requests] == ["0", "1", "2"]


async def test_each_page_of_a_batch_waits_its_turn(evo: EvoVoiceStandIn) -> None:
    clock = BudgetClock()
    budget = RequestBudget(60, clock=clock, sleep=clock.sleep)  # a token a second, 5 at once
    evo.max_page_size = 10
    ids = [evo.add_session()["id"] for _ in range(BATCH_SIZE)]
    async with EvoVoiceClient(evo.url, USER, PASSWORD, budget=budget) as client:
        for _ in range(5):
            await budget.admit(Priority.ROUTINE)  # the burst spent
        polls = asyncio.ensure_future(poll_all(client, ids))
        for pages in (1, 2, 3):
            clock.advance(1)
            await until(lambda pages=pages: len(evo.requests) >= pages)
            # The next page waits for its token, asleep on the clock till the next advance (the
            # last one: the batch is read), or is sent. Counted waiting, it may not sleep yet,
            # and an advance before it does would be lost on it.
            await until(lambda pages=pages: (budget.waiting == 1 and clock.sleepers == 1)
                        or polls.done() or len(evo.requests) > pages)
            assert len(evo.requests) == pages  # the next page waits for the next token
        assert await asyncio.wait_for(polls, 5) == ids


async def test_a_batch_tried_again_after_a_503_waits_its_turn_again(
    evo: EvoVoiceStandIn,
) -> None:
    clock = BudgetClock()
    budget = RequestBudget(60, clock=clock, sleep=clock.sleep)  # a token a second, 5 at once
    ids = [evo.add_session()["id"] for _ in range(3)]
    evo.queue("GET", "/sessions", ErrorStatus(503))
    async with EvoVoiceClient(evo.url, USER, PASSWORD, budget=budget, sleep=clock.sleep,
                              retry_backoff=0.5) as client:
        for _ in range(5):
            await budget.admit(Priority.ROUTINE)  # the burst spent
        polls = asyncio.ensure_future(poll_all(client, ids))
        clock.advance(1)
        await until(lambda: len(evo.requests) == 1 and clock.sleepers == 1)  # 503: a pause
        clock.advance(0.5)  # the pause is over; half a token earned
        await until(lambda: turn_awaited(budget, clock) or len(evo.requests) > 1)
        assert len(evo.requests) == 1  # the try again waits for a whole token
        clock.advance(0.5)
        assert await asyncio.wait_for(polls, 5) == ids
    assert len(evo.requests) == 2


async def test_a_session_read_without_a_priority_is_routine_and_waits_its_turn(
    evo: EvoVoiceStandIn,
) -> None:
    # An escalation step reads its call at the deadline this way: it shares the budget with the
    # polls (README, EVOVOICE_REQUESTS_PER_MINUTE); only calls and hang-ups go past it.
    clock = BudgetClock()
    budget = RequestBudget(60, clock=clock, sleep=clock.sleep)
    session_id = evo.add_session()["id"]
    async with EvoVoiceClient(evo.url, USER, PASSWORD, budget=budget) as client:
        for _ in range(5):
            await budget.admit(Priority.ROUTINE)  # the burst spent
        read = asyncio.ensure_future(client.get_session(session_id))
        await until(lambda: turn_awaited(budget, clock) or len(evo.requests) > 0)
        assert evo.requests == []
        clock.advance(1)
        assert (await asyncio.wait_for(read, 5)).id == session_id


async def test_a_batch_all_found_asks_for_no_further_page(
    evo: EvoVoiceStandIn, client: EvoVoiceClient
) -> None:
    # A server may say "more pages" of a full page: a batch whose sessions all came is done.
    sessions = [evo.add_session() for _ in range(3)]
    evo.queue("GET", "/sessions", Answered({"items": sessions, "hasMorePages": True}))
    assert await poll_all(client, [s["id"] for s in sessions]) == [s["id"] for s in sessions]
    assert [r.query["page"] for r in evo.requests] == ["0"]


async def test_a_slow_listing_holds_up_no_other_batch(
    evo: EvoVoiceStandIn, client: EvoVoiceClient
) -> None:
    gate = asyncio.Event()
    evo.queue("GET", "/sessions", Gated(gate))
    ids = [evo.add_session()["id"] for _ in range(BATCH_SIZE + 5)]
    polls = [asyncio.ensure_future(client.poll_session(i, ACCOUNTS)) for i in ids]
    await until(lambda: any(p.done() for p in polls))  # the other batch, while one is held
    assert not all(p.done() for p in polls)
    gate.set()
    assert [s.id for s in await asyncio.gather(*polls)] == ids


async def test_small_pages_from_a_server_ignoring_page_end_in_reads_alone(
    evo: EvoVoiceStandIn, client: EvoVoiceClient
) -> None:
    # Paging by `page` is confirmed only as a name (docs/evovoice-api.md): a server may answer
    # the first page to every page. Each session is still read, and the paging stops.
    evo.max_page_size, evo.page_honoured = 10, False
    ids = [evo.add_session()["id"] for _ in range(BATCH_SIZE)]
    assert await poll_all(client, ids) == ids
    listings = evo.requests_to("GET", "/sessions")
    assert [r.query["page"] for r in listings] == ["0", "1"]
    alone = [r.path for r in evo.requests if r.path != "/sessions"]
    # Each left out, read once alone; they are read at once, so they arrive in any order.
    assert sorted(alone) == sorted(f"/sessions/{i}" for i in ids[10:])


async def test_a_server_paging_at_25_whatever_it_is_asked_lists_every_batch_whole(
    evo: EvoVoiceStandIn, client: EvoVoiceClient
) -> None:
    # Lists page at 25 by default (confirmed); a server that ignores both countPerPage and page
    # still lists a whole batch on its one page, and no session is left to be read alone.
    evo.max_page_size, evo.page_honoured = 25, False
    ids = [evo.add_session()["id"] for _ in range(30)]
    assert await poll_all(client, ids) == ids
    assert {r.path for r in evo.requests} == {"/sessions"}
    assert client.polls.batching


async def test_polls_in_different_accounts_are_never_listed_together(
    evo: EvoVoiceStandIn, client: EvoVoiceClient
) -> None:
    # A listing is filtered by its accountIds: a session of another account asked for in it
    # would be left out, then read alone on every poll.
    mine = evo.add_session()["id"]
    theirs = evo.add_session(accountId="acct-2")["id"]
    sessions = await asyncio.gather(client.poll_session(mine, ["acct-1"]),
                                    client.poll_session(theirs, ["acct-2"]))
    assert [s.id for s in sessions] == [mine, theirs]
    listings = evo.requests_to("GET", "/sessions")
    assert sorted((r.query["accountIds"], r.query["specificIds"]) for r in listings) == [
        ("acct-1", mine), ("acct-2", theirs)]
    assert {r.path for r in evo.requests} == {"/sessions"}


async def test_a_listing_refused_as_invalid_stops_batching(
    evo: EvoVoiceStandIn, client: EvoVoiceClient
) -> None:
    ids = [evo.add_session()["id"] for _ in range(3)]
    evo.queue("GET", "/sessions", ErrorStatus(400, "Unknown parameter specificIds"))
    assert await poll_all(client, ids) == ids
    assert not client.polls.batching


async def test_a_listing_refused_for_the_logins_role_stops_batching(
    evo: EvoVoiceStandIn, client: EvoVoiceClient
) -> None:
    # Each operation has a role of its own (docs/evovoice-api.md: hanging up needs "User"): a
    # login may be refused the listing (403) and allowed each session. Every poll failed with it,
    # and each followed call showed "I can't read this call's status" until given up on.
    ids = [evo.add_session()["id"] for _ in range(3)]
    evo.queue("GET", "/sessions", ErrorStatus(403, "Invalid Role"))
    assert await poll_all(client, ids) == ids
    assert not client.polls.batching


@pytest.mark.parametrize("refusal", [ErrorStatus(404, "Session not found"), ErrorStatus(500)],
                         ids=["404", "500"])
async def test_a_listing_answered_404_reads_each_session_alone(
    evo: EvoVoiceStandIn, client: EvoVoiceClient, refusal: ErrorStatus
) -> None:
    # What a listing of specific ids answers when one of them is unknown (a session deleted, or
    # of another account) nothing public says: a 404 for the whole listing is ServiceStack's
    # "not found". It says nothing of the others: each poll of the batch got NotFound, and a
    # call still ringing was given up on as lost. A 500 to the listing (another operation than
    # reading one session) likewise says nothing of each session: they are read alone.
    ids = [evo.add_session()["id"] for _ in range(3)]
    evo.queue("GET", "/sessions", refusal)
    assert await poll_all(client, ids) == ids
    assert sorted(r.path for r in evo.requests)[1:] == sorted(f"/sessions/{i}" for i in ids)
    before = len(evo.requests)
    assert await poll_all(client, ids) == ids  # batched again once listings work
    assert [r.path for r in evo.requests[before:]] == ["/sessions"]


async def test_a_429_to_a_batch_reaches_each_poll_and_pauses_every_request(
    evo: EvoVoiceStandIn,
) -> None:
    clock = BudgetClock()
    budget = RequestBudget(6000, clock=clock, sleep=clock.sleep)
    ids = [evo.add_session()["id"] for _ in range(3)]
    evo.queue("GET", "/sessions", TooManyRequests(retry_after="30"))
    async with EvoVoiceClient(evo.url, USER, PASSWORD, budget=budget) as client:
        results = await asyncio.gather(
            *(client.poll_session(i, ACCOUNTS) for i in ids), return_exceptions=True
        )
        assert all(isinstance(r, RateLimited) and r.retry_after == 30 for r in results)
        assert budget.paused
        flow_list = asyncio.ensure_future(client.list_flows(ACCOUNTS))
        await settle()
        assert not flow_list.done() and len(evo.requests) == 1  # nothing during the pause
        clock.advance(30)
        await asyncio.wait_for(flow_list, 5)
    assert [r.path for r in evo.requests] == ["/sessions", "/flows"]


async def test_the_servers_429s_without_retry_after_pause_longer_each_time_until_an_answer(
    evo: EvoVoiceStandIn,
) -> None:
    clock = BudgetClock()
    budget = RequestBudget(6000, clock=clock, sleep=clock.sleep)
    no_wait = TooManyRequests(retry_after=None)
    evo.queue("GET", "/auth/status", no_wait, no_wait, Respond(), no_wait)
    async with EvoVoiceClient(evo.url, USER, PASSWORD, budget=budget) as client:
        pauses = []
        for _ in range(2):
            with pytest.raises(RateLimited):
                await client.auth_status()
            pauses.append(pause_left(budget, clock))
        await client.auth_status()
        with pytest.raises(RateLimited):
            await client.auth_status()
        pauses.append(pause_left(budget, clock))
    assert pauses == [2, 4, 2]


async def test_the_standin_rate_limit_answers_429_with_its_retry_after(
    evo: EvoVoiceStandIn,
) -> None:
    clock = BudgetClock()
    evo.rate_limit = RateLimit(requests=2, seconds=60, clock=clock)
    async with EvoVoiceClient(evo.url, USER, PASSWORD, budget=RequestBudget(6000)) as client:
        await client.auth_status()
        clock.advance(10)
        await client.auth_status()
        with pytest.raises(RateLimited) as caught:
            await client.list_flows(ACCOUNTS)
    assert caught.value.retry_after == 50
    assert evo.rate_limit.refused == 1


async def test_a_rate_under_one_token_of_burst_still_lets_routine_requests_through() -> None:
    # EVOVOICE_REQUESTS_PER_MINUTE may be as low as 6: a bucket holding half a token would
    # never hold the whole one a poll waits for.
    clock = BudgetClock()
    budget = RequestBudget(6, clock=clock, sleep=clock.sleep)
    assert await admitted(budget, Priority.ROUTINE) == [0]
    order = await admitted(budget, Priority.ROUTINE)
    assert order == []
    clock.advance(10)
    await settle()
    assert order == [0]


async def test_a_turn_given_then_cancelled_before_sending_is_given_back() -> None:
    clock = BudgetClock()
    budget = RequestBudget(60, clock=clock, sleep=clock.sleep)  # a token a second, 5 at once
    assert await admitted(budget, *[Priority.ROUTINE] * 5) == [0, 1, 2, 3, 4]
    poll = asyncio.get_running_loop().create_task(budget.admit(Priority.ROUTINE))
    await settle()
    clock.advance(2)  # two tokens: one for the call below, one for the poll
    await budget.admit(Priority.FIRST)  # hands the poll its turn too, before it runs
    poll.cancel()  # the poll's request was stopped before it was sent
    await settle()
    assert await admitted(budget, Priority.ROUTINE) == [0]  # its token was not spent


async def test_a_pause_is_slept_through_not_spun_on() -> None:
    clock = BudgetClock()
    budget = RequestBudget(60, clock=clock, sleep=clock.sleep)
    budget.back_off(10)
    order = await admitted(budget, Priority.FIRST)
    await settle()
    assert order == [] and clock.next_wake() == clock.now + 10


async def test_a_pause_ending_before_a_routine_token_lets_a_call_go_at_its_end() -> None:
    # A poll waits a minute for a token; a 429 then pauses for 2 s: a call placed meanwhile goes
    # when the pause ends, not when the poll's token comes.
    clock = BudgetClock()
    budget = RequestBudget(1, clock=clock, sleep=clock.sleep)  # a token a minute, 1 at once
    assert await admitted(budget, Priority.ROUTINE) == [0]
    polls = await admitted(budget, Priority.ROUTINE)
    budget.back_off(2)
    calls = await admitted(budget, Priority.FIRST)
    clock.advance(2)
    await settle()
    assert calls == [0] and polls == []
