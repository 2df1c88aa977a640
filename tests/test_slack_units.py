"""bot/slack: reading Slack payloads (messages, files, context), splitting Markdown, citation markers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bot.slack.citations import CitationRenderer, slack_source
from bot.slack.events import (
    clean_text,
    parse_command_request,
    parse_context,
    parse_files,
    parse_message_change,
    parse_user_message,
    sender_is_external,
)
from bot.slack.markdown import inside_code_block, split_point

CTX = {"team_id": "T1", "bot_user_id": "UBOT"}


def body(**event: object) -> dict:
    base = {"type": "message", "user": "U1", "text": "hi", "ts": "1.000001", "channel": "C1"}
    return {"team_id": "T1", "event_id": "Ev1", "event": {**base, **event}}


def test_clean_text_unwraps_slack_markup_and_drops_the_bots_mention() -> None:
    text = "<@UBOT> see <https://x.io/a|the doc> and <https://y.io> in <#C9|general>, <!here> &amp; <@U2>"
    assert (
        clean_text(text, "UBOT")
        == "see [the doc](https://x.io/a) and https://y.io in #general, @here & <@U2>"
    )


@pytest.mark.parametrize(
    ("event", "answerable"),
    [
        ({}, True),
        ({"subtype": "file_share"}, True),
        ({"subtype": "thread_broadcast"}, True),
        ({"subtype": "message_changed"}, False),
        ({"subtype": "message_deleted"}, False),
        ({"subtype": "bot_message", "bot_id": "B1"}, False),
        ({"bot_id": "B2"}, False),
        ({"user": "UBOT"}, False),
        ({"user": None}, False),
    ],
)
def test_only_peoples_messages_are_answered(event: dict, answerable: bool) -> None:
    assert (parse_user_message(body(**event), CTX, source="message") is not None) is answerable


def test_app_mention_without_channel_type_reads_dm_from_channel_id() -> None:
    event = {"type": "app_mention", "user": "U1", "text": "<@UBOT> yo", "ts": "1.1", "channel": "D1"}
    msg = parse_user_message({"team_id": "T1", "event": event}, CTX, source="mention")
    assert msg is not None and msg.is_dm and msg.text == "yo"


def test_parse_context_keeps_channel_entities_only() -> None:
    entities = [
        {"type": "slack#/types/channel_id", "value": "C1"},
        {"type": "slack#/types/canvas_id", "value": "F1"},
    ]
    assert parse_context({"context": {"entities": entities}}).channel_ids == ["C1"]
    assert parse_context({"context": {}}).channel_ids == []


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


def test_split_point_never_starts_a_message_with_a_link_reference_definition() -> None:
    # Mid-line, "[1]: url" is text; at the top of the next message it would define where every [1]
    # marker of that message links. The cut goes to the word break before it instead.
    text = "See the note " + "x" * 20 + " [1]: https://evil.example/ref and more words after it"
    for room in range(20, len(text)):
        rest = text[split_point(text, room) :]
        assert not rest.lstrip(" ").startswith("[1]:"), room
    assert split_point(text, 37) != len("See the note " + "x" * 20 + " ")  # the word break right before it
    # With no other break in reach, the hard cut moves into the word before the bracket.
    hard = "y" * 30 + "[1]: https://evil.example"
    assert split_point(hard, 30) == 29 and hard[29:].startswith("y[1]:")


def test_split_point_prefers_paragraphs_then_lines_then_words() -> None:
    assert split_point("short", 10) == 5
    assert split_point("aaaa bbbb\n\ncccc dddd", 16) == 11
    assert split_point("aaaa bbbb\ncccc dddd", 16) == 10
    assert split_point("aaaa bbbb cccc dddd", 12) == 10
    assert split_point("x" * 30, 12) == 12
    assert inside_code_block("text\n```py\ncode") and not inside_code_block("```a```")


def ann(**fields: object) -> SimpleNamespace:
    return SimpleNamespace(**fields)


def file_cite(file_id: str, index: int, filename: str = "x.pdf") -> SimpleNamespace:
    return ann(type="file_citation", file_id=file_id, index=index, filename=filename)


def test_markers_go_where_the_index_points_and_sources_are_numbered_once() -> None:
    r = CitationRenderer({"file-a": slack_source("report.pdf", "https://t.slack.com/files/U1/F1/report.pdf")})
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
        "3. [Ex (1)](https://example.com/a%28b%29) (example.com)"  # a web page's host shows; Slack's need not
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


# ---- Slack Connect: who is external (payload shapes: tests/harness.py connect_event_body, connect_user) ----

HOST = {"team_id": "T1", "user_id": "UBOT", "is_bot": True, "is_enterprise_install": False}


def shared(
    event: dict, *, sender: str, org: str | None = None, host_org: str | None = None, ext: bool = True
) -> dict:
    """An event in a shared channel as the installing workspace T1 receives it."""
    return {
        "team_id": sender, "enterprise_id": org, "context_team_id": sender, "context_enterprise_id": org,
        "event": {"type": "app_mention", "user": "U9", "text": "hi", "ts": "1.0", "channel": "C1", **event},
        "authorizations": [{**HOST, "enterprise_id": host_org}],
        "is_ext_shared_channel": ext,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("payload", "external"),
    [
        # Not shared, no team on the event (the usual case): the installer's own people.
        ({"team_id": "T1", "event": {"type": "message", "user": "U1"}}, False),
        # A guest: user_team / source_team / user_profile name their workspace; the envelope names it too.
        (shared({"user_team": "T2", "source_team": "T2", "team": "T2"}, sender="T2"), True),
        (shared({"user_profile": {"team": "T2"}}, sender="T2"), True),
        (shared({"team": "T2"}, sender="T2"), True),
        # user_team wins over team (Bolt: event.team is not the actor's when user_team is present).
        (shared({"user_team": "T2", "team": "T1"}, sender="T1"), True),
        # A host member in the shared channel.
        (shared({"team": "T1"}, sender="T1"), False),
        (shared({"user_team": "T1", "source_team": "T1", "team": "T1"}, sender="T1"), False),
        # No team on the sender: only an externally shared channel makes them a guest.
        (shared({}, sender="T2"), True),
        (shared({}, sender="T1", ext=False), False),
        # Enterprise Grid: a sibling workspace of the installer's org, by its pairing with the envelope.
        (shared({"user_team": "T3", "team": "T3"}, sender="T3", org="E1", host_org="E1", ext=False), False),
        (shared({"user_team": "T3", "team": "T3"}, sender="T3", org="E1", host_org="E1"), False),
        # ... or by the org id itself, as an app_mention may carry it.
        (shared({"user_team": "E1", "team": "T3"}, sender="T3", host_org="E1"), False),
        # Another org's user, whatever the envelope says about the channel.
        (shared({"user_team": "E2", "team": "T4"}, sender="T4", org="E2", host_org="E1"), True),
        (shared({"user_team": "T4"}, sender="T4", org="E2", host_org="E1"), True),
        (shared({"user_team": "E2"}, sender="T4", org="E2"), True),
    ],
)
def test_sender_is_external_reads_slack_connect_payloads(payload: dict, external: bool) -> None:
    assert sender_is_external(payload, CTX) is external


def test_commands_and_interactions_compare_the_user_with_the_token_s_own_workspace() -> None:
    # Bolt's authorize_result: the bot token's auth.test (a dict subclass), the installer.
    ctx = {"team_id": "T2", "authorize_result": {"team_id": "T1", "enterprise_id": None}}
    command = {"command": "/assistant", "team_id": "T2", "user_id": "U9", "channel_id": "D1"}
    assert sender_is_external(command, ctx) is True
    assert sender_is_external({**command, "team_id": "T1"}, {**ctx, "team_id": "T1"}) is False
    action = {"type": "message_action", "team": {"id": "T2"}, "user": {"id": "U9", "team_id": "T2"}}
    assert sender_is_external(action, ctx) is True
    org_ctx = {"authorize_result": {"team_id": "T1", "enterprise_id": "E1"}}
    sibling = {
        "type": "view_submission",
        "team": {"id": "T3", "enterprise_id": "E1"},
        "user": {"team_id": "T3"},
    }
    assert sender_is_external(sibling, org_ctx) is False
    assert sender_is_external({**command, "team_id": "T3", "enterprise_id": "E1"}, org_ctx) is False
    # Parsed requests carry the answer.
    msg = parse_user_message(shared({"user_team": "T2"}, sender="T2"), CTX, source="mention")
    assert msg is not None and msg.external and msg.workspace.team_id == "T1"
    req = parse_command_request(command, ctx)
    assert req is not None and req.external


def _change(subtype: str, **event: object) -> dict:
    before = {"type": "message", "user": "U1", "text": "<@UBOT> old", "ts": "1.000001", "thread_ts": "0.5"}
    base: dict[str, object] = {"type": "message", "subtype": subtype, "channel": "C1", "ts": "2.0"}
    if subtype == "message_deleted":
        base.update(deleted_ts="1.000001", previous_message=before)
    else:
        base.update(message={**before, "text": "<@UBOT> new <https://x.io|x>"}, previous_message=before)
    return {"team_id": "T1", "event": {**base, **event}}


def test_message_changes_name_the_message_its_thread_and_both_texts() -> None:
    deleted = parse_message_change(_change("message_deleted"), CTX)
    assert deleted is not None and deleted.deleted and deleted.ts == "1.000001"
    assert deleted.thread == "c:C1:0.5" and deleted.previous_text == "old"
    edited = parse_message_change(_change("message_changed"), CTX)
    assert edited is not None and not edited.deleted and edited.ts == "1.000001"
    assert (edited.text, edited.previous_text) == ("new [x](https://x.io)", "old")
    top_dm = _change("message_deleted", channel="D1", channel_type="im")
    top_dm["event"]["previous_message"].pop("thread_ts")
    assert parse_message_change(top_dm, CTX).thread == "u:U1"  # type: ignore[union-attr]
    # A deleted thread parent becomes a tombstone, announced as a change: it is a deletion.
    tombstone = _change("message_changed")
    tombstone["event"]["message"].update(subtype="tombstone", text="This message was deleted.")
    gone = parse_message_change(tombstone, CTX)
    assert gone is not None and gone.deleted and gone.ts == "1.000001"


@pytest.mark.parametrize(
    "payload",
    [
        _change("message_replied"),
        _change("message_deleted", previous_message={"user": "UBOT", "ts": "1.0"}),  # the app's own
        _change("message_deleted", previous_message={"bot_id": "B1", "user": "U1", "ts": "1.0"}),
        _change("message_deleted", previous_message=None),  # nothing says whose message it was
        _change("message_deleted", channel=None),
        {"team_id": "T1", "event": {"type": "message", "subtype": "message_deleted"}},
    ],
)
def test_changes_to_messages_nobody_wrote_to_the_bot_are_not_read(payload: dict) -> None:
    assert parse_message_change(payload, CTX) is None
