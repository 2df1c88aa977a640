"""Pure parts of files and citations: which URLs get the token, which files are taken, how citing looks."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bot.citations import CitationRenderer, Source
from bot.file_errors import FileTypeRefused
from bot.keys import Keys
from bot.settings import Settings
from bot.slack_events import parse_user_message
from bot.slack_files import SharedFile, classify, parse_files, token_allowed


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


def test_files_are_read_from_events_including_slack_connect_stubs() -> None:
    stub = {"id": "F9", "mode": "file_access", "file_access": "check_file_info", "created": 0, "user": ""}
    full = {"id": "F1", "name": "a.pdf", "size": 3, "url_private_download": "https://files.slack.com/x"}
    tomb = {"id": "F2", "mode": "tombstone"}
    files = parse_files({"files": [stub, full, tomb, "junk"]})
    assert [f.id for f in files] == ["F9", "F1"]
    assert files[0].needs_lookup and not files[1].needs_lookup
    event = {
        "type": "message",
        "subtype": "file_share",
        "user": "U1",
        "text": "",
        "ts": "1.1",
        "channel": "C1",
    }
    msg = parse_user_message(
        {"team_id": "T1", "event": {**event, "files": [full]}}, {"bot_user_id": "UB"}, source="message"
    )
    assert msg is not None and [f.name for f in msg.files] == ["a.pdf"]


def ann(**fields: object) -> SimpleNamespace:
    return SimpleNamespace(**fields)


def file_cite(file_id: str, index: int, filename: str = "x.pdf") -> SimpleNamespace:
    return ann(type="file_citation", file_id=file_id, index=index, filename=filename)


def test_markers_go_where_the_index_points_and_sources_are_numbered_once() -> None:
    r = CitationRenderer({"file-a": Source("report.pdf", "https://t.slack.com/files/U1/F1/report.pdf")})
    out = r.text("Launch is in March.")
    out += r.annotate(file_cite("file-a", 19))  # right after the text it cites
    out += r.annotate(file_cite("file-a", 19))  # the same source at the same spot: one marker
    out += r.annotate(file_cite("file-b", 29, "handbook.pdf"))  # ahead of the text: waits
    out += r.text(" Budget is 5k, see the book.")
    out += r.annotate(file_cite("file-a", 47))
    url = ann(type="url_citation", url="https://example.com/a(b)", title="Ex [1]", start_index=0, end_index=5)
    out += r.annotate(url)  # late: placed where the answer has got to
    out += r.footer()
    assert out == (
        "Launch is in March.[1] Budget is[2] 5k, see the book.[1][3]\n\n**Sources**\n"
        "1. [report.pdf](https://t.slack.com/files/U1/F1/report.pdf)\n"
        "2. handbook.pdf\n"
        "3. [Ex (1)](https://example.com/a%28b%29)"
    )


def test_footer_closes_an_open_code_block_and_is_empty_without_citations() -> None:
    assert CitationRenderer().footer() == ""
    r = CitationRenderer()
    text = r.text("```python\nprint(1)\n")
    marker = r.annotate(
        ann(type="url_citation", url="javascript:alert(1)", title="t", start_index=0, end_index=3)
    )
    assert marker == "[1]"
    footer = r.footer()
    assert footer.startswith("\n```\n\n**Sources**") and footer.endswith("1. t")  # no link to a non-web URL
    assert (text + marker).count("```") == 1
    other = CitationRenderer()
    assert other.annotate(ann(type="file_path", file_id="f", index=0)) == ""  # a kind it does not show
    as_dict = {"type": "file_citation", "file_id": "f", "filename": "d.txt", "index": 0}
    assert other.annotate(as_dict) == "[1]" and other.footer().endswith("1. d.txt")


def test_a_marker_pointing_past_the_text_ends_up_before_the_footer() -> None:
    r = CitationRenderer()
    r.text("Short.")
    assert r.annotate(file_cite("file-z", 99, "z.txt")) == ""
    assert r.footer() == "[1]\n\n**Sources**\n1. z.txt"


def test_file_settings_are_lists_and_bytes() -> None:
    s = settings(file_max_mb=0.5, knowledge_vector_store_ids='["vs_a","vs_b"]', file_image_types=".PNG, gif")
    assert s.file_max_bytes == 512 * 1024
    assert s.knowledge_vector_store_ids == ["vs_a", "vs_b"] and s.file_image_types == ["png", "gif"]


def test_uploads_keys_round_trip() -> None:
    keys = Keys("T1", "E1")
    assert Keys.parse_uploads(keys.thread_uploads("c:C1:1.2")) == (keys, "c:C1:1.2")
    assert Keys.parse_uploads(Keys("T1").thread_uploads("u:U1")) == (Keys("T1"), "u:U1")
    assert Keys.parse_uploads(keys.thread_files("c:C1:1.2")) is None


def test_generated_file_citation_links_the_uploaded_file_and_positions_count_per_part() -> None:
    r = CitationRenderer()
    first = r.text("Plotted. ")
    r.next_part()  # the next response of a tool loop: its annotation positions start at 0 again
    second = r.text("See chart.png")
    marker = r.annotate(
        ann(type="container_file_citation", container_id="c", file_id="cf1", filename="chart.png",
            start_index=4, end_index=13)
    )  # fmt: skip
    assert first + second + marker == "Plotted. See chart.png[1]"
    assert r.footer().endswith("1. chart.png")  # not uploaded yet: named, not linked
    r.link_file("cf1", "chart.png", "https://team.slack.com/files/U1/F1/chart.png")
    r.link_file("cf2", "data.csv", "https://team.slack.com/files/U1/F2/data.csv")  # written, not cited
    assert r.footer().endswith(
        "1. [chart.png](https://team.slack.com/files/U1/F1/chart.png)\n"
        "2. [data.csv](https://team.slack.com/files/U1/F2/data.csv)"
    )
