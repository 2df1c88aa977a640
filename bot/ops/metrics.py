"""The bot's Prometheus metrics, in a registry of their own per `Bot` (never prometheus-client's global
one), so several bots in one process, and tests, never share counts.

Instrumentation points call the small methods below; `GET /metrics` serves `render()`. Labels are bounded:
outcomes and error kinds are fixed names, Slack's error codes and method names come from a closed set.
"""

from __future__ import annotations

import math
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

PREFIX = "slack_assistant"
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

# Acks must stay far inside Slack's 3 s; answers take seconds to minutes.
ACK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0)
TURN_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)

# How a turn ended (`slack_assistant_turns_total{outcome}`).
OUTCOMES = ("answered", "failed", "given_up", "interrupted", "reset", "reset_failed")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._turns = Counter(f"{PREFIX}_turns", "Turns run, by how they ended.", ["outcome"], registry=r)
        self._submitted = Counter(
            f"{PREFIX}_messages", "User messages offered to the queue, by result.", ["result"], registry=r
        )
        self._ack = Histogram(
            f"{PREFIX}_ack_seconds",
            "Time to ack a Slack request (listener).",
            buckets=ACK_BUCKETS,
            registry=r,
        )
        self._first_text = Histogram(
            f"{PREFIX}_first_text_seconds",
            "From a message's arrival to the first text of its answer in Slack.",
            buckets=TURN_BUCKETS,
            registry=r,
        )
        self._completion = Histogram(
            f"{PREFIX}_turn_seconds",
            "From a message's arrival to the end of its turn.",
            ["outcome"],
            buckets=TURN_BUCKETS,
            registry=r,
        )
        self._openai_errors = Counter(
            f"{PREFIX}_openai_errors", "OpenAI API errors, by kind.", ["kind"], registry=r
        )
        self._slack_errors = Counter(
            f"{PREFIX}_slack_errors",
            "Slack Web API errors (ok: false, HTTP errors, no answer), by method and error.",
            ["method", "error"],
            registry=r,
        )
        self._slack_429 = Counter(
            f"{PREFIX}_slack_rate_limited", "HTTP 429 answers from Slack, by method.", ["method"], registry=r
        )
        self._tokens = Counter(
            f"{PREFIX}_tokens", "Tokens used, from each response's usage.", ["kind"], registry=r
        )
        self._queue_depth = Gauge(
            f"{PREFIX}_queue_depth", "Unfinished turns in the queue (every workspace).", registry=r
        )
        self._queue_oldest = Gauge(
            f"{PREFIX}_queue_oldest_seconds", "Age of the oldest unfinished turn (0: none).", registry=r
        )
        self._redis_up = Gauge(f"{PREFIX}_redis_up", "1 when the last scrape could read Redis.", registry=r)
        self._feedback = Counter(
            f"{PREFIX}_feedback",
            "Clicks on answers' feedback buttons, by rating and result (new, changed: a person's rating of "
            "an answer moved to the other side, repeated: the same again, counted nowhere else, refused).",
            ["rating", "result"],
            registry=r,
        )
        self._feedback_comments = Counter(
            f"{PREFIX}_feedback_comments", "Comments stored with a thumbs-down.", registry=r
        )
        self._approvals = Counter(
            f"{PREFIX}_mcp_approvals",
            "MCP tool calls' approval requests, by how each ended (approved, denied, timed_out) or how a "
            "click was refused (not_yours, already, gone).",
            ["result"],
            registry=r,
        )
        for outcome in OUTCOMES:  # present from the start, so rate() sees the first one
            self._turns.labels(outcome)
        for kind in ("input", "output"):
            self._tokens.labels(kind)

    # ---- instrumentation points --------------------------------------------------------------------

    def ack(self, seconds: float) -> None:
        self._ack.observe(seconds)

    def submitted(self, result: str) -> None:
        self._submitted.labels(result).inc()

    def turn_done(self, outcome: str, received_at: float) -> None:
        """A turn ended; `received_at` is its message's arrival (epoch seconds)."""
        self._turns.labels(outcome).inc()
        self._completion.labels(outcome).observe(_since(received_at))

    def first_text(self, received_at: float) -> None:
        self._first_text.observe(_since(received_at))

    def openai_error(self, kind: str) -> None:
        self._openai_errors.labels(kind).inc()

    def slack_error(self, method: str, error: str) -> None:
        self._slack_errors.labels(method, error).inc()

    def slack_rate_limited(self, method: str) -> None:
        self._slack_429.labels(method).inc()

    def tokens(self, *, input: int, output: int) -> None:
        """The tokens an ended response used (its `usage`)."""
        self._tokens.labels("input").inc(max(0, input))
        self._tokens.labels("output").inc(max(0, output))

    def feedback(self, rating: str, result: str) -> None:
        """A click on an answer's feedback buttons (`rating` good or bad; `result` see the counter)."""
        self._feedback.labels(rating, result).inc()

    def approval(self, result: str) -> None:
        """An approval request ended (`approved`, `denied` by a click, `timed_out`) or a click was refused."""
        self._approvals.labels(result).inc()

    def feedback_comment(self) -> None:
        self._feedback_comments.inc()

    def queue(self, depth: int | None, oldest_seconds: float = 0.0) -> None:
        """The queue as read at scrape time; None: Redis could not be read (the gauges say NaN)."""
        self._redis_up.set(0 if depth is None else 1)
        self._queue_depth.set(math.nan if depth is None else depth)
        self._queue_oldest.set(math.nan if depth is None else oldest_seconds)

    # ---- the endpoint ------------------------------------------------------------------------------

    def render(self) -> bytes:
        """The registry in Prometheus' text format (`CONTENT_TYPE`)."""
        return generate_latest(self.registry)


def _since(epoch: float) -> float:
    # Another replica may have stamped it: a clock slightly ahead must not give a negative duration.
    return max(0.0, time.time() - epoch)
