"""Feedback buttons (issue 15): the blocks pass the fake Slack's Block Kit checks, a button's value reads
back as written, click payloads are parsed (or refused) without Slack, and a comment is quoted inert."""

from __future__ import annotations

from datetime import date
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from bot.slack.feedback import (
    FEEDBACK_ACTION,
    CommentRef,
    FeedbackValue,
    Rating,
    comment_view,
    feedback_blocks,
    parse_feedback_click,
)
from bot.threads.feedback import comment_receipt, rating_text, thread_in_channel
from tests.fakes.slack_api import _message_block_problems, _view_problems, live_tokens

TEAM = "T0ACME"
IDS = st.text(st.characters(blacklist_characters="|", blacklist_categories=("Cs",)), min_size=1, max_size=80)


def click(value: object, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "block_actions",
        "team": {"id": TEAM},
        "user": {"id": "U0ALICE", "team_id": TEAM},
        "channel": {"id": "C0GENERAL"},
        "container": {"type": "message", "message_ts": "1.000200", "channel_id": "C0GENERAL"},
        "message": {"ts": "1.000200", "thread_ts": "1.000100"},
        "trigger_id": "t",
        "actions": [{"type": "feedback_buttons", "action_id": FEEDBACK_ACTION, "value": value}],
    }
    body.update(changes)
    return body


def test_blocks_pass_slacks_limits_and_carry_the_answer() -> None:
    blocks = feedback_blocks("resp_abc", "conv_def", "2026-12-02", "c:C0GENERAL:1.000100")
    assert _message_block_problems(blocks) == []
    [block] = blocks
    element = block["elements"][0]
    assert block["type"] == "context_actions" and element["type"] == "feedback_buttons"
    good = FeedbackValue.load(element["positive_button"]["value"])
    bad = FeedbackValue.load(element["negative_button"]["value"])
    assert good == FeedbackValue("good", "resp_abc", "conv_def", "2026-12-02", "c:C0GENERAL:1.000100")
    assert bad is not None and bad.rating == "bad"


def test_no_buttons_when_a_value_could_not_be_read_back() -> None:
    assert feedback_blocks("resp|x", "conv", "2026-12-02", "u:U0ALICE") == []
    assert feedback_blocks("r" * 2000, "conv", "2026-12-02", "u:U0ALICE") == []
    assert feedback_blocks("resp", "conv", "yesterday", "u:U0ALICE") == []


@given(IDS, IDS, IDS, st.sampled_from(["good", "bad"]), st.dates(min_value=date(2000, 1, 1)))
def test_values_read_back_as_written(
    response_id: str, conversation_id: str, thread: str, rating: str, day: date
) -> None:
    good_or_bad: Rating = "good" if rating == "good" else "bad"
    value = FeedbackValue(good_or_bad, response_id, conversation_id, day.strftime("%Y-%m-%d"), thread)
    assert FeedbackValue.load(value.dump()) == value


def test_click_payloads() -> None:
    value = FeedbackValue("bad", "resp_1", "conv_1", "2026-12-02", "c:C0GENERAL:1.000100").dump()
    parsed = parse_feedback_click(click(value), {})
    assert parsed is not None
    assert (parsed.user, parsed.channel, parsed.answer_ts, parsed.thread_ts) == (
        "U0ALICE",
        "C0GENERAL",
        "1.000200",
        "1.000100",
    )
    assert parsed.value.rating == "bad" and parsed.workspace.team_id == TEAM
    # Not ours, not a feedback click, or unreadable: nothing.
    for body in (
        click("meh|resp_1|conv_1|2026-12-02|u:U0ALICE"),
        click("good|resp_1|conv_1|2026-12-2|u:U0ALICE"),
        click("good|resp_1|conv_1|u:U0ALICE"),
        click(value, actions=[{"type": "button", "action_id": FEEDBACK_ACTION, "value": value}]),
        click(value, actions=[{"type": "feedback_buttons", "action_id": "other", "value": value}]),
        click(value, actions=[]),
        click(value, user={}),
        click(value, channel={}, container={}),
        click(value, message={}, container={}),
        click(12),
        click("good|resp_1|conv_1|2026-12-02|u:U0ALICE|x"),
    ):
        assert parse_feedback_click(body, {}) is None


def test_comment_modal_within_limits_and_its_reference_reads_back() -> None:
    ref = CommentRef("C0GENERAL", "1.000200", "1.000100", "c:C0GENERAL:1.000100")
    view = comment_view(ref)
    assert _view_problems(view) == []
    assert CommentRef.load(view["private_metadata"]) == ref
    for forged in ("", "[1,2]", '["C", "1", null, ""]', "x" * 3001, '["C", "1", 5, "t"]'):
        assert CommentRef.load(forged) is None


def test_comment_receipt_is_inert() -> None:
    receipt = comment_receipt("<!channel> see <https://evil.example|docs>\n& <@U0BOSS>")
    assert live_tokens(receipt) == []
    assert "&lt;!channel&gt;" in receipt and receipt.count("\n> ") == 2


def test_values_and_places() -> None:
    assert rating_text(3, 1) == "good=3 bad=1"
    assert thread_in_channel("c:C0GENERAL:1.0", "C0GENERAL")
    assert not thread_in_channel("c:C0OTHER:1.0", "C0GENERAL")
    assert thread_in_channel("u:U0ALICE", "D0ALICE") and not thread_in_channel("u:U0ALICE", "C0GENERAL")
