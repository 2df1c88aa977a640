"""Citations in Slack: `file_citation` / `url_citation` / `container_file_citation` annotations become
numbered markers in the answer and a "Sources" footer; each source appears once, with one number, however
often it is cited. A file the code interpreter wrote is linked once the bot has uploaded it to the thread
(`link_file`).

Works on the stream: text deltas go through `text()`, annotation events through `annotate()`, and each
returns what to append to the Slack message. An annotation's position (a file citation's `index`, a URL
citation's `end_index`) counts characters of the model's text. When it points at text not streamed yet
the marker waits and is inserted exactly there; when it points at text already sent (an annotation that
arrives late) the marker goes where the answer has got to, since a streamed Slack message cannot be
edited mid-stream. `footer()` closes an open code block and lists the sources.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from bot.slack.inert import escape_angles, link_hint
from bot.slack.markdown import FENCE, inside_code_block


@dataclass(frozen=True)
class Source:
    label: str  # inert (`_label`)
    url: str | None = None
    # A file in Slack: its permalink is Slack's own, so its host needs no showing. A web page's link shows
    # its host after its title, which anyone can choose.
    in_slack: bool = False


@dataclass
class CitationRenderer:
    """One answer's citations. `files`: OpenAI file id -> how to show it (the Slack file's name and link)."""

    files: Mapping[str, Source] = field(default_factory=dict)
    _sources: list[Source] = field(default_factory=list)
    _numbers: dict[str, int] = field(default_factory=dict)
    _pending: list[tuple[int, int]] = field(default_factory=list)  # (position, number), waiting for text
    _position: int = 0  # characters of model text seen
    _base: int = 0  # where the current text part started (annotation positions count from there)
    _placed: dict[int, set[int]] = field(default_factory=dict)  # position -> numbers already placed there
    _text: list[str] = field(default_factory=list)

    @property
    def sources(self) -> list[Source]:
        return list(self._sources)

    def text(self, delta: str) -> str:
        """A text delta, with any waiting markers that fall inside it inserted."""
        if not self._pending:
            self._position += len(delta)
            self._text.append(delta)
            return delta
        out: list[str] = []
        start = self._position
        cursor = 0
        for at, number in sorted(self._pending):
            offset = at - start
            if offset > len(delta):
                break
            out.append(delta[cursor:offset])
            cursor = offset
            out.append(self._marker(at, number))
            self._pending.remove((at, number))
        out.append(delta[cursor:])
        self._position += len(delta)
        rendered = "".join(out)
        self._text.append(rendered)
        return rendered

    def next_part(self) -> None:
        """A new text part starts (another message, or the next response of a tool loop)."""
        self._base = self._position

    def annotate(self, annotation: object) -> str:
        """An `annotation.added` event's annotation: the marker to append now, or "" (waiting / not shown)."""
        kind = _field(annotation, "type", None)
        if kind == "file_citation":
            file_id = str(_field(annotation, "file_id", ""))
            at = self._at(annotation, "index")
            known = self.files.get(file_id)
            source = known or Source(_label(str(_field(annotation, "filename", "")) or file_id))
            number = self._number(f"file:{file_id}", source)
        elif kind == "url_citation":
            url = str(_field(annotation, "url", ""))
            at = self._at(annotation, "end_index")
            title = str(_field(annotation, "title", "") or "") or url
            number = self._number(f"url:{url}", Source(_label(title), url if _web_url(url) else None))
        elif kind == "container_file_citation":
            file_id = str(_field(annotation, "file_id", ""))
            at = self._at(annotation, "end_index")
            source = Source(_label(str(_field(annotation, "filename", "")) or file_id))
            number = self._number(f"cfile:{file_id}", source)
        else:
            return ""
        if at > self._position:
            self._pending.append((at, number))
            return ""
        marker = self._marker(self._position, number)
        self._text.append(marker)
        return marker

    def link_file(self, file_id: str, name: str, permalink: str | None) -> None:
        """A generated file is now in Slack: its source (cited or not) links to it."""
        key = f"cfile:{file_id}"
        source = slack_source(name, permalink)
        if key in self._numbers:
            self._sources[self._numbers[key] - 1] = source
        else:
            self._number(key, source)

    def footer(self) -> str:
        """Markers still waiting (their text never came), then the Sources list; "" without citations."""
        tail = "".join(self._marker(self._position, n) for _, n in sorted(self._pending))
        self._pending.clear()
        if not self._sources:
            return tail
        text = "".join(self._text) + tail
        lines = [f"{n}. {_link(source)}" for n, source in enumerate(self._sources, start=1)]
        close = "\n" + FENCE if inside_code_block(text) else ""
        return f"{tail}{close}\n\n**Sources**\n" + "\n".join(lines)

    def _at(self, annotation: object, name: str) -> int:
        at = _field(annotation, name, None)
        return self._position if at is None else self._base + int(at)

    def _number(self, key: str, source: Source) -> int:
        if key not in self._numbers:
            self._sources.append(source)
            self._numbers[key] = len(self._sources)
        return self._numbers[key]

    def _marker(self, at: int, number: int) -> str:
        placed = self._placed.setdefault(at, set())
        if number in placed:
            return ""  # the same source cited twice at one spot: one marker
        placed.add(number)
        return f"[{number}]"


def _field(annotation: object, name: str, default: Any) -> Any:
    """A field of an annotation, whether the SDK gave a typed model or (a type it did not know) a dict."""
    if isinstance(annotation, Mapping):
        return annotation.get(name, default)
    return getattr(annotation, name, default)


def _label(text: str) -> str:
    """A name (a web page's title, a file's name) safe inside Markdown link text, and inert."""
    cleaned = " ".join(text.replace("[", "(").replace("]", ")").replace("`", "'").split())
    return escape_angles(cleaned[:200]) or "source"


def _web_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _link(source: Source) -> str:
    if source.url is None or not _web_url(source.url):
        return source.label
    safe = quote(source.url, safe=":/?#[]@!$&'*+,;=%~-._")
    safe = safe.replace("(", "%28").replace(")", "%29")
    hint = "" if source.in_slack else link_hint(source.label, source.url)
    return f"[{source.label}]({safe}){hint}"


def slack_source(name: str, permalink: str | None) -> Source:
    """A file shared in Slack, linked by its permalink."""
    return Source(_label(name), permalink if permalink and _web_url(permalink) else None, in_slack=True)
