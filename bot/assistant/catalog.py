"""What OpenAI says exists, asked before a channel policy is saved: a model (`models.retrieve`) and a
vector store (`vector_stores.retrieve`)."""

from __future__ import annotations

import logging
from typing import Literal

import openai
from openai import AsyncOpenAI

log = logging.getLogger(__name__)

# None: OpenAI could not tell (a passing fault): the policy is not saved, the user asked to try again.
Found = Literal["found", "missing", "expired"] | None


class Catalog:
    def __init__(self, client: AsyncOpenAI) -> None:
        self._client = client

    async def model(self, model_id: str) -> Found:
        try:
            await self._client.models.retrieve(model_id)
        except (openai.NotFoundError, openai.BadRequestError):  # 400: an id of no valid shape
            return "missing"
        except (openai.APIError, OSError) as exc:
            log.info("models.retrieve %s: %s", model_id, type(exc).__name__)
            return None
        return "found"

    async def vector_store(self, store_id: str) -> Found:
        try:
            store = await self._client.vector_stores.retrieve(store_id)
        except (openai.NotFoundError, openai.BadRequestError):  # 400: an id of no valid shape
            return "missing"
        except (openai.APIError, OSError) as exc:
            log.info("vector_stores.retrieve %s: %s", store_id, type(exc).__name__)
            return None
        return "expired" if store.status == "expired" else "found"
