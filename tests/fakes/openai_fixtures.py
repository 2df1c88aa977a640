"""Fixtures shared by the fake OpenAI's own tests: a fresh fake per test and a real SDK client on it."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.fakes.openai_api import FakeOpenAI


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(fake: FakeOpenAI) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key=fake.api_key, base_url=fake.base_url, max_retries=0, timeout=10) as c:
        yield c
