"""What shared files add to one turn's request, and how its answer's citations are shown.

Built by `bot.files.service.FileService.prepare`; the turn puts it into each `responses.create` request
and passes the stream's text and annotation events through `citations`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bot.slack.citations import CitationRenderer

FILE_SEARCH_NOTE = (
    "Files shared in this Slack thread are searchable with the file_search tool. Use it for questions "
    "about them, and cite what you use."
)


@dataclass
class TurnInput:
    text: str  # the user's text plus a short note of the files shared with it
    parts: list[dict[str, Any]] = field(default_factory=list)  # extra content parts (input_image)
    tools: list[dict[str, Any]] = field(default_factory=list)  # file_search, when there is anything to search
    citations: CitationRenderer = field(default_factory=CitationRenderer)
    # False when the message had only files, and none could be used: nothing left to answer.
    answer_needed: bool = True
    code_file_ids: list[str] = field(default_factory=list)  # the thread's files the code interpreter gets
