"""Usage accounting (issue 13), end to end: the tokens the fake OpenAI reports in each response's `usage`
are counted in Redis per user, per channel and per workspace by UTC day; `/assistant usage`, `@Assistant
usage` and the App Home show them; an admin (users.info `is_admin` / `is_owner`) also sees the
workspace's top users and channels; a retried turn counts its response once."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import UTC, datetime

import redis

from tests.conftest import BotFactory
from tests.fakes.openai_api import FakeOpenAI, Reply
from tests.fakes.openai_tools import ToolCall
from tests.fakes.slack_api import FakeSlack
from tests.harness import TEAM, SlackSender, mention, message, new_ts
from tests.test_bridge_e2e import ALICE, BOB, CHANNEL, DM, answers
from tests.test_commands_e2e import command
from tests.test_reliability_e2e import FAST, NO_LIMITS
from tests.test_tools_e2e import TEAM_TOOLS

NS = f"sa:{{-:{TEAM}}}"
RANDOM = "C0RANDOM"
FIELDS = ("input", "output", "total", "reasoning", "responses")
# USAGE_TTL and USAGE_COUNTED_TTL (bot/keys.py): 400 days and 7 days.
USAGE_TTL_SECONDS = 400 * 86400
MARKER_TTL_SECONDS = 7 * 86400


def day_of(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d")


class Expected:
    """What Redis should hold: the fake's own `usage` of each response, summed like the bot does."""

    def __init__(self) -> None:
        self.scopes: dict[str, Counter[str]] = {}
        self.top: dict[str, Counter[str]] = {}

    def add(self, usage: dict, day: str, user: str, channel: str) -> None:
        counts = Counter(
            input=usage["input_tokens"],
            output=usage["output_tokens"],
            total=usage["total_tokens"],
            reasoning=usage["output_tokens_details"]["reasoning_tokens"],
            responses=1,
        )
        for key in (f"{day}:team", f"{day}:user:{user}", f"{day}:channel:{channel}"):
            self.scopes.setdefault(key, Counter()).update(counts)
        self.top.setdefault(f"{day}:top:users", Counter())[user] += usage["total_tokens"]
        self.top.setdefault(f"{day}:top:channels", Counter())[channel] += usage["total_tokens"]

    def totals(self, prefix: str, suffix: str) -> Counter[str]:
        out: Counter[str] = Counter()
        for key, counts in self.scopes.items():
            if key.startswith(prefix) and key.endswith(suffix):
                out.update(counts)
        return out


def usage_of(openai_fake: FakeOpenAI, response_id: str) -> tuple[dict, str]:
    stored = openai_fake.response(response_id)
    return stored["usage"], day_of(stored["created_at"])


def describe(c: Counter[str]) -> str:
    reasoning = f", {c['reasoning']:,} of them reasoning" if c["reasoning"] else ""
    plural = "" if c["responses"] == 1 else "s"
    return (
        f"{c['total']:,} tokens ({c['input']:,} in, {c['output']:,} out{reasoning}) "
        f"in {c['responses']:,} model response{plural}"
    )


def line(label: str, c: Counter[str]) -> str:
    return f"• {label}: {describe(c)}"


def counted(rdb: redis.Redis, responses: int) -> bool:
    """Every response so far is counted (a turn's usage is written as its last response ends)."""
    return len(rdb.keys(f"{NS}:usage:counted:*")) >= responses


def run_turns(slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, rdb: redis.Redis) -> Expected:
    """Alice in #general and #random (one answer with reasoning tokens) and in her DM, Bob in #random."""
    turns = [
        (CHANNEL, ALICE, Reply(text="An answer for Alice in general.")),
        (RANDOM, BOB, Reply(text="Bob gets a somewhat longer answer in random, with more output tokens.")),
        (RANDOM, ALICE, Reply(text="Alice thought hard about this one.", reasoning_tokens=321)),
        (DM, ALICE, Reply(text="A private answer.")),
    ]
    expected = Expected()
    for n, (channel, user, reply) in enumerate(turns):
        openai_fake.script(reply)
        if channel == DM:
            event = message(DM, user, "a question in my DM", channel_type="im")
        else:
            event = mention(channel, user, f"question {n} from {user}")
        sender.send_event(event)
        answers(slack, channel, event["ts"])
        slack.wait_for(lambda n=n: counted(rdb, n + 1))
        rid = openai_fake.model_inputs[-1]["response_id"]
        usage, day = usage_of(openai_fake, rid)
        expected.add(usage, day, user, "dm" if channel == DM else channel)
    return expected


def test_tokens_are_counted_per_user_channel_and_workspace_by_day_with_ttls(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    sender = SlackSender(start_bot(**NO_LIMITS).url)
    expected = run_turns(slack, openai_fake, sender, rdb)

    # The fake reported realistic usage (input = context + instructions + tools; reasoning is output too).
    assert all(c["input"] > 0 and c["output"] > 0 for c in expected.scopes.values())
    assert expected.totals("", ":team")["reasoning"] == 321
    # Redis holds exactly the fake's numbers, per day and scope (hashes) and on the day's leaderboards.
    for key, counts in expected.scopes.items():
        assert rdb.hgetall(f"{NS}:usage:{key}") == {f: str(counts[f]) for f in FIELDS}, key
    for key, board in expected.top.items():
        assert dict(rdb.zrange(f"{NS}:usage:{key}", 0, -1, withscores=True)) == {
            m: float(v) for m, v in board.items()
        }
    # Only those keys: no per-DM-channel key (direct messages count as one channel, `dm`).
    day_keys = {k for k in rdb.keys(f"{NS}:usage:*") if ":counted:" not in k}
    assert day_keys == {f"{NS}:usage:{k}" for k in [*expected.scopes, *expected.top]}
    assert not any(DM in k for k in day_keys)
    # Every usage key expires: the day's counts after USAGE_TTL, the per-response markers with the turn.
    for key in day_keys:
        assert USAGE_TTL_SECONDS - 3600 < rdb.ttl(key) <= USAGE_TTL_SECONDS, key
    markers = rdb.keys(f"{NS}:usage:counted:*")
    assert len(markers) == 4
    for key in markers:
        assert MARKER_TTL_SECONDS - 3600 < rdb.ttl(key) <= MARKER_TTL_SECONDS, key


def test_usage_command_shows_your_own_and_admins_see_the_top_users_and_channels(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    sender = SlackSender(start_bot(**NO_LIMITS).url)
    expected = run_turns(slack, openai_fake, sender, rdb)
    alice = expected.totals("", f":user:{ALICE}")
    bob = expected.totals("", f":user:{BOB}")

    # Alice (not an admin), in a channel: her own usage only, today and the last 7 and 30 days.
    before = day_of(time.time())
    text = command(sender, "usage", channel=CHANNEL)
    today = day_of(time.time())
    assert line("Last 7 days", alice) in text and line("Last 30 days", alice) in text
    if before == today:  # not across midnight UTC
        assert line("Today", expected.totals(today, f":user:{ALICE}")) in text
    assert "321 of them reasoning" in text
    assert "Top" not in text and "This workspace" not in text and BOB not in text

    # Bob, a workspace admin (users.info is_admin), also sees the workspace and who used the most.
    # (Whether someone is an admin is cached for a minute: set before Bob's first question.)
    slack.set_user(BOB, is_admin=True)
    text = command(sender, "usage", channel=RANDOM, user=BOB)
    workspace = expected.totals("", ":team")
    assert line("Last 30 days", bob) in text
    assert f"*This workspace, last 30 days* (you are an admin): {describe(workspace)}" in text
    users = sorted(((alice["total"], ALICE), (bob["total"], BOB)), reverse=True)
    assert "\n".join(f"{n}. <@{u}>: {t:,} tokens" for n, (t, u) in enumerate(users, 1)) in text
    channels = Counter()
    for key, counts in expected.scopes.items():
        if ":channel:" in key:
            channels[key.rsplit(":", 1)[1]] += counts["total"]
    shown = {CHANNEL: f"<#{CHANNEL}>", RANDOM: f"<#{RANDOM}>", "dm": "Direct messages"}
    ranked = sorted(channels.items(), key=lambda kv: (-kv[1], kv[0]))
    assert "\n".join(f"{n}. {shown[c]}: {t:,} tokens" for n, (c, t) in enumerate(ranked, 1)) in text

    # An owner is an admin too; the same command after a mention answers ephemerally.
    carol = "U0CAROL"
    slack.set_user(carol, is_owner=True)
    root = mention(CHANNEL, carol, "usage")
    sender.send_event(root)
    slack.wait_for(lambda: bool(slack.ephemerals(CHANNEL, carol)))
    [told] = slack.ephemerals(CHANNEL, carol)
    assert "• Last 30 days: none" in told.text
    assert f"1. <@{users[0][1]}>" in told.text and "*This workspace, last 30 days*" in told.text
    # No answer ran for it: the model saw four turns, nothing more was counted.
    assert len(openai_fake.model_inputs) == 4
    assert rdb.hget(f"{NS}:usage:{today}:team", "responses") == str(
        expected.totals(today, ":team")["responses"]
    )

    # `usage` is in the help, and takes no arguments (a question starting with it is a question).
    assert "/assistant usage" in command(sender, "help")
    assert "takes no arguments" in command(sender, "usage please")


def test_a_non_admin_and_a_guest_admin_of_another_org_see_no_workspace_figures(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    sender = SlackSender(start_bot(allow_external_users="true", **NO_LIMITS).url)
    openai_fake.script(Reply(text="hello"))
    event = mention(CHANNEL, ALICE, "hi")
    sender.send_event(event)
    answers(slack, CHANNEL, event["ts"])
    slack.wait_for(lambda: counted(rdb, 1))
    # A guest who administers their own workspace (users.info says is_admin) is no admin of this one.
    guest = "U0GUEST"
    slack.set_user(guest, is_admin=True, is_owner=True)
    text = command(sender, "usage", channel=CHANNEL, user=guest, team="T0PARTNER")
    assert "Your assistant usage" in text and "• Last 30 days: none" in text
    assert "This workspace" not in text and ALICE not in text
    # A member who is neither admin nor owner: the same.
    text = command(sender, "usage", channel=CHANNEL, user=BOB)
    assert "• Today: none" in text and "This workspace" not in text and ALICE not in text


def test_every_response_of_a_tool_loop_counts_and_a_retried_turn_counts_once(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    bot = start_bot(**TEAM_TOOLS, **FAST, **NO_LIMITS)
    sender = SlackSender(bot.url)
    # A tool loop: two responses, both counted for Alice in #general.
    openai_fake.script(
        Reply(tool_calls=(ToolCall("get_weather", {"city": "Lisbon", "unit": "celsius"}),)),
        Reply(echo_tool_outputs=True, reasoning_tokens=50),
    )
    event = mention(CHANNEL, ALICE, "Weather in Lisbon?")
    sender.send_event(event)
    answers(slack, CHANNEL, event["ts"])
    slack.wait_for(lambda: counted(rdb, 2))
    expected = Expected()
    for entry in openai_fake.model_inputs:
        expected.add(*usage_of(openai_fake, entry["response_id"]), ALICE, CHANNEL)
    for key, counts in expected.scopes.items():
        assert rdb.hgetall(f"{NS}:usage:{key}") == {f: str(counts[f]) for f in FIELDS}
    assert expected.totals("", ":team")["responses"] == 2

    # Slack refuses the finished answer: the turn is retried, its recorded response is resumed (not run
    # again) and shown; its usage, counted when it ended the first time, is not counted again.
    for method in ("chat.stopStream", "chat.update", "chat.postMessage"):
        slack.fail_next(method, "internal_error")
    openai_fake.script(Reply(text="shown on a later attempt"))
    retried = mention(RANDOM, BOB, "hello?")
    sender.send_event(retried)
    slack.wait_for(
        lambda: (
            [(m.text, m.streaming) for m in slack.messages(RANDOM, retried["ts"])]
            == [("shown on a later attempt", False)]
        ),
        timeout=30,
    )
    assert len(openai_fake.model_inputs) == 3
    rid = openai_fake.model_inputs[-1]["response_id"]
    slack.wait_for(lambda: f"usage of {rid} was counted already" in bot.logs())
    usage, day = usage_of(openai_fake, rid)
    expected.add(usage, day, BOB, RANDOM)
    for key, counts in expected.scopes.items():
        assert rdb.hgetall(f"{NS}:usage:{key}") == {f: str(counts[f]) for f in FIELDS}, key
    assert rdb.hget(f"{NS}:usage:{day}:user:{BOB}", "responses") == "1"


def test_app_home_shows_your_usage(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    sender = SlackSender(start_bot(**NO_LIMITS).url)

    def home_text(user: str) -> str:
        published = len(slack.views())
        sender.send_event(
            {"type": "app_home_opened", "user": user, "channel": DM, "tab": "home", "event_ts": new_ts()}
        )
        slack.wait_for(lambda: len(slack.views()) > published)
        return json.dumps(slack.views()[-1]["blocks"], ensure_ascii=False)

    assert "• Last 30 days: none" in home_text(ALICE)
    openai_fake.script(Reply(text="Counted on the App Home.", reasoning_tokens=7))
    event = mention(CHANNEL, ALICE, "hi")
    sender.send_event(event)
    answers(slack, CHANNEL, event["ts"])
    slack.wait_for(lambda: counted(rdb, 1))
    usage, day = usage_of(openai_fake, openai_fake.model_inputs[-1]["response_id"])
    expected = Expected()
    expected.add(usage, day, ALICE, CHANNEL)
    mine = expected.totals("", f":user:{ALICE}")

    text = home_text(ALICE)
    assert "*Your usage* (tokens; days in UTC)" in text
    assert line("Last 30 days", mine) in text
    if day == day_of(time.time()):
        assert line("Today", mine) in text
    # Bob's App Home shows his own (none), not Alice's.
    bob = home_text(BOB)
    assert "• Last 30 days: none" in bob and f"{mine['total']:,} tokens" not in bob
