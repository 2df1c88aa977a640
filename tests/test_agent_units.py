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

        async def work() -> str:
            nonlocal cancelled
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled = True
                raise
            return "never"

        async def stopped() -> bool:
            return started.is_set()

        with pytest.raises(AnswerStopped):
            await until_stopped(work(), stopped, interval=0.01)
        return cancelled, started.is_set()

    assert asyncio.run(run()) == (True, True)


def test_until_stopped_returns_what_finished_work_gave() -> None:
    async def run() -> str:
        async def work() -> str:
            return "answer"

        async def never() -> bool:
            return False

        return await until_stopped(work(), never, interval=0.01)

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

        async def never() -> bool:
            return False

        outer = asyncio.create_task(until_stopped(work(), never, interval=0.01))
        await inner_started.wait()
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        return inner_cancelled.is_set()

    assert asyncio.run(run())
