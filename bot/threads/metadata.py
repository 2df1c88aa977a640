"""Conversation metadata rules, checked before any call to OpenAI.

OpenAI allows 16 key-value pairs per conversation, keys up to 64 characters, values up to 512, strings only.
Four of the 16 are the bot's own keys (read-only for users). Every violation names the limit and by how much.

The settings modal edits the user's pairs as text, one `KEY=VALUE` per line (`format_lines` / `parse_lines`),
and a value comes back exactly as it was stored or typed:
- the value is everything after the first `=`, spaces at either end included; the key is trimmed (a key
  can't start or end with spaces, nor hold a line break);
- a value that can't be written on one line as it is (it holds a line break, or starts with a double quote
  once leading spaces are set aside) is written as a JSON string, `note="line 1\nline 2"`, and a value
  typed that way (`"…"`, JSON escapes) is read back as the text it spells. Any other quote is literal.
So `parse_lines(format_lines(pairs)) == pairs` for every pairs the rules allow.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from bot.errors import MetadataError as MetadataError  # re-exported: raised by the checks below
from bot.slack.inert import escape_mrkdwn

MAX_PAIRS = 16
MAX_KEY_CHARS = 64
MAX_VALUE_CHARS = 512
BOT_KEYS = ("slack_team", "slack_channel", "slack_thread_ts", "slack_user")
# The thread's answer ratings (issue 15), written by the bot once someone rates an answer: read-only for
# users like the keys above, but not reserved (it takes a pair only once it is there).
FEEDBACK_KEY = "feedback_rating"
READ_ONLY_KEYS = (*BOT_KEYS, FEEDBACK_KEY)


def _shown(text: str, limit: int = 40) -> str:
    """A user's key or word quoted back in a (mrkdwn) message: cut, and inert."""
    return escape_mrkdwn(text if len(text) <= limit else text[: limit - 1] + "…")


def parse_assignments(words: list[str]) -> dict[str, str]:
    """`KEY=VALUE` words (already shell-split, so quoted values keep their spaces) -> pairs."""
    pairs: dict[str, str] = {}
    problems: list[str] = []
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            problems.append(f"`{_shown(word)}` is not `KEY=VALUE`.")
            continue
        pairs[key] = value
    if not words:
        problems.append("Give at least one `KEY=VALUE`.")
    if problems:
        raise MetadataError(problems)
    return pairs


def apply_set(current: Mapping[str, str], changes: Mapping[str, str]) -> dict[str, str]:
    """The metadata after setting `changes`, or MetadataError listing every rule they break."""
    problems: list[str] = []
    for key, value in changes.items():
        if key in READ_ONLY_KEYS:
            problems.append(f"`{key}` is set by the bot and can't be changed.")
        if key != key.strip() or "\n" in key or "\r" in key:
            # The settings modal could not show it on a line of its own.
            problems.append(
                f"Key `{_shown(key.strip())}` can't start or end with spaces or hold a line break."
            )
        if len(key) > MAX_KEY_CHARS:
            over = len(key) - MAX_KEY_CHARS
            problems.append(
                f"Key `{_shown(key)}` is {len(key)} characters; the limit is {MAX_KEY_CHARS} "
                f"({over} too many)."
            )
        if len(value) > MAX_VALUE_CHARS:
            over = len(value) - MAX_VALUE_CHARS
            problems.append(
                f"The value of `{_shown(key)}` is {len(value)} characters; the limit is {MAX_VALUE_CHARS} "
                f"({over} too many)."
            )
    merged = {**current, **changes}
    if len(merged) > MAX_PAIRS:
        over = len(merged) - MAX_PAIRS
        problems.append(
            f"That makes {len(merged)} metadata pairs; the limit is {MAX_PAIRS}, including my "
            f"{len(BOT_KEYS)} own keys ({over} too many)."
        )
    if problems:
        raise MetadataError(problems)
    return merged


def apply_unset(current: Mapping[str, str], keys: list[str]) -> dict[str, str]:
    problems: list[str] = []
    if not keys:
        problems.append("Name at least one key to unset.")
    for key in keys:
        if key in READ_ONLY_KEYS:
            problems.append(f"`{key}` is set by the bot and can't be removed.")
        elif key not in current:
            problems.append(f"There is no key `{_shown(key)}` to unset.")
    if problems:
        raise MetadataError(problems)
    return {k: v for k, v in current.items() if k not in keys}


def apply_replace(current: Mapping[str, str], user_pairs: Mapping[str, str]) -> dict[str, str]:
    """The settings modal edits all user keys at once: bot keys stay, user keys become `user_pairs`."""
    bot_part = {k: v for k, v in current.items() if k in READ_ONLY_KEYS}
    return apply_set(bot_part, user_pairs)


def user_part(metadata: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in metadata.items() if k not in READ_ONLY_KEYS}


def _needs_quotes(value: str) -> bool:
    return "\n" in value or "\r" in value or value.lstrip().startswith('"')


def format_lines(pairs: Mapping[str, str]) -> str:
    """Pairs as the settings modal shows them: one `KEY=VALUE` per line (see the module docstring)."""
    return "\n".join(
        f"{key}={json.dumps(value, ensure_ascii=False) if _needs_quotes(value) else value}"
        for key, value in pairs.items()
    )


def _storable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _read_value(raw: str) -> str | None:
    """A value as typed after `=`; None when it holds no storable text (a lone surrogate, as `"\\ud800"`
    spells: OpenAI's JSON can't carry it)."""
    value = raw
    quoted = raw.strip()
    if quoted.startswith('"') and quoted.endswith('"') and len(quoted) >= 2:
        try:
            decoded = json.loads(quoted)
        except ValueError:  # e.g. `"say "hi" twice"`: the quotes are the text's own
            decoded = None
        value = decoded if isinstance(decoded, str) else raw
    return value if _storable(value) else None


def parse_lines(text: str) -> dict[str, str]:
    """The modal's text box: one `KEY=VALUE` per line; blank lines are skipped. Raises MetadataError naming
    every line that is not `KEY=VALUE`."""
    pairs: dict[str, str] = {}
    problems = []
    # Only "\n" ends a line: a value may hold any other separator str.splitlines() knows (\u2028, \x0c…).
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        key, sep, raw = line.partition("=")
        value = _read_value(raw)
        if not sep or not key.strip():
            problems.append(f"Line {number} is not KEY=VALUE.")
        elif value is None or not _storable(key):
            problems.append(f"Line {number} holds a character that can't be stored (a lone \\u surrogate).")
        else:
            pairs[key.strip()] = value
    if problems:
        raise MetadataError(problems)
    return pairs
