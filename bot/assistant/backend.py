"""The assistant backend's interface: what turns and thread commands need from whatever holds assistant
threads and runs the model. `responses.ResponsesBackend` holds threads as OpenAI Conversations;
`held.HeldBackend` holds them in Redis for servers without conversations (`held_responses`: /v1/responses
with store=false; `chat`: /v1/chat/completions), chosen by ASSISTANT_BACKEND (issue 17).

Input items use the Responses API's shapes (`user_message`, `tool_output`): the lingua franca a backend
translates from, so the callers never change.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from bot.keys import Keys

# Runs with the response id before any text is shown (the caller records it); raising cancels the response.
OnCreated = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class Status:
    """Progress to show while the model works (a Slack assistant status such as "is running Python…")."""

    text: str


@dataclass(frozen=True)
class StepSource:
    """A web page a step used: its address and a short label (Slack's URL source element)."""

    url: str
    text: str


@dataclass(frozen=True)
class Step:
    """A step of the answer the user can follow (issue 15): a function call, a file or web search, a code
    run. `id` stays the same across its updates: pending -> in_progress -> complete | error."""

    id: str
    title: str
    status: Literal["pending", "in_progress", "complete", "error"]
    sources: tuple[StepSource, ...] = ()


# What a response stream yields: answer text (with citation markers), a progress status, or a step.
Piece = str | Status | Step


@dataclass(frozen=True)
class FunctionCall:
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ApprovalAsk:
    """A tool call waiting for a person's yes (issue 16): a hosted MCP server's `mcp_approval_request`
    (`id` is its id) or a bot-side MCP tool's function call (`id` is its call id)."""

    id: str
    server: str
    tool: str
    arguments: str


@dataclass(frozen=True)
class GeneratedFile:
    """A file the code interpreter wrote in its container."""

    container_id: str
    file_id: str
    filename: str


@dataclass(frozen=True)
class TokenUsage:
    """The tokens one response used (its `usage`), and when it was created (epoch seconds)."""

    input: int
    output: int
    total: int
    reasoning: int | None  # None: the response did not report it
    created_at: float


# Runs with the response id and its usage once a response has ended (completed or incomplete).
OnUsage = Callable[[str, TokenUsage], Awaitable[None]]


@dataclass
class RoundResult:
    """What one response left for the turn to do: function calls to run, MCP calls to approve, files its
    code wrote; and the tokens it used, once it ended."""

    response_id: str | None = None
    usage: TokenUsage | None = None
    calls: list[FunctionCall] = field(default_factory=list)
    files: dict[str, GeneratedFile] = field(default_factory=dict)  # cited files, by container file id
    containers: list[str] = field(default_factory=list)  # containers its code ran in
    approvals: list[ApprovalAsk] = field(default_factory=list)  # hosted MCP calls waiting for a yes


@dataclass(frozen=True)
class TurnRequest:
    """What every response of one turn sends besides its input: the conversation, the per-turn
    instructions and the tools (function specs, hosted tools, the thread's own file search). The backend
    adds the shared knowledge stores to file search unless `knowledge` is off (a Slack Connect guest)."""

    conversation_id: str
    instructions: str
    user_key: str
    tools: list[dict[str, Any]] = field(default_factory=list)
    knowledge: bool = True
    # A channel policy's (issue 15): the model, and the knowledge stores searched instead of the shared
    # ones (None: the configuration's).
    model: str | None = None
    knowledge_ids: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ItemLine:
    """One item of an assistant thread, shortened for `/assistant history`."""

    role: str
    text: str


@dataclass(frozen=True)
class TurnItems:
    """The conversation items one answered turn added: the user's message, and everything of the answer
    (messages, reasoning, tool calls and their outputs)."""

    user: list[str]
    answer: list[str]


@dataclass(frozen=True)
class ConversationInfo:
    id: str
    created_at: int
    metadata: dict[str, str]


class Annotator(Protocol):
    """Turns streamed text and its annotations into what the reader sees (the Slack side's citation
    markers); the backend only reports where parts start and what is annotated."""

    def text(self, delta: str) -> str: ...

    def next_part(self) -> None: ...

    def annotate(self, annotation: object) -> str: ...


class AssistantBackend(Protocol):
    """Assistant threads and the responses that run on them."""

    # --- threads ---
    async def create_conversation(self, metadata: dict[str, str], *, keys: Keys | None = None) -> str:
        """A new assistant thread; `keys`: the workspace it belongs to (where a Redis-held one lives)."""
        ...

    async def delete_conversation(self, conversation_id: str) -> None: ...

    async def info(self, conversation_id: str) -> ConversationInfo: ...

    async def set_metadata(self, conversation_id: str, metadata: dict[str, str]) -> None: ...

    async def newest_items(self, conversation_id: str, limit: int) -> list[ItemLine]: ...

    async def count_items(self, conversation_id: str) -> int: ...

    async def holds_message(self, conversation_id: str, text: str) -> bool: ...

    async def add_items(self, conversation_id: str, items: list[dict[str, Any]]) -> None: ...

    # True: `turn_items` can find a turn's items later, from the turn's response ids (the runner then
    # records only those when the turn ends, and the items are looked up if a message is ever deleted or
    # forgotten); False: it can only read the turn that just ended, and is asked right then.
    defers_turn_items: bool

    async def turn_items(
        self, conversation_id: str, response_ids: Sequence[str] = ()
    ) -> TurnItems | None: ...

    async def delete_items(self, conversation_id: str, item_ids: list[str]) -> int: ...

    # --- responses ---
    def answer(
        self,
        turn: TurnRequest,
        items: list[dict[str, Any]],
        *,
        on_created: OnCreated,
        result: RoundResult,
        citations: Annotator | None = None,
    ) -> AsyncGenerator[Piece, None]: ...

    def resume(self, response_id: str, *, result: RoundResult) -> AsyncGenerator[Piece, None]: ...

    async def replay(self, response_id: str) -> str: ...

    async def cancel(self, response_id: str) -> None: ...


def user_message(text: str, parts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The user's message as an input item: the text, then any extra content parts (images)."""
    content = [{"type": "input_text", "text": text}, *(parts or [])]
    return {"type": "message", "role": "user", "content": content}


def tool_output(call_id: str, output: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def approval_response(request_id: str, approve: bool) -> dict[str, Any]:
    """The answer to a hosted MCP server's approval request (spec `MCPApprovalResponse`)."""
    return {"type": "mcp_approval_response", "approval_request_id": request_id, "approve": approve}
