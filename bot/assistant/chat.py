"""A Redis-held thread run on a server's Chat Completions API (issue 17): Ollama, llama.cpp, vLLM, LM
Studio, LiteLLM… The thread's items (the Responses input shape) become chat messages: the instructions a
system message, function calls an assistant message's `tool_calls`, their outputs `tool` messages. A
request keeps nothing on the server, so sending it again is safe (the SDK's own retries apply)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, cast

import openai
from openai import AsyncOpenAI
from redis.asyncio import Redis

from bot.assistant.backend import Annotator, FunctionCall, Piece, RoundResult, Step, TokenUsage
from bot.assistant.held import (
    STREAM_BREAKS,
    HeldBackend,
    _Request,
    assistant_message,
    function_call,
    own_call_id,
)
from bot.assistant.responses import _NOT_IN_NAME, _describe, _error_code
from bot.errors import (
    AnswerIncomplete,
    AssistantFailed,
    AssistantRateLimited,
    AssistantUnavailable,
    ContextTooLong,
    ResponseVanished,
)
from bot.settings import Settings


def _user_content(content: Any) -> Any:
    """A user message's content: a plain string when it is all text (what every server takes), else
    text and image parts (images only as URLs or data URLs: these servers have no file ids)."""
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for part in content or []:
        kind = part.get("type")
        if kind in ("input_text", "output_text"):
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "input_image" and part.get("image_url"):
            image = {"url": part["image_url"], "detail": part.get("detail") or "auto"}
            parts.append({"type": "image_url", "image_url": image})
    if all(p["type"] == "text" for p in parts):
        return "\n".join(p["text"] for p in parts)
    return parts


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(str(p.get("text", "")) for p in content or [] if isinstance(p, dict))


def messages(instructions: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chat messages for these items, after a system message with the instructions."""
    out: list[dict[str, Any]] = [{"role": "system", "content": instructions}]
    for item in items:
        kind = item.get("type", "message")
        if kind == "message" and item.get("role") == "assistant":
            out.append({"role": "assistant", "content": _text(item.get("content"))})
        elif kind == "message":
            out.append({"role": "user", "content": _user_content(item.get("content"))})
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item.get("arguments") or "{}"},
            }
            last = out[-1]
            if last["role"] == "assistant":  # the calls of one answer share its message
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            content = output if isinstance(output, str) else _text(output)
            out.append({"role": "tool", "tool_call_id": item["call_id"], "content": content})
    return out


def chat_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Responses-style function tools ({"type", "name", "parameters", …}) in the chat shape."""
    out = []
    for tool in tools:
        function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
        out.append({"type": "function", "function": function})
    return out


@dataclass
class _Call:
    call_id: str = ""
    name: str = ""
    arguments: str = ""


class ChatCompletionsBackend(HeldBackend):
    api = "chat_completions"

    def __init__(self, client: AsyncOpenAI, redis: Redis, settings: Settings) -> None:
        super().__init__(redis, settings)
        self._client = client

    async def _create(self, request: _Request) -> Any:
        body: dict[str, Any] = {
            "model": request.pending.model,
            "messages": messages(request.pending.instructions, request.items),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.function_tools:
            body["tools"] = chat_tools(request.function_tools)
        if self._settings.max_output_tokens is not None:
            body["max_completion_tokens"] = self._settings.max_output_tokens
        try:
            return await self._client.chat.completions.create(**cast(Any, body))
        except openai.RateLimitError as exc:
            raise AssistantRateLimited(f"chat.completions.create: {_describe(exc)}") from exc
        except openai.BadRequestError as exc:
            if _error_code(exc) == "context_length_exceeded":
                raise ContextTooLong(f"chat.completions.create: {_describe(exc)}") from exc
            raise AssistantUnavailable(f"chat.completions.create: {_describe(exc)}") from exc
        except openai.APIError as exc:
            raise AssistantUnavailable(f"chat.completions.create: {_describe(exc)}") from exc

    async def _generate(
        self,
        request: _Request,
        result: RoundResult,
        output: list[dict[str, Any]],
        citations: Annotator | None,
    ) -> AsyncGenerator[Piece, None]:
        stream = await self._create(request)
        text: list[str] = []
        calls: dict[int, _Call] = {}
        taken = set(request.call_ids)
        finish: str | None = None
        try:
            async with contextlib.aclosing(stream):
                async for chunk in stream:
                    if chunk.usage is not None:
                        result.usage = _usage(chunk)
                    for choice in chunk.choices[:1]:
                        delta = choice.delta
                        if delta.content:
                            text.append(delta.content)
                            yield citations.text(delta.content) if citations is not None else delta.content
                        for part in delta.tool_calls or []:
                            if part.index not in calls:  # its first chunk: the id, if the server gives one
                                calls[part.index] = _Call(own_call_id(part.id or "", taken))
                            call = calls[part.index]
                            if part.function is not None:
                                if part.function.name and not call.name:
                                    call.name = part.function.name
                                    yield _calling(call)
                                call.arguments += part.function.arguments or ""
                        finish = choice.finish_reason or finish
        except STREAM_BREAKS as exc:
            raise ResponseVanished(f"chat stream broke: {type(exc).__name__}") from exc
        except openai.APIError as exc:
            raise AssistantUnavailable(f"chat stream: {_describe(exc)}") from exc
        if finish is None:
            raise ResponseVanished("chat stream ended without a finish_reason")
        if finish == "length":
            raise AnswerIncomplete("chat completion cut at its token limit")
        if finish == "content_filter":
            raise AssistantFailed("chat completion stopped by the server's content filter")
        result.calls.extend(FunctionCall(c.call_id, c.name, c.arguments or "{}") for c in calls.values())
        if text:
            output.append(assistant_message("".join(text)))
        output.extend(function_call(c) for c in result.calls)


def _calling(call: _Call) -> Step:
    name = _NOT_IN_NAME.sub("", call.name)[:64] or "a tool"
    return Step(call.call_id, f"Calling {name}", "pending")


def _usage(chunk: Any) -> TokenUsage:
    usage = chunk.usage
    details = usage.completion_tokens_details
    return TokenUsage(
        input=usage.prompt_tokens,
        output=usage.completion_tokens,
        total=usage.total_tokens,
        reasoning=details.reasoning_tokens if details is not None else None,
        created_at=float(chunk.created or time.time()),
    )
