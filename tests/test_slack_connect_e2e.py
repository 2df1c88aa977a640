"""Slack Connect and the shared knowledge stores, end to end (issue 12, items 2 and 5).

People of another organization in a shared channel (events shaped as Slack delivers them there:
`user_team`, `source_team`, `user_profile`, `is_ext_shared_channel`, `authorizations`; see
`tests.harness.connect_user`) get a short notice and no model run by default; with
ALLOW_EXTERNAL_USERS=true they are answered without the shared knowledge stores and without the tools that
read the workspace. The knowledge stores themselves are checked at start-up and every
KNOWLEDGE_CHECK_HOURS: one that is missing or expired is left out, never breaking answers.
"""

from __future__ import annotations

import json

import redis

from tests.conftest import BotFactory
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.slack_api import FakeSlack
from tests.harness import (
    TEAM,
    BotProcess,
    SlackSender,
    connect_user,
    mention,
    message,
    new_ts,
)
from tests.test_bridge_e2e import ALICE, BOB, answers, user_texts
from tests.test_commands_e2e import command, shortcut
from tests.test_thread_admin_e2e import home_button, settings_submission

SHARED = "C0SHARED"  # a channel shared with another organization
PARTNER = "T0PARTNER"  # a workspace of that organization
GUEST, GUEST2, GUEST3, GUEST4 = "U0GUEST", "U0GUEST2", "U0GUEST3", "U0GUEST4"
NOTICE = "only serves members of the organization that installed it"
NS = f"sa:{{-:{TEAM}}}"
HANDBOOK = {"handbook.pdf": b"Holidays: the office closes in August."}


def guest_mention(text: str, user: str = GUEST, **kw: str) -> dict:
    return connect_user(mention(SHARED, user, text, **kw), PARTNER)


def host_mention(text: str, user: str = ALICE, **kw: str) -> dict:
    """A member of the installing workspace in the shared channel: Slack names their own team."""
    return {**mention(SHARED, user, text, **kw), "team": TEAM}


def names(tools: list[dict]) -> list[str]:
    return [t.get("name") or t["type"] for t in tools]


def responses_posted(openai_fake: FakeOpenAI) -> list[dict]:
    return [r for r in openai_fake.requests if r["method"] == "POST" and r["path"] == "/v1/responses"]


def notices_to(slack: FakeSlack, channel: str, user: str) -> list[tuple[str | None, str]]:
    return [(m.thread_ts, m.text) for m in slack.ephemerals(channel, user)]


def wait_for_log(slack: FakeSlack, bot: BotProcess, text: str) -> None:
    slack.wait_for(lambda: text in bot.logs(), timeout=20)


# ---- Slack Connect: the default policy -------------------------------------------------------------


def test_an_external_users_mention_dm_and_thread_reply_run_no_model_and_they_are_told(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    knowledge = openai_fake.add_vector_store(HANDBOOK)
    sender = SlackSender(start_bot(knowledge_vector_store_ids=knowledge).url)
    # A member of the installing workspace starts a thread in the shared channel: served with everything.
    root = host_mention("When does the office close?")
    assert sender.send_connect_event(root, sender_team=TEAM).status == 200
    answers(slack, SHARED, root["ts"])
    host_request = openai_fake.model_inputs[0]
    assert "slack_user_profile" in names(host_request["tools"])
    assert host_request["file_search"] == {"vector_store_ids": [knowledge], "hits": ["handbook.pdf"]}

    # A guest mentions the bot at the top of the channel, twice: one notice, at top level.
    first = guest_mention("what's in your handbook?")
    assert sender.send_connect_event(first, sender_team=PARTNER).status == 200
    sender.send_connect_event(guest_mention("hello again?"), sender_team=PARTNER)
    # Another guest replies in the bot's thread without a mention: told in the thread.
    reply = connect_user(message(SHARED, GUEST2, "can I use this too?", thread_ts=root["ts"]), PARTNER)
    sender.send_connect_event(reply, sender_team=PARTNER)
    # A guest's reply in a thread the bot does not answer is ignored, as anyone's is.
    elsewhere = connect_user(message(SHARED, GUEST3, "chatting", thread_ts=new_ts()), PARTNER)
    sender.send_connect_event(elsewhere, sender_team=PARTNER)
    # A guest's DM.
    dm = connect_user(message("D0GUEST4", GUEST4, "hi, can you help me?"), PARTNER)
    sender.send_connect_event(dm, sender_team=PARTNER)

    # A later message of the host's is answered: every event above was handled by then.
    marker = host_mention("thanks!", thread_ts=root["ts"])
    sender.send_connect_event(marker, sender_team=TEAM)
    answers(slack, SHARED, root["ts"], count=2)
    # Notices go out after the ack: wait for the three guests who get one.
    slack.wait_for(
        lambda: all(
            notices_to(slack, c, u) for c, u in ((SHARED, GUEST), (SHARED, GUEST2), ("D0GUEST4", GUEST4))
        )
    )

    [(thread, text)] = notices_to(slack, SHARED, GUEST)  # one a minute, however many mentions
    assert thread is None and NOTICE in text
    [(thread, text)] = notices_to(slack, SHARED, GUEST2)
    assert thread == root["ts"] and NOTICE in text
    assert notices_to(slack, SHARED, GUEST3) == []
    [(_, text)] = notices_to(slack, "D0GUEST4", GUEST4)
    assert NOTICE in text
    # No model ran for any guest, nothing of theirs was queued or counted, nothing was posted for them.
    assert [user_texts(i["input_items"])[-1] for i in openai_fake.model_inputs] == [
        "user: When does the office close?",
        "user: thanks!",
    ]
    assert len(responses_posted(openai_fake)) == 2
    guest_keys = {k for k in rdb.keys(f"{NS}:*") if "GUEST" in k}
    assert guest_keys == {f"{NS}:notice:guest:{g}" for g in (GUEST, GUEST2, GUEST4)}
    assert not rdb.exists(f"{NS}:thread:c:{SHARED}:{first['ts']}", f"{NS}:thread:u:{GUEST4}")
    assert slack.messages(SHARED, first["ts"]) == [] and slack.messages("D0GUEST4") == []


def test_a_guests_command_shortcuts_and_modal_get_the_notice_and_change_nothing(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender
) -> None:
    root = host_mention("Remember: the launch is on Monday.")
    sender.send_connect_event(root, sender_team=TEAM)
    [answer] = answers(slack, SHARED, root["ts"])
    [conversation] = list(openai_fake.conversations)

    # /assistant from the partner's workspace: the notice comes back in the ack.
    assert NOTICE in command(sender, "reset", channel="D0GUEST", user=GUEST, team=PARTNER)
    # The message shortcuts on the host's thread.
    shortcut(sender, channel=SHARED, user=GUEST, ts=answer.ts, thread_ts=root["ts"], team=PARTNER)
    shortcut(
        sender, channel=SHARED, user=GUEST2, ts=answer.ts, thread_ts=root["ts"], team=PARTNER,
        callback="thread_settings",
    )  # fmt: skip
    # A settings modal submitted by a guest (one opened before the policy changed, or forged).
    ref = json.dumps([TEAM, None, f"c:{SHARED}:{root['ts']}", SHARED, GUEST3])
    submitted = sender.post(settings_submission(ref, "topic=pwned", user=GUEST3, team=PARTNER))
    assert submitted.status == 200
    assert NOTICE in json.loads(submitted.body)["errors"]["meta_block"]

    slack.wait_for(lambda: bool(slack.ephemerals(SHARED, GUEST)) and bool(slack.ephemerals(SHARED, GUEST2)))
    assert all(
        NOTICE in m.text for m in [*slack.ephemerals(SHARED, GUEST), *slack.ephemerals(SHARED, GUEST2)]
    )
    assert slack.views() == []  # no modal opened for the guest
    # The App Home's settings button: the modal opens (Slack's 3 s trigger) and says the bot is not theirs.
    home_button_click = home_button("home_dm_thread_settings", user=GUEST4, team=PARTNER)
    assert sender.send_form({"payload": json.dumps(home_button_click)}).status == 200
    slack.wait_for(lambda: any(NOTICE in json.dumps(v) for v in slack.views()))
    assert "topic" not in json.dumps(slack.views())
    # The thread is untouched: same conversation, no reset, no metadata written, no model run.
    marker = host_mention("And the launch day?", thread_ts=root["ts"])
    sender.send_connect_event(marker, sender_team=TEAM)
    answers(slack, SHARED, root["ts"], count=2)
    assert list(openai_fake.conversations) == [conversation]
    assert "topic" not in openai_fake.conversation(conversation)["metadata"]
    assert len(openai_fake.model_inputs) == 2
    assert not any("reset this thread" in m.text for m in slack.messages(SHARED))


def test_allowed_guests_are_answered_without_knowledge_or_workspace_tools_on_any_replica(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    knowledge = openai_fake.add_vector_store(HANDBOOK)
    # A front that only queues, and a worker process (which does not read ALLOW_EXTERNAL_USERS itself).
    front = start_bot(
        worker_concurrency="0", allow_external_users="true", knowledge_vector_store_ids=knowledge
    )
    sender = SlackSender(front.url)
    asked = guest_mention("When does the office close?")
    sender.send_connect_event(asked, sender_team=PARTNER)
    [(_, fields)] = rdb.xrange(f"{NS}:turns")
    assert json.loads(fields["turn"])["external"] is True  # the guest's limits travel with the turn

    start_bot(worker=True, knowledge_vector_store_ids=knowledge)
    answers(slack, SHARED, asked["ts"])
    guest_request = openai_fake.model_inputs[0]
    assert names(guest_request["tools"]) == ["current_time"]  # no slack_user_profile, no file_search
    assert guest_request["file_search"] is None and knowledge not in json.dumps(guest_request["tools"])
    assert "another organization" in guest_request["instructions"]
    assert slack.ephemerals(SHARED, GUEST) == []
    # The streamed answer names the guest's own team as its recipient's (chat.startStream).
    [guest_start] = [c.args for c in slack.calls_to("chat.startStream") if c.args["thread_ts"] == asked["ts"]]
    assert (guest_start["recipient_user_id"], guest_start["recipient_team_id"]) == (GUEST, PARTNER)

    # A host member in the same channel, same processes: everything.
    host = host_mention("When does the office close?", user=BOB)
    sender.send_connect_event(host, sender_team=TEAM)
    answers(slack, SHARED, host["ts"])
    host_request = openai_fake.model_inputs[1]
    assert names(host_request["tools"]) == ["current_time", "slack_user_profile", "file_search"]
    assert host_request["file_search"] == {"vector_store_ids": [knowledge], "hits": ["handbook.pdf"]}
    assert "another organization" not in host_request["instructions"]
    [host_start] = [c.args for c in slack.calls_to("chat.startStream") if c.args["thread_ts"] == host["ts"]]
    assert host_start["recipient_team_id"] == TEAM


def test_a_user_of_another_workspace_of_the_same_enterprise_org_is_served_normally(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    knowledge = openai_fake.add_vector_store(HANDBOOK)
    sender = SlackSender(start_bot(knowledge_vector_store_ids=knowledge).url)
    org = {"sender_enterprise": "E0ORG", "host_enterprise": "E0ORG"}
    # A colleague from a sibling workspace, in a channel shared inside the org only.
    sibling = connect_user(mention(SHARED, "W0SIBLING", "When does the office close?"), "T0SIBLING")
    sender.send_connect_event(sibling, sender_team="T0SIBLING", shared_externally=False, **org)
    # The same org seen from a channel also shared with another organization: an app_mention names the
    # sender's org, not their workspace, as user_team.
    org_wide = connect_user(mention(SHARED, "W0ORGUSER", "And in winter?"), "T0SIBLING", user_team="E0ORG")
    sender.send_connect_event(org_wide, sender_team="T0SIBLING", **org)
    # A user of another Enterprise Grid org in that channel is a guest.
    stranger = connect_user(mention(SHARED, "W0STRANGER", "me too?"), "T0ELSEWHERE", user_team="E0ELSE")
    sender.send_connect_event(stranger, sender_team="T0ELSEWHERE", sender_enterprise="E0ELSE")

    answers(slack, SHARED, sibling["ts"])
    answers(slack, SHARED, org_wide["ts"])
    for request in openai_fake.model_inputs:
        assert names(request["tools"]) == ["current_time", "slack_user_profile", "file_search"]
        assert request["file_search"]["vector_store_ids"] == [knowledge]
    assert len(openai_fake.model_inputs) == 2
    [notice] = slack.ephemerals(SHARED, "W0STRANGER")
    assert NOTICE in notice.text
    assert slack.ephemerals(SHARED, "W0SIBLING") == slack.ephemerals(SHARED, "W0ORGUSER") == []


# ---- shared knowledge stores: checked, never breaking answers ----------------------------------------


def test_an_unknown_knowledge_store_leaves_answers_working(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    good = openai_fake.add_vector_store(HANDBOOK)
    bad = "vs_0123456789abcdef01234567"
    bot = start_bot(knowledge_vector_store_ids=f"{bad},{good}")
    wait_for_log(slack, bot, "knowledge stores checked: 1 of 2 usable")

    event = mention("C0GENERAL", ALICE, "When does the office close?")
    SlackSender(bot.url).send_event(event)
    [answer] = answers(slack, "C0GENERAL", event["ts"])
    assert "couldn't reach the assistant" not in answer.text and "handbook.pdf" in answer.text
    assert openai_fake.model_inputs[-1]["file_search"]["vector_store_ids"] == [good]
    assert not any(bad in json.dumps(r["json"]) for r in responses_posted(openai_fake))
    logs = bot.logs()
    assert f"WARNING bot.assistant.knowledge: knowledge store {bad} is missing" in logs


def test_a_knowledge_store_that_vanishes_between_checks_is_dropped_and_the_answer_asked_again(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    kept = openai_fake.add_vector_store(HANDBOOK)
    gone = openai_fake.add_vector_store({"old.pdf": b"Holidays: ask HR."})
    bot = start_bot(knowledge_vector_store_ids=f"{kept},{gone}")  # next check in 6 hours
    wait_for_log(slack, bot, "knowledge stores checked: 2 of 2 usable")
    openai_fake.delete_vector_store(gone)

    event = mention("C0GENERAL", ALICE, "When does the office close?")
    SlackSender(bot.url).send_event(event)
    [answer] = answers(slack, "C0GENERAL", event["ts"])
    assert "couldn't reach the assistant" not in answer.text
    refused, accepted = responses_posted(openai_fake)
    assert gone in json.dumps(refused["json"]["tools"]) and gone not in json.dumps(accepted["json"]["tools"])
    assert openai_fake.model_inputs[-1]["file_search"]["vector_store_ids"] == [kept]
    assert f"knowledge store {gone} is refused by OpenAI" in bot.logs()
    # The question reached the conversation once; the next answer does not try the store again.
    items = openai_fake.conversation(openai_fake.model_inputs[-1]["conversation"])["items"]
    asked = [t for t in user_texts(items) if t.startswith("user:")]
    assert asked == ["user: When does the office close?"]
    SlackSender(bot.url).send_event(mention("C0GENERAL", ALICE, "and in winter?", thread_ts=event["ts"]))
    answers(slack, "C0GENERAL", event["ts"], count=2)
    assert len(responses_posted(openai_fake)) == 3


def test_stores_are_checked_again_expired_ones_left_out_and_returning_ones_put_back(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    first = openai_fake.add_vector_store(HANDBOOK)
    second = openai_fake.add_vector_store({"winter.pdf": b"Holidays: the office also closes in December."})
    # The start-up check finds `second` missing (a passing 404); a later check finds it again.
    openai_fake.fail_next("GET", rf"^/v1/vector_stores/{second}$", status=404)
    bot = start_bot(knowledge_vector_store_ids=f"{first},{second}", knowledge_check_hours="0.0003")
    wait_for_log(slack, bot, f"knowledge store {second} is missing")
    wait_for_log(slack, bot, f"knowledge store {second} is back")
    # `first` expires after start: the next check leaves it out.
    openai_fake.expire_vector_store(first)
    wait_for_log(slack, bot, f"knowledge store {first} is expired")

    event = mention("C0GENERAL", ALICE, "When does the office close for the holidays?")
    SlackSender(bot.url).send_event(event)
    answers(slack, "C0GENERAL", event["ts"])
    assert openai_fake.model_inputs[-1]["file_search"] == {
        "vector_store_ids": [second],
        "hits": ["winter.pdf"],
    }
    assert len(responses_posted(openai_fake)) == 1  # nothing refused: the check had left it out
