"""bot/files: which URLs get the token, which files are taken, file settings and keys, `sandbox:` links."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bot.files.downloads import classify, token_allowed
from bot.files.errors import FileTypeRefused
from bot.files.generated import SandboxLinks
from bot.keys import Keys
from bot.models import SharedFile
from bot.settings import Settings


def settings(**overrides: object) -> Settings:
    return Settings(slack_bot_token="xoxb-1", openai_api_key="k", **overrides)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://files.slack.com/files-pri/T1-F1/download/a.pdf", True),
        ("https://acme.slack.com/files-pri/T1-F1/a.pdf", True),
        ("https://a.slack-edge.com/x.png", True),
        ("http://files.slack.com/files-pri/T1-F1/a.pdf", False),  # never in clear text
        ("https://files.slack.com:8443/x", False),
        ("https://evil.com/files.slack.com/x", False),
        ("https://files.slack.com.evil.com/x", False),
        ("https://slack.com.evil.com/x", False),
        ("https://evilslack.com/x", False),
        ("https://user@evil.com/x", False),
        ("ftp://files.slack.com/x", False),
        ("not a url", False),
        ("", False),
    ],
)
def test_the_token_goes_only_to_slacks_file_hosts(url: str, allowed: bool) -> None:
    assert token_allowed(url, settings()) is allowed


def test_with_a_local_api_url_only_that_exact_origin_is_added() -> None:
    local = settings(slack_api_url="http://127.0.0.1:4000/api/")
    assert token_allowed("http://127.0.0.1:4000/files-pri/T-F/download/a.pdf", local)
    assert not token_allowed("http://127.0.0.1:4001/files-pri/T-F/download/a.pdf", local)
    assert not token_allowed("https://127.0.0.1:4000/x", local)
    assert not token_allowed("http://localhost:4000/x", local)


def test_documents_and_images_are_told_apart_and_other_types_refused() -> None:
    s = settings()
    assert classify(SharedFile(id="F1", name="Report.PDF"), s) == "document"
    assert classify(SharedFile(id="F1", name="photo.jpeg"), s) == "image"
    assert classify(SharedFile(id="F1", name="notes", filetype="markdown"), s) == "document"
    with pytest.raises(FileTypeRefused) as refused:
        classify(SharedFile(id="F1", name="setup.exe"), s)
    assert "`setup.exe`" in refused.value.user_message and ".exe" in refused.value.user_message
    with pytest.raises(FileTypeRefused):
        classify(SharedFile(id="F1", name="doc.pdf", mode="external"), s)
    narrow = settings(file_document_types="md", file_image_types="[]")
    with pytest.raises(FileTypeRefused):
        classify(SharedFile(id="F1", name="a.png"), narrow)


def test_file_settings_are_lists_and_bytes() -> None:
    s = settings(file_max_mb=0.5, knowledge_vector_store_ids='["vs_a","vs_b"]', file_image_types=".PNG, gif")
    assert s.file_max_bytes == 512 * 1024
    assert s.knowledge_vector_store_ids == ["vs_a", "vs_b"] and s.file_image_types == ["png", "gif"]


def test_file_bounds_have_sensible_defaults_and_refuse_nonsense() -> None:
    s = settings()
    assert (s.file_download_concurrency, s.file_turn_deadline_seconds, s.generated_files_max) == (
        4,
        150.0,
        10,
    )
    assert (s.thread_file_quota_files, s.thread_file_quota_bytes) == (100, 500 * 1024 * 1024)
    for bad in (
        {"file_download_concurrency": 0},
        {"file_turn_deadline_seconds": 0},
        {"generated_files_max": -1},
    ):
        with pytest.raises(ValidationError):
            settings(**bad)
    # The quota lives beside the thread's other file records: namespaced and slot-safe per workspace.
    assert Keys("T1", "E1").thread_file_quota("u:U1") == "sa:{E1:T1}:fquota:u:U1"


def test_uploads_keys_round_trip() -> None:
    keys = Keys("T1", "E1")
    assert Keys.parse_uploads(keys.thread_uploads("c:C1:1.2")) == (keys, "c:C1:1.2")
    assert Keys.parse_uploads(Keys("T1").thread_uploads("u:U1")) == (Keys("T1"), "u:U1")
    assert Keys.parse_uploads(keys.thread_files("c:C1:1.2")) is None


def test_sandbox_links_become_file_names_however_the_stream_splits_them() -> None:
    text = (
        "See [the chart](sandbox:/mnt/data/chart.png)[1], the table sandbox:/mnt/data/t.csv and "
        "[a real link](https://example.com) plus a list [1, 2] and x[0]."
    )
    want = (
        "See the chart[1], the table t.csv and [a real link](https://example.com) "
        "plus a list [1, 2] and x[0]."
    )
    for size in (1, 2, 3, 5, 8, 13, len(text)):
        links = SandboxLinks()
        out = "".join(links.feed(text[i : i + size]) for i in range(0, len(text), size)) + links.flush()
        assert out == want, size


def test_sandbox_links_hold_back_only_what_could_still_become_a_link() -> None:
    links = SandboxLinks()
    assert links.feed("Plain text, ") == "Plain text, "
    assert links.feed("then [chart](sand") == "then "  # could still be a sandbox link
    assert links.feed("box:/mnt/data/c.png) done") == "chart done"
    assert links.feed("[docs](https://") == "[docs](https://"  # a web link goes straight through
    assert links.flush() == ""
