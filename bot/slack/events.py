"""Pure functions that read Slack event payloads into `bot.models` (no I/O).

Like Bolt's own request predicates, these take plain dicts so they can be tested without a server. They are
total: any JSON value in any field gives a result or None, never an exception. A field of the wrong type is
left out (its default used) with a short warning naming the field, never its value; a malformed file entry
is skipped, not the message.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from bot.models import (
    CommandRequest,
    IncomingMessage,
    MessageAction,
    MessageChange,
    SharedFile,
    UserContext,
    Workspace,
)

log = logging.getLogger(__name__)

# Message subtypes that are still a person talking to the bot; every other subtype (edits, deletions,
# joins, bot messages...) is ignored.
_ANSWERABLE_SUBTYPES = frozenset({None, "file_share", "thread_broadcast"})

_CHANNEL_TYPES = frozenset({"channel", "group", "im", "mpim", "app_home"})
_EMPTY: Mapping[str, Any] = {}


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else _EMPTY


def _text(container: Mapping[str, Any], key: str, where: str) -> str | None:
    """A string field: None when absent, null or empty; a value of another type is dropped, with a warning."""
    value = container.get(key)
    if value is None or isinstance(value, str):
        return value or None
    log.warning("ignored %s.%s of type %s", where, key, type(value).__name__)
    return None


# A view's private_metadata: "Max length of 3000 characters" (docs.slack.dev/reference/views/modal-views).
PRIVATE_METADATA_MAX_CHARS = 3000


def metadata_fields(raw: str, count: int) -> list[Any] | None:
    """The `count` fields of a view's private_metadata as this bot writes them (a JSON list), or None when it
    is not one (forged, cut or stale); the caller checks each field's type."""
    if len(raw) > PRIVATE_METADATA_MAX_CHARS:
        return None
    try:
        fields = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return fields if isinstance(fields, list) and len(fields) == count else None


def parse_files(event: Mapping[str, Any]) -> list[SharedFile]:
    """The files a message event carries (a `file_share` message, or a mention with files). An entry that
    is not a file object (no string id, or fields pydantic can't read) is skipped with a warning."""
    raw = event.get("files")
    if raw is None:
        return []
    if not isinstance(raw, list):
        log.warning("ignored event.files of type %s", type(raw).__name__)
        return []
    files: list[SharedFile] = []
    for number, entry in enumerate(raw):
        file = _shared_file(entry)
        if file is None:
            log.warning("skipped malformed file entry %d of %d", number + 1, len(raw))
        elif file.mode != "tombstone":  # a deleted file stays in the message as a tombstone: nothing to read
            files.append(file)
    return files


def _shared_file(entry: object) -> SharedFile | None:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("id"), str) or not entry["id"]:
        return None
    try:
        return SharedFile.model_validate(entry)
    except ValidationError:
        return None


def workspace_of(body: Mapping[str, Any], context: Mapping[str, Any]) -> Workspace | None:
    """The workspace a request comes from. The first id present decides: one of the wrong type makes the
    request unreadable (None) rather than letting a later field pick another workspace."""
    team = body.get("team")
    team_id = (
        context.get("team_id")
        or body.get("team_id")
        or (team.get("id") if isinstance(team, Mapping) else None)
    )
    enterprise_id = _installing_org(body, context)
    if not isinstance(team_id, str) or not team_id:
        if team_id:
            log.warning("ignored a request whose team id is of type %s", type(team_id).__name__)
        return None
    if enterprise_id is not None and not isinstance(enterprise_id, str):
        log.warning("ignored a request whose enterprise id is of type %s", type(enterprise_id).__name__)
        return None
    return Workspace(team_id=team_id, enterprise_id=enterprise_id)


def _installing_org(body: Mapping[str, Any], context: Mapping[str, Any]) -> object:
    """The Enterprise Grid org of the installation serving the request. On events Slack names it in
    `authorizations[0]` (null: a workspace outside any org installed it), and the envelope's
    `enterprise_id` may be the other side's in a Slack Connect channel, so it is not read there."""
    authorizations = body.get("authorizations")
    if isinstance(authorizations, list) and authorizations and isinstance(authorizations[0], Mapping):
        return authorizations[0].get("enterprise_id") or None
    return context.get("enterprise_id") or body.get("enterprise_id") or None


def _channel_type(
    event: Mapping[str, Any], channel: str
) -> Literal["channel", "group", "im", "mpim", "app_home"]:
    kind = event.get("channel_type")
    if isinstance(kind, str) and kind in _CHANNEL_TYPES:
        return kind  # type: ignore[return-value]
    # app_mention carries no channel_type; the id's first letter tells DMs (D) from channels.
    return "im" if channel.startswith("D") else "channel"


def parse_user_message(
    body: Mapping[str, Any], context: Mapping[str, Any], *, source: str
) -> IncomingMessage | None:
    """The message a person sent, or None when it is not one the bot should answer."""
    event = _mapping(body.get("event"))
    subtype = event.get("subtype")
    if not (subtype is None or isinstance(subtype, str)) or subtype not in _ANSWERABLE_SUBTYPES:
        return None
    if event.get("bot_id") or event.get("bot_profile"):
        return None
    user = _text(event, "user", "event")
    bot_user_id = context.get("bot_user_id")
    if not user or user == bot_user_id:
        return None
    channel, ts = _text(event, "channel", "event"), _text(event, "ts", "event")
    workspace = workspace_of(body, context)
    if not channel or not ts or workspace is None:
        return None
    raw_text = _text(event, "text", "event") or ""
    mentioned = isinstance(bot_user_id, str) and bool(bot_user_id) and f"<@{bot_user_id}>" in raw_text
    return IncomingMessage(
        workspace=workspace,
        event_id=_text(body, "event_id", "body"),
        source="mention" if source == "mention" else "message",
        channel=channel,
        channel_type=_channel_type(event, channel),
        user=user,
        text=clean_text(raw_text, bot_user_id),
        ts=ts,
        thread_ts=_text(event, "thread_ts", "event"),
        mentions_bot=source == "mention" or mentioned,
        files=parse_files(event),
        external=sender_is_external(body, context),
        user_team=_guest_team(event, workspace),
    )


def parse_message_change(body: Mapping[str, Any], context: Mapping[str, Any]) -> MessageChange | None:
    """A person's message edited (`message_changed`) or deleted (`message_deleted`), or None when the event
    is not about a message a person wrote (a bot's, the app's own, or one missing its fields). Shapes: the
    docs' message_changed / message_deleted events: `previous_message` is the message as it was, `message`
    the edited one (its `ts` is the original message's)."""
    event = _mapping(body.get("event"))
    subtype = event.get("subtype")
    if subtype not in ("message_changed", "message_deleted"):
        return None
    before = _mapping(event.get("previous_message"))
    after = _mapping(event.get("message"))
    # A deleted thread parent stays as a tombstone: Slack announces it as a change to subtype "tombstone".
    deleted = subtype == "message_deleted" or after.get("subtype") == "tombstone"
    bot_user_id = context.get("bot_user_id")
    user = _text(before, "user", "previous_message")
    if before.get("bot_id") or after.get("bot_id") or not user or user == bot_user_id:
        return None
    channel, workspace = _text(event, "channel", "event"), workspace_of(body, context)
    ts = _text(event, "deleted_ts", "event") if deleted else _text(after, "ts", "message")
    ts = ts or _text(before, "ts", "previous_message")
    if not channel or not ts or workspace is None:
        return None
    return MessageChange(
        workspace=workspace,
        channel=channel,
        channel_type=_channel_type(event, channel),
        user=user,
        ts=ts,
        thread_ts=_text(before, "thread_ts", "previous_message") or _text(after, "thread_ts", "message"),
        deleted=deleted,
        text="" if deleted else clean_text(_text(after, "text", "message") or "", bot_user_id),
        previous_text=clean_text(_text(before, "text", "previous_message") or "", bot_user_id),
    )


def parse_command_request(body: Mapping[str, Any], context: Mapping[str, Any]) -> CommandRequest | None:
    workspace = workspace_of(body, context)
    channel, user = _text(body, "channel_id", "command"), _text(body, "user_id", "command")
    if workspace is None or not channel or not user:
        return None
    return CommandRequest(
        workspace=workspace,
        channel=channel,
        user=user,
        text=_text(body, "text", "command") or "",
        external=sender_is_external(body, context),
        trigger_id=trigger_id_of(body),
    )


def trigger_id_of(body: Mapping[str, Any]) -> str:
    """The interaction's trigger_id ("" when missing: views.open then answers an error, which is logged)."""
    return _text(body, "trigger_id", "interaction") or ""


def _actor(body: Mapping[str, Any]) -> str | None:
    """The user who clicked or submitted (`user.id` of an interaction payload)."""
    return _text(_mapping(body.get("user")), "id", "user")


def parse_actor(body: Mapping[str, Any], context: Mapping[str, Any]) -> tuple[Workspace, str] | None:
    """(workspace, user) of a block action (an App Home button)."""
    workspace, user = workspace_of(body, context), _actor(body)
    return (workspace, user) if workspace is not None and user else None


def parse_message_action(body: Mapping[str, Any], context: Mapping[str, Any]) -> MessageAction | None:
    workspace = workspace_of(body, context)
    channel = _text(_mapping(body.get("channel")), "id", "channel")
    user = _actor(body)
    message = _mapping(body.get("message"))
    ts = _text(message, "ts", "message") or _text(body, "message_ts", "shortcut")
    if workspace is None or not channel or not user or not ts:
        return None
    return MessageAction(
        workspace=workspace,
        channel=channel,
        user=user,
        message_ts=ts,
        thread_ts=_text(message, "thread_ts", "message"),
        external=sender_is_external(body, context),
    )


def parse_view_submission(
    body: Mapping[str, Any], context: Mapping[str, Any], *, block_id: str, action_id: str
) -> tuple[Workspace, str, str, str] | None:
    """(workspace, user, private_metadata, text of one input) from a view_submission payload; None when
    it can't be read (an input value that is not text is never taken for an empty box)."""
    workspace, user = workspace_of(body, context), _actor(body)
    view = _mapping(body.get("view"))
    if workspace is None or not user:
        return None
    values = _mapping(_mapping(view.get("state")).get("values"))
    element = _mapping(_mapping(values.get(block_id)).get(action_id))
    value = element.get("value")
    if value is not None and not isinstance(value, str):
        log.warning("ignored a view submission whose input value is of type %s", type(value).__name__)
        return None
    return workspace, user, _text(view, "private_metadata", "view") or "", value or ""


def parse_view_inputs(
    body: Mapping[str, Any], context: Mapping[str, Any], *, action_id: str
) -> tuple[Workspace, str, str, dict[str, str]] | None:
    """(workspace, user, private_metadata, {block id: text}) of a view_submission whose inputs all use
    `action_id`; an input left empty is "", one whose value is not text makes it unreadable (None)."""
    workspace, user = workspace_of(body, context), _actor(body)
    view = _mapping(body.get("view"))
    if workspace is None or not user:
        return None
    values: dict[str, str] = {}
    for block_id, inputs in _mapping(_mapping(view.get("state")).get("values")).items():
        value = _mapping(_mapping(inputs).get(action_id)).get("value")
        if value is not None and not isinstance(value, str):
            log.warning("ignored a view submission whose input value is of type %s", type(value).__name__)
            return None
        values[str(block_id)] = value or ""
    return workspace, user, _text(view, "private_metadata", "view") or "", values


def parse_context(event: Mapping[str, Any]) -> UserContext:
    entities = _mapping(event.get("context")).get("entities")
    channels = [
        e["value"]
        for e in (entities if isinstance(entities, list) else [])
        if isinstance(e, Mapping)
        and e.get("type") == "slack#/types/channel_id"
        and isinstance(e.get("value"), str)
        and e["value"]
    ]
    return UserContext(channel_ids=channels[:10])


def parse_context_changed(
    body: Mapping[str, Any], context: Mapping[str, Any]
) -> tuple[Workspace, str, UserContext] | None:
    """(workspace, user, what they look at) from an `app_context_changed` event."""
    event = _mapping(body.get("event"))
    workspace = workspace_of(body, context)
    user = _text(event, "user", "event") or _text(context, "user_id", "context")
    if workspace is None or not user:
        return None
    return workspace, user, parse_context(event)


def parse_session_stopped(
    body: Mapping[str, Any], context: Mapping[str, Any]
) -> tuple[Workspace, str, str] | None:
    """(workspace, channel, thread root ts) of an `agent_session_stopped` event: the user pressed the stop
    button of the session in that thread. Its team is the envelope's (the inner event carries none)."""
    event = _mapping(body.get("event"))
    workspace = workspace_of(body, context)
    channel = _text(event, "channel", "event")
    thread_ts = _text(event, "thread_ts", "event")
    if workspace is None or not channel or not thread_ts:
        return None
    return workspace, channel, thread_ts


@dataclass(frozen=True)
class HomeOpened:
    """An `app_home_opened` event: which tab, in which DM channel, by whom."""

    tab: str | None
    channel: str | None
    user: str | None
    workspace: Workspace | None


def parse_home_opened(body: Mapping[str, Any], context: Mapping[str, Any]) -> HomeOpened:
    event = _mapping(body.get("event"))
    return HomeOpened(
        tab=_text(event, "tab", "event"),
        channel=_text(event, "channel", "event"),
        user=_text(event, "user", "event"),
        workspace=workspace_of(body, context),
    )


@dataclass(frozen=True, slots=True)
class Revoked:
    """An `app_uninstalled` or `tokens_revoked` event: whose installation went (a workspace's, or an
    Enterprise Grid org's org-wide one), whether the bot's token went with it, which people's user tokens
    did, and when Slack sent it (an install made later is not undone by it)."""

    team_id: str | None
    enterprise_id: str | None
    org_wide: bool
    bot: bool
    users: tuple[str, ...] = ()
    event_time: float | None = None


def parse_revoked(body: Mapping[str, Any], context: Mapping[str, Any]) -> Revoked | None:
    """`app_uninstalled` (everything goes) or `tokens_revoked` (`tokens: {oauth: [user ids], bot: [bot
    user ids]}`, docs.slack.dev/reference/events/tokens_revoked); None when it names no installation."""
    workspace = workspace_of(body, context)
    org_wide = context.get("is_enterprise_install") is True
    enterprise = workspace.enterprise_id if workspace is not None else _installing_org(body, context)
    team = workspace.team_id if workspace is not None else None
    if not isinstance(enterprise, str) or not enterprise:
        enterprise = None
    if team is None and not (org_wide and enterprise):
        return None
    event = _mapping(body.get("event"))
    at = body.get("event_time")
    when = float(at) if isinstance(at, int | float) and not isinstance(at, bool) else None
    if event.get("type") == "app_uninstalled":
        return Revoked(team, enterprise, org_wide, bot=True, event_time=when)
    tokens = _mapping(event.get("tokens"))
    bots, users = tokens.get("bot"), tokens.get("oauth")
    user_ids = tuple(u for u in users if isinstance(u, str) and u) if isinstance(users, list) else ()
    bot = isinstance(bots, list) and bool(bots)
    return Revoked(team, enterprise, org_wide, bot=bot, users=user_ids, event_time=when)


_ENVELOPE_IDS = ("team", "enterprise", "user", "channel")
_ENVELOPE_OBJECTS = ("event", "view", "message", "previous_message", "item", "assistant_thread", "container")
_ENVELOPE_LISTS = ("authorizations", "response_urls")
_ENVELOPE_NAMES = ("type", "command", "callback_id")
# Slack's longest names: a callback_id "Maximum length of 255 characters" (views, shortcuts).
_MAX_NAME_CHARS = 255


def envelope_problem(body: object, *, depth: int = 0) -> str | None:
    """What makes a payload's envelope unreadable, or None: the containers Slack documents (and Bolt's
    request parsing and listener matching index without checking) must have their documented types, and
    the names listeners are matched on must be short text. Other scalars are not checked here: the parse_*
    functions above drop those of the wrong type."""
    if not isinstance(body, Mapping):
        return f"a {type(body).__name__}, not an object"
    for key in _ENVELOPE_IDS:
        if not isinstance(body.get(key), str | Mapping | None):
            return f"{key} is a {type(body[key]).__name__}"
    for key in _ENVELOPE_OBJECTS:  # absent or an object (Bolt reads `body.get("event", {}).get(...)`)
        if key in body and not isinstance(body[key], Mapping):
            return f"{key} is a {type(body[key]).__name__}"
    for key in _ENVELOPE_LISTS:
        value = body.get(key)
        if key in body and not (isinstance(value, list) and all(isinstance(v, Mapping) for v in value)):
            return f"{key} is not a list of objects"
    if not isinstance(body.get("response_url"), str | None):
        return "response_url is not text"
    for key in _ENVELOPE_NAMES:  # what Bolt matches listeners on (and logs when none matches)
        name = body.get(key)
        if not (name is None or (isinstance(name, str) and len(name) <= _MAX_NAME_CHARS)):
            return f"{key} is not a name"
    actions = body.get("actions")
    if "actions" in body and not (
        isinstance(actions, list)
        and actions
        and all(isinstance(a, Mapping) and isinstance(a.get("action_id"), str) for a in actions)
    ):
        return "actions is not a list of actions"
    if depth == 0 and (problem := _bolt_shape_problem(body)) is not None:
        return problem
    if depth == 0:
        # Bolt reads ids and names from the event, the first authorization, the message and the view the
        # same way.
        for key in ("event", "message", "previous_message", "item", "assistant_thread", "view"):
            if (problem := envelope_problem(body.get(key) or {}, depth=1)) is not None:
                return f"{key}: {problem}"
        authorizations = body.get("authorizations") or [{}]
        if (problem := envelope_problem(authorizations[0], depth=1)) is not None:
            return f"authorizations: {problem}"
    return None


def _bolt_shape_problem(body: Mapping[str, Any]) -> str | None:
    """Fields Bolt's listener matching takes for granted once a payload has a given type (Slack always
    sends them): every payload is matched against every listener kind, workflow steps included."""
    kind, view = body.get("type"), body.get("view")
    if isinstance(view, Mapping) and "type" not in view:
        return "view has no type"
    step_view = isinstance(view, Mapping) and view.get("type") == "workflow_step"
    if (kind == "workflow_step_edit" or step_view) and "workflow_step" not in body:
        return "workflow_step is missing"
    if kind in ("block_actions", "interactive_message") and "actions" not in body:
        return "actions is missing"
    return None


_LINK = re.compile(r"<([^<>|]+)(?:\|([^<>]*))?>")


def clean_text(text: str, bot_user_id: str | None) -> str:
    """Slack mrkdwn from a user -> plain Markdown for the model: drop the bot's own mention, unwrap links,
    and the text as the user typed it.

    Slack escapes exactly `&`, `<` and `>` in what people type, so those three entities are decoded (`&amp;`
    last: once) and nothing else: a typed `&lt;b&gt;` or `&copy;` reaches the model as typed, and a typed
    `<!channel>` as that plain text. The model may repeat it; the answer is made inert on its way to Slack
    (`bot.slack.inert`), so it never comes back live."""

    def unwrap(m: re.Match[str]) -> str:
        target, label = m.group(1), m.group(2)
        if target.startswith("@"):
            return "" if target[1:] == bot_user_id else f"<@{target[1:]}>"
        if target.startswith("#"):
            return f"#{label}" if label else f"<#{target[1:]}>"
        if target.startswith("!"):
            return f"@{label or target[1:].split('^')[0]}"
        return f"[{label}]({target})" if label and label != target else target

    return _unescape(_LINK.sub(unwrap, text)).strip()


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


# --- Slack Connect: who is a guest --------------------------------------------------------------------


def sender_is_external(body: Mapping[str, Any], context: Mapping[str, Any]) -> bool:
    """Whether the person behind this event, command or interaction belongs to another organization than
    the one that installed the app (a Slack Connect guest).

    The installer is Slack's `authorizations[0]` on events (the installation the event is delivered to;
    the envelope's `team_id` may be the guest's), else the bot token's own `auth.test` (Bolt's
    `authorize_result`). The sender's team is the event's `user_team` (an enterprise id for a user of
    another Enterprise Grid org in an `app_mention`), else `user_profile.team`, `team`, `source_team`;
    `user.team_id` on interactions; `team_id` on slash commands. Another workspace of the installer's own
    Enterprise Grid org is not external. With no team on the sender at all, only a channel Slack flags as
    externally shared (`is_ext_shared_channel`) makes them one, so the bot errs on the safe side there.
    """
    host_team, host_org = _installer(body, context)
    team, org = _sender(body)
    if team is None and org is None:
        return body.get("is_ext_shared_channel") is True
    if team is not None and team == host_team:
        return False
    if host_org is not None and org == host_org:
        return False
    # Another workspace of the same Enterprise Grid org, in a channel Slack says is not shared outside it.
    envelope_orgs = (body.get("enterprise_id"), body.get("context_enterprise_id"))
    return not (
        host_org is not None and body.get("is_ext_shared_channel") is False and host_org in envelope_orgs
    )


def _guest_team(event: Mapping[str, Any], workspace: Workspace) -> str | None:
    """The sender's workspace (`user_team`) when it is another one than the installer's; enterprise ids
    (an org, not a workspace) do not count."""
    team = _text_or_none(event.get("user_team"))
    return team if team is not None and team.startswith("T") and team != workspace.team_id else None


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _installer(body: Mapping[str, Any], context: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(team, enterprise) of the installation serving this request."""
    authorizations = body.get("authorizations")
    if isinstance(authorizations, list) and authorizations and isinstance(authorizations[0], Mapping):
        first = authorizations[0]
        return _text_or_none(first.get("team_id")), _text_or_none(first.get("enterprise_id"))
    # Bolt's AuthorizeResult (a dict) from the bot token's auth.test: who installed the app.
    result = context.get("authorize_result")
    if isinstance(result, Mapping) and (result.get("team_id") or result.get("enterprise_id")):
        return _text_or_none(result.get("team_id")), _text_or_none(result.get("enterprise_id"))
    return _text_or_none(context.get("team_id")), _text_or_none(context.get("enterprise_id"))


def _sender(body: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(team, enterprise) of the person who sent the request, as far as the payload tells."""
    event = body.get("event")
    user = body.get("user")
    if isinstance(event, Mapping):
        profile = event.get("user_profile")
        candidates = [
            event.get("user_team"),
            profile.get("team") if isinstance(profile, Mapping) else None,
            event.get("team"),
            event.get("source_team"),
        ]
    elif isinstance(user, Mapping):  # shortcuts, block actions, view submissions
        candidates = [user.get("team_id")]
    else:  # slash commands: the invoking user's own workspace
        candidates = [body.get("team_id") if body.get("command") else None]
    team = next((t for t in map(_text_or_none, candidates) if t is not None), None)
    if team is None:
        return None, None
    if team.startswith("E"):  # an Enterprise Grid org id stands for the user's org
        return None, team
    return team, _org_of(body, team)


def _org_of(body: Mapping[str, Any], team: str) -> str | None:
    """The enterprise the payload pairs with `team`: the envelope's (or its context's) on events and
    commands, the `team` object's or `enterprise`'s on interactions."""
    if team == body.get("team_id"):
        return _text_or_none(body.get("enterprise_id"))
    if team == body.get("context_team_id"):
        return _text_or_none(body.get("context_enterprise_id"))
    workspace = body.get("team")
    if isinstance(workspace, Mapping) and workspace.get("id") == team:
        enterprise = body.get("enterprise")
        found = workspace.get("enterprise_id") or (
            enterprise.get("id") if isinstance(enterprise, Mapping) else None
        )
        return _text_or_none(found)
    return None
