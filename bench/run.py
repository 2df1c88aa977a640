"""What the bot itself costs per turn, measured.

    uv run python bench/run.py            # full run (a few minutes), prints a table
    uv run python bench/run.py --quick    # tiny load, seconds (the test suite runs this)

The bot runs as real processes, by default the scaled-out shape: one `slack-assistant --http` front that
only acks and queues (WORKER_CONCURRENCY=0) and `--workers N` `slack-assistant worker` processes that run the
turns (`--workers 0`: one process does both), against the fake Slack and fake OpenAI from tests/fakes (model
latency and token rate configurable) and a real, throwaway redis-server. The driver sends signed Slack events
over HTTP. CPU and peak RSS are summed over the bot's processes. Figures go to stdout, JSON to
`bench/out/results.json` and a plot of latency against load to `bench/out/latency.png` (or `--out DIR`).

"Added latency" is the bot's own share: the time from the fake model emitting its first token (or its
completion) to the bot's first Slack call showing text (chat.startStream), or its chat.stopStream.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import redis
from slack_sdk.signature import SignatureVerifier

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.openai_api import FakeOpenAI, Reply  # noqa: E402
from tests.fakes.slack_api import FakeSlack  # noqa: E402
from tests.harness import (  # noqa: E402
    BOT_USER,
    DEFAULT_SHAPE_VARS,
    SIGNING_SECRET,
    TEAM,
    BotProcess,
    RedisServer,
    bot_env,
)
from tests.redis_topologies import RedisClusterServers  # noqa: E402

ACK_DEADLINE_S = 3.0  # Slack retries an event not acked within 3 s


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


@dataclass
class Result:
    scenario: str
    load: str
    turns: int
    acked: int = 0
    ack_p50_ms: float = 0.0
    ack_p99_ms: float = 0.0
    ack_max_ms: float = 0.0
    acks_late: int = 0
    answered: int = 0
    added_first_p50_ms: float = float("nan")
    added_first_p99_ms: float = float("nan")
    added_done_p50_ms: float = float("nan")
    added_done_p99_ms: float = float("nan")
    turns_per_s: float = 0.0
    slack_calls_per_answer: float = 0.0
    slack_429s: int = 0
    redis_cmds_per_turn: float = 0.0
    cpu_s_per_turn: float = 0.0
    peak_rss_mb: float = 0.0
    last_answer_s: float = float("nan")
    answers_per_min: float = float("nan")
    notes: list[str] = field(default_factory=list)


# The cost scenarios drive one workspace far past Slack's tiers (hundreds of answers a second): they lift
# the tiers, in the fake and in the bot's budget alike, to measure the bot's own cost.
COST_RATE_SCALE = 1000.0


class Driver:
    """Plays Slack: signed event deliveries over HTTP, timed from send to HTTP 200."""

    def __init__(self, bot_url: str, session: aiohttp.ClientSession) -> None:
        self.bot_url = bot_url
        self.url = f"{bot_url}/slack/events"
        self.session = session
        self.verifier = SignatureVerifier(SIGNING_SECRET)
        self.serial = 0

    def next_ts(self) -> str:
        self.serial += 1
        return f"{int(time.time())}.{self.serial:06d}"

    async def send(self, event: dict[str, Any]) -> float:
        self.serial += 1
        body = json.dumps(
            {
                "team_id": TEAM,
                "api_app_id": "A0APP",
                "type": "event_callback",
                "event_id": f"EvB{self.serial:09d}",
                "event_time": int(time.time()),
                "event": event,
                "authorizations": [{"team_id": TEAM, "user_id": BOT_USER, "is_bot": True}],
            }
        )
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": str(self.verifier.generate_signature(timestamp=stamp, body=body)),
        }
        started = time.monotonic()
        async with self.session.post(self.url, data=body, headers=headers) as resp:
            await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"bot answered {resp.status}")
        return time.monotonic() - started

    def mention(self, channel: str, text: str, ts: str, thread_ts: str | None = None) -> dict[str, Any]:
        event = {"type": "app_mention", "user": "U0BENCH", "text": f"<@{BOT_USER}> {text}", "ts": ts,
                 "channel": channel, "event_ts": ts}  # fmt: skip
        if thread_ts:
            event["thread_ts"] = thread_ts
        return event


class Bench:
    def __init__(
        self,
        out: Path,
        *,
        model_first_token: float,
        chunk_delay: float,
        chunk_size: int,
        workers: int,
        worker_nice: int = 0,
        slack_rate_scale: float = 1.0,
        cluster: bool = False,
        readme: bool = False,
        bot_env_extra: dict[str, str] | None = None,
    ) -> None:
        self.out = out
        self.cluster = cluster  # a three-shard Redis Cluster (REDIS_CLUSTER=true) instead of one redis-server
        # The README's command as is: one `slack-assistant --http` with the default process shape and
        # concurrency (only the bench's lifts below: spend limits off, Slack's tiers scaled).
        self.readme = readme
        self.bot_env_extra = bot_env_extra or {}
        self.slack_rate_scale = slack_rate_scale
        self.workers = workers
        self.worker_nice = worker_nice
        self.reply = Reply(
            text=" ".join(f"word{i}" for i in range(60)),  # ~400 characters of answer
            first_token_delay=model_first_token,
            chunk_delay=chunk_delay,
            chunk_size=chunk_size,
        )
        self.tmp = Path(tempfile.mkdtemp(prefix="sa-bench-"))

    def __enter__(self) -> Bench:
        if self.cluster:
            cluster = RedisClusterServers(self.tmp / "redis").start()
            self.redis_server: RedisServer | RedisClusterServers = cluster
            self.rdb = cluster.client()
        else:
            self.redis_server = RedisServer(self.tmp / "redis").start()
            self.rdb = redis.Redis.from_url(self.redis_server.url, decode_responses=True)
        # Slack's rate tiers in the fake and in the bot's budget alike: the cost scenarios lift them (a scale
        # of 1,000), the tier scenarios keep Slack's own figures (1).
        self.slack = FakeSlack(rate_limit_scale=self.slack_rate_scale).start()
        self.openai = FakeOpenAI().start()

        def env(concurrency: int | None) -> dict[str, str]:
            environment = bot_env(
                slack_api_url=self.slack.api_url,
                openai_base_url=self.openai.base_url,
                redis_url=self.redis_server.url,
                LOG_LEVEL="WARNING",
                STREAM_FLUSH_SECONDS="0.5",  # the production default (the tests use a faster one)
                # The workers take every turn in flight; the bench measures cost, not spend limits.
                RATE_LIMIT_USER_PER_MINUTE="0",
                RATE_LIMIT_TEAM_PER_MINUTE="0",
                THREAD_ANSWERS_PER_MINUTE="0",
                THREAD_ANSWERS_PER_DAY="0",
                SLACK_RATE_SCALE=str(self.slack_rate_scale),
                **({"REDIS_CLUSTER": "true"} if self.cluster else {}),
            )
            for name in DEFAULT_SHAPE_VARS:  # the harness's own choices, not the README's
                environment.pop(name, None)
            if concurrency is not None:
                environment["WORKER_CONCURRENCY"] = str(concurrency)
                environment["WORKER_PROCESSES"] = "0"  # the shapes below start their processes themselves
            environment.update(self.bot_env_extra)
            return environment

        if self.readme:
            self.bot = BotProcess(env(None), workdir=self.tmp).start()
            self.worker_procs = []
        else:
            # The front takes Slack's requests; with workers it only acks and queues (WORKER_CONCURRENCY=0).
            self.bot = BotProcess(env(0 if self.workers else 1000), workdir=self.tmp).start()
            self.worker_procs = [
                BotProcess(env(-(-1000 // self.workers)), workdir=self.tmp).start(worker=True)
                for _ in range(self.workers)
            ]
        self.procs = [
            psutil.Process(b.proc.pid) for b in [self.bot, *self.worker_procs] if b.proc is not None
        ]
        for proc in self.procs[1:]:
            # The deployment README recommends: fronts first when CPU is short (acks have a 3 s deadline).
            proc.nice(self.worker_nice)
        return self

    def bot_procs(self) -> list[psutil.Process]:
        """The bot's processes now: the ones the bench started and the workers they started themselves."""
        procs = list(self.procs)
        for proc in self.procs:
            with contextlib.suppress(psutil.Error):
                procs += proc.children(recursive=True)
        return procs

    def __exit__(self, *exc: object) -> None:
        for worker in self.worker_procs:
            worker.stop()
        self.bot.stop()
        self.openai.stop()
        self.slack.stop()
        self.rdb.close()
        self.redis_server.stop()

    def fresh(self, reply: Reply | None = None) -> None:
        self.slack.reset()
        for key in self.rdb.scan_iter("sa:*:slack:*"):  # the bot's Slack budget starts full, as the fake does
            self.rdb.delete(key)
        self.openai.reset()
        self.openai.default_reply = reply or self.reply
        if self.cluster:  # redis-py sends CONFIG and INFO to one node of a cluster unless told otherwise
            self.rdb.config_resetstat(target_nodes="primaries")
        else:
            self.rdb.config_resetstat()

    def redis_calls(self) -> int:
        if self.cluster:
            nodes: Any = self.rdb.info("commandstats", target_nodes="primaries")
            return sum(int(v["calls"]) for stats in nodes.values() for v in stats.values())
        stats = self.rdb.info("commandstats")
        return sum(int(v["calls"]) for v in stats.values())

    def cpu(self) -> float:
        """CPU seconds of the bot's processes (front and workers) so far."""
        total = 0.0
        for proc in self.bot_procs():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def rss_mb(self) -> float:
        """The bot's processes' resident memory now, summed."""
        total = 0
        for proc in self.bot_procs():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return round(total / 1024 / 1024, 1)

    def peak_rss_mb(self) -> float:
        """The sum of each bot process's peak RSS (an upper bound of the deployment's peak)."""
        total = 0
        for proc in self.bot_procs():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
        return round(total / 1024, 1)

    async def wait_answers(self, expected: int, within: float) -> int:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            done = len(self.slack.calls_to("chat.stopStream"))
            if done >= expected:
                return done
            await asyncio.sleep(0.05)
        return len(self.slack.calls_to("chat.stopStream"))


def drive_rate(url: str, rate: float, total: int, first_serial: int) -> list[tuple[str, str, float]]:
    """Send `total` mentions at `rate` per second: (channel, ts, ack seconds) of each.

    Runs in a process of its own: the fakes serve the bot from this process's threads, and timing acks
    from here would count their turns at the GIL as the bot's ack latency.
    """

    async def main() -> list[tuple[str, str, float]]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            driver = Driver(url, session)
            driver.serial = first_serial

            async def one(i: int) -> tuple[str, str, float]:
                await asyncio.sleep(i / rate)
                ts = driver.next_ts()
                channel = f"C0B{i % 50:04d}"
                return channel, ts, await driver.send(driver.mention(channel, f"bench {ts}", ts))

            return await asyncio.gather(*(one(i) for i in range(total)))

    return asyncio.run(main())


async def scenario_rate(bench: Bench, driver: Driver, rate: float, seconds: float) -> Result:
    """Open loop: `rate` new mentions per second; ack latency is what Slack would see."""
    bench.fresh()
    total = max(1, int(rate * seconds))
    result = Result("ack", f"{rate:g} events/s", total)
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        await loop.run_in_executor(pool, time.sleep, 0)  # the driver process is up before the clock starts
        cpu0, redis0, started = bench.cpu(), bench.redis_calls(), time.monotonic()
        sent = await loop.run_in_executor(pool, drive_rate, driver.bot_url, rate, total, driver.serial)
    driver.serial += 2 * total  # its event ids and timestamps are taken
    texts = {f"bench {ts}": (channel, ts) for channel, ts, _ in sent}
    acks = [ack for _, _, ack in sent]
    result.answered = await bench.wait_answers(total, within=60 + seconds)
    return finish(bench, result, acks, texts, cpu0, redis0, started)


async def scenario_concurrent(bench: Bench, driver: Driver, conversations: int, turns_each: int) -> Result:
    """Closed loop: `conversations` threads, each sending its next message when the last is answered."""
    bench.fresh()
    result = Result("latency", f"{conversations} concurrent", conversations * turns_each)
    cpu0, redis0, started = bench.cpu(), bench.redis_calls(), time.monotonic()
    texts: dict[str, tuple[str, str]] = {}
    acks: list[float] = []

    async def conversation(n: int) -> None:
        channel, root = f"C0L{n:04d}", driver.next_ts()
        for turn in range(turns_each):
            ts = root if turn == 0 else driver.next_ts()
            text = f"bench {ts}"
            key = (channel, root)
            texts[text] = key
            event = driver.mention(channel, text, ts, None if turn == 0 else root)
            acks.append(await driver.send(event))
            deadline = time.monotonic() + 60
            # Polled cheaply: the fakes share the driver's process and its GIL.
            while time.monotonic() < deadline:
                if bench.slack.finished(channel, root) > turn:
                    break
                await asyncio.sleep(0.02)

    await asyncio.gather(*(conversation(n) for n in range(conversations)))
    return finish(bench, result, acks, texts, cpu0, redis0, started)


async def scenario_inflight(bench: Bench, driver: Driver, turns: int, model_latency: float) -> Result:
    """`turns` mentions at once while the model takes `model_latency` s: every ack in time? memory?"""
    bench.fresh(
        Reply(text="slow answer " * 20, first_token_delay=model_latency, chunk_size=40, chunk_delay=0.02)
    )
    result = Result("inflight", f"{turns} in flight, model {model_latency:g}s", turns)
    rss0 = bench.rss_mb()
    cpu0, redis0, started = bench.cpu(), bench.redis_calls(), time.monotonic()
    texts: dict[str, tuple[str, str]] = {}
    acks: list[float] = []
    gate = asyncio.Semaphore(100)  # 100 connections at a time, like Slack's parallel deliveries

    async def one(i: int) -> None:
        async with gate:
            ts = driver.next_ts()
            channel = f"C0F{i % 100:04d}"
            texts[f"bench {ts}"] = (channel, ts)
            acks.append(await driver.send(driver.mention(channel, f"bench {ts}", ts)))

    await asyncio.gather(*(one(i) for i in range(turns)))
    # Every turn waits on the model now: the memory they hold, over what the processes held before.
    await asyncio.sleep(min(1.0, model_latency / 2))
    held = bench.rss_mb() - rss0
    result.answered = await bench.wait_answers(turns, within=model_latency + 120)
    result = finish(bench, result, acks, texts, cpu0, redis0, started)
    result.notes.append(
        f"RSS {rss0:.0f} MB before, +{held:.0f} MB with {turns} turns waiting on the model "
        f"({held * 1024 / turns:.0f} KB per turn in flight)"
    )
    return result


def _own_cpu() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


def drive_burst(url: str, total: int, first_serial: int) -> list[tuple[str, str, float]]:
    """Send `total` mentions at once, each from another person: (channel, ts, ack seconds) of each. In a
    process of its own, as `drive_rate`."""

    async def main() -> list[tuple[str, str, float]]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            driver = Driver(url, session)
            driver.serial = first_serial
            events = []
            for i in range(total):
                ts = driver.next_ts()
                event = driver.mention(f"C0U{i % 50:04d}", f"bench {ts}", ts)
                event["user"] = f"U0U{i:05d}"
                events.append(event)

            async def one(event: dict[str, Any]) -> tuple[str, str, float]:
                return event["channel"], event["ts"], await driver.send(event)

            return await asyncio.gather(*(one(e) for e in events))

    return asyncio.run(main())


async def scenario_burst(bench: Bench, driver: Driver, mentions: int, model_latency: float) -> Result:
    """`mentions` at once from as many people, the model taking `model_latency` s to answer: the acks Slack
    sees, and when the last person has their answer."""
    text = "A short answer, streamed to Slack in a few pieces."
    bench.fresh(Reply(text=text, first_token_delay=model_latency, chunk_size=20, chunk_delay=0.02))
    result = Result("burst", f"{mentions} at once, model {model_latency:g}s", mentions)
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        await loop.run_in_executor(pool, time.sleep, 0)  # the driver process is up before the clock starts
        cpu0, redis0, started = bench.cpu(), bench.redis_calls(), time.monotonic()
        fakes0 = _own_cpu()
        sent = await loop.run_in_executor(pool, drive_burst, driver.bot_url, mentions, driver.serial)
    driver.serial += 2 * mentions
    pending = {(channel, ts) for channel, ts, _ in sent}
    deadline = time.monotonic() + model_latency + 120
    while pending and time.monotonic() < deadline:
        pending = bench.slack.unfinished(pending)
        await asyncio.sleep(0.05)
    fakes_cpu = _own_cpu() - fakes0
    texts = {f"bench {ts}": (channel, ts) for channel, ts, _ in sent}
    result = finish(bench, result, [ack for _, _, ack in sent], texts, cpu0, redis0, started)
    # The fakes serve the bot from this process: what they took of the same two cores.
    result.notes.append(f"fake Slack + fake OpenAI CPU: {fakes_cpu / mentions * 1000:.1f} ms per turn")
    result.answered = mentions - len(pending)
    # The fake Slack was reset for this scenario: its last message-ending call is the last answer's end.
    ends = [c.at for c in bench.slack.calls if c.ok and c.method in ("chat.stopStream", "chat.postMessage")]
    result.last_answer_s = round(max(ends) - started, 2) if ends else float("nan")
    firsts = sorted(
        t["first_token_at"] - started for t in bench.openai.timings().values() if "first_token_at" in t
    )
    if firsts:
        # The fake model answers `model_latency` after a response is created: when the bot had asked.
        result.notes.append(
            f"responses created {firsts[0] - model_latency:.2f} to {firsts[-1] - model_latency:.2f} s "
            f"after the burst began; first tokens until {firsts[-1]:.2f} s"
        )
    if pending:
        result.notes.append(f"{len(pending)} not answered in time")
    return result


async def scenario_tiers(bench: Bench, driver: Driver, mentions: int, channels: int) -> Result:
    """`mentions` at once from as many people in one workspace, in `channels` channels, under Slack's
    rate tiers: every answer whole and once? how many 429s? how long until the last answer?"""
    text = "An answer of a few words, streamed to Slack in several pieces."
    bench.fresh(Reply(text=text, first_token_delay=0.3, chunk_size=8, chunk_delay=0.02))
    result = Result("tiers", f"{mentions} at once, 1 workspace", mentions)
    cpu0, redis0, started = bench.cpu(), bench.redis_calls(), time.monotonic()
    events = []
    for i in range(mentions):
        ts = driver.next_ts()
        event = driver.mention(f"C0T{i % channels:04d}", f"bench {ts}", ts)
        event["user"] = f"U0T{i:05d}"
        events.append(event)
    acks = list(await asyncio.gather(*(driver.send(e) for e in events)))
    last_answer = started
    pending = {(e["channel"], e["ts"]) for e in events}
    deadline = time.monotonic() + 600
    while pending and time.monotonic() < deadline:
        for key in list(pending):
            msgs = bench.slack.messages(*key)
            if [m.text for m in msgs if not m.streaming] == [text]:
                pending.discard(key)
                last_answer = time.monotonic()
        await asyncio.sleep(0.1)
    result = finish(bench, result, acks, {}, cpu0, redis0, started)
    result.answered = mentions - len(pending)
    non_auth = [c for c in bench.slack.calls if c.method != "auth.test"]
    result.slack_calls_per_answer = round(len(non_auth) / max(1, result.answered), 2)
    once = sum(1 for e in events if len(bench.slack.messages(e["channel"], e["ts"])) == 1)
    result.last_answer_s = round(last_answer - started, 1)
    result.answers_per_min = round(result.answered / max(result.last_answer_s, 1e-9) * 60, 1)
    result.turns_per_s = round(result.answered / max(result.last_answer_s, 1e-9), 1)
    result.slack_429s = len(bench.slack.rate_limited())
    calls = bench.slack.calls
    streamed = sum(1 for c in calls if c.method == "chat.startStream" and c.ok)
    by_method: dict[str, int] = {}
    for c in calls:
        by_method[c.method] = by_method.get(c.method, 0) + 1
    result.notes = [
        f"{streamed} streamed, {result.answered - streamed} posted whole; {once} threads with one answer",
        "Slack calls: " + ", ".join(f"{m} {n}" for m, n in sorted(by_method.items(), key=lambda x: -x[1])),
    ]
    if result.answered < mentions:
        result.notes.append(f"{mentions - result.answered} not answered in time")
    return result


def finish(
    bench: Bench,
    result: Result,
    acks: list[float],
    texts: dict[str, tuple[str, str]],
    cpu0: float,
    redis0: int,
    started: float,
) -> Result:
    result.acked = len(acks)
    result.ack_p50_ms, result.ack_p99_ms, result.ack_max_ms = (
        ms(pct(acks, 50)),
        ms(pct(acks, 99)),
        ms(max(acks)),
    )
    result.acks_late = sum(1 for a in acks if a >= ACK_DEADLINE_S)
    inputs = bench.openai.model_inputs
    for model_input in inputs:
        items = model_input.get("input_items") or []
        last = items[-1] if items else {}
        text = next((p.get("text") for p in last.get("content") or [] if p.get("text")), "")
        model_input["bench_thread"] = texts.get(str(text))
    return measure(bench, result, started, cpu0, redis0, inputs)


def measure(
    bench: Bench, result: Result, started: float, cpu0: float, redis0: int, inputs: list[dict]
) -> Result:
    """Fill in what the fakes, Redis and /proc saw for the turns just driven."""
    calls = bench.slack.calls
    timings = bench.openai.timings()
    # Each answer is one streamed message: match it to its response through the model's input text.
    start_calls = [c for c in calls if c.method == "chat.startStream" and c.ok]
    stop_calls = {
        (str(c.args.get("channel")), str(c.args.get("ts"))): c.at
        for c in calls
        if c.method == "chat.stopStream"
    }
    by_thread: dict[tuple[str, str], list[Any]] = {}
    for c in start_calls:
        by_thread.setdefault((str(c.args.get("channel")), str(c.args.get("thread_ts"))), []).append(c)
    msgs_by_thread = {key: bench.slack.messages(*key) for key in by_thread}
    per_thread_inputs: dict[tuple[str, str], list[dict]] = {}
    for model_input in inputs:
        thread = model_input.get("bench_thread")
        if thread is not None:
            per_thread_inputs.setdefault(tuple(thread), []).append(model_input)
    first, done = [], []
    for thread, thread_inputs in per_thread_inputs.items():
        starts = by_thread.get(thread, [])
        msgs = msgs_by_thread.get(thread, [])
        for n, model_input in enumerate(thread_inputs):
            times = timings.get(model_input["response_id"], {})
            if n < len(starts) and "first_token_at" in times:
                first.append(starts[n].at - times["first_token_at"])
            if n < len(msgs) and "completed_at" in times:
                stop_at = stop_calls.get((thread[0], msgs[n].ts))
                if stop_at is not None:
                    done.append(stop_at - times["completed_at"])
    elapsed = time.monotonic() - started
    result.answered = len(stop_calls)
    result.added_first_p50_ms, result.added_first_p99_ms = ms(pct(first, 50)), ms(pct(first, 99))
    result.added_done_p50_ms, result.added_done_p99_ms = ms(pct(done, 50)), ms(pct(done, 99))
    result.turns_per_s = round(result.answered / elapsed, 1) if elapsed else 0.0
    non_auth = [c for c in calls if c.method != "auth.test"]
    result.slack_calls_per_answer = round(len(non_auth) / max(1, result.answered), 2)
    result.slack_429s = sum(1 for c in calls if c.error == "ratelimited")
    result.redis_cmds_per_turn = round((bench.redis_calls() - redis0) / max(1, result.turns), 1)
    result.cpu_s_per_turn = round((bench.cpu() - cpu0) / max(1, result.turns), 4)
    result.peak_rss_mb = bench.peak_rss_mb()
    if result.answered < result.turns:
        result.notes.append(f"{result.turns - result.answered} not answered in time")
    return result


COLUMNS = [
    ("scenario", "scenario"),
    ("load", "load"),
    ("turns", "turns"),
    ("ack_p50_ms", "ack p50"),
    ("ack_p99_ms", "ack p99"),
    ("acks_late", ">3s"),
    ("added_first_p50_ms", "+first p50"),
    ("added_first_p99_ms", "+first p99"),
    ("added_done_p50_ms", "+done p50"),
    ("added_done_p99_ms", "+done p99"),
    ("turns_per_s", "turns/s"),
    ("slack_calls_per_answer", "slack/ans"),
    ("slack_429s", "429s"),
    ("redis_cmds_per_turn", "redis/turn"),
    ("cpu_s_per_turn", "cpu s/turn"),
    ("peak_rss_mb", "peak MB"),
    ("last_answer_s", "last s"),
    ("answers_per_min", "ans/min"),
]


def table(results: list[Result]) -> str:
    rows = [[label for _, label in COLUMNS]]
    rows += [[str(getattr(r, key)) for key, _ in COLUMNS] for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot(results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    acks = [r for r in results if r.scenario == "ack"]
    left.plot([r.load.split()[0] for r in acks], [r.ack_p50_ms for r in acks], "o-", label="p50")
    left.plot([r.load.split()[0] for r in acks], [r.ack_p99_ms for r in acks], "o-", label="p99")
    left.set(title="Ack latency vs event rate", xlabel="events/s", ylabel="ms")
    left.legend()
    lat = [r for r in results if r.scenario == "latency"]
    xs = [r.load.split()[0] for r in lat]
    right.plot(xs, [r.added_first_p50_ms for r in lat], "o-", label="first text p50")
    right.plot(xs, [r.added_first_p99_ms for r in lat], "o-", label="first text p99")
    right.plot(xs, [r.added_done_p50_ms for r in lat], "s--", label="completion p50")
    right.plot(xs, [r.added_done_p99_ms for r in lat], "s--", label="completion p99")
    right.set(title="Bot's added latency vs concurrency", xlabel="concurrent conversations", ylabel="ms")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def bench_for(args: argparse.Namespace, *, slack_rate_scale: float) -> Bench:
    return Bench(
        args.out,
        model_first_token=args.model_latency,
        chunk_delay=args.chunk_delay,
        chunk_size=args.chunk_size,
        workers=args.workers,
        worker_nice=args.worker_nice,
        slack_rate_scale=slack_rate_scale,
        cluster=args.cluster,
    )


async def run_costs(args: argparse.Namespace) -> list[Result]:
    """The scaled-out shape at the cost scenarios' loads."""
    results: list[Result] = []
    with bench_for(args, slack_rate_scale=COST_RATE_SCALE) as bench:
        connector = aiohttp.TCPConnector(limit=200)
        async with aiohttp.ClientSession(connector=connector) as session:
            driver = Driver(bench.bot.url, session)
            await driver.send(
                driver.mention("C0WARM", "warm up", driver.next_ts())
            )  # imports, auth.test, pools
            await bench.wait_answers(1, within=30)
            for rate in args.rates:
                results.append(await scenario_rate(bench, driver, rate, args.seconds))
                print(table(results[-1:]), flush=True)
            for conversations in args.concurrency:
                results.append(await scenario_concurrent(bench, driver, conversations, args.turns_each))
                print(table(results[-1:]), flush=True)
            if args.inflight:
                results.append(await scenario_inflight(bench, driver, args.inflight, args.inflight_latency))
                print(table(results[-1:]), *results[-1].notes, sep="\n", flush=True)
    return results


async def run(args: argparse.Namespace) -> list[Result]:
    results: list[Result] = []
    if args.rates or args.concurrency or args.inflight:
        results += await run_costs(args)
    if args.tiers:
        results += await run_tiers(args)
    if args.burst:
        results += await run_bursts(args)
    return results


async def run_bursts(args: argparse.Namespace) -> list[Result]:
    """The README's command with its defaults (`slack-assistant --http`), N mentions at once."""
    results: list[Result] = []
    bench = Bench(
        args.out,
        model_first_token=args.model_latency,
        chunk_delay=args.chunk_delay,
        chunk_size=args.chunk_size,
        workers=0,
        slack_rate_scale=COST_RATE_SCALE,
        readme=True,
        bot_env_extra=dict(item.split("=", 1) for item in args.bot_env),
    )
    with bench:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session:
            driver = Driver(bench.bot.url, session)
            await driver.send(driver.mention("C0WARM", "warm up", driver.next_ts()))
            await bench.wait_answers(1, within=30)
            for spec in args.burst:
                mentions, latency = spec.split(":")
                results.append(await scenario_burst(bench, driver, int(mentions), float(latency)))
                print(table(results[-1:]), *results[-1].notes, sep="\n", flush=True)
    return results


async def run_tiers(args: argparse.Namespace) -> list[Result]:
    """The same deployment under Slack's own rate tiers (fake and budget at scale 1)."""
    results: list[Result] = []
    with bench_for(args, slack_rate_scale=1.0) as bench:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session:
            driver = Driver(bench.bot.url, session)
            for mentions in args.tiers:
                results.append(await scenario_tiers(bench, driver, mentions, args.tier_channels))
                print(table(results[-1:]), *results[-1].notes, sep="\n", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny load: a smoke run in seconds")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes behind one ack-only front (default 1); 0: one process acks and runs turns",
    )
    parser.add_argument(
        "--worker-nice",
        type=int,
        default=5,
        help="scheduling niceness of the worker processes (default 5: the front goes first on shared cores)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument(
        "--rates", type=float, nargs="*", default=[50, 100, 200], help="events/s (ack scenario)"
    )
    parser.add_argument("--seconds", type=float, default=10, help="duration of each rate step")
    parser.add_argument("--concurrency", type=int, nargs="*", default=[10, 50, 100])
    parser.add_argument("--turns-each", type=int, default=5, help="turns per conversation (latency scenario)")
    parser.add_argument("--inflight", type=int, default=1000, help="turns at once (0: skip)")
    parser.add_argument("--inflight-latency", type=float, default=5.0, help="model latency there, s")
    parser.add_argument(
        "--model-latency", type=float, default=0.3, help="fake model's time to first token, s"
    )
    parser.add_argument("--chunk-delay", type=float, default=0.02, help="s between streamed chunks")
    parser.add_argument("--chunk-size", type=int, default=8, help="characters per streamed chunk")
    parser.add_argument(
        "--tiers", type=int, nargs="*", default=[40, 200], help="mentions at once under Slack's tiers"
    )
    parser.add_argument("--tier-channels", type=int, default=10, help="channels they are spread over")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="run on a local three-shard Redis Cluster (REDIS_CLUSTER=true) instead of one redis-server",
    )
    parser.add_argument(
        "--burst",
        nargs="*",
        default=["50:2", "300:3"],
        help="MENTIONS:MODEL_SECONDS: that many mentions at once from as many people, through the README's "
        "command with its defaults (default: 50:2 300:3)",
    )
    parser.add_argument(
        "--bot-env",
        nargs="*",
        default=[],
        metavar="NAME=VALUE",
        help="burst scenarios: settings for the bot beyond the defaults (e.g. WORKER_PROCESSES=2)",
    )
    parser.add_argument(
        "--only-burst", action="store_true", help="run only the burst scenarios (quick to repeat)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rates, args.seconds, args.concurrency, args.turns_each = [20], 1.0, [3], 2
        args.inflight, args.inflight_latency, args.model_latency = 20, 0.5, 0.1
        args.tiers = [10]
        args.burst = ["10:0.5"]
    if args.only_burst:
        args.rates, args.concurrency, args.inflight, args.tiers = [], [], 0, []
    args.out.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(run(args))
    print("\n" + table(results))
    payload = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    payload["results"] = [asdict(r) for r in results]
    (args.out / "results.json").write_text(json.dumps(payload, indent=2))
    plot(results, args.out / "latency.png")
    print(f"\nwrote {args.out / 'results.json'} and {args.out / 'latency.png'}")
    unanswered = sum(r.turns - r.answered for r in results)
    return 1 if unanswered else 0


if __name__ == "__main__":
    raise SystemExit(main())
