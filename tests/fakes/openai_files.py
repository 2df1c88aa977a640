"""Files, vector stores and file search for the fake OpenAI (state and rules only; no HTTP here).

``openai_api.FakeOpenAI`` owns one ``FilesState`` and routes ``/v1/files*`` and ``/v1/vector_stores*`` to it;
every method runs under the fake's lock. Semantics chosen where the real API is vague:

* Indexing: a file attached to a vector store starts ``in_progress``; each ``GET`` of that vector-store file
  counts down ``index_polls`` and the file turns ``completed`` (or ``failed`` for a name scripted with
  ``fail_indexing``) on the last one, so a client that polls sees ``in_progress`` first; a name scripted
  with ``hold_indexing`` stays ``in_progress``. Responses carry
  ``openai-poll-after-ms`` so the SDK's poll helper waits only briefly.
* Deleting a file also detaches it from every vector store (the API reference: "Delete a file and remove it
  from all vector stores"); deleting a vector store leaves its files alone, as the real API does.
* A store with ``expires_after`` turns ``expired`` once ``expires_at`` (its ``last_active_at`` plus the days)
  has passed, for good (the spec's ``VectorStoreObject``: status ``expired``, ``in_progress`` or
  ``completed``; ``expires_at``: "when the vector store will expire"); ``expire_vector_store`` expires one
  now. ``GET /v1/vector_stores/{id}`` still returns an expired store (with that status); an unknown id is a
  404. A response whose ``file_search`` tool names an expired or unknown store is refused with a 400 naming
  the store (the real API refuses it; neither its status nor its wording is documented, so the bot must
  not depend on either).
* File search is a keyword match: words of four or more letters of the user's last message, found
  (case-insensitively) in the text of completed files of the given stores; the snippet is the first
  matching sentence. File bytes are read as UTF-8 with errors ignored, so a test PDF carries its text in
  plain literals.
"""

from __future__ import annotations

import copy
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]

POLL_AFTER_MS = "20"
_WORD = re.compile(r"[A-Za-z0-9]{4,}")
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")
STOP_WORDS = frozenset(
    {"what", "which", "when", "where", "does", "this", "that", "with", "from", "about", "have", "there"}
)


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


def new_file_id() -> str:
    return f"file-{secrets.token_hex(12)}"


def new_vs_id() -> str:
    return f"vs_{secrets.token_hex(12)}"


@dataclass(frozen=True)
class Hit:
    file_id: str
    filename: str
    snippet: str
    vector_store_id: str


@dataclass
class _VsFile:
    obj: Json
    polls_left: int


@dataclass
class FilesState:
    index_polls: int = 2
    files: dict[str, Json] = field(default_factory=dict)
    contents: dict[str, bytes] = field(default_factory=dict)
    vector_stores: dict[str, Json] = field(default_factory=dict)
    vs_files: dict[str, dict[str, _VsFile]] = field(default_factory=dict)
    index_failures: dict[str, str] = field(default_factory=dict)  # filename -> error code
    index_holds: set[str] = field(default_factory=set)  # filenames that never finish indexing

    # ---- files -------------------------------------------------------------------------------------

    def create_file(self, filename: str, content: bytes, purpose: str, expires_after: Json | None) -> Json:
        now = int(time.time())
        obj: Json = {
            "id": new_file_id(),
            "object": "file",
            "bytes": len(content),
            "created_at": now,
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }
        if expires_after:
            obj["expires_at"] = now + int(expires_after.get("seconds", 0))
        self.files[obj["id"]] = obj
        self.contents[obj["id"]] = content
        return copy.deepcopy(obj)

    def get_file(self, file_id: str) -> Json:
        obj = self.files.get(file_id)
        if obj is None:
            raise ApiError(404, f"No such File object: {file_id}", param="id")
        return copy.deepcopy(obj)

    def delete_file(self, file_id: str) -> Json:
        if self.files.pop(file_id, None) is None:
            raise ApiError(404, f"No such File object: {file_id}", param="id")
        self.contents.pop(file_id, None)
        for attached in self.vs_files.values():
            attached.pop(file_id, None)
        return {"id": file_id, "object": "file", "deleted": True}

    def list_files(self, purpose: str | None) -> list[Json]:
        found = [f for f in self.files.values() if purpose is None or f["purpose"] == purpose]
        return copy.deepcopy(found)

    # ---- vector stores -----------------------------------------------------------------------------

    def _vs(self, vs_id: str) -> Json:
        vs = self.vector_stores.get(vs_id)
        if vs is None:
            raise ApiError(404, f"No vector store found with id '{vs_id}'.", param="vector_store_id")
        self._expire_if_due(vs)
        return vs

    @staticmethod
    def _expire_if_due(vs: Json) -> None:
        """Past its `expires_at` a store is expired, and stays so (an expired store never comes back)."""
        days = (vs.get("expires_after") or {}).get("days")
        if days and time.time() >= vs["last_active_at"] + int(days) * 86_400:
            vs["status"] = "expired"

    def _vs_object(self, vs: Json) -> Json:
        attached = [a.obj for a in self.vs_files.get(vs["id"], {}).values()]
        counts = {s: sum(1 for a in attached if a["status"] == s) for s in ("in_progress", "completed")}
        counts |= {s: sum(1 for a in attached if a["status"] == s) for s in ("failed", "cancelled")}
        out = copy.deepcopy(vs)
        out["file_counts"] = {**counts, "total": len(attached)}
        out["usage_bytes"] = sum(int(a["usage_bytes"]) for a in attached)
        if out["status"] != "expired":
            out["status"] = "in_progress" if counts["in_progress"] else "completed"
        days = (vs.get("expires_after") or {}).get("days")
        out["expires_at"] = vs["last_active_at"] + int(days) * 86_400 if days else None
        return out

    def create_vector_store(self, body: Json) -> Json:
        now = int(time.time())
        vs: Json = {
            "id": new_vs_id(),
            "object": "vector_store",
            "created_at": now,
            "name": body.get("name") or "",
            "status": "completed",
            "last_active_at": now,
            "metadata": dict(body.get("metadata") or {}),
        }
        if body.get("expires_after"):
            vs["expires_after"] = dict(body["expires_after"])
        self.vector_stores[vs["id"]] = vs
        self.vs_files[vs["id"]] = {}
        for file_id in body.get("file_ids") or []:
            self.attach(vs["id"], file_id, None)
        return self._vs_object(vs)

    def get_vector_store(self, vs_id: str) -> Json:
        return self._vs_object(self._vs(vs_id))

    def update_vector_store(self, vs_id: str, body: Json) -> Json:
        vs = self._vs(vs_id)
        if "name" in body and body["name"] is not None:
            vs["name"] = body["name"]
        if "metadata" in body:
            vs["metadata"] = dict(body["metadata"] or {})
        if "expires_after" in body:
            vs["expires_after"] = body["expires_after"]
        return self._vs_object(vs)

    def delete_vector_store(self, vs_id: str) -> Json:
        self._vs(vs_id)
        del self.vector_stores[vs_id]
        self.vs_files.pop(vs_id, None)
        return {"id": vs_id, "object": "vector_store.deleted", "deleted": True}

    def list_vector_stores(self) -> list[Json]:
        return [self._vs_object(self._vs(vs_id)) for vs_id in list(self.vector_stores)]

    def expire(self, vs_id: str) -> None:
        self._vs(vs_id)["status"] = "expired"

    # ---- vector store files ------------------------------------------------------------------------

    def attach(self, vs_id: str, file_id: str, attributes: Json | None) -> Json:
        vs = self._vs(vs_id)
        if vs["status"] == "expired":
            raise ApiError(400, f"Vector store {vs_id} has expired.", param="vector_store_id")
        if file_id not in self.files:
            raise ApiError(404, f"No file found with id '{file_id}'.", param="file_id")
        obj: Json = {
            "id": file_id,
            "object": "vector_store.file",
            "usage_bytes": len(self.contents.get(file_id, b"")),
            "created_at": int(time.time()),
            "vector_store_id": vs_id,
            "status": "in_progress",
            "last_error": None,
            "attributes": dict(attributes or {}),
            "chunking_strategy": {
                "type": "static",
                "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400},
            },
        }
        entry = _VsFile(obj, self.index_polls)
        self.vs_files[vs_id][file_id] = entry
        if entry.polls_left <= 0 and self.files[file_id]["filename"] not in self.index_holds:
            self._finish_indexing(entry)
        return copy.deepcopy(obj)

    def _finish_indexing(self, entry: _VsFile) -> None:
        filename = self.files.get(entry.obj["id"], {}).get("filename", "")
        code = self.index_failures.get(filename)
        if code is None:
            entry.obj["status"] = "completed"
            return
        entry.obj["status"] = "failed"
        entry.obj["usage_bytes"] = 0
        entry.obj["last_error"] = {"code": code, "message": f"The file {filename} could not be parsed."}

    def _vs_file(self, vs_id: str, file_id: str) -> _VsFile:
        self._vs(vs_id)
        entry = self.vs_files[vs_id].get(file_id)
        if entry is None:
            raise ApiError(
                404, f"No file found with id '{file_id}' in vector store '{vs_id}'.", param="file_id"
            )
        return entry

    def get_vs_file(self, vs_id: str, file_id: str) -> Json:
        """One poll: an in-progress file counts down and finishes on its last poll."""
        entry = self._vs_file(vs_id, file_id)
        held = self.files.get(file_id, {}).get("filename") in self.index_holds
        if entry.obj["status"] == "in_progress" and not held:
            entry.polls_left -= 1
            if entry.polls_left <= 0:
                self._finish_indexing(entry)
        return copy.deepcopy(entry.obj)

    def detach(self, vs_id: str, file_id: str) -> Json:
        self._vs_file(vs_id, file_id)
        del self.vs_files[vs_id][file_id]
        return {"id": file_id, "object": "vector_store.file.deleted", "deleted": True}

    def list_vs_files(self, vs_id: str, status: str | None) -> list[Json]:
        self._vs(vs_id)
        return [
            copy.deepcopy(e.obj)
            for e in self.vs_files[vs_id].values()
            if status is None or e.obj["status"] == status
        ]

    # ---- file search -------------------------------------------------------------------------------

    def check_search(self, vs_ids: Iterable[str]) -> None:
        for vs_id in vs_ids:
            vs = self.vector_stores.get(vs_id)
            if vs is None:
                raise ApiError(400, f"Vector store {vs_id} not found.", param="tools")
            self._expire_if_due(vs)
            if vs["status"] == "expired":
                raise ApiError(400, f"Vector store {vs_id} has expired.", param="tools")

    def search(self, vs_ids: list[str], query: str, limit: int) -> list[Hit]:
        words = {w.lower() for w in _WORD.findall(query)} - STOP_WORDS
        hits: list[Hit] = []
        now = int(time.time())
        for vs_id in vs_ids:
            self.vector_stores[vs_id]["last_active_at"] = now
            for file_id, entry in self.vs_files.get(vs_id, {}).items():
                if entry.obj["status"] != "completed" or any(h.file_id == file_id for h in hits):
                    continue
                text = self.contents.get(file_id, b"").decode("utf-8", errors="ignore")
                for sentence in _SENTENCE.findall(text):
                    found = {w.lower() for w in _WORD.findall(sentence)}
                    if words & found:
                        filename = self.files[file_id]["filename"]
                        hits.append(Hit(file_id, filename, " ".join(sentence.split()), vs_id))
                        break
        return hits[:limit]

    def file_exists(self, file_id: str) -> bool:
        return file_id in self.files
