"""Splitting Markdown answers at Slack's per-message limit without breaking what Slack renders."""

from __future__ import annotations

FENCE = "```"


def inside_code_block(text: str) -> bool:
    """True when `text` ends inside an unclosed ``` fence."""
    return text.count(FENCE) % 2 == 1


def split_point(text: str, room: int) -> int:
    """Where to cut `text` so the head fits in `room` chars: a paragraph, line or word break if one is
    in the second half of the room, else a hard cut."""
    if len(text) <= room:
        return len(text)
    window = text[:room]
    for sep in ("\n\n", "\n", " "):
        at = window.rfind(sep)
        if at >= room // 2:
            return at + len(sep)
    return room
