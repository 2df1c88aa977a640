"""Tool use for the fake OpenAI: scripted function calls, code interpreter runs, web searches, and the
Containers API the code interpreter relies on (files live in ``openai_files.FilesState``).

Kept apart from ``openai_api`` so that module only wires these into its ``Reply`` and event stream. Shapes
follow the spec's ``FunctionToolCall``, ``CodeInterpreterToolCall``, ``WebSearchToolCall``,
``ContainerFileCitationBody``, ``UrlCitationBody``, ``ContainerResource`` and ``ContainerFileResource``
schemas, and the ``response.*`` events of the ``ResponseStreamEvent`` union.

Hosted MCP servers (``McpScript``) follow the spec's ``MCPListTools``, ``MCPApprovalRequest``, ``MCPToolCall``
and ``MCPApprovalResponse`` schemas and the ``response.mcp_*`` events; the fake calls no server (the output
is scripted) and records each request's ``mcp`` tools (headers included) in ``FakeOpenAI.mcp_tools_seen``.

Choices where the real API is vague:

* A scripted tool the request did not declare is not called (the real model cannot call a tool it was not
  given); the response goes on without it and ``FakeOpenAI.tool_mismatches`` says what was skipped. The same
  goes for all but the first of several function calls when the request sets ``parallel_tool_calls: false``.
* ``container: {"type": "auto", ...}`` creates a new container for each response that runs code; a container
  id (a string) reuses a container made by ``POST /v1/containers`` or by an earlier run. The container's
  input files (``file_ids``, which must name files uploaded with ``POST /v1/files``) are copied into it as
  ``source: "user"`` files under ``/mnt/data/``; files the run produces are ``source: "assistant"``.
* ``GET /v1/containers/{id}/files/{file_id}/content`` answers the file's binary content (the spec documents
  only ``200`` with the bytes) with chunked transfer, ``CONTENT_CHUNK`` bytes at a time, generated lazily for
  a file scripted by ``size`` (``ContainerFile("big.bin", size=24 << 20)`` never exists in memory). The fake
  hands the socket the next chunk only once the client's kernel acknowledged the last one (a small
  ``SO_SNDBUF``, no transport buffer, then ``SIOCOUTQ`` down to 0), so what it counts as sent
  (``FakeOpenAI.container_file_downloads``) is what the client read plus at most a chunk or two on the way,
  and a client that stops reading and closes the connection ends the transfer there (``completed`` stays
  False). The real API's transfer encoding is not documented; chunked is the case a client must handle
  without a ``Content-Length`` to check first.
* A citation's ``start_index``/``end_index`` span the first place its file (``sandbox:/mnt/data/<name>``,
  else ``<name>``) or its URL (else its title) appears in the text; when it does not appear, both are the
  text's length. Without scripted text, the text is made of markdown links to every file or result.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.openai_files import FilesState

Json = dict[str, Any]
EventFactory = Callable[..., Json]  # _Run.event: (type, **fields) -> event with its sequence number

WEB_SEARCH_TOOLS = frozenset(
    {"web_search", "web_search_2025_08_26", "web_search_preview", "web_search_preview_2025_03_11"}
)


@dataclass(frozen=True)
class ToolCall:
    """One scripted ``function_call`` output item."""

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)  # a dict is sent JSON-encoded
    call_id: str | None = None  # None: a fresh "call_..." id; "": none (a chat stream then omits `id`)

    @property
    def arguments_json(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass(frozen=True)
class McpScript:
    """A hosted MCP server's use in one response (the Responses ``mcp`` tool; OpenAI makes the calls): the
    server's tool list (``mcp_list_tools``, once per conversation and server), then, if the request's
    ``require_approval`` asks for it and the input does not answer it yet, an ``mcp_approval_request`` and
    no message; else the ``mcp_call`` (``output``, or ``error``: the call failed) and the text. An
    ``mcp_approval_response`` that says no: no call, and the text says it was not approved."""

    server_label: str
    tool: str
    arguments: dict[str, Any] = field(default_factory=dict)
    output: str = ""
    error: str | None = None
    tools: tuple[str, ...] = ()  # listed by mcp_list_tools; empty: just ``tool``

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments)


@dataclass(frozen=True)
class ContainerFile:
    """A file a scripted code interpreter run writes to its container (then cited in the reply). With
    ``size``, its content is ``size`` bytes of a fixed pattern, made chunk by chunk as it is downloaded."""

    name: str
    content: bytes = b""
    mime: str = "application/octet-stream"
    size: int | None = None


# How the fake serves container file content (see the module docstring).
CONTENT_CHUNK = 64 * 1024
_PATTERN = bytes(range(256)) * (CONTENT_CHUNK // 256)


def pattern_bytes(offset: int, length: int) -> bytes:
    """``length`` bytes of a lazily generated file, from ``offset`` (a file scripted by size)."""
    start = offset % len(_PATTERN)
    out = bytearray()
    while len(out) < length:
        out += _PATTERN[start : start + length - len(out)]
        start = 0
    return bytes(out)


def new_id(prefix: str, sep: str = "_") -> str:
    return f"{prefix}{sep}{secrets.token_hex(24 if sep == '_' else 12)}"


def chunked(text: str, size: int) -> list[str]:
    size = max(1, size)
    return [text[i : i + size] for i in range(0, len(text), size)]


# --------------------------------------------------------------------------------------------------
# What a request declared, and what it sent back
# --------------------------------------------------------------------------------------------------


def declared_functions(tools: Iterable[Json]) -> set[str]:
    return {t["name"] for t in tools if t.get("type") == "function" and isinstance(t.get("name"), str)}


def declared_web_search(tools: Iterable[Json]) -> bool:
    return any(t.get("type") in WEB_SEARCH_TOOLS for t in tools)


def declared_mcp(tools: Iterable[Json], label: str) -> Json | None:
    return next((t for t in tools if t.get("type") == "mcp" and t.get("server_label") == label), None)


def mcp_needs_approval(server: Json, tool: str) -> bool:
    """Spec ``MCPTool.require_approval``: "always" (the default), "never", or filters by tool name."""
    setting = server.get("require_approval")
    if setting is None or setting == "always":
        return True
    if setting == "never":
        return False
    # Named in "always", or not named at all (the default): approval; named in "never": none.
    return tool not in ((setting.get("never") or {}).get("tool_names") or [])


def mcp_approval_problem(seen: list[Json], new_items: list[Json]) -> str | None:
    """A 400 for an ``mcp_approval_response`` that answers no approval request of the conversation (the
    real API's message is not documented; this one says what is wrong)."""
    asked = {i.get("id") for i in seen if i.get("type") == "mcp_approval_request"}
    for item in new_items:
        if item.get("type") == "mcp_approval_response" and item.get("approval_request_id") not in asked:
            return f"No approval request found with id {item.get('approval_request_id')}."
    return None


def declared_code_interpreter(tools: Iterable[Json]) -> Json | None:
    return next((t for t in tools if t.get("type") == "code_interpreter"), None)


def output_text(output: Any) -> str:
    """The text of a function_call_output's ``output`` (a string, or a list of content parts)."""
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "\n".join(p["text"] for p in output if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def tool_call_problem(seen: list[Json], new_items: list[Json]) -> str | None:
    """The real API's 400 message when function calls and their outputs do not pair up, else None."""
    calls = [i.get("call_id") for i in seen if i.get("type") == "function_call"]
    answered = {i.get("call_id") for i in seen if i.get("type") == "function_call_output"}
    for item in new_items:
        if item.get("type") == "function_call_output" and item.get("call_id") not in calls:
            return f"No tool call found for function call output with call_id {item.get('call_id')}."
    for call_id in calls:
        if call_id not in answered:
            return f"No tool output found for function call {call_id}."
    return None


def echo_text(new_items: list[Json]) -> str:
    outputs = [output_text(i.get("output")) for i in new_items if i.get("type") == "function_call_output"]
    return "\n".join(f"Tool said: {o}" for o in outputs) if outputs else "Tool said nothing."


def span(text: str, *needles: str) -> tuple[int, int]:
    """Where the first of ``needles`` found in ``text`` is (see the module docstring)."""
    for needle in needles:
        if needle and (at := text.find(needle)) >= 0:
            return at, at + len(needle)
    return len(text), len(text)


# --------------------------------------------------------------------------------------------------
# Output items
# --------------------------------------------------------------------------------------------------


def function_call_item(call: ToolCall, status: str) -> Json:
    return {
        "id": new_id("fc"),
        "type": "function_call",
        "status": status,
        "arguments": call.arguments_json if status == "completed" else "",
        "call_id": call.call_id or new_id("call"),
        "name": call.name,
    }


def web_search_item(query: str, results: Iterable[tuple[str, str]], with_sources: bool) -> Json:
    action: Json = {"type": "search", "query": query, "queries": [query]}
    if with_sources:
        action["sources"] = [{"type": "url", "url": url} for url, _ in results]
    return {"id": new_id("ws"), "type": "web_search_call", "status": "completed", "action": action}


def code_interpreter_item(container_id: str, code: str, logs: str | None) -> Json:
    return {
        "id": new_id("ci"),
        "type": "code_interpreter_call",
        "status": "completed",
        "container_id": container_id,
        "code": code,
        "outputs": None if logs is None else [{"type": "logs", "logs": logs}],
    }


def mcp_list_tools_item(label: str, names: Iterable[str]) -> Json:
    tools = [
        {"name": n, "description": f"The {n} tool.", "input_schema": {"type": "object"}, "annotations": None}
        for n in names
    ]
    return {
        "id": new_id("mcpl"),
        "type": "mcp_list_tools",
        "server_label": label,
        "tools": tools,
        "error": None,
    }


def mcp_approval_request_item(script: McpScript) -> Json:
    return {
        "id": new_id("mcpr"),
        "type": "mcp_approval_request",
        "server_label": script.server_label,
        "name": script.tool,
        "arguments": script.arguments_json,
    }


def mcp_call_item(script: McpScript, approval_request_id: str | None) -> Json:
    failed = script.error is not None
    return {
        "id": new_id("mcp"),
        "type": "mcp_call",
        "server_label": script.server_label,
        "name": script.tool,
        "arguments": script.arguments_json,
        "output": None if failed else script.output,
        "error": {"type": "mcp_tool_execution_error", "content": script.error} if failed else None,
        "status": "failed" if failed else "completed",
        "approval_request_id": approval_request_id,
    }


def stream_item(
    event: EventFactory, index: int, item: Json, *, chunk_size: int = 8
) -> list[tuple[Json, bool]]:
    """The events of one tool item, as (event, is_a_delta); delays go between deltas."""
    kind = item["type"]
    item_id = item["id"]
    out: list[tuple[Json, bool]] = []

    def add(type_: str, is_delta: bool = False, **fields: Any) -> None:
        out.append((event(type_, **fields), is_delta))

    if kind == "function_call":
        added = {**item, "status": "in_progress", "arguments": ""}
        add("response.output_item.added", output_index=index, item=added)
        for piece in chunked(item["arguments"], chunk_size):
            add(
                "response.function_call_arguments.delta",
                True,
                item_id=item_id,
                output_index=index,
                delta=piece,
            )
        add(
            "response.function_call_arguments.done",
            item_id=item_id,
            output_index=index,
            name=item["name"],
            arguments=item["arguments"],
        )
    elif kind == "code_interpreter_call":
        added = {**item, "status": "in_progress", "code": "", "outputs": None}
        add("response.output_item.added", output_index=index, item=added)
        add("response.code_interpreter_call.in_progress", output_index=index, item_id=item_id)
        for piece in chunked(item["code"], chunk_size):
            add(
                "response.code_interpreter_call_code.delta",
                True,
                output_index=index,
                item_id=item_id,
                delta=piece,
            )
        add(
            "response.code_interpreter_call_code.done", output_index=index, item_id=item_id, code=item["code"]
        )
        add("response.code_interpreter_call.interpreting", output_index=index, item_id=item_id)
        add("response.code_interpreter_call.completed", output_index=index, item_id=item_id)
    elif kind == "web_search_call":
        added = {**item, "status": "in_progress"}
        add("response.output_item.added", output_index=index, item=added)
        add("response.web_search_call.in_progress", output_index=index, item_id=item_id)
        add("response.web_search_call.searching", output_index=index, item_id=item_id)
        add("response.web_search_call.completed", output_index=index, item_id=item_id)
    elif kind == "file_search_call":
        added = {**item, "status": "in_progress"}
        add("response.output_item.added", output_index=index, item=added)
        for phase in ("in_progress", "searching", "completed"):
            add(f"response.file_search_call.{phase}", output_index=index, item_id=item_id)
    elif kind == "mcp_list_tools":
        add("response.output_item.added", output_index=index, item={**item, "tools": []})
        add("response.mcp_list_tools.in_progress", output_index=index, item_id=item_id)
        add("response.mcp_list_tools.completed", output_index=index, item_id=item_id)
    elif kind == "mcp_call":
        added = {**item, "status": "in_progress", "arguments": "", "output": None, "error": None}
        add("response.output_item.added", output_index=index, item=added)
        for piece in chunked(item["arguments"], chunk_size):
            add("response.mcp_call_arguments.delta", True, item_id=item_id, output_index=index, delta=piece)
        add(
            "response.mcp_call_arguments.done",
            item_id=item_id,
            output_index=index,
            arguments=item["arguments"],
        )
        add("response.mcp_call.in_progress", output_index=index, item_id=item_id)
        ended = "response.mcp_call.failed" if item["status"] == "failed" else "response.mcp_call.completed"
        add(ended, output_index=index, item_id=item_id)
    elif kind == "mcp_approval_request":
        add("response.output_item.added", output_index=index, item=item)
    else:  # pragma: no cover - only the kinds above are scripted
        raise ValueError(kind)
    add("response.output_item.done", output_index=index, item=item)
    return out


# --------------------------------------------------------------------------------------------------
# Containers (state lives in FakeOpenAI, under its lock)
# --------------------------------------------------------------------------------------------------


@dataclass
class StoredContainerFile:
    id: str
    container_id: str
    path: str
    source: str  # "user" (copied from an input file) or "assistant" (written by the code)
    content: bytes
    mime: str
    created_at: int = field(default_factory=lambda: int(time.time()))
    lazy_size: int | None = None  # content made on the fly (pattern_bytes), never stored

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def size(self) -> int:
        return self.lazy_size if self.lazy_size is not None else len(self.content)

    def chunk(self, offset: int) -> bytes:
        """The content's chunk at ``offset`` (empty past the end)."""
        length = max(0, min(CONTENT_CHUNK, self.size - offset))
        if self.lazy_size is not None:
            return pattern_bytes(offset, length)
        return self.content[offset : offset + length]

    def json(self) -> Json:
        return {
            "id": self.id,
            "object": "container.file",
            "created_at": self.created_at,
            "bytes": self.size,
            "container_id": self.container_id,
            "path": self.path,
            "source": self.source,
        }


@dataclass
class StoredContainer:
    id: str
    name: str
    input_file_ids: list[str]
    memory_limit: str = "1g"
    created_at: int = field(default_factory=lambda: int(time.time()))
    files: dict[str, StoredContainerFile] = field(default_factory=dict)

    def json(self) -> Json:
        return {
            "id": self.id,
            "object": "container",
            "name": self.name,
            "created_at": self.created_at,
            "status": "running",
            "last_active_at": int(time.time()),
            "expires_after": {"anchor": "last_active_at", "minutes": 20},
            "memory_limit": self.memory_limit,
        }

    def add(
        self, name: str, content: bytes, mime: str, source: str, size: int | None = None
    ) -> StoredContainerFile:
        stored = StoredContainerFile(
            id=new_id("cfile"),
            container_id=self.id,
            path=f"/mnt/data/{name}",
            source=source,
            content=content,
            mime=mime,
            lazy_size=size,
        )
        self.files[stored.id] = stored
        return stored

    def record(self) -> Json:
        """What ``FakeOpenAI.containers`` shows a test."""
        return {
            **self.json(),
            "input_file_ids": list(self.input_file_ids),
            "files": [{**f.json(), "content": f.content, "mime": f.mime} for f in self.files.values()],
        }


def new_container(name: str, file_ids: list[str], files: FilesState, memory: str) -> StoredContainer:
    """A container with copies of ``file_ids`` (all stored in ``files``) as user files."""
    container = StoredContainer(
        id=new_id("cntr"), name=name, input_file_ids=list(file_ids), memory_limit=memory
    )
    for file_id in file_ids:
        filename = str(files.files[file_id]["filename"])
        container.add(filename, files.contents.get(file_id, b""), "application/octet-stream", "user")
    return container
