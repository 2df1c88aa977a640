"""`/assistant` sub-commands, and the same commands written as `@Assistant …` inside a thread.

Slash commands carry no thread: in a DM they act on the user's own top-level assistant thread, and in a
channel they explain how to reach a thread (the message shortcuts, or a mention inside it). `usage` is about
the person, not a thread: it is answered anywhere.
"""

from __future__ import annotations

import html
import shlex
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from bot.errors import BotError
from bot.slack.inert import escape_mrkdwn
from bot.threads.metadata import MetadataError, parse_assignments

COMMAND = "/assistant"
HISTORY_DEFAULT = 10
HISTORY_MAX = 50

HELP_TEXT = (
    "*Assistant commands* (in my Messages tab / DM they act on your own assistant thread)\n"
    f"• `{COMMAND} help`: this help\n"
    f"• `{COMMAND} status`: the thread's id, age, size and last run\n"
    f"• `{COMMAND} history [N]`: the newest N messages (default {HISTORY_DEFAULT}, at most {HISTORY_MAX})\n"
    f"• `{COMMAND} meta`: show the thread's metadata\n"
    f'• `{COMMAND} meta set KEY=VALUE …`: set metadata (quote values with spaces: `topic="Q3 plan"`)\n'
    f"• `{COMMAND} meta unset KEY …`: remove metadata\n"
    f"• `{COMMAND} reset`: start the thread over\n"
    f"• `{COMMAND} usage`: the tokens you used today and in the last 7 and 30 days (works anywhere; "
    "workspace admins also see the workspace's totals and top users and channels)\n"
    f"• `{COMMAND} config [show|set|reset]`: this channel's assistant policy\n"
    "In a channel thread write the same after a mention (`@Assistant status`, `@Assistant meta set …`, "
    "`@Assistant reset`), or use the message menu (⋯) → *Reset this thread* / *Thread settings*."
)

CONFIG_HELP = (
    "*Channel policy* (in a channel: that channel's; in our DM, or with `--workspace`: the workspace "
    "default)\n"
    f"• `{COMMAND} config`: open the policy form\n"
    f"• `{COMMAND} config show`: the policy that applies here\n"
    f'• `{COMMAND} config set instructions="…" model=… tools=web_search,code_interpreter knowledge=vs_… '
    "user_per_minute=N thread_answers=N` (admins; an empty value unsets, `tools=none` allows none)\n"
    f"• `{COMMAND} config reset`: remove the policy (admins)"
)

CHANNEL_HINT = (
    "Slash commands can't see threads. In a channel thread, write the command after a mention "
    "(for example `@Assistant status` or `@Assistant reset`), or open the message menu (⋯) on a message "
    "in the thread and choose *Reset this thread* or *Thread settings*."
)

# Slack turns typed quotes into curly ones on many keyboards; shlex needs the straight kind.
_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2018": "'", "\u2019": "'"})


class Command(StrEnum):
    HELP = "help"
    RESET = "reset"
    META = "meta"
    HISTORY = "history"
    STATUS = "status"
    USAGE = "usage"  # not about a thread: answered anywhere (`bot.threads.usage`)
    CONFIG = "config"  # about a channel, not a thread (`bot.threads.policy`)


# The settings of a channel policy (`bot.threads.policy.SETTINGS`), and the flag for the workspace default.
POLICY_KEYS = ("instructions", "model", "tools", "mcp", "knowledge", "user_per_minute", "thread_answers")
WORKSPACE_FLAG = "--workspace"


@dataclass(frozen=True)
class ParsedCommand:
    command: Command
    meta_action: Literal["show", "set", "unset"] = "show"
    pairs: dict[str, str] = field(default_factory=dict)
    keys: tuple[str, ...] = ()
    limit: int = HISTORY_DEFAULT
    # `config`: "edit" opens the form; `workspace`: the workspace default rather than the channel's.
    config_action: Literal["edit", "show", "set", "reset"] = "edit"
    workspace: bool = False


class UnknownCommand(BotError):
    pass


def _fail(detail: str, message: str) -> UnknownCommand:
    return UnknownCommand(detail, user_message=f"{message}\n\n{HELP_TEXT}")


def parse_command(text: str) -> ParsedCommand:
    """The sub-command in `/assistant TEXT`; an unknown or malformed one raises with the help text."""
    try:
        words = shlex.split(html.unescape(text).translate(_QUOTES))
    except ValueError as exc:
        raise _fail("unbalanced quotes", "That command has an unclosed quote.") from exc
    if not words:
        return ParsedCommand(Command.HELP)
    name, args = words[0].lower(), words[1:]
    try:
        command = Command(name)
    except ValueError:
        shown = escape_mrkdwn(name if len(name) <= 30 else name[:30] + "…")
        raise _fail(name, f"I don't know `{COMMAND} {shown}`.") from None
    if command is Command.META:
        return _parse_meta(args)
    if command is Command.HISTORY:
        return _parse_history(args)
    if command is Command.CONFIG:
        return _parse_config(args)
    if args:
        raise _fail("extra words", f"`{COMMAND} {command.value}` takes no arguments.")
    return ParsedCommand(command)


def _parse_meta(args: list[str]) -> ParsedCommand:
    if not args or args == ["show"]:
        return ParsedCommand(Command.META)
    action, rest = args[0].lower(), args[1:]
    if action == "set":
        try:
            pairs = parse_assignments(rest)
        except MetadataError as exc:
            raise _fail("meta set", exc.user_message) from exc
        return ParsedCommand(Command.META, meta_action="set", pairs=pairs)
    if action == "unset" and rest:
        return ParsedCommand(Command.META, meta_action="unset", keys=tuple(rest))
    if action == "unset":
        raise _fail("unset without keys", f"`{COMMAND} meta unset` needs the keys to remove.")
    raise _fail("meta action", f"`{COMMAND} meta` takes `set KEY=VALUE …` or `unset KEY …`.")


def _parse_history(args: list[str]) -> ParsedCommand:
    if not args:
        return ParsedCommand(Command.HISTORY)
    # isdecimal, not isdigit: "²" is a digit that int() refuses.
    if len(args) == 1 and args[0].isdecimal() and 1 <= int(args[0]) <= HISTORY_MAX:
        return ParsedCommand(Command.HISTORY, limit=int(args[0]))
    raise _fail("history N", f"`{COMMAND} history` takes a number from 1 to {HISTORY_MAX}.")


def _config_fail(detail: str, message: str) -> UnknownCommand:
    return UnknownCommand(detail, user_message=f"{message}\n\n{CONFIG_HELP}")


def _parse_config(args: list[str]) -> ParsedCommand:
    workspace = WORKSPACE_FLAG in (a.lower() for a in args)
    args = [a for a in args if a.lower() != WORKSPACE_FLAG]
    action = args[0].lower() if args else "edit"
    rest = args[1:]
    if action in ("show", "reset", "edit") and not rest:
        return ParsedCommand(Command.CONFIG, config_action=action, workspace=workspace)  # type: ignore[arg-type]
    if action == "set":
        return ParsedCommand(
            Command.CONFIG, config_action="set", pairs=_policy_pairs(rest), workspace=workspace
        )
    if action in ("show", "reset"):
        raise _config_fail(
            "config extra words", f"`{COMMAND} config {action}` takes nothing but `{WORKSPACE_FLAG}`."
        )
    shown = escape_mrkdwn(action if len(action) <= 30 else action[:30] + "…")
    raise _config_fail(
        "config action",
        f"`{COMMAND} config` takes `show`, `set KEY=VALUE …` or `reset` (not `{shown}`).",
    )


def _policy_pairs(words: list[str]) -> dict[str, str]:
    """`KEY=VALUE` words of `config set`: every key known, none twice, at least one."""
    if not words:
        raise _config_fail("config set empty", f"`{COMMAND} config set` needs at least one `KEY=VALUE`.")
    pairs: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        key = key.strip().lower()
        shown = escape_mrkdwn(word if len(word) <= 40 else word[:40] + "…")
        if not sep:
            raise _config_fail("config set not k=v", f"`{shown}` is not `KEY=VALUE`.")
        if key not in POLICY_KEYS:
            known = ", ".join(f"`{k}`" for k in POLICY_KEYS)
            raise _config_fail(
                "config set key",
                f"`{COMMAND} config` has no setting `{shown.partition('=')[0]}`. Settings: {known}.",
            )
        if key in pairs:
            raise _config_fail("config set twice", f"`{key}` is given twice.")
        pairs[key] = value
    return pairs


def parse_thread_command(text: str) -> ParsedCommand | None:
    """A command written after a mention inside a thread, or None when the text is a question.

    "@Assistant history of Rome?" is a question, so only a clean parse counts; `meta` is the exception,
    since nobody starts a question with it and a typo there deserves an explanation.
    """
    first = text.strip().split(maxsplit=1)[0].lower().rstrip(".!?") if text.strip() else ""
    if first not in set(Command):
        return None
    try:
        return parse_command(text.strip().rstrip(".!"))
    except UnknownCommand:
        if first == Command.META:
            raise
        return None
