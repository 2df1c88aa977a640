"""The assistant backend: an assistant thread is an OpenAI Conversation, a turn is one streamed Response.

Only what the API itself rejects before doing any work is retried here (429 and `conversation_locked`);
a response is never blindly re-created, since `responses.create` is not idempotent.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import openai
from openai import AsyncOpenAI

from bot.errors import (
    AnswerIncomplete,
    AssistantBusy,
    AssistantFailed,
    AssistantRateLimited,
    AssistantUnavailable,
)
from bot.settings import Settings
from bot.turn_input import TurnInput

log = logging.getLogger(__name__)

RATE_LIMIT_RETRIES = 3
MAX_RETRY_AFTER_SECONDS = 20.0
LOCKED_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)


def build_openai_client(settings: Settings) -> AsyncOpenAI:
    return AsyncOpenAI(
        api_key=settings.openai_api_key.get_secret_value(),
        base_url=settings.openai_base_url,
        timeout=settings.openai_timeout,
        max_retries=2,
    )


class AssistantBackend:
    def __init__(self, client: AsyncOpenAI, settings: Settings) -> None:
        self._client = client
        # Creating a response is not idempotent: this copy never retries on its own.
        self._no_retry = client.with_options(max_retries=0)
        self._settings = settings

    async def create_conversation(self, metadata: dict[str, str]) -> str:
        try:
            conversation = await self._client.conversations.create(metadata=metadata)
        except openai.RateLimitError as exc:
            raise AssistantRateLimited(f"conversations.create: {exc.status_code}") from exc
        except openai.APIError as exc:
            raise AssistantUnavailable(f"conversations.create: {_describe(exc)}") from exc
        return conversation.id

    async def delete_conversation(self, conversation_id: str) -> None:
        try:
            await self._client.conversations.delete(conversation_id)
        except openai.NotFoundError:
            log.info("conversation %s was already gone", conversation_id)
        except openai.APIError as exc:
            raise AssistantUnavailable(f"conversations.delete: {_describe(exc)}") from exc

    def _request(
        self,
        conversation_id: str,
        text: str,
        *,
        instructions: str,
        user_key: str,
        extras: TurnInput | None = None,
    ) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self._settings.assistant_model,
            "instructions": instructions,
            "conversation": conversation_id,
            "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}],
            "store": True,
            "stream": True,
            # A stable, non-reversible id per Slack user helps OpenAI's abuse detection.
            "safety_identifier": hashlib.sha256(user_key.encode()).hexdigest()[:32],
        }
        if self._settings.assistant_tools:
            request["tools"] = [{"type": name} for name in self._settings.assistant_tools]
        if extras is not None:  # files (issue 3): file text, image inputs, file_search
            extras.apply(request)
        return request

    async def answer(
        self,
        conversation_id: str,
        text: str,
        *,
        instructions: str,
        user_key: str,
        extras: TurnInput | None = None,
    ) -> AsyncIterator[str]:
        """Run one turn on the conversation and yield the answer's text as it streams (with citation
        markers when `extras` is given)."""
        request = self._request(
            conversation_id, text, instructions=instructions, user_key=user_key, extras=extras
        )
        stream = await self._start(request)
        try:
            async for event in stream:
                if event.type == "response.output_text.delta":
                    yield extras.citations.text(event.delta) if extras is not None else event.delta
                elif event.type == "response.output_text.annotation.added" and extras is not None:
                    yield extras.citations.annotate(event.annotation)
                elif event.type == "response.failed":
                    error = event.response.error
                    raise AssistantFailed(f"response failed: {error.code if error else 'unknown'}")
                elif event.type == "response.incomplete":
                    details = event.response.incomplete_details
                    raise AnswerIncomplete(f"response incomplete: {details.reason if details else 'unknown'}")
                elif event.type == "error":
                    raise AssistantFailed(f"stream error event: {event.code}")
        except openai.APIError as exc:
            raise AssistantUnavailable(f"stream broke: {_describe(exc)}") from exc
        except (OSError, ValueError) as exc:
            # httpx2 transport errors and a truncated SSE body both land here.
            raise AssistantUnavailable(f"stream broke: {type(exc).__name__}") from exc
        finally:
            await stream.close()

    async def _start(self, request: dict[str, Any]) -> Any:
        rate_limited = 0
        locked = 0
        while True:
            try:
                return await self._no_retry.responses.create(**request)
            except openai.RateLimitError as exc:
                rate_limited += 1
                if rate_limited > RATE_LIMIT_RETRIES:
                    raise AssistantRateLimited(f"responses.create: 429 x{rate_limited}") from exc
                delay = _retry_after(exc) or 2.0**rate_limited
                if delay > MAX_RETRY_AFTER_SECONDS:
                    raise AssistantRateLimited(f"responses.create: retry-after {delay:.0f}s") from exc
                log.info("OpenAI rate limit; retrying in %.1fs", delay)
                await asyncio.sleep(delay)
            except openai.BadRequestError as exc:
                if _error_code(exc) != "conversation_locked":
                    raise AssistantUnavailable(f"responses.create: {_describe(exc)}") from exc
                if locked >= len(LOCKED_RETRY_DELAYS):
                    raise AssistantBusy("conversation stayed locked") from exc
                # Another response (another replica, or one the API still finishes) holds the conversation.
                await asyncio.sleep(LOCKED_RETRY_DELAYS[locked])
                locked += 1
            except openai.APIError as exc:
                raise AssistantUnavailable(f"responses.create: {_describe(exc)}") from exc


def _error_code(exc: openai.APIStatusError) -> str | None:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("code"), str):
            return str(error["code"])
    return getattr(exc, "code", None)


def _retry_after(exc: openai.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _describe(exc: openai.APIError) -> str:
    """Type, status and error code only: enough for the log, never a secret or the request body."""
    status = getattr(exc, "status_code", None)
    code = _error_code(exc) if isinstance(exc, openai.APIStatusError) else None
    return f"{type(exc).__name__} status={status} code={code} request_id={getattr(exc, 'request_id', None)}"
