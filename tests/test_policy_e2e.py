"""Channel policy (issue 15 item 4), end to end: a workspace default and a policy per channel, set by admins
with `/assistant config set|show|reset` or the form, change what is sent to OpenAI for that channel's
threads (instructions, model, the tools offered, the knowledge searched) from each thread's next turn;
anyone else sees it and is refused; a value OpenAI does not know saves nothing."""

from __future__ import annotations

import json

import redis

from tests.conftest import BotFactory
from tests.fakes.openai_api import FakeOpenAI, Reply
from tests.fakes.openai_tools import ToolCall
from tests.fakes.slack_api import FakeSlack
from tests.harness import TEAM, SlackSender, mention, message, new_trigger_id
from tests.test_bridge_e2e import ALICE, BOB, CHANNEL, DM, answers
from tests.test_commands_e2e import command, slash
from tests.test_reliability_e2e import NO_LIMITS
from tests.test_tools_e2e import TEAM_TOOLS, tool_names

NS = f"sa:{{-:{TEAM}}}"
POLICY_KEY = f"{NS}:policy"
RANDOM = "C0RANDOM"
CAROL = "U0CAROL"  # in POLICY_ADMINS
TOOLS_ON = {**TEAM_TOOLS, **NO_LIMITS, "ASSISTANT_TOOLS": "web_search,current_time"}
ALL_TOOLS = ["current_time", "get_weather", "open_ticket", "nap", "web_search"]
REFUSED = "Only workspace admins and owners"


def ask(slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, event: dict, count: int = 1) -> dict:
    """Send a message, wait for the answer; the request OpenAI got for it."""
    before = len(openai_fake.model_inputs)
    sender.send_event(event)
    answers(slack, event["channel"], event.get("thread_ts") or event["ts"], count)
    slack.wait_for(lambda: len(openai_fake.model_inputs) > before)
    return openai_fake.model_inputs[-1]


def test_admin_policy_changes_instructions_model_and_tools_of_new_and_existing_threads(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    sender = SlackSender(start_bot(**TOOLS_ON).url)
    root = mention(CHANNEL, ALICE, "first question")
    before = ask(slack, openai_fake, sender, root)
    assert tool_names(before["tools"]) == ALL_TOOLS and before["model"] == "gpt-5.1"

    slack.set_user(BOB, is_admin=True)
    said = command(
        sender,
        'config set instructions="Answer in French." model=gpt-5-mini tools=web_search,get_weather',
        channel=CHANNEL,
        user=BOB,
    )
    assert said.startswith("Saved.") and "Answer in French." in said and "`gpt-5-mini`" in said
    assert json.loads(rdb.hget(POLICY_KEY, CHANNEL)) == {
        "instructions": "Answer in French.",
        "model": "gpt-5-mini",
        "tools": ["web_search", "get_weather"],
    }

    # The existing thread's next turn, and a new thread of the channel: the policy applies.
    reply = message(CHANNEL, ALICE, "and a follow-up", thread_ts=root["ts"])
    for sent in (
        ask(slack, openai_fake, sender, reply, 2),
        ask(slack, openai_fake, sender, mention(CHANNEL, ALICE, "new")),
    ):
        assert sent["model"] == "gpt-5-mini"
        assert tool_names(sent["tools"]) == ["get_weather", "web_search"]
        assert sent["instructions"].index("Answer in French.") < sent["instructions"].index("You are in")
    # Another channel and the DM are untouched.
    other = ask(slack, openai_fake, sender, mention(RANDOM, ALICE, "elsewhere"))
    assert other["model"] == "gpt-5.1" and tool_names(other["tools"]) == ALL_TOOLS
    assert "French" not in other["instructions"]

    # A workspace default (Carol is no admin: Bob sets it) applies everywhere; the channel's instructions
    # add to it and its own settings win.
    said = command(
        sender,
        'config set --workspace instructions="Be brief." tools=current_time',
        channel=CHANNEL,
        user=BOB,
    )
    assert said.startswith("Saved.") and "workspace default" in said
    in_channel = ask(slack, openai_fake, sender, mention(CHANNEL, ALICE, "again"))
    assert in_channel["instructions"].index("Be brief.") < in_channel["instructions"].index(
        "Answer in French."
    )
    assert tool_names(in_channel["tools"]) == ["get_weather", "web_search"]
    dm = ask(slack, openai_fake, sender, message(DM, ALICE, "in my DM", channel_type="im"))
    assert "Be brief." in dm["instructions"] and tool_names(dm["tools"]) == ["current_time"]
    assert dm["model"] == "gpt-5.1"

    # Everyone can see it; the channel's settings it does not set come from the default.
    shown = command(sender, "config show", channel=CHANNEL, user=ALICE)
    assert "*Assistant policy of <#C0GENERAL>*" in shown and "Answer in French." in shown
    assert "`current_time`" not in shown  # the channel's own allowlist is shown, not the default's
    # Reset: the workspace default applies again in the channel.
    assert "Reset the policy of <#C0GENERAL>" in command(sender, "config reset", channel=CHANNEL, user=BOB)
    assert rdb.hexists(POLICY_KEY, CHANNEL) is False
    after = ask(slack, openai_fake, sender, message(CHANNEL, ALICE, "after reset", thread_ts=root["ts"]), 3)
    assert tool_names(after["tools"]) == ["current_time"] and after["model"] == "gpt-5.1"
    assert "French" not in after["instructions"] and "Be brief." in after["instructions"]


def test_an_allowed_function_tool_still_runs(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    """Only the allowed tools are offered, and an allowed one is run as before (the fake, like OpenAI,
    never calls a function the request did not declare)."""
    sender = SlackSender(start_bot(**TOOLS_ON, POLICY_ADMINS=CAROL).url)
    assert command(sender, "config set tools=get_weather", channel=CHANNEL, user=CAROL).startswith("Saved.")
    openai_fake.script(
        Reply(
            tool_calls=(ToolCall("get_weather", {"city": "Oslo", "unit": "celsius"}, call_id="call_oslo"),)
        ),
        Reply(echo_tool_outputs=True),
    )
    ask(slack, openai_fake, sender, mention(CHANNEL, ALICE, "weather in Oslo?"))
    assert [tool_names(m["tools"]) for m in openai_fake.model_inputs] == [["get_weather"], ["get_weather"]]
    [output] = openai_fake.tool_outputs
    assert json.loads(output["output"])["temperature"] == -3


def test_a_non_admin_or_guest_is_refused_and_nothing_changes(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    sender = SlackSender(start_bot(**NO_LIMITS, ALLOW_EXTERNAL_USERS="true", POLICY_ADMINS=CAROL).url)
    for text in ("config set model=gpt-5-mini", "config set --workspace tools=none", "config reset"):
        said = command(sender, text, channel=CHANNEL, user=ALICE)
        assert said.startswith(REFUSED) and "Nothing was changed" in said
    # A Slack Connect guest who administers their own workspace: refused too.
    slack.set_user("U0GUEST", is_admin=True, is_owner=True)
    said = command(sender, "config set model=gpt-5-mini", channel=CHANNEL, user="U0GUEST", team="T0OTHER")
    assert said.startswith(REFUSED)
    # An admin of another organization's workspace, even where nothing flagged them external: refused.
    slack.set_user("U0FOREIGN", is_admin=True, team_id="T0OTHER")
    assert command(sender, "config set model=gpt-5-mini", channel=CHANNEL, user="U0FOREIGN").startswith(
        REFUSED
    )
    # Through a mention in a thread: the same refusal, whispered.
    sender.send_event(mention(CHANNEL, ALICE, "config set tools=none"))
    slack.wait_for(lambda: bool(slack.ephemerals(CHANNEL, ALICE)))
    assert slack.ephemerals(CHANNEL, ALICE)[0].text.startswith(REFUSED)
    assert not rdb.exists(POLICY_KEY)
    assert not openai_fake.model_inputs  # a command never reaches the model
    # Those who may: the people in POLICY_ADMINS, and owners (users.info is_owner / is_primary_owner).
    assert command(sender, "config set tools=none", channel=CHANNEL, user=CAROL).startswith("Saved.")
    slack.set_user(BOB, is_primary_owner=True)
    assert command(sender, "config set tools=web_search", channel=RANDOM, user=BOB).startswith("Saved.")
    assert sorted(rdb.hkeys(POLICY_KEY)) == [CHANNEL, RANDOM]
    # Everyone sees it.
    assert "• `tools`: `none`" in command(sender, "config show", channel=CHANNEL, user=ALICE)


def test_validation_failures_save_nothing(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    sender = SlackSender(start_bot(**TOOLS_ON, POLICY_ADMINS=CAROL).url)
    cases = {
        "config set model=gpt-9-imaginary": "The model `gpt-9-imaginary` does not exist",
        "config set tools=web_search,teleport": "Unknown tool(s): `teleport`",
        "config set knowledge=vs_missing": "The vector store `vs_missing` is not found",
        "config set knowledge=notastore": "Not a vector store id",
        "config set user_per_minute=lots": "`user_per_minute` takes a whole number",
        "config set colour=red": "`/assistant config` has no setting `colour`",
        "config set model": "`model` is not `KEY=VALUE`",
        'config set instructions="unclosed': "unclosed quote",
        # One bad value among good ones: none of them is saved.
        'config set instructions="Fine." model=gpt-5-mini tools=teleport': "Unknown tool(s)",
    }
    for text, expected in cases.items():
        said = command(sender, text, channel=CHANNEL, user=CAROL)
        assert expected in said, (text, said)
    assert not rdb.exists(POLICY_KEY)
    assert not any(r["path"] == "/v1/models/gpt-5-mini" for r in openai_fake.requests)  # checked after form

    # A store that exists is saved, and searched in the channel's threads instead of the configured ones.
    store = openai_fake.add_vector_store({"handbook.md": b"The office opens at nine."})
    assert command(sender, f"config set knowledge={store}", channel=CHANNEL, user=CAROL).startswith("Saved.")
    sent = ask(slack, openai_fake, sender, mention(CHANNEL, ALICE, "when does the office open?"))
    assert sent["file_search"]["vector_store_ids"] == [store]
    # The store deleted since: OpenAI refuses it by name, and the answer comes without it.
    openai_fake.delete_vector_store(store)
    sent = ask(slack, openai_fake, sender, mention(CHANNEL, ALICE, "still there?"))
    assert sent["file_search"] is None
    # file_search off the allowlist: no search at all, the stores neither.
    command(sender, "config set tools=web_search", channel=CHANNEL, user=CAROL)
    sent = ask(slack, openai_fake, sender, mention(CHANNEL, ALICE, "and now?"))
    assert tool_names(sent["tools"]) == ["web_search"] and sent["file_search"] is None


def policy_submission(view: dict, values: dict[str, str], *, user: str, team: str = TEAM) -> str:
    state = {f"policy_{k}": {"value": {"type": "plain_text_input", "value": v}} for k, v in values.items()}
    payload = {
        "type": "view_submission",
        "team": {"id": team, "domain": "acme"},
        "user": {"id": user, "team_id": team},
        "view": {**view, "state": {"values": state}},
        "api_app_id": "A0APP",
        "trigger_id": new_trigger_id(),
    }
    return json.dumps(payload)


def open_form(slack: FakeSlack, sender: SlackSender, user: str, channel: str = CHANNEL) -> dict:
    seen = len(slack.views())
    payload = slash("config", channel=channel, user=user, response_url=sender.response_url())
    assert sender.send_form(payload).status == 200
    slack.wait_for(lambda: len(slack.views()) >= seen + 2)  # the loading view, then the form (or notice)
    return slack.views()[-1]


def test_the_form_shows_and_saves_the_policy_and_show_round_trips(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    sender = SlackSender(start_bot(**TOOLS_ON, POLICY_ADMINS=CAROL).url)
    command(sender, 'config set instructions="Line one." tools=none', channel=CHANNEL, user=CAROL)
    form = open_form(slack, sender, CAROL)
    assert form["callback_id"] == "channel_policy_modal"
    initial = {
        b["block_id"]: b["element"].get("initial_value") for b in form["blocks"] if b["type"] == "input"
    }
    assert initial == {
        "policy_instructions": "Line one.",
        "policy_model": None,
        "policy_tools": "none",
        "policy_mcp": None,
        "policy_knowledge": None,
        "policy_user_per_minute": None,
        "policy_thread_answers": None,
    }
    values = {
        "instructions": "Line one.\nLine two.",
        "model": "gpt-5-nano",
        "tools": "web_search",
        "mcp": "",
        "knowledge": "",
        "user_per_minute": "5",
        "thread_answers": "",
    }
    ok = sender.send_form({"payload": policy_submission(form, values, user=CAROL)})
    assert ok.status == 200 and "errors" not in ok.body
    assert json.loads(rdb.hget(POLICY_KEY, CHANNEL)) == {
        "instructions": "Line one.\nLine two.",
        "model": "gpt-5-nano",
        "tools": ["web_search"],
        "user_per_minute": 5,
    }
    shown = command(sender, "config show", channel=CHANNEL, user=ALICE)
    assert (
        "> Line one.\n> Line two." in shown and "`gpt-5-nano`" in shown and "• `user_per_minute`: 5" in shown
    )
    # The form again shows what was saved.
    again = open_form(slack, sender, CAROL)
    assert {
        b["block_id"]: b["element"].get("initial_value") for b in again["blocks"] if b["type"] == "input"
    }["policy_instructions"] == "Line one.\nLine two."

    # A bad value: shown under its input, nothing saved.
    bad = sender.send_form({"payload": policy_submission(again, {**values, "model": "gpt-0"}, user=CAROL)})
    body = json.loads(bad.body)
    assert body["response_action"] == "errors" and "gpt-0" in body["errors"]["policy_model"]
    # Alice replays Carol's form: refused; Alice opening the form sees the policy and the refusal.
    forged = sender.send_form({"payload": policy_submission(again, {**values, "tools": ""}, user=ALICE)})
    assert "someone else" in json.loads(forged.body)["errors"]["policy_instructions"]
    notice = open_form(slack, sender, ALICE)
    assert not notice.get("callback_id") and REFUSED in json.dumps(notice["blocks"])
    assert json.loads(rdb.hget(POLICY_KEY, CHANNEL))["model"] == "gpt-5-nano"


def test_policy_spend_limit_and_the_app_home_listing(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    sender = SlackSender(start_bot(**NO_LIMITS, POLICY_ADMINS=CAROL).url)
    command(sender, "config set user_per_minute=1", channel=CHANNEL, user=CAROL)
    command(sender, "config set --workspace thread_answers=20", channel=CHANNEL, user=CAROL)
    first = mention(CHANNEL, ALICE, "one")
    ask(slack, openai_fake, sender, first)
    second = mention(CHANNEL, ALICE, "two")
    sender.send_event(second)
    [told] = answers(slack, CHANNEL, second["ts"])
    assert "1 answer(s) per person per minute" in told.text
    assert len(openai_fake.model_inputs) == 1  # the second message never reached the model
    # Bob is not limited by Alice's allowance.
    ask(slack, openai_fake, sender, mention(CHANNEL, BOB, "three"))
    # A thread's answers per day: the channel's own setting wins over the default's 20.
    command(sender, "config set thread_answers=1", channel=RANDOM, user=CAROL)
    root = mention(RANDOM, BOB, "four")
    ask(slack, openai_fake, sender, root)
    sender.send_event(message(RANDOM, BOB, "five", thread_ts=root["ts"]))
    _, told = answers(slack, RANDOM, root["ts"], 2)
    assert "1 answer(s) per thread per day" in told.text
    assert len(openai_fake.model_inputs) == 3

    def home(user: str) -> str:
        seen = len(slack.views())
        sender.send_event(
            {"type": "app_home_opened", "user": user, "channel": DM, "tab": "home", "event_ts": "1.0"}
        )
        slack.wait_for(lambda: len(slack.views()) > seen)
        return json.dumps(slack.views()[-1]["blocks"])

    listed = home(CAROL)
    assert "Channel policies" in listed and "<#C0GENERAL>" in listed and "Workspace default: set" in listed
    assert "Channel policies" not in home(ALICE)
