"""A stateful fake of the Slack Web API and Socket Mode, served on loopback for black-box tests.

The bot runs as a separate process with ``SLACK_API_URL=<fake.api_url>``, so every Web API call arrives here
as ``GET|POST /api/<method>`` (form-encoded, JSON or query string, exactly as slack_sdk sends it) and Socket
Mode connects to ``/link/`` with a ticket issued by ``apps.connections.open``. Tests read the recorded state
(calls, messages, statuses, acks) from their own thread, so every state access goes through one lock.

Response shapes and error codes follow the Slack method reference (docs.slack.dev) and the sample responses
the official SDKs test against; where Slack's exact behaviour is undocumented the choice is noted inline.

Files: ``add_file`` stores a file and returns its file object (as a ``file_share`` message carries it);
``files.info`` returns it; its ``url_private(_download)`` points at this server, which serves the bytes only
to ``Authorization: Bearer <bot token>`` and otherwise answers Slack's HTML sign-in page (HTTP 200,
``text/html``), as Slack does for a token it does not accept. Every download request is recorded with its
headers (``downloads``). ``connect_stub`` gives the stub a Slack Connect event carries instead.
``hold_downloads`` keeps chosen downloads waiting (until ``release_downloads``, or until the client hangs up:
``abandoned_downloads``), and the fake counts the downloads in flight at once (``downloads_in_flight``,
``peak_downloads_in_flight``), so a test can see parallelism and deadlines without timing anything.

Uploads: ``AsyncWebClient.files_upload_v2``'s flow (``files.getUploadURLExternal``, the bytes POSTed to an
upload URL on this fake's own host, ``files.completeUploadExternal``) stores the file with the others, so
``files.info`` and the download URLs serve it too; ``uploads()`` records each share, ``fail_uploads`` makes
the byte upload fail. ``chat.getPermalink`` links any well-formed ts (see the uploads section below).

Scopes: every answer to a token the fake knows carries ``x-oauth-scopes`` (manifest.yml's bot scopes for the
bot token by default, ``set_bot_scopes`` per test; ``connections:write`` for the app token).
``socket_connections`` counts the Socket Mode connections accepted.

Several workspaces, OAuth: ``grant_install`` lets Slack's authorize page (``GET /oauth/v2/authorize``, on this
fake) approve the next install for a workspace (or an Enterprise Grid org) and redirect to the app with a
one-time ``code``; ``oauth.v2.access`` exchanges it (and refreshes rotating tokens) with the app's client id
and secret, and issues a bot token that then works for that workspace only. ``issued_tokens`` lists them;
``Call.token`` shows which token each call carried. ``revoke`` makes a token dead (``token_revoked``).

As strict as Slack, by default: every method has its documented rate limit (token buckets per workspace,
per channel for chat.postMessage and assistant.threads.setStatus; HTTP 429 + Retry-After, no effect; read
them with ``rate_limited()``, tune them with ``set_rate_limits``/``set_rate_limit``); streams close
STREAM_LIFETIME after they start; views.open/views.push take only a trigger_id the fake minted
(``new_trigger_id``) or was told about (``register_trigger_id``), once, within 3 s; views.* refuse a view
over Block Kit's limits (private_metadata, input blocks, plain_text_input lengths); an ephemeral posted into a
thread with no replies is accepted but marked invisible, and ``ephemerals()`` leaves it out. ``advance_clock``
moves the fake's clock for all of these.

Agent sessions: ``agents.sessions.setStatus`` creates a thread's session (``session()`` reads it: status,
title, every status set, every rename), ``agents.sessions.rename`` renames it; ``stop_session`` is the user
pressing the session's stop button: the thread's streams stop (``stopped_by_user`` on later appends and
stops) and the ``agent_session_stopped`` event to deliver is returned. Stream chunks are checked against
their documented shapes (``task_update``, ``plan_update``, ``blocks``, ``markdown_text``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import functools
import itertools
import json
import math
import mimetypes
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote

import yaml
from aiohttp import WSCloseCode, WSMsgType, web

from .server import ServerThread

JsonDict = dict[str, Any]

# Slack's documented limits (chat.* method reference).
MARKDOWN_TEXT_LIMIT = 12_000  # "Limit this field to 12,000 characters" (markdown_text, per call)
UPDATE_TEXT_LIMIT = 4_000  # chat.update: "The `text` field cannot exceed 4,000 characters" -> msg_too_long
MAX_BLOCKS = 50
MAX_LOADING_MESSAGES = 10

CHUNK_TYPES = frozenset({"markdown_text", "task_update", "plan_update", "blocks"})
# Chunks (docs.slack.dev chat.startStream/appendStream/stopStream "Using the chunks parameter"; slack_sdk
# models/messages/chunk.py; @slack/types chunk.ts): a task_update has an id, a title and a status among
# these; details and output are plain strings; sources are URL source elements with both url and text
# (slack_sdk UrlSourceElement). A plan_update has a title. A blocks chunk holds at most 50 blocks.
TASK_STATUSES = frozenset({"pending", "in_progress", "complete", "error"})
# chat.startStream `task_display_mode` (ref chat.startStream.json, 2026-08-20: `dense` was removed).
TASK_DISPLAY_MODES = frozenset({"timeline", "plan"})

# Agent sessions (docs.slack.dev/ai/agent-sessions; ref methods agents.sessions.setStatus/rename.json): a
# session is keyed by (channel, thread root ts); setStatus creates it (its `title` is used only then),
# statuses are this enum, titles at most 200 characters (rename: 1-200, else invalid_name). A bad status is
# answered `invalid_arguments` in practice (NousResearch/hermes-agent PR #113698, live repro), not the
# documented `invalid_status`. Without an `agent_session_stopped` subscription setStatus warns
# `missing_agent_session_stopped_event_subscription` (docs reference/events/agent_session_stopped).
SESSION_STATUSES = frozenset({"active", "processing", "suspended", "closed"})
SESSION_TITLE_LIMIT = 200
# Arguments that arrive as JSON-encoded strings when a client sends a form body.
JSON_ARGS = ("blocks", "attachments", "chunks", "metadata", "prompts", "loading_messages", "view")
CHANNEL_RE = re.compile(r"[CDG][A-Z0-9]{2,}")
USER_RE = re.compile(r"[UW][A-Z0-9]{2,}")
TS_BASE = 1_700_000_100

# Streams: Slack closes a stream about five minutes after chat.startStream, appends or not; later appends
# and chat.stopStream answer message_not_in_streaming_state. Undocumented on the method pages; reported in
# slackapi/python-slack-sdk#1859 ("undocumented timeouts") and slackapi/node-slack-sdk#2702 ("a stream is
# automatically closed after approximately 5 minutes").
STREAM_LIFETIME = 300.0

# Granted scopes: Slack names a token's scopes, comma-separated, in the `x-oauth-scopes` header of its Web
# API answers; Bolt reads the bot's scopes from auth.test's (slack_bolt/middleware/authorization/
# internals.py, `_to_authorize_result`, splitting on ","), node-slack-sdk copies the header into
# `response_metadata.scopes`. By default the bot token has what manifest.yml asks for (a fresh install of
# the app); `set_bot_scopes` changes that. An app-level token for Socket Mode has `connections:write`.
MANIFEST = Path(__file__).resolve().parents[2] / "manifest.yml"
APP_TOKEN_SCOPES = ("connections:write",)


def manifest_bot_scopes() -> tuple[str, ...]:
    return tuple(yaml.safe_load(MANIFEST.read_text())["oauth_config"]["scopes"]["bot"])


@functools.cache
def manifest_bot_events() -> tuple[str, ...]:
    # Read once: agents.sessions.setStatus asks on every call, and parsing the YAML each time cost the
    # bench's fakes ~7 ms a call, CPU taken from the bot on the same cores.
    return tuple(yaml.safe_load(MANIFEST.read_text())["settings"]["event_subscriptions"]["bot_events"])


# OAuth (docs.slack.dev/authentication/installing-with-oauth and the oauth.v2.access reference; error codes
# from slack-ruby/slack-api-ref methods/oauth/oauth.v2.access.json): the client id and secret may come as
# HTTP Basic auth or as arguments; a wrong id is `invalid_client_id`, a wrong secret `bad_client_secret`
# (checked before the code); a code works once and for ten minutes ("This temporary code will expire after
# ten minutes"), else `invalid_code`; a redirect_uri sent to the authorize page must be sent again and match
# (`bad_redirect_uri`); a grant_type other than authorization_code/refresh_token is `invalid_grant_type`; an
# unknown refresh token `invalid_refresh_token`. Rotating tokens ("xoxe.xoxb-") live 12 hours
# (`expires_in: 43200` in the method's sample response); past that, calls answer `token_expired`
# (docs.slack.dev/authentication/using-token-rotation). A refresh issues a new access token and refresh
# token and revokes the refresh token spent; the old access token keeps working until it expires (the docs
# do not say it is revoked at once).
OAUTH_CODE_TTL = 600.0
NO_TOKEN_METHODS = frozenset({"oauth.v2.access"})  # authenticated by the app's client id and secret
ROTATING_TOKEN_LIFETIME = 43_200
CLIENT_ID = "1111111111.2222222222"
CLIENT_SECRET = "fake-client-secret-0123456789"


@dataclass
class TokenInfo:
    """A token this fake issued (or was built with) and the installation it belongs to."""

    token: str
    team_id: str | None
    enterprise_id: str | None
    bot_user_id: str
    bot_id: str
    scopes: tuple[str, ...]
    team_name: str = "Fake Team"
    is_enterprise_install: bool = False
    expires_at: float | None = None  # fake clock; None: never
    revoked: bool = False


@dataclass
class _Grant:
    """An install approved on the authorize page, waiting for its code to be exchanged."""

    team_id: str | None
    enterprise_id: str | None
    team_name: str
    is_enterprise_install: bool
    rotating: bool
    scopes: tuple[str, ...]
    redirect_uri: str | None = None
    code: str | None = None
    issued_at: float = 0.0


# trigger_id / interactivity_pointer: single use, and only valid for 3 seconds after Slack sends it.
# docs.slack.dev/interactivity/handling-user-interaction ("Triggers expire in three seconds"); dialog.open's
# error list: "trigger_expired: The provided trigger_id was presented after the 3 second limit". The views.*
# error codes (expired_trigger_id, exchanged_trigger_id, invalid_trigger_id) are from the views.open and
# views.push references (slack-ruby/slack-api-ref methods/views/views.open.json, views.push.json).
TRIGGER_TTL = 3.0

# Views (docs.slack.dev/reference/views/modal-views): "private_metadata ... Max length of 3000 characters".
PRIVATE_METADATA_LIMIT = 3000
# Input block (docs.slack.dev/reference/block-kit/blocks/input-block): label and hint text "Maximum length
# for the text in this field is 2000 characters"; block_id "Maximum length for this field is 255".
INPUT_LABEL_LIMIT = 2000
BLOCK_ID_LIMIT = 255
# plain_text_input (docs.slack.dev/reference/block-kit/block-elements/plain-text-input-element): action_id at
# most 255 characters; placeholder text at most 150; min_length "between 0 and 3000, inclusive"; max_length
# "between 1 and 3000, inclusive".
ACTION_ID_LIMIT = 255
PLACEHOLDER_LIMIT = 150
TEXT_INPUT_LIMIT = 3000

# Feedback buttons (issue 15). context_actions (docs.slack.dev/reference/block-kit/blocks/
# context-actions-block): `elements` "An array of feedback_buttons or icon_button block elements. Maximum
# number of items is 5" (and at least one: slack_sdk ContextActionsBlock "elements attribute must be
# specified"); block_id at most 255. feedback_buttons (docs.slack.dev/reference/block-kit/block-elements/
# feedback-buttons-element): "must be used inside the context actions block"; action_id at most 255;
# positive_button and negative_button both required, each a button object whose `text` (plain_text) is at
# most 75 characters, `value` (required) at most 2000, `accessibility_label` at most 75 (slack_sdk
# FeedbackButtonObject text_max_length / value_max_length).
CONTEXT_ACTIONS_MAX_ELEMENTS = 5
# Buttons in an actions block (issue 16's Approve / Deny). actions (docs.slack.dev/reference/block-kit/
# blocks/actions-block): "There is a maximum of 25 elements in each action block"; block_id at most 255.
# button (docs.slack.dev/reference/block-kit/block-elements/button-element): `text` plain_text "Maximum
# length for the text in this field is 75 characters", action_id at most 255, `value` "Maximum length for
# this field is 2000 characters", `style` primary or danger (slack_sdk ButtonElement text_max_length,
# value_max_length). section (docs.slack.dev/reference/block-kit/blocks/section-block): `text` "Maximum
# length for the text in this field is 3000 characters" (slack_sdk SectionBlock text_max_length).
ACTIONS_MAX_ELEMENTS = 25
BUTTON_TEXT_LIMIT = 75
BUTTON_VALUE_LIMIT = 2000
BUTTON_STYLES = frozenset({"primary", "danger"})
SECTION_TEXT_LIMIT = 3000
CONTEXT_ACTIONS_ELEMENTS = frozenset({"feedback_buttons", "icon_button"})
FEEDBACK_TEXT_LIMIT = 75
FEEDBACK_VALUE_LIMIT = 2000
FEEDBACK_LABEL_LIMIT = 75


# ---------------------------------------------------------------- rate limits
#
# docs.slack.dev/apis/web-api/rate-limits: limits apply per method, per app, per workspace; Tier 1 "1+ per
# minute", Tier 2 "20+", Tier 3 "50+", Tier 4 "100+", bursts "tolerated"/"welcome". Over the limit Slack
# answers HTTP 429 with a Retry-After header (seconds) and {"ok": false, "error": "ratelimited"}, and does
# nothing. Each limit is modelled as a token bucket holding `burst` calls that refills continuously at
# `per_minute`; a fresh workspace can burst up to `burst` calls, then is held to the rate.
# Per-minute figures: slackapi/java-slack-sdk MethodsRateLimitTier.java (getAllowedRequestsPerMinute).
TIER_PER_MINUTE = {1: 1.0, 2: 20.0, 3: 50.0, 4: 100.0}
# A response_url takes up to 5 messages within 30 minutes (docs.slack.dev "Handling user interaction").
RESPONSE_URL_USES = 5
RESPONSE_URL_TTL = 30 * 60.0


# ---------------------------------------------------------------- live special syntax
#
# docs.slack.dev/messaging/formatting-message-text, "Escaping text": "Slack uses &, <, and > as control
# characters for special parsing"; text meant literally arrives as &amp; &lt; &gt;, which Slack only decodes
# for display, never into syntax. Every raw <…> is parsed ("Advanced formatting"): <@U…>/<@W…> mentions a
# user, <#C…> links a channel, <!subteam^ID> mentions a user group, <!here> <!channel> <!everyone> notify,
# <!date^…> formats a date, anything else is a link, <url> or <url|label>. Parsed: the message `text`, mrkdwn
# text objects, `markdown_text` and markdown blocks (Slack reads its own tokens inside Markdown too); not
# parsed: plain_text objects and plain_text_input values. chat.postMessage's `link_names` / `parse=full` also
# make plain "@channel", "@here", "@everyone" words notify. Rich text elements of type user / channel /
# usergroup / broadcast / link are live by construction.
SLACK_TOKEN = re.compile(r"<([^<>]*)>")
BROADCASTS = frozenset({"here", "channel", "everyone"})
_PLAIN_BROADCAST = re.compile(r"(?<![\w@])@(here|channel|everyone)\b")
_RICH_LIVE = frozenset({"user", "channel", "usergroup", "broadcast", "link"})
_PARSED_TYPES = frozenset({"mrkdwn", "markdown"})


@dataclass(frozen=True)
class LiveForm:
    """A special form Slack would act on: it notifies, mentions, links or formats."""

    method: str  # the Web API method, or "response_url"
    where: str  # the field it was in, e.g. "markdown_text", "view.blocks[1].text.text"
    kind: str  # user | channel | usergroup | broadcast | date | special | link
    raw: str  # as Slack received it


def token_kind(inner: str) -> str:
    """What Slack makes of `<inner>`."""
    if inner.startswith("@"):
        return "user"
    if inner.startswith("#"):
        return "channel"
    if inner.startswith("!subteam^"):
        return "usergroup"
    if inner.startswith("!"):
        name = inner[1:].split("|", 1)[0].split("^", 1)[0]
        return "broadcast" if name in BROADCASTS else "date" if name == "date" else "special"
    return "link"


def live_tokens(text: str) -> list[tuple[str, str]]:
    """(kind, raw) of every live `<…>` form in a parsed text field, exactly as Slack reads it: raw angle
    brackets are syntax, their entities are not."""
    return [(token_kind(m.group(1)), m.group(0)) for m in SLACK_TOKEN.finditer(text) if m.group(1)]


def live_forms_in(method: str, args: JsonDict) -> list[LiveForm]:
    """Every live special form in one request's arguments (message, stream, view or response_url body)."""
    found: list[LiveForm] = []

    def parsed(where: str, text: object) -> None:
        if isinstance(text, str):
            found.extend(LiveForm(method, where, kind, raw) for kind, raw in live_tokens(text))

    def walk(node: object, where: str) -> None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{where}[{i}]")
            return
        if not isinstance(node, dict):
            return
        kind = node.get("type")
        if kind == "plain_text":
            return
        if kind in _PARSED_TYPES:
            parsed(f"{where}.text", node.get("text"))
        elif kind in _RICH_LIVE and where.count("elements") >= 2:  # inside a rich_text section / list
            found.append(LiveForm(method, where, str(kind), json.dumps(node, sort_keys=True)))
        for key, value in node.items():
            if isinstance(value, (dict, list)):
                walk(value, f"{where}.{key}")

    for key in ("text", "markdown_text", "initial_comment"):
        parsed(key, args.get(key))
    if args.get("link_names") in (True, 1, "1", "true") or args.get("parse") == "full":
        text = args.get("text")
        for m in _PLAIN_BROADCAST.finditer(text if isinstance(text, str) else ""):
            found.append(LiveForm(method, "text", "broadcast", m.group(0)))
    for key in ("blocks", "attachments", "view"):
        walk(args.get(key), key)
    for i, chunk in enumerate(args.get("chunks") or []):
        if isinstance(chunk, dict) and chunk.get("type") == "markdown_text":
            parsed(f"chunks[{i}].text", chunk.get("text"))
        walk(chunk, f"chunks[{i}]")
    for i, attachment in enumerate(args.get("attachments") or []):
        if isinstance(attachment, dict):
            for key in ("text", "pretext"):
                parsed(f"attachments[{i}].{key}", attachment.get(key))
    return found


@dataclass(frozen=True)
class RateLimit:
    per_minute: float
    burst: float  # the bucket's capacity
    per_channel: bool = False  # one bucket per channel (else one per workspace)


def _tier(n: int) -> tuple[RateLimit, ...]:
    return (RateLimit(TIER_PER_MINUTE[n], TIER_PER_MINUTE[n]),)


# Tiers of every method the fake serves: slackapi/java-slack-sdk
# slack-api-client/src/main/java/com/slack/api/methods/MethodsRateLimits.java, matching the "Rate limits"
# line of each docs.slack.dev/reference/methods/<method> page.
RATE_LIMITS: dict[str, tuple[RateLimit, ...]] = {
    # "Special": "hundreds of requests per minute" (MethodsRateLimitTier.SpecialTier_auth_test = 600).
    "auth.test": (RateLimit(600, 600),),
    # docs.slack.dev/reference/methods/chat.postMessage: "generally allow an app to post 1 message per second
    # to a specific channel", short bursts allowed, plus a workspace limit of "several hundred messages per
    # minute" (SpecialTier_chat_postMessage: 60 per minute per channel). A burst of 3 per channel; 300/min
    # for the workspace.
    "chat.postMessage": (RateLimit(60, 3, per_channel=True), RateLimit(300, 300)),
    "chat.postEphemeral": _tier(4),
    "chat.update": _tier(3),
    "chat.delete": _tier(3),
    "chat.startStream": _tier(2),
    "chat.appendStream": _tier(4),
    "chat.stopStream": _tier(2),
    # SpecialTier_assistant_threads_setStatus: "similar tier with chat.postMessage", 60 per minute per DM.
    "assistant.threads.setStatus": (RateLimit(60, 3, per_channel=True),),
    "assistant.threads.setSuggestedPrompts": _tier(3),
    "assistant.threads.setTitle": _tier(3),
    # ref agents.sessions.setStatus.json / agents.sessions.rename.json: `rate_limits: "t3"`.
    "agents.sessions.setStatus": _tier(3),
    "agents.sessions.rename": _tier(3),
    "users.info": _tier(4),
    "conversations.info": _tier(3),
    # Tier 3 for internal (customer-built) apps; since 2025 commercially distributed non-Marketplace apps get
    # 1 per minute (docs.slack.dev/changelog/2025/05/29/rate-limit-changes-for-non-marketplace-apps).
    "conversations.replies": _tier(3),
    "views.publish": _tier(4),
    "views.open": _tier(4),
    "views.push": _tier(4),
    "views.update": _tier(4),
    "apps.connections.open": _tier(1),
    "files.info": _tier(4),
    "files.getUploadURLExternal": _tier(4),
    "files.completeUploadExternal": _tier(4),
    # "Special": hundreds per minute (SpecialTier_chat_getPermalink = 600).
    "chat.getPermalink": (RateLimit(600, 600),),
}


@dataclass(frozen=True)
class RateLimited:
    """One call the fake refused with HTTP 429."""

    method: str
    channel: str | None  # the channel of a per-channel limit that was hit, else None
    retry_after: int  # the Retry-After header sent
    at: float  # time.monotonic()


@dataclass
class _Bucket:
    tokens: float
    updated: float  # fake clock


@dataclass(frozen=True)
class Call:
    method: str
    args: JsonDict  # the parsed arguments, without the token
    token: str | None
    ok: bool
    error: str | None
    at: float  # time.monotonic() on arrival


@dataclass
class Message:
    ts: str
    channel: str
    thread_ts: str | None
    text: str  # final rendered text; for streams every markdown_text (and markdown_text chunk) concatenated
    streaming: bool  # True while a chat.startStream message is still open
    blocks: list[JsonDict]
    kind: Literal["post", "stream", "ephemeral"]
    updates: int = 0  # successful chat.update calls on this message
    user: str | None = None  # recipient, for ephemerals
    chunks: list[JsonDict] = field(default_factory=list)  # every chunk streamed, of any type
    appends: int = 0  # successful chat.appendStream calls
    expired: bool = False  # the stream was cut off (expire_streams() or its lifetime ran out)
    metadata: JsonDict | None = None
    visible: bool = True  # ephemerals: False when Slack accepted it but never showed it (see _post_ephemeral)
    started: float = 0.0  # streams: the fake clock at chat.startStream
    # streams: the user pressed the session's stop button (stop_session): no more appends or stops.
    stopped_by_user: bool = False
    task_display_mode: str | None = None  # streams: as chat.startStream set it


@dataclass
class Session:
    """An agent session (agents.sessions.*): one per (channel, thread root ts)."""

    channel: str
    thread_ts: str
    status: str
    title: str | None
    initiator: str | None
    statuses: list[str] = field(default_factory=list)  # every status set, in order
    renames: list[str] = field(default_factory=list)  # every agents.sessions.rename title, in order


@dataclass(frozen=True)
class Download:
    """One request for file bytes (url_private / url_private_download) and what it got."""

    path: str
    headers: dict[str, str]
    served: bool  # True: the file's bytes; False: the HTML sign-in page
    at: float


@dataclass(frozen=True)
class Upload:
    """A file the bot uploaded (files.getUploadURLExternal, the upload, files.completeUploadExternal), once
    per channel it was shared to (``channel`` None: completed without a channel, so kept private)."""

    file_id: str
    filename: str
    title: str
    content: bytes
    mimetype: str
    channel: str | None
    thread_ts: str | None
    initial_comment: str | None
    permalink: str
    share_ts: str | None  # ts of the message that shares the file (None when private)


@dataclass
class _PendingUpload:
    file_id: str
    filename: str
    length: int
    alt_txt: str | None
    snippet_type: str | None
    content: bytes | None = None  # None until the bytes are POSTed to the upload URL
    completed: bool = False


SIGN_IN_PAGE = (
    '<!DOCTYPE html><html lang="en"><head><title>Slack</title></head>'
    '<body><h1>Sign in to Fake Team</h1><form action="/signin"></form></body></html>'
)


@dataclass(frozen=True)
class Status:
    channel: str
    thread_ts: str
    status: str
    loading_messages: list[str] | None
    at: float


@dataclass
class _Failure:
    error: str
    status: int
    retry_after: int | None
    remaining: int


class SlackError(Exception):
    """Raised inside a method handler; becomes ``{"ok": false, "error": ...}``."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


def _too_long(text: object, limit: int) -> bool:
    return isinstance(text, str) and len(text) > limit


def _text_of(obj: object) -> object:
    return obj.get("text") if isinstance(obj, dict) else None


def _over(limit: int, pointer: str) -> str:
    return f"[ERROR] must be less than {limit + 1} characters [json-pointer:{pointer}]"


def _view_problems(view: JsonDict) -> list[str]:
    """The Block Kit limits a view breaks (private_metadata, input blocks, plain_text_input elements)."""
    problems: list[str] = []
    if _too_long(view.get("private_metadata"), PRIVATE_METADATA_LIMIT):
        problems.append(_over(PRIVATE_METADATA_LIMIT, "/view/private_metadata"))
    blocks = view.get("blocks")
    for i, block in enumerate(blocks if isinstance(blocks, list) else []):
        if not isinstance(block, dict):
            continue
        at = f"/view/blocks/{i}"
        if _too_long(block.get("block_id"), BLOCK_ID_LIMIT):
            problems.append(_over(BLOCK_ID_LIMIT, f"{at}/block_id"))
        if block.get("type") == "input":
            for field in ("label", "hint"):
                if _too_long(_text_of(block.get(field)), INPUT_LABEL_LIMIT):
                    problems.append(_over(INPUT_LABEL_LIMIT, f"{at}/{field}/text"))
        element = block.get("element")
        if isinstance(element, dict) and element.get("type") == "plain_text_input":
            problems += _text_input_problems(element, f"{at}/element")
    return problems


def _text_input_problems(element: JsonDict, at: str) -> list[str]:
    problems: list[str] = []
    if _too_long(element.get("action_id"), ACTION_ID_LIMIT):
        problems.append(_over(ACTION_ID_LIMIT, f"{at}/action_id"))
    if _too_long(_text_of(element.get("placeholder")), PLACEHOLDER_LIMIT):
        problems.append(_over(PLACEHOLDER_LIMIT, f"{at}/placeholder/text"))
    low, high = element.get("min_length"), element.get("max_length")
    for name, value, least in (("min_length", low, 0), ("max_length", high, 1)):
        if value is not None and not (
            isinstance(value, int) and not isinstance(value, bool) and least <= value <= TEXT_INPUT_LIMIT
        ):
            problems.append(
                f"[ERROR] must be between {least} and {TEXT_INPUT_LIMIT} [json-pointer:{at}/{name}]"
            )
    # Not in the field table, the fake's choice: a box whose bounds contradict each other, or whose
    # initial_value is longer than it accepts (the user could never submit it unchanged), is refused.
    if isinstance(low, int) and isinstance(high, int) and low > high:
        problems.append(f"[ERROR] min_length must not exceed max_length [json-pointer:{at}/min_length]")
    initial = element.get("initial_value")
    if initial is not None and not isinstance(initial, str):
        problems.append(f"[ERROR] expected a string [json-pointer:{at}/initial_value]")
    most = high if isinstance(high, int) and not isinstance(high, bool) else TEXT_INPUT_LIMIT
    if _too_long(initial, most):
        problems.append(_over(most, f"{at}/initial_value"))
    return problems


def _message_block_problems(blocks: list[JsonDict]) -> list[str]:
    """The Block Kit limits a message's blocks break (context_actions and feedback_buttons, see above)."""
    problems: list[str] = []
    for i, block in enumerate(blocks):
        at = f"/blocks/{i}"
        elements = block.get("elements")
        if block.get("type") == "section" and _too_long(_text_of(block.get("text")), SECTION_TEXT_LIMIT):
            problems.append(_over(SECTION_TEXT_LIMIT, f"{at}/text/text"))
        if block.get("type") == "actions":
            problems += _actions_problems(block, at)
        if block.get("type") != "context_actions":
            # A feedback_buttons element anywhere else (an actions block's elements, say) is refused.
            for j, element in enumerate(elements if isinstance(elements, list) else []):
                if isinstance(element, dict) and element.get("type") == "feedback_buttons":
                    problems.append(
                        f"[ERROR] feedback_buttons only in context_actions [json-pointer:{at}/elements/{j}]"
                    )
            continue
        if _too_long(block.get("block_id"), BLOCK_ID_LIMIT):
            problems.append(_over(BLOCK_ID_LIMIT, f"{at}/block_id"))
        if not isinstance(elements, list) or not 1 <= len(elements) <= CONTEXT_ACTIONS_MAX_ELEMENTS:
            problems.append(
                f"[ERROR] must have 1 to {CONTEXT_ACTIONS_MAX_ELEMENTS} items [json-pointer:{at}/elements]"
            )
            continue
        for j, element in enumerate(elements):
            where = f"{at}/elements/{j}"
            if not isinstance(element, dict) or element.get("type") not in CONTEXT_ACTIONS_ELEMENTS:
                problems.append(f"[ERROR] must be feedback_buttons or icon_button [json-pointer:{where}]")
            elif element["type"] == "feedback_buttons":
                problems += _feedback_problems(element, where)
    return problems


def _actions_problems(block: JsonDict, at: str) -> list[str]:
    problems: list[str] = []
    if _too_long(block.get("block_id"), BLOCK_ID_LIMIT):
        problems.append(_over(BLOCK_ID_LIMIT, f"{at}/block_id"))
    elements = block.get("elements")
    if not isinstance(elements, list) or not 1 <= len(elements) <= ACTIONS_MAX_ELEMENTS:
        problems.append(f"[ERROR] must have 1 to {ACTIONS_MAX_ELEMENTS} items [json-pointer:{at}/elements]")
        return problems
    for j, element in enumerate(elements):
        where = f"{at}/elements/{j}"
        if not isinstance(element, dict) or element.get("type") != "button":
            continue  # other interactive elements: not used by the bot, not checked
        text = element.get("text")
        if not (
            isinstance(text, dict) and text.get("type") == "plain_text" and isinstance(text.get("text"), str)
        ):
            problems.append(f"[ERROR] missing required field: text [json-pointer:{where}/text]")
        elif _too_long(text["text"], BUTTON_TEXT_LIMIT):
            problems.append(_over(BUTTON_TEXT_LIMIT, f"{where}/text/text"))
        if _too_long(element.get("action_id"), ACTION_ID_LIMIT):
            problems.append(_over(ACTION_ID_LIMIT, f"{where}/action_id"))
        if _too_long(element.get("value"), BUTTON_VALUE_LIMIT):
            problems.append(_over(BUTTON_VALUE_LIMIT, f"{where}/value"))
        if "style" in element and element["style"] not in BUTTON_STYLES:
            problems.append(f"[ERROR] must be primary or danger [json-pointer:{where}/style]")
    return problems


def _feedback_problems(element: JsonDict, at: str) -> list[str]:
    problems: list[str] = []
    if _too_long(element.get("action_id"), ACTION_ID_LIMIT):
        problems.append(_over(ACTION_ID_LIMIT, f"{at}/action_id"))
    for name in ("positive_button", "negative_button"):
        button = element.get(name)
        where = f"{at}/{name}"
        if not isinstance(button, dict):
            problems.append(f"[ERROR] missing required field: {name} [json-pointer:{where}]")
            continue
        text = button.get("text")
        if (
            not isinstance(text, dict)
            or text.get("type") != "plain_text"
            or not isinstance(text.get("text"), str)
        ):
            problems.append(f"[ERROR] must be a plain_text object [json-pointer:{where}/text]")
        elif _too_long(text["text"], FEEDBACK_TEXT_LIMIT):
            problems.append(_over(FEEDBACK_TEXT_LIMIT, f"{where}/text/text"))
        value = button.get("value")
        if not isinstance(value, str) or not value:
            problems.append(f"[ERROR] missing required field: value [json-pointer:{where}/value]")
        elif _too_long(value, FEEDBACK_VALUE_LIMIT):
            problems.append(_over(FEEDBACK_VALUE_LIMIT, f"{where}/value"))
        if _too_long(button.get("accessibility_label"), FEEDBACK_LABEL_LIMIT):
            problems.append(_over(FEEDBACK_LABEL_LIMIT, f"{where}/accessibility_label"))
    return problems


def _missing(name: str) -> SlackError:
    # Slack's generic answer to an absent required argument.
    return SlackError(
        "invalid_arguments", response_metadata={"messages": [f"[ERROR] missing required field: {name}"]}
    )


def _deep_merge(base: JsonDict, extra: JsonDict) -> JsonDict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class FakeSlack:
    app_id = "A0APP"
    team_name = "Fake Team"
    team_domain = "fake-team"
    bot_name = "assistant"
    # Class-level so a test can relax one limit on its instance.
    markdown_text_limit = MARKDOWN_TEXT_LIMIT
    update_text_limit = UPDATE_TEXT_LIMIT

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-test-bot-token",
        app_token: str = "xapp-test-app-token",
        team_id: str = "T0TEAM1",
        bot_user_id: str = "U0BOT",
        bot_id: str = "B0BOT",
        rate_limit_scale: float = 1.0,
    ) -> None:
        """`rate_limit_scale` multiplies every rate and burst (reset() returns to it); 1 = Slack's own."""
        self.bot_token = bot_token
        self.app_token = app_token
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self._default_rate_scale = rate_limit_scale
        self._trigger_counter = itertools.count(1)
        self._lock = threading.Lock()
        self._ts_counter = itertools.count(1)  # never reset, so ts stay unique across reset()
        self._sockets: list[web.WebSocketResponse] = []
        self._tickets: set[str] = set()
        self._round_robin = 0
        self._methods: dict[str, Callable[[JsonDict], JsonDict]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.postEphemeral": self._post_ephemeral,
            "chat.update": self._update,
            "chat.delete": self._delete,
            "chat.startStream": self._start_stream,
            "chat.appendStream": self._append_stream,
            "chat.stopStream": self._stop_stream,
            "assistant.threads.setStatus": self._set_status,
            "assistant.threads.setSuggestedPrompts": self._set_suggested_prompts,
            "assistant.threads.setTitle": self._set_title,
            "agents.sessions.setStatus": self._sessions_set_status,
            "agents.sessions.rename": self._sessions_rename,
            "users.info": self._users_info,
            "conversations.info": self._conversations_info,
            "conversations.replies": self._conversations_replies,
            "views.publish": self._views_publish,
            "views.open": self._views_open,
            "views.update": self._views_update,
            "views.push": self._views_push,
            "apps.connections.open": self._connections_open,
            "files.info": self._files_info,
            "files.getUploadURLExternal": self._get_upload_url_external,
            "files.completeUploadExternal": self._complete_upload_external,
            "chat.getPermalink": self._get_permalink,
            "oauth.v2.access": self._oauth_v2_access,
        }
        self._clear_state()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_get("/link/", self._handle_link)
        app.router.add_post("/upload/v1/{token}", self._handle_upload)
        app.router.add_get("/files-pri/{key}/{rest:.+}", self._handle_download)
        app.router.add_post("/commands/{key}", self._handle_response_url)
        app.router.add_get("/oauth/v2/authorize", self._handle_authorize)
        self._server = ServerThread(app)

    def _clear_state(self) -> None:
        self._calls: list[Call] = []
        self._messages: dict[str, Message] = {}  # by ts, in posting order
        self._threads: dict[tuple[str, str | None], list[Message]] = {}  # (channel, thread_ts) -> messages
        self._deleted: list[Message] = []  # removed with chat.delete
        self._ephemerals: list[Message] = []
        self._stream_modes: dict[
            str, str
        ] = {}  # ts -> "markdown_text" | "chunks", fixed by the first content
        self._statuses: list[Status] = []
        self._prompts: list[JsonDict] = []
        self._titles: list[JsonDict] = []
        self._sessions: dict[tuple[str, str], Session] = {}
        self._views: dict[str, JsonDict] = {}
        self._view_log: list[JsonDict] = []
        self._failures: dict[str, list[_Failure]] = {}
        self._expire_after: int | None = None
        self._acks: list[JsonDict] = []
        self._user_overrides: dict[str, JsonDict] = {}
        self._channel_overrides: dict[str, JsonDict] = {}
        self._files: dict[str, JsonDict] = {}
        self._file_bytes: dict[str, bytes] = {}
        self._downloads: list[Download] = []
        self._refusing_downloads = False
        self._redirect_to: str | None = None
        self._held_downloads: set[str] = set()  # file names whose downloads wait (hold_downloads)
        self._holding_all = False
        self._in_flight = 0
        self._peak_in_flight = 0
        self._abandoned: list[str] = []  # names of held downloads whose client hung up
        self._pending_uploads: dict[str, _PendingUpload] = {}  # by upload URL token
        self._uploads: list[Upload] = []
        self._upload_failures: list[int] = []  # HTTP statuses for the next POSTs to an upload URL
        self._clock_offset = 0.0  # advance_clock()
        self._frozen_at: float | None = None  # freeze_clock()
        self._rate_scale: float | None = self._default_rate_scale  # None: no rate limits
        self._rate_overrides: dict[str, tuple[RateLimit, ...]] = {}
        self._buckets: dict[tuple[str, str, int, str | None], _Bucket] = {}
        self._rate_limited: list[RateLimited] = []
        self._stream_lifetime: float | None = STREAM_LIFETIME
        self._triggers: dict[str, float] = {}  # trigger_id -> fake clock when issued
        # response_url key -> (fake clock when issued, the messages posted to it)
        self._response_urls: dict[str, tuple[float, list[JsonDict]]] = {}
        self._exchanged: set[str] = set()
        self._user_messages: set[tuple[str, str, str | None]] = set()  # (channel, ts, thread_ts)
        self._bot_scopes: tuple[str, ...] = manifest_bot_scopes()
        # Tokens of installs made through OAuth (the fake's own bot token is not among them).
        self._tokens: dict[str, TokenInfo] = {}
        self._refresh_tokens: dict[str, TokenInfo] = {}  # refresh token -> the install it refreshes
        self._grants: list[_Grant] = []  # approved on the authorize page, in order
        self._codes: dict[str, _Grant] = {}
        self._oauth_secrets: list[str] = []
        self._current: TokenInfo | None = None  # the token of the call being dispatched
        self._socket_connections = 0  # Socket Mode connections ever accepted (with a valid ticket)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeSlack:
        self._server.start()
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):  # best effort at teardown
            self._server.call(self._close_sockets(), timeout=5)
        self._server.stop()

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def api_url(self) -> str:
        return f"{self._server.base_url}/api/"

    @property
    def socket_url(self) -> str:
        return f"ws://127.0.0.1:{self._server.port}/link/"

    def reset(self) -> None:
        """Forget every recorded call, message, status, ack, scripted failure and expiry policy; rate limits,
        stream lifetime and clock go back to their defaults (a fresh workspace: full buckets)."""
        with self._lock:
            self._clear_state()

    # ------------------------------------------------------------------ state reads (test thread)

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if c.method == method]

    def messages(self, channel: str, thread_ts: str | None = None) -> list[Message]:
        """Bot messages (posts and streams, not ephemerals) in `channel`, oldest first; copies."""
        with self._lock:
            self._expire_old_streams()
            if thread_ts is not None:
                return [copy.deepcopy(m) for m in self._threads.get((channel, thread_ts), [])]
            return [copy.deepcopy(m) for m in self._messages.values() if m.channel == channel]

    def finished(self, channel: str, thread_ts: str) -> int:
        """How many bot messages in the thread are complete (not streaming); cheap enough to poll."""
        with self._lock:
            self._expire_old_streams()
            return sum(1 for m in self._threads.get((channel, thread_ts), []) if not m.streaming)

    def unfinished(self, threads: set[tuple[str, str]]) -> set[tuple[str, str]]:
        """Of these (channel, thread_ts), the threads with no complete bot message yet: one pass for them
        all (a bench polling hundreds of threads would scan every message per thread otherwise)."""
        with self._lock:
            self._expire_old_streams()
            return {t for t in threads if not any(not m.streaming for m in self._threads.get(t, []))}

    def deleted(self, channel: str | None = None) -> list[Message]:
        """Messages removed with chat.delete, in order; copies."""
        with self._lock:
            return [copy.deepcopy(m) for m in self._deleted if channel is None or m.channel == channel]

    def ephemerals(
        self, channel: str, user: str | None = None, *, include_invisible: bool = False
    ) -> list[Message]:
        """Ephemerals the user actually saw (``include_invisible=True``: also those Slack accepted but never
        showed, ``visible=False``: posted into a thread with no replies yet); copies."""
        with self._lock:
            return [
                copy.deepcopy(m)
                for m in self._ephemerals
                if m.channel == channel
                and (user is None or m.user == user)
                and (include_invisible or m.visible)
            ]

    def statuses(self, channel: str | None = None, thread_ts: str | None = None) -> list[Status]:
        """Every assistant.threads.setStatus accepted, in order (an empty status clears it)."""
        with self._lock:
            return [
                s
                for s in self._statuses
                if (channel is None or s.channel == channel)
                and (thread_ts is None or s.thread_ts == thread_ts)
            ]

    def suggested_prompts(self) -> list[JsonDict]:
        with self._lock:
            return copy.deepcopy(self._prompts)

    def titles(self) -> list[JsonDict]:
        with self._lock:
            return copy.deepcopy(self._titles)

    def session(self, channel: str, thread_ts: str) -> Session | None:
        """The agent session of a thread (None: no setStatus created one); a copy."""
        with self._lock:
            found = self._sessions.get((channel, thread_ts))
            return copy.deepcopy(found)

    def stop_session(self, channel: str, thread_ts: str, user: str) -> JsonDict:
        """The user presses the session's stop button: Slack stops the app's streaming messages in the thread
        (further chat.appendStream / chat.stopStream answer `stopped_by_user`, ref chat.appendStream.json:
        "no further appends are accepted") and sends `agent_session_stopped`, returned here for the test to
        deliver. The session's status is left alone: "The session status does not update automatically
        when the user clicks stop" (docs reference/events/agent_session_stopped). The event carries no
        team_id: that is on the envelope only (node-slack-sdk PR #2707)."""
        with self._lock:
            self._expire_old_streams()
            stopped: list[str] = []
            for msg in self._threads.get((channel, thread_ts), []):
                if msg.kind == "stream" and msg.streaming:
                    msg.streaming = False
                    msg.stopped_by_user = True
                    stopped.append(msg.ts)
            event_ts = self._next_ts()
        return {
            "type": "agent_session_stopped",
            "channel": channel,
            "user": user,
            "thread_ts": thread_ts,
            "streaming_message_ts": stopped,
            "event_ts": event_ts,
        }

    def views(self) -> list[JsonDict]:
        """Every view object returned by views.publish/open/update, in call order."""
        with self._lock:
            return copy.deepcopy(self._view_log)

    def live_forms(self, *kinds: str) -> list[LiveForm]:
        """Every live special form (mention, broadcast, link, date...; see `live_forms_in`) in what the
        app sent: each Web API call, whatever Slack answered, and each response_url post; only `kinds` if
        given."""
        with self._lock:
            sent = [(c.method, copy.deepcopy(c.args)) for c in self._calls]
            posts = [body for _, posted in self._response_urls.values() for body in posted]
            sent += [("response_url", copy.deepcopy(body)) for body in posts]
        found = [form for method, args in sent for form in live_forms_in(method, args)]
        return [f for f in found if not kinds or f.kind in kinds]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return
            if time.monotonic() >= deadline:
                raise AssertionError(f"condition not met within {timeout}s\n{self._dump()}")
            time.sleep(interval)

    def _dump(self, last: int = 20) -> str:
        with self._lock:
            calls = self._calls[-last:]
            sockets = len(self._sockets)
            acks = len(self._acks)
        lines = [f"fake Slack: {sockets} socket(s) connected, {acks} ack(s); last {len(calls)} call(s):"]
        for c in calls:
            args = json.dumps(c.args, default=str)
            if len(args) > 300:
                args = args[:300] + "..."
            outcome = "ok" if c.ok else f"error={c.error}"
            lines.append(f"  {c.method} {outcome} args={args}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ scripting (test thread)

    def fail_next(
        self, method: str, error: str, *, times: int = 1, status: int = 200, retry_after: int | None = None
    ) -> None:
        """The next `times` calls to `method` answer ``{"ok": false, "error": error}``.

        With status=429 a Retry-After header is always sent (Slack's rate limiter does; default 1 s).
        """
        with self._lock:
            self._failures.setdefault(method, []).append(_Failure(error, status, retry_after, times))

    def expire_streams(self, after_appends: int | None = 0) -> None:
        """From now on, a stream that already took `after_appends` appends has expired.

        Further chat.appendStream/chat.stopStream on it answer message_not_in_streaming_state, as Slack does
        once a stream times out; chat.update on it then works. The policy also covers streams started later.
        ``None`` switches the policy off again (reset() does too).
        """
        with self._lock:
            self._expire_after = after_appends
            if after_appends is None:
                return
            for msg in self._messages.values():
                if msg.streaming and msg.appends >= after_appends:
                    msg.streaming = False
                    msg.expired = True

    def set_stream_lifetime(self, seconds: float | None) -> None:
        """Streams close this long after chat.startStream (default STREAM_LIFETIME, ~5 min as Slack does;
        None: never). Then appendStream/stopStream answer message_not_in_streaming_state; chat.update works.
        """
        with self._lock:
            self._stream_lifetime = seconds

    def advance_clock(self, seconds: float) -> None:
        """Move the fake's clock on (rate-limit refills, trigger_id and stream expiry) without sleeping."""
        with self._lock:
            self._clock_offset += seconds

    def freeze_clock(self) -> None:
        """Stop the fake's clock where it is (until reset): only `advance_clock` moves it, so a test of a
        limit's arithmetic does not depend on how fast a loaded machine runs it."""
        with self._lock:
            self._frozen_at = time.monotonic()

    def _now(self) -> float:
        base = self._frozen_at if self._frozen_at is not None else time.monotonic()
        return base + self._clock_offset

    # ------------------------------------------------------------------ rate limits (test thread)

    def set_rate_limits(self, *, scale: float = 1.0, enabled: bool = True) -> None:
        """Multiply every rate and burst by `scale` (1 = Slack's figures); ``enabled=False`` lifts them all.
        Buckets start full again. reset() returns to the constructor's ``rate_limit_scale``."""
        with self._lock:
            self._rate_scale = scale if enabled else None
            self._buckets.clear()

    def set_rate_limit(self, method: str, *limits: RateLimit) -> None:
        """Replace `method`'s limits (no limits: unlimited) until reset(); its buckets start full."""
        with self._lock:
            self._rate_overrides[method] = limits
            for key in [k for k in self._buckets if k[1] == method]:
                del self._buckets[key]

    def rate_limited(self, method: str | None = None) -> list[RateLimited]:
        """Every call answered 429 by the rate limiter (not fail_next ones), in order."""
        with self._lock:
            return [r for r in self._rate_limited if method is None or r.method == method]

    # ------------------------------------------------------------------ triggers and user messages

    def new_trigger_id(self) -> str:
        """A trigger_id as Slack mints one for an interaction (slash command, shortcut, button), issued now:
        views.open/views.push accept it once, within TRIGGER_TTL seconds."""
        n = next(self._trigger_counter)
        trigger_id = f"{10_000_000_000 + n}.{self.team_id[1:].lower()}.{secrets.token_hex(16)}"
        self.register_trigger_id(trigger_id)
        return trigger_id

    def new_response_url(self) -> str:
        """A response_url as Slack puts in a slash command or shortcut payload, issued now."""
        key = secrets.token_hex(8)
        with self._lock:
            self._response_urls[key] = (self._now(), [])
        return f"{self._server.base_url}/commands/{key}"

    def responses(self, response_url: str) -> list[JsonDict]:
        """The messages the app posted to `response_url` (accepted ones), in order; copies."""
        key = response_url.rsplit("/", 1)[-1]
        with self._lock:
            return copy.deepcopy(self._response_urls.get(key, (0.0, []))[1])

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        # docs.slack.dev "Handling user interaction": a response_url can be used up to 5 times within 30
        # minutes; past that Slack refuses the message.
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"ok": False, "error": "invalid_payload"}, status=400)
        with self._lock:
            entry = self._response_urls.get(request.match_info["key"])
            if entry is None:
                return web.json_response({"ok": False, "error": "invalid_response_url"}, status=404)
            issued, posted = entry
            if self._now() - issued > RESPONSE_URL_TTL:
                return web.json_response({"ok": False, "error": "expired_url"}, status=404)
            if len(posted) >= RESPONSE_URL_USES:
                return web.json_response({"ok": False, "error": "used_url"}, status=404)
            if not isinstance(body, dict) or not (body.get("text") or body.get("blocks")):
                return web.json_response({"ok": False, "error": "no_text"}, status=400)
            posted.append(body)
        return web.json_response({"ok": True})

    # ------------------------------------------------------------------ OAuth installs (test thread)

    def grant_install(
        self,
        team_id: str | None,
        *,
        enterprise_id: str | None = None,
        team_name: str = "Other Team",
        org_wide: bool = False,
        rotating: bool = False,
        scopes: tuple[str, ...] | None = None,
    ) -> None:
        """The next visit to the authorize page is approved by an admin of `team_id` (or, `org_wide`, of
        the Enterprise Grid org `enterprise_id`), granting `scopes` (default: what the link asks for)."""
        with self._lock:
            self._grants.append(_Grant(team_id, enterprise_id, team_name, org_wide, rotating, scopes or ()))

    @property
    def issued_tokens(self) -> list[TokenInfo]:
        """Every bot token issued through oauth.v2.access (installs and refreshes), oldest first."""
        with self._lock:
            return list(self._tokens.values())

    @property
    def oauth_secrets(self) -> list[str]:
        """Every code, access token and refresh token the OAuth flow handed out: none may reach a log."""
        with self._lock:
            return list(self._oauth_secrets)

    def revoke(self, token: str) -> None:
        with self._lock:
            self._tokens[token].revoked = True

    async def _handle_authorize(self, request: web.Request) -> web.Response:
        """Slack's authorize page, with the admin's "Allow" already clicked (`grant_install`): a redirect to
        the app's redirect URL with a one-time code and the link's state."""
        query = request.query
        with self._lock:
            if query.get("client_id") != CLIENT_ID:
                return web.Response(status=400, text="invalid_client_id")
            scopes = tuple(x for x in query.get("scope", "").split(",") if x)
            if not scopes:
                return web.Response(status=400, text="invalid_scope")  # a bot install asks for scopes
            if not self._grants:
                return web.Response(status=403, text="access_denied")
            grant = self._grants.pop(0)
            grant.scopes = grant.scopes or scopes
            grant.redirect_uri = query.get("redirect_uri")
            # Slack only sends an admin back to one of the app's Redirect URLs (OAuth & Permissions).
            if grant.redirect_uri is not None and grant.redirect_uri != self.oauth_redirect_url:
                self._grants.insert(0, grant)
                return web.Response(status=400, text="bad_redirect_uri")
            grant.code = f"{secrets.randbelow(10**10)}.{secrets.token_hex(16)}"
            grant.issued_at = self._now()
            self._codes[grant.code] = grant
            self._oauth_secrets.append(grant.code)
            target = grant.redirect_uri or self.oauth_redirect_url
        if not target:
            return web.Response(status=400, text="no redirect URL configured for the app")
        location = f"{target}?code={quote(grant.code)}&state={quote(query.get('state', ''))}"
        return web.Response(status=302, headers={"Location": location})

    oauth_redirect_url: str | None = None  # the app's configured Redirect URL (a test sets it)

    def set_bot_scopes(self, *scopes: str) -> None:
        """The scopes the bot token was granted (its `x-oauth-scopes`); reset() restores manifest.yml's."""
        with self._lock:
            self._bot_scopes = tuple(scopes)

    def register_trigger_id(self, trigger_id: str) -> None:
        """Treat `trigger_id` (any string a test put in a payload) as issued now."""
        with self._lock:
            self._triggers[trigger_id] = self._now()
            self._exchanged.discard(trigger_id)

    def user_message(self, channel: str, ts: str, *, thread_ts: str | None = None) -> None:
        """Tell the fake a user posted a message (the fake only sees the bot's own), so a thread with a user
        reply counts as active (ephemeral visibility)."""
        with self._lock:
            self._user_messages.add((channel, ts, thread_ts if thread_ts != ts else None))

    def observe_event(self, event: JsonDict) -> None:
        """Note what an Events API event shows: a user's message or mention becomes a user_message()."""
        if event.get("type") not in ("message", "app_mention") or event.get("subtype"):
            return
        channel, ts, thread_ts = event.get("channel"), event.get("ts"), event.get("thread_ts")
        if isinstance(channel, str) and isinstance(ts, str):
            # A malformed thread_ts (tests send odd payloads) is no thread Slack would know.
            self.user_message(channel, ts, thread_ts=thread_ts if isinstance(thread_ts, str) else None)

    def set_user(self, user_id: str, **fields: Any) -> None:
        """Override fields of the users.info object (deep-merged, e.g. ``tz=..., profile={...}``)."""
        with self._lock:
            self._user_overrides[user_id] = _deep_merge(self._user_overrides.get(user_id, {}), fields)

    def set_channel(self, channel_id: str, **fields: Any) -> None:
        """Override fields of the conversations.info object (e.g. ``user=`` for an IM)."""
        with self._lock:
            self._channel_overrides[channel_id] = _deep_merge(
                self._channel_overrides.get(channel_id, {}), fields
            )

    # ------------------------------------------------------------------ files (test thread)

    def add_file(
        self,
        name: str,
        content: bytes,
        *,
        mimetype: str | None = None,
        filetype: str | None = None,
        user: str = "U0ALICE",
        size: int | None = None,
    ) -> JsonDict:
        """Store a file shared by `user`; returns its file object (a copy, as an event would carry it).

        `mimetype` defaults to the one the name suggests (else application/octet-stream). `size` overrides
        the declared size (a payload may understate it); the bytes served are `content`.
        """
        file_id = "F" + secrets.token_hex(5).upper()
        obj = self._file_json(
            file_id, name, name, len(content) if size is None else size, user, mimetype, filetype, TS_BASE
        )
        with self._lock:
            self._files[file_id] = obj
            self._file_bytes[file_id] = content
        return copy.deepcopy(obj)

    def _file_json(
        self,
        file_id: str,
        name: str,
        title: str,
        size: int,
        user: str,
        mimetype: str | None,
        filetype: str | None,
        created: int,
    ) -> JsonDict:
        base = self._server.base_url
        key = f"{self.team_id}-{file_id}"
        ext = name.rsplit(".", 1)[-1].lower() if "." in name else "text"
        mime = mimetype or mimetypes.guess_type(name)[0] or "application/octet-stream"
        return {
            "id": file_id,
            "created": created,
            "timestamp": created,
            "name": name,
            "title": title,
            "mimetype": mime,
            "filetype": filetype or ext,
            "pretty_type": (filetype or ext).upper(),
            "user": user,
            "user_team": self.team_id,
            "editable": False,
            "size": size,
            "mode": "hosted",
            "is_external": False,
            "external_type": "",
            "is_public": False,
            "public_url_shared": False,
            "display_as_bot": False,
            "username": "",
            "url_private": f"{base}/files-pri/{key}/{quote(name)}",
            "url_private_download": f"{base}/files-pri/{key}/download/{quote(name)}",
            "permalink": f"https://{self.team_domain}.slack.com/files/{user}/{file_id}/{quote(name)}",
            "permalink_public": f"https://slack-files.com/{key}-{secrets.token_hex(5)}",
            "has_rich_preview": False,
            "file_access": "visible",
        }

    @staticmethod
    def connect_stub(file: JsonDict) -> JsonDict:
        """What a Slack Connect message carries instead of the file object: look it up with files.info."""
        return {
            "id": file["id"],
            "mode": "file_access",
            "file_access": "check_file_info",
            "created": 0,
            "timestamp": 0,
            "user": "",
        }

    def refuse_downloads(self, refuse: bool = True) -> None:
        """From now on every download answers the sign-in page, even with the right token."""
        with self._lock:
            self._refusing_downloads = refuse

    def redirect_downloads(self, location: str | None) -> None:
        """From now on an authorised download answers `302 Location: <location>` (None: serve again)."""
        with self._lock:
            self._redirect_to = location

    def hold_downloads(self, *names: str) -> None:
        """From now on the downloads of the files with these names (of every file, without names) wait
        until released; one whose client hangs up meanwhile ends there (``abandoned_downloads``)."""
        with self._lock:
            self._held_downloads.update(names)
            self._holding_all = self._holding_all or not names

    def release_downloads(self, *names: str) -> None:
        """Let the held downloads of these files (of every file, without names) go on."""
        with self._lock:
            if names:
                self._held_downloads.difference_update(names)
            else:
                self._held_downloads.clear()
                self._holding_all = False

    @property
    def downloads_in_flight(self) -> int:
        """Download requests being answered right now (held ones included)."""
        with self._lock:
            return self._in_flight

    @property
    def peak_downloads_in_flight(self) -> int:
        """The most download requests that were being answered at once."""
        with self._lock:
            return self._peak_in_flight

    @property
    def abandoned_downloads(self) -> list[str]:
        """The names of held files whose client hung up before they were released."""
        with self._lock:
            return list(self._abandoned)

    @property
    def downloads(self) -> list[Download]:
        with self._lock:
            return list(self._downloads)

    def _held(self, name: str) -> bool:
        with self._lock:
            return self._holding_all or name in self._held_downloads

    async def _handle_download(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
        try:
            return await self._download(request)
        finally:
            with self._lock:
                self._in_flight -= 1

    async def _download(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        file_id = key.split("-", 1)[1] if "-" in key else ""
        header = request.headers.get("Authorization", "")
        with self._lock:
            file = self._files.get(file_id)
        name = str(file["name"]) if file is not None else ""
        while file is not None and self._held(name):
            transport = request.transport
            if transport is None or transport.is_closing():
                with self._lock:
                    self._abandoned.append(name)
                return web.Response(status=499)  # nobody is listening any more
            await asyncio.sleep(0.01)
        with self._lock:
            content = self._file_bytes.get(file_id)
            file = self._files.get(file_id)
            token = header[7:].strip() if header.startswith("Bearer ") else None
            allowed = self._auth_error("files", token) is None and not self._refusing_downloads
            redirect = self._redirect_to if allowed else None
            served = allowed and content is not None and redirect is None
            self._downloads.append(Download(request.path, dict(request.headers), served, time.monotonic()))
        if not allowed:
            return web.Response(text=SIGN_IN_PAGE, content_type="text/html")
        if redirect is not None:
            return web.Response(status=302, headers={"Location": redirect})
        if content is None or file is None:
            return web.Response(status=404, text="Not found")
        return web.Response(body=content, content_type=str(file["mimetype"]))

    # ------------------------------------------------------------------ Socket Mode (test thread)

    def socket_connected(self) -> bool:
        with self._lock:
            return any(not ws.closed for ws in self._sockets)

    @property
    def socket_connections(self) -> int:
        """Socket Mode connections accepted since reset(), open or closed."""
        with self._lock:
            return self._socket_connections

    def wait_socket_connected(self, timeout: float = 10.0) -> None:
        self.wait_for(self.socket_connected, timeout=timeout)

    def socket_send(
        self,
        payload: JsonDict,
        *,
        envelope_type: str = "events_api",
        retry_attempt: int = 0,
        retry_reason: str = "",
    ) -> str:
        """Deliver one envelope to one connected client (round robin, like Slack); returns its envelope_id."""
        if isinstance(payload.get("event"), dict):
            self.observe_event(payload["event"])
        envelope_id = str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "payload": payload,
            "type": envelope_type,
            "accepts_response_payload": envelope_type != "events_api",
            "retry_attempt": retry_attempt,
            "retry_reason": retry_reason,
        }
        self._server.call(self._send_to_one(envelope))
        return envelope_id

    def socket_acks(self) -> list[JsonDict]:
        """Every JSON frame the client(s) sent, normally acks: ``{"envelope_id": ..., maybe "payload"}``."""
        with self._lock:
            return copy.deepcopy(self._acks)

    def wait_socket_ack(self, envelope_id: str, timeout: float = 10.0) -> JsonDict:
        found: list[JsonDict] = []

        def acked() -> bool:
            found[:] = [a for a in self.socket_acks() if a.get("envelope_id") == envelope_id]
            return bool(found)

        self.wait_for(acked, timeout=timeout)
        return found[0]

    def socket_disconnect(self, reason: str = "refresh_requested") -> None:
        """Ask every client to reconnect, as Slack does before recycling a connection."""
        frame = {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-fake"}}
        self._server.call(self._send_to_all(frame))

    def event_payload(self, event: JsonDict, *, event_id: str | None = None) -> JsonDict:
        """Wrap an inner event the way the Events API delivers it inside an events_api envelope."""
        return {
            "token": "fake-verification-token",
            "team_id": self.team_id,
            "context_team_id": self.team_id,
            "api_app_id": self.app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": f"4-fake-{uuid.uuid4().hex[:8]}",
        }

    async def _send_to_one(self, envelope: JsonDict) -> None:
        with self._lock:
            sockets = [ws for ws in self._sockets if not ws.closed]
            start = self._round_robin
            self._round_robin += 1
        for i in range(len(sockets)):
            ws = sockets[(start + i) % len(sockets)]
            try:
                await ws.send_str(json.dumps(envelope))
                return
            except (ConnectionError, RuntimeError):
                continue  # closed under us: try the next connection
        raise AssertionError(f"no Socket Mode client is connected to the fake\n{self._dump()}")

    async def _send_to_all(self, frame: JsonDict) -> None:
        with self._lock:
            sockets = [ws for ws in self._sockets if not ws.closed]
        for ws in sockets:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_str(json.dumps(frame))

    async def _close_sockets(self) -> None:
        with self._lock:
            sockets = list(self._sockets)
        for ws in sockets:
            await ws.close(code=WSCloseCode.GOING_AWAY)

    async def _handle_link(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            known = request.query.get("ticket") in self._tickets
        if not known:
            return web.Response(status=401, text="invalid or missing ticket")
        ws = web.WebSocketResponse(autoping=True)  # answers the SDK's "sdk-ping-pong" pings
        await ws.prepare(request)
        with self._lock:
            self._socket_connections += 1
            count = len(self._sockets) + 1
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": count,
                "debug_info": {
                    "host": "applink-fake",
                    "build_number": 1,
                    "approximate_connection_time": 18060,
                },
                "connection_info": {"app_id": self.app_id},
            }
        )
        # Registered only after hello, so no envelope can overtake it.
        with self._lock:
            self._sockets.append(ws)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    frame = json.loads(msg.data)
                except ValueError:
                    continue
                if isinstance(frame, dict):
                    with self._lock:
                        self._acks.append(frame)
        finally:
            with self._lock:
                if ws in self._sockets:
                    self._sockets.remove(ws)
        return ws

    # ------------------------------------------------------------------ Web API plumbing

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        at = time.monotonic()
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else None
        try:
            args, body_token = await self._read_args(request)
            malformed = False
        except ValueError:  # a body that is neither a form nor a JSON object
            args, body_token, malformed = {}, None, True
        token = token or body_token
        if header.lower().startswith("basic "):  # oauth.v2.access: client id and secret as Basic auth
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                client_id, _, client_secret = base64.b64decode(header[6:].strip()).decode().partition(":")
                args.setdefault("client_id", client_id)
                args.setdefault("client_secret", client_secret)
        status: int
        headers: dict[str, str]
        body: JsonDict
        with self._lock:
            if malformed:
                status, headers, body = 200, {}, {"ok": False, "error": "invalid_form_data"}
            else:
                status, headers, body = self._dispatch(method, args, token)
                headers = {**headers, **self._scope_header(token)}
            error = body.get("error")
            self._calls.append(Call(method, args, token, body.get("ok") is True, error and str(error), at))
        return web.json_response(body, status=status, headers=headers)

    @staticmethod
    async def _read_args(request: web.Request) -> tuple[JsonDict, str | None]:
        args: JsonDict = dict(request.query)
        token: str | None = args.pop("token", None)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                raw = await request.text()
                data = json.loads(raw) if raw.strip() else {}
                if not isinstance(data, dict):
                    raise ValueError("JSON body must be an object")
                data.pop(
                    "token", None
                )  # Slack reads a JSON request's token only from the Authorization header
                args.update(data)
            else:
                form = await request.post()
                args.update({k: v for k, v in form.items() if isinstance(v, str)})
                token = args.pop("token", None) or token
        for key in JSON_ARGS:
            value = args.get(key)
            if isinstance(value, str) and value[:1] in ("[", "{"):
                # Malformed JSON stays a string; the method then rejects it.
                with contextlib.suppress(ValueError):
                    args[key] = json.loads(value)
        return args, token

    def _dispatch(
        self, method: str, args: JsonDict, token: str | None
    ) -> tuple[int, dict[str, str], JsonDict]:
        handler = self._methods.get(method)
        if handler is None:
            return 200, {}, {"ok": False, "error": "unknown_method", "req_method": method}
        self._current = self._token_info(token)
        auth_error = None if method in NO_TOKEN_METHODS else self._auth_error(method, token)
        if auth_error is not None:
            return 200, {}, {"ok": False, "error": auth_error}
        limited = self._take_rate_token(method, args)
        if limited is not None:
            self._rate_limited.append(limited)
            return 429, {"Retry-After": str(limited.retry_after)}, {"ok": False, "error": "ratelimited"}
        failure = self._take_failure(method)
        if failure is not None:
            headers: dict[str, str] = {}
            if failure.status == 429 or failure.retry_after is not None:
                headers["Retry-After"] = str(failure.retry_after if failure.retry_after is not None else 1)
            return failure.status, headers, {"ok": False, "error": failure.error}
        try:
            return 200, {}, {"ok": True, **handler(args)}
        except SlackError as e:
            return 200, {}, {"ok": False, "error": e.error, **e.extra}

    def _token_info(self, token: str | None) -> TokenInfo | None:
        """The install a bot token belongs to: the fake's own workspace, or one installed with OAuth."""
        if token == self.bot_token:
            return TokenInfo(
                token, self.team_id, None, self.bot_user_id, self.bot_id, self._bot_scopes, self.team_name
            )
        return self._tokens.get(token or "")

    def _scope_header(self, token: str | None) -> dict[str, str]:
        """`x-oauth-scopes` for a token the workspace knows (none for a token Slack does not accept)."""
        info = self._token_info(token)
        scopes = info.scopes if info is not None else APP_TOKEN_SCOPES if token == self.app_token else None
        return {} if scopes is None else {"x-oauth-scopes": ",".join(scopes)}

    def _auth_error(self, method: str, token: str | None) -> str | None:
        if not token:
            return "not_authed"
        info = self._token_info(token)
        if method == "apps.connections.open":
            if token == self.app_token:
                return None
            return "not_allowed_token_type" if info is not None else "invalid_auth"
        if info is None:
            # A valid token, but of the wrong kind for this method.
            return "not_allowed_token_type" if token == self.app_token else "invalid_auth"
        if info.revoked:
            return "token_revoked"
        if info.expires_at is not None and self._now() >= info.expires_at:
            return "token_expired"
        return None

    def _take_rate_token(self, method: str, args: JsonDict) -> RateLimited | None:
        """Take one token from each of the method's buckets, or none at all and say when to retry."""
        scale = self._rate_scale
        limits = self._rate_overrides.get(method, RATE_LIMITS.get(method, ()))
        if scale is None or not limits:
            return None
        now = self._now()
        # Limits are per workspace: the one the call's token belongs to.
        current = self._current
        team = (current.team_id or current.enterprise_id) if current is not None else self.team_id
        channel = args.get("channel") or args.get("channel_id")
        channel = channel if isinstance(channel, str) else None
        buckets: list[_Bucket] = []
        wait, wait_channel = 0.0, None
        for i, limit in enumerate(limits):
            key_channel = channel if limit.per_channel else None
            rate = limit.per_minute * scale / 60.0  # tokens per second
            burst = max(limit.burst * scale, 1.0)
            bucket = self._buckets.setdefault((team, method, i, key_channel), _Bucket(burst, now))
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            buckets.append(bucket)
            if bucket.tokens < 1.0:
                needed = (1.0 - bucket.tokens) / rate
                if needed > wait:
                    wait, wait_channel = needed, key_channel
        if wait > 0:
            # slack_sdk's retry handler sleeps int(Retry-After) (+ jitter): round up so a token is there then.
            return RateLimited(method, wait_channel, max(1, math.ceil(wait - 1e-9)), time.monotonic())
        for bucket in buckets:
            bucket.tokens -= 1.0
        return None

    def _take_failure(self, method: str) -> _Failure | None:
        queue = self._failures.get(method)
        if not queue:
            return None
        failure = queue[0]
        failure.remaining -= 1
        if failure.remaining <= 0:
            queue.pop(0)
        return failure

    def _next_ts(self) -> str:
        n = next(self._ts_counter)
        return f"{TS_BASE + n}.{n:06d}"

    # ------------------------------------------------------------------ argument checks

    @staticmethod
    def _channel(args: JsonDict, key: str = "channel") -> str:
        value = args.get(key)
        if not isinstance(value, str) or not CHANNEL_RE.fullmatch(value):
            raise SlackError("channel_not_found")
        return value

    @staticmethod
    def _required(args: JsonDict, key: str) -> str:
        value = args.get(key)
        if value is None or value == "":
            raise _missing(key)
        return str(value)

    @staticmethod
    def _blocks(args: JsonDict, *, too_many: str = "invalid_blocks") -> list[JsonDict] | None:
        blocks = args.get("blocks")
        if blocks is None:
            return None
        if not isinstance(blocks, list) or not all(
            isinstance(b, dict) and isinstance(b.get("type"), str) for b in blocks
        ):
            raise SlackError("invalid_blocks_format" if isinstance(blocks, str) else "invalid_blocks")
        if len(blocks) > MAX_BLOCKS:
            raise SlackError(
                too_many,
                response_metadata={
                    "messages": ["[ERROR] no more than 50 items allowed [json-pointer:/blocks]"]
                },
            )
        problems = _message_block_problems(blocks)
        if problems:
            raise SlackError("invalid_blocks", response_metadata={"messages": problems})
        return copy.deepcopy(blocks)

    @staticmethod
    def _chunks(args: JsonDict) -> list[JsonDict] | None:
        chunks = args.get("chunks")
        if chunks is None:
            return None
        if not isinstance(chunks, list):
            raise SlackError("invalid_chunks")
        for chunk in chunks:
            if not isinstance(chunk, dict) or chunk.get("type") not in CHUNK_TYPES:
                raise SlackError("invalid_chunks")
            if not FakeSlack._chunk_ok(chunk):
                raise SlackError("invalid_chunks")
        return copy.deepcopy(chunks)

    @staticmethod
    def _chunk_ok(chunk: JsonDict) -> bool:
        """One chunk against its documented shape (see TASK_STATUSES)."""
        kind = chunk["type"]

        def text(key: str, *, required: bool = True) -> bool:
            value = chunk.get(key)
            return (
                (isinstance(value, str) and value != "")
                if required
                else value is None or isinstance(value, str)
            )

        if kind == "markdown_text":
            return isinstance(chunk.get("text"), str)
        if kind == "plan_update":
            return text("title")
        if kind == "blocks":
            blocks = chunk.get("blocks")
            return (
                isinstance(blocks, list)
                and len(blocks) <= MAX_BLOCKS
                and all(isinstance(b, dict) and isinstance(b.get("type"), str) for b in blocks)
            )
        # task_update
        if not (text("id") and text("title") and chunk.get("status") in TASK_STATUSES):
            return False
        if not (text("details", required=False) and text("output", required=False)):
            return False
        sources = chunk.get("sources")
        if sources is None:
            return True
        return isinstance(sources, list) and all(
            isinstance(src, dict)
            and src.get("type") == "url"
            and isinstance(src.get("url"), str)
            and bool(src.get("url"))
            and isinstance(src.get("text"), str)
            and bool(src.get("text"))
            for src in sources
        )

    @staticmethod
    def _chunk_text(chunks: list[JsonDict]) -> str:
        return "".join(c["text"] for c in chunks if c.get("type") == "markdown_text")

    @staticmethod
    def _metadata(args: JsonDict) -> JsonDict | None:
        metadata = args.get("metadata")
        if metadata is None:
            return None
        if not isinstance(metadata, dict):
            raise SlackError("invalid_metadata_format")
        return copy.deepcopy(metadata)

    def _check_markdown(self, text: str | None) -> None:
        # Slack documents the 12,000 limit but not the error it answers; msg_too_long is its "too long" code.
        if text is not None and len(text) > self.markdown_text_limit:
            raise SlackError("msg_too_long")

    def _message_content(self, args: JsonDict) -> tuple[str, list[JsonDict] | None]:
        """Shared text/markdown_text/blocks rules of postMessage, postEphemeral and update."""
        text, markdown = args.get("text"), args.get("markdown_text")
        blocks = self._blocks(args)
        if markdown is not None and (text is not None or blocks is not None):
            raise SlackError("markdown_text_conflict")
        if not (text or markdown or blocks or args.get("attachments") or args.get("file_ids")):
            raise SlackError("no_text")
        self._check_markdown(markdown)
        return str(markdown if markdown is not None else text or ""), blocks

    def _message_json(self, msg: Message) -> JsonDict:
        out: JsonDict = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "team": self.team_id,
            "text": msg.text,
            "ts": msg.ts,
            "blocks": copy.deepcopy(msg.blocks),
        }
        if msg.thread_ts:
            out["thread_ts"] = msg.thread_ts
        if msg.metadata is not None:
            out["metadata"] = copy.deepcopy(msg.metadata)
        return out

    # ------------------------------------------------------------------ methods (called under the lock)

    def _auth_test(self, args: JsonDict) -> JsonDict:
        info = self._current
        assert info is not None  # auth.test needs a token the fake knows
        answer: JsonDict = {
            "url": f"https://{self.team_domain}.slack.com/",
            "team": info.team_name,
            "user": self.bot_name,
            "team_id": info.team_id or info.enterprise_id,
            "user_id": info.bot_user_id,
            "bot_id": info.bot_id,
            "is_enterprise_install": info.is_enterprise_install,
        }
        if info.enterprise_id is not None:
            answer["enterprise_id"] = info.enterprise_id
        return answer

    def _oauth_v2_access(self, args: JsonDict) -> JsonDict:
        if args.get("client_id") != CLIENT_ID:
            raise SlackError("invalid_client_id")
        if args.get("client_secret") != CLIENT_SECRET:
            raise SlackError("bad_client_secret")
        grant_type = args.get("grant_type") or "authorization_code"
        if grant_type == "refresh_token":
            return self._refresh(args)
        if grant_type != "authorization_code":
            raise SlackError("invalid_grant_type")
        grant = self._codes.pop(str(args.get("code") or ""), None)
        if grant is None or self._now() - grant.issued_at > OAUTH_CODE_TTL:
            raise SlackError("invalid_code")
        if grant.redirect_uri is not None and args.get("redirect_uri") != grant.redirect_uri:
            raise SlackError("bad_redirect_uri")
        n = len(self._tokens) + 1
        info = TokenInfo(
            token="",
            team_id=None if grant.is_enterprise_install else grant.team_id,
            enterprise_id=grant.enterprise_id,
            bot_user_id=f"U0BOT{n:03d}",
            bot_id=f"B0BOT{n:03d}",
            scopes=grant.scopes,
            team_name=grant.team_name,
            is_enterprise_install=grant.is_enterprise_install,
        )
        return {**self._issue(info, rotating=grant.rotating), "authed_user": {"id": "U0INSTALLER"}}

    def _refresh(self, args: JsonDict) -> JsonDict:
        # A refresh token works once: "the refresh token is then revoked" once exchanged
        # (api.slack.com/authentication/rotation), so two replicas spending the same one can't both win.
        install = self._refresh_tokens.pop(str(args.get("refresh_token") or ""), None)
        if install is None:
            raise SlackError("invalid_refresh_token")
        return self._issue(install, rotating=True)

    def _issue(self, install: TokenInfo, *, rotating: bool) -> JsonDict:
        """A new bot token for `install` (a rotating one with its refresh token), in oauth.v2.access's
        shape (the method reference's sample responses)."""
        prefix = "xoxe.xoxb-1-" if rotating else "xoxb-"
        team = install.team_id or install.enterprise_id or "-"
        token = f"{prefix}{team}-{secrets.token_hex(12)}"
        info = TokenInfo(
            token,
            install.team_id,
            install.enterprise_id,
            install.bot_user_id,
            install.bot_id,
            install.scopes,
            install.team_name,
            install.is_enterprise_install,
            expires_at=self._now() + ROTATING_TOKEN_LIFETIME * self.token_lifetime_scale
            if rotating
            else None,
        )
        self._tokens[token] = info
        self._oauth_secrets.append(token)
        answer: JsonDict = {
            "access_token": token,
            "token_type": "bot",
            "scope": ",".join(install.scopes),
            "bot_user_id": install.bot_user_id,
            "app_id": self.app_id,
            "team": None if install.team_id is None else {"id": install.team_id, "name": install.team_name},
            "enterprise": None
            if install.enterprise_id is None
            else {"id": install.enterprise_id, "name": "Fake Org"},
            "is_enterprise_install": install.is_enterprise_install,
        }
        if rotating:
            refresh = f"xoxe-1-{secrets.token_hex(16)}"
            self._refresh_tokens[refresh] = info
            self._oauth_secrets.append(refresh)
            answer["refresh_token"] = refresh
            answer["expires_in"] = int(ROTATING_TOKEN_LIFETIME * self.token_lifetime_scale)
        return answer

    # A test shortens rotating tokens' lives (1 = Slack's 12 hours).
    token_lifetime_scale: float = 1.0

    def _post_message(self, args: JsonDict) -> JsonDict:
        channel = self._channel(args)
        text, blocks = self._message_content(args)
        msg = Message(
            ts=self._next_ts(),
            channel=channel,
            thread_ts=args.get("thread_ts") or None,
            text=text,
            streaming=False,
            blocks=blocks or [],
            kind="post",
            metadata=self._metadata(args),
        )
        self._add_message(msg)
        return {"channel": channel, "ts": msg.ts, "message": self._message_json(msg)}

    def _post_ephemeral(self, args: JsonDict) -> JsonDict:
        channel = self._channel(args)
        user = self._required(args, "user")
        text, blocks = self._message_content(args)
        msg = Message(
            ts=self._next_ts(),
            channel=channel,
            thread_ts=args.get("thread_ts") or None,
            text=text,
            streaming=False,
            blocks=blocks or [],
            kind="ephemeral",
            user=user,
        )
        # docs.slack.dev/reference/methods/chat.postEphemeral, thread_ts: "Ephemeral messages in threads are
        # only shown if there is already an active thread." Slack still answers ok: the user never sees it.
        # A thread is active once it has a reply besides its parent (the fake knows the bot's messages and
        # the users' ones a test reported: user_message(), observe_event()).
        if msg.thread_ts is not None:
            msg.visible = self._has_replies(channel, msg.thread_ts)
        self._ephemerals.append(msg)
        return {"message_ts": msg.ts}

    def _has_replies(self, channel: str, thread_ts: str) -> bool:
        if any(m.ts != thread_ts for m in self._threads.get((channel, thread_ts), [])):
            return True
        return any(c == channel and t == thread_ts and ts != thread_ts for c, ts, t in self._user_messages)

    def _expire_old_streams(self) -> None:
        if self._stream_lifetime is None:
            return
        deadline = self._now() - self._stream_lifetime
        for msg in self._messages.values():
            if msg.streaming and msg.started <= deadline:
                msg.streaming = False
                msg.expired = True

    def _find(self, channel: str, ts: str) -> Message:
        msg = self._messages.get(ts)
        if msg is None or msg.channel != channel:
            raise SlackError("message_not_found")
        return msg

    def _update(self, args: JsonDict) -> JsonDict:
        channel = self._channel(args)
        msg = self._find(channel, self._required(args, "ts"))
        self._expire_old_streams()
        # chat.update errors: "streaming_state_conflict: The message is currently streaming text and cannot be
        # edited" (docs.slack.dev/reference/methods/chat.update).
        if msg.streaming:
            raise SlackError("streaming_state_conflict")
        text, blocks = self._message_content(args)
        if isinstance(args.get("text"), str) and len(args["text"]) > self.update_text_limit:
            raise SlackError("msg_too_long")
        has_text = args.get("text") is not None or args.get("markdown_text") is not None
        metadata = self._metadata(args)
        if has_text:
            msg.text = text
        # Slack keeps the old blocks only when neither blocks nor text is given.
        if blocks is not None:
            msg.blocks = blocks
        elif has_text:
            msg.blocks = []
        if metadata is not None:
            msg.metadata = metadata
        msg.updates += 1
        return {"channel": channel, "ts": msg.ts, "text": msg.text, "message": self._message_json(msg)}

    def _add_message(self, msg: Message) -> None:
        self._messages[msg.ts] = msg
        self._threads.setdefault((msg.channel, msg.thread_ts), []).append(msg)

    def _delete(self, args: JsonDict) -> JsonDict:
        # The bot may delete its own messages (chat:write), streaming or not; they are gone from the thread.
        channel = self._channel(args)
        msg = self._find(channel, self._required(args, "ts"))
        del self._messages[msg.ts]
        self._threads[(msg.channel, msg.thread_ts)].remove(msg)
        self._deleted.append(msg)
        return {"channel": channel, "ts": msg.ts}

    def _start_stream(self, args: JsonDict) -> JsonDict:
        channel = self._channel(args)
        thread_ts = self._required(args, "thread_ts")
        if channel[0] != "D":  # "Required when streaming to channels."
            if not args.get("recipient_team_id"):
                raise SlackError("missing_recipient_team_id")
            if not args.get("recipient_user_id"):
                raise SlackError("missing_recipient_user_id")
        markdown = args.get("markdown_text") or None
        chunks = self._chunks(args) or []
        if markdown and chunks:
            raise SlackError("cannot_provide_both_markdown_text_and_chunks")
        mode = args.get("task_display_mode")
        if mode is not None and mode not in TASK_DISPLAY_MODES:
            raise SlackError("invalid_arguments")
        self._check_markdown(markdown)
        self._check_markdown(self._chunk_text(chunks))
        msg = Message(
            ts=self._next_ts(),
            channel=channel,
            thread_ts=thread_ts,
            text=(markdown or "") + self._chunk_text(chunks),
            streaming=True,
            blocks=[],
            kind="stream",
            chunks=chunks,
            started=self._now(),
            task_display_mode=mode,
        )
        self._add_message(msg)
        if markdown or chunks:
            self._stream_modes[msg.ts] = "markdown_text" if markdown else "chunks"
        return {"channel": channel, "ts": msg.ts}

    def _open_stream(self, args: JsonDict) -> Message:
        msg = self._find(self._channel(args), self._required(args, "ts"))
        self._expire_old_streams()
        if msg.stopped_by_user:
            # The stop button ended it (stop_session); whether chat.stopStream is accepted afterwards is
            # undocumented: this fake refuses it too, so the app must end the message another way.
            raise SlackError("stopped_by_user")
        if msg.kind != "stream" or not msg.streaming:
            raise SlackError("message_not_in_streaming_state")
        if self._expire_after is not None and msg.appends >= self._expire_after:
            msg.streaming = False
            msg.expired = True
            raise SlackError("message_not_in_streaming_state")
        return msg

    def _stream_content(
        self, msg: Message, args: JsonDict, *, required: bool
    ) -> tuple[str, list[JsonDict], str | None]:
        markdown = args.get("markdown_text") or None
        chunks = self._chunks(args) or []
        if markdown and chunks:
            raise SlackError("cannot_provide_both_markdown_text_and_chunks")
        if required and not (markdown or chunks):
            raise SlackError("markdown_text_or_chunks_required")
        mode = "markdown_text" if markdown else "chunks" if chunks else None
        started = self._stream_modes.get(msg.ts)
        if mode and started and mode != started:
            raise SlackError("streaming_mode_mismatch")  # a stream keeps the mode it started with
        text = markdown or self._chunk_text(chunks)
        self._check_markdown(text)
        return text, chunks, mode

    def _apply_stream_content(
        self, msg: Message, text: str, chunks: list[JsonDict], mode: str | None
    ) -> None:
        msg.text += text
        msg.chunks.extend(chunks)
        if mode:
            self._stream_modes.setdefault(msg.ts, mode)

    def _append_stream(self, args: JsonDict) -> JsonDict:
        msg = self._open_stream(args)
        text, chunks, mode = self._stream_content(msg, args, required=True)
        self._apply_stream_content(msg, text, chunks, mode)
        msg.appends += 1
        return {"channel": msg.channel, "ts": msg.ts}

    def _stop_stream(self, args: JsonDict) -> JsonDict:
        msg = self._open_stream(args)
        text, chunks, mode = self._stream_content(msg, args, required=False)
        blocks = self._blocks(args, too_many="msg_blocks_too_many")
        metadata = self._metadata(args)
        self._apply_stream_content(msg, text, chunks, mode)
        if blocks is not None:
            msg.blocks = blocks
        if metadata is not None:
            msg.metadata = metadata
        msg.streaming = False
        return {"channel": msg.channel, "ts": msg.ts, "message": self._message_json(msg)}

    def _set_status(self, args: JsonDict) -> JsonDict:
        channel = self._channel(args, "channel_id")
        thread_ts = self._required(args, "thread_ts")
        if "status" not in args:  # "" is valid: it clears the status
            raise _missing("status")
        loading = args.get("loading_messages")
        if loading is not None and (
            not isinstance(loading, list)
            or len(loading) > MAX_LOADING_MESSAGES
            or not all(isinstance(m, str) for m in loading)
        ):
            raise SlackError("invalid_arguments")
        self._statuses.append(Status(channel, thread_ts, str(args["status"]), loading, time.monotonic()))
        return {}

    def _session_key(self, args: JsonDict) -> tuple[str, str]:
        channel = self._channel(args, "channel_id")
        thread_ts = args.get("thread_ts")
        # "Required for thread-based sessions in regular channels and DMs" (this fake has no session
        # channels, so it is always required).
        if not isinstance(thread_ts, str) or not thread_ts:
            raise SlackError("thread_ts_required")
        return channel, thread_ts

    def _sessions_set_status(self, args: JsonDict) -> JsonDict:
        key = self._session_key(args)
        status = args.get("status")
        if status is None:
            raise _missing("status")
        if status not in SESSION_STATUSES:
            raise SlackError(
                "invalid_arguments",
                response_metadata={"messages": ["[ERROR] must be a valid enum value [json-pointer:/status]"]},
            )
        title = args.get("title")
        if title is not None and (not isinstance(title, str) or len(title) > SESSION_TITLE_LIMIT):
            raise SlackError("invalid_arguments", response_metadata={"messages": [_over(200, "/title")]})
        initiator = args.get("initiator_user_id")
        if initiator is not None and (not isinstance(initiator, str) or not USER_RE.fullmatch(initiator)):
            raise SlackError("user_not_found")
        if any(args.get(k) is not None for k in ("icon_emoji", "icon_url", "username")):
            scopes = self._current.scopes if self._current is not None else ()
            if "chat:write.customize" not in scopes:
                raise SlackError("missing_scope", needed="chat:write.customize")
        session = self._sessions.get(key)
        if session is None:
            # "title: Only used when creating a new session; ignored if the session already exists."
            session = Session(key[0], key[1], str(status), title or None, initiator)
            self._sessions[key] = session
        session.status = str(status)
        session.statuses.append(session.status)
        out: JsonDict = {"status": session.status, "agent_status": session.status}
        if session.title:
            out["title"] = session.title
        if "agent_session_stopped" not in manifest_bot_events():
            out["warning"] = "missing_agent_session_stopped_event_subscription"
        return out

    def _sessions_rename(self, args: JsonDict) -> JsonDict:
        key = self._session_key(args)
        title = args.get("title")
        if title is None:
            raise _missing("title")
        if not isinstance(title, str) or not 1 <= len(title) <= SESSION_TITLE_LIMIT:
            raise SlackError("invalid_name")
        session = self._sessions.get(key)
        if session is None:
            raise SlackError("session_not_found")
        session.title = title
        session.renames.append(title)
        return {"title": title}

    def _set_suggested_prompts(self, args: JsonDict) -> JsonDict:
        channel = self._channel(args, "channel_id")
        prompts = args.get("prompts")
        if prompts is None:
            raise _missing("prompts")
        if not isinstance(prompts, list) or not all(
            isinstance(p, dict) and isinstance(p.get("title"), str) and isinstance(p.get("message"), str)
            for p in prompts
        ):
            raise SlackError("invalid_arguments")
        self._prompts.append(
            {
                "channel_id": channel,
                "thread_ts": args.get("thread_ts"),
                "title": args.get("title"),
                "prompts": prompts,
            }
        )
        return {}

    def _set_title(self, args: JsonDict) -> JsonDict:
        channel = self._channel(args, "channel_id")
        thread_ts = self._required(args, "thread_ts")
        title = self._required(args, "title")
        self._titles.append({"channel_id": channel, "thread_ts": thread_ts, "title": title})
        return {}

    def _users_info(self, args: JsonDict) -> JsonDict:
        user_id = args.get("user")
        if not isinstance(user_id, str) or not USER_RE.fullmatch(user_id):
            raise SlackError("user_not_found")
        is_bot = user_id == self.bot_user_id
        name = self.bot_name if is_bot else f"user.{user_id.lower()}"
        real_name = "Assistant" if is_bot else f"Test User {user_id}"
        user: JsonDict = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "deleted": False,
            "real_name": real_name,
            "tz": "America/New_York",
            "tz_label": "Eastern Standard Time",
            "tz_offset": -18000,
            "profile": {
                "real_name": real_name,
                "real_name_normalized": real_name,
                "display_name": name,
                "display_name_normalized": name,
                "first_name": real_name.split()[0],
                "last_name": real_name.split()[-1],
                "team": self.team_id,
                "image_48": "https://example.com/avatar_48.png",
            },
            # users.info (https://api.slack.com/methods/users.info, the user type's fields): a workspace
            # admin or owner has is_admin / is_owner; guests are is_restricted (multi-channel) or
            # is_ultra_restricted (single-channel). Tests set them with set_user().
            "is_admin": False,
            "is_owner": False,
            "is_primary_owner": False,
            "is_restricted": False,
            "is_ultra_restricted": False,
            "is_bot": is_bot,
            "is_app_user": False,
            "updated": 1_700_000_000,
        }
        return {"user": _deep_merge(user, self._user_overrides.get(user_id, {}))}

    def _conversations_info(self, args: JsonDict) -> JsonDict:
        channel_id = self._channel(args)
        kind = channel_id[0]
        channel: JsonDict = {"id": channel_id, "created": 1_700_000_000, "is_org_shared": False}
        if kind == "D":
            channel |= {
                "is_im": True,
                "is_channel": False,
                "is_group": False,
                "is_mpim": False,
                "is_user_deleted": False,
            }
        else:
            name = f"channel-{channel_id.lower()}"
            channel |= {
                "name": name,
                "name_normalized": name,
                "is_channel": kind == "C",
                "is_group": kind == "G",
                "is_im": False,
                "is_mpim": False,
                "is_private": kind == "G",
                "is_archived": False,
                "is_general": False,
                "is_member": True,
                "is_shared": False,
                "is_ext_shared": False,
            }
        return {"channel": _deep_merge(channel, self._channel_overrides.get(channel_id, {}))}

    def _conversations_replies(self, args: JsonDict) -> JsonDict:
        # Only the bot's own messages are known here (Bolt's default thread-context store reads those).
        channel = self._channel(args)
        ts = self._required(args, "ts")
        thread = [
            self._message_json(m)
            for m in self._messages.values()
            if m.channel == channel and (m.thread_ts == ts or m.ts == ts)
        ]
        return {"messages": thread, "has_more": False}

    def _view_json(self, view_id: str, view: JsonDict) -> JsonDict:
        return {
            "id": view_id,
            "team_id": self.team_id,
            "type": view["type"],
            "blocks": copy.deepcopy(view.get("blocks", [])),
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{uuid.uuid4().hex[:8]}",
            "title": copy.deepcopy(view.get("title")),
            "clear_on_close": bool(view.get("clear_on_close", False)),
            "notify_on_close": bool(view.get("notify_on_close", False)),
            "close": copy.deepcopy(view.get("close")),
            "submit": copy.deepcopy(view.get("submit")),
            "previous_view_id": None,
            "root_view_id": view_id,
            "app_id": self.app_id,
            "external_id": view.get("external_id", ""),
            "app_installed_team_id": self.team_id,
            "bot_id": self.bot_id,
        }

    @staticmethod
    def _view_arg(args: JsonDict) -> JsonDict:
        view = args.get("view")
        if view is None:
            raise _missing("view")
        if not isinstance(view, dict) or not isinstance(view.get("type"), str):
            raise SlackError("invalid_arguments")
        problems = _view_problems(view)
        if problems:
            # Slack's answer to a view that breaks a Block Kit rule: invalid_arguments, one message per
            # problem with a JSON pointer (the wording of each message is the fake's own).
            raise SlackError("invalid_arguments", response_metadata={"messages": problems})
        return view

    def _store_view(self, view_id: str, view: JsonDict) -> JsonDict:
        stored = self._view_json(view_id, view)
        self._views[view_id] = stored
        self._view_log.append(stored)
        return {"view": copy.deepcopy(stored)}

    def _views_publish(self, args: JsonDict) -> JsonDict:
        self._required(args, "user_id")
        view = self._view_arg(args)
        return self._store_view(f"V{uuid.uuid4().hex[:10].upper()}", view)

    def _exchange_trigger(self, args: JsonDict) -> None:
        trigger_id = args.get("trigger_id") or args.get("interactivity_pointer")
        if not trigger_id:
            raise _missing("trigger_id")
        issued = self._triggers.get(str(trigger_id))
        if issued is None:
            raise SlackError("invalid_trigger_id")
        if trigger_id in self._exchanged:
            raise SlackError("exchanged_trigger_id")
        if self._now() - issued > TRIGGER_TTL:
            raise SlackError("expired_trigger_id")
        self._exchanged.add(str(trigger_id))

    def _views_open(self, args: JsonDict) -> JsonDict:
        view = self._view_arg(args)
        self._exchange_trigger(args)
        return self._store_view(f"V{uuid.uuid4().hex[:10].upper()}", view)

    def _views_push(self, args: JsonDict) -> JsonDict:
        # The push stack limit (push_limit_reached, 3 views) is not modelled: the bot never pushes.
        view = self._view_arg(args)
        self._exchange_trigger(args)
        return self._store_view(f"V{uuid.uuid4().hex[:10].upper()}", view)

    def _views_update(self, args: JsonDict) -> JsonDict:
        view = self._view_arg(args)
        view_id, external_id = args.get("view_id"), args.get("external_id")
        if not (view_id or external_id):
            raise _missing("view_id")
        current = self._views.get(view_id) if view_id else None
        if current is None and external_id:
            current = next((v for v in self._views.values() if v["external_id"] == external_id), None)
        if current is None:
            raise SlackError("not_found")
        if args.get("hash") and args["hash"] != current["hash"]:
            raise SlackError("hash_conflict")
        return self._store_view(current["id"], view)

    def _files_info(self, args: JsonDict) -> JsonDict:
        file_id = self._required(args, "file")
        file = self._files.get(file_id)
        if file is None:
            raise SlackError("file_not_found")
        return {"file": copy.deepcopy(file), "comments": [], "response_metadata": {"next_cursor": ""}}

    def _connections_open(self, args: JsonDict) -> JsonDict:
        ticket = str(uuid.uuid4())
        self._tickets.add(ticket)
        return {"url": f"{self.socket_url}?ticket={ticket}&app_id={self.app_id}"}

    # ------------------------------------------------------------------ file uploads
    #
    # files_upload_v2's flow: files.getUploadURLExternal gives an upload URL (on this fake's own host) and a
    # file id; the bytes are POSTed there (raw or multipart, no token: the URL is the credential); then
    # files.completeUploadExternal shares the files. As with Slack, sharing completes asynchronously: the
    # completion answers full file objects whose `shares` and `channels` are still empty, while files.info
    # shows them. The file joins the add_file ones (files.info, token-guarded downloads). The share is not a
    # Message here: read it with uploads(). Undocumented choices: an unknown file id, bytes never uploaded,
    # or a second completion of the same file answer file_not_found.

    def uploads(self, channel: str | None = None, thread_ts: str | None = None) -> list[Upload]:
        """Completed uploads, oldest first; one per channel shared to (``channel=None``: all, private too)."""
        with self._lock:
            return [
                u
                for u in self._uploads
                if (channel is None or u.channel == channel)
                and (thread_ts is None or u.thread_ts == thread_ts)
            ]

    def fail_uploads(self, status: int = 500, *, times: int = 1) -> None:
        """The next `times` POSTs of bytes to an upload URL answer this HTTP status (nothing is stored)."""
        with self._lock:
            self._upload_failures.extend([status] * times)

    def _get_upload_url_external(self, args: JsonDict) -> JsonDict:
        filename = self._required(args, "filename")
        raw_length = self._required(args, "length")
        try:
            length = int(raw_length)
        except ValueError:
            raise SlackError(
                "invalid_arguments",
                response_metadata={"messages": ["[ERROR] invalid integer value for field: length"]},
            ) from None
        if length <= 0:
            # Documented: "Typically only occurs when the length ... is 0".
            raise SlackError("missing_argument")
        alt_txt = args.get("alt_txt") or None
        if alt_txt is not None and len(str(alt_txt)) > 1000:
            raise SlackError("alt_txt_too_large")
        token = uuid.uuid4().hex
        file_id = "F" + secrets.token_hex(5).upper()
        pending = _PendingUpload(file_id, filename, length, alt_txt, args.get("snippet_type") or None)
        self._pending_uploads[token] = pending
        return {"upload_url": f"{self._server.base_url}/upload/v1/{token}", "file_id": file_id}

    async def _handle_upload(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            parts = [v for v in form.values() if isinstance(v, web.FileField)]
            data = parts[0].file.read() if parts else b""
        else:
            data = await request.read()
        with self._lock:
            pending = self._pending_uploads.get(token)
            status = self._upload_failures.pop(0) if self._upload_failures and pending else None
            if pending is not None and status is None:
                pending.content = data
        if pending is None:
            return web.Response(status=404, text="upload URL not found")
        if status is not None:
            return web.Response(status=status, text="upload failed")
        return web.Response(text=f"OK - {len(data)}")

    def _complete_upload_external(self, args: JsonDict) -> JsonDict:
        files = args.get("files")
        if files is None or files == "":
            raise _missing("files")
        if isinstance(files, str):
            try:
                files = json.loads(files)
            except ValueError:
                raise SlackError("invalid_arguments") from None
        if (
            not isinstance(files, list)
            or not files
            or not all(isinstance(f, dict) and f.get("id") for f in files)
        ):
            raise SlackError("invalid_arguments")
        channels = [c for c in str(args.get("channels") or "").split(",") if c]
        if args.get("channel_id"):
            channels.insert(0, str(args["channel_id"]))
        for channel in channels:
            if not CHANNEL_RE.fullmatch(channel):
                raise SlackError("invalid_arguments")  # Slack checks the id's shape before anything else
        thread_ts = args.get("thread_ts") or None
        comment = args.get("initial_comment") or None
        by_id = {p.file_id: p for p in self._pending_uploads.values()}
        pending = [by_id.get(str(f["id"])) for f in files]
        for found in pending:
            if found is None or found.content is None or found.completed:
                raise SlackError("file_not_found")
        share_ts = self._next_ts() if channels else None  # one message shares all the files
        out = []
        for spec, upload in zip(files, pending, strict=True):
            assert upload is not None and upload.content is not None
            title = str(spec.get("title") or upload.filename)
            file = self._file_json(
                upload.file_id,
                upload.filename,
                title,
                len(upload.content),
                self.bot_user_id,
                None,
                None,
                int(time.time()),
            )
            file |= {
                "comments_count": 0,
                "is_starred": False,
                "shares": {},
                "channels": [],
                "groups": [],
                "ims": [],
                "has_more_shares": False,
            }
            out.append(copy.deepcopy(file))  # answered before the (asynchronous) share is visible
            upload.completed = True
            self._file_bytes[upload.file_id] = upload.content
            for channel in channels or [None]:
                if channel is not None:
                    self._share(file, channel, share_ts, thread_ts)
                self._uploads.append(
                    Upload(
                        file_id=upload.file_id,
                        filename=upload.filename,
                        title=title,
                        content=upload.content,
                        mimetype=file["mimetype"],
                        channel=channel,
                        thread_ts=thread_ts if channel is not None else None,
                        initial_comment=comment,
                        permalink=file["permalink"],
                        share_ts=share_ts,
                    )
                )
            self._files[upload.file_id] = file
        return {"files": out}

    def _share(self, file: JsonDict, channel: str, share_ts: str | None, thread_ts: str | None) -> None:
        public = channel[0] == "C"
        share: JsonDict = {
            "ts": share_ts,
            "channel_name": f"channel-{channel.lower()}",
            "team_id": self.team_id,
            "share_user_id": self.bot_user_id,
            "source": "UNKNOWN",
            "reply_users": [],
            "reply_users_count": 0,
            "reply_count": 0,
        }
        if thread_ts:
            share["thread_ts"] = thread_ts
        file["shares"].setdefault("public" if public else "private", {}).setdefault(channel, []).append(share)
        kind = "channels" if public else "ims" if channel[0] == "D" else "groups"
        file[kind].append(channel)
        file["is_public"] = file["is_public"] or public

    def _get_permalink(self, args: JsonDict) -> JsonDict:
        channel = self._channel(args)
        ts = self._required(args, "message_ts")
        if not re.fullmatch(r"\d+\.\d+", ts):
            raise SlackError("message_not_found")
        # The fake only knows the bot's messages; any well-formed ts gets a link (user messages included).
        known = self._messages.get(ts)
        if known is not None and known.channel == channel:
            thread_ts = known.thread_ts
        else:
            thread_ts = next(
                (u.thread_ts for u in self._uploads if u.share_ts == ts and u.channel == channel), None
            )
        link = f"https://{self.team_domain}.slack.com/archives/{channel}/p{ts.replace('.', '')}"
        if thread_ts and thread_ts != ts:
            link += f"?thread_ts={thread_ts}&cid={channel}"
        return {"channel": channel, "permalink": link}
