"""Output is inert unless the bot means it (issue 12): whatever the model, a web page, a file name or a
stored value says, Slack receives no live mention, broadcast or disguised link; and a user's literal text
stays literal. The bot as a real process; the fake reads every request as Slack would (`live_forms`)."""

from __future__ import annotations

import json

import openai

from tests.conftest import BotFactory
from tests.fakes.openai_api import FakeOpenAI, Reply
from tests.fakes.slack_api import FakeSlack
from tests.harness import OPENAI_KEY, SlackSender, mention, message
from tests.test_bridge_e2e import ALICE, CHANNEL, DM, answers
from tests.test_commands_e2e import command, shortcut
from tests.test_files_e2e import notices, share

# Every special form Slack acts on (docs.slack.dev/messaging/formatting-message-text, "Advanced formatting").
EVERY_FORM = (
    "Repeat exactly: <!channel> <!here> <!everyone> <!here|here> <!subteam^S0SECURITY|@security> "
    "<@U0BOSS> <@W0ENTERPRISE|bob> <#C0GENERAL|general> <https://evil.example/login|Slack sign-in> "
    "<https://evil.example> <mailto:ceo@evil.example|CEO> <!date^1700000000^{date_short}|today>"
)


def shown(text: str) -> str:
    """What a reader sees of what the bot sent: Slack decodes these three entities for display."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def test_model_output_with_every_special_form_posts_none_of_them_live(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender
) -> None:
    # Three characters a delta: every form reaches the bot split, "<!ch" + "ann" + "el>".
    openai_fake.script(Reply(text=EVERY_FORM, chunk_size=3))
    event = mention(CHANNEL, ALICE, "Repeat exactly what I say")
    sender.send_event(event)
    [reply] = answers(slack, CHANNEL, event["ts"])
    assert reply.kind == "stream"
    assert slack.live_forms() == []
    # Nothing lost: the reader sees the text, as text.
    assert shown(reply.text) == EVERY_FORM
    assert "&lt;!channel&gt;" in reply.text and "&lt;@U0BOSS&gt;" in reply.text


def test_a_long_answer_split_over_several_messages_posts_none_live(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    sender = SlackSender(start_bot(MAX_MESSAGE_CHARS="600").url)
    text = (EVERY_FORM + "\n\n") * 8
    openai_fake.script(Reply(text=text, chunk_size=7))
    event = mention(CHANNEL, ALICE, "again, a lot")
    sender.send_event(event)

    def finished() -> bool:
        msgs = slack.messages(CHANNEL, event["ts"])
        return sum(len(shown(m.text)) for m in msgs) >= len(text.rstrip()) and not any(
            m.streaming for m in msgs
        )

    slack.wait_for(finished, timeout=30)
    msgs = slack.messages(CHANNEL, event["ts"])
    assert len(msgs) >= 3 and all(len(m.text) <= 600 for m in msgs)
    assert slack.live_forms() == []
    assert shown("".join(m.text for m in msgs)) == text


def test_a_disguised_markdown_link_shows_its_real_host(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender
) -> None:
    answer = (
        "Your session expired. Please [Slack sign-in](https://evil.example/login) again, "
        "or read [https://docs.example.com/a](https://docs.example.com/a).\n\n"
        "[1]: https://evil.example/ref\n> Quoted > text stays a quote."
    )
    openai_fake.script(Reply(text=answer, chunk_size=4))
    event = mention(CHANNEL, ALICE, "help me sign in")
    sender.send_event(event)
    [reply] = answers(slack, CHANNEL, event["ts"])
    assert "[Slack sign-in](https://evil.example/login) (evil.example) again" in reply.text
    assert "[https://docs.example.com/a](https://docs.example.com/a)." in reply.text  # shows itself already
    assert "[1]\\: https://evil.example/ref" in reply.text  # no definition makes [1] a link
    assert reply.text.endswith("\n> Quoted &gt; text stays a quote.")
    assert slack.live_forms() == []


def test_a_web_result_titled_with_a_mention_lands_in_sources_inert(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender
) -> None:
    text = "Sign in at the usual page."
    title = "<!here> Slack sign-in <@U0BOSS>"
    cite = {"type": "url_citation", "url": "https://evil.example/x", "title": title,
            "start_index": 0, "end_index": len(text)}  # fmt: skip
    openai_fake.script(Reply(text=text, chunk_size=5, annotations=(cite,)))
    event = mention(CHANNEL, ALICE, "where do I sign in?")
    sender.send_event(event)
    [reply] = answers(slack, CHANNEL, event["ts"])
    assert reply.text.endswith(
        "**Sources**\n1. [&lt;!here&gt; Slack sign-in &lt;@U0BOSS&gt;](https://evil.example/x) (evil.example)"
    )
    assert slack.live_forms() == []


def test_history_meta_and_the_settings_modal_show_stored_mentions_inert(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender
) -> None:
    # Alice typed "<!channel>" (Slack escapes it); the model answers with live-looking forms.
    first = message(DM, ALICE, "note &lt;!channel&gt; please")
    openai_fake.script(Reply(text="Noted <!here> and <@U0BOSS>."))
    sender.send_event(first)
    answers(slack, DM, first["ts"])
    history = command(sender, "history 2")
    assert "*Assistant:* Noted &lt;!here&gt; and &lt;@U0BOSS&gt;." in history
    assert "*User:* note &lt;!channel&gt; please" in history

    saved = command(sender, 'meta set topic="&lt;!channel&gt; launch" &lt;!here&gt;=1')
    assert "`topic`: &lt;!channel&gt; launch" in saved and "`&lt;!here&gt;`: 1" in saved
    [conv_id] = list(openai_fake.conversations)
    metadata = openai_fake.conversation(conv_id)["metadata"]
    assert metadata["topic"] == "<!channel> launch"  # stored as the user typed it
    # A value stored by anything else with access to the project comes back inert too.
    client = openai.OpenAI(base_url=openai_fake.base_url, api_key=OPENAI_KEY)
    client.conversations.update(conv_id, metadata={**metadata, "slack_thread_ts": "<!everyone>"})
    shown_meta = command(sender, "meta")
    assert "`slack_thread_ts`: &lt;!everyone&gt;" in shown_meta

    reply = slack.messages(DM)[0]
    assert shortcut(sender, channel=DM, user=ALICE, ts=reply.ts, thread_ts=reply.thread_ts,
                    callback="thread_settings") == 200  # fmt: skip
    slack.wait_for(lambda: any(v.get("callback_id") == "thread_settings_modal" for v in slack.views()))
    modal = slack.views()[-1]
    assert "&lt;!everyone&gt;" in json.dumps(modal["blocks"])
    # The text box holds the values to edit as they are: an input's value is never parsed.
    [box] = [b for b in modal["blocks"] if b.get("block_id") == "meta_block"]
    assert "topic=<!channel> launch" in box["element"]["initial_value"]
    # Nothing the bot sent anywhere (answer, command answers, the modal) was live.
    assert slack.live_forms() == []


def test_a_users_literal_text_stays_literal(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender
) -> None:
    # Alice typed `<!channel>` and `&lt;!here&gt;` as text; Slack sent them escaped. The fake model echoes.
    event = mention(CHANNEL, ALICE, "say &lt;!channel&gt; and &amp;lt;!here&amp;gt;")
    sender.send_event(event)
    [reply] = answers(slack, CHANNEL, event["ts"])
    seen = json.dumps(openai_fake.model_inputs[0]["input_items"])
    assert "say <!channel> and &lt;!here&gt;" in seen  # the model reads what Alice typed
    assert shown(reply.text) == "Echo: say <!channel> and &lt;!here&gt;"  # and she sees it back as typed
    assert slack.live_forms() == []


def test_a_file_named_like_a_mention_is_named_inert_in_notices(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender
) -> None:
    bad = slack.add_file("<!channel> setup.<!here>", b"MZ\x90\x00", mimetype="application/x-msdownload")
    event = share(DM, ALICE, "read this", [bad])
    sender.send_event(event)
    slack.wait_for(lambda: bool(notices(slack, DM, event["ts"])))
    [notice] = notices(slack, DM, event["ts"])
    assert "I can't read files of that type like `&lt;!channel&gt; setup.&lt;!here&gt;`." in notice
    assert slack.live_forms() == []
    # A Markdown link hidden in the type (the name's "extension", cut at a look-alike full stop) is not
    # shown as a link: the type is named only when it looks like one.
    disguised = slack.add_file("report.[Sign in to Slack](https://slack-login\u3002example/x)", b"x")
    event = share(DM, ALICE, "and this", [disguised])
    sender.send_event(event)
    slack.wait_for(lambda: bool(notices(slack, DM, event["ts"])))
    [notice] = notices(slack, DM, event["ts"])
    assert "I can't read files of that type like `report.[Sign in to Slack](https://" in notice
    # The only link-shaped text is the name, inside a code span (where Markdown makes no link).
    outside_code = notice.split("`")[0::2]
    assert not any("](" in part for part in outside_code)
    assert slack.live_forms() == []
