"""One error root for everything the bot can tell a user.

Each subclass carries the short, friendly text shown in Slack; the detail (cause, ids) goes to the log only,
so no exception text, token or secret ever reaches a user.
"""

from __future__ import annotations


class BotError(Exception):
    """Root of the bot's own errors. `user_message` is safe to show in Slack."""

    user_message = "Sorry, something went wrong on my side. Please try again in a moment."

    def __init__(self, detail: str = "", *, user_message: str | None = None) -> None:
        super().__init__(detail or self.__class__.__name__)
        if user_message is not None:
            self.user_message = user_message


class MetadataError(BotError):
    """A metadata change that breaks a rule; `user_message` says which and by how much. Raised where the
    rules are checked before a write (bot/threads/metadata.py) and by a backend that keeps them itself."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems), user_message="\n".join(f"• {p}" for p in problems))
        self.problems = problems


class ConfigError(BotError):
    """Start-up configuration is missing or malformed; the message names each variable."""


class AssistantUnavailable(BotError):
    user_message = "Sorry, I couldn't reach the assistant just now. Please try again in a moment."


class AssistantRateLimited(AssistantUnavailable):
    user_message = "The assistant is getting a lot of requests right now. Please try again in a minute."


class AssistantBusy(AssistantUnavailable):
    user_message = "The assistant is still busy with this thread. Please try again in a moment."


class AssistantFailed(AssistantUnavailable):
    user_message = "Sorry, the assistant couldn't finish that answer. Please try again."


class ContextTooLong(AssistantUnavailable):
    """The thread no longer fits the model's window, even with compaction: trying again won't help."""

    user_message = (
        "This thread has grown too long for the assistant to read. Start it over with "
        "`@Assistant reset` in this thread (or `/assistant reset` in our DM), then ask again."
    )


class ResponseVanished(AssistantUnavailable):
    """OpenAI no longer has the response being followed (404): waiting for it is pointless."""

    user_message = "The assistant lost track of that answer. Please ask again."


class AnswerIncomplete(AssistantUnavailable):
    user_message = "The answer was cut short (it reached the assistant's output limit)."


class StoreUnavailable(BotError):
    user_message = "I'm briefly unavailable (my storage is not answering). Please try again in a minute."


class SlackDeliveryError(BotError):
    """Slack refused to show the answer; there is no channel left to tell the user through."""


class NoAssistantThread(BotError):
    user_message = "There's no assistant thread here yet. Send me a message first."


class NotYourThread(BotError):
    user_message = "Only the person who started this assistant thread can see or change it."


class SpendLimited(BotError):
    """A spend limit (tokens per minute: messages, files by size, commands) was reached; nothing was sent
    to OpenAI."""


class UserSpendLimited(SpendLimited):
    user_message = (
        "You're sending me messages faster than I can answer them. Please wait a minute and try again."
    )


class TeamSpendLimited(SpendLimited):
    user_message = (
        "This workspace has reached its limit of messages per minute for me. Please try again in a minute."
    )


class ThreadPaused(SpendLimited):
    """The thread had its answers for this minute (two apps answering each other, most likely)."""

    user_message = (
        "This thread is getting answers faster than anyone can read them, so I'm pausing it for a minute. "
        "Write again after that."
    )


class ThreadCapped(ThreadPaused):
    """The thread had its answers for the day: two apps answering each other, slower than a minute's cap."""

    user_message = (
        "This thread has had as many answers as one thread gets in a day, so I've stopped answering here "
        "(it keeps two apps from answering each other forever). Start a new thread to go on."
    )


class TurnInterrupted(BotError):
    """A turn stopped without an answer or a notice (storage lost, lock lost, Slack refusing): it stays
    queued and is resumed later from its progress record, so the user is not told anything yet."""


class TurnAbandoned(BotError):
    user_message = "Sorry, I couldn't answer this message after several tries. Please send it again."


class ApprovalDenied(BotError):
    """A tool call that needed the asker's yes was denied, or not answered in time (issue 16): the call was
    not run, and the answer ends here. The user message names the tool (names from the configuration)."""


class ToolLoopStopped(BotError):
    """The tool loop hit its limit on rounds or time; the calls left were closed with an error output."""

    def __init__(self, detail: str, *, rounds: int, out_of_time: bool = False) -> None:
        if out_of_time:
            message = (
                "I stopped: the tools I was using took too long for this message. Try a narrower question."
            )
        else:
            message = (
                f"I stopped after {rounds} rounds of tool calls without reaching an answer. "
                "Try a narrower question."
            )
        super().__init__(detail, user_message=message)


# --- channel policy (issue 15 item 4) ----------------------------------------------------------------------


class PolicyError(BotError):
    """A channel policy could not be changed; nothing was saved. The user message says why."""


class NotPolicyAdmin(PolicyError):
    user_message = (
        "Only workspace admins and owners (and the people in this bot's POLICY_ADMINS) can change the "
        "assistant's policy. Nothing was changed; `/assistant config show` shows the current one."
    )


class PolicyInvalid(PolicyError):
    """A value of a policy is not usable (unknown model, tool or store; a malformed limit)."""


class PolicyLimited(SpendLimited):
    """A channel policy's own spend limit was reached at turn time: the message is not answered."""


class AnswerStopped(BotError):
    """The user pressed the agent session's stop button (`agent_session_stopped`, or Slack answering
    `stopped_by_user`): the turn ends there, with a short note; it is done, never retried."""

    user_message = "_Stopped._"


class NotOnThisServer(BotError):
    """Asked for what only OpenAI hosts (file search, code interpreter, web search, hosted MCP) on a
    Redis-held backend (issue 17): refused in the thread, never silently dropped."""

    user_message = (
        "This assistant runs on a server without OpenAI's hosted tools, so it can't search files, run "
        "code or search the web here. Paste the text you want me to read into your message instead."
    )
