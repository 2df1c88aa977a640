"""Reading and editing an assistant thread held as an OpenAI Conversation: metadata, items, size."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import openai
from openai import AsyncOpenAI

from bot.assistant.backend import ConversationInfo, ItemLine, TurnItems
from bot.errors import AssistantUnavailable, NoAssistantThread

ITEM_TEXT_CHARS = 300
COUNT_CAP = 1000
# Items looked through for a message that may already be in the conversation.
RECENT_ITEMS = 10
# Items looked through for the ones a turn just added (its answer's tool rounds included): one page.
TURN_ITEMS_LIMIT = 100


def _cut(text: str, limit: int = ITEM_TEXT_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ConversationAdmin:
    def __init__(self, client: AsyncOpenAI) -> None:
        self._client = client

    async def info(self, conversation_id: str) -> ConversationInfo:
        try:
            conv = await self._client.conversations.retrieve(conversation_id)
        except openai.NotFoundError as exc:
            raise NoAssistantThread(f"conversation {conversation_id} not found") from exc
        except openai.APIError as exc:
            raise AssistantUnavailable(f"conversations.retrieve: {type(exc).__name__}") from exc
        metadata = conv.metadata if isinstance(conv.metadata, dict) else {}
        return ConversationInfo(conv.id, conv.created_at, {str(k): str(v) for k, v in metadata.items()})

    async def set_metadata(self, conversation_id: str, metadata: dict[str, str]) -> None:
        try:
            await self._client.conversations.update(conversation_id, metadata=metadata)
        except openai.NotFoundError as exc:
            raise NoAssistantThread(f"conversation {conversation_id} not found") from exc
        except openai.APIError as exc:
            raise AssistantUnavailable(f"conversations.update: {type(exc).__name__}") from exc

    async def newest_items(self, conversation_id: str, limit: int) -> list[ItemLine]:
        try:
            page = await self._client.conversations.items.list(conversation_id, order="desc", limit=limit)
        except openai.NotFoundError as exc:
            raise NoAssistantThread(f"conversation {conversation_id} not found") from exc
        except openai.APIError as exc:
            raise AssistantUnavailable(f"conversations.items.list: {type(exc).__name__}") from exc
        return [_line(item) for item in page.data[:limit]]

    async def holds_message(self, conversation_id: str, text: str) -> bool:
        """Whether the conversation holds, after its last answer, the user's message starting with `text`
        (a response that vanished may or may not have added its input to the conversation)."""
        try:
            page = await self._client.conversations.items.list(
                conversation_id, order="desc", limit=RECENT_ITEMS
            )
        except openai.APIError as exc:
            raise AssistantUnavailable(f"conversations.items.list: {type(exc).__name__}") from exc
        for item in page.data:  # newest first
            if getattr(item, "type", None) != "message":
                continue
            if getattr(item, "role", None) == "assistant":
                return False  # answered messages are not this one
            parts = getattr(item, "content", None) or []
            if any(str(getattr(p, "text", None) or "").startswith(text) for p in parts):
                return True
        return False

    defers_turn_items = True

    async def turn_items(self, conversation_id: str, response_ids: Sequence[str] = ()) -> TurnItems | None:
        """The items one turn added: the answer's (messages, reasoning, tool calls and outputs), down to the
        user's message that started it (a turn adds exactly one user message; tool outputs are not
        messages). With `response_ids` (the turn's responses, oldest first) that turn, found from its last
        response's last output item, at any time; without, the newest turn (only meaningful right after it
        ended, while the thread's runner lock keeps every other turn away). None when not found."""
        last: str | None = None
        if response_ids:
            last = await self._last_output_item(response_ids[-1])
            if last is None:
                return None
        # Read as JSON: only ids, types and roles are read, and the typed page (a union model per item) costs
        # more CPU than the request itself.
        data = await self._items_page(conversation_id, after=last)
        answer: list[str] = [last] if last else []
        for item in data:  # newest first
            item_id = str(item.get("id") or "")
            if item.get("type") == "message" and item.get("role") == "user":
                return TurnItems(user=[item_id], answer=list(reversed(answer)))
            if item_id:
                answer.append(item_id)
        return None

    async def _last_output_item(self, response_id: str) -> str | None:
        """The id of the response's last output item (the last item it added to its conversation)."""
        try:
            raw = await self._client.responses.with_raw_response.retrieve(response_id)
            body: object = json.loads(raw.content)
        except openai.NotFoundError:
            return None
        except (openai.APIError, ValueError) as exc:
            raise AssistantUnavailable(f"responses.retrieve: {type(exc).__name__}") from exc
        output = body.get("output") if isinstance(body, dict) else None
        if not isinstance(output, list) or not output or not isinstance(output[-1], dict):
            return None
        last = output[-1].get("id")
        return last if isinstance(last, str) and last else None

    async def _items_page(self, conversation_id: str, *, after: str | None) -> list[dict[str, Any]]:
        """One page of the conversation's items, newest first (older than `after`, when given)."""
        try:
            page = self._client.conversations.items.with_raw_response
            if after is None:
                raw = await page.list(conversation_id, order="desc", limit=TURN_ITEMS_LIMIT)
            else:
                raw = await page.list(conversation_id, order="desc", limit=TURN_ITEMS_LIMIT, after=after)
            body: object = json.loads(raw.content)
        except (openai.APIError, ValueError) as exc:
            raise AssistantUnavailable(f"conversations.items.list: {type(exc).__name__}") from exc
        data = body.get("data") if isinstance(body, dict) else None
        return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []

    async def delete_items(self, conversation_id: str, item_ids: list[str]) -> int:
        """Delete items from the conversation; one already gone counts as deleted. The number deleted now.
        A conversation that is gone raises NoAssistantThread."""
        deleted = 0
        for item_id in item_ids:
            try:
                # openai-python: the item id is positional, the conversation a keyword.
                await self._client.conversations.items.delete(item_id, conversation_id=conversation_id)
                deleted += 1
            except openai.NotFoundError:
                # The item (or the whole conversation) is gone already: either way it is not remembered.
                continue
            except openai.APIError as exc:
                raise AssistantUnavailable(f"conversations.items.delete: {type(exc).__name__}") from exc
        return deleted

    async def count_items(self, conversation_id: str) -> int:
        """Items in the conversation, counted page by page up to COUNT_CAP."""
        count = 0
        try:
            async for _ in self._client.conversations.items.list(conversation_id, limit=100):
                count += 1
                if count >= COUNT_CAP:
                    break
        except openai.APIError as exc:
            raise AssistantUnavailable(f"conversations.items.list: {type(exc).__name__}") from exc
        return count


def _line(item: object) -> ItemLine:
    kind = getattr(item, "type", "item")
    if kind != "message":
        return ItemLine(role=str(kind).replace("_", " "), text="")
    parts = getattr(item, "content", None) or []
    texts = [str(getattr(p, "text", "")) for p in parts if getattr(p, "text", None)]
    others = [str(getattr(p, "type", "")) for p in parts if not getattr(p, "text", None)]
    text = " ".join(texts) + "".join(f" [{o.replace('_', ' ')}]" for o in others)
    return ItemLine(role=str(getattr(item, "role", "message")), text=_cut(text.strip()))
