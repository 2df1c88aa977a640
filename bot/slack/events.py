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
