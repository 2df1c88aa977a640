"""The fake OpenAI's files, vector stores and file search, driven by the official SDK and checked against
the spec (what the bot's retrieval relies on)."""

from __future__ import annotations

from typing import Any

import httpx2
import openai
import pytest

from tests.fakes.openai_api import FakeOpenAI, Reply, get_spec
from tests.test_fake_openai import MODEL, _event_schemas, _raw_sse

PDF = (
    b"%PDF-1.4\n1 0 obj << >> stream\nBT (The launch date is 14 March.) Tj ET\nBT (Budget is tight.) Tj ET\n"
)


def indexed_store(client: openai.OpenAI, files: dict[str, bytes]) -> tuple[str, list[str]]:
    vs = client.vector_stores.create(name="t", expires_after={"anchor": "last_active_at", "days": 7})
    ids = []
    for name, content in files.items():
        uploaded = client.files.create(file=(name, content, "application/pdf"), purpose="assistants")
        client.vector_stores.files.create_and_poll(uploaded.id, vector_store_id=vs.id)
        ids.append(uploaded.id)
    return vs.id, ids


def test_upload_list_retrieve_and_delete_files(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    uploaded = client.files.create(file=("report.pdf", PDF, "application/pdf"), purpose="assistants")
    assert uploaded.id.startswith("file-") and uploaded.filename == "report.pdf"
    assert uploaded.bytes == len(PDF) and uploaded.purpose == "assistants"
    image = client.files.create(file=("p.png", b"\x89PNG....", "image/png"), purpose="vision")
    assert fake.file_content(uploaded.id) == PDF
    assert [f.id for f in client.files.list(purpose="vision")] == [image.id]
    assert {f.id for f in client.files.list()} == {uploaded.id, image.id}
    assert client.files.retrieve(image.id).filename == "p.png"
    assert client.files.delete(image.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(image.id)
    # The multipart body was checked against CreateFileRequest: a purpose the API does not know is refused.
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("x.txt", b"x"), purpose="nonsense")  # type: ignore[arg-type]
    assert len(fake.spec_violations) == 1 and "purpose" in fake.spec_violations[0]


def test_indexing_is_polled_until_completed_or_failed(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.set_index_polls(3)
    fake.fail_indexing("broken.pdf")
    vs = client.vector_stores.create(
        metadata={"app": "t"}, expires_after={"anchor": "last_active_at", "days": 2}
    )
    good = client.files.create(file=("good.pdf", PDF), purpose="assistants")
    bad = client.files.create(file=("broken.pdf", PDF), purpose="assistants")
    attached = client.vector_stores.files.create(vs.id, file_id=good.id, attributes={"app": "t"})
    assert attached.status == "in_progress"
    assert client.vector_stores.retrieve(vs.id).status == "in_progress"
    done = client.vector_stores.files.poll(good.id, vector_store_id=vs.id)
    assert done.status == "completed" and done.attributes == {"app": "t"}
    failed = client.vector_stores.files.create_and_poll(bad.id, vector_store_id=vs.id)
    assert failed.status == "failed" and failed.last_error is not None
    assert failed.last_error.code == "unsupported_file"
    polls = [r for r in fake.requests if r["method"] == "GET" and r["path"].endswith(f"/files/{good.id}")]
    assert len(polls) == 3  # in_progress twice, then completed on the third poll
    store = client.vector_stores.retrieve(vs.id)
    assert store.file_counts.completed == 1 and store.file_counts.failed == 1
    assert (
        store.expires_after is not None and store.expires_after.days == 2 and store.metadata == {"app": "t"}
    )
    assert [f.id for f in client.vector_stores.files.list(vs.id, filter="failed")] == [bad.id]


def test_deleting_a_file_detaches_it_and_deleting_a_store_keeps_files(
    fake: FakeOpenAI, client: openai.OpenAI
) -> None:
    vs_id, [file_id] = indexed_store(client, {"a.pdf": PDF})
    client.files.delete(file_id)
    assert fake.vector_store_files(vs_id) == {}
    _, [kept] = indexed_store(client, {"b.pdf": PDF})
    other = next(iter(fake.vector_stores))
    assert client.vector_stores.delete(other).deleted is True
    assert kept in fake.files
    assert [v.id for v in client.vector_stores.list()] == [v for v in fake.vector_stores]


def test_file_search_cites_matching_files_in_stream_and_final_output(
    fake: FakeOpenAI, client: openai.OpenAI
) -> None:
    vs_id, [pdf_id, _] = indexed_store(client, {"report.pdf": PDF, "other.txt": b"Nothing relevant here."})
    stream = client.responses.create(
        model=MODEL,
        input="When is the launch?",
        tools=[{"type": "file_search", "vector_store_ids": [vs_id]}],
        stream=True,
    )
    text, added, final = "", [], None
    for event in stream:
        if event.type == "response.output_text.delta":
            text += event.delta
        elif event.type == "response.output_text.annotation.added":
            added.append((len(text), event.annotation))
        elif event.type == "response.completed":
            final = event.response
    assert text == "Echo: When is the launch?\n\nFrom report.pdf: BT (The launch date is 14 March."
    # The annotation arrives right after the text it cites.
    [(seen_at, annotation)] = added
    assert annotation.model_dump() == {  # type: ignore[union-attr]
        "type": "file_citation",
        "file_id": pdf_id,
        "filename": "report.pdf",
        "index": len(text),
    }
    assert seen_at == len(text)
    assert final is not None
    [call, message] = final.output
    assert call.type == "file_search_call" and message.type == "message"
    assert message.content[0].annotations[0].file_id == pdf_id  # type: ignore[union-attr]
    assert fake.model_inputs[-1]["file_search"] == {"vector_store_ids": [vs_id], "hits": ["report.pdf"]}


def test_cite_markers_url_citations_and_late_annotations(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    vs_id, [pdf_id] = indexed_store(client, {"report.pdf": PDF})
    url = {
        "type": "url_citation",
        "url": "https://example.com/a",
        "title": "A",
        "start_index": 0,
        "end_index": 5,
    }
    fake.script(Reply(text="First{cite} second{cite} Intro", annotations=(url,), annotations_at_end=True))
    response = client.responses.create(
        model=MODEL, input="launch?", tools=[{"type": "file_search", "vector_store_ids": [vs_id]}]
    )
    assert response.output_text == "First second Intro"
    annotations = [a.model_dump() for a in response.output[1].content[0].annotations]  # type: ignore[union-attr]
    assert [a.get("index", a.get("end_index")) for a in annotations] == [5, 5, 12]
    assert {a["type"] for a in annotations} == {"file_citation", "url_citation"}
    assert all(a["file_id"] == pdf_id for a in annotations if a["type"] == "file_citation")


def test_search_only_sees_the_given_stores_and_refuses_unknown_or_expired_ones(
    fake: FakeOpenAI, client: openai.OpenAI
) -> None:
    mine, _ = indexed_store(client, {"mine.pdf": b"The zebra project ships soon."})
    theirs, _ = indexed_store(client, {"theirs.pdf": b"The zebra project is secret."})
    response = client.responses.create(
        model=MODEL, input="zebra status", tools=[{"type": "file_search", "vector_store_ids": [mine]}]
    )
    assert "theirs.pdf" not in response.output_text and "mine.pdf" in response.output_text
    fake.expire_vector_store(theirs)
    for ids in ([theirs], ["vs_unknown"]):
        with pytest.raises(openai.BadRequestError):
            client.responses.create(
                model=MODEL, input="zebra", tools=[{"type": "file_search", "vector_store_ids": ids}]
            )
    assert client.vector_stores.retrieve(theirs).status == "expired"


def test_a_store_expires_once_unused_past_its_expiry_and_retrieve_says_so(
    fake: FakeOpenAI, client: openai.OpenAI
) -> None:
    store, _ = indexed_store(client, {"notes.pdf": b"The zebra project ships soon."})  # 7 days
    fake.idle_vector_store(store, days=6)
    fresh = client.vector_stores.retrieve(store)
    assert fresh.status == "completed" and (fresh.expires_at or 0) > fresh.created_at
    fake.idle_vector_store(store, days=2)  # 8 days without use: past expires_at
    expired = client.vector_stores.retrieve(store)
    assert expired.status == "expired" and expired.expires_at is not None
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(
            model=MODEL, input="zebra", tools=[{"type": "file_search", "vector_store_ids": [store]}]
        )
    assert store in refused.value.message
    # Expired for good, and an unknown store is a 404 on retrieve.
    assert [vs.status for vs in client.vector_stores.list()] == ["expired"]
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve("vs_unknown")


def test_input_image_is_recorded_and_must_name_a_stored_file(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    image = client.files.create(file=("p.png", b"\x89PNG", "image/png"), purpose="vision")
    content: list[Any] = [
        {"type": "input_text", "text": "what is this?"},
        {"type": "input_image", "file_id": image.id, "detail": "auto"},
    ]
    client.responses.create(model=MODEL, input=[{"role": "user", "content": content}])
    assert fake.model_inputs[-1]["input_items"][0]["content"][1] == content[1]
    client.files.delete(image.id)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=MODEL, input=[{"role": "user", "content": content}])


def test_fail_next_scripts_errors_on_any_path(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    vs = client.vector_stores.create()
    uploaded = client.files.create(file=("a.pdf", PDF), purpose="assistants")
    fake.fail_next("POST", r"/v1/vector_stores/[^/]+/files$", status=500, times=2)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            client.vector_stores.files.create(vs.id, file_id=uploaded.id)
    assert client.vector_stores.files.create(vs.id, file_id=uploaded.id).id == uploaded.id


def test_file_search_events_and_objects_validate_against_spec(
    fake: FakeOpenAI, client: openai.OpenAI
) -> None:
    spec = get_spec()
    vs_id, [file_id] = indexed_store(client, {"report.pdf": PDF})
    url = {
        "type": "url_citation",
        "url": "https://example.com/",
        "title": "Ex",
        "start_index": 0,
        "end_index": 4,
    }
    fake.script(Reply(text="Echo{cite} done", annotations=(url,)))
    body = {
        "model": MODEL,
        "input": [{"role": "user", "content": "launch"}],
        "tools": [{"type": "file_search", "vector_store_ids": [vs_id]}],
        "stream": True,
    }
    events = _raw_sse(fake, body)
    by_type = _event_schemas()
    for event in events:
        assert spec.schema_errors(by_type[event["type"]], event) == [], event["type"]
    assert "response.output_text.annotation.added" in {e["type"] for e in events}
    assert spec.schema_errors("Response", events[-1]["response"]) == []
    headers = {"Authorization": f"Bearer {fake.api_key}"}
    checks = {
        "OpenAIFile": f"/files/{file_id}",
        "VectorStoreObject": f"/vector_stores/{vs_id}",
        "VectorStoreFileObject": f"/vector_stores/{vs_id}/files/{file_id}",
        "ListFilesResponse": "/files",
        "ListVectorStoresResponse": "/vector_stores",
        "ListVectorStoreFilesResponse": f"/vector_stores/{vs_id}/files",
    }
    for schema, path in checks.items():
        got = httpx2.get(f"{fake.base_url}{path}", headers=headers).json()
        assert spec.schema_errors(schema, got) == [], schema
    deleted = httpx2.delete(f"{fake.base_url}/vector_stores/{vs_id}", headers=headers).json()
    assert spec.schema_errors("DeleteVectorStoreResponse", deleted) == []
    deleted = httpx2.delete(f"{fake.base_url}/files/{file_id}", headers=headers).json()
    assert spec.schema_errors("DeleteFileResponse", deleted) == []
    assert fake.spec_violations == []


def test_reset_forgets_files_and_stores(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    indexed_store(client, {"a.pdf": PDF})
    fake.fail_indexing("x.pdf")
    fake.reset()
    assert (fake.files, fake.vector_stores) == ({}, {})
    vs_id, _ = indexed_store(client, {"x.pdf": PDF})
    assert all(f["status"] == "completed" for f in fake.vector_store_files(vs_id).values())
