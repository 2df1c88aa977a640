"""A turn's thinking steps as Slack stream chunks (issue 15): each tool call, file search, web search or
code run a `task_update` card (pending -> in_progress -> complete | error, its web pages as URL sources),
and a `plan_update` title once the turn has several steps. A turn without steps sends none.

Slack documents no limit on task fields; other clients cap them at 256 characters (Microsoft's Slack
extension: "Maximum 256 characters") and a message's total stays well under the ~11 KB Slack was seen to
accept (openclaw PR #143882), so titles and labels are kept short here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bot.assistant.backend import Step

FIELD_MAX = 256
ID_MAX = 128
PLAN_WORKING = "Working through several steps"


def task_chunk(step: Step) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "type": "task_update",
        "id": step.id[:ID_MAX],
        "title": step.title[:FIELD_MAX],
        "status": step.status,
    }
    if step.sources:
        chunk["sources"] = [{"type": "url", "url": s.url, "text": s.text[:FIELD_MAX]} for s in step.sources]
    return chunk


def plan_chunk(title: str) -> dict[str, Any]:
    return {"type": "plan_update", "title": title[:FIELD_MAX]}


def plan_done(count: int) -> str:
    return f"Done in {count} steps"


@dataclass
class Steps:
    """The steps one answer showed, by id (their last status)."""

    seen: dict[str, str] = field(default_factory=dict)

    def add(self, step: Step) -> bool:
        """Note a step; True when it makes the turn one of several steps (the plan gets its title)."""
        new = step.id not in self.seen
        self.seen[step.id] = step.status
        return new and len(self.seen) == 2

    @property
    def several(self) -> bool:
        return len(self.seen) >= 2
