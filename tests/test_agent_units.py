"""Units of issue 15's agent sessions and thinking steps: session titles, step chunks, `until_stopped`."""

from __future__ import annotations

import asyncio

import pytest

from bot.assistant.backend import Step, StepSource
from bot.errors import AnswerStopped
from bot.slack.sessions import TITLE_CHARS, session_title
from bot.turns.steps import FIELD_MAX, Steps, plan_chunk, task_chunk
from bot.turns.stops import until_stopped


def test_session_titles_read_like_the_question() -> None:
    assert (
        session_title("What is the capital of [France](https://fr.example)?")
        == "What is the capital of France?"
    )
    assert session_title("<@U0BOB>   can you\n\nhelp?") == "can you help?"
    assert session_title("<@U0BOB>") == ""
    long = session_title("word " * 100)
    assert len(long) <= TITLE_CHARS and long.endswith("…") and "  " not in long
    assert "<" not in session_title("a <b> c < d >")


def test_steps_become_task_chunks_within_bounds() -> None:
    step = Step(
        "ws_1", "Searching the web", "complete", (StepSource("https://example.com/a", "example.com"),)
    )
    assert task_chunk(step) == {
        "type": "task_update",
        "id": "ws_1",
        "title": "Searching the web",
        "status": "complete",
        "sources": [{"type": "url", "url": "https://example.com/a", "text": "example.com"}],
    }
    assert "sources" not in task_chunk(Step("c1", "Calling x", "pending"))
    assert len(task_chunk(Step("c1", "t" * 1000, "error"))["title"]) == FIELD_MAX
    assert plan_chunk("p" * 1000) == {"type": "plan_update", "title": "p" * FIELD_MAX}
    steps = Steps()
    assert not steps.add(Step("a", "A", "pending"))
    assert not steps.add(Step("a", "A", "complete"))  # an update of the same step
    assert steps.add(Step("b", "B", "in_progress"))  # the second step: the plan gets its title
    assert not steps.add(Step("c", "C", "in_progress")) and steps.several


def test_until_stopped_cancels_the_work_on_a_stop() -> None:
    async def run() -> tuple[bool, bool]:
        started = asyncio.Event()
        cancelled = False

        stopped = asyncio.Event()

        async def work() -> str:
            nonlocal cancelled
            started.set()
            stopped.set()  # the stop arrives while the work runs
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled = True
                raise
            return "never"

        with pytest.raises(AnswerStopped):
            await until_stopped(work(), stopped)
        return cancelled, started.is_set()

    assert asyncio.run(run()) == (True, True)


def test_until_stopped_returns_what_finished_work_gave() -> None:
    async def run() -> str:
        async def work() -> str:
            return "answer"

        return await until_stopped(work(), asyncio.Event())

    assert asyncio.run(run()) == "answer"


def test_until_stopped_passes_its_own_cancellation_on_to_the_work() -> None:
    async def run() -> bool:
        inner_cancelled, inner_started = asyncio.Event(), asyncio.Event()

        async def work() -> None:
            inner_started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                inner_cancelled.set()
                raise

        outer = asyncio.create_task(until_stopped(work(), asyncio.Event()))
        await inner_started.wait()
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        return inner_cancelled.is_set()

    assert asyncio.run(run())


def test_one_stop_watch_sees_the_stopped_turn_of_a_workspace_and_no_other(redis_url: str) -> None:
    """The front marks a running turn stopped; the worker's watch (one poll for all its turns, real Redis)
    sets that turn's event only: not its neighbour's in the same workspace, nor another workspace's."""
    import redis.asyncio as aioredis

    from bot.models import Workspace
    from bot.turns.stops import Stops, StopWatch

    acme, globex = Workspace(team_id="T0ACME"), Workspace(team_id="T0GLOBEX")

    async def run() -> tuple[list[bool], bool, set[str]]:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        await client.flushdb()
        stops = Stops(client)
        watch = StopWatch(client, interval=0.01)
        for ws, turn_id, thread in ((acme, "t1", "1.1"), (acme, "t2", "2.2"), (globex, "t1", "1.1")):
            await client.hset(ws.keys.turn(turn_id), "attempts", "1")
            await stops.running(ws.keys, "C0", thread, turn_id)
        with (
            watch.watching(acme.keys, "t1") as a1,
            watch.watching(acme.keys, "t2") as a2,
            watch.watching(globex.keys, "t1") as g1,
        ):
            marked = await stops.request(acme, "C0", "1.1")
            await asyncio.wait_for(a1.wait(), timeout=30)
            await asyncio.sleep(0.05)  # a few more polls: nothing else is set
            seen = [a1.is_set(), a2.is_set(), g1.is_set()]
        stopping = set(await client.zrange(acme.keys.stopping(), 0, -1))
        await client.aclose()
        return seen, marked, stopping

    seen, marked, stopping = asyncio.run(run())
    assert marked and seen == [True, False, False]
    assert stopping == {"t1"}
