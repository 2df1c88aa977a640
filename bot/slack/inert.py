"""Text the bot did not write (the model's answer, tool output, file names, web page titles, stored values)
made inert for Slack: nothing in it can notify anyone, mention anyone or disguise where a link goes.

Slack treats `&`, `<` and `>` as control characters: every raw `<…>` it receives is live syntax.
`<!here>`, `<!channel>`, `<!everyone>` and `<!subteam^…>` notify, `<@U…>` / `<#C…>` mention, `<url|label>`
links under any label (docs.slack.dev/messaging/formatting-message-text, "Escaping text", "Advanced
formatting"). Written as `&lt;` / `&gt;` they are shown as the characters and never parsed again; Slack
parses these tokens in the Markdown of `markdown_text` too, and shows the escaped form there the same way.
Plain `@here` words are only linked with `link_names` / `parse=full`, which the bot never sends.

Two shapes, one per kind of field:

* `escape_mrkdwn`: an untrusted value inside mrkdwn the bot writes (ephemerals, command answers, views):
  Slack's documented rule, `&` `<` `>` as entities.
* `InertMarkdown` (streamed) / `inert_markdown` (whole): untrusted Markdown for `markdown_text`. `<` and
  `>` become entities, except the `>` that opens a line's block quote (a `>` alone is no token). A `&`
  becomes `&amp;` only where it starts an entity (so `&lt;` shows as typed); elsewhere, and in link
  destinations, it stays: Slack decodes entities only for display, never into syntax, and not inside a
  link's destination, where `&amp;` would break every URL with a query string. A Markdown link keeps
  working and shows its real host after it (`[Slack sign-in](https://evil.example/x) (evil.example)`)
  unless its label already is its target, and a link reference definition (`[1]: https://…`, which would
  turn every `[1]`, the bot's citation markers included, into a link) is shown as text.

Streaming holds back only what the next characters decide: a trailing `]` or `&…` (34 characters at
most), or a link target not closed yet, at most `MAX_TARGET` characters (a longer one is shown as text).
Feeding any split of a text gives exactly `inert_markdown` of the whole.
"""

from __future__ import annotations

import contextlib
import html
import re
from urllib.parse import unquote, urlsplit

# Characters of a link target read before giving up on it (the link is then shown as text).
MAX_TARGET = 2048
# CommonMark: a link label is at most 999 characters.
MAX_LABEL = 999
_TAIL = MAX_LABEL + 16  # raw text kept to find a link's label when its `]` arrives

# What the stream looks at; everything else goes through as it is.
_SPECIAL = re.compile(r"[\]<>&\n]")
# After a `&`: what could make it an entity reference Slack decodes for display (`&lt;`, `&#60;`).
_ENTITY_NAME = re.compile(r"#?[A-Za-z0-9]{0,32}")
_ENTITY = re.compile(r"&(?=#?[A-Za-z0-9]{1,32};)")
# What may precede a link reference definition's `[` on its line: indentation, block quote and list markers.
_CONTAINER_PREFIX = re.compile(r"[ \t>*+\-.)0-9]*")
# Markup that must not appear in a shown host.
_NOT_SHOWN = re.compile(r"[\s<>\[\]()`*~|\\]")
_BACKSLASH_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")
_WEB_SCHEMES = frozenset({"http", "https", "ftp"})


def escape_mrkdwn(text: str) -> str:
    """An untrusted value for mrkdwn (Slack's "Escaping text" rule)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_angles(text: str) -> str:
    """An untrusted snippet for Markdown (`markdown_text`): no `<…>` token can start or end in it, and an
    entity in it shows as written."""
    return _ENTITY.sub("&amp;", text).replace("<", "&lt;").replace(">", "&gt;")


def inert_markdown(text: str) -> str:
    """Untrusted Markdown, whole."""
    stream = InertMarkdown()
    return stream.feed(text) + stream.flush()


def shown_target(url: str) -> str:
    """Where a link goes, as a reader can check it: the host of a web address (IDNA, so look-alike letters
    show), else the address itself, shortened; free of markup."""
    raw = html.unescape(_BACKSLASH_ESCAPE.sub(r"\1", url.strip()))
    if raw.startswith("<") and raw.endswith(">"):
        raw = raw[1:-1]
    try:
        parts = urlsplit("https:" + raw if raw.startswith("//") else raw)
        host = parts.hostname
        scheme = parts.scheme.lower()
    except ValueError:
        host, scheme = None, ""
    if host and (scheme in _WEB_SCHEMES or raw.startswith("//")):
        shown = unquote(host)
        if not shown.isascii():
            with contextlib.suppress(UnicodeError):  # a label IDNA refuses is shown as it is
                shown = shown.encode("idna").decode("ascii")
    elif not scheme:
        shown = raw.split("/", 1)[0]  # "evil.example/login": a client may open it as a web address
    else:
        shown = raw
    return _NOT_SHOWN.sub("", shown)[:100]


def link_hint(label: str, url: str) -> str:
    """What to write after a link labelled `label` so its real target shows: " (host)", or "" when the label
    already is the target (or the target could not take anyone anywhere)."""
    target = url.strip()
    raw = html.unescape(_BACKSLASH_ESCAPE.sub(r"\1", target)).strip("<>")
    if not raw or not (":" in raw or "." in raw or raw.startswith("//")):
        return ""  # "#anchor", "/path", "x": nowhere a reader could be sent
    shown = shown_target(target)
    if not shown:
        return ""
    said = label.strip().strip("<>").rstrip("/").lower()
    same = raw.rstrip("/").lower()
    if said in (same, same.split("://", 1)[-1], shown.lower()):
        return ""
    return f" ({shown})"


class InertMarkdown:
    """Untrusted Markdown as it streams: `feed(delta)` gives what is safe to send now, `flush()` the rest."""

    def __init__(self) -> None:
        self._held = ""
        # The raw text already passed on (its last characters), to find a link's label; "\n": a line starts.
        self._tail = "\n"
        # Only spaces, tabs and block quote markers since the last line break: a `>` here quotes.
        self._line_start = True

    @property
    def held(self) -> int:
        """Characters waiting for the next delta to decide them."""
        return len(self._held)

    def feed(self, delta: str) -> str:
        self._held += delta
        return self._drain(final=False)

    def flush(self) -> str:
        return self._drain(final=True)

    def _drain(self, *, final: bool) -> str:
        text, at = self._held, 0
        out: list[str] = []
        while at < len(text):
            special = _SPECIAL.search(text, at)
            stop = special.start() if special else len(text)
            if stop > at:
                run = text[at:stop]
                out.append(run)
                self._line_start = self._line_start and not run.strip(" \t")
                at = stop
                continue
            char = text[at]
            if char == "\n":
                out.append(char)
                self._line_start = True
            elif char == "<":
                out.append("&lt;")
                self._line_start = False
            elif char == ">":
                out.append(">" if self._line_start else "&gt;")
            elif char == "&":
                name = _ENTITY_NAME.match(text, at + 1)
                assert name is not None  # it matches the empty string
                if name.end() >= len(text) and not final:
                    break  # the next delta tells whether this `&` starts an entity
                entity = name.group().strip("#") and text[name.end() : name.end() + 1] == ";"
                out.append("&amp;" if entity else "&")
                self._line_start = False
            else:
                step = self._bracket(text, at, final=final)
                if step is None:
                    break  # the next delta decides
                piece, after = step
                out.append(piece)
                self._line_start = False
                at = after - 1
            at += 1
        self._held = text[at:]
        self._tail = (self._tail + text[max(0, at - _TAIL) : at])[-_TAIL:]
        return "".join(out)

    def _bracket(self, text: str, at: int, *, final: bool) -> tuple[str, int] | None:
        """The `]` at `text[at]`: what to send for it (and the link target after it) and where to go on; None
        when the text does not tell yet."""
        if at + 1 >= len(text):
            return None if not final else ("]", at + 1)
        after = text[at + 1]
        if after == ":":
            opening = self._opening(text, at)
            if opening is not None and _CONTAINER_PREFIX.fullmatch(opening[1]):
                return "]\\:", at + 2  # `[x]: url` would define what every `[x]` links to
            return "]", at + 1
        if after != "(":
            return "]", at + 1
        end = _link_end(text, at + 1, final=final)
        if end is _MORE:
            return None
        if end is _TOO_LONG:
            return "]\\(", at + 2  # a target too long to read is not let through as a link
        if not isinstance(end, tuple):
            return "]", at + 1
        close, target = end
        opening = self._opening(text, at)
        hint = link_hint(opening[0] if opening is not None else "", target)
        # The destination keeps its `&`: Slack does not decode entities there.
        destination = text[at + 2 : close].replace("<", "&lt;").replace(">", "&gt;")
        return "](" + destination + ")" + escape_angles(hint), close + 1

    def _opening(self, text: str, at: int) -> tuple[str, str] | None:
        """(the label, what precedes its `[` on its line) of the `]` at `text[at]`; None when its `[` is
        not within a label's length, in the same paragraph."""
        before = (self._tail + text[max(0, at - _TAIL) : at])[-_TAIL:]
        depth = 0
        k = len(before) - 1
        while k >= 0:
            char = before[k]
            if char == "]":
                depth += 1
            elif char == "[" and (k == 0 or before[k - 1] != "\\"):
                if depth == 0:
                    break
                depth -= 1
            elif char == "\n" and k > 0 and before[k - 1] == "\n":
                return None  # a blank line: no link text reaches across it
            k -= 1
        if k < 0 or len(before) - k - 1 > MAX_LABEL:
            return None
        line_start = before.rfind("\n", 0, k) + 1
        return before[k + 1 :], before[line_start:k]


class _Sentinel:
    pass


_MORE = _Sentinel()  # the link target is not complete yet
_TOO_LONG = _Sentinel()  # no end within MAX_TARGET characters


class _Short(Exception):
    """The window ended before the link target did."""


def _link_end(text: str, paren: int, *, final: bool) -> tuple[int, str] | _Sentinel | None:
    """A CommonMark inline link target `(destination "title")` opening at `text[paren]`, as Slack reads it
    once `<`/`>` are entities: (index of its closing `)`, the destination), None when it is none, `_MORE` /
    `_TOO_LONG` when the window of `MAX_TARGET` characters does not tell."""
    window = _Window(text[paren + 1 : paren + 1 + MAX_TARGET])
    try:
        close, target = window.target()
    except _Short:
        if len(window.text) >= MAX_TARGET:
            return _TOO_LONG
        return None if final else _MORE
    if close is None:
        return None
    return paren + 1 + close, target


class _Window:
    """The text after a link's `(`; reading past its end raises `_Short`."""

    def __init__(self, text: str) -> None:
        self.text = text

    def at(self, k: int) -> str:
        if k >= len(self.text):
            raise _Short
        return self.text[k]

    def spaces(self, k: int) -> int:
        """Past spaces and at most one line break; -1 at a blank line (it ends the paragraph)."""
        newline = False
        while self.at(k) in " \t\n":
            if self.at(k) == "\n":
                if newline:
                    return -1
                newline = True
            k += 1
        return k

    def target(self) -> tuple[int | None, str]:
        """(where the closing `)` is, the destination); (None, …) when this is no link target."""
        k = self.spaces(0)
        if k < 0:
            return None, ""
        if self.at(k) == "<":
            # `<destination>`: no longer one once `<` is an entity, but read as one all the same (host shown).
            end = self._pointy(k)
            if end is not None:
                return self._rest(end, self.text[k:end])
        start, depth = k, 0
        while True:
            char = self.at(k)
            if char == "\\":
                self.at(k + 1)
                k += 2
                continue
            if char == "(":
                depth += 1
            elif char == ")":
                if depth == 0:
                    break
                depth -= 1
            elif char.isspace() or ord(char) < 0x20:
                break
            k += 1
        target = self.text[start:k]
        return (None, target) if depth else self._rest(k, target)

    def _pointy(self, k: int) -> int | None:
        j = k + 1
        while self.at(j) not in "<>\n":
            j += 2 if self.at(j) == "\\" else 1
        return j + 1 if self.at(j) == ">" else None

    def _rest(self, k: int, target: str) -> tuple[int | None, str]:
        """The optional title after the destination (which ends at `k`), then the `)`."""
        title_at = self.spaces(k)
        if title_at < 0:
            return None, target
        char = self.at(title_at)
        if char == ")":
            return title_at, target
        if char not in "\"'(" or title_at == k:
            return None, target
        close = ")" if char == "(" else char
        j = title_at + 1
        while self.at(j) != close:
            if self.at(j) == "\\":
                self.at(j + 1)
                j += 1
            elif (self.at(j) == "(" and close == ")") or self.at(j) + self.at(j + 1) == "\n\n":
                return None, target  # an unescaped "(" in a (title), or a blank line
            j += 1
        end = self.spaces(j + 1)
        if end < 0 or self.at(end) != ")":
            return None, target
        return end, target
