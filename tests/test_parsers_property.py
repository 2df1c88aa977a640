"""Every parser is total (issue 12): property-based tests with hypothesis.

Generated payloads (arbitrary JSON, and real Slack shapes with fields dropped, nulled, retyped, made huge or
exotic), command texts and metadata go through the pure parsers, which must give a result or a clear
message and never raise; then through the HTTP endpoint of the bot as a process (signed like Slack signs),
which must answer every one 200 (401 for a bad signature), answer every command, and log no traceback.

Bounded and stable: a fixed number of examples each, derandomized (the same examples on every run), no
example database, no deadline (a loaded CI machine is slow, not wrong).
"""

from __future__ import annotations

import copy
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from slack_sdk.signature import SignatureVerifier

from bot.models import CommandRequest, IncomingMessage, SharedFile, UserContext, Workspace
from bot.slack.events import (
    HomeOpened,
    envelope_problem,
    parse_actor,
    parse_command_request,
    parse_context,
    parse_context_changed,
    parse_files,
    parse_home_opened,
    parse_message_action,
    parse_message_change,
    parse_user_message,
    parse_view_inputs,
    parse_view_submission,
    trigger_id_of,
    workspace_of,
)
from bot.threads.commands import (
    CONFIG_HELP,
    HELP_TEXT,
    HISTORY_MAX,
    Command,
    ParsedCommand,
    UnknownCommand,
    parse_command,
    parse_thread_command,
)
from bot.threads.intake import Intake
from bot.threads.metadata import (
    BOT_KEYS,
    MAX_KEY_CHARS,
    MAX_PAIRS,
    MAX_VALUE_CHARS,
    MetadataError,
    apply_replace,
    apply_set,
    apply_unset,
    format_lines,
    parse_assignments,
    parse_lines,
)
from bot.threads.settings_modal import TEXT_MAX_CHARS, SettingsRef, ThreadSettings
from tests.conftest import BotFactory
from tests.fakes.slack_api import FakeSlack
from tests.harness import (
    BOT_USER,
    SIGNING_SECRET,
    TEAM,
    SlackSender,
    mention,
    message,
    new_trigger_id,
    new_ts,
)

ALICE, DM, CHANNEL = "U0ALICE", "D0ALICE", "C0GENERAL"
CTX = {"team_id": TEAM, "bot_user_id": BOT_USER}

PURE = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
HTTP = settings(PURE, max_examples=40)

# ---- strategies ---------------------------------------------------------------------------------------

# Text of every kind: short, exotic (any code point but lone surrogates, which JSON from Slack can't carry
# as text), and now and then huge.
huge_text = st.builds(
    lambda s, n: (s * n)[:40_000], st.text(min_size=1, max_size=3), st.integers(500, 20_000)
)
texts = st.one_of(
    st.text(max_size=30), st.sampled_from(["", " ", "\n", "²", "١٢", "&lt;!here&gt;"]), huge_text
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), texts
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=10,
)
json_objects = st.dictionaries(st.text(max_size=12), json_values, max_size=6)


def file_object(name: str = "report.pdf") -> dict[str, Any]:
    return {
        "id": "F0FILE0001",
        "name": name,
        "title": name,
        "mimetype": "application/pdf",
        "filetype": "pdf",
        "size": 1234,
        "mode": "hosted",
        "url_private": "https://files.slack.com/files-pri/T0TEAM1-F0FILE0001/report.pdf",
        "url_private_download": "https://files.slack.com/files-pri/T0TEAM1-F0FILE0001/download/report.pdf",
        "permalink": "https://acme.slack.com/files/U0ALICE/F0FILE0001/report.pdf",
    }


def envelope(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "token": "legacy",
        "team_id": TEAM,
        "api_app_id": "A0APP",
        "event": event,
        "type": "event_callback",
        "event_id": "Ev0PROP0001",
        "event_time": 1_800_000_000,
        "authorizations": [
            {"team_id": TEAM, "user_id": BOT_USER, "is_bot": True, "is_enterprise_install": False}
        ],
    }


EVENTS = [
    envelope(message(DM, ALICE, "hello there", ts="1800000000.000100")),
    envelope(message(CHANNEL, ALICE, "a reply", ts="1800000000.000101", thread_ts="1800000000.000001")),
    envelope(mention(CHANNEL, ALICE, "status", ts="1800000000.000102", thread_ts="1800000000.000001")),
    envelope(
        message(
            DM,
            ALICE,
            "read this",
            ts="1800000000.000103",
            subtype="file_share",
            files=[file_object()],
            upload=True,
        )
    ),
    envelope({"type": "app_home_opened", "user": ALICE, "channel": DM, "tab": "home", "event_ts": "1.2"}),
    envelope({"type": "app_home_opened", "user": ALICE, "channel": DM, "tab": "messages", "event_ts": "1.2"}),
    envelope(
        {
            "type": "app_context_changed",
            "user": ALICE,
            "context": {"entities": [{"type": "slack#/types/channel_id", "value": CHANNEL}]},
        }
    ),
]


def interaction_templates() -> list[dict[str, Any]]:
    team, user = {"id": TEAM, "domain": "acme"}, {"id": ALICE, "name": "alice", "team_id": TEAM}
    msg = {"type": "message", "user": ALICE, "ts": "1800000000.000002", "thread_ts": "1800000000.000001"}
    shortcut = {
        "type": "message_action",
        "callback_id": "reset_thread",
        "trigger_id": "1.2.3",
        "response_url": "http://127.0.0.1:9/never-used",
        "team": team,
        "channel": {"id": CHANNEL, "name": "general"},
        "user": user,
        "message_ts": msg["ts"],
        "message": msg,
        "api_app_id": "A0APP",
    }
    view = {
        "id": "V0SETTINGS",
        "type": "modal",
        "callback_id": "thread_settings_modal",
        "private_metadata": json.dumps([TEAM, None, f"u:{ALICE}", DM, ALICE]),
        "state": {"values": {"meta_block": {"meta_lines": {"type": "plain_text_input", "value": "topic=x"}}}},
    }
    action = {"action_id": "home_dm_thread_settings", "block_id": "b", "type": "button", "action_ts": "1.2"}
    return [
        shortcut,
        {**shortcut, "callback_id": "thread_settings"},
        {"type": "view_submission", "team": team, "user": user, "view": view, "api_app_id": "A0APP"},
        {
            "type": "block_actions",
            "team": team,
            "user": user,
            "trigger_id": "1.2.3",
            "container": {"type": "view", "view_id": "V0HOME"},
            "view": {"id": "V0HOME", "type": "home"},
            "actions": [action],
        },
        {
            "type": "block_actions",
            "team": team,
            "user": user,
            "actions": [{**action, "action_id": "home_reset_dm_thread"}],
        },
    ]


# Most fields stay as they are, so that a mutated payload still gets far into the parser it tests.
MUTATIONS = ["keep"] * 9 + ["drop", "swap", "null"]


@st.composite
def mutated(draw: st.DrawFn, template: Any) -> Any:
    """`template` with fields kept, dropped, or replaced by any JSON value, at every depth."""

    def changed(item: Any) -> tuple[bool, Any]:
        action = draw(st.sampled_from(MUTATIONS))
        if action == "keep":
            return True, walk(item)
        return action != "drop", draw(json_values) if action == "swap" else None

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for key, item in value.items():
                kept, new = changed(item)
                if kept:
                    out[key] = new
            return out
        if isinstance(value, list):
            items = [new for kept, new in map(changed, value) if kept]
            return items + draw(st.lists(json_values, max_size=2))
        return value

    return walk(copy.deepcopy(template))


event_bodies = st.one_of(st.sampled_from(EVENTS).flatmap(mutated), json_objects)
interaction_bodies = st.one_of(st.sampled_from(interaction_templates()).flatmap(mutated), json_objects)
contexts = st.one_of(
    st.just(CTX),
    st.fixed_dictionaries(
        {"team_id": st.one_of(st.just(TEAM), json_values), "bot_user_id": st.just(BOT_USER)},
        optional={"enterprise_id": json_values, "user_id": json_values},
    ),
)

COMMAND_WORDS = [
    "help",
    "status",
    "reset",
    "meta",
    "history",
    "HISTORY",
    "meta set",
    "meta unset",
    "config",
    "config set",
    "config show",
    "config reset",
    "config set --workspace",
    "meta show",
]
arguments = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            *["²", "١٢", "0", "50", "51", "-1", "1e3", "topic=x", 'topic="a b"', "“q3”", "'", '"', "=v"],
            *[
                "--workspace",
                "model=gpt-5-mini",
                "tools=none",
                'instructions="be brief"',
                "Model=",
                "knowledge",
            ],
        ]
    ),
    st.integers(-5, 60).map(str),
)
command_texts = st.one_of(
    st.text(max_size=200),
    st.builds(
        lambda word, args: " ".join([word, *args]),
        st.sampled_from(COMMAND_WORDS),
        st.lists(arguments, max_size=4),
    ),
)

# Keys the rules accept (the modal can show them), values of any text up to OpenAI's limit.
meta_keys = st.text(min_size=1, max_size=MAX_KEY_CHARS).filter(
    lambda k: k == k.strip() and "=" not in k and "\n" not in k and "\r" not in k and k not in BOT_KEYS
)
meta_values = st.one_of(
    st.text(max_size=MAX_VALUE_CHARS),
    st.sampled_from(['"quoted"', '  "x"  ', '"', '""', "\\n", " a\nb ", "\r\n", '"\\ud800"', "\u2028", "=="]),
)
user_pairs = st.dictionaries(meta_keys, meta_values, max_size=MAX_PAIRS - len(BOT_KEYS))


# ---- the pure parsers ---------------------------------------------------------------------------------


@PURE
@given(body=event_bodies, context=contexts)
def test_event_parsers_give_a_result_or_none_for_any_payload(
    body: dict[str, Any], context: dict[str, Any]
) -> None:
    for source in ("mention", "message"):
        msg = parse_user_message(body, context, source=source)
        assert msg is None or isinstance(msg, IncomingMessage)
        if msg is not None:  # what the parser lets through is well typed, down to the files
            assert all(isinstance(f, SharedFile) and f.id for f in msg.files)
            assert msg.thread_ts is None or isinstance(msg.thread_ts, str)
    assert isinstance(workspace_of(body, context), Workspace | None)
    assert isinstance(parse_home_opened(body, context), HomeOpened)
    changed = parse_context_changed(body, context)
    assert changed is None or (isinstance(changed[1], str) and isinstance(changed[2], UserContext))
    change = parse_message_change(body, context)  # issue 15: edits and deletions
    assert change is None or (isinstance(change.thread, str) and isinstance(change.text, str))
    event = body.get("event")
    if isinstance(event, Mapping):
        assert isinstance(parse_context(event), UserContext)
        assert all(isinstance(f, SharedFile) for f in parse_files(event))
    assert isinstance(envelope_problem(body), str | None)


def test_unchanged_templates_are_read() -> None:
    """The mutations start from shapes the parsers accept as they are."""
    for body in EVENTS[:4]:
        assert parse_user_message(body, CTX, source="message") is not None
    assert parse_files(EVENTS[3]["event"])[0].name == "report.pdf"
    for payload in interaction_templates():
        assert envelope_problem(payload) is None
    shortcut, _, submission, *_ = interaction_templates()
    assert parse_message_action(shortcut, CTX) is not None
    assert parse_view_submission(submission, CTX, block_id="meta_block", action_id="meta_lines") is not None


valid_files = st.builds(
    lambda n, name, title, size, extra: {
        **file_object(),
        "id": f"F{n:08d}",
        "name": name,
        "title": title,
        "size": size,
        **extra,
    },
    st.integers(0, 10**8),
    st.one_of(st.none(), texts, st.integers()),
    st.one_of(st.none(), texts),
    st.one_of(st.none(), st.integers(), st.text(max_size=5)),
    st.dictionaries(st.sampled_from(["mimetype", "filetype", "url_private", "permalink", "mode"]), scalars),
)
junk_files = st.one_of(
    scalars,
    st.lists(json_values, max_size=2),
    st.fixed_dictionaries({"id": st.one_of(st.none(), st.integers(), st.just(""), st.lists(st.text()))}),
    json_objects.filter(lambda d: not isinstance(d.get("id"), str) or not d.get("id")),
)


@PURE
@given(entries=st.lists(st.one_of(valid_files, junk_files), max_size=8))
def test_a_malformed_file_entry_is_skipped_and_every_other_kept(entries: list[Any]) -> None:
    files = parse_files({"files": entries})
    kept = [e["id"] for e in entries if isinstance(e, dict) and isinstance(e.get("id"), str) and e["id"]]
    tombstones = {
        e["id"]
        for e in entries
        if isinstance(e, dict) and e.get("mode") == "tombstone" and isinstance(e.get("id"), str)
    }
    assert [f.id for f in files] == [i for i in kept if i not in tombstones]
    for file in files:  # fields of the wrong type took their defaults
        assert isinstance(file.display_name, str) and file.display_name
        assert file.size is None or file.size >= 0


@PURE
@given(body=interaction_bodies, context=contexts)
def test_interaction_parsers_give_a_result_or_none_for_any_payload(
    body: dict[str, Any], context: dict[str, Any]
) -> None:
    action = parse_message_action(body, context)
    assert action is None or (isinstance(action.message_ts, str) and isinstance(action.thread_ts, str | None))
    submitted = parse_view_submission(body, context, block_id="meta_block", action_id="meta_lines")
    assert submitted is None or all(isinstance(part, str) for part in submitted[1:])
    inputs = parse_view_inputs(body, context, action_id="value")
    assert inputs is None or all(isinstance(v, str) for v in inputs[3].values())
    actor = parse_actor(body, context)
    assert actor is None or isinstance(actor[1], str)
    assert isinstance(trigger_id_of(body), str)
    assert isinstance(envelope_problem(body), str | None)
    request = parse_command_request(body, context)
    assert request is None or isinstance(request.text, str)
    if submitted is not None:
        problem = ThreadSettings.check(*submitted)
        assert problem is None or (isinstance(problem, str) and problem)


@PURE
@given(text=command_texts, dm=st.booleans())
def test_every_command_text_is_parsed_or_explained(text: str, dm: bool) -> None:
    try:
        parsed = parse_command(text)
    except UnknownCommand as exc:
        assert HELP_TEXT in exc.user_message or CONFIG_HELP in exc.user_message
    else:
        assert isinstance(parsed, ParsedCommand) and 1 <= parsed.limit <= HISTORY_MAX
    try:
        assert isinstance(parse_thread_command(text), ParsedCommand | None)
    except UnknownCommand as exc:
        assert exc.user_message
    # A slash command is answered at once (help, a mistake, a channel's hint) or after the ack (a DM's
    # command on its thread): never neither.
    request = CommandRequest(
        workspace=Workspace(team_id=TEAM), channel=DM if dm else CHANNEL, user=ALICE, text=text
    )
    now = Intake.answer_from_text(request)
    # `config` (a channel's policy) and `usage` are answered after the ack in a channel too.
    anywhere = now is None and Intake.answer_from_text(request.model_copy(update={"channel": DM})) is None
    assert (now is None and (dm or anywhere)) or (isinstance(now, str) and now)
    if now is None and not dm:
        assert parse_command(text).command in (Command.CONFIG, Command.USAGE)


@PURE
@given(
    n=st.integers(-(10**6), 10**6),
    digits=st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=4),
)
def test_history_takes_a_number_from_1_to_50_and_explains_anything_else(n: int, digits: str) -> None:
    if 1 <= n <= HISTORY_MAX:
        assert parse_command(f"history {n}").limit == n
    else:
        with pytest.raises(UnknownCommand):
            parse_command(f"history {n}")
    try:
        assert 1 <= parse_command(f"history {digits}").limit <= HISTORY_MAX
    except UnknownCommand as exc:
        assert "takes a number from 1 to 50" in exc.user_message


@PURE
@given(pairs=user_pairs)
def test_modal_text_round_trips_every_value_exactly(pairs: dict[str, str]) -> None:
    text = format_lines(pairs)
    assert parse_lines(text) == pairs
    assert list(parse_lines(text)) == list(pairs)  # in the same order
    assert text.count("\n") == max(len(pairs) - 1, 0)  # one line per pair
    assert format_lines(parse_lines(text)) == text


@PURE
@given(text=st.one_of(st.text(max_size=300), user_pairs.map(format_lines).map(lambda t: t + "\n\n x=y \n")))
def test_modal_text_is_read_or_every_bad_line_named(text: str) -> None:
    try:
        pairs = parse_lines(text)
    except MetadataError as exc:
        assert all(p.startswith("Line ") for p in exc.problems)
        return
    for key, value in pairs.items():
        assert key == key.strip() and key and "\n" not in key and isinstance(value, str)


@PURE
@given(
    current=st.dictionaries(st.text(max_size=70), st.text(max_size=600), max_size=20),
    changes=st.dictionaries(st.text(max_size=70), st.text(max_size=600), max_size=20),
    words=st.lists(st.text(max_size=40), max_size=6),
)
def test_metadata_rules_give_valid_metadata_or_name_every_problem(
    current: dict[str, str], changes: dict[str, str], words: list[str]
) -> None:
    for change in (
        lambda: apply_set(current, changes),
        lambda: apply_replace(current, changes),
        lambda: apply_unset(current, list(changes)),
        lambda: apply_set({}, parse_assignments(words)),
    ):
        try:
            result = change()
        except MetadataError as exc:
            assert exc.problems and exc.user_message
            continue
        new = {k: v for k, v in result.items() if k not in current or current[k] != v}
        assert all(len(k) <= MAX_KEY_CHARS and len(v) <= MAX_VALUE_CHARS for k, v in new.items())
        assert len(result) <= MAX_PAIRS or result.keys() <= current.keys()


valid_ref = json.dumps([TEAM, None, f"u:{ALICE}", DM, ALICE])


@PURE
@given(
    private_metadata=st.one_of(
        texts,
        json_values.map(json.dumps),
        st.just(json.loads(valid_ref)).flatmap(mutated).map(json.dumps),
        st.just(valid_ref),
    ),
    text=st.one_of(st.text(max_size=200), user_pairs.map(format_lines), huge_text),
    user=st.sampled_from([ALICE, "U0BOB"]),
)
def test_a_submitted_settings_form_is_checked_without_raising(
    private_metadata: str, text: str, user: str
) -> None:
    ref = SettingsRef.load(private_metadata)
    assert ref is None or ref.consistent
    problem = ThreadSettings.check(Workspace(team_id=TEAM), user, private_metadata, text)
    if problem is None:  # what passes is the submitter's own thread, and text that saves as checked
        assert ref is not None and ref.user == user and len(text) <= TEXT_MAX_CHARS
        apply_replace(dict.fromkeys(BOT_KEYS, ""), parse_lines(text))
    else:
        assert problem.strip()


# ---- the HTTP endpoint --------------------------------------------------------------------------------

MAX_BODY = 1024**2  # aiohttp's client_max_size: a larger body is refused (413) before the bot sees it


def utf8(body: bytes) -> bool:
    try:
        body.decode()
    except UnicodeDecodeError:
        return False
    return True


def post(
    bot_url: str, body: bytes, content_type: str, *, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    """POST to /slack/events signed as Slack signs (`headers` may override the signature headers). Slack
    signs the body as UTF-8 text: other bytes get no signature the bot can check."""
    timestamp = str(int(time.time()))
    verifier = SignatureVerifier(SIGNING_SECRET)
    signature = verifier.generate_signature(timestamp=timestamp, body=body) if utf8(body) else "v0="
    all_headers = {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": str(signature),
        **(headers or {}),
    }
    request = urllib.request.Request(f"{bot_url}/slack/events", data=body, headers=all_headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=20) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


form_fields = st.dictionaries(
    st.sampled_from(["team_id", "channel_id", "user_id", "text", "trigger_id", "enterprise_id", "user_name"]),
    st.text(max_size=20),
    max_size=4,
)
raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [b"", b"{", b"[]", b"null", b"42", b'"text"', b"[" * 3000, b"\xff\xfe{}", b"payload=%7B"]
    ),
    st.builds(lambda p: urllib.parse.urlencode({"payload": p}).encode(), st.text(max_size=50)),
    json_values.map(lambda v: json.dumps(v).encode()),
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/x-www-form-urlencoded",
        "text/plain",
        "application/json; charset=no-such",
    ]
)


def header_text(size: int) -> st.SearchStrategy[str]:
    """A header value http.client sends as it is: Latin-1, no control characters."""
    return st.text(
        st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"), max_size=size
    )


def encode_interaction(payload: Any) -> bytes:
    return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()


def test_the_http_endpoint_answers_every_payload(start_bot: BotFactory, slack: FakeSlack) -> None:
    # A front only: every listener and parser runs, turns are queued in Redis for workers that don't run
    # here (they are the turn runner's business, not the parsers').
    bot = start_bot(WORKER_CONCURRENCY="0")
    sender = SlackSender(bot.url)

    def check(status: int, body: bytes, what: str) -> None:
        assert status == 200, f"{what}: HTTP {status} for {body[:300]!r}"

    @HTTP
    @given(body=event_bodies)
    def events(body: dict[str, Any]) -> None:
        event = body.get("event")
        if isinstance(event, dict) and isinstance(event.get("ts"), str):
            event["ts"] = new_ts()  # a message of its own, not a duplicate of the last example's
        raw = json.dumps(body).encode()
        assume(len(raw) < MAX_BODY)
        check(post(bot.url, raw, "application/json")[0], raw, "event")

    @HTTP
    @given(payload=interaction_bodies)
    def interactions(payload: dict[str, Any]) -> None:
        if isinstance(payload, dict) and isinstance(payload.get("trigger_id"), str):
            payload["trigger_id"] = new_trigger_id()  # views.open accepts it (once)
        raw = encode_interaction(payload)
        assume(len(raw) < MAX_BODY)
        check(post(bot.url, raw, "application/x-www-form-urlencoded")[0], raw, "interaction")

    @HTTP
    @given(body=raw_bodies, content_type=content_types)
    def raw(body: bytes, content_type: str) -> None:
        status = post(bot.url, body, content_type)[0]
        if utf8(body):
            check(status, body, "raw body")
        else:  # not text Slack could have signed
            assert status == 401, f"raw bytes: HTTP {status} for {body[:300]!r}"

    @HTTP
    @given(text=command_texts, fields=form_fields, dm=st.booleans())
    def commands(text: str, fields: dict[str, str], dm: bool) -> None:
        mangled_url, response_url = sender.response_url(), sender.response_url()
        form = {
            "command": "/assistant",
            "team_id": TEAM,
            "channel_id": DM if dm else CHANNEL,
            "user_id": "U0NOTHREAD",  # no assistant thread: its DM commands are answered without OpenAI
            "response_url": response_url,
            "trigger_id": new_trigger_id(),
            "text": text,
        }
        valid = dict(form)
        raw = urllib.parse.urlencode({**form, **fields, "response_url": mangled_url}).encode()
        check(post(bot.url, raw, "application/x-www-form-urlencoded")[0], raw, "mangled command")
        # The unmangled command is always answered: in the ack, or through its response_url.
        status, answer = post(
            bot.url, urllib.parse.urlencode(valid).encode(), "application/x-www-form-urlencoded"
        )
        assert status == 200
        if not answer:
            [posted] = sender.responses(response_url)
            answer = str(posted["text"])
        assert answer.strip()

    @HTTP
    @given(
        body=st.one_of(event_bodies.map(lambda b: json.dumps(b).encode()), raw_bodies),
        headers=st.one_of(
            st.fixed_dictionaries({"X-Slack-Signature": header_text(70)}),
            st.fixed_dictionaries({"X-Slack-Request-Timestamp": header_text(20)}),
            st.just({"X-Slack-Request-Timestamp": str(int(time.time()) - 3600)}),
        ),
    )
    def forged(body: bytes, headers: dict[str, str]) -> None:
        assume(len(body) < MAX_BODY)
        status, answer = post(bot.url, body, "application/json", headers=headers)
        assert status == 401 and json.loads(answer) == {"error": "invalid request"}, (status, headers)

    for run in (events, interactions, raw, commands, forged):
        run()
    # Nothing failed after the ack either (the fixture also fails the test on any traceback in the log).
    logs = bot.logs()
    assert "Failed to run listener" not in logs
    assert not re.search(r"failed: \w*(Error|Exception)\b", logs), logs[-3000:]
