"""The Chat Completions API for the fake OpenAI (issue 17), and the server styles it can play.

``FakeOpenAI.set_api_style``:

* ``"openai"`` (the default): everything, as OpenAI serves it.
* ``"responses"``: a server with ``/v1/responses`` but no Conversations API (vLLM, LM Studio, LiteLLM…):
  ``/v1/conversations…`` answer 404, and a response may neither name a ``conversation`` nor be stored or run
  in the background (``store`` must be false: such a server keeps nothing).
* ``"chat_completions"``: a server with only ``/v1/chat/completions`` (and ``/v1/models``), e.g. Ollama or
  llama.cpp: every other path answers 404.

``POST /v1/chat/completions`` is validated against the spec's ``CreateChatCompletionRequest`` by the same
middleware as every other request, and behaves as the real API does where the bot relies on it:

* An assistant message with ``tool_calls`` must be followed by ``tool`` messages answering each of its
  ``tool_call_id``s (400 "An assistant message with 'tool_calls' must be followed by tool messages
  responding to each 'tool_call_id'…", the API's wording), and a ``tool`` message must answer one.
* The messages (as rendered text, ``context_tokens``) must fit the context window: else 400
  ``context_length_exceeded`` (the API's code for it, ``param: messages``).
* ``stream: true`` answers ``chat.completion.chunk`` events (spec ``CreateChatCompletionStreamResponse``):
  the role, the content in ``chunk_size`` pieces, the tool calls (id and name first, then the arguments),
  a chunk with the ``finish_reason``; with ``stream_options.include_usage`` a last chunk with empty
  ``choices`` and the ``usage``; then ``data: [DONE]``. ``Reply.drop_after_chunks`` cuts the connection.
* A scripted ``Reply`` plays as in the Responses API: its text (else "Echo: <last user text>"), its tool
  calls (only the tools the request declares), ``echo_tool_outputs``, ``incomplete_reason`` (finish
  ``length``), ``http_status``.

Each request is recorded in ``model_inputs`` like a response's, its messages turned into Responses-style
``input_items`` so tests read every backend's history the same way.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from aiohttp import web

Json = dict[str, Any]

STYLES = ("openai", "responses", "chat_completions")
# Paths each style serves (besides /v1/models): a server without the rest answers 404.
_CONVERSATIONS = "/v1/conversations"


def served(style: str, method: str, path: str) -> bool:
    if style == "responses":
        return not path.startswith(_CONVERSATIONS)
    if style == "chat_completions":
        return path.startswith(("/v1/chat/completions", "/v1/models"))
    return True


def responses_problem(style: str, body: Json) -> str | None:
    """What a store-less Responses server refuses (its 400 message), else None."""
    if style != "responses":
        return None
    if body.get("conversation") is not None:
        return "This server has no Conversations API: 'conversation' is not supported."
    if body.get("store") is not False:
        return "This server stores nothing: 'store' must be false."
    if body.get("background"):
        return "'background' requires store=true, which this server does not support."
    return None


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(str(p.get("text", "")) for p in content or [] if isinstance(p, dict))


def as_items(messages: list[Json]) -> list[Json]:
    """Chat messages as Responses-style items (system messages left out: they are the instructions)."""
    items: list[Json] = []
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            continue
        if role == "tool":
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": message.get("tool_call_id"),
                    "output": _content_text(message.get("content")),
                }
            )
            continue
        text = _content_text(message.get("content"))
        if role == "assistant":
            if text:
                content = [{"type": "output_text", "text": text}]
                items.append({"type": "message", "role": "assistant", "content": content})
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                items.append(
                    {
                        "type": "function_call",
                        "call_id": call.get("id"),
                        "name": function.get("name"),
                        "arguments": function.get("arguments"),
                    }
                )
            continue
        parts: list[Json] = [{"type": "input_text", "text": text}] if text else []
        raw = message.get("content")
        for part in raw if isinstance(raw, list) else []:
            if isinstance(part, dict) and part.get("type") == "image_url":
                parts.append({"type": "input_image", "image_url": (part.get("image_url") or {}).get("url")})
        items.append({"type": "message", "role": "user", "content": parts})
    return items


def pairing_problem(messages: list[Json]) -> str | None:
    """The real API's 400 for tool calls and tool messages that do not pair up, else None."""
    waiting: list[str] = []
    for message in messages:
        role = message.get("role")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in waiting:
                return (
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                    "message with 'tool_calls'."
                )
            waiting.remove(call_id)
            continue
        if waiting:
            return (
                "An assistant message with 'tool_calls' must be followed by tool messages responding to "
                f"each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                f"{', '.join(waiting)}"
            )
        if role == "assistant":
            waiting = [str(c.get("id")) for c in message.get("tool_calls") or []]
    if waiting:
        return (
            "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
            f"'tool_call_id'. The following tool_call_ids did not have response messages: "
            f"{', '.join(waiting)}"
        )
    return None


def chunk(completion_id: str, model: str, created: int, delta: Json, finish: str | None = None) -> Json:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }


def usage(prompt: int, completion: int) -> Json:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "completion_tokens_details": {"reasoning_tokens": 0},
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


async def write_event(response: web.StreamResponse, payload: Json | str) -> None:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    await response.write(f"data: {data}\n\n".encode())


def now() -> int:
    return int(time.time())
