"""Reading and editing an assistant thread held as an OpenAI Conversation: metadata, items, size."""

from __future__ import annotations

import json

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

    async def turn_items(self, conversation_id: str) -> TurnItems | None:
        """The items the turn that just ended added, read newest first: the answer's, down to the user's
        message that started it (a turn adds exactly one user message; tool outputs are not messages).
        None when no user message is in reach. Only meaningful right after an answered turn, while the
        thread's runner lock keeps every other turn away."""
        try:
            # Read as JSON: every answered turn asks this, and the typed page (a union model per item) cost
            # more CPU than the request itself; only ids, types and roles are read.
            raw = await self._client.conversations.items.with_raw_response.list(
                conversation_id, order="desc", limit=TURN_ITEMS_LIMIT
            )
            body: object = json.loads(raw.content)
        except (openai.APIError, ValueError) as exc:
            raise AssistantUnavailable(f"conversations.items.list: {type(exc).__name__}") from exc
        data = body.get("data") if isinstance(body, dict) else None
        answer: list[str] = []
        for item in data if isinstance(data, list) else []:  # newest first
            if not isinstance(item, dict):
                continue
            item_id = str(item.get("id") or "")
            if item.get("type") == "message" and item.get("role") == "user":
                return TurnItems(user=[item_id], answer=list(reversed(answer)))
            if item_id:
                answer.append(item_id)
        return None

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
