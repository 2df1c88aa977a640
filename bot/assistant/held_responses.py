"""A Redis-held thread run on a server's Responses API with `store=false` (issue 17): vLLM, LM Studio,
LiteLLM, Azure OpenAI without conversations… Every request carries the trimmed history as its input and
nothing is kept on the server, so a request can be sent again safely (the SDK's own retries apply)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator
from dataclasses import replace
from typing import Any

import openai
from openai import AsyncOpenAI
from redis.asyncio import Redis

from bot.assistant import sse
from bot.assistant.backend import Annotator, Piece, RoundResult
from bot.assistant.held import (
    STREAM_BREAKS,
    HeldBackend,
    _Request,
    assistant_message,
    function_call,
    own_call_id,
)
from bot.assistant.responses import _absorb, _describe, _error_code, _failure, _note_usage, _step
from bot.errors import (
    AnswerIncomplete,
    AssistantFailed,
    AssistantRateLimited,
    AssistantUnavailable,
    ContextTooLong,
    ResponseVanished,
)
from bot.settings import Settings


def _input_item(item: dict[str, Any]) -> dict[str, Any]:
    """A thread item as a store=false request's input: no `id` or `status` (the server has neither); an
    earlier answer as an "easy" assistant message (spec `EasyInputMessage`: its text as a string), since
    an output message (`OutputMessage`) needs the id and status of an item the server never kept."""
    if item.get("type") == "message" and item.get("role") == "assistant":
        content = item.get("content")
        text = content if isinstance(content, str) else "".join(p.get("text", "") for p in content or [])
        return {"type": "message", "role": "assistant", "content": text}
    return {k: v for k, v in item.items() if k not in ("id", "status")}


class HeldResponsesBackend(HeldBackend):
    api = "responses"

    def __init__(self, client: AsyncOpenAI, redis: Redis, settings: Settings) -> None:
        super().__init__(redis, settings)
        self._client = client

    def _body(self, request: _Request) -> dict[str, Any]:
        pending = request.pending
        body: dict[str, Any] = {
            "model": pending.model,
            "instructions": pending.instructions,
            "input": [_input_item(i) for i in request.items],
            "store": False,
            "safety_identifier": hashlib.sha256(pending.user_key.encode()).hexdigest()[:32],
        }
        if request.function_tools:
            body["tools"] = request.function_tools
        if self._settings.max_output_tokens is not None:
            body["max_output_tokens"] = self._settings.max_output_tokens
        return body

    async def _generate(
        self,
        request: _Request,
        result: RoundResult,
        output: list[dict[str, Any]],
        citations: Annotator | None,
    ) -> AsyncGenerator[Piece, None]:
        try:
            stream = await self._client.responses.create(stream=True, extra_body=self._body(request))
        except openai.RateLimitError as exc:
            raise AssistantRateLimited(f"responses.create: {_describe(exc)}") from exc
        except openai.BadRequestError as exc:
            if _error_code(exc) == "context_length_exceeded":
                raise ContextTooLong(f"responses.create: {_describe(exc)}") from exc
            raise AssistantUnavailable(f"responses.create: {_describe(exc)}") from exc
        except openai.APIError as exc:
            raise AssistantUnavailable(f"responses.create: {_describe(exc)}") from exc
        text: list[str] = []
        try:
            async for event in sse.events(stream):
                kind = event.type
                if kind == "response.output_text.delta":
                    text.append(event.delta)
                    yield citations.text(event.delta) if citations is not None else event.delta
                elif kind == "response.output_item.added":
                    if (step := _step(event.item, done=False)) is not None:
                        yield step
                elif kind == "response.content_part.added" and citations is not None:
                    citations.next_part()
                elif kind == "response.completed":
                    before = len(result.calls)
                    _absorb(result, event.response)
                    taken = set(request.call_ids)
                    result.calls[before:] = [
                        replace(c, call_id=own_call_id(c.call_id, taken)) for c in result.calls[before:]
                    ]
                    # The thread keeps the answer's text and calls. Reasoning items are left out (with
                    # store=false the server can only read them back encrypted, which not every server
                    # offers), as are the ids of items that were never stored anywhere.
                    if text:
                        output.append(assistant_message("".join(text)))
                    output.extend(function_call(c) for c in result.calls)
                    return
                elif kind == "response.failed":
                    raise _failure(event.response.error.code if event.response.error else None)
                elif kind == "response.incomplete":
                    _note_usage(result, event.response)
                    details = event.response.incomplete_details
                    raise AnswerIncomplete(f"response incomplete: {details.reason if details else '?'}")
                elif kind == "error":
                    raise AssistantFailed(f"stream error event: {event.code}")
        except STREAM_BREAKS as exc:
            raise ResponseVanished(f"held responses stream broke: {type(exc).__name__}") from exc
        except openai.APIError as exc:
            raise AssistantUnavailable(f"held responses stream: {_describe(exc)}") from exc
        finally:
            await stream.close()
        raise ResponseVanished("held responses stream ended before the response did")
