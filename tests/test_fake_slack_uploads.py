"""File uploads (files_upload_v2's three steps), files.info, file downloads and chat.getPermalink in the Slack
fake, driven by the real slack_sdk clients."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack_api import FakeSlack, Upload

DM = "D0DM00001"
CHANNEL = "C0CHAN001"
THREAD = "1700000000.000100"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(200))


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as f:
        yield f


def aweb(fake: FakeSlack, token: str | None = None) -> AsyncWebClient:
    return AsyncWebClient(token=token or fake.bot_token, base_url=fake.api_url)


def upload(fake: FakeSlack, **kwargs: Any) -> Any:
    async def go() -> Any:
        return await aweb(fake).files_upload_v2(**kwargs)

    return asyncio.run(go())


def api_error(fake: FakeSlack, method: str, token: str | None = None, **params: Any) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        with pytest.raises(SlackApiError) as info:
            await aweb(fake, token).api_call(method, params=params)
        return dict(info.value.response.data)  # type: ignore[arg-type]

    return asyncio.run(go())


def test_files_upload_v2_shares_a_file_in_a_thread(fake: FakeSlack) -> None:
    response = upload(
        fake,
        channel=CHANNEL,
        thread_ts=THREAD,
        file=PNG,
        filename="chart.png",
        initial_comment="Here is your chart",
    )
    file = response["file"]
    assert file["id"].startswith("F") and file["name"] == "chart.png" and file["title"] == "chart.png"
    assert file["mimetype"] == "image/png" and file["size"] == len(PNG)
    assert file["permalink"].startswith("https://fake-team.slack.com/files/U0BOT/" + file["id"])
    assert response["files"] == [file]
    assert file["shares"] == {}  # Slack shares asynchronously: the completion does not show it yet

    [recorded] = fake.uploads(CHANNEL, thread_ts=THREAD)
    assert recorded == Upload(
        file_id=file["id"],
        filename="chart.png",
        title="chart.png",
        content=PNG,
        mimetype="image/png",
        channel=CHANNEL,
        thread_ts=THREAD,
        initial_comment="Here is your chart",
        permalink=file["permalink"],
        share_ts=recorded.share_ts,
    )
    assert recorded.share_ts is not None
    assert fake.uploads(DM) == [] and fake.uploads(CHANNEL, thread_ts="1.2") == []
    # The upload URL pointed at the fake itself, and every API call carried the bot token.
    [url_call] = fake.calls_to("files.getUploadURLExternal")
    assert url_call.args["filename"] == "chart.png" and str(url_call.args["length"]) == str(len(PNG))
    assert [c.method for c in fake.calls] == ["files.getUploadURLExternal", "files.completeUploadExternal"]
    assert all(c.ok and c.token == fake.bot_token for c in fake.calls)

    info = WebClient(token=fake.bot_token, base_url=fake.api_url).files_info(file=file["id"])
    [share] = info["file"]["shares"]["public"][CHANNEL]
    assert (share["ts"], share["thread_ts"]) == (recorded.share_ts, THREAD)
    assert info["file"]["channels"] == [CHANNEL]


def test_several_files_in_one_share_with_titles(fake: FakeSlack) -> None:
    response = upload(
        fake,
        channel=DM,
        thread_ts=THREAD,
        file_uploads=[
            {"file": b"a,b\n1,2\n", "filename": "data.csv", "title": "The data"},
            {"content": "print(1)", "filename": "run.py"},
        ],
    )
    assert [f["title"] for f in response["files"]] == ["The data", "run.py"]
    assert "file" not in response.data  # the SDK sets it only for a single file
    first, second = fake.uploads(DM, THREAD)
    assert (first.content, first.mimetype, first.title) == (b"a,b\n1,2\n", "text/csv", "The data")
    assert (second.content, second.filename, second.initial_comment) == (b"print(1)", "run.py", None)
    assert first.share_ts == second.share_ts  # one message shares both
    info = WebClient(token=fake.bot_token, base_url=fake.api_url).files_info(file=first.file_id)
    assert list(info["file"]["shares"]["private"]) == [DM] and info["file"]["ims"] == [DM]


def test_upload_without_a_channel_stays_private(fake: FakeSlack) -> None:
    response = upload(fake, content="secret", filename="notes.txt")
    [recorded] = fake.uploads()
    assert (recorded.channel, recorded.thread_ts, recorded.share_ts) == (None, None, None)
    assert recorded.file_id == response["file"]["id"] and recorded.content == b"secret"
    assert fake.uploads(CHANNEL) == []


def test_sync_client_and_multipart_upload_work_too(fake: FakeSlack) -> None:
    client = WebClient(token=fake.bot_token, base_url=fake.api_url)
    assert client.files_upload_v2(channel=CHANNEL, content=b"xyz", filename="x.bin")["file"]["size"] == 3

    async def multipart() -> str:
        got = await aweb(fake).files_getUploadURLExternal(filename="m.txt", length=5)
        form = aiohttp.FormData()
        form.add_field("filename", b"hello", filename="m.txt")
        async with aiohttp.ClientSession() as session, session.post(got["upload_url"], data=form) as r:
            assert r.status == 200 and (await r.text()) == "OK - 5"
        await aweb(fake).files_completeUploadExternal(files=[{"id": got["file_id"]}], channel_id=CHANNEL)
        return str(got["file_id"])

    file_id = asyncio.run(multipart())
    assert [(u.file_id, u.content) for u in fake.uploads(CHANNEL)][-1] == (file_id, b"hello")


def test_failed_byte_upload_raises_and_records_nothing(fake: FakeSlack) -> None:
    fake.fail_uploads(500)
    with pytest.raises(SlackRequestError, match="status: 500"):
        upload(fake, channel=CHANNEL, content="x", filename="x.txt")
    assert fake.uploads() == [] and fake.calls_to("files.completeUploadExternal") == []
    upload(fake, channel=CHANNEL, content="x", filename="x.txt")  # one failure only
    assert len(fake.uploads(CHANNEL)) == 1


@pytest.mark.parametrize(
    ("method", "params", "error"),
    [
        ("files.getUploadURLExternal", {"length": 3}, "invalid_arguments"),
        ("files.getUploadURLExternal", {"filename": "a.txt"}, "invalid_arguments"),
        ("files.getUploadURLExternal", {"filename": "a.txt", "length": "many"}, "invalid_arguments"),
        ("files.getUploadURLExternal", {"filename": "a.txt", "length": 0}, "missing_argument"),
        (
            "files.getUploadURLExternal",
            {"filename": "a", "length": 1, "alt_txt": "x" * 1001},
            "alt_txt_too_large",
        ),
        ("files.completeUploadExternal", {"channel_id": CHANNEL}, "invalid_arguments"),
        ("files.completeUploadExternal", {"files": "not json"}, "invalid_arguments"),
        ("files.completeUploadExternal", {"files": '[{"title": "no id"}]'}, "invalid_arguments"),
        ("files.completeUploadExternal", {"files": '[{"id": "F0NOPE"}]'}, "file_not_found"),
        ("files.info", {"file": "F0NOPE"}, "file_not_found"),
        ("files.info", {}, "invalid_arguments"),
        ("chat.getPermalink", {"channel": CHANNEL}, "invalid_arguments"),
        ("chat.getPermalink", {"channel": "nope", "message_ts": THREAD}, "channel_not_found"),
        ("chat.getPermalink", {"channel": CHANNEL, "message_ts": "yesterday"}, "message_not_found"),
    ],
)
def test_argument_errors(fake: FakeSlack, method: str, params: dict[str, Any], error: str) -> None:
    assert api_error(fake, method, **params)["error"] == error


def test_completion_needs_uploaded_bytes_a_valid_channel_and_happens_once(fake: FakeSlack) -> None:
    async def get_url() -> dict[str, Any]:
        return dict((await aweb(fake).files_getUploadURLExternal(filename="a.txt", length=1)).data)  # type: ignore[arg-type]

    got = asyncio.run(get_url())
    assert got["upload_url"].startswith(fake.api_url.removesuffix("api/") + "upload/v1/")
    files = f'[{{"id": "{got["file_id"]}"}}]'
    # Not uploaded yet.
    assert api_error(fake, "files.completeUploadExternal", files=files)["error"] == "file_not_found"
    [complete] = [c for c in fake.calls if c.method == "files.completeUploadExternal"]
    assert not complete.ok

    async def send_and_complete(channel: str) -> Any:
        async with aiohttp.ClientSession() as session, session.post(got["upload_url"], data=b"A") as r:
            assert r.status == 200
        return await aweb(fake).files_completeUploadExternal(
            files=[{"id": got["file_id"]}], channel_id=channel
        )

    with pytest.raises(SlackApiError) as bad_channel:
        asyncio.run(send_and_complete("U0USER1"))  # a user id is not a channel id
    assert bad_channel.value.response["error"] == "invalid_arguments"
    assert asyncio.run(send_and_complete(DM))["ok"] is True
    assert api_error(fake, "files.completeUploadExternal", files=files)["error"] == "file_not_found"
    assert len(fake.uploads(DM)) == 1


def test_upload_methods_need_the_bot_token(fake: FakeSlack) -> None:
    params = {"filename": "a.txt", "length": 1}
    assert (
        api_error(fake, "files.getUploadURLExternal", token="xoxb-wrong", **params)["error"] == "invalid_auth"
    )
    assert (
        api_error(fake, "files.completeUploadExternal", token=fake.app_token, files="[]")["error"]
        == "not_allowed_token_type"
    )
    with pytest.raises(SlackApiError) as info:
        WebClient(base_url=fake.api_url).files_getUploadURLExternal(filename="a.txt", length=1)
    assert info.value.response["error"] == "not_authed"
    fake.fail_next("files.completeUploadExternal", "ratelimited", status=429, retry_after=3)
    with pytest.raises(SlackApiError) as limited:
        upload(fake, channel=CHANNEL, content="x", filename="x.txt")
    assert limited.value.response.status_code == 429 and fake.uploads() == []


def test_get_permalink(fake: FakeSlack) -> None:
    client = WebClient(token=fake.bot_token, base_url=fake.api_url)
    reply = client.chat_postMessage(channel=CHANNEL, thread_ts=THREAD, text="in thread")
    top = client.chat_postMessage(channel=CHANNEL, text="top level")
    thread_link = client.chat_getPermalink(channel=CHANNEL, message_ts=reply["ts"])
    assert thread_link["channel"] == CHANNEL
    assert thread_link["permalink"] == (
        f"https://fake-team.slack.com/archives/{CHANNEL}/p{reply['ts'].replace('.', '')}"
        f"?thread_ts={THREAD}&cid={CHANNEL}"
    )
    top_link = client.chat_getPermalink(channel=CHANNEL, message_ts=top["ts"])["permalink"]
    assert top_link.endswith(f"/archives/{CHANNEL}/p{top['ts'].replace('.', '')}")
    # A user's message (unknown to the fake) still gets a link; so does a file share.
    assert client.chat_getPermalink(channel=CHANNEL, message_ts=THREAD)["permalink"].endswith(
        "p1700000000000100"
    )
    upload(fake, channel=CHANNEL, thread_ts=THREAD, content="x", filename="x.txt")
    [shared] = fake.uploads(CHANNEL)
    assert shared.share_ts is not None
    share_link = client.chat_getPermalink(channel=CHANNEL, message_ts=shared.share_ts)["permalink"]
    assert share_link.endswith(f"?thread_ts={THREAD}&cid={CHANNEL}")


def test_user_files_can_be_downloaded_with_the_bot_token(fake: FakeSlack) -> None:
    file = fake.add_file("sales.csv", b"month,total\njan,3\n", user="U0USER1")
    assert file["mimetype"] == "text/csv" and file["user"] == "U0USER1" and file["size"] == 18
    info = WebClient(token=fake.bot_token, base_url=fake.api_url).files_info(file=file["id"])
    assert info["file"]["url_private_download"] == file["url_private_download"]

    async def download(url: str, token: str | None) -> tuple[str, bytes]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as r:
            assert r.status == 200
            return r.content_type, await r.read()

    assert asyncio.run(download(file["url_private_download"], fake.bot_token)) == (
        "text/csv",
        b"month,total\njan,3\n",
    )
    assert asyncio.run(download(file["url_private"], fake.bot_token))[1] == b"month,total\njan,3\n"
    # Like Slack: without the token the URL answers a sign-in page, not the file.
    content_type, body = asyncio.run(download(file["url_private_download"], None))
    assert content_type == "text/html" and b"month" not in body
    # Uploaded files are downloadable the same way.
    response = upload(fake, channel=CHANNEL, content=b"made by the bot", filename="out.txt")
    assert (
        asyncio.run(download(response["file"]["url_private_download"], fake.bot_token))[1]
        == b"made by the bot"
    )


def test_reset_forgets_uploads_and_files(fake: FakeSlack) -> None:
    upload(fake, channel=CHANNEL, content="x", filename="x.txt")
    file = fake.add_file("a.txt", b"a")
    fake.fail_uploads(500)
    fake.reset()
    assert fake.uploads() == []
    assert api_error(fake, "files.info", file=file["id"])["error"] == "file_not_found"
    upload(fake, channel=CHANNEL, content="y", filename="y.txt")  # the scripted failure is gone too
    assert [u.content for u in fake.uploads()] == [b"y"]
