"""The Slack fake's files: files.info, and downloads that need the bot token (else the sign-in page)."""

from __future__ import annotations

import http.client
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from tests.fakes.slack_api import FakeSlack


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as f:
        yield f


def fetch(url: str, token: str | None = None) -> tuple[str, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as resp:
        return resp.headers.get_content_type(), resp.read()


def test_files_info_returns_the_file_object(fake: FakeSlack) -> None:
    file = fake.add_file("report.pdf", b"%PDF-1.4 hello", mimetype="application/pdf")
    assert file["id"].startswith("F") and file["size"] == 14 and file["filetype"] == "pdf"
    assert file["url_private_download"].startswith(fake.api_url.removesuffix("api/") + "files-pri/")
    assert file["permalink"] == f"https://fake-team.slack.com/files/U0ALICE/{file['id']}/report.pdf"
    info = WebClient(token=fake.bot_token, base_url=fake.api_url).files_info(file=file["id"])
    assert info["file"] == file
    with pytest.raises(SlackApiError) as err:
        WebClient(token=fake.bot_token, base_url=fake.api_url).files_info(file="F0NOPE")
    assert err.value.response["error"] == "file_not_found"
    stub = fake.connect_stub(file)
    assert stub == {
        "id": file["id"], "mode": "file_access", "file_access": "check_file_info",
        "created": 0, "timestamp": 0, "user": "",
    }  # fmt: skip


def test_downloads_need_the_bot_token_and_are_recorded(fake: FakeSlack) -> None:
    file = fake.add_file("notes.txt", b"plain notes", mimetype="text/plain")
    assert fetch(file["url_private_download"], fake.bot_token) == ("text/plain", b"plain notes")
    assert fetch(file["url_private"], fake.bot_token)[1] == b"plain notes"
    kind, body = fetch(file["url_private_download"])
    assert kind == "text/html" and b"Sign in" in body
    assert fetch(file["url_private_download"], "xoxb-wrong")[0] == "text/html"
    fake.refuse_downloads()
    assert fetch(file["url_private_download"], fake.bot_token)[0] == "text/html"
    got = fake.downloads
    assert [d.served for d in got] == [True, True, False, False, False]
    assert got[0].headers["Authorization"] == f"Bearer {fake.bot_token}"
    assert "Authorization" not in got[2].headers
    fake.refuse_downloads(False)
    fake.redirect_downloads("http://127.0.0.1:9/elsewhere")
    parts = urllib.parse.urlsplit(file["url_private_download"])
    conn = http.client.HTTPConnection(parts.netloc, timeout=5)  # does not follow redirects
    conn.request("GET", parts.path, headers={"Authorization": f"Bearer {fake.bot_token}"})
    moved = conn.getresponse()
    assert (moved.status, moved.getheader("Location")) == (302, "http://127.0.0.1:9/elsewhere")
    conn.close()
    fake.reset()
    assert fake.downloads == []
    with pytest.raises(urllib.error.HTTPError) as gone:  # reset forgets the file too
        fetch(file["url_private_download"], fake.bot_token)
    assert gone.value.code == 404


def test_held_downloads_wait_are_counted_in_flight_and_end_when_the_client_hangs_up(
    fake: FakeSlack,
) -> None:
    files = [fake.add_file(f"f{i}.txt", f"file {i}".encode(), mimetype="text/plain") for i in range(3)]
    fake.hold_downloads("f0.txt", "f1.txt")
    results: dict[str, bytes] = {}

    def get(file: dict[str, str]) -> None:
        results[file["name"]] = fetch(file["url_private_download"], fake.bot_token)[1]

    threads = [threading.Thread(target=get, args=(f,)) for f in files[:2]]
    for t in threads:
        t.start()
    fake.wait_for(lambda: fake.downloads_in_flight == 2)
    assert fetch(files[2]["url_private_download"], fake.bot_token)[1] == b"file 2"  # not held
    assert results == {} and fake.downloads_in_flight == 2
    fake.release_downloads("f0.txt")
    threads[0].join(5)
    assert results == {"f0.txt": b"file 0"} and fake.downloads_in_flight == 1
    fake.release_downloads()
    threads[1].join(5)
    assert results["f1.txt"] == b"file 1"
    assert fake.downloads_in_flight == 0 and fake.peak_downloads_in_flight == 3
    assert [d.path.rsplit("/", 1)[-1] for d in fake.downloads] == ["f2.txt", "f0.txt", "f1.txt"]

    # Held for every file; a client that hangs up ends its download there, unserved.
    fake.hold_downloads()
    parts = urllib.parse.urlsplit(files[0]["url_private_download"])
    conn = http.client.HTTPConnection(parts.netloc, timeout=5)
    conn.request("GET", parts.path, headers={"Authorization": f"Bearer {fake.bot_token}"})
    fake.wait_for(lambda: fake.downloads_in_flight == 1)
    conn.close()
    fake.wait_for(lambda: fake.downloads_in_flight == 0)
    assert fake.abandoned_downloads == ["f0.txt"] and len(fake.downloads) == 3
