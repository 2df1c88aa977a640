"""Counting a Redis-held thread's tokens and trimming its history to a budget (issue 17).

OpenAI's models are counted with their own BPE encoding (`bpe-openai` ships the o200k and cl100k data in
its wheel: nothing is downloaded at run time). Any other model (Llama, Qwen, Mistral, … on a local server)
gets a safe estimate: one token per two bytes of UTF-8, which over-counts every tokenizer we know of for
prose and code, so a trimmed history fits.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from typing import Any

# Per message: the role and the separators a chat template wraps it in.
ITEM_OVERHEAD = 4
# An image input, whatever its size (OpenAI bills a high-detail 2048x2048 image about 1,100 tokens).
IMAGE_TOKENS = 1_500
# Model name prefixes and the encoding OpenAI's tokenizer uses for them (tiktoken's own table).
_ENCODINGS = (
    (("gpt-5", "gpt-4.1", "gpt-4o", "gpt-4.5", "o1", "o3", "o4", "chatgpt-4o", "gpt-oss"), "o200k_base"),
    (("gpt-4", "gpt-3.5", "gpt-35"), "cl100k_base"),
)
BYTES_PER_TOKEN = 2

Counter = Callable[[str], int]


def estimate(text: str) -> int:
    return math.ceil(len(text.encode()) / BYTES_PER_TOKEN)


def encoding_name(model: str) -> str | None:
    """The BPE encoding of an OpenAI model (None: not an OpenAI model, or one we don't know)."""
    name = model.rsplit("/", 1)[-1].lower()  # "openai/gpt-4o" as LiteLLM and OpenRouter name them
    for prefixes, encoding in _ENCODINGS:
        if name.startswith(prefixes):
            return encoding
    return None


@functools.cache
def _encoding(name: str) -> Any:
    # Imported here: loading the package takes ~0.7 s, which every process (and every conversations-backend
    # one, which never counts tokens) would pay at start-up.
    import bpe_openai  # type: ignore[import-untyped]

    return bpe_openai.get_encoding(name)


@functools.cache
def counter(model: str) -> Counter:
    """How to count `model`'s tokens: its tokenizer when known, else the safe estimate."""
    name = encoding_name(model)
    if name is None:
        return estimate
    encoding = _encoding(name)
    return lambda text: len(encoding.encode(text, disallowed_special=())) if text else 0


def item_tokens(item: dict[str, Any], count: Counter) -> int:
    """The tokens of one input item: its text, call arguments and outputs, images at a flat rate."""
    total = ITEM_OVERHEAD
    content = item.get("content")
    if isinstance(content, str):
        total += count(content)
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str):
            total += count(part["text"])
        elif part.get("type") == "input_image":
            total += IMAGE_TOKENS
    for key in ("name", "arguments", "output"):
        value = item.get(key)
        if isinstance(value, str):
            total += count(value)
        elif value is not None:
            total += count(json.dumps(value))
    return total


def _units(items: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The items in the groups trimming keeps or drops whole: a turn (a user's message and the answer
    after it, its function calls and their outputs included), so the model never reads an answer
    without its question, nor a call without its output. Items before the first user message (closed
    calls a stopped turn left, say) go in groups of their own, a call still with its output."""
    units: list[list[dict[str, Any]]] = []
    open_calls: set[str] = set()
    for item in items:
        kind = item.get("type", "message")
        starts_turn = kind == "message" and item.get("role") == "user"
        if units and not open_calls and not starts_turn and (units[-1][0].get("role") == "user"):
            units[-1].append(item)  # the answer goes with its question
        elif units and open_calls:
            units[-1].append(item)
        else:
            units.append([item])
        if kind == "function_call":
            open_calls.add(str(item.get("call_id")))
        elif kind == "function_call_output":
            open_calls.discard(str(item.get("call_id")))
    return units


def trim(
    history: list[dict[str, Any]], new: list[dict[str, Any]], instructions: str, budget: int, count: Counter
) -> tuple[list[dict[str, Any]], int]:
    """The newest part of `history` that fits `budget` with the instructions and the new items (which
    always go), whole groups only (see `_units`); and the tokens of what goes. A history that starts with
    an output whose call was trimmed away never happens: the two are one group. Nor does an output in
    `new` go without its call: the group holding the calls `new` answers (a tool round's question and
    calls) goes too, like `new`, even past the budget (the caller refuses the turn then)."""
    used = count(instructions) + ITEM_OVERHEAD + sum(item_tokens(i, count) for i in new)
    units = _units(history)
    kept: list[list[dict[str, Any]]] = []
    answered = {str(i.get("call_id")) for i in new if i.get("type") == "function_call_output"}
    if units and answered & _calls(units[-1]):
        kept.append(units.pop())
        used += sum(item_tokens(i, count) for i in kept[0])
    for unit in reversed(units):
        size = sum(item_tokens(i, count) for i in unit)
        if used + size > budget:
            break
        kept.append(unit)
        used += size
    return [item for unit in reversed(kept) for item in unit], used


def _calls(unit: list[dict[str, Any]]) -> set[str]:
    return {str(i.get("call_id")) for i in unit if i.get("type") == "function_call"}
