"""Files and retrieval end to end: the bot as a real process, the fake Slack serving file bytes (token
required), the fake OpenAI indexing them and citing its file-search hits, and a real Redis.

One bot process serves the whole module (starting one costs ~2 s); every test starts from fresh fakes and
an empty Redis, and the module checks the bot's log for secrets and tracebacks at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import web

from tests.conftest import BotFactory, RedisTarget
from tests.fakes.openai_api import FakeOpenAI, Reply
from tests.fakes.server import ServerThread
from tests.fakes.slack_api import FakeSlack, Message
from tests.harness import SECRETS, TEAM, SlackSender, bot_env, mention, message
from tests.test_bridge_e2e import ALICE, CHANNEL, DM, answers

PDF = (
    b"%PDF-1.4\n1 0 obj << /Length 90 >> stream\n"
    b"BT (The launch date is the fourteenth of March.) Tj ET\n"
    b"BT (The budget for the launch is forty thousand euros.) Tj ET\nendstream\n%%EOF\n"
)
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
LIMIT_MB = "0.05"  # 52,428 bytes: the module's bot refuses anything larger
NS = f"sa:{{-:{TEAM}}}"
IN_THREAD = "is reading"


@pytest.fixture
def fsender(start_bot: BotFactory) -> SlackSender:
    """A sender to a bot with this module's file settings. One bot per test: every bot on the shared
    Redis is a worker of the same turn queue, so a bot kept for the module would take other tests' turns.
    Files come in one at a time here: these tests script outcomes in sharing order (the first attach fails,
    the first file is the first search hit); parallel intake is tested in test_file_bounds_e2e.py."""
    bot = start_bot(file_max_mb=LIMIT_MB, max_message_chars="600", file_download_concurrency="1")
    return SlackSender(bot.url)


def share(
    channel: str, user: str, text: str, files: list[dict[str, Any]], *, thread_ts: str | None = None
) -> dict[str, Any]:
    """A `file_share` message (in a DM), or a mention with files (in a channel)."""
    if channel.startswith("D"):
        return message(
            channel, user, text, thread_ts=thread_ts, subtype="file_share", files=files, upload=True
        )
    event = mention(channel, user, text, thread_ts=thread_ts)
    event["files"] = files
    return event


def notices(slack: FakeSlack, channel: str, thread_ts: str) -> list[str]:
    return [m.text for m in slack.messages(channel, thread_ts) if m.text.startswith(":warning:")]


def answer_text(slack: FakeSlack, channel: str, thread_ts: str, count: int = 1) -> str:
    msgs = [m for m in answers(slack, channel, thread_ts, count) if not m.text.startswith(":warning:")]
    return "".join(m.text for m in msgs)


def user_parts(openai_fake: FakeOpenAI, turn: int = -1) -> list[dict[str, Any]]:
    items = openai_fake.model_inputs[turn]["input_items"]
    return [i for i in items if i.get("role") == "user"][-1]["content"]


def wait_answered(slack: FakeSlack, channel: str, thread_ts: str, count: int) -> list[Message]:
    """Wait for `count` finished bot messages (answers and notices) in the thread."""
    return answers(slack, channel, thread_ts, count)


# ---- forwarding files ---------------------------------------------------------------------------------


def test_a_pdf_is_indexed_in_the_threads_store_and_cited_with_its_slack_permalink(
    slack: FakeSlack, openai_fake: FakeOpenAI, fsender: SlackSender, rdb: redis.Redis
) -> None:
    pdf = slack.add_file("report.pdf", PDF, mimetype="application/pdf")
    event = share(CHANNEL, ALICE, "When is the launch?", [pdf])
    assert fsender.send_event(event).status == 200
    thread = event["ts"]

    text = answer_text(slack, CHANNEL, thread)
    assert "[1]" in text
    assert text.endswith(f"**Sources**\n1. [report.pdf]({pdf['permalink']})")
    # The PDF went to OpenAI unchanged and sits, indexed, in this thread's own vector store.
    [file_id] = openai_fake.files
    assert openai_fake.file_content(file_id) == PDF
    assert openai_fake.files[file_id]["filename"] == "report.pdf"
    assert openai_fake.files[file_id]["purpose"] == "assistants"
    [(vs_id, store)] = openai_fake.vector_stores.items()
    assert store["expires_after"] == {"anchor": "last_active_at", "days": 7}
    assert store["metadata"] == {
        "app": "slack-assistant", "slack_team": TEAM, "slack_enterprise": "",
        "slack_thread": f"c:{CHANNEL}:{thread}",
    }  # fmt: skip
    assert openai_fake.vector_store_files(vs_id)[file_id]["status"] == "completed"
    # Indexing was awaited: the bot polled until it completed, before asking the model.
    polls = [r for r in openai_fake.requests if r["path"] == f"/v1/vector_stores/{vs_id}/files/{file_id}"]
    assert len(polls) >= 2
    turn = openai_fake.model_inputs[-1]
    assert {"type": "file_search", "vector_store_ids": [vs_id]} in turn["tools"]
    assert turn["file_search"]["hits"] == ["report.pdf"]
    assert "report.pdf" in user_parts(openai_fake)[0]["text"]
    # The user saw what the bot was doing, and it downloaded the file from Slack with its token.
    assert any(s.status == f"{IN_THREAD} report.pdf…" for s in slack.statuses(CHANNEL, thread))
    [download] = slack.downloads
    assert download.served and download.path.endswith("/download/report.pdf")
    # Redis: the thread's files (file id -> Slack name and permalink) and its store.
    stored = json.loads(rdb.hget(f"{NS}:files:c:{CHANNEL}:{thread}", file_id) or "{}")
    assert stored["permalink"] == pdf["permalink"] and stored["slack_id"] == pdf["id"]
    assert rdb.get(f"{NS}:vstore:c:{CHANNEL}:{thread}") == vs_id

    # A follow-up without a file still searches the thread's files; the same source keeps number 1.
    openai_fake.script(Reply(text="Forty thousand{cite}, as said before{cite}."))
    fsender.send_event(message(CHANNEL, ALICE, "And the budget for the launch?", thread_ts=thread))
    follow_up = answers(slack, CHANNEL, thread, 2)[-1].text
    assert (
        follow_up
        == f"Forty thousand[1], as said before[1].\n\n**Sources**\n1. [report.pdf]({pdf['permalink']})"
    )
    assert len(slack.downloads) == 1 and len(openai_fake.files) == 1

    fsender.send_event(mention(CHANNEL, ALICE, "status", thread_ts=thread))
    slack.wait_for(lambda: bool(slack.ephemerals(CHANNEL, ALICE)))
    assert "• Files: 1 (1 searchable document)" in slack.ephemerals(CHANNEL, ALICE)[0].text


def test_an_image_goes_to_the_model_as_image_input(
    slack: FakeSlack, openai_fake: FakeOpenAI, fsender: SlackSender
) -> None:
    png = slack.add_file("chart.png", PNG, mimetype="image/png")
    event = share(DM, ALICE, "What does this chart show?", [png])
    fsender.send_event(event)
    answer_text(slack, DM, event["ts"])
    [file_id] = openai_fake.files
    assert openai_fake.files[file_id]["purpose"] == "vision"
    parts = user_parts(openai_fake)
    assert parts[0]["type"] == "input_text" and parts[0]["text"].startswith("What does this chart show?")
    assert parts[1] == {"type": "input_image", "file_id": file_id, "detail": "auto"}
    # An image is not searchable: no vector store, no file_search.
    assert openai_fake.vector_stores == {}
    assert openai_fake.model_inputs[-1]["file_search"] is None


def test_a_slack_connect_file_is_looked_up_with_files_info(
    slack: FakeSlack, openai_fake: FakeOpenAI, fsender: SlackSender
) -> None:
    notes = slack.add_file(
        "notes.md", b"# Notes\nThe zebra sprint ends on Friday.\n", mimetype="text/markdown"
    )
    event = share(DM, ALICE, "When does the zebra sprint end?", [slack.connect_stub(notes)])
    fsender.send_event(event)
    text = answer_text(slack, DM, event["ts"])
    assert [c.args["file"] for c in slack.calls_to("files.info")] == [notes["id"]]
    assert text.endswith(f"1. [notes.md]({notes['permalink']})")


# ---- refusals -----------------------------------------------------------------------------------------


def test_files_over_the_limit_or_of_a_refused_type_are_explained_and_nothing_is_uploaded(
    slack: FakeSlack, openai_fake: FakeOpenAI, fsender: SlackSender, rdb: redis.Redis
) -> None:
    big = slack.add_file("big.pdf", PDF, mimetype="application/pdf", size=60_000)
    exe = slack.add_file("setup.exe", b"MZ\x90\x00", mimetype="application/x-msdownload")
    # Declares 900 bytes but is larger: caught while downloading.
    sneaky = slack.add_file("sneaky.txt", b"x" * 60_000, mimetype="text/plain", size=900)
    event = share(DM, ALICE, "Can you read these?", [big, exe, sneaky])
    fsender.send_event(event)
    msgs = wait_answered(slack, DM, event["ts"], 2)
    [notice] = notices(slack, DM, event["ts"])
    assert msgs[0].text == notice  # told before the answer
    assert "`big.pdf` is 59 KB; the limit is 51 KB." in notice
    assert "I can't read .exe files like `setup.exe`." in notice
    assert "`sneaky.txt` is 59 KB; the limit is 51 KB." in notice
    # Nothing reached OpenAI but the text; the big and refused files were never even downloaded.
    assert openai_fake.files == {} and openai_fake.vector_stores == {}
    assert [d.path.rsplit("/", 1)[-1] for d in slack.downloads] == ["sneaky.txt"]
    assert user_parts(openai_fake)[0]["text"].startswith("Can you read these?")
    assert rdb.keys(f"{NS}:uploads:*") == []

    # Only files, none usable: the notice is the whole answer, the model is not asked.
    lone = share(DM, ALICE, "", [exe])
    fsender.send_event(lone)
    slack.wait_for(lambda: bool(notices(slack, DM, lone["ts"])))
    slack.wait_for(lambda: any(s.status == "" for s in slack.statuses(DM, lone["ts"])))
    assert len(openai_fake.model_inputs) == 1


class OtherHost:
    """A second web server on 127.0.0.1 (another port: another origin) that records what it receives."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._any)
        self.server = ServerThread(app).start()

    async def _any(self, request: web.Request) -> web.Response:
        self.requests.append(dict(request.headers))
        return web.Response(body=PDF, content_type="application/pdf")


@pytest.fixture
def other_host() -> Iterator[OtherHost]:
    host = OtherHost()
    yield host
    host.server.stop()


def test_a_file_url_on_another_host_never_receives_the_token(
    slack: FakeSlack, openai_fake: FakeOpenAI, fsender: SlackSender, other_host: OtherHost
) -> None:
    real = slack.add_file("report.pdf", PDF, mimetype="application/pdf")
    forged = {
        **real,
        "name": "plan.pdf",
        "url_private": f"{other_host.server.base_url}/files-pri/T0TEAM1-F1/plan.pdf",
        "url_private_download": f"{other_host.server.base_url}/files-pri/T0TEAM1-F1/download/plan.pdf",
    }
    event = share(DM, ALICE, "Summarise the plan", [forged])
    fsender.send_event(event)
    wait_answered(slack, DM, event["ts"], 2)
    assert other_host.requests == []  # not requested at all, so never with the token
    assert notices(slack, DM, event["ts"]) == [
        ":warning: `plan.pdf` isn't hosted by Slack, so I didn't download it."
    ]
    assert slack.downloads == [] and openai_fake.files == {}

    # A Slack download that redirects to another host is not followed there either.
    slack.redirect_downloads(f"{other_host.server.base_url}/elsewhere/report.pdf")
    moved = share(DM, ALICE, "And this one?", [real], thread_ts=event["ts"])
    fsender.send_event(moved)
    wait_answered(slack, DM, event["ts"], 4)
    assert other_host.requests == []
    assert "`report.pdf` isn't hosted by Slack" in notices(slack, DM, event["ts"])[-1]
    [download] = slack.downloads
    assert not download.served and openai_fake.files == {}


def test_a_refused_download_is_explained(
    slack: FakeSlack, openai_fake: FakeOpenAI, fsender: SlackSender
) -> None:
    slack.refuse_downloads()
    pdf = slack.add_file("report.pdf", PDF, mimetype="application/pdf")
    event = share(DM, ALICE, "When is the launch?", [pdf])
    fsender.send_event(event)
    wait_answered(slack, DM, event["ts"], 2)
    [notice] = notices(slack, DM, event["ts"])
    assert "Slack didn't let me download `report.pdf` (it answered with its sign-in page)" in notice
    assert "files:read" in notice
    [download] = slack.downloads
    assert download.headers["Authorization"].startswith("Bearer ") and not download.served
    assert openai_fake.files == {}


def test_failed_indexing_or_attaching_is_named_nothing_is_left_and_the_turn_runs(
    slack: FakeSlack, openai_fake: FakeOpenAI, fsender: SlackSender, rdb: redis.Redis
) -> None:
    first = slack.add_file("first.txt", b"The giraffe count is nine.", mimetype="text/plain")
    broken = slack.add_file("broken.pdf", PDF, mimetype="application/pdf")
    good = slack.add_file("good.md", b"The giraffe pen is blue.", mimetype="text/markdown")
    openai_fake.fail_next("POST", r"^/v1/vector_stores/[^/]+/files$", status=400)  # first.txt's attach
    openai_fake.fail_indexing("broken.pdf")
    event = share(DM, ALICE, "How many giraffe?", [first, broken, good])
    fsender.send_event(event)
    text = answer_text(slack, DM, event["ts"], 2)
    [notice] = notices(slack, DM, event["ts"])
    assert "I couldn't hand `first.txt` to the assistant" in notice
    assert "`broken.pdf` couldn't be indexed for search (unsupported file)" in notice
    # The failed uploads were deleted; only good.md is left, in the store and in the ledger.
    assert [f["filename"] for f in openai_fake.files.values()] == ["good.md"]
    [(vs_id, _)] = openai_fake.vector_stores.items()
    [good_id] = openai_fake.files
    assert set(rdb.hkeys(f"{NS}:uploads:u:{ALICE}")) == {vs_id, good_id}
    assert text.endswith(f"1. [good.md]({good['permalink']})")


def test_two_threads_never_search_each_others_files(
    slack: FakeSlack, openai_fake: FakeOpenAI, fsender: SlackSender
) -> None:
    alpha = slack.add_file("alpha.txt", b"The walrus budget is five apples.", mimetype="text/plain")
    beta = slack.add_file("beta.txt", b"The pelican plan is secret.", mimetype="text/plain")
    a = share(CHANNEL, ALICE, "Remember this", [alpha])
    b = share(CHANNEL, ALICE, "Remember that", [beta])
    fsender.send_event(a)
    answers(slack, CHANNEL, a["ts"])
    fsender.send_event(b)
    answers(slack, CHANNEL, b["ts"])
    stores = {s["metadata"]["slack_thread"]: vs_id for vs_id, s in openai_fake.vector_stores.items()}
    assert len(stores) == 2

    fsender.send_event(message(CHANNEL, ALICE, "What is the walrus budget?", thread_ts=b["ts"]))
    in_b = answers(slack, CHANNEL, b["ts"], 2)[-1].text
    searched = openai_fake.model_inputs[-1]["file_search"]
    assert searched == {"vector_store_ids": [stores[f"c:{CHANNEL}:{b['ts']}"]], "hits": []}
    assert "walrus" not in in_b.split("?", 1)[1] and "Sources" not in in_b

    fsender.send_event(message(CHANNEL, ALICE, "What is the walrus budget?", thread_ts=a["ts"]))
    in_a = answers(slack, CHANNEL, a["ts"], 2)[-1].text
    assert openai_fake.model_inputs[-1]["file_search"]["hits"] == ["alpha.txt"]
    assert in_a.endswith(f"1. [alpha.txt]({alpha['permalink']})")


# ---- citations across split messages ---------------------------------------------------------------


def test_citations_survive_splitting_and_url_citations_become_links(
    slack: FakeSlack, openai_fake: FakeOpenAI, fsender: SlackSender
) -> None:
    one = slack.add_file("one.txt", b"Otters sleep holding hands.", mimetype="text/plain")
    two = slack.add_file("two.txt", b"Otters eat sea urchins.", mimetype="text/plain")
    event = share(DM, ALICE, "Tell me about otters", [one, two])
    fsender.send_event(event)
    answers(slack, DM, event["ts"])
    head = "Otters hold hands{cite} while sleeping. " + "They are very social animals. " * 20
    tail = "Their diet includes urchins{cite} and fish{cite}. More on the web."
    text = head + tail
    web_at = len(text.replace("{cite}", ""))
    link = {"type": "url_citation", "url": "https://example.org/otters", "title": "Otter facts",
            "start_index": web_at - 11, "end_index": web_at}  # fmt: skip
    openai_fake.script(Reply(text=text, chunk_size=7, annotations=(link,)))
    fsender.send_event(message(DM, ALICE, "More about otters", thread_ts=event["ts"]))
    msgs = answers(slack, DM, event["ts"], 3)[1:]
    assert len(msgs) == 2  # split at MAX_MESSAGE_CHARS=600
    whole = "".join(m.text for m in msgs)
    assert "hold hands[1] while" in msgs[0].text
    assert "urchins[2] and fish[1]. More on the web.[3]" in msgs[1].text
    assert msgs[1].text.endswith(
        f"**Sources**\n1. [one.txt]({one['permalink']})\n2. [two.txt]({two['permalink']})\n"
        "3. [Otter facts](https://example.org/otters) (example.org)"  # a web page shows its host
    )
    assert whole.count("**Sources**") == 1

    # Annotations that arrive only after the whole text: each marker goes where the answer had got to.
    openai_fake.script(Reply(text="Hands{cite} and urchins{cite}.", annotations_at_end=True))
    fsender.send_event(message(DM, ALICE, "Sum up otters", thread_ts=event["ts"]))
    late = answers(slack, DM, event["ts"], 4)[-1].text
    assert late.startswith("Hands and urchins.[1][2]\n\n**Sources**\n1. [one.txt]")


# ---- reset and expiry --------------------------------------------------------------------------------


def test_reset_removes_the_threads_vector_store_and_files(
    slack: FakeSlack, openai_fake: FakeOpenAI, fsender: SlackSender, rdb: redis.Redis
) -> None:
    pdf = slack.add_file("report.pdf", PDF, mimetype="application/pdf")
    png = slack.add_file("chart.png", PNG, mimetype="image/png")
    event = share(CHANNEL, ALICE, "When is the launch?", [pdf, png])
    fsender.send_event(event)
    thread = event["ts"]
    answers(slack, CHANNEL, thread)
    assert len(openai_fake.files) == 2 and len(openai_fake.vector_stores) == 1

    fsender.send_event(mention(CHANNEL, ALICE, "reset", thread_ts=thread))
    slack.wait_for(lambda: any("reset this thread" in m.text for m in slack.messages(CHANNEL, thread)))
    assert openai_fake.files == {} and openai_fake.vector_stores == {}
    ref = f"c:{CHANNEL}:{thread}"
    assert rdb.exists(f"{NS}:files:{ref}", f"{NS}:vstore:{ref}", f"{NS}:uploads:{ref}") == 0

    fsender.send_event(message(CHANNEL, ALICE, "Anything to search?", thread_ts=thread))
    answers(slack, CHANNEL, thread, 3)  # the first answer, the reset notice, this answer
    assert openai_fake.model_inputs[-1]["file_search"] is None


def test_an_expired_vector_store_is_removed_with_its_documents(
    slack: FakeSlack, openai_fake: FakeOpenAI, fsender: SlackSender, rdb: redis.Redis
) -> None:
    pdf = slack.add_file("report.pdf", PDF, mimetype="application/pdf")
    png = slack.add_file("chart.png", PNG, mimetype="image/png")
    event = share(DM, ALICE, "Keep these", [pdf, png])
    fsender.send_event(event)
    answers(slack, DM, event["ts"])
    [vs_id] = openai_fake.vector_stores
    image_id = next(i for i, f in openai_fake.files.items() if f["purpose"] == "vision")
    openai_fake.expire_vector_store(vs_id)

    fsender.send_event(message(DM, ALICE, "When is the launch?", thread_ts=event["ts"]))
    wait_answered(slack, DM, event["ts"], 3)
    [notice] = notices(slack, DM, event["ts"])
    assert "expire" in notice and "Share them again" in notice
    # The store and its document are gone; the image stays (the conversation refers to it).
    assert openai_fake.vector_stores == {} and list(openai_fake.files) == [image_id]
    assert openai_fake.model_inputs[-1]["file_search"] is None
    assert set(rdb.hkeys(f"{NS}:uploads:u:{ALICE}")) == {image_id}


# ---- shared knowledge and the orphan sweep (their own processes) ---------------------------------------


def test_shared_knowledge_is_searched_alongside_the_threads_files(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    knowledge = openai_fake.add_vector_store({"handbook.pdf": b"Holidays: the office closes in August."})
    sender = SlackSender(start_bot(knowledge_vector_store_ids=knowledge).url)
    notes = slack.add_file("notes.txt", b"The office party is in August too.", mimetype="text/plain")
    event = share(DM, ALICE, "What happens in August at the office?", [notes])
    sender.send_event(event)
    text = answer_text(slack, DM, event["ts"])
    [own] = [vs for vs in openai_fake.vector_stores if vs != knowledge]
    assert openai_fake.model_inputs[-1]["file_search"] == {
        "vector_store_ids": [own, knowledge], "hits": ["notes.txt", "handbook.pdf"],
    }  # fmt: skip
    # A knowledge file has no Slack permalink: named, not linked.
    assert text.endswith(f"**Sources**\n1. [notes.txt]({notes['permalink']})\n2. handbook.pdf")


def run_cleanup(env: dict[str, str], workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("slack-assistant")
    return subprocess.run(
        [str(exe), "cleanup-orphans", *args], env=env, cwd=workdir, capture_output=True, text=True, timeout=60
    )


def test_cleanup_orphans_deletes_what_no_thread_maps_and_nothing_else(
    slack: FakeSlack, openai_fake: FakeOpenAI, fsender: SlackSender, rdb: redis.Redis,
    redis_target: RedisTarget,
    tmp_path: Path,
) -> None:  # fmt: skip
    kept_event = share(DM, ALICE, "Keep", [slack.add_file("kept.txt", b"kept", mimetype="text/plain")])
    fsender.send_event(kept_event)
    answers(slack, DM, kept_event["ts"])
    gone_event = share(CHANNEL, ALICE, "Gone", [slack.add_file("gone.txt", b"gone", mimetype="text/plain")])
    fsender.send_event(gone_event)
    answers(slack, CHANNEL, gone_event["ts"])
    by_name = {f["filename"]: i for i, f in openai_fake.files.items()}
    stores = {s["metadata"]["slack_thread"]: i for i, s in openai_fake.vector_stores.items()}
    # The channel thread's records expired (as THREAD_TTL would have it); only its ledger is left.
    gone_ref = f"c:{CHANNEL}:{gone_event['ts']}"
    rdb.delete(f"{NS}:files:{gone_ref}", f"{NS}:vstore:{gone_ref}")
    # A tagged store whose thread Redis never heard of (Redis lost), and someone else's untagged store.
    lost = openai_fake.add_vector_store(
        {"lost.txt": b"lost"},
        metadata={"app": "slack-assistant", "slack_team": TEAM, "slack_thread": "c:C0LOST:1.000001"},
    )
    foreign = openai_fake.add_vector_store({"foreign.txt": b"not ours"})

    env = bot_env(
        slack_api_url=slack.api_url,
        openai_base_url=openai_fake.base_url,
        redis_url=redis_target.url,
        **redis_target.env,
    )
    for key in ("SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET"):
        env.pop(key)  # a maintenance command needs neither
    young = run_cleanup(env, tmp_path)  # default: objects younger than an hour are left alone
    assert young.returncode == 0, young.stderr
    assert "deleted 0 file(s) and 0 vector store(s)" in young.stdout and "too recent" in young.stdout
    dry = run_cleanup(env, tmp_path, "--min-age-hours", "0", "--dry-run")
    assert "would delete 1 file(s) and 2 vector store(s)" in dry.stdout and len(openai_fake.files) == 4

    done = run_cleanup(env, tmp_path, "--min-age-hours", "0")
    assert done.returncode == 0, done.stderr
    assert "deleted 1 file(s) and 2 vector store(s)" in done.stdout
    assert set(openai_fake.vector_stores) == {stores[f"u:{ALICE}"], foreign}
    assert set(openai_fake.files) >= {by_name["kept.txt"]} and by_name["gone.txt"] not in openai_fake.files
    assert lost not in openai_fake.vector_stores
    assert rdb.exists(f"{NS}:uploads:{gone_ref}") == 0
    assert set(rdb.hkeys(f"{NS}:uploads:u:{ALICE}")) == {stores[f"u:{ALICE}"], by_name["kept.txt"]}
    for secret in SECRETS:
        assert secret not in done.stdout + done.stderr


def test_the_bot_sweeps_orphans_itself_once_they_are_old_enough(
    slack: FakeSlack, openai_fake: FakeOpenAI, rdb: redis.Redis, start_bot: BotFactory
) -> None:
    # A thread whose records expired long ago left a store and a file behind (only its ledger knows them),
    # and a recent upload a running turn has not recorded yet.
    old_store = openai_fake.add_vector_store({"old.txt": b"old"})
    [old_file] = openai_fake.files
    recent_store = openai_fake.add_vector_store({"recent.txt": b"recent"})
    long_ago = json.dumps({"kind": "file", "created_at": 1_000_000_000})
    rdb.hset(f"{NS}:uploads:c:C0OLD:1.000001", mapping={
        old_file: long_ago, old_store: long_ago.replace('"file"', '"vector_store"'),
    })  # fmt: skip
    rdb.hset(
        f"{NS}:uploads:c:C0NEW:2.000001",
        recent_store,
        json.dumps({"kind": "vector_store", "created_at": 4e9}),
    )
    start_bot(orphan_sweep_hours="0.0005")  # about every 2 s
    slack.wait_for(lambda: old_store not in openai_fake.vector_stores, timeout=15)
    slack.wait_for(lambda: old_file not in openai_fake.files)
    # The ledger entry goes just after OpenAI confirms the delete.
    slack.wait_for(lambda: rdb.exists(f"{NS}:uploads:c:C0OLD:1.000001") == 0)
    assert recent_store in openai_fake.vector_stores
    # Replicas share one sweep lock (it expires each interval, so wait for the next sweep to hold it).
    slack.wait_for(lambda: rdb.exists("sa:orphan-sweep") == 1)
