"""Splitting Markdown answers at Slack's per-message limit without breaking what Slack renders."""

from __future__ import annotations

import re

FENCE = "```"

# A message starting with `[x]: url` would make it a link reference definition, so that every `[x]` in the
# message (a citation marker, say) links there. The inert filter escapes one at a line's start; a cut must
# not make a new one out of text that stood mid-line.
_DEFINITION = re.compile(r"[ \t>*+\-.)0-9]*\[[^\]\n]*\]:")


def inside_code_block(text: str) -> bool:
    """True when `text` ends inside an unclosed ``` fence."""
    return text.count(FENCE) % 2 == 1


def split_point(text: str, room: int) -> int:
    """Where to cut `text` so the head fits in `room` chars: a paragraph, line or word break if one is
    in the second half of the room, else a hard cut; never right before a link reference definition."""
    if len(text) <= room:
        return len(text)
    window = text[:room]
    for sep in ("\n\n", "\n", " "):
        at = window.rfind(sep)
        while at >= room // 2:
            if not _DEFINITION.match(text, at + len(sep)):
                return at + len(sep)
            at = window.rfind(sep, 0, at)
    cut = room
    while cut > 1 and _DEFINITION.match(text, cut):
        cut -= 1
    return cut
