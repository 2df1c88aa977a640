"""Installed to many workspaces with OAuth (issue 13), end to end: Bolt's install page and redirect on a
real bot process, the fake Slack's authorize page and `oauth.v2.access`, the installations in Redis
(bot/slack/installations.py), each workspace answered with its own token (by the front and by a separate
worker), rotating tokens refreshed, Enterprise Grid org-wide installs, and uninstalls that remove the
installation and the workspace's data. The stores themselves are checked against the real Redis too."""

from __future__ import annotations

import asyncio
import html
import http.client
import json
import re
import time
import urllib.parse
from typing import Any

import pytest
import redis
from redis.asyncio import Redis as AsyncRedis
from slack_sdk.oauth.installation_store import Installation

from bot.slack.installations import RedisInstallationStore, RedisOAuthStateStore
from tests.conftest import BotFactory
from tests.fakes.openai_api import FakeOpenAI, Reply
from tests.fakes.slack_api import CLIENT_ID, CLIENT_SECRET, FakeSlack, TokenInfo
from tests.harness import BOT_TOKEN, BotProcess, SlackSender, mention, new_ts
from tests.redis_topologies import on_topologies
from tests.test_bridge_e2e import ALICE, answers
from tests.test_reliability_e2e import NO_LIMITS

OTHER = "T0TEAM2"
THIRD = "T0TEAM3"
ORG = "E0ORG"
ORG_TEAM = "T0ORGA"
STATE_COOKIE = "slack-app-oauth-state"
CHAT_METHODS = ("chat.startStream", "chat.appendStream", "chat.stopStream", "chat.postMessage")


def oauth_env(slack: FakeSlack) -> dict[str, str]:
    return {
        "SLACK_BOT_TOKEN": "",
        "SLACK_CLIENT_ID": CLIENT_ID,
        "SLACK_CLIENT_SECRET": CLIENT_SECRET,
        "SLACK_AUTHORIZE_URL": slack.api_url.removesuffix("/api/") + "/oauth/v2/authorize",
        **NO_LIMITS,
    }


@pytest.fixture
def oauth_bot(start_bot: BotFactory, slack: FakeSlack) -> BotProcess:
    bot = start_bot(**oauth_env(slack))
    slack.oauth_redirect_url = f"{bot.url}/slack/oauth_redirect"
    return bot


def _get(url: str, cookie: str | None = None) -> tuple[int, dict[str, str], str]:
    """One GET, redirects not followed (as a browser's single step)."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=15)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        resp = connection.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read().decode()
    finally:
        connection.close()


def install(bot: BotProcess, slack: FakeSlack, team: str | None, **grant: Any) -> tuple[int, str]:
    """What an admin's browser does: open the install page, follow its "Add to Slack" link to Slack's
    authorize page (which approves, see `grant_install`), follow the redirect back with the state cookie.
    The redirect's status and page."""
    slack.grant_install(team, **grant)
    status, headers, page = _get(f"{bot.url}/slack/install")
    assert status == 200, page
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    assert cookie.startswith(f"{STATE_COOKIE}=")
    link = html.unescape(re.search(r'<a href="([^"]+)"', page).group(1))  # type: ignore[union-attr]
    status, headers, _ = _get(link)
    assert status == 302, "Slack's authorize page redirects back to the app"
    return _get(headers["Location"], cookie)[::2]


def event_for(
    event: dict[str, Any], team: str | None, *, enterprise: str | None = None, org_wide: bool = False
) -> str:
    """An event delivered to the installation of `team` (or of the org, `org_wide`: Slack names no team
    in its authorization then)."""
    return json.dumps(
        {
            "team_id": team,
            "enterprise_id": enterprise,
            "api_app_id": "A0APP",
            "event": event,
            "type": "event_callback",
            "event_id": f"Ev{new_ts().replace('.', '')}",
            "event_time": 1_800_000_000,
            "authorizations": [
                {
                    "enterprise_id": enterprise,
                    "team_id": None if org_wide else team,
                    "user_id": "U0BOTX",
                    "is_bot": True,
                    "is_enterprise_install": org_wide,
                }
            ],
        }
    )


def tokens_of(slack: FakeSlack, channel: str) -> set[str | None]:
    """The tokens the calls that wrote into `channel` carried."""
    return {
        c.token
        for c in slack.calls
        if c.method in CHAT_METHODS and (c.args.get("channel") or c.args.get("channel_id")) == channel
    }


def issued_for(slack: FakeSlack, team: str | None = None, enterprise: str | None = None) -> list[TokenInfo]:
    return [t for t in slack.issued_tokens if t.team_id == team and t.enterprise_id == enterprise]


def stored_bot(rdb: redis.Redis, enterprise: str | None, team: str | None) -> dict[str, Any]:
    raw = rdb.hget(f"sa:{{{enterprise or '-'}:{team or '-'}}}:install", "bot")
    assert raw is not None, "no bot installation stored"
    return json.loads(raw)


def assert_no_issued_token_logged(slack: FakeSlack, *bots: BotProcess) -> None:
    """No code, access token or refresh token of the OAuth flow, nor the client secret, in any log."""
    for bot in bots:
        logs = bot.logs()
        assert not [secret[:12] for secret in slack.oauth_secrets if secret in logs]
        assert CLIENT_SECRET not in logs


def set_expiry(rdb: redis.Redis, enterprise: str | None, team: str | None, expires_at: int) -> None:
    """What the passing of time does to the stored install: its token now expires at `expires_at`."""
    key = f"sa:{{{enterprise or '-'}:{team or '-'}}}:install"
    bot = json.loads(rdb.hget(key, "bot"))
    bot["bot_token_expires_at"] = expires_at
    rdb.hset(key, "bot", json.dumps(bot))


# ---------------------------------------------------------------------------------------- round trips


def test_an_install_stores_its_token_in_redis_and_that_workspace_is_answered_with_it(
    oauth_bot: BotProcess, slack: FakeSlack, openai_fake: FakeOpenAI, rdb: redis.Redis
) -> None:
    status, page = install(oauth_bot, slack, OTHER, team_name="Other Team")
    assert status == 200 and "Thank you" in page
    (issued,) = issued_for(slack, OTHER)
    bot = stored_bot(rdb, None, OTHER)
    assert (bot["bot_token"], bot["team_id"], bot["bot_user_id"]) == (issued.token, OTHER, issued.bot_user_id)
    assert rdb.smembers("sa:installs") == {f"-:{OTHER}"}
    assert not list(rdb.scan_iter("sa:oauth-state:*")), "the link's state is used up"

    openai_fake.script(Reply(text="Hello from the other workspace."))
    ts = new_ts()
    SlackSender(oauth_bot.url).post(event_for(mention("C0OTHER", ALICE, "hi", ts=ts), OTHER))
    (answer,) = answers(slack, "C0OTHER", ts)
    assert answer.text == "Hello from the other workspace."
    assert tokens_of(slack, "C0OTHER") == {issued.token}
    assert BOT_TOKEN not in {c.token for c in slack.calls}, "no single-workspace token in OAuth mode"
    assert_no_issued_token_logged(slack, oauth_bot)


def test_a_redirect_is_refused_without_a_state_this_bot_issued_or_twice(
    oauth_bot: BotProcess, slack: FakeSlack, rdb: redis.Redis
) -> None:
    slack.grant_install(OTHER)
    status, headers, page = _get(f"{oauth_bot.url}/slack/install")
    assert status == 200
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    link = html.unescape(re.search(r'<a href="([^"]+)"', page).group(1))  # type: ignore[union-attr]
    state = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)["state"][0]
    assert 0 < rdb.ttl(f"sa:oauth-state:{state}") <= 600
    location = _get(link)[1]["Location"]
    forged = location.replace(state, "f" * 43)
    # Bolt's answers: 401 for a state its store does not hold, 400 for one the cookie does not match.
    assert _get(forged, cookie.replace(state, "f" * 43))[0] == 401  # a state nobody issued
    assert _get(location, "slack-app-oauth-state=" + "f" * 43)[0] == 400  # another browser's redirect
    assert _get(location, cookie)[0] == 200
    assert _get(location, cookie)[0] == 401  # the same redirect again: the state is used up
    assert len(issued_for(slack, OTHER)) == 1
    assert [c.error for c in slack.calls if c.method == "oauth.v2.access"] == [None]


def test_a_workspace_that_did_not_install_the_app_gets_nothing(
    oauth_bot: BotProcess, slack: FakeSlack, openai_fake: FakeOpenAI
) -> None:
    install(oauth_bot, slack, OTHER)
    ts = new_ts()
    reply = SlackSender(oauth_bot.url).post(event_for(mention("C0STRANGER", ALICE, "hi", ts=ts), THIRD))
    assert reply.status in (200, 401)
    slack.wait_for(lambda: "installation" in oauth_bot.logs() or "AuthorizeResult" in oauth_bot.logs())
    assert tokens_of(slack, "C0STRANGER") == set()
    assert openai_fake.conversations == {}, "nothing reached OpenAI"


def test_each_workspaces_turns_run_on_a_worker_with_that_workspaces_token(
    start_bot: BotFactory, slack: FakeSlack, openai_fake: FakeOpenAI
) -> None:
    env = oauth_env(slack)
    front = start_bot(WORKER_CONCURRENCY="0", **env)
    worker = start_bot(worker=True, **env)
    slack.oauth_redirect_url = f"{front.url}/slack/oauth_redirect"
    install(front, slack, OTHER)
    install(front, slack, THIRD)
    (other,), (third,) = issued_for(slack, OTHER), issued_for(slack, THIRD)

    openai_fake.script(Reply(text="answer one"), Reply(text="answer two"))
    sender = SlackSender(front.url)
    ts_other, ts_third = new_ts(), new_ts()
    sender.post(event_for(mention("C0OTHER", ALICE, "one", ts=ts_other), OTHER))
    sender.post(event_for(mention("C0THIRD", ALICE, "two", ts=ts_third), THIRD))
    answers(slack, "C0OTHER", ts_other)
    answers(slack, "C0THIRD", ts_third)
    assert tokens_of(slack, "C0OTHER") == {other.token}
    assert tokens_of(slack, "C0THIRD") == {third.token}
    assert "no installation" not in worker.logs()
    assert_no_issued_token_logged(slack, front, worker)


def test_a_rotating_token_is_refreshed_before_it_expires_and_saved_for_every_replica(
    oauth_bot: BotProcess, slack: FakeSlack, openai_fake: FakeOpenAI, rdb: redis.Redis
) -> None:
    # A token that lives an hour is within the bot's two-hour refresh window from the start.
    slack.token_lifetime_scale = 3600 / 43_200
    try:
        install(oauth_bot, slack, OTHER, rotating=True)
        (original,) = issued_for(slack, OTHER)
        assert stored_bot(rdb, None, OTHER)["bot_refresh_token"].startswith("xoxe-1-")
        slack.advance_clock(3601)  # the install's token is dead now
        openai_fake.script(Reply(text="still here"))
        ts = new_ts()
        SlackSender(oauth_bot.url).post(event_for(mention("C0OTHER", ALICE, "hi", ts=ts), OTHER))
        (answer,) = answers(slack, "C0OTHER", ts)
    finally:
        slack.token_lifetime_scale = 1.0
    assert answer.text == "still here"
    used = tokens_of(slack, "C0OTHER")
    assert original.token not in used and len(used) >= 1
    refreshes = [c for c in slack.calls if c.method == "oauth.v2.access" and c.args.get("grant_type")]
    assert refreshes and all(c.args["grant_type"] == "refresh_token" and c.ok for c in refreshes)
    latest = stored_bot(rdb, None, OTHER)["bot_token"]
    assert latest != original.token and latest in {t.token for t in slack.issued_tokens}
    assert not [c for c in slack.calls if c.error == "token_expired"]
    assert_no_issued_token_logged(slack, oauth_bot)


def test_an_org_wide_install_answers_a_workspace_of_the_org(
    oauth_bot: BotProcess, slack: FakeSlack, openai_fake: FakeOpenAI, rdb: redis.Redis
) -> None:
    install(oauth_bot, slack, None, enterprise_id=ORG, org_wide=True)
    (org_token,) = issued_for(slack, None, ORG)
    assert stored_bot(rdb, ORG, None)["is_enterprise_install"] is True
    openai_fake.script(Reply(text="org answer"))
    ts = new_ts()
    body = event_for(mention("C0ORGCH", ALICE, "hi", ts=ts), ORG_TEAM, enterprise=ORG, org_wide=True)
    SlackSender(oauth_bot.url).post(body)
    (answer,) = answers(slack, "C0ORGCH", ts)
    assert answer.text == "org answer"
    assert tokens_of(slack, "C0ORGCH") == {org_token.token}
    # The workspace's own data lives in its namespace within the org.
    assert rdb.exists(*rdb.keys(f"sa:{{{ORG}:{ORG_TEAM}}}:thread:*")) >= 1


def test_uninstall_removes_the_installation_and_the_workspaces_threads(
    oauth_bot: BotProcess, slack: FakeSlack, openai_fake: FakeOpenAI, rdb: redis.Redis
) -> None:
    install(oauth_bot, slack, OTHER)
    install(oauth_bot, slack, THIRD)
    sender = SlackSender(oauth_bot.url)
    openai_fake.script(Reply(text="a"), Reply(text="b"))
    ts_other, ts_third = new_ts(), new_ts()
    sender.post(event_for(mention("C0OTHER", ALICE, "hi", ts=ts_other), OTHER))
    sender.post(event_for(mention("C0THIRD", ALICE, "hi", ts=ts_third), THIRD))
    answers(slack, "C0OTHER", ts_other)
    answers(slack, "C0THIRD", ts_third)
    other_ns, third_ns = f"sa:{{-:{OTHER}}}", f"sa:{{-:{THIRD}}}"
    assert rdb.keys(f"{other_ns}:thread:*")
    # An upload ledger stays behind for the orphan sweep to find.
    rdb.hset(
        f"{other_ns}:uploads:C0OTHER:{ts_other}", "file-x", json.dumps({"kind": "file", "created_at": 1})
    )

    assert sender.post(event_for({"type": "app_uninstalled", "event_ts": new_ts()}, OTHER)).status == 200
    slack.wait_for(lambda: not rdb.exists(f"{other_ns}:install"))
    slack.wait_for(lambda: not rdb.keys(f"{other_ns}:thread:*"))
    left = {k.removeprefix(other_ns + ":").split(":")[0] for k in rdb.keys(f"{other_ns}:*")}
    assert left <= {"uploads", "turns", "queue", "turn", "runner"}, left
    assert rdb.smembers("sa:installs") == {f"-:{THIRD}"}
    assert rdb.exists(f"{third_ns}:install") and rdb.keys(f"{third_ns}:thread:*"), "others untouched"

    # The uninstalled workspace is no longer answered; the other still is.
    calls_before = len(slack.calls)
    ts_late = new_ts()
    sender.post(event_for(mention("C0OTHER", ALICE, "still there?", ts=ts_late), OTHER))
    openai_fake.script(Reply(text="c"))
    ts_again = new_ts()
    sender.post(event_for(mention("C0THIRD", ALICE, "again", ts=ts_again), THIRD))
    answers(slack, "C0THIRD", ts_again)
    assert slack.messages("C0OTHER", ts_late) == []
    assert not [c for c in slack.calls[calls_before:] if c.args.get("channel") == "C0OTHER"]


def test_a_revoked_bot_token_forgets_the_workspace(
    oauth_bot: BotProcess, slack: FakeSlack, openai_fake: FakeOpenAI, rdb: redis.Redis
) -> None:
    install(oauth_bot, slack, OTHER)
    (issued,) = issued_for(slack, OTHER)
    openai_fake.script(Reply(text="a"))
    ts = new_ts()
    SlackSender(oauth_bot.url).post(event_for(mention("C0OTHER", ALICE, "hi", ts=ts), OTHER))
    answers(slack, "C0OTHER", ts)
    assert rdb.keys(f"sa:{{-:{OTHER}}}:thread:*")
    event = {
        "type": "tokens_revoked",
        "tokens": {"oauth": [], "bot": [issued.bot_user_id]},
        "event_ts": new_ts(),
    }
    SlackSender(oauth_bot.url).post(event_for(event, OTHER))
    slack.wait_for(lambda: not rdb.exists(f"sa:{{-:{OTHER}}}:install"))
    slack.wait_for(lambda: not rdb.keys(f"sa:{{-:{OTHER}}}:thread:*"))
    assert rdb.smembers("sa:installs") == set()


def test_calls_the_front_makes_itself_carry_the_workspaces_token(
    oauth_bot: BotProcess, slack: FakeSlack, rdb: redis.Redis
) -> None:
    install(oauth_bot, slack, OTHER)
    (issued,) = issued_for(slack, OTHER)
    home = {
        "type": "app_home_opened",
        "user": ALICE,
        "channel": "D0OTHER",
        "tab": "home",
        "event_ts": new_ts(),
    }
    SlackSender(oauth_bot.url).post(event_for(home, OTHER))
    slack.wait_for(lambda: bool(slack.calls_to("views.publish")))
    assert [(c.token, c.ok) for c in slack.calls_to("views.publish")] == [(issued.token, True)]


def test_a_slack_connect_event_is_answered_with_the_installing_workspaces_token(
    oauth_bot: BotProcess, slack: FakeSlack, openai_fake: FakeOpenAI, rdb: redis.Redis
) -> None:
    # OTHER (no org) installed the app; so did the org on the other side of a shared channel, org-wide.
    install(oauth_bot, slack, OTHER)
    install(oauth_bot, slack, None, enterprise_id=ORG, org_wide=True)
    (other,) = issued_for(slack, OTHER)
    openai_fake.script(Reply(text="shared answer"))
    ts = new_ts()
    # Delivered to OTHER's installation; the envelope names the org the message came from.
    body = json.loads(event_for({**mention("C0SHARED", ALICE, "hi", ts=ts), "user_team": OTHER}, OTHER))
    body["enterprise_id"] = ORG
    body["is_ext_shared_channel"] = True
    SlackSender(oauth_bot.url).post(json.dumps(body))
    (answer,) = answers(slack, "C0SHARED", ts)
    assert answer.text == "shared answer"
    assert tokens_of(slack, "C0SHARED") == {other.token}
    assert rdb.keys(f"sa:{{-:{OTHER}}}:thread:*")
    assert rdb.keys(f"sa:{{{ORG}:*") == [f"sa:{{{ORG}:-}}:install"], "nothing of this thread is the org's"


def test_a_worker_refreshes_a_token_that_expires_while_its_turn_waits(
    start_bot: BotFactory, slack: FakeSlack, openai_fake: FakeOpenAI, rdb: redis.Redis
) -> None:
    env = oauth_env(slack)
    front = start_bot(WORKER_CONCURRENCY="0", **env)
    slack.oauth_redirect_url = f"{front.url}/slack/oauth_redirect"
    slack.token_lifetime_scale = 3 * 3600 / 43_200  # three hours: outside the two-hour refresh window
    try:
        install(front, slack, OTHER, rotating=True)
        (original,) = issued_for(slack, OTHER)
        openai_fake.script(Reply(text="fresh"))
        ts = new_ts()
        SlackSender(front.url).post(event_for(mention("C0OTHER", ALICE, "hi", ts=ts), OTHER))
        # Hours pass before a worker takes the turn: the install's token is dead in Slack's eyes, and the
        # stored one says it expires within the refresh window.
        slack.wait_for(lambda: bool(rdb.keys(f"sa:{{-:{OTHER}}}:turns")))
        set_expiry(rdb, None, OTHER, int(time.time()) + 600)
        slack.advance_clock(3 * 3600 + 1)
        worker = start_bot(worker=True, **env)
        (answer,) = answers(slack, "C0OTHER", ts)
    finally:
        slack.token_lifetime_scale = 1.0
    assert answer.text == "fresh"
    latest = stored_bot(rdb, None, OTHER)
    assert tokens_of(slack, "C0OTHER") == {latest["bot_token"]} != {original.token}
    refreshes = [c for c in slack.calls_to("oauth.v2.access") if c.args.get("grant_type") == "refresh_token"]
    assert [c.ok for c in refreshes] == [True], "refreshed once, by the worker"
    assert not [c for c in slack.calls if c.error == "token_expired"]
    assert_no_issued_token_logged(slack, front, worker)


def test_a_late_uninstall_retry_does_not_undo_a_reinstall(
    oauth_bot: BotProcess, slack: FakeSlack, rdb: redis.Redis
) -> None:
    install(oauth_bot, slack, OTHER)
    uninstalled_at = time.time()
    sender = SlackSender(oauth_bot.url)
    body = json.loads(event_for({"type": "app_uninstalled", "event_ts": new_ts()}, OTHER))
    body["event_time"] = int(uninstalled_at)
    sender.post(json.dumps(body))
    slack.wait_for(lambda: not rdb.exists(f"sa:{{-:{OTHER}}}:install"))
    time.sleep(1.1)  # the reinstall happens in a later second than the uninstall event
    install(oauth_bot, slack, OTHER)
    reinstalled = issued_for(slack, OTHER)[-1]
    # Slack retries the old event (same event_time) after the admin installed the app again.
    body["event_id"] = "Ev0RETRY"
    sender.post(json.dumps(body), headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "timeout"})
    slack.wait_for(lambda: "ignored an uninstall older than the current install" in oauth_bot.logs())
    assert stored_bot(rdb, None, OTHER)["bot_token"] == reinstalled.token


@on_topologies("cluster")  # the org's workspaces live in different slots
def test_an_org_wide_uninstall_forgets_every_workspace_of_the_org(
    oauth_bot: BotProcess, slack: FakeSlack, openai_fake: FakeOpenAI, rdb: redis.Redis
) -> None:
    install(oauth_bot, slack, None, enterprise_id=ORG, org_wide=True)
    install(oauth_bot, slack, OTHER)
    sender = SlackSender(oauth_bot.url)
    openai_fake.script(Reply(text="org"), Reply(text="other"))
    ts, ts_other = new_ts(), new_ts()
    sender.post(event_for(mention("C0ORGCH", ALICE, "hi", ts=ts), ORG_TEAM, enterprise=ORG, org_wide=True))
    sender.post(event_for(mention("C0OTHER", ALICE, "hi", ts=ts_other), OTHER))
    answers(slack, "C0ORGCH", ts)
    answers(slack, "C0OTHER", ts_other)
    assert rdb.keys(f"sa:{{{ORG}:{ORG_TEAM}}}:thread:*")
    # Slack names no workspace for an org-wide install's uninstall.
    gone = event_for({"type": "app_uninstalled", "event_ts": new_ts()}, None, enterprise=ORG, org_wide=True)
    sender.post(gone)
    slack.wait_for(lambda: not rdb.exists(f"sa:{{{ORG}:-}}:install"))
    slack.wait_for(lambda: not rdb.keys(f"sa:{{{ORG}:{ORG_TEAM}}}:thread:*"))
    assert rdb.exists(f"sa:{{-:{OTHER}}}:install") and rdb.keys(f"sa:{{-:{OTHER}}}:thread:*")


# ---------------------------------------------------------------------------------------- the stores


def _installation(
    team: str | None, *, user: str = "U0ADMIN", token: str = "xoxb-1", org: str | None = None
) -> Installation:
    return Installation(
        app_id="A0APP",
        enterprise_id=org,
        team_id=team,
        bot_token=token,
        bot_id="B0BOT",
        bot_user_id="U0BOT",
        bot_scopes=["chat:write"],
        user_id=user,
        is_enterprise_install=team is None,
        installed_at=1_800_000_000.0,
    )


def test_the_installation_store_keeps_the_latest_bot_and_each_installer(redis_url: str) -> None:
    async def scenario() -> None:
        client = AsyncRedis.from_url(redis_url)
        store = RedisInstallationStore(client)
        try:
            await store.async_save(_installation(OTHER, user="U0ANN", token="xoxb-first"))
            await store.async_save(_installation(OTHER, user="U0BEN", token="xoxb-second"))
            bot = await store.async_find_bot(enterprise_id=None, team_id=OTHER)
            assert bot is not None and bot.bot_token == "xoxb-second"
            ann = await store.async_find_installation(enterprise_id=None, team_id=OTHER, user_id="U0ANN")
            assert ann is not None and ann.user_id == "U0ANN" and ann.bot_token == "xoxb-second"
            latest = await store.async_find_installation(enterprise_id=None, team_id=OTHER)
            assert latest is not None and latest.user_id == "U0BEN"
            assert await store.async_find_bot(enterprise_id=None, team_id=THIRD) is None

            await store.async_save(_installation(None, org=ORG, token="xoxb-org"))
            org = await store.async_find_bot(enterprise_id=ORG, team_id=ORG_TEAM, is_enterprise_install=True)
            assert org is not None and org.bot_token == "xoxb-org"
            assert await store.count() == 2

            await store.async_delete_installation(enterprise_id=None, team_id=OTHER, user_id="U0ANN")
            gone = await store.async_find_installation(enterprise_id=None, team_id=OTHER, user_id="U0ANN")
            assert gone is None
            await store.async_delete_bot(enterprise_id=None, team_id=OTHER)
            assert await store.async_find_bot(enterprise_id=None, team_id=OTHER) is None
            await store.async_delete_all(enterprise_id=None, team_id=OTHER)
            assert await store.async_find_installation(enterprise_id=None, team_id=OTHER) is None
            assert await store.count() == 1
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_the_state_store_accepts_each_state_it_issued_once(redis_url: str) -> None:
    rdb = redis.Redis.from_url(redis_url)  # the store's own server (whatever TEST_REDIS_TOPOLOGY says)

    async def scenario() -> None:
        client = AsyncRedis.from_url(redis_url)
        states = RedisOAuthStateStore(client)
        try:
            state = await states.async_issue()
            assert 0 < rdb.ttl(f"sa:oauth-state:{state}") <= 600
            assert await states.async_consume(state) is True
            assert await states.async_consume(state) is False
            assert await states.async_consume("never-issued-state-value") is False
            assert await states.async_consume("x" * 5000) is False
            assert await states.async_consume("*") is False
        finally:
            await client.aclose()

    asyncio.run(scenario())
