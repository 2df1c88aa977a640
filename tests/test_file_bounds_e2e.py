"""Bounded files end to end (issue 12, "Bounded resources"): the bot as a real process, the fake OpenAI
serving container files lazily in chunks (and counting what it sent before the bot hung up), the fake Slack
holding downloads back (and counting how many were in flight at once), and a real Redis.

- a generated file is streamed and its download stopped at `FILE_MAX_MB`; an answer shares at most
  `GENERATED_FILES_MAX` files; the user is told, by name, what was not shared;
- a turn's shared files come in `FILE_DOWNLOAD_CONCURRENCY` at a time under one deadline
  (`FILE_TURN_DEADLINE_SECONDS`, indexing waits included); what misses it is named and left out;
- a thread takes in at most `THREAD_FILE_QUOTA_FILES` files / `THREAD_FILE_QUOTA_MB` over its life.
"""

from __future__ import annotations

import redis

from tests.conftest import BotFactory
from tests.fakes.openai_api import FakeOpenAI, Reply
from tests.fakes.openai_tools import CONTENT_CHUNK, ContainerFile
from tests.fakes.slack_api import FakeSlack
from tests.harness import TEAM, SlackSender, mention, message
from tests.test_bridge_e2e import ALICE, CHANNEL, DM, answers
from tests.test_files_e2e import PNG, notices, share, user_parts

MB = 1024 * 1024
NS = f"sa:{{-:{TEAM}}}"
# The bot reads container files this many bytes at a time (bot/files/generated.py READ_CHUNK): it holds at
# most one chunk past the cap before it stops.
READ_CHUNK = 64 * 1024
# What the kernels may hold between the fake and a reader that stopped: the fake sends a chunk only once
# the last one was acknowledged (tests/fakes/openai_tools.py), so a few chunks at most.
IN_FLIGHT = 4 * CONTENT_CHUNK


def turn_record(channel: str, ts: str) -> str:
    return f"{NS}:turn:{channel}:{ts}"


# ---- files the code writes ------------------------------------------------------------------------------


def test_a_24_mb_generated_file_is_never_read_past_the_cap_and_the_user_is_told(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    sender = SlackSender(start_bot(assistant_tools="code_interpreter", file_max_mb="1").url)
    openai_fake.script(
        Reply(
            text="The export: [huge.bin](sandbox:/mnt/data/huge.bin). "
            "The chart: [chart.png](sandbox:/mnt/data/chart.png).",
            code="export_everything()",
            code_files=(
                ContainerFile("huge.bin", size=24 * MB),
                ContainerFile("chart.png", PNG, "image/png"),
            ),
        )
    )
    event = mention(CHANNEL, ALICE, "Export everything, and plot it")
    sender.send_event(event)
    msgs = answers(slack, CHANNEL, event["ts"], 2)

    # The user is told, by name, in one short notice; the answer itself is whole.
    assert notices(slack, CHANNEL, event["ts"]) == [
        ":warning: Files the code wrote that I didn't share: `huge.bin` (larger than the limit of 1.0 MB)."
    ]
    [answer] = [m for m in msgs if not m.text.startswith(":warning:")]
    assert answer.text.startswith("The export: huge.bin[1]. The chart: chart.png[2].")
    assert "sandbox:" not in answer.text
    # Only the chart reached the thread (and is linked); the big file is only named.
    slack.wait_for(lambda: len(slack.uploads(CHANNEL, event["ts"])) == 1)
    [upload] = slack.uploads(CHANNEL, event["ts"])
    assert upload.filename == "chart.png" and upload.content == PNG
    assert answer.text.endswith(f"**Sources**\n1. huge.bin\n2. [chart.png]({upload.permalink})")
    # The 24 MB file was requested once, and the bot hung up right past 1 MB: never read whole.
    slack.wait_for(lambda: all(d.ended for d in openai_fake.container_file_downloads))
    [huge] = [d for d in openai_fake.container_file_downloads if d.filename == "huge.bin"]
    assert huge.size == 24 * MB and not huge.completed
    assert MB < huge.sent <= MB + READ_CHUNK + IN_FLIGHT
    # The turn finished in its first attempt: nothing crashed, nothing was retried into fetching it again.
    record = turn_record(CHANNEL, event["ts"])
    slack.wait_for(lambda: rdb.hget(record, "done") == "1")
    assert rdb.hget(record, "attempts") == "1"
    assert len(openai_fake.model_inputs) == 1
    assert len([d for d in openai_fake.container_file_downloads if d.filename == "huge.bin"]) == 1


def test_an_answer_shares_at_most_the_cap_of_generated_files_and_names_the_rest(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    sender = SlackSender(start_bot(assistant_tools="code_interpreter", generated_files_max="3").url)
    written = tuple(ContainerFile(f"part{i}.csv", f"n\n{i}\n".encode(), "text/csv") for i in range(1, 6))
    openai_fake.script(Reply(code="split()", code_files=written))
    event = mention(CHANNEL, ALICE, "Split the table into five files")
    sender.send_event(event)
    answers(slack, CHANNEL, event["ts"], 2)

    slack.wait_for(lambda: len(slack.uploads(CHANNEL, event["ts"])) == 3)
    assert [u.filename for u in slack.uploads(CHANNEL, event["ts"])] == [
        "part1.csv",
        "part2.csv",
        "part3.csv",
    ]
    assert notices(slack, CHANNEL, event["ts"]) == [
        ":warning: Files the code wrote that I didn't share: `part4.csv`, `part5.csv` (past the limit of 3 "
        "files per answer)."
    ]
    # The files past the cap were never even downloaded.
    assert sorted(d.filename for d in openai_fake.container_file_downloads) == [
        "part1.csv", "part2.csv", "part3.csv",
    ]  # fmt: skip


# ---- a turn's shared files: parallel, bounded, under one deadline ----------------------------------------


def test_a_turns_downloads_run_in_parallel_up_to_the_bound(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    sender = SlackSender(start_bot(file_download_concurrency="4").url)
    files = [slack.add_file(f"note{i}.txt", f"Note {i}: the otter is {i}.".encode()) for i in range(6)]
    slack.hold_downloads()
    event = share(DM, ALICE, "What do the notes say about the otter?", files)
    sender.send_event(event)
    # Four downloads waited at the fake at the same time: they run in parallel, four at a time.
    slack.wait_for(lambda: slack.downloads_in_flight == 4)
    slack.release_downloads()
    answers(slack, DM, event["ts"])

    assert slack.peak_downloads_in_flight == 4  # never more than the bound
    assert sorted(d.path.rsplit("/", 1)[-1] for d in slack.downloads) == [f"note{i}.txt" for i in range(6)]
    assert sorted(f["filename"] for f in openai_fake.files.values()) == [f"note{i}.txt" for i in range(6)]
    note = user_parts(openai_fake)[0]["text"]
    assert all(f"note{i}.txt (added to the files you can search)" in note for i in range(6))
    assert notices(slack, DM, event["ts"]) == []


def test_files_not_ready_by_the_turns_deadline_are_named_and_the_answer_goes_on_without_them(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    # The held files wait out the whole deadline; the fast one needs a moment of it, even on a busy machine.
    sender = SlackSender(start_bot(file_turn_deadline_seconds="10").url)
    fast = slack.add_file("fast.txt", b"The heron nests in the reeds.", mimetype="text/plain")
    slow = slack.add_file("slow.pdf", b"%PDF-1.4 never arrives", mimetype="application/pdf")
    stuck = slack.add_file("stuck.md", b"# Stuck\nNever indexed.", mimetype="text/markdown")
    slack.hold_downloads("slow.pdf")  # Slack never finishes sending it
    openai_fake.hold_indexing("stuck.md")  # OpenAI never finishes indexing it
    event = share(DM, ALICE, "Where does the heron nest?", [fast, slow, stuck])
    sender.send_event(event)
    msgs = answers(slack, DM, event["ts"], 2, timeout=40)  # the deadline passes first

    # One notice names both late files; then the answer, made with the file that was ready.
    [notice] = notices(slack, DM, event["ts"])
    assert msgs[0].text == notice
    assert "`slow.pdf` wasn't ready in time, so I answered without it." in notice
    assert "`stuck.md` wasn't ready in time, so I answered without it." in notice
    assert "fast.txt" not in notice
    assert msgs[1].text.endswith(f"1. [fast.txt]({fast['permalink']})")
    turn = openai_fake.model_inputs[-1]
    assert turn["file_search"]["hits"] == ["fast.txt"]
    assert "stuck.md (could not be read)" in user_parts(openai_fake)[0]["text"]
    # The bot hung up on the held download; the half-indexed upload was deleted again: only fast.txt stays,
    # at OpenAI, in the thread's ledger and against its quota.
    slack.wait_for(lambda: slack.abandoned_downloads == ["slow.pdf"])
    [(fast_id, fast_file)] = openai_fake.files.items()
    assert fast_file["filename"] == "fast.txt"
    [vs_id] = openai_fake.vector_stores
    assert set(rdb.hkeys(f"{NS}:uploads:u:{ALICE}")) == {vs_id, fast_id}
    assert rdb.hget(f"{NS}:fquota:u:{ALICE}", "files") == "1"


# ---- the per-thread quota -------------------------------------------------------------------------------


def test_a_thread_past_its_file_quota_refuses_more_files_and_still_answers_the_text(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    sender = SlackSender(start_bot(thread_file_quota_files="2").url)
    first = [slack.add_file(f"{n}.txt", f"The {n} is green.".encode()) for n in ("lizard", "frog")]
    root = share(CHANNEL, ALICE, "Remember these", first)
    sender.send_event(root)
    thread = root["ts"]
    answers(slack, CHANNEL, thread)
    quota = f"{NS}:fquota:c:{CHANNEL}:{thread}"
    assert rdb.hgetall(quota) == {"files": "2", "bytes": str(len(b"The lizard is green.The frog is green."))}

    toad = slack.add_file("toad.txt", b"The toad is brown.")
    sender.send_event(share(CHANNEL, ALICE, "What colour is the lizard?", [toad], thread_ts=thread))
    msgs = answers(slack, CHANNEL, thread, 3)
    assert notices(slack, CHANNEL, thread) == [
        ":warning: `toad.txt` wasn't added: this thread has reached its limit of 2 files. Start a new thread "
        "(or reset this one) to share more."
    ]
    # The text was still answered (with the thread's files), and the refused file was never downloaded.
    assert user_parts(openai_fake)[0]["text"].startswith("What colour is the lizard?")
    assert openai_fake.model_inputs[-1]["file_search"]["hits"] == ["lizard.txt"]
    assert msgs[-1].text.endswith(f"1. [lizard.txt]({first[0]['permalink']})")
    assert sorted(d.path.rsplit("/", 1)[-1] for d in slack.downloads) == ["frog.txt", "lizard.txt"]
    assert rdb.hget(quota, "files") == "2"

    # A reset starts the thread's quota over, with its other file records.
    sender.send_event(mention(CHANNEL, ALICE, "reset", thread_ts=thread))
    slack.wait_for(lambda: any("reset this thread" in m.text for m in slack.messages(CHANNEL, thread)))
    assert rdb.exists(quota) == 0
    sender.send_event(share(CHANNEL, ALICE, "And the toad?", [toad], thread_ts=thread))
    slack.wait_for(lambda: len(slack.downloads) == 3)
    answers(slack, CHANNEL, thread, 5)
    assert rdb.hget(quota, "files") == "1"
    assert len(notices(slack, CHANNEL, thread)) == 1


def test_the_quota_in_megabytes_counts_the_bytes_downloaded_not_only_the_declared_size(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    sender = SlackSender(start_bot(thread_file_quota_mb="0.001").url)  # 1,048 bytes
    kept = slack.add_file("kept.txt", b"k" * 800)
    # Declares 100 bytes but is 600: past the quota once downloaded.
    sneaky = slack.add_file("sneaky.txt", b"s" * 600, size=100)
    event = share(DM, ALICE, "Keep these two", [kept])
    sender.send_event(event)
    answers(slack, DM, event["ts"])
    sender.send_event(share(DM, ALICE, "And this one", [sneaky], thread_ts=event["ts"]))
    answers(slack, DM, event["ts"], 3)
    assert notices(slack, DM, event["ts"]) == [
        ":warning: `sneaky.txt` wasn't added: this thread has reached its limit of 1 KB of files. Start a "
        "new thread (or reset this one) to share more."
    ]
    assert [f["filename"] for f in openai_fake.files.values()] == ["kept.txt"]
    assert rdb.hgetall(f"{NS}:fquota:u:{ALICE}") == {"files": "1", "bytes": "800"}
    assert user_parts(openai_fake)[0]["text"].startswith("And this one")


def test_a_file_shared_again_does_not_count_twice(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    sender = SlackSender(start_bot(thread_file_quota_files="1").url)
    notes = slack.add_file("notes.txt", b"The newt is orange.")
    event = share(DM, ALICE, "Keep this", [notes])
    sender.send_event(event)
    answers(slack, DM, event["ts"])
    sender.send_event(share(DM, ALICE, "Here it is again", [notes], thread_ts=event["ts"]))
    sender.send_event(message(DM, ALICE, "What colour is the newt?", thread_ts=event["ts"]))
    answers(slack, DM, event["ts"], 3)
    assert notices(slack, DM, event["ts"]) == []
    assert rdb.hget(f"{NS}:fquota:u:{ALICE}", "files") == "1"
