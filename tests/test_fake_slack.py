"""The Slack fake, driven by the real slack_sdk clients, behaves the way the bot will rely on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack_api import FakeSlack, RateLimit

DM = "D0DM00001"
CHANNEL = "C0CHAN001"
THREAD = "1700000000.000100"


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as f:
        yield f


def web(fake: FakeSlack, token: str | None = None) -> WebClient:
    return WebClient(token=token or fake.bot_token, base_url=fake.api_url)


def aweb(fake: FakeSlack, **kwargs: Any) -> AsyncWebClient:
    return AsyncWebClient(token=fake.bot_token, base_url=fake.api_url, **kwargs)


def api_error(call: Callable[[], Any]) -> SlackApiError:
    with pytest.raises(SlackApiError) as info:
        call()
    return info.value


async def until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    """Poll without blocking the event loop the Socket Mode client runs on."""
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# ---------------------------------------------------------------- auth


def test_auth_test_identifies_the_bot(fake: FakeSlack) -> None:
    resp = web(fake).auth_test()

    assert resp["user_id"] == "U0BOT"
    assert resp["bot_id"] == "B0BOT"
    assert resp["team_id"] == "T0TEAM1"
    assert resp["is_enterprise_install"] is False
    (call,) = fake.calls_to("auth.test")
    assert call.ok and call.token == fake.bot_token


def test_bad_tokens_are_rejected_and_recorded(fake: FakeSlack) -> None:
    assert api_error(lambda: web(fake, "xoxb-wrong").auth_test()).response["error"] == "invalid_auth"
    assert api_error(lambda: WebClient(base_url=fake.api_url).auth_test()).response["error"] == "not_authed"
    # A real token of the wrong kind, both ways round.
    wrong_kind = api_error(lambda: web(fake, fake.app_token).chat_postMessage(channel=DM, text="hi"))
    assert wrong_kind.response["error"] == "not_allowed_token_type"
    assert api_error(lambda: web(fake).apps_connections_open(app_token=fake.bot_token)).response["error"] == (
        "not_allowed_token_type"
    )

    assert [c.error for c in fake.calls] == [
        "invalid_auth",
        "not_authed",
        "not_allowed_token_type",
        "not_allowed_token_type",
    ]
    assert fake.messages(DM) == []


def test_token_in_form_body_is_accepted(fake: FakeSlack) -> None:
    client = WebClient(base_url=fake.api_url)
    resp = client.api_call("chat.postMessage", data={"token": fake.bot_token, "channel": DM, "text": "form"})

    assert resp["ok"]
    assert fake.messages(DM)[0].text == "form"
    assert fake.calls_to("chat.postMessage")[0].args == {"channel": DM, "text": "form"}


def test_unknown_method_is_answered_and_recorded(fake: FakeSlack) -> None:
    assert api_error(lambda: web(fake).api_call("reactions.add")).response["error"] == "unknown_method"
    assert fake.calls_to("reactions.add")[0].error == "unknown_method"


# ---------------------------------------------------------------- messages


def test_post_message_is_recorded_per_thread(fake: FakeSlack) -> None:
    client = web(fake)
    top = client.chat_postMessage(channel=CHANNEL, text="top level")
    reply = client.chat_postMessage(channel=CHANNEL, thread_ts=THREAD, markdown_text="**reply**")
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]
    client.chat_postMessage(channel=CHANNEL, thread_ts=THREAD, text="fallback", blocks=blocks)

    assert top["channel"] == CHANNEL
    assert top["message"]["user"] == "U0BOT"
    assert float(top["ts"]) < float(reply["ts"])
    assert [m.text for m in fake.messages(CHANNEL)] == ["top level", "**reply**", "fallback"]
    in_thread = fake.messages(CHANNEL, thread_ts=THREAD)
    assert [m.kind for m in in_thread] == ["post", "post"]
    assert in_thread[1].blocks == blocks
    assert fake.messages(DM) == []


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"channel": DM}, "no_text"),
        ({"channel": DM, "text": "a", "markdown_text": "b"}, "markdown_text_conflict"),
        ({"channel": DM, "markdown_text": "x" * 12_001}, "msg_too_long"),
        ({"channel": DM, "text": "t", "blocks": [{"type": "divider"}] * 51}, "invalid_blocks"),
        ({"channel": "not-a-channel", "text": "t"}, "channel_not_found"),
    ],
)
@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing:UserWarning")
def test_post_message_enforces_slack_rules(fake: FakeSlack, kwargs: dict[str, Any], error: str) -> None:
    assert api_error(lambda: web(fake).chat_postMessage(**kwargs)).response["error"] == error
    assert fake.messages(DM) == []


def test_markdown_at_the_limit_is_accepted(fake: FakeSlack) -> None:
    web(fake).chat_postMessage(channel=DM, markdown_text="x" * 12_000)
    assert len(fake.messages(DM)[0].text) == 12_000


def test_ephemerals_are_kept_apart(fake: FakeSlack) -> None:
    resp = web(fake).chat_postEphemeral(channel=CHANNEL, user="U0USER1", text="only you")

    assert resp["message_ts"]
    assert fake.messages(CHANNEL) == []
    (eph,) = fake.ephemerals(CHANNEL, user="U0USER1")
    assert (eph.text, eph.kind) == ("only you", "ephemeral")
    assert fake.ephemerals(CHANNEL, user="U0OTHER") == []


def test_update_replaces_text_and_counts(fake: FakeSlack) -> None:
    client = web(fake)
    ts = client.chat_postMessage(channel=DM, text="draft")["ts"]
    resp = client.chat_update(channel=DM, ts=ts, markdown_text="final")

    assert (resp["ts"], resp["text"]) == (ts, "final")
    (msg,) = fake.messages(DM)
    assert (msg.text, msg.updates) == ("final", 1)
    missing = api_error(lambda: client.chat_update(channel=DM, ts="1.000001", text="x"))
    assert missing.response["error"] == "message_not_found"


def test_delete_removes_a_message_even_while_streaming(fake: FakeSlack) -> None:
    client = web(fake)
    posted = client.chat_postMessage(channel=DM, text="oops")["ts"]
    streaming = client.chat_startStream(channel=DM, thread_ts="1.000001", markdown_text="half")["ts"]
    for ts in (posted, streaming):
        assert client.chat_delete(channel=DM, ts=ts)["ts"] == ts
    assert fake.messages(DM) == []
    assert [m.text for m in fake.deleted(DM)] == ["oops", "half"]
    missing = api_error(lambda: client.chat_delete(channel=DM, ts=posted))
    assert missing.response["error"] == "message_not_found"


# ---------------------------------------------------------------- streaming


def test_chat_stream_yields_one_message_with_the_whole_text(fake: FakeSlack) -> None:
    parts = ["Hello", ", ", "streaming ", "world", "!"]

    async def run() -> str:
        client = aweb(fake)
        streamer = await client.chat_stream(channel=DM, thread_ts=THREAD, buffer_size=4)
        for part in parts:
            await streamer.append(markdown_text=part)
            assert fake.messages(DM)[0].streaming
        await streamer.stop(markdown_text=" Bye.")
        assert streamer.ts is not None
        return streamer.ts

    ts = asyncio.run(run())

    (msg,) = fake.messages(DM, thread_ts=THREAD)
    assert msg.ts == ts
    assert msg.kind == "stream"
    assert msg.text == "".join(parts) + " Bye."
    assert not msg.streaming
    assert len(fake.calls_to("chat.startStream")) == 1
    assert len(fake.calls_to("chat.appendStream")) == msg.appends >= 1
    assert len(fake.calls_to("chat.stopStream")) == 1


def test_stream_to_a_channel_needs_a_recipient(fake: FakeSlack) -> None:
    client = web(fake)
    err = api_error(lambda: client.chat_startStream(channel=CHANNEL, thread_ts=THREAD, markdown_text="x"))
    assert err.response["error"] == "missing_recipient_team_id"

    client.chat_startStream(
        channel=CHANNEL,
        thread_ts=THREAD,
        markdown_text="x",
        recipient_team_id="T0TEAM1",
        recipient_user_id="U0USER1",
    )
    assert fake.messages(CHANNEL)[0].streaming


def test_stream_argument_rules(fake: FakeSlack) -> None:
    client = web(fake)
    ts = client.chat_startStream(channel=DM, thread_ts=THREAD, markdown_text="start")["ts"]
    chunk = [{"type": "markdown_text", "text": "x"}]

    def error_of(call: Callable[[], Any]) -> str:
        return str(api_error(call).response["error"])

    assert error_of(lambda: client.chat_appendStream(channel=DM, ts=ts)) == "markdown_text_or_chunks_required"
    assert error_of(lambda: client.chat_appendStream(channel=DM, ts=ts, markdown_text="a", chunks=chunk)) == (
        "cannot_provide_both_markdown_text_and_chunks"
    )
    assert (
        error_of(lambda: client.chat_appendStream(channel=DM, ts=ts, chunks=chunk))
        == "streaming_mode_mismatch"
    )
    assert (
        error_of(lambda: client.chat_appendStream(channel=DM, ts=ts, markdown_text="y" * 12_001))
        == "msg_too_long"
    )
    assert error_of(lambda: client.chat_update(channel=DM, ts=ts, text="no")) == "streaming_state_conflict"

    client.chat_appendStream(channel=DM, ts=ts, markdown_text=" more")
    client.chat_stopStream(channel=DM, ts=ts, blocks=[{"type": "divider"}])
    assert error_of(lambda: client.chat_appendStream(channel=DM, ts=ts, markdown_text="late")) == (
        "message_not_in_streaming_state"
    )
    (msg,) = fake.messages(DM)
    assert (msg.text, msg.blocks, msg.streaming) == ("start more", [{"type": "divider"}], False)


def test_chunks_of_every_type_are_recorded(fake: FakeSlack) -> None:
    client = web(fake)
    task = {"type": "task_update", "id": "t1", "title": "Searching", "status": "in_progress"}
    ts = client.chat_startStream(channel=DM, thread_ts=THREAD, chunks=[task])["ts"]
    client.chat_appendStream(channel=DM, ts=ts, chunks=[{"type": "markdown_text", "text": "answer"}])
    client.chat_stopStream(channel=DM, ts=ts, chunks=[{"type": "plan_update", "title": "Done"}])

    (msg,) = fake.messages(DM)
    assert msg.text == "answer"
    assert [c["type"] for c in msg.chunks] == ["task_update", "markdown_text", "plan_update"]
    bad = api_error(lambda: client.chat_startStream(channel=DM, thread_ts=THREAD, chunks=[{"type": "bogus"}]))
    assert bad.response["error"] == "invalid_chunks"


def test_task_and_plan_chunks_are_checked_against_their_documented_shape(fake: FakeSlack) -> None:
    client = web(fake)
    good = {
        "type": "task_update",
        "id": "t1",
        "title": "Searching the web",
        "status": "complete",
        "details": "two pages",
        "output": "found it",
        "sources": [{"type": "url", "url": "https://example.com/a", "text": "example.com"}],
    }
    ts = client.chat_startStream(channel=DM, thread_ts=THREAD, chunks=[good], task_display_mode="plan")["ts"]
    (msg,) = fake.messages(DM)
    assert msg.task_display_mode == "plan" and msg.chunks == [good]
    bad_chunks = [
        {**good, "status": "done"},  # not a task status
        {k: v for k, v in good.items() if k != "id"},
        {**good, "title": ""},
        {**good, "details": {"type": "rich_text"}},  # rich text is for task_card blocks, not chunks
        {**good, "sources": [{"type": "url", "url": "https://example.com"}]},  # a source needs its text
        {**good, "sources": [{"type": "link", "url": "https://example.com", "text": "x"}]},
        {"type": "plan_update"},
        {"type": "blocks", "blocks": [{"type": "divider"}] * 51},
    ]
    for chunk in bad_chunks:
        refused = api_error(lambda c=chunk: client.chat_appendStream(channel=DM, ts=ts, chunks=[c]))
        assert refused.response["error"] == "invalid_chunks", chunk
    mode = api_error(
        lambda: client.chat_startStream(
            channel=DM, thread_ts=THREAD, chunks=[good], task_display_mode="dense"
        )
    )
    assert mode.response["error"] == "invalid_arguments"


def test_agent_sessions_are_created_by_set_status_and_renamed(fake: FakeSlack) -> None:
    client = web(fake)

    def error_of(call: Callable[[], Any]) -> str:
        return str(api_error(call).response["error"])

    assert error_of(
        lambda: client.agents_sessions_rename(channel_id=CHANNEL, thread_ts=THREAD, title="x")
    ) == ("session_not_found")
    first = client.agents_sessions_setStatus(
        channel_id=CHANNEL, thread_ts=THREAD, status="processing", title="Trip prep"
    )
    assert (first["status"], first["agent_status"], first["title"]) == (
        "processing",
        "processing",
        "Trip prep",
    )
    assert "warning" not in first.data  # manifest.yml subscribes to agent_session_stopped
    # The title is only used when the session is created.
    later = client.agents_sessions_setStatus(
        channel_id=CHANNEL, thread_ts=THREAD, status="active", title="New"
    )
    assert later["title"] == "Trip prep"
    assert client.agents_sessions_rename(channel_id=CHANNEL, thread_ts=THREAD, title="Bora Bora")[
        "title"
    ] == ("Bora Bora")
    session = fake.session(CHANNEL, THREAD)
    assert session is not None
    assert (session.statuses, session.title, session.renames) == (
        ["processing", "active"],
        "Bora Bora",
        ["Bora Bora"],
    )
    assert error_of(
        lambda: client.agents_sessions_setStatus(channel_id=CHANNEL, thread_ts=THREAD, status="busy")
    ) == ("invalid_arguments")
    assert error_of(lambda: client.agents_sessions_setStatus(channel_id=CHANNEL, status="active")) == (
        "thread_ts_required"
    )
    assert (
        error_of(
            lambda: client.agents_sessions_setStatus(
                channel_id=CHANNEL, thread_ts="1.2", status="active", title="t" * 201
            )
        )
        == "invalid_arguments"
    )
    assert error_of(
        lambda: client.agents_sessions_rename(channel_id=CHANNEL, thread_ts=THREAD, title="t" * 201)
    ) == ("invalid_name")
    assert (
        error_of(
            lambda: client.agents_sessions_setStatus(
                channel_id=CHANNEL, thread_ts=THREAD, status="active", username="x"
            )
        )
        == "missing_scope"
    )
    assert fake.session(CHANNEL, "1.2") is None


def test_the_stop_button_stops_the_threads_streams(fake: FakeSlack) -> None:
    client = web(fake)
    chunk = [{"type": "markdown_text", "text": "so far"}]
    ts = client.chat_startStream(
        channel=CHANNEL,
        thread_ts=THREAD,
        chunks=chunk,
        recipient_team_id=fake.team_id,
        recipient_user_id="U0A",
    )["ts"]
    client.agents_sessions_setStatus(channel_id=CHANNEL, thread_ts=THREAD, status="processing")
    event = fake.stop_session(CHANNEL, THREAD, "U0A")
    assert event["type"] == "agent_session_stopped" and event["streaming_message_ts"] == [ts]
    assert (event["channel"], event["thread_ts"], event["user"]) == (CHANNEL, THREAD, "U0A")
    for call in (
        lambda: client.chat_appendStream(channel=CHANNEL, ts=ts, chunks=chunk),
        lambda: client.chat_stopStream(channel=CHANNEL, ts=ts),
    ):
        assert api_error(call).response["error"] == "stopped_by_user"
    # The session keeps its status until the app moves it on; the message can still be edited.
    assert fake.session(CHANNEL, THREAD).status == "processing"  # type: ignore[union-attr]
    client.chat_update(channel=CHANNEL, ts=ts, markdown_text="so far\n\n_Stopped._")
    (msg,) = fake.messages(CHANNEL, THREAD)
    assert msg.stopped_by_user and msg.text.endswith("_Stopped._")
    assert fake.stop_session(CHANNEL, THREAD, "U0A")["streaming_message_ts"] == []


def test_expired_stream_rejects_appends_but_accepts_update(fake: FakeSlack) -> None:
    async def run() -> None:
        client = aweb(fake)
        streamer = await client.chat_stream(channel=DM, thread_ts=THREAD, buffer_size=1)
        await streamer.append(markdown_text="first")  # chat.startStream
        await streamer.append(markdown_text=" second")  # chat.appendStream #1
        fake.expire_streams(after_appends=1)
        assert not fake.messages(DM)[0].streaming

        with pytest.raises(SlackApiError) as info:
            await streamer.append(markdown_text=" third")
        assert info.value.response["error"] == "message_not_in_streaming_state"

        assert streamer.ts is not None
        resp = await client.chat_update(channel=DM, ts=streamer.ts, markdown_text="first second third")
        assert resp["ok"]

    asyncio.run(run())

    (msg,) = fake.messages(DM)
    assert (msg.text, msg.updates, msg.expired, msg.streaming) == ("first second third", 1, True, False)
    assert [c.ok for c in fake.calls_to("chat.appendStream")] == [True, False]


def test_expiry_policy_covers_later_streams_until_switched_off(fake: FakeSlack) -> None:
    client = web(fake)
    fake.expire_streams(after_appends=2)
    ts = client.chat_startStream(channel=DM, thread_ts=THREAD, markdown_text="a")["ts"]
    client.chat_appendStream(channel=DM, ts=ts, markdown_text="b")
    client.chat_appendStream(channel=DM, ts=ts, markdown_text="c")
    err = api_error(lambda: client.chat_stopStream(channel=DM, ts=ts))
    assert err.response["error"] == "message_not_in_streaming_state"

    fake.expire_streams(None)
    ts2 = client.chat_startStream(channel=DM, thread_ts=THREAD, markdown_text="x")["ts"]
    for _ in range(3):
        client.chat_appendStream(channel=DM, ts=ts2, markdown_text="y")
    client.chat_stopStream(channel=DM, ts=ts2)
    assert [m.text for m in fake.messages(DM)] == ["abc", "xyyy"]


# ---------------------------------------------------------------- scripted failures


def test_rate_limit_reaches_a_client_without_retry_handler(fake: FakeSlack) -> None:
    fake.fail_next("chat.postMessage", "ratelimited", status=429, retry_after=7)

    async def run() -> SlackApiError:
        client = aweb(fake)
        with pytest.raises(SlackApiError) as info:
            await client.chat_postMessage(channel=DM, text="hi")
        await client.chat_postMessage(channel=DM, text="again")  # only the next call fails
        return info.value

    err = asyncio.run(run())

    assert err.response.status_code == 429
    assert err.response["error"] == "ratelimited"
    assert err.response.headers["Retry-After"] == "7"
    assert [(c.ok, c.error) for c in fake.calls_to("chat.postMessage")] == [
        (False, "ratelimited"),
        (True, None),
    ]
    assert [m.text for m in fake.messages(DM)] == ["again"]


def test_rate_limit_is_retried_by_sdk_handler(fake: FakeSlack) -> None:
    fake.fail_next("chat.postMessage", "ratelimited", status=429, retry_after=1)

    async def run() -> None:
        client = aweb(fake, retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)])
        resp = await client.chat_postMessage(channel=DM, text="hi")
        assert resp["ok"]

    asyncio.run(run())

    calls = fake.calls_to("chat.postMessage")
    assert [c.error for c in calls] == ["ratelimited", None]
    assert calls[1].at - calls[0].at >= 1.0  # the SDK honoured Retry-After
    assert [m.text for m in fake.messages(DM)] == ["hi"]


def test_fail_next_counts_down(fake: FakeSlack) -> None:
    fake.fail_next("auth.test", "internal_error", times=2, status=500)
    client = web(fake)
    for _ in range(2):
        err = api_error(client.auth_test)
        assert (err.response.status_code, err.response["error"]) == (500, "internal_error")
    assert client.auth_test()["ok"]


# ---------------------------------------------------------------- rate limits


def ratelimited(call: Callable[[], Any]) -> str:
    """The Retry-After of a call the fake refused with 429 ratelimited."""
    err = api_error(call)
    assert (err.response.status_code, err.response["error"]) == (429, "ratelimited")
    return str(err.response.headers["Retry-After"])


def test_a_tier_allows_a_burst_then_holds_to_its_rate(fake: FakeSlack) -> None:
    fake.freeze_clock()  # only advance_clock moves time: no refill while a loaded machine runs it
    client = web(fake)
    for i in range(20):  # chat.startStream is Tier 2: 20 per minute, all at once from a full bucket
        client.chat_startStream(channel=DM, thread_ts=THREAD, markdown_text=f"s{i}")

    assert (
        ratelimited(lambda: client.chat_startStream(channel=DM, thread_ts=THREAD, markdown_text="no")) == "3"
    )
    assert len(fake.messages(DM)) == 20  # the refused call did nothing
    [limited] = fake.rate_limited()
    assert (limited.method, limited.channel, limited.retry_after) == ("chat.startStream", None, 3)
    assert fake.calls_to("chat.startStream")[-1].error == "ratelimited"

    fake.advance_clock(3)  # one token back (20 per minute = one per 3 s), not two
    client.chat_startStream(channel=DM, thread_ts=THREAD, markdown_text="again")
    assert (
        ratelimited(lambda: client.chat_startStream(channel=DM, thread_ts=THREAD, markdown_text="x")) == "3"
    )
    # Other methods have their own buckets.
    ts = fake.messages(DM)[0].ts
    assert client.chat_appendStream(channel=DM, ts=ts, markdown_text="more")["ok"]


def test_tier_1_and_tier_4_retry_after(fake: FakeSlack) -> None:
    fake.freeze_clock()  # 100 calls take a while on a busy machine: no refill meanwhile
    client = web(fake)
    assert client.apps_connections_open(app_token=fake.app_token)["ok"]
    assert ratelimited(lambda: client.apps_connections_open(app_token=fake.app_token)) == "60"
    for _ in range(100):
        client.users_info(user="U0USER1")
    assert ratelimited(lambda: client.users_info(user="U0USER1")) == "1"  # 0.6 s, rounded up
    assert [r.method for r in fake.rate_limited()] == ["apps.connections.open", "users.info"]
    assert [r.method for r in fake.rate_limited("users.info")] == ["users.info"]


def test_post_message_is_limited_per_channel(fake: FakeSlack) -> None:
    fake.freeze_clock()  # only advance_clock moves time: no refill while a loaded machine runs it
    client = web(fake)
    for i in range(3):  # a short burst, then one per second per channel
        client.chat_postMessage(channel=CHANNEL, text=f"m{i}")
    assert ratelimited(lambda: client.chat_postMessage(channel=CHANNEL, text="no")) == "1"
    assert fake.rate_limited()[0].channel == CHANNEL
    assert client.chat_postMessage(channel=DM, text="elsewhere")["ok"]
    fake.advance_clock(1)
    assert client.chat_postMessage(channel=CHANNEL, text="later")["ok"]
    assert [m.text for m in fake.messages(CHANNEL)] == ["m0", "m1", "m2", "later"]


def test_post_message_workspace_limit_and_scale(fake: FakeSlack) -> None:
    fake.freeze_clock()  # only advance_clock moves time: no refill while a loaded machine runs it
    fake.set_rate_limits(scale=0.1)  # 30 per minute for the workspace, bursts of 1 per channel
    client = web(fake)
    for i in range(30):
        client.chat_postMessage(channel=f"C0WIDE{i:03d}", text="hi")
    assert ratelimited(lambda: client.chat_postMessage(channel="C0CHANNEW", text="no")) == "2"
    [limited] = fake.rate_limited()
    assert limited.channel is None  # the workspace bucket, not the channel's

    fake.set_rate_limits(enabled=False)
    for _ in range(10):
        client.chat_postMessage(channel=CHANNEL, text="unlimited")
    assert len(fake.messages(CHANNEL)) == 10


def test_assistant_status_is_limited_per_channel(fake: FakeSlack) -> None:
    fake.freeze_clock()  # only advance_clock moves time: no refill while a loaded machine runs it
    client = web(fake)
    for status in ("a", "b", "c"):
        client.assistant_threads_setStatus(channel_id=DM, thread_ts=THREAD, status=status)
    assert (
        ratelimited(lambda: client.assistant_threads_setStatus(channel_id=DM, thread_ts=THREAD, status="d"))
        == "1"
    )
    assert [s.status for s in fake.statuses(DM)] == ["a", "b", "c"]


def test_sdk_retry_handler_waits_out_a_real_limit(fake: FakeSlack) -> None:
    fake.set_rate_limit("chat.update", RateLimit(60, 1))
    ts = web(fake).chat_postMessage(channel=DM, text="v0")["ts"]

    async def run() -> None:
        client = aweb(fake, retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)])
        await client.chat_update(channel=DM, ts=ts, text="v1")
        await client.chat_update(channel=DM, ts=ts, text="v2")  # 429, Retry-After: 1, then retried

    asyncio.run(run())

    calls = fake.calls_to("chat.update")
    assert [c.error for c in calls] == [None, "ratelimited", None]
    assert calls[2].at - calls[1].at >= 1.0
    (msg,) = fake.messages(DM)
    assert (msg.text, msg.updates) == ("v2", 2)


def test_reset_refills_the_buckets(fake: FakeSlack) -> None:
    client = web(fake)
    client.apps_connections_open(app_token=fake.app_token)
    fake.set_rate_limits(scale=0.5)
    fake.reset()
    assert client.apps_connections_open(app_token=fake.app_token)["ok"]
    assert fake.rate_limited() == []


# ---------------------------------------------------------------- stream lifetime


def test_a_stream_closes_five_minutes_after_it_starts(fake: FakeSlack) -> None:
    client = web(fake)
    ts = client.chat_startStream(channel=DM, thread_ts=THREAD, markdown_text="a")["ts"]
    fake.advance_clock(299)
    client.chat_appendStream(channel=DM, ts=ts, markdown_text="b")  # appends do not extend it
    err = api_error(lambda: client.chat_update(channel=DM, ts=ts, text="x"))
    assert err.response["error"] == "streaming_state_conflict"

    fake.advance_clock(2)
    for call in (
        lambda: client.chat_appendStream(channel=DM, ts=ts, markdown_text="c"),
        lambda: client.chat_stopStream(channel=DM, ts=ts),
    ):
        assert api_error(call).response["error"] == "message_not_in_streaming_state"
    assert client.chat_update(channel=DM, ts=ts, text="ab, finished")["ok"]
    (msg,) = fake.messages(DM)
    assert (msg.text, msg.expired, msg.streaming) == ("ab, finished", True, False)


def test_stream_lifetime_is_configurable(fake: FakeSlack) -> None:
    client = web(fake)
    fake.set_stream_lifetime(10)
    ts = client.chat_startStream(channel=DM, thread_ts=THREAD, markdown_text="a")["ts"]
    fake.advance_clock(11)
    assert fake.finished(DM, THREAD) == 1  # reads see the stream closed too
    assert api_error(lambda: client.chat_stopStream(channel=DM, ts=ts)).response["error"] == (
        "message_not_in_streaming_state"
    )
    fake.set_stream_lifetime(None)
    ts2 = client.chat_startStream(channel=DM, thread_ts=THREAD, markdown_text="b")["ts"]
    fake.advance_clock(3600)
    assert client.chat_stopStream(channel=DM, ts=ts2)["ok"]


# ---------------------------------------------------------------- trigger ids


MODAL = {"type": "modal", "title": {"type": "plain_text", "text": "T"}, "blocks": []}


def test_trigger_ids_are_single_use_and_expire(fake: FakeSlack) -> None:
    client = web(fake)

    def open_error(trigger_id: str) -> str:
        return str(api_error(lambda: client.views_open(trigger_id=trigger_id, view=MODAL)).response["error"])

    trigger = fake.new_trigger_id()
    assert client.views_open(trigger_id=trigger, view=MODAL)["view"]["type"] == "modal"
    assert open_error(trigger) == "exchanged_trigger_id"
    assert open_error("12345.98765.abcd2358fdea") == "invalid_trigger_id"

    late = fake.new_trigger_id()
    fake.advance_clock(3.1)
    assert open_error(late) == "expired_trigger_id"
    pushed = fake.new_trigger_id()
    fake.advance_clock(2.9)
    assert client.views_push(trigger_id=pushed, view=MODAL)["ok"]

    fake.register_trigger_id("trig-from-a-test")
    assert client.views_open(trigger_id="trig-from-a-test", view=MODAL)["ok"]
    assert len(fake.views()) == 3


# ---------------------------------------------------------------- ephemeral visibility


def test_an_ephemeral_in_a_thread_without_replies_is_never_seen(fake: FakeSlack) -> None:
    client = web(fake)
    parent = client.chat_postMessage(channel=CHANNEL, text="top level")["ts"]

    resp = client.chat_postEphemeral(channel=CHANNEL, user="U0USER1", text="lost", thread_ts=parent)
    assert resp["ok"]  # Slack accepts it...
    assert fake.ephemerals(CHANNEL, "U0USER1") == []  # ...but the user never sees it
    [hidden] = fake.ephemerals(CHANNEL, "U0USER1", include_invisible=True)
    assert (hidden.text, hidden.visible) == ("lost", False)

    client.chat_postMessage(channel=CHANNEL, text="a reply", thread_ts=parent)
    client.chat_postEphemeral(channel=CHANNEL, user="U0USER1", text="seen", thread_ts=parent)
    client.chat_postEphemeral(channel=CHANNEL, user="U0USER1", text="top level is fine")
    assert [e.text for e in fake.ephemerals(CHANNEL, "U0USER1")] == ["seen", "top level is fine"]


def test_a_user_reply_makes_a_thread_active(fake: FakeSlack) -> None:
    client = web(fake)
    client.chat_postEphemeral(channel=DM, user="U0USER1", text="unknown parent", thread_ts=THREAD)
    fake.user_message(DM, THREAD)  # the parent alone does not make a thread
    client.chat_postEphemeral(channel=DM, user="U0USER1", text="still none", thread_ts=THREAD)
    fake.observe_event(
        {
            "type": "message",
            "channel": DM,
            "user": "U0USER1",
            "text": "hi",
            "ts": "1700000001.1",
            "thread_ts": THREAD,
        }
    )
    client.chat_postEphemeral(channel=DM, user="U0USER1", text="visible", thread_ts=THREAD)
    assert [e.text for e in fake.ephemerals(DM)] == ["visible"]
    assert [e.visible for e in fake.ephemerals(DM, include_invisible=True)] == [False, False, True]


# ---------------------------------------------------------------- assistant threads, users, views


def test_assistant_thread_calls_are_recorded(fake: FakeSlack) -> None:
    async def run() -> None:
        client = aweb(fake)
        await client.assistant_threads_setStatus(
            channel_id=DM, thread_ts=THREAD, status="is thinking...", loading_messages=["Reading", "Thinking"]
        )
        await client.assistant_threads_setStatus(channel_id=DM, thread_ts=THREAD, status="")
        await client.assistant_threads_setSuggestedPrompts(
            channel_id=DM, thread_ts=THREAD, title="Try", prompts=[{"title": "Sum", "message": "Summarize"}]
        )
        await client.assistant_threads_setTitle(channel_id=DM, thread_ts=THREAD, title="Weather")

    asyncio.run(run())

    statuses = fake.statuses(DM, THREAD)
    assert [s.status for s in statuses] == ["is thinking...", ""]
    assert statuses[0].loading_messages == ["Reading", "Thinking"]
    assert fake.suggested_prompts()[0]["prompts"] == [{"title": "Sum", "message": "Summarize"}]
    assert fake.titles() == [{"channel_id": DM, "thread_ts": THREAD, "title": "Weather"}]
    too_many = api_error(
        lambda: web(fake).assistant_threads_setStatus(
            channel_id=DM, thread_ts=THREAD, status="x", loading_messages=["m"] * 11
        )
    )
    assert too_many.response["error"] == "invalid_arguments"


def test_users_and_conversations_info(fake: FakeSlack) -> None:
    client = web(fake)
    user = client.users_info(user="U0USER1")["user"]
    assert user["tz"] == "America/New_York"
    assert user["real_name"] and user["profile"]["display_name"]
    fake.set_user("U0USER1", tz="Europe/Paris", profile={"display_name": "ana"})
    user = client.users_info(user="U0USER1")["user"]
    assert (user["tz"], user["profile"]["display_name"]) == ("Europe/Paris", "ana")
    assert user["profile"]["real_name"]  # the rest of the profile survives the override
    assert api_error(lambda: client.users_info(user="nobody")).response["error"] == "user_not_found"

    assert client.conversations_info(channel=DM)["channel"]["is_im"] is True
    assert client.conversations_info(channel=CHANNEL)["channel"]["is_im"] is False
    assert (
        api_error(lambda: client.conversations_info(channel="xyz")).response["error"] == "channel_not_found"
    )


def test_views_are_echoed_and_updatable(fake: FakeSlack) -> None:
    client = web(fake)
    home = {"type": "home", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "Hi"}}]}
    view = client.views_publish(user_id="U0USER1", view=home)["view"]
    assert view["type"] == "home" and view["blocks"] == home["blocks"] and view["id"]

    updated = client.views_update(view_id=view["id"], view={"type": "home", "blocks": []})["view"]
    assert updated["id"] == view["id"] and updated["blocks"] == []
    assert (
        api_error(lambda: client.views_update(view_id="V0NOPE", view=home)).response["error"] == "not_found"
    )
    assert [v["id"] for v in fake.views()] == [view["id"], view["id"]]


def text_input_modal(**element: Any) -> dict[str, Any]:
    box = {"type": "plain_text_input", "action_id": "box", "multiline": True, **element}
    label = {"type": "plain_text", "text": "Notes"}
    return {**MODAL, "blocks": [{"type": "input", "block_id": "b", "label": label, "element": box}]}


@pytest.mark.parametrize(
    ("element", "pointer"),
    [
        ({"max_length": 3001}, "/view/blocks/0/element/max_length"),
        ({"max_length": 0}, "/view/blocks/0/element/max_length"),
        ({"min_length": -1}, "/view/blocks/0/element/min_length"),
        ({"min_length": 3001}, "/view/blocks/0/element/min_length"),
        ({"min_length": 10, "max_length": 5}, "/view/blocks/0/element/min_length"),
        ({"max_length": 5, "initial_value": "123456"}, "/view/blocks/0/element/initial_value"),
        ({"initial_value": "x" * 3001}, "/view/blocks/0/element/initial_value"),
        ({"action_id": "a" * 256}, "/view/blocks/0/element/action_id"),
        (
            {"placeholder": {"type": "plain_text", "text": "p" * 151}},
            "/view/blocks/0/element/placeholder/text",
        ),
    ],
)
def test_views_refuse_a_text_input_over_block_kit_limits(
    fake: FakeSlack, element: dict[str, Any], pointer: str
) -> None:
    client = web(fake)
    for call in (
        lambda: client.views_open(trigger_id=fake.new_trigger_id(), view=text_input_modal(**element)),
        lambda: client.views_publish(user_id="U0USER1", view=text_input_modal(**element)),
    ):
        error = api_error(call).response
        assert error["error"] == "invalid_arguments"
        assert any(pointer in m for m in error["response_metadata"]["messages"])
    assert fake.views() == []


def test_views_take_a_text_input_at_block_kit_limits(fake: FakeSlack) -> None:
    client = web(fake)
    at_limits = text_input_modal(min_length=0, max_length=3000, initial_value="é\n " * 1000)
    view = client.views_open(trigger_id=fake.new_trigger_id(), view=at_limits)["view"]
    assert view["blocks"][0]["element"]["initial_value"] == "é\n " * 1000
    too_long = {**MODAL, "private_metadata": "m" * 3001}
    error = api_error(lambda: client.views_update(view_id=view["id"], view=too_long)).response
    assert "/view/private_metadata" in error["response_metadata"]["messages"][0]
    assert client.views_update(view_id=view["id"], view={**MODAL, "private_metadata": "m" * 3000})["ok"]


# ---------------------------------------------------------------- helpers


def test_wait_for_times_out_with_a_dump_of_recent_calls(fake: FakeSlack) -> None:
    web(fake).chat_postMessage(channel=DM, text="hello")
    with pytest.raises(AssertionError, match=r"chat\.postMessage ok"):
        fake.wait_for(lambda: False, timeout=0.1)


def test_reset_forgets_everything(fake: FakeSlack) -> None:
    client = web(fake)
    client.chat_postMessage(channel=DM, text="x")
    fake.fail_next("auth.test", "fatal_error")
    fake.expire_streams()
    fake.reset()

    assert fake.calls == [] and fake.messages(DM) == []
    assert client.auth_test()["ok"]
    ts = client.chat_startStream(channel=DM, thread_ts=THREAD, markdown_text="a")["ts"]
    assert client.chat_appendStream(channel=DM, ts=ts, markdown_text="b")["ok"]


# ---------------------------------------------------------------- Socket Mode


def test_socket_mode_round_trip(fake: FakeSlack) -> None:
    event = {
        "type": "message",
        "channel": DM,
        "user": "U0USER1",
        "text": "hi",
        "ts": THREAD,
        "channel_type": "im",
    }
    payload = fake.event_payload(event)

    async def run() -> tuple[str, list[SocketModeRequest]]:
        received: list[SocketModeRequest] = []

        async def on_request(client: Any, req: SocketModeRequest) -> None:
            received.append(req)
            await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))

        client = SocketModeClient(app_token=fake.app_token, web_client=aweb(fake))
        client.socket_mode_request_listeners.append(on_request)
        try:
            await client.connect()
            await until(fake.socket_connected)
            envelope_id = fake.socket_send(payload, retry_attempt=1, retry_reason="timeout")
            await until(lambda: any(a.get("envelope_id") == envelope_id for a in fake.socket_acks()))
        finally:
            await client.close()
        return envelope_id, received

    envelope_id, received = asyncio.run(run())

    (req,) = received
    assert (req.envelope_id, req.type, req.payload) == (envelope_id, "events_api", payload)
    assert (req.accepts_response_payload, req.retry_attempt, req.retry_reason) == (False, 1, "timeout")
    assert fake.socket_acks() == [{"envelope_id": envelope_id}]
    (opened,) = fake.calls_to("apps.connections.open")
    assert opened.ok and opened.token == fake.app_token
    fake.wait_for(lambda: not fake.socket_connected(), timeout=5)


def test_each_envelope_goes_to_one_of_several_connections(fake: FakeSlack) -> None:
    fake.set_rate_limit("apps.connections.open", RateLimit(60, 2))  # Tier 1 lets only one through at once

    async def run() -> list[list[str]]:
        seen: list[list[str]] = [[], []]
        clients = []
        for box in seen:

            async def on_request(client: Any, req: SocketModeRequest, box: list[str] = box) -> None:
                box.append(req.envelope_id)
                await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))

            client = SocketModeClient(app_token=fake.app_token, web_client=aweb(fake))
            client.socket_mode_request_listeners.append(on_request)
            clients.append(client)
        try:
            for client in clients:
                await client.connect()
            await until(lambda: len(fake.calls_to("apps.connections.open")) == 2 and fake.socket_connected())
            await asyncio.sleep(0.1)  # let the second hello go out too
            ids = [fake.socket_send({"n": i}) for i in range(4)]
            await until(lambda: len(fake.socket_acks()) == 4)
            assert sorted(seen[0] + seen[1]) == sorted(ids)
        finally:
            for client in clients:
                await client.close()
        return seen

    seen = asyncio.run(run())
    assert len(seen[0]) == len(seen[1]) == 2  # round robin, never duplicated


def test_disconnect_frame_makes_the_client_reconnect(fake: FakeSlack) -> None:
    fake.set_rate_limit("apps.connections.open", RateLimit(60, 2))  # Tier 1 would refuse the reconnection

    async def run() -> None:
        client = SocketModeClient(app_token=fake.app_token, web_client=aweb(fake))
        try:
            await client.connect()
            await until(fake.socket_connected)
            fake.socket_disconnect()
            await until(lambda: len(fake.calls_to("apps.connections.open")) == 2)
            await until(fake.socket_connected)
            assert all(c.ok for c in fake.calls_to("apps.connections.open"))
        finally:
            await client.close()

    asyncio.run(run())


def test_socket_send_without_a_client_fails_loudly(fake: FakeSlack) -> None:
    with pytest.raises(AssertionError, match="no Socket Mode client"):
        fake.socket_send({"x": 1})


def test_link_rejects_unknown_tickets(fake: FakeSlack) -> None:
    async def run() -> int:
        async with (
            aiohttp.ClientSession() as session,
            session.get(fake.socket_url + "?ticket=forged") as resp,
        ):
            return resp.status

    assert asyncio.run(run()) == 401


# ---------------------------------------------------------------- feedback buttons (issue 15)


def feedback_block(**changes: Any) -> dict[str, Any]:
    """A context_actions block with one feedback_buttons element; `changes` override its fields (element
    fields by name, `elements` / `block_id` for the block's own)."""
    element: dict[str, Any] = {
        "type": "feedback_buttons",
        "action_id": "rate",
        "positive_button": {"text": {"type": "plain_text", "text": "Good"}, "value": "good"},
        "negative_button": {"text": {"type": "plain_text", "text": "Bad"}, "value": "bad"},
    }
    block: dict[str, Any] = {"type": "context_actions", "block_id": "fb"}
    for key, value in changes.items():
        (block if key in ("elements", "block_id") else element)[key] = value
    block.setdefault("elements", [element])
    return block


def button(text: str = "Good", value: str = "good", **extra: Any) -> dict[str, Any]:
    return {"text": {"type": "plain_text", "text": text}, "value": value, **extra}


@pytest.mark.parametrize(
    ("block", "pointer"),
    [
        (feedback_block(elements=[]), "/blocks/0/elements"),
        (feedback_block(elements=[feedback_block()["elements"][0]] * 6), "/blocks/0/elements"),
        (feedback_block(elements=[{"type": "button", "text": {"type": "plain_text", "text": "x"}}]), "/0"),
        (feedback_block(block_id="b" * 256), "/blocks/0/block_id"),
        (feedback_block(action_id="a" * 256), "/action_id"),
        (feedback_block(positive_button=button("x" * 76)), "/positive_button/text/text"),
        (feedback_block(negative_button=button(value="v" * 2001)), "/negative_button/value"),
        (feedback_block(negative_button={"text": {"type": "plain_text", "text": "x"}}), "/value"),
        (feedback_block(positive_button=button(accessibility_label="l" * 76)), "/accessibility_label"),
        (feedback_block(positive_button={"text": {"type": "mrkdwn", "text": "*x*"}, "value": "v"}), "/text"),
        ({k: v for k, v in feedback_block().items() if k != "elements"}, "/blocks/0/elements"),
        ({"type": "actions", "elements": feedback_block()["elements"]}, "/blocks/0/elements/0"),
    ],
)
def test_feedback_buttons_over_block_kit_limits_are_refused(
    fake: FakeSlack, block: dict[str, Any], pointer: str
) -> None:
    client = web(fake)
    posted = client.chat_postMessage(channel=CHANNEL, text="answer")
    stream = client.chat_startStream(channel=DM, thread_ts=THREAD, markdown_text="hi")
    for call in (
        lambda: client.chat_postMessage(channel=CHANNEL, text="answer", blocks=[block]),
        lambda: client.chat_update(channel=CHANNEL, ts=posted["ts"], text="answer", blocks=[block]),
        lambda: client.chat_stopStream(channel=DM, ts=stream["ts"], blocks=[block]),
    ):
        err = api_error(call)
        assert err.response["error"] == "invalid_blocks"
        assert any(pointer in m for m in err.response["response_metadata"]["messages"]), err.response
    # Nothing was changed by the refused calls: the stream is still open, the message as posted.
    assert [m.blocks for m in fake.messages(CHANNEL)] == [[]]
    assert fake.messages(DM, THREAD)[0].streaming


def test_feedback_buttons_within_limits_land_on_the_message(fake: FakeSlack) -> None:
    client = web(fake)
    at_limits = feedback_block(
        block_id="b" * 255,
        action_id="a" * 255,
        positive_button=button("x" * 75, "v" * 2000, accessibility_label="l" * 75),
    )
    icon = {"type": "icon_button", "icon": "trash", "text": {"type": "plain_text", "text": "Delete"}}
    five = feedback_block(elements=[at_limits["elements"][0], icon, icon, icon, icon])
    stream = client.chat_startStream(channel=DM, thread_ts=THREAD, markdown_text="hi")
    client.chat_stopStream(channel=DM, ts=stream["ts"], markdown_text=" there", blocks=[at_limits])
    posted = client.chat_postMessage(channel=DM, thread_ts=THREAD, text="x", blocks=[five])
    client.chat_update(channel=DM, ts=posted["ts"], text="y", blocks=[at_limits])
    streamed, whole = fake.messages(DM, THREAD)
    assert streamed.text == "hi there" and streamed.blocks == [at_limits] and not streamed.streaming
    assert whole.blocks == [at_limits]


# ---------------------------------------------------------------- buttons in actions blocks (issue 16)


def actions_block(**changes: Any) -> dict[str, Any]:
    """An actions block with one button; `changes` override the button's fields (`elements` / `block_id`:
    the block's own)."""
    element: dict[str, Any] = {
        "type": "button",
        "action_id": "approve",
        "text": {"type": "plain_text", "text": "Approve"},
        "value": "mcpr_1",
        "style": "primary",
    }
    block: dict[str, Any] = {"type": "actions", "block_id": "ask"}
    for key, value in changes.items():
        (block if key in ("elements", "block_id") else element)[key] = value
    block.setdefault("elements", [element])
    return block


@pytest.mark.parametrize(
    ("blocks", "pointer"),
    [
        ([actions_block(elements=[])], "/blocks/0/elements"),
        ([actions_block(elements=[actions_block()["elements"][0]] * 26)], "/blocks/0/elements"),
        ([actions_block(block_id="b" * 256)], "/blocks/0/block_id"),
        ([actions_block(action_id="a" * 256)], "/elements/0/action_id"),
        ([actions_block(text={"type": "plain_text", "text": "x" * 76})], "/elements/0/text/text"),
        ([actions_block(text={"type": "mrkdwn", "text": "*x*"})], "/elements/0/text"),
        ([actions_block(value="v" * 2001)], "/elements/0/value"),
        ([actions_block(style="loud")], "/elements/0/style"),
        ([{"type": "section", "text": {"type": "mrkdwn", "text": "t" * 3001}}], "/blocks/0/text/text"),
    ],
)
def test_buttons_and_sections_over_block_kit_limits_are_refused(
    fake: FakeSlack, blocks: list[dict[str, Any]], pointer: str
) -> None:
    client = web(fake)
    posted = client.chat_postMessage(channel=CHANNEL, text="ask")
    for call in (
        lambda: client.chat_postMessage(channel=CHANNEL, text="ask", blocks=blocks),
        lambda: client.chat_update(channel=CHANNEL, ts=posted["ts"], text="ask", blocks=blocks),
    ):
        err = api_error(call)
        assert err.response["error"] == "invalid_blocks"
        assert any(pointer in m for m in err.response["response_metadata"]["messages"]), err.response
    assert [m.blocks for m in fake.messages(CHANNEL)] == [[]]


def test_buttons_within_limits_land_on_the_message(fake: FakeSlack) -> None:
    at_limits = actions_block(
        block_id="b" * 255,
        action_id="a" * 255,
        value="v" * 2000,
        text={"type": "plain_text", "text": "x" * 75},
    )
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "t" * 3000}}, at_limits]
    web(fake).chat_postMessage(channel=CHANNEL, text="ask", blocks=blocks)
    assert [m.blocks for m in fake.messages(CHANNEL)] == [blocks]
