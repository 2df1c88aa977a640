"""Pure functions that read Slack event payloads into `bot.models` (no I/O).

Like Bolt's own request predicates, these take plain dicts so they can be tested without a server.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bot.models import CommandRequest, IncomingMessage, MessageAction, SharedFile, UserContext, Workspace

# Message subtypes that are still a person talking to the bot; every other subtype (edits, deletions,
# joins, bot messages...) is ignored.
_ANSWERABLE_SUBTYPES = frozenset({None, "file_share", "thread_broadcast"})

_CHANNEL_TYPES = frozenset({"channel", "group", "im", "mpim", "app_home"})


def parse_files(event: Mapping[str, Any]) -> list[SharedFile]:
    """The files a message event carries (a `file_share` message, or a mention with files)."""
    raw = event.get("files")
    if not isinstance(raw, list):
        return []
    files = [SharedFile.model_validate(f) for f in raw if isinstance(f, Mapping) and f.get("id")]
    # A deleted file stays in the message as a tombstone: nothing to read.
    return [f for f in files if f.mode != "tombstone"]


def workspace_of(body: Mapping[str, Any], context: Mapping[str, Any]) -> Workspace | None:
    team = body.get("team")
    team_id = (
        context.get("team_id")
        or body.get("team_id")
        or (team.get("id") if isinstance(team, Mapping) else None)
    )
    if not team_id:
        return None
    return Workspace(team_id=team_id, enterprise_id=context.get("enterprise_id") or body.get("enterprise_id"))


def _channel_type(event: Mapping[str, Any]) -> str:
    kind = event.get("channel_type")
    if kind in _CHANNEL_TYPES:
        return str(kind)
    channel = str(event.get("channel", ""))
    # app_mention carries no channel_type; the id's first letter tells DMs (D) from channels.
    return "im" if channel.startswith("D") else "channel"


def parse_user_message(
    body: Mapping[str, Any], context: Mapping[str, Any], *, source: str
) -> IncomingMessage | None:
    """The message a person sent, or None when it is not one the bot should answer."""
    event = body.get("event") or {}
    if event.get("subtype") not in _ANSWERABLE_SUBTYPES:
        return None
    if event.get("bot_id") or event.get("bot_profile"):
        return None
    user = event.get("user")
    bot_user_id = context.get("bot_user_id")
    if not user or user == bot_user_id:
        return None
    channel, ts = event.get("channel"), event.get("ts")
    workspace = workspace_of(body, context)
    if not channel or not ts or workspace is None:
        return None
    raw_text = str(event.get("text") or "")
    return IncomingMessage(
        workspace=workspace,
        event_id=body.get("event_id"),
        source="mention" if source == "mention" else "message",
        channel=channel,
        channel_type=_channel_type(event),  # type: ignore[arg-type]
        user=user,
        text=clean_text(raw_text, bot_user_id),
        ts=str(ts),
        thread_ts=event.get("thread_ts"),
        mentions_bot=source == "mention" or (bool(bot_user_id) and f"<@{bot_user_id}>" in raw_text),
        files=parse_files(event),
        external=sender_is_external(body, context),
    )


def parse_command_request(body: Mapping[str, Any], context: Mapping[str, Any]) -> CommandRequest | None:
    workspace = workspace_of(body, context)
    if workspace is None or not body.get("channel_id") or not body.get("user_id"):
        return None
    return CommandRequest(
        workspace=workspace,
        channel=str(body["channel_id"]),
        user=str(body["user_id"]),
        text=str(body.get("text") or ""),
        external=sender_is_external(body, context),
    )


def parse_message_action(body: Mapping[str, Any], context: Mapping[str, Any]) -> MessageAction | None:
    workspace = workspace_of(body, context)
    channel = (body.get("channel") or {}).get("id")
    user = (body.get("user") or {}).get("id")
    message = body.get("message") or {}
    ts = message.get("ts") or body.get("message_ts")
    if workspace is None or not channel or not user or not ts:
        return None
    return MessageAction(
        workspace=workspace,
        channel=channel,
        user=user,
        message_ts=str(ts),
        thread_ts=message.get("thread_ts"),
        external=sender_is_external(body, context),
    )


def parse_view_submission(
    body: Mapping[str, Any], context: Mapping[str, Any], *, block_id: str, action_id: str
) -> tuple[Workspace, str, str, str] | None:
    """(workspace, user, private_metadata, text of one input) from a view_submission payload."""
    workspace = workspace_of(body, context)
    user = (body.get("user") or {}).get("id")
    view = body.get("view") or {}
    if workspace is None or not user:
        return None
    value = (((view.get("state") or {}).get("values") or {}).get(block_id) or {}).get(action_id) or {}
    return workspace, str(user), str(view.get("private_metadata") or ""), str(value.get("value") or "")


def parse_context(event: Mapping[str, Any]) -> UserContext:
    entities = (event.get("context") or {}).get("entities") or []
    channels = [
        str(e["value"])
        for e in entities
        if isinstance(e, Mapping) and e.get("type") == "slack#/types/channel_id" and e.get("value")
    ]
    return UserContext(channel_ids=channels[:10])


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
