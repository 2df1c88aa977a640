"""Feedback on answers (issue 15 item 3), against the bot as a process: every finished answer carries Slack's
feedback buttons; a click is recorded once per person and answer in Redis and shown in the conversation's
`feedback_rating` metadata; someone who did not take part is refused and changes nothing; a 👎 opens the
comment modal, whose comment is stored with the rating; metrics and `/assistant usage` count the ratings."""

from __future__ import annotations

import json
from typing import Any

import redis

from tests.fakes.openai_api import FakeOpenAI, Reply
from tests.fakes.slack_api import FakeSlack, Message
from tests.harness import TEAM, BotProcess, SlackSender, mention, message
from tests.test_bridge_e2e import ALICE, BOB, CHANNEL, DM, answers
from tests.test_commands_e2e import command
from tests.test_observability_e2e import scrape, value

NS = f"sa:{{-:{TEAM}}}"
CAROL = "U0CAROL"
NOT_A_PARTICIPANT = "Only people taking part in this conversation can rate its answers."


def buttons(msg: Message) -> dict[str, Any]:
    """The answer's feedback_buttons element (exactly one context_actions block)."""
    [block] = [b for b in msg.blocks if b["type"] == "context_actions"]
    [element] = block["elements"]
    assert element["type"] == "feedback_buttons"
    return {"block_id": block["block_id"], **element}


def click(sender: SlackSender, msg: Message, rating: str, *, user: str, channel: str = CHANNEL) -> int:
    """A click on the answer's 👍 (`good`) or 👎 (`bad`), as Slack posts it: `block_actions` whose action is
    the feedback_buttons element with the chosen button's value (bolt-js `FeedbackButtonsAction`)."""
    element = buttons(msg)
    chosen = element["positive_button" if rating == "good" else "negative_button"]
    action = {"type": "feedback_buttons", "action_id": element["action_id"], "block_id": element["block_id"]}
    action |= {"value": chosen["value"], "text": chosen["text"]}
    return sender.click_on_message(msg, action, user=user, channel=channel)


def comment(sender: SlackSender, view: dict[str, Any], text: str, *, user: str = ALICE) -> int:
    """The comment modal submitted with `text` in its box."""
    submitted = {
        **view,
        "state": {"values": {"comment_block": {"comment": {"type": "plain_text_input", "value": text}}}},
    }
    payload = {
        "type": "view_submission",
        "team": {"id": TEAM, "domain": "acme"},
        "user": {"id": user, "team_id": TEAM},
        "view": submitted,
        "api_app_id": "A0APP",
        "trigger_id": sender.trigger_id(),
    }
    return sender.send_form({"payload": json.dumps(payload)}).status


def ratings(rdb: redis.Redis, msg: Message) -> dict[str, dict[str, Any]]:
    return {u: json.loads(r) for u, r in rdb.hgetall(f"{NS}:feedback:{msg.channel}:{msg.ts}").items()}


def clicks(bot: BotProcess, rating: str, result: str) -> float:
    return value(scrape(bot), "feedback_total", rating=rating, result=result)


def wait_clicks(slack: FakeSlack, bot: BotProcess, rating: str, result: str, count: int) -> None:
    """Until /metrics counted `count` clicks of this kind (each click is handled after its ack)."""
    slack.wait_for(lambda: clicks(bot, rating, result) >= count)
    assert clicks(bot, rating, result) == count


def rating_meta(openai_fake: FakeOpenAI, conv_id: str) -> str | None:
    return openai_fake.conversation(conv_id)["metadata"].get("feedback_rating")


def test_a_click_is_recorded_once_and_shown_in_the_metadata(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, bot: BotProcess, rdb: redis.Redis
) -> None:
    root = mention(CHANNEL, ALICE, "hi")
    sender.send_event(root)
    [answer] = answers(slack, CHANNEL, root["ts"])
    [conv_id] = list(openai_fake.conversations)
    # The buttons came with chat.stopStream, rating the response that wrote the answer.
    stop = slack.calls_to("chat.stopStream")[-1].args
    assert stop["ts"] == answer.ts and stop["blocks"] == answer.blocks
    rating, response_id, conv, _day, thread = buttons(answer)["positive_button"]["value"].split("|")
    assert (rating, conv, thread) == ("good", conv_id, f"c:{CHANNEL}:{root['ts']}")
    assert openai_fake.response(response_id)["output"][-1]["content"][0]["text"] == answer.text

    # A double click (or Slack sending the click again): one rating.
    assert click(sender, answer, "good", user=ALICE) == 200
    assert click(sender, answer, "good", user=ALICE) == 200
    wait_clicks(slack, bot, "good", "new", 1)
    wait_clicks(slack, bot, "good", "repeated", 1)
    [(user, record)] = ratings(rdb, answer).items()
    assert user == ALICE
    assert record["rating"] == "good" and record["response_id"] == response_id
    assert record["conversation_id"] == conv_id and record["channel"] == CHANNEL
    assert rdb.hgetall(f"{NS}:fb-thread:{conv_id}") == {"good": "1"}
    slack.wait_for(lambda: rating_meta(openai_fake, conv_id) == "good=1 bad=0")
    # The bot's other keys are untouched, and users can read the rating but not write it.
    assert openai_fake.conversation(conv_id)["metadata"]["slack_user"] == ALICE
    sender.send_event(mention(CHANNEL, ALICE, "meta", thread_ts=root["ts"]))
    sender.send_event(mention(CHANNEL, ALICE, "meta set feedback_rating=good=99", thread_ts=root["ts"]))
    slack.wait_for(lambda: len(slack.ephemerals(CHANNEL, ALICE)) == 2)
    shown, refused = (m.text for m in slack.ephemerals(CHANNEL, ALICE))
    assert "`feedback_rating`: good=1 bad=0 _(set by the bot)_" in shown
    assert "`feedback_rating` is set by the bot and can't be changed" in refused
    assert rating_meta(openai_fake, conv_id) == "good=1 bad=0"


def test_someone_not_in_the_conversation_cannot_rate_it(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, bot: BotProcess, rdb: redis.Redis
) -> None:
    root = mention(CHANNEL, ALICE, "hi")
    sender.send_event(root)
    [answer] = answers(slack, CHANNEL, root["ts"])
    [conv_id] = list(openai_fake.conversations)

    assert click(sender, answer, "bad", user=CAROL) == 200
    slack.wait_for(lambda: len(slack.ephemerals(CHANNEL, CAROL)) == 1)
    [refusal] = slack.ephemerals(CHANNEL, CAROL)
    assert refusal.text == NOT_A_PARTICIPANT and refusal.thread_ts == root["ts"]
    assert clicks(bot, "bad", "refused") == 1
    # Nothing recorded, no modal, no metadata.
    assert ratings(rdb, answer) == {} and rdb.keys(f"{NS}:fb-*") == []
    assert slack.calls_to("views.open") == []
    assert rating_meta(openai_fake, conv_id) is None

    # Someone who writes in the thread takes part from their answer on, and may rate the earlier ones too.
    sender.send_event(mention(CHANNEL, BOB, "and me?", thread_ts=root["ts"]))
    answers(slack, CHANNEL, root["ts"], count=2)
    assert click(sender, answer, "bad", user=BOB) == 200
    wait_clicks(slack, bot, "bad", "new", 1)
    assert list(ratings(rdb, answer)) == [BOB]
    slack.wait_for(lambda: rating_meta(openai_fake, conv_id) == "good=0 bad=1")
    assert slack.ephemerals(CHANNEL, BOB) == []


def test_thumbs_down_opens_the_comment_modal_and_the_comment_is_stored(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, bot: BotProcess, rdb: redis.Redis
) -> None:
    root = mention(CHANNEL, ALICE, "hi")
    sender.send_event(root)
    [answer] = answers(slack, CHANNEL, root["ts"])
    [conv_id] = list(openai_fake.conversations)

    assert click(sender, answer, "bad", user=ALICE) == 200
    slack.wait_for(lambda: len(slack.views()) == 1)
    [modal] = slack.views()
    assert modal["callback_id"] == "answer_feedback_comment"
    assert ratings(rdb, answer)[ALICE]["rating"] == "bad"

    text = "<!channel> it missed the point & ignored <@U0BOSS>\nsecond line"
    assert comment(sender, modal, text) == 200
    slack.wait_for(lambda: len(slack.ephemerals(CHANNEL, ALICE)) == 1)
    assert ratings(rdb, answer)[ALICE]["comment"] == text
    [receipt] = slack.ephemerals(CHANNEL, ALICE)
    assert "&lt;!channel&gt;" in receipt.text and receipt.thread_ts == root["ts"]
    assert slack.live_forms() == []
    assert value(scrape(bot), "feedback_comments_total") == 1
    slack.wait_for(lambda: rating_meta(openai_fake, conv_id) == "good=0 bad=1")

    # A comment from someone without a 👎 on that answer is not stored.
    assert comment(sender, modal, "me too", user=BOB) == 200
    slack.wait_for(lambda: f"feedback comment by {BOB} dropped" in bot.logs())
    assert BOB not in ratings(rdb, answer) and slack.ephemerals(CHANNEL, BOB) == []
    # Changing one's mind moves the one rating (and drops the comment, which was about the 👎).
    assert click(sender, answer, "good", user=ALICE) == 200
    wait_clicks(slack, bot, "good", "changed", 1)
    assert ratings(rdb, answer)[ALICE]["rating"] == "good" and "comment" not in ratings(rdb, answer)[ALICE]
    assert list(ratings(rdb, answer)) == [ALICE]
    slack.wait_for(lambda: rating_meta(openai_fake, conv_id) == "good=1 bad=0")
    assert len(slack.views()) == 1  # a 👍 opens nothing

    usage = command(sender, "usage")
    assert "Answers you rated, last 30 days: 👍 1 · 👎 0" in usage


def test_an_answer_written_whole_gets_the_buttons_too(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, bot: BotProcess, rdb: redis.Redis
) -> None:
    """The stream expired: the answer is finished with chat.update, as a markdown block and the buttons."""
    openai_fake.script(Reply(text="A **complete** answer.", chunk_size=4))
    slack.expire_streams(after_appends=0)
    root = mention(CHANNEL, ALICE, "hi")
    sender.send_event(root)
    # An expired stream is no longer streaming: the answer is done once chat.update wrote it.
    slack.wait_for(lambda: any(m.updates for m in answers(slack, CHANNEL, root["ts"])))
    [answer] = answers(slack, CHANNEL, root["ts"])
    assert [c.error for c in slack.calls_to("chat.stopStream")] == ["message_not_in_streaming_state"]
    assert answer.text == "A **complete** answer."
    assert answer.blocks[0] == {"type": "markdown", "text": "A **complete** answer."}
    assert click(sender, answer, "good", user=ALICE) == 200
    wait_clicks(slack, bot, "good", "new", 1)
    assert list(ratings(rdb, answer)) == [ALICE]


def test_a_direct_message_answer_is_rated_by_its_owner(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, bot: BotProcess, rdb: redis.Redis
) -> None:
    first = message(DM, ALICE, "hello")
    sender.send_event(first)
    [answer] = answers(slack, DM, first["ts"])
    [conv_id] = list(openai_fake.conversations)
    # A top-level DM continues the user's own assistant thread.
    assert buttons(answer)["negative_button"]["value"].endswith(f"|u:{ALICE}")
    assert click(sender, answer, "bad", user=ALICE, channel=DM) == 200
    slack.wait_for(lambda: len(slack.views()) == 1)
    assert ratings(rdb, answer)[ALICE]["thread"] == f"u:{ALICE}"
    slack.wait_for(lambda: rating_meta(openai_fake, conv_id) == "good=0 bad=1")
    # The 👎 modal was skipped (closed): nothing more happens; a 👎 again opens nothing and counts nothing.
    assert click(sender, answer, "bad", user=ALICE, channel=DM) == 200
    wait_clicks(slack, bot, "bad", "repeated", 1)
    assert len(slack.views()) == 1 and rdb.hgetall(f"{NS}:fb-thread:{conv_id}") == {"bad": "1"}


def test_an_answer_goes_out_without_buttons_slack_refuses(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, bot: BotProcess
) -> None:
    """Buttons are a nicety: a workspace where Slack refuses them still gets its answers."""
    openai_fake.script(Reply(text="Still answered.", chunk_size=4))
    slack.fail_next("chat.stopStream", "invalid_blocks")
    root = mention(CHANNEL, ALICE, "hi")
    sender.send_event(root)
    [answer] = answers(slack, CHANNEL, root["ts"])
    stops = slack.calls_to("chat.stopStream")
    assert [(c.error, "blocks" in c.args) for c in stops] == [("invalid_blocks", True), (None, False)]
    assert answer.text == "Still answered." and answer.blocks == [] and answer.kind == "stream"
    slack.wait_for(lambda: value(scrape(bot), "turns_total", outcome="answered") == 1)
