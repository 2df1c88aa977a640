"""Spend limits cover everything that costs, tell people quietly, and stop runaway threads (issue 12,
Deliver 3 spend and Deliver 6), end to end: the bot as a real process, the fake Slack recording who saw
which ephemeral, the fake OpenAI, and what Redis holds.

Limits are small so a few requests reach them, and windows long (an hour) where a test takes several
steps, so no refill can come between a take and the refusal it causes; the one test that needs the window
to pass shortens it and waits for Redis to drop the buckets (never for a time)."""

from __future__ import annotations

import json
import math

import pytest
import redis
from redis.asyncio import Redis

from bot.models import SharedFile
from bot.queue.spend import MIB, SpendLimits
from bot.settings import Settings
from tests.conftest import BotFactory
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.slack_api import FakeSlack
from tests.harness import TEAM, BotProcess, SlackSender, mention, message
from tests.test_bridge_e2e import ALICE, BOB, CHANNEL, DM, answers
from tests.test_commands_e2e import command, shortcut
from tests.test_files_e2e import share
from tests.test_thread_admin_e2e import settings_submission

NS = f"sa:{{-:{TEAM}}}"
# An app posting with a user token: its messages carry no bot_id, so they look like a person's.
APP_AS_USER = "U0OTHERAPP"
TOO_FAST = "faster than I can answer"
PAUSED = "pausing it for a minute"
TOLD_ALREADY = "already told"
# Refill one token per 15 minutes at an allowance of 4: far longer than any test takes.
HOUR = {"RATE_LIMIT_WINDOW_SECONDS": "3600"}


def quiet_refusals(bot: BotProcess) -> int:
    """Refused messages the bot only logged (their sender was told already this window)."""
    return bot.logs().count(TOLD_ALREADY)


def nothing_queued(rdb: redis.Redis) -> bool:
    """No turn in the stream and no thread index: nothing waits for a model run."""
    return not rdb.xlen(f"{NS}:turns") and not rdb.keys(f"{NS}:queue:*")


def settled(slack: FakeSlack, rdb: redis.Redis) -> None:
    """Wait until the queue is empty: an answered turn leaves it just after its answer is posted, and a
    refused message that was wrongly queued would have run (and been counted) by then."""
    slack.wait_for(lambda: nothing_queued(rdb))


def ping_pong(sender: SlackSender, slack: FakeSlack, root: dict, *, replies: int) -> None:
    """The other app and Alice take turns replying in the thread under `root` (its first answer is in);
    the bot's answers to the first two replies are waited for, so the rest meet a cap three answers in."""
    for turn in range(2, replies + 2):
        speaker = APP_AS_USER if turn % 2 == 0 else ALICE
        sender.send_event(message(CHANNEL, speaker, f"reply {turn}", thread_ts=root["ts"]))
        if turn <= 3:
            answers(slack, CHANNEL, root["ts"], count=turn)


def test_a_user_over_the_limit_is_told_once_privately_and_nothing_runs(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    bot = start_bot(RATE_LIMIT_USER_PER_MINUTE="1")
    sender = SlackSender(bot.url)
    root = mention(CHANNEL, ALICE, "first question")
    sender.send_event(root)
    [answer] = answers(slack, CHANNEL, root["ts"])
    # Alice has spent her minute's allowance; she sends five more replies in the thread.
    for i in range(5):
        assert sender.send_event(message(CHANNEL, ALICE, f"more {i}", thread_ts=root["ts"])).status == 200
    slack.wait_for(lambda: bool(slack.ephemerals(CHANNEL, ALICE)) and quiet_refusals(bot) == 4)

    # One notice, to Alice only, in her thread; the other four refusals were only logged.
    [notice] = slack.ephemerals(CHANNEL, include_invisible=True)
    assert notice.user == ALICE and notice.thread_ts == root["ts"] and TOO_FAST in notice.text
    assert slack.ephemerals(CHANNEL, ALICE) == [notice]
    # Nothing public, nothing queued, no model run.
    assert [m.ts for m in slack.messages(CHANNEL, root["ts"])] == [answer.ts]
    settled(slack, rdb)
    assert len(openai_fake.model_inputs) == 1
    # The "told" mark lasts one window (a minute), per workspace and person.
    assert 0 < rdb.pttl(f"{NS}:notice:limit:{ALICE}") <= 60_000


def test_commands_shortcuts_and_settings_saves_spend_the_same_allowance(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    """A message, `/assistant status`, the settings shortcut and a save spend Alice's four tokens; then
    a message, a command, a save, both shortcuts and the App Home's reset are each refused."""
    sender = SlackSender(start_bot(RATE_LIMIT_USER_PER_MINUTE="4", **HOUR).url)
    first = message(DM, ALICE, "hello")
    sender.send_event(first)  # 1
    [reply] = answers(slack, DM, first["ts"])
    assert command(sender, "status").startswith("*Assistant thread*")  # 2
    in_thread = {"channel": DM, "user": ALICE, "ts": reply.ts, "thread_ts": first["ts"]}
    assert shortcut(sender, **in_thread, callback="thread_settings") == 200  # 3
    slack.wait_for(lambda: any(v.get("callback_id") == "thread_settings_modal" for v in slack.views()))
    [modal] = [v for v in slack.views() if v.get("callback_id") == "thread_settings_modal"]
    ref = modal["private_metadata"]
    saved = sender.send_form({"payload": settings_submission(ref, "topic=launch")})  # 4
    assert saved.status == 200 and "errors" not in saved.body
    slack.wait_for(lambda: any("Saved" in e.text for e in slack.ephemerals(DM, ALICE)))

    # The allowance is spent on commands: a message is refused (told privately), and so is every
    # action that costs; help and usage mistakes need only the text and stay free.
    refused = message(DM, ALICE, "one more question")
    sender.send_event(refused)
    slack.wait_for(lambda: any(TOO_FAST in e.text for e in slack.ephemerals(DM, ALICE)))
    assert TOO_FAST in command(sender, "history")
    again = sender.send_form({"payload": settings_submission(ref, "topic=later")})
    assert TOO_FAST in json.loads(again.body)["errors"]["meta_block"]
    shortcut(sender, **in_thread)
    slack.wait_for(lambda: sum(TOO_FAST in e.text for e in slack.ephemerals(DM, ALICE)) == 2)
    home_reset = {
        "type": "block_actions",
        "team": {"id": TEAM, "domain": "acme"},
        "user": {"id": ALICE, "team_id": TEAM},
        "trigger_id": sender.trigger_id(),
        "api_app_id": "A0APP",
        "container": {"type": "view", "view_id": "V0HOME"},
        "view": {"id": "V0HOME", "type": "home"},
        "actions": [{"action_id": "home_reset_dm_thread", "block_id": "b", "type": "button"}],
    }
    sender.send_form({"payload": json.dumps(home_reset)})
    slack.wait_for(lambda: sum(TOO_FAST in e.text for e in slack.ephemerals(DM, ALICE)) == 3)
    # The settings shortcut opens a modal that says so, instead of the settings.
    shortcut(sender, **in_thread, callback="thread_settings")
    slack.wait_for(lambda: any(TOO_FAST in json.dumps(v.get("blocks")) for v in slack.views()))
    assert "Assistant commands" in command(sender, "help")
    assert "takes no arguments" in command(sender, "status now")

    settled(slack, rdb)
    assert len(openai_fake.model_inputs) == 1
    assert slack.messages(DM, refused["ts"]) == []
    [conv] = openai_fake.conversations.values()
    assert conv["metadata"]["topic"] == "launch"  # the refused save changed nothing, nor was it reset


def test_a_command_after_a_mention_pays_too(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    sender = SlackSender(start_bot(RATE_LIMIT_USER_PER_MINUTE="2", **HOUR).url)
    root = mention(CHANNEL, BOB, "let's plan")
    sender.send_event(root)  # 1
    answers(slack, CHANNEL, root["ts"])
    sender.send_event(mention(CHANNEL, BOB, "status", thread_ts=root["ts"]))  # 2
    slack.wait_for(lambda: any("Assistant thread" in e.text for e in slack.ephemerals(CHANNEL, BOB)))
    sender.send_event(mention(CHANNEL, BOB, "help", thread_ts=root["ts"]))  # free
    slack.wait_for(lambda: any("Assistant commands" in e.text for e in slack.ephemerals(CHANNEL, BOB)))
    sender.send_event(mention(CHANNEL, BOB, "status", thread_ts=root["ts"]))  # refused
    slack.wait_for(lambda: any(TOO_FAST in e.text for e in slack.ephemerals(CHANNEL, BOB)))
    assert [e.text.split()[0] for e in slack.ephemerals(CHANNEL, BOB)] == [
        "*Assistant",
        "*Assistant",
        "You're",
    ]
    settled(slack, rdb)
    assert len(openai_fake.model_inputs) == 1


def test_a_message_with_big_files_costs_more_than_one_without(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    # One token per started 10 KiB of files: a 25,000-byte file costs three, its message four.
    bot = start_bot(RATE_LIMIT_USER_PER_MINUTE="4", RATE_LIMIT_MB_PER_TOKEN=str(10 / 1024), **HOUR)
    sender = SlackSender(bot.url)
    notes = slack.add_file("notes.txt", b"The launch is on Tuesday.\n" * 962, mimetype="text/plain")
    assert notes["size"] == 25_012
    with_file = share(CHANNEL, ALICE, "read this", [notes])
    without = mention(CHANNEL, BOB, "hello")
    # Then the same plain question from each: Alice's file spent her allowance, Bob's message a quarter.
    alice_next, bob_next = mention(CHANNEL, ALICE, "and now?"), mention(CHANNEL, BOB, "and now?")
    for event in (with_file, without, alice_next, bob_next):
        assert sender.send_event(event).status == 200
    for event in (with_file, without, bob_next):
        answers(slack, CHANNEL, event["ts"])
    slack.wait_for(lambda: bool(slack.ephemerals(CHANNEL, ALICE)))
    [notice] = slack.ephemerals(CHANNEL, ALICE)
    assert TOO_FAST in notice.text and notice.thread_ts is None  # a top-level mention: told at the top
    assert slack.messages(CHANNEL, alice_next["ts"]) == [] and slack.ephemerals(CHANNEL, BOB) == []
    settled(slack, rdb)
    assert len(openai_fake.model_inputs) == 3


def test_two_apps_answering_each_other_are_paused_by_the_thread_cap_with_one_notice(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    bot = start_bot(THREAD_ANSWERS_PER_MINUTE="3", RATE_LIMIT_WINDOW_SECONDS="600")
    sender = SlackSender(bot.url)
    root = mention(CHANNEL, ALICE, "start")
    sender.send_event(root)
    answers(slack, CHANNEL, root["ts"])
    # The other app answers every answer, as a "person"; so does Alice, taking turns.
    ping_pong(sender, slack, root, replies=8)
    # Three answers, then the thread is paused: the first refused sender is told, privately; the rest of
    # the refused replies are only logged.
    slack.wait_for(lambda: bool(slack.ephemerals(CHANNEL, APP_AS_USER)) and quiet_refusals(bot) == 5)
    [notice] = slack.ephemerals(CHANNEL, include_invisible=True)
    assert notice.user == APP_AS_USER and notice.thread_ts == root["ts"] and PAUSED in notice.text
    assert len(slack.messages(CHANNEL, root["ts"])) == 3 and len(openai_fake.model_inputs) == 3
    settled(slack, rdb)
    # Told at most once per window (ten minutes here, a minute by default) per thread.
    assert 0 < rdb.pttl(f"{NS}:notice:paused:c:{CHANNEL}:{root['ts']}") <= 600_000
    # The cap is per thread: a new thread in the channel is answered.
    other = mention(CHANNEL, ALICE, "another topic")
    sender.send_event(other)
    answers(slack, CHANNEL, other["ts"])


def test_apps_slower_than_the_minutes_cap_still_meet_the_days(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    # No minute's cap to hit (two apps answering each other at a human pace); three answers a day.
    bot = start_bot(THREAD_ANSWERS_PER_MINUTE="0", THREAD_ANSWERS_PER_DAY="3")
    sender = SlackSender(bot.url)
    root = mention(CHANNEL, ALICE, "start")
    sender.send_event(root)
    answers(slack, CHANNEL, root["ts"])
    ping_pong(sender, slack, root, replies=4)
    slack.wait_for(lambda: bool(slack.ephemerals(CHANNEL, APP_AS_USER)) and quiet_refusals(bot) == 1)
    [notice] = slack.ephemerals(CHANNEL, include_invisible=True)
    assert notice.user == APP_AS_USER and "Start a new thread" in notice.text
    settled(slack, rdb)
    assert len(slack.messages(CHANNEL, root["ts"])) == 3 and len(openai_fake.model_inputs) == 3
    # The bucket refills over a day, not a minute.
    assert 3_600_000 < rdb.pttl(f"{NS}:rate:thread-day:c:{CHANNEL}:{root['ts']}") <= 86_400_000
    # Another thread has its own day.
    other = mention(CHANNEL, ALICE, "another topic")
    sender.send_event(other)
    answers(slack, CHANNEL, other["ts"])


def test_the_caps_and_the_notices_come_back_after_the_window(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    # An hour's window (a minute in production), so no refill comes between a take and its refusal however
    # slow the machine: Alice may send one message per window, the thread get one answer.
    bot = start_bot(
        RATE_LIMIT_WINDOW_SECONDS="3600", RATE_LIMIT_USER_PER_MINUTE="1", THREAD_ANSWERS_PER_MINUTE="1"
    )
    sender = SlackSender(bot.url)
    root = mention(CHANNEL, ALICE, "start")
    sender.send_event(root)
    answers(slack, CHANNEL, root["ts"])

    def refusals() -> None:
        sender.send_event(message(CHANNEL, ALICE, "me again", thread_ts=root["ts"]))  # over her limit
        sender.send_event(message(CHANNEL, BOB, "me too", thread_ts=root["ts"]))  # the thread is paused

    refusals()
    slack.wait_for(lambda: len(slack.ephemerals(CHANNEL)) == 2)
    told = {(e.user, TOO_FAST in e.text, PAUSED in e.text) for e in slack.ephemerals(CHANNEL)}
    assert told == {(ALICE, True, False), (BOB, False, True)}
    assert len(openai_fake.model_inputs) == 1

    # The buckets and the notice keys live one window: Redis drops them when it has passed, and a bucket
    # that is gone is a full one. The window is made to pass by running their TTLs out now.
    buckets = [f"{NS}:rate:user:{ALICE}", f"{NS}:rate:thread:c:{CHANNEL}:{root['ts']}"]
    notices = [f"{NS}:notice:limit:{ALICE}", f"{NS}:notice:paused:c:{CHANNEL}:{root['ts']}"]
    assert all(0 < rdb.pttl(key) <= 3_600_000 for key in [*buckets, *notices])
    for key in [*buckets, *notices]:
        rdb.pexpire(key, 1)
    slack.wait_for(lambda: rdb.exists(*buckets, *notices) == 0)
    sender.send_event(message(CHANNEL, ALICE, "after the pause", thread_ts=root["ts"]))
    answers(slack, CHANNEL, root["ts"], count=2)
    refusals()
    slack.wait_for(lambda: len(slack.ephemerals(CHANNEL)) == 4)
    assert {(e.user, TOO_FAST in e.text, PAUSED in e.text) for e in slack.ephemerals(CHANNEL)[2:]} == told
    settled(slack, rdb)
    assert len(openai_fake.model_inputs) == 2


# ---- what a message costs ---------------------------------------------------------------------------


def _limits(**env: object) -> SpendLimits:
    """The defaults (5 MB a token, files up to 20 MB), whatever the environment says; `env` overrides."""
    env = {"rate_limit_mb_per_token": 5, "file_max_mb": 20, **env}
    settings = Settings(slack_bot_token="xoxb-x", openai_api_key="sk-x", **env)  # type: ignore[arg-type]
    return SpendLimits(Redis(), settings)


def _file(size: int | None) -> SharedFile:
    return SharedFile(id="F1", name="a.pdf", size=size)


@pytest.mark.parametrize(
    ("sizes", "cost"),
    [
        ([], 1),
        ([0], 1),
        ([5 * MIB], 2),
        ([5 * MIB + 1], 3),
        ([MIB] * 10, 3),  # by size, all the message's files together: 10 MB, two started 5 MB
        ([20 * MIB] * 10, 41),  # ten 20 MB files: 41 tokens (capped at a full bucket when taken)
        ([500 * MIB], 5),  # counted up to FILE_MAX_MB: a larger file is refused before any download
        ([None], 5),  # unknown size (a Slack Connect stub): counted as the largest accepted
    ],
)
def test_a_message_costs_one_token_plus_its_files_by_size(sizes: list[int | None], cost: int) -> None:
    assert _limits().message_cost([_file(s) for s in sizes]) == cost


def test_files_can_be_made_free() -> None:
    assert _limits(rate_limit_mb_per_token=0).message_cost([_file(20 * MIB)] * 10) == 1
    assert _limits(rate_limit_mb_per_token=1).message_cost([_file(math.ceil(2.5 * MIB))]) == 4
