"""`/assistant` sub-commands and the thread-level actions (message shortcut, `@assistant reset`).

Slash commands carry no thread: in a DM they act on the user's own top-level assistant thread, and in a
channel they explain how to reach a thread (the shortcut, or a mention inside it).
"""

from __future__ import annotations

import shlex
from enum import StrEnum

from bot.errors import BotError

COMMAND = "/assistant"

HELP_TEXT = (
    "*Assistant commands*\n"
    f"• `{COMMAND} help`: this help\n"
    f"• `{COMMAND} reset`: in my Messages tab / DM, start your own assistant thread over\n"
    "• In a channel thread: write `@Assistant reset` in the thread, or use the message menu "
    "(⋯) → *Reset this thread*\n"
    "Mention me in a channel or write to me in my Messages tab to ask anything; each Slack thread keeps "
    "its own memory."
)

CHANNEL_RESET_HINT = (
    "Slash commands can't see threads. To reset a thread, open the message menu (⋯) on a message in it "
    "and choose *Reset this thread*, or write `@Assistant reset` in the thread."
)


class Command(StrEnum):
    HELP = "help"
    RESET = "reset"


class UnknownCommand(BotError):
    pass


def parse_command(text: str) -> Command:
    """The sub-command in `/assistant TEXT`; an unknown or malformed one raises with the help text."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise UnknownCommand(
            "unbalanced quotes", user_message="That command has an unclosed quote.\n\n" + HELP_TEXT
        ) from exc
    if not words:
        return Command.HELP
    name = words[0].lower()
    try:
        command = Command(name)
    except ValueError:
        shown = name if len(name) <= 30 else name[:30] + "…"
        raise UnknownCommand(name, user_message=f"I don't know `{COMMAND} {shown}`.\n\n{HELP_TEXT}") from None
    if len(words) > 1:
        raise UnknownCommand(
            "extra words", user_message=f"`{COMMAND} {command.value}` takes no arguments.\n\n{HELP_TEXT}"
        )
    return command


def is_reset_request(text: str) -> bool:
    """`@Assistant reset` written inside a thread (the mention itself is already stripped)."""
    return text.strip().lower().rstrip(".!") == "reset"
