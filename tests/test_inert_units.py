"""bot/slack/inert: untrusted text made inert for Slack, whole and as it streams; the fake Slack's reading of
what is live; the places that embed untrusted values in what the bot writes."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.assistant.backend import FunctionCall
from bot.slack.citations import CitationRenderer
from bot.slack.events import clean_text
from bot.slack.inert import MAX_TARGET, InertMarkdown, escape_mrkdwn, inert_markdown, link_hint
from bot.threads.admin import format_metadata
from bot.threads.home import home_view
from bot.threads.metadata import MetadataError, apply_unset
from bot.threads.settings_modal import SettingsRef, settings_modal
from bot.turns.tool_loop import calling_status
from tests.fakes.slack_api import live_forms_in, live_tokens

# Every special form Slack acts on (docs.slack.dev/messaging/formatting-message-text).
FORMS = [
    "<!channel>",
    "<!here>",
    "<!everyone>",
    "<!here|here>",
    "<!subteam^S0SECURITY|@security>",
    "<@U0ALICE>",
    "<@W0ENTERPRISE|bob>",
    "<#C0GENERAL|general>",
    "<https://evil.example/login|Slack sign-in>",
    "<https://evil.example>",
    "<mailto:ceo@evil.example|CEO>",
    "<!date^1700000000^{date}|today>",
]


def streamed(text: str, cuts: list[int]) -> str:
    stream = InertMarkdown()
    points = sorted({min(max(c, 0), len(text)) for c in cuts})
    pieces = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    return "".join(stream.feed(p) for p in pieces) + stream.flush()


def shown(text: str) -> str:
    """What Slack displays for escaped text (it decodes these three entities, `&amp;` last)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


@pytest.mark.parametrize("form", FORMS)
def test_every_special_form_is_shown_not_acted_on(form: str) -> None:
    assert live_tokens(form)  # the fake reads it as live...
    out = inert_markdown(f"Repeat exactly: {form} (done)")
    assert live_tokens(out) == [] and "<" not in out  # ...and what the bot sends is not
    assert shown(out) == f"Repeat exactly: {form} (done)"  # what the reader sees is the text itself
    assert live_tokens(escape_mrkdwn(form)) == [] and shown(escape_mrkdwn(form)) == form


def test_forms_split_across_deltas_are_caught() -> None:
    stream = InertMarkdown()
    out = stream.feed("Hi <!chan") + stream.feed("nel> and [Slack sign-in](https://evil.exa")
    out += stream.feed("mple/login) now") + stream.flush()
    assert out == "Hi &lt;!channel&gt; and [Slack sign-in](https://evil.example/login) (evil.example) now"
    # While the link's target is open only it waits: everything before it is sent at once.
    stream = InertMarkdown()
    assert stream.feed("Go to [Slack sign-in](https://evil") == "Go to [Slack sign-in"
    assert stream.held == len("](https://evil")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A disguised link shows where it really goes; one whose label is its target needs nothing.
        ("[Slack sign-in](https://evil.example/x)", "[Slack sign-in](https://evil.example/x) (evil.example)"),
        ("[https://a.example/x](https://a.example/x)", "[https://a.example/x](https://a.example/x)"),
        ("[a.example](https://a.example/)", "[a.example](https://a.example/)"),
        (
            "[https://slack.com](https://slack.com.evil.example)",
            "[https://slack.com](https://slack.com.evil.example) (slack.com.evil.example)",
        ),
        ("[ok](https://slack.com@evil.example/)", "[ok](https://slack.com@evil.example/) (evil.example)"),
        ("[Slack](https://sl\u0430ck.com/)", "[Slack](https://sl\u0430ck.com/) (xn--slck-63d.com)"),
        ('![logo](https://evil.example/a.png "t")', '![logo](https://evil.example/a.png "t") (evil.example)'),
        ("[x](<https://evil.example/a b>)", "[x](&lt;https://evil.example/a b&gt;) (evil.example)"),
        ("[x](https://e.example/a(b)c)", "[x](https://e.example/a(b)c) (e.example)"),
        ("[Pay](evil.example/pay)", "[Pay](evil.example/pay) (evil.example)"),
        ("[q](https://a.example/?x=1&amp;y=2)", "[q](https://a.example/?x=1&amp;y=2) (a.example)"),
        # Nowhere a reader could be sent, or no link at all: unchanged.
        ("call handlers[name](event)", "call handlers[name](event)"),
        ("[see above](#intro)", "[see above](#intro)"),
        ("[a](b c d)", "[a](b c d)"),
        # A link reference definition would make every [1] (citation markers too) a link: shown as text.
        ("[1]: https://evil.example\nsee [1]", "[1]\\: https://evil.example\nsee [1]"),
        ("> - [2]: https://evil.example", "> - [2]\\: https://evil.example"),
        ("def f() -> dict[str, int]:", "def f() -&gt; dict[str, int]:"),
        # Block quotes keep working; a `>` or `&` elsewhere shows as written.
        ("> quoted a > b\n>> nested", "> quoted a &gt; b\n>> nested"),
        ("AT&T says &lt;b&gt;", "AT&T says &amp;lt;b&amp;gt;"),
    ],
)
def test_markdown_links_show_their_target_and_quotes_stay(text: str, expected: str) -> None:
    assert inert_markdown(text) == expected
    assert streamed(text, list(range(len(text)))) == expected  # one character at a time


def test_a_target_too_long_to_read_is_shown_as_text_and_never_held_past_the_bound() -> None:
    stream = InertMarkdown()
    out = stream.feed("[Slack sign-in](https://evil.example/")
    for _ in range(50):
        out += stream.feed("a" * 100)
        assert stream.held <= MAX_TARGET + 2
    out += stream.feed(")") + stream.flush()
    assert out.startswith("[Slack sign-in]\\(https://evil.example/aaa")  # not a link any more
    assert stream.held == 0


def test_code_is_escaped_the_same_way() -> None:
    code = '```html\n<a href="x">Sign in</a> <!channel>\n```'
    out = inert_markdown(code)
    assert live_tokens(out) == [] and shown(out) == code


# Pieces the generated texts are made of: every special form, their fragments, and Markdown's link syntax.
_PIECES = [
    *FORMS,
    "<",
    ">",
    "&",
    "&lt;",
    "&amp;",
    "&#60;",
    "[",
    "]",
    "(",
    ")",
    "](",
    "![",
    "\\",
    '"',
    ":",
    "|",
    "!",
    "@here",
    "[Slack sign-in](https://evil.example/x)",
    "[1]: ",
    "https://",
    "evil.example",
    "\n",
    "\n\n",
    "> ",
    "```",
    "`",
    " ",
]
_TEXTS = st.lists(st.sampled_from(_PIECES) | st.text(max_size=3), max_size=40).map("".join)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(text=_TEXTS, data=st.data())
def test_any_split_streams_exactly_the_whole_and_nothing_is_ever_live(text: str, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=12))
    whole = inert_markdown(text)
    assert streamed(text, cuts) == whole
    assert "<" not in whole and live_tokens(whole) == []


_LABELS = st.text(st.characters(blacklist_characters="[]\n\\", blacklist_categories=("Cs",)), max_size=20)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(
    label=_LABELS, host=st.sampled_from(["evil.example", "a.b.example", "xn--80ak6aa92e.com"]), around=_TEXTS
)
def test_a_links_real_host_always_shows_after_it(label: str, host: str, around: str) -> None:
    url = f"https://{host}/login"
    text = f"{around}\n\n[{label}]({url}) and more"
    out = inert_markdown(text)
    disclosed = f"]({url}) ({host}) and more"
    plain = f"]({url}) and more"
    assert out.endswith(disclosed) or (out.endswith(plain) and link_hint(label, url) == "")
    if label.strip().lower() not in (url, url.removeprefix("https://"), host):
        assert out.endswith(disclosed)


# ---- the fake Slack's reading of what is live ------------------------------------------------------------


def test_the_fake_reads_live_forms_where_slack_parses_them() -> None:
    args = {
        "text": "hi <!here> &lt;!channel&gt;",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": "<@U1> &lt;@U2&gt;"}},
            {"type": "header", "text": {"type": "plain_text", "text": "<!everyone>"}},  # plain: not parsed
            {"type": "markdown", "text": "[x](https://e.example) <#C1>"},
            {"type": "rich_text", "elements": [{"type": "rich_text_section", "elements": [
                {"type": "text", "text": "<!channel>"}, {"type": "broadcast", "range": "here"}]}]},
        ],
    }  # fmt: skip
    kinds = [(f.where, f.kind) for f in live_forms_in("chat.postMessage", args)]
    assert kinds == [
        ("text", "broadcast"),
        ("blocks[0].text.text", "user"),
        ("blocks[2].text", "channel"),
        ("blocks[3].elements[0].elements[1]", "broadcast"),
    ]
    assert live_forms_in("chat.postMessage", {"text": "@here now", "link_names": True})[0].raw == "@here"
    assert live_forms_in("chat.postMessage", {"text": "@here now"}) == []
    view = {
        "view": {"blocks": [{"type": "context", "elements": [{"type": "mrkdwn", "text": "<!date^1^{d}|x>"}]}]}
    }
    assert [f.kind for f in live_forms_in("views.publish", view)] == ["date"]
    stream = {"chunks": [{"type": "markdown_text", "text": "<!subteam^S1>"}]}
    assert [f.kind for f in live_forms_in("chat.appendStream", stream)] == ["usergroup"]


# ---- where untrusted values are embedded in what the bot writes -------------------------------------------


def test_a_web_result_titled_with_a_mention_lands_in_sources_inert_with_its_host() -> None:
    r = CitationRenderer()
    r.text("Sign in here.")
    cite = {"type": "url_citation", "url": "https://evil.example/x", "title": "<!here> Slack sign-in",
            "start_index": 0, "end_index": 5}  # fmt: skip
    r.annotate(cite)
    r.annotate({"type": "file_citation", "file_id": "f1", "filename": "<@U0BOSS> plan.pdf", "index": 0})
    footer = r.footer()
    assert footer.endswith(
        "1. [&lt;!here&gt; Slack sign-in](https://evil.example/x) (evil.example)\n2. &lt;@U0BOSS&gt; plan.pdf"
    )
    assert live_tokens(footer) == []


def test_history_meta_modal_home_and_status_embed_values_inert() -> None:
    meta = format_metadata("conv_1", {"slack_user": "U1", "<!channel>": "<@U0BOSS> &lt;b&gt;"})
    assert "`&lt;!channel&gt;`: &lt;@U0BOSS&gt; &amp;lt;b&amp;gt;" in meta and live_tokens(meta) == []
    with pytest.raises(MetadataError) as refused:
        apply_unset({}, ["<!here>"])
    assert "`&lt;!here&gt;`" in refused.value.user_message
    ref = SettingsRef("T1", None, "u:U1", "D1", "U1")
    modal = settings_modal(ref, "conv_<!everyone>", {"slack_team": "<!channel>", "topic": "<!here>"})
    assert live_forms_in("views.update", {"view": modal}) == []
    assert modal["blocks"][2]["element"]["initial_value"] == "topic=<!here>"  # an input's value is plain text
    home = home_view(model="<!channel>", tools=["<@U1>"], threads=[], date=str)
    assert live_forms_in("views.publish", {"view": home}) == []
    calls = [FunctionCall("c1", "<!channel>lookup", "{}")]
    assert calling_status(calls) == "is calling channellookup…"


def test_a_users_literal_text_reaches_the_model_as_typed() -> None:
    # Slack escapes &, < and > in what people type: `&lt;!channel&gt;` is a typed "<!channel>", and
    # `&amp;lt;b&amp;gt;` a typed "&lt;b&gt;". The model reads them as typed; real tokens are unwrapped.
    text = "<@UBOT> repeat &lt;!channel&gt; and &amp;lt;b&amp;gt; &amp;copy; for <!here>"
    assert clean_text(text, "UBOT") == "repeat <!channel> and &lt;b&gt; &copy; for @here"
    echoed = inert_markdown(clean_text(text, "UBOT"))
    assert live_tokens(echoed) == [] and shown(echoed) == "repeat <!channel> and &lt;b&gt; &copy; for @here"


def test_no_link_is_held_beyond_a_blank_line() -> None:
    text = "[Slack sign-in](\n\nhttps://evil.example)"
    assert inert_markdown(text) == text and re.search(r"\(evil\.example\)", inert_markdown(text)) is None
