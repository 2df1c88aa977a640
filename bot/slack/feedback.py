"""Feedback buttons on answers (issue 15 item 3): the blocks, the 👎 comment modal, and pure parsing of the
click (`block_actions`) and of the modal's submission. Recording lives in `bot.threads.feedback`.

The buttons are Slack's `feedback_buttons` element in a `context_actions` block, sent as `blocks` on the
answer's chat.stopStream (docs.slack.dev/reference/block-kit/block-elements/feedback-buttons-element). Each
button's value names the rating, the response that wrote the answer, its conversation and the assistant
thread (`FeedbackValue`): Slack sends it back on a click, signed, from the bot's own message only.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from slack_sdk.models.blocks import (
    ContextActionsBlock,
    FeedbackButtonObject,
    FeedbackButtonsElement,
    InputBlock,
    PlainTextInputElement,
)

from bot.models import Workspace
from bot.slack.events import metadata_fields, sender_is_external, workspace_of

log = logging.getLogger(__name__)

FEEDBACK_ACTION = "answer_feedback"
FEEDBACK_BLOCK = "answer_feedback"
COMMENT_CALLBACK = "answer_feedback_comment"
COMMENT_BLOCK = "comment_block"
COMMENT_INPUT = "comment"
# A comment is kept short: it is a note on one answer, not a report (Slack's box allows 3000).
COMMENT_MAX_CHARS = 1000
# Slack's limit on a feedback button's value (FeedbackButtonObject.value_max_length).
VALUE_MAX_CHARS = 2000

Rating = Literal["good", "bad"]
RATINGS: tuple[Rating, ...] = ("good", "bad")
_SEP = "|"
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class FeedbackValue:
    """What one button carries: `rating|response id|conversation id|day|thread ref`; `day` is the UTC day
    the answer was posted (YYYY-MM-DD), which its ratings count on. OpenAI ids never hold `|`, nor does a
    thread ref, which may hold `:`."""

    rating: Rating
    response_id: str
    conversation_id: str
    day: str
    thread: str

    def dump(self) -> str:
        return _SEP.join((self.rating, self.response_id, self.conversation_id, self.day, self.thread))

    @classmethod
    def load(cls, raw: object) -> FeedbackValue | None:
        if not isinstance(raw, str) or len(raw) > VALUE_MAX_CHARS:
            return None
        fields = raw.split(_SEP)
        if len(fields) != 5 or fields[0] not in RATINGS or not all(fields) or not _DAY.fullmatch(fields[3]):
            return None
        rating, response_id, conversation_id, day, thread = fields
        return cls("good" if rating == "good" else "bad", response_id, conversation_id, day, thread)


def feedback_blocks(response_id: str, conversation_id: str, day: str, thread: str) -> list[dict[str, Any]]:
    """The `context_actions` block with the 👍/👎 buttons of one answer; none when a value would not read
    back as written or not fit (Slack would refuse the whole answer)."""
    good = FeedbackValue("good", response_id, conversation_id, day, thread)
    bad = FeedbackValue("bad", response_id, conversation_id, day, thread)
    if len(good.dump()) > VALUE_MAX_CHARS or FeedbackValue.load(good.dump()) != good:
        return []
    block = ContextActionsBlock(
        block_id=FEEDBACK_BLOCK,
        elements=[
            FeedbackButtonsElement(
                action_id=FEEDBACK_ACTION,
                positive_button=FeedbackButtonObject(
                    text="👍", value=good.dump(), accessibility_label="Good answer"
                ),
                negative_button=FeedbackButtonObject(
                    text="👎", value=bad.dump(), accessibility_label="Not a good answer"
                ),
            )
        ],
    )
    return [block.to_dict()]


@dataclass(frozen=True)
class FeedbackClick:
    """One click on an answer's feedback buttons."""

    workspace: Workspace
    user: str
    channel: str
    answer_ts: str  # the answer message's ts (the stream's)
    thread_ts: str | None  # the Slack thread it is in
    value: FeedbackValue
    external: bool = False


def _text(container: Mapping[str, Any], key: str) -> str | None:
    value = container.get(key)
    return value if isinstance(value, str) and value else None


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def parse_feedback_click(body: Mapping[str, Any], context: Mapping[str, Any]) -> FeedbackClick | None:
    """A `block_actions` payload whose action is a `feedback_buttons` click; None when it is not one the bot
    can read (the shape is bolt-js's FeedbackButtonsAction: `{type, action_id, block_id, value, ...}`)."""
    actions = body.get("actions")
    action = _mapping(actions[0]) if isinstance(actions, list) and actions else {}
    if action.get("type") != "feedback_buttons" or action.get("action_id") != FEEDBACK_ACTION:
        return None
    workspace = workspace_of(body, context)
    user = _text(_mapping(body.get("user")), "id")
    channel = _text(_mapping(body.get("channel")), "id") or _text(
        _mapping(body.get("container")), "channel_id"
    )
    message = _mapping(body.get("message"))
    answer_ts = _text(message, "ts") or _text(_mapping(body.get("container")), "message_ts")
    value = FeedbackValue.load(action.get("value"))
    if workspace is None or not user or not channel or not answer_ts or value is None:
        log.info("ignored a feedback click that can't be read")
        return None
    return FeedbackClick(
        workspace=workspace,
        user=user,
        channel=channel,
        answer_ts=answer_ts,
        thread_ts=_text(message, "thread_ts"),
        value=value,
        external=sender_is_external(body, context),
    )


@dataclass(frozen=True)
class CommentRef:
    """Which answer a comment modal is about, carried in its private_metadata and checked on submit."""

    channel: str
    answer_ts: str
    thread_ts: str | None
    thread: str

    def dump(self) -> str:
        return json.dumps([self.channel, self.answer_ts, self.thread_ts, self.thread])

    @classmethod
    def load(cls, raw: str) -> CommentRef | None:
        fields = metadata_fields(raw, 4)
        if fields is None:
            return None
        channel, answer_ts, thread_ts, thread = fields
        if not all(isinstance(f, str) and f for f in (channel, answer_ts, thread)):
            return None
        if thread_ts is not None and not isinstance(thread_ts, str):
            return None
        return cls(channel, answer_ts, thread_ts, thread)


def comment_view(ref: CommentRef) -> dict[str, Any]:
    """The optional comment modal a 👎 opens."""
    box = PlainTextInputElement(
        action_id=COMMENT_INPUT,
        multiline=True,
        max_length=COMMENT_MAX_CHARS,
        placeholder="What was wrong or missing? (optional)",
    )
    return {
        "type": "modal",
        "callback_id": COMMENT_CALLBACK,
        "private_metadata": ref.dump(),
        "title": {"type": "plain_text", "text": "Feedback"},
        "submit": {"type": "plain_text", "text": "Send"},
        "close": {"type": "plain_text", "text": "Skip"},
        "blocks": [
            InputBlock(
                block_id=COMMENT_BLOCK,
                label="Tell us more about this answer",
                element=box,
                optional=True,
            ).to_dict()
        ],
    }
