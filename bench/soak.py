"""Soak: many turns through several real bot replicas, with faults on, then count what users saw.

    uv run python bench/soak.py --turns 1000

Starts a throwaway `redis-server` (appendonly), the fake Slack and fake OpenAI on 127.0.0.1, HTTP
replicas of `slack-assistant` and one Socket Mode replica, then sends `--turns` user messages spread over
`--threads` Slack threads (each thread's messages in order; threads concurrently), with faults:

- Slack delivers every event to one replica and, with `--dup-rate`, retries it to another one (same event
  id); a mention inside a thread also arrives as its `message` twin;
- the fake OpenAI answers with a random mix of 500, 503, 429 (retry-after), `conversation_locked`,
  streams dropped midway (the response completes server-side) and streams stalled past OPENAI_TIMEOUT;
- the fake Slack answers random methods with 429 (Retry-After);
- an HTTP replica is killed with SIGKILL and started again once half the turns are sent, and then every
  `--kill-every` seconds.

Then it waits until Redis holds no unfinished turn, reads every thread from the fake Slack and prints:
turns sent, answered (an answer or a clear notice), answered twice, lost, out of order. Exit status 0 when
nothing was lost, doubled or out of order. Everything is bounded: `--max-seconds` stops it in any case.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import signal
import sys
import tempfile
import threading
import time
import urllib.error
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from bot.errors import StoreUnavailable, TeamSpendLimited, UserSpendLimited  # noqa: E402
from tests.fakes.openai_api import FakeOpenAI, Reply  # noqa: E402
from tests.fakes.slack_api import FakeSlack  # noqa: E402
from tests.harness import TEAM, BotProcess, RedisServer, SlackSender, bot_env, mention, message  # noqa: E402

CHANNEL = "C0SOAK"
# What a user is told instead of an answer: a warning after a failed turn, or a listener's notice.
NOTICES = (
    ":warning:",
    StoreUnavailable.user_message,
    UserSpendLimited.user_message,
    TeamSpendLimited.user_message,
)
SLACK_METHODS = (
    "chat.startStream",
    "chat.appendStream",
    "chat.stopStream",
    "assistant.threads.setStatus",
    "agents.sessions.setStatus",
)


@dataclass
class Stats:
    faults: Counter[str] = field(default_factory=Counter)
    deliveries: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.faults[name] += n


def openai_script(rng: random.Random, turns: int) -> list[tuple[Reply, str | None]]:
    """One reply per response request, with the fault it injects; faults make the bot ask again, so
    there are spare ones (only those used are counted)."""
    replies: list[tuple[Reply, str | None]] = []
    for _ in range(turns * 2):
        roll = rng.random()
        if roll < 0.03:
            replies.append((Reply(http_status=500), "openai 500 (the user gets a notice)"))
        elif roll < 0.06:
            replies.append((Reply(http_status=503), "openai 503"))
        elif roll < 0.10:
            replies.append((Reply(http_status=429, retry_after=0.5), "openai 429 with retry-after"))
        elif roll < 0.12:
            replies.append(
                (Reply(http_status=400, error_code="conversation_locked"), "openai conversation_locked")
            )
        elif roll < 0.17:
            dropped = Reply(chunk_size=3, chunk_delay=0.02, drop_after_chunks=2, server_completes=True)
            replies.append((dropped, "openai stream dropped midway"))
        elif roll < 0.19:
            replies.append((Reply(first_token_delay=2.5), "openai stream stalled past OPENAI_TIMEOUT"))
        else:
            replies.append((Reply(chunk_size=6, chunk_delay=0.01), None))
    return replies


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.stats = Stats()
        self.deadline = time.monotonic() + args.max_seconds
        self.stop = threading.Event()
        self.workdir = Path(args.workdir or tempfile.mkdtemp(prefix="soak-"))
        self.http: list[BotProcess] = []
        self.sockets: list[BotProcess] = []
        self.http_lock = threading.Lock()
        self.sent_turns = 0

    # ---- set-up -----------------------------------------------------------------------------------

    def start(self) -> None:
        self.redis = RedisServer(self.workdir / "redis", appendonly=True).start()
        self.slack = FakeSlack().start()
        self.openai = FakeOpenAI().start()
        self.script = openai_script(self.rng, self.args.turns)
        self.openai.script(*(reply for reply, _ in self.script))
        env = bot_env(
            slack_api_url=self.slack.api_url,
            openai_base_url=self.openai.base_url,
            redis_url=self.redis.url,
            runner_lock_seconds="2",
            recovery_interval_seconds="0.5",
            openai_timeout="1.5",
            rate_limit_user_per_minute="0",
            rate_limit_team_per_minute="0",
            thread_answers_per_minute="0",
            thread_answers_per_day="0",
            log_level="INFO",
        )
        for _ in range(self.args.replicas):
            self.http.append(BotProcess(dict(env), workdir=self.workdir).start())
        if self.args.socket:
            socket_env = {k: v for k, v in env.items() if k != "SLACK_SIGNING_SECRET"}
            self.sockets.append(BotProcess(socket_env, workdir=self.workdir).start(http=False))
            self.slack.wait_socket_connected(timeout=30)

    def close(self) -> None:
        for bot in self.http + self.sockets:
            bot.stop()
        self.openai.stop()
        self.slack.stop()
        self.redis.stop()

    # ---- load -------------------------------------------------------------------------------------

    def deliver(self, event: dict[str, Any], event_id: str, rng: random.Random) -> None:
        """Slack's delivery: to one replica, retried (same event id) to another until one acks, and
        sometimes retried anyway (Slack did not see the ack in time)."""
        paths = list(range(len(self.http) + len(self.sockets)))
        rng.shuffle(paths)
        retries = 1 if rng.random() < self.args.dup_rate else 0
        if retries:
            self.stats.count("slack event delivered twice")
        acked = 0
        for attempt in range(12):
            if time.monotonic() > self.deadline:
                return
            path = paths[attempt % len(paths)]
            if self.send(path, event, event_id, attempt):
                acked += 1
                if acked > retries:
                    return
            else:
                time.sleep(0.2)

    def send(self, path: int, event: dict[str, Any], event_id: str, attempt: int) -> bool:
        with self.stats.lock:
            self.stats.deliveries += 1
        if path >= len(self.http):
            try:
                envelope = self.slack.event_payload(event, event_id=event_id)
                envelope_id = self.slack.socket_send(
                    envelope, retry_attempt=attempt, retry_reason="timeout" if attempt else ""
                )
                # Delivered once acked (Bolt acks after the listener has recorded the turn).
                self.slack.wait_socket_ack(envelope_id, timeout=5)
                return True
            except AssertionError:  # no Socket Mode connection, or no ack in time
                return False
        with self.http_lock:
            url = self.http[path].url
        try:
            reply = SlackSender(url).send_event(event, event_id=event_id, retry_num=attempt or None)
        except (urllib.error.URLError, OSError):
            return False  # the replica is down: Slack retries elsewhere
        return reply.status == 200

    def conversation(self, thread: int, turns: int) -> tuple[str, list[str]]:
        rng = random.Random(self.args.seed * 1000 + thread)
        user = f"U0SOAK{thread}"
        texts = [f"soak {thread} message {k}" for k in range(turns)]
        root = mention(CHANNEL, user, texts[0])
        self.deliver(root, f"EvSOAK{thread:04d}x000", rng)
        self.turn_sent()
        for k in range(1, turns):
            if time.monotonic() > self.deadline:
                break
            if rng.random() < 0.5:
                event = mention(CHANNEL, user, texts[k], thread_ts=root["ts"])
                self.deliver(event, f"EvSOAK{thread:04d}x{k:03d}", rng)
                twin = message(CHANNEL, user, event["text"], ts=event["ts"], thread_ts=root["ts"])
                self.deliver(twin, f"EvSOAK{thread:04d}t{k:03d}", rng)
            else:
                event = message(CHANNEL, user, texts[k], thread_ts=root["ts"])
                self.deliver(event, f"EvSOAK{thread:04d}x{k:03d}", rng)
            self.turn_sent()
            time.sleep(rng.random() * 0.05)
        return root["ts"], texts

    def turn_sent(self) -> None:
        with self.stats.lock:
            self.sent_turns += 1

    # ---- faults -----------------------------------------------------------------------------------

    def chaos(self) -> None:
        rng = random.Random(self.args.seed + 7)
        next_kill = time.monotonic() + self.args.kill_every
        killed = False
        while not self.stop.wait(0.3) and time.monotonic() < self.deadline:
            if rng.random() < 0.3:
                method = rng.choice(SLACK_METHODS)
                self.slack.fail_next(method, "ratelimited", status=429, retry_after=rng.choice([0, 1]))
                self.stats.count("slack 429")
            halfway = not killed and self.sent_turns * 2 >= self.args.turns
            if self.args.kill_every and (time.monotonic() >= next_kill or halfway):
                killed = True
                next_kill = time.monotonic() + self.args.kill_every
                index = rng.randrange(len(self.http))
                with self.http_lock:
                    victim = self.http[index]
                victim.stop(signal.SIGKILL)
                self.stats.count("replica killed with SIGKILL and restarted")
                replacement = BotProcess(dict(victim.env), workdir=self.workdir, port=victim.port)
                try:
                    replacement.start()
                except RuntimeError:
                    replacement.stop()
                    replacement = BotProcess(dict(victim.env), workdir=self.workdir).start()
                with self.http_lock:
                    self.http[index] = replacement

    # ---- accounting -------------------------------------------------------------------------------

    def settled(self, client: redis.Redis) -> bool:
        """No unfinished turn left in Redis: no answer can still start."""
        ns = f"sa:{{-:{TEAM}}}"
        if client.exists(f"{ns}:turns") and client.xpending(f"{ns}:turns", "workers")["pending"]:
            return False
        return not client.keys(f"{ns}:queue:*")

    def streams_closed(self) -> bool:
        return not any(m.streaming for m in self.slack.messages(CHANNEL))

    def run(self) -> int:
        started = time.monotonic()
        self.start()
        chaos = threading.Thread(target=self.chaos, daemon=True)
        chaos.start()
        per_thread = [self.args.turns // self.args.threads] * self.args.threads
        for i in range(self.args.turns % self.args.threads):
            per_thread[i] += 1
        try:
            with ThreadPoolExecutor(self.args.threads) as pool:
                threads = list(
                    pool.map(lambda t: self.conversation(t, per_thread[t]), range(self.args.threads))
                )
            sent_at = time.monotonic()
            client = redis.Redis.from_url(self.redis.url, decode_responses=True)
            time.sleep(1.0)
            while not self.settled(client) and time.monotonic() < self.deadline:
                time.sleep(0.5)
            self.stop.set()
            chaos.join(10)
            while not self.settled(client) and time.monotonic() < self.deadline:
                time.sleep(0.5)
            client.close()
            # Every turn is done; a message still streaming now was left by a killed worker.
            closing = min(self.deadline, time.monotonic() + 5)
            while not self.streams_closed() and time.monotonic() < closing:
                time.sleep(0.2)
            return self.report(threads, started, sent_at)
        finally:
            self.stop.set()
            self.close()

    def report(self, threads: list[tuple[str, list[str]]], started: float, sent_at: float) -> int:
        """Each bot message is an answer (`Echo: <the message>`), a notice (a warning or a listener's "briefly
        unavailable", which do not quote the message they answer), or a stray (anything else: a partial
        answer left behind by a killed worker)."""
        sent = answers = notices = twice = lost = out_of_order = strays = 0
        problems: list[dict[str, Any]] = []
        for root_ts, texts in threads:
            sent += len(texts)
            shown = [m.text for m in self.slack.messages(CHANNEL, root_ts)]
            echoed = [t.removeprefix("Echo: ") for t in shown if t.startswith("Echo: ") and t[6:] in texts]
            thread_notices = sum(1 for t in shown if t.startswith(NOTICES))
            thread_strays = len(shown) - len(echoed) - thread_notices
            counts = Counter(echoed)
            doubled = sum(n - 1 for n in counts.values())
            unanswered = [t for t in texts if t not in counts]
            # One notice answers one message; more notices than unanswered messages are doubles.
            missing = max(0, len(unanswered) - thread_notices)
            doubled += max(0, thread_notices - len(unanswered))
            order = [texts.index(t) for t in dict.fromkeys(echoed)]
            answers += len(counts)
            notices += min(thread_notices, len(unanswered))
            twice += doubled
            lost += missing
            strays += thread_strays
            out_of_order += int(order != sorted(order))
            if missing or doubled or thread_strays or order != sorted(order):
                problems.append({"thread": root_ts, "unanswered": unanswered, "shown": shown})
        answered = answers + notices
        used = len(self.script) - self.openai.scripts_left
        for _, fault in self.script[:used]:
            if fault:
                self.stats.count(fault)
        result: dict[str, Any] = {
            "turns sent": sent,
            "answered": answered,
            "  with an answer": answers,
            "  with a clear notice": notices,
            "answered twice": twice,
            "lost": lost,
            "threads out of order": out_of_order,
            "stray partial messages": strays,
            "event deliveries (with Slack retries and twins)": self.stats.deliveries,
            "seconds": round(time.monotonic() - started, 1),
            "seconds sending": round(sent_at - started, 1),
            "faults injected": dict(sorted(self.stats.faults.items())),
            "logs": str(self.workdir),
        }
        if problems:
            result["threads with a problem (first 5)"] = problems[:5]
        print(json.dumps(result, indent=2))
        ok = lost == 0 and twice == 0 and out_of_order == 0 and sent == self.args.turns
        verdict = "OK" if ok else "FAILED"
        print(
            f"soak: {sent} sent, {answered} answered, {twice} twice, {lost} lost, {strays} stray — {verdict}"
        )
        return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    # The fakes log a traceback when a killed replica drops a connection mid-request: expected here.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=1000, help="user messages to send (default 1000)")
    parser.add_argument("--threads", type=int, default=40, help="Slack threads they are spread over")
    parser.add_argument("--replicas", type=int, default=2, help="HTTP replicas (default 2)")
    parser.add_argument("--no-socket", dest="socket", action="store_false", help="no Socket Mode replica")
    parser.add_argument("--dup-rate", type=float, default=0.3, help="share of events Slack delivers twice")
    parser.add_argument("--kill-every", type=float, default=20.0, help="seconds between SIGKILLs (0: none)")
    parser.add_argument("--max-seconds", type=float, default=1200.0, help="hard time limit")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", help="where Redis and the bot logs go (default: a new temp folder)")
    args = parser.parse_args(argv)
    if args.turns < args.threads:
        args.threads = max(1, args.turns)
    return Soak(args).run()


if __name__ == "__main__":
    raise SystemExit(main())
