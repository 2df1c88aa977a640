"""A stateful fake of the OpenAI Conversations + Responses API, validated against the official spec.

The bot under test runs as a separate process with ``OPENAI_BASE_URL=<fake.base_url>`` and talks to this
fake through the real ``openai`` client. Every request body (and the query string) is validated against
``shared/specs/openai-openapi.yaml``: a request the real API would reject is answered with a 400 *and*
recorded in ``spec_violations`` so tests can assert nothing slipped through.

Semantics chosen where the real API is vague (kept simple on purpose):

* A response's input items and its output message are added to the conversation together, and only when
  the response **completes** (the API docs: "Input items and output items from this response are
  automatically added to this conversation after this response completes"). A scripted HTTP error, a
  ``response.failed`` (``fail_with``), a dropped stream and a client that hangs up all leave the
  conversation exactly as it was, so a retry by the bot does not duplicate the user's message.
* While a response runs, its conversation is locked: another ``POST /v1/responses`` on it gets a 400
  ``conversation_locked``. The lock is released when the response ends, whatever the outcome.
* ``drop_after_chunks`` cuts the TCP connection after that many text deltas. By default the server-side
  response dies too: ``GET /v1/responses/{id}`` then shows status ``failed`` (error ``server_error``).
  With ``Reply(server_completes=True)`` only the connection is lost: the response keeps generating
  (honouring the remaining delays), then is stored as ``completed`` and committed to the conversation,
  so a bot can recover it with ``GET /v1/responses/{id}``.
* A client that disconnects mid-stream leaves the stored response ``cancelled``.
* Non-streaming requests honour the same delays; ``fail_with`` returns the ``failed`` Response object
  (HTTP 200) and ``drop_after_chunks`` closes the connection without any answer.
* ``background: true`` runs the response as a server-side task that keeps an event log. Without
  streaming the ``in_progress`` Response is returned at once (poll ``GET /v1/responses/{id}``); with
  ``stream: true`` the request streams that log. A client that hangs up, or a ``drop_after_chunks`` cut,
  leaves a background response running (unless ``server_completes`` is False: then it fails, and a
  ``response.failed`` event ends its log). ``GET /v1/responses/{id}?stream=true&starting_after=N`` streams
  the log from the event after sequence number N (from the start without it), then follows the response
  live until it ends; only background responses can be streamed again (400 otherwise), as with the real
  API. ``POST /v1/responses/{id}/cancel`` cancels a background response that is still running.
* ``Reply(incomplete_reason=...)`` ends the response ``incomplete`` (``response.incomplete``, with the
  text streamed so far), as when it hits ``max_output_tokens``.
* ``model_inputs`` gets one entry per ``POST /v1/responses`` that reached the "model", i.e. not for
  requests rejected with an HTTP error (auth, validation, 404, lock, scripted ``http_status``).
* Files, vector stores and the ``file_search`` tool live in ``tests/fakes/openai_files.py`` (see its
  docstring). A response with ``file_search`` streams a ``file_search_call`` item first, then the message
  with ``file_citation`` annotations of the search hits (``response.output_text.annotation.added`` right
  after the text each one cites); ``Reply.annotations`` adds scripted ones (e.g. ``url_citation``).
  ``model_inputs`` entries carry ``file_search``: the store ids searched and the file names found.
* ``GET /v1/models/{model}`` answers a ``Model`` for the models the project can use (``DEFAULT_MODELS``, or
  ``set_models``) and 404 ``model_not_found`` for any other id.
* ``fail_next(method, path_regex, status=...)`` answers the next matching requests with an HTTP error.
* Tool use (``Reply.tool_calls``/``echo_tool_outputs``/``code``/``code_files``/``web_results``, the Containers
  API, and the 400s for function calls and outputs that do not pair up) is described in
  ``tests/fakes/openai_tools.py``. Output items come in this order: ``file_search_call``,
  ``web_search_call``, ``code_interpreter_call``, then the message (none when the reply is only function
  calls), then the ``function_call`` items. Code interpreter input files are the Files API's files above.

Spec quirks handled when loading (see ``_prepare``): OpenAPI's ``nullable: true`` becomes a JSON Schema
``null`` type; ``oneOf`` becomes ``anyOf`` because the spec's discriminated unions overlap (an
``EasyInputMessage`` is also a valid ``InputMessage``), which strict ``oneOf`` would wrongly reject, while
the real API picks the first match; ``discriminator`` is left as a no-op annotation; the two
``$recursiveRef: "#"`` (2019-09 syntax) become a ``$ref`` to their enclosing component;
``MCPApprovalResponse`` loses the ``request_id`` it requires but never defines (see ``_prepare_spec``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import fcntl
import json
import math
import os
import re
import secrets
import socket
import struct
import tempfile
import termios
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jsonschema_rs
import yaml
from aiohttp import web
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from multidict import MultiMapping
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.fakes import openai_chat as chat
from tests.fakes import openai_tools as tools
from tests.fakes.openai_files import POLL_AFTER_MS, ApiError, FilesState, Hit
from tests.fakes.openai_tools import ContainerFile, McpScript, ToolCall
from tests.fakes.server import ServerThread

SPEC_PATH = Path(__file__).resolve().parents[2].parent / "shared" / "specs" / "openai-openapi.yaml"
_SPEC_URI = "urn:openai-openapi"
# Bump when _prepare changes so stale cache files are not reused.
_PREPARE_VERSION = 3

Json = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_JSON = web.RequestKey("json", dict)  # the parsed JSON body ({} when there is none)


# --------------------------------------------------------------------------------------------------
# Spec loading and validation (module level: loaded once per process, shared by all fakes)
# --------------------------------------------------------------------------------------------------


class _YamlLoader(yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader):  # type: ignore[misc]
    """YAML 1.2-ish loading: JSON has no dates, and only true/false are booleans (not yes/no/on/off)."""


_YamlLoader.yaml_implicit_resolvers = {
    first: [
        (tag, rx)
        for tag, rx in resolvers
        if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:bool")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


_NAME_MAPS = ("properties", "patternProperties", "dependentSchemas", "$defs", "definitions")


def _prepare(node: Any, component: str | None = None) -> Any:
    """Rewrite OpenAPI-isms that JSON Schema 2020-12 validators would get wrong (see module docstring)."""
    if isinstance(node, list):
        return [_prepare(x, component) for x in node]
    if not isinstance(node, dict):
        return node
    out: Json = {}
    for key, value in node.items():
        if key in _NAME_MAPS and isinstance(value, dict):
            # Keys here are property names, not keywords: a property may well be called "nullable".
            out[key] = {name: _prepare(sub, component) for name, sub in value.items()}
            continue
        if key == "oneOf":
            key = "anyOf"
        elif key == "$recursiveRef":
            if component is None:
                continue
            key, value = "$ref", f"#/components/schemas/{component}"
        out[key] = _prepare(value, component)
    if isinstance(out.get("nullable"), bool) and out.pop("nullable"):
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
        elif isinstance(kind, list):
            out["type"] = [*kind, "null"] if "null" not in kind else kind
        else:
            out = {"anyOf": [out, {"type": "null"}]}
        if isinstance(out.get("enum"), list) and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    return out


def _prepare_spec(raw: Json) -> Json:
    spec = {key: _prepare(value) for key, value in raw.items() if key != "components"}
    components = dict(raw.get("components", {}))
    schemas = components.pop("schemas", {})
    spec["components"] = {key: _prepare(value) for key, value in components.items()}
    spec["components"]["schemas"] = {name: _prepare(schema, name) for name, schema in schemas.items()}
    # The spec's MCPApprovalResponse requires a `request_id` it never defines (openai-python's
    # `McpApprovalResponse` has no such field, and the API guide's example sends none): a spec slip,
    # dropped, or every approval answer would be refused.
    for name in ("MCPApprovalResponse", "MCPApprovalResponseResource"):
        required = spec["components"]["schemas"].get(name, {}).get("required")
        if isinstance(required, list) and "request_id" in required:
            required.remove("request_id")
    return spec


def _cache_file(spec_path: Path) -> Path:
    st = spec_path.stat()
    name = f"openai-openapi-{st.st_size}-{st.st_mtime_ns}-p{_PREPARE_VERSION}.json"
    return Path(tempfile.gettempdir()) / name


def _load_spec_uncached(spec_path: Path) -> Json:
    cache = _cache_file(spec_path)
    with contextlib.suppress(OSError, ValueError):
        return json.loads(cache.read_text(encoding="utf-8"))  # type: ignore[no-any-return]
    with spec_path.open("rb") as f:
        spec = _prepare_spec(yaml.load(f, Loader=_YamlLoader))  # a safe loader subclass
    # Write-then-rename so parallel test processes never read a half-written cache file.
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    with contextlib.suppress(OSError):
        tmp.write_text(json.dumps(spec), encoding="utf-8")
        os.replace(tmp, cache)
    return spec


@dataclass(frozen=True)
class _Operation:
    template: str  # e.g. "/conversations/{conversation_id}/items"
    method: str
    pointer: str  # JSON pointer of the operation inside the spec
    operation: Json


def _pointer_escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


class Spec:
    """The parsed spec plus compiled, cached validators (build via ``get_spec()``)."""

    def __init__(self, document: Json) -> None:
        self.document = document
        resource = Resource.from_contents(document, default_specification=DRAFT202012)
        self._registry: Registry[Any] = Registry().with_resource(_SPEC_URI, resource)
        self._validators: dict[str, Draft202012Validator] = {}
        # The same schemas compiled by jsonschema-rs: it answers "valid?" ~500 times faster than the Python
        # validator (1.2 ms per responses.create body), which then runs only for a body it refused, to name
        # what is wrong. Formats are not asserted by either (the Python one has no format checker).
        self._rs_registry = jsonschema_rs.Registry([(_SPEC_URI, document)])
        self._fast: dict[str, jsonschema_rs.Draft202012Validator] = {}
        self._validators_lock = threading.Lock()
        self._routes: list[tuple[re.Pattern[str], str, Json]] = []
        for template, item in document.get("paths", {}).items():
            if "?" in template:  # "/responses?beta=true" variants describe the same URL
                continue
            regex = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$")
            self._routes.append((regex, template, item))
        # Literal paths win over templated ones ("/responses/compact" vs "/responses/{response_id}").
        self._routes.sort(key=lambda r: r[1].count("{"))

    def validator(self, pointer: str) -> Draft202012Validator:
        """A validator for the schema at ``pointer`` (``/components/schemas/Response``), compiled once."""
        found = self._validators.get(pointer)
        if found is None:
            with self._validators_lock:
                found = self._validators.get(pointer)
                if found is None:
                    found = Draft202012Validator({"$ref": f"{_SPEC_URI}#{pointer}"}, registry=self._registry)
                    self._validators[pointer] = found
        return found

    def fast_validator(self, pointer: str) -> jsonschema_rs.Draft202012Validator:
        """jsonschema-rs's validator for the schema at ``pointer``, compiled once."""
        found = self._fast.get(pointer)
        if found is None:
            with self._validators_lock:
                found = self._fast.get(pointer)
                if found is None:
                    found = jsonschema_rs.Draft202012Validator(
                        # A pointer in a URI fragment is percent-encoded ("{vector_store_id}").
                        {"$ref": f"{_SPEC_URI}#{quote(pointer, safe='/~')}"},
                        registry=self._rs_registry,
                        validate_formats=False,
                    )
                    self._fast[pointer] = found
        return found

    def errors(self, pointer: str, instance: Any) -> list[str]:
        """Readable validation errors of ``instance`` against the schema at ``pointer`` (empty if valid)."""
        if self.fast_validator(pointer).is_valid(instance):
            return []
        # Not best_match: it may descend into the wrong branch of a union before _describe can narrow it.
        errors = sorted(self.validator(pointer).iter_errors(instance), key=lambda e: list(map(str, e.path)))
        return list(dict.fromkeys(_describe(e) for e in errors))[:3]

    def schema_errors(self, name: str, instance: Any) -> list[str]:
        return self.errors(f"/components/schemas/{_pointer_escape(name)}", instance)

    def operation(self, method: str, path: str) -> _Operation | None:
        """The spec operation for a concrete path (without the ``/v1`` prefix), if the spec has one."""
        for regex, template, item in self._routes:
            if regex.match(path):
                op = item.get(method.lower())
                if not isinstance(op, dict):
                    continue
                pointer = f"/paths/{_pointer_escape(template)}/{method.lower()}"
                merged = dict(op)
                # Path-level parameters apply to every method of the path.
                merged["parameters"] = [*item.get("parameters", []), *op.get("parameters", [])]
                return _Operation(template, method.upper(), pointer, merged)
        return None

    def request_errors(
        self, method: str, path: str, query: MultiMapping[str], body: Any, has_body: bool
    ) -> list[str]:
        """Everything in a request that the spec's operation forbids (empty if valid or not in the spec)."""
        op = self.operation(method, path)
        if op is None:
            return []
        problems = self._query_errors(op, query)
        request_body = op.operation.get("requestBody")
        if isinstance(request_body, dict):
            if "$ref" in request_body:
                request_body = self._deref(request_body["$ref"])
            content = request_body.get("content", {})
            if not has_body:
                if request_body.get("required"):
                    problems.append("a JSON request body is required")
            elif "application/json" in content and "schema" in content["application/json"]:
                pointer = f"{op.pointer}/requestBody/content/application~1json/schema"
                if "$ref" in op.operation["requestBody"]:
                    ref = op.operation["requestBody"]["$ref"].lstrip("#")
                    pointer = f"{ref}/content/application~1json/schema"
                problems += self.errors(pointer, body)
        return problems

    def limit_error(self, method: str, path: str, body: Any) -> tuple[str, str, str] | None:
        """The real API's error for the first size/range limit (maxItems, maxLength, minimum, ...) that a
        JSON request body breaks, as (param, code, message); None when no such limit is broken."""
        op = self.operation(method, path)
        request_body = op.operation.get("requestBody") if op is not None else None
        if op is None or not isinstance(request_body, dict):
            return None
        pointer = f"{op.pointer}/requestBody/content/application~1json/schema"
        if "$ref" in request_body:
            pointer = f"{request_body['$ref'].lstrip('#')}/content/application~1json/schema"
            if "application/json" not in self._deref(request_body["$ref"]).get("content", {}):
                return None
        elif "application/json" not in request_body.get("content", {}):
            return None
        errors = sorted(self.validator(pointer).iter_errors(body), key=lambda e: list(map(str, e.path)))
        for error in errors:
            for leaf in _leaves(error):
                found = _limit_error(leaf)
                if found is not None:
                    return found
        return None

    def _deref(self, ref: str) -> Json:
        node: Any = self.document
        for token in ref.lstrip("#/").split("/"):
            node = node[token.replace("~1", "/").replace("~0", "~")]
        return node  # type: ignore[no-any-return]

    def _query_errors(self, op: _Operation, query: MultiMapping[str]) -> list[str]:
        problems: list[str] = []
        for index, param in enumerate(op.operation["parameters"]):
            pointer = f"{op.pointer}/parameters/{index}"
            if "$ref" in param:
                pointer = param["$ref"].lstrip("#")
                param = self._deref(param["$ref"])
            if param.get("in") != "query" or "schema" not in param:
                continue
            name = param["name"]
            raw = [*query.getall(name, []), *query.getall(f"{name}[]", [])]
            if not raw:
                if param.get("required"):
                    problems.append(f"query parameter {name!r} is required")
                continue
            schema = param["schema"]
            if "$ref" in schema:
                schema = self._deref(schema["$ref"])
            try:
                if schema.get("type") == "array" or (
                    isinstance(schema.get("type"), list) and "array" in schema["type"]
                ):
                    value: Any = [_coerce(v, schema.get("items", {})) for v in raw]
                else:
                    value = _coerce(raw[-1], schema)
            except ValueError as exc:
                problems.append(f"query parameter {name!r}: {exc}")
                continue
            problems += [
                f"query parameter {name!r}: {e.removeprefix('$: ')}"
                for e in self.errors(f"{pointer}/schema", value)
            ]
        return problems


def _coerce(raw: str, schema: Json) -> Any:
    """Turn a query-string value into the JSON type its schema asks for."""
    kinds = schema.get("type")
    kinds = [kinds] if isinstance(kinds, str) else (kinds or [])
    if "integer" in kinds:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not an integer") from None
    if "number" in kinds:
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a number") from None
    if "boolean" in kinds:
        if raw not in ("true", "false"):
            raise ValueError(f"{raw!r} is not a boolean")
        return raw == "true"
    return raw


# The real API's wording and codes for broken size/range limits, e.g. (seen in API answers)
# "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, but got 10 instead."
# with code "integer_below_min_value", and "Invalid 'tools': array too long. Expected an array with maximum
# length 128, but got an array with length 129 instead." with code "array_above_max_length".
_LIMITS: dict[str, tuple[str, str]] = {
    "maxItems": (
        "array_above_max_length",
        "array too long. Expected an array with maximum length {limit}, but got an array with length {got}",
    ),
    "minItems": (
        "array_below_min_length",
        "array too short. Expected an array with minimum length {limit}, but got an array with length {got}",
    ),
    "maxLength": (
        "string_above_max_length",
        "string too long. Expected a string with maximum length {limit}, but got a string with length {got}",
    ),
    "minLength": (
        "string_below_min_length",
        "string too short. Expected a string with minimum length {limit}, but got a string with length {got}",
    ),
    "minimum": (
        "{kind}_below_min_value",
        "{kind} below minimum value. Expected a value >= {limit}, but got {got}",
    ),
    "maximum": (
        "{kind}_above_max_value",
        "{kind} above maximum value. Expected a value <= {limit}, but got {got}",
    ),
}


def _limit_error(error: ValidationError) -> tuple[str, str, str] | None:
    """(param, code, message) of a broken size/range limit, in the real API's words (see _LIMITS)."""
    found = _LIMITS.get(str(error.validator))
    if found is None:
        return None
    code, wording = found
    instance = error.instance
    got = len(instance) if isinstance(instance, (list, str)) else instance
    kind = "integer" if isinstance(instance, int) else "decimal"
    param = error.json_path.removeprefix("$").removeprefix(".")
    text = wording.format(limit=error.validator_value, got=got, kind=kind)
    return param, code.format(kind=kind), f"Invalid '{param}': {text} instead."


def _is_tag_mismatch(error: ValidationError, union: ValidationError) -> bool:
    """Whether ``error`` says the union member is for another ``type`` tag than the instance's."""
    if error.validator in ("enum", "const"):
        return list(error.absolute_path) == [*union.absolute_path, "type"]
    return (
        error.validator == "required"
        and list(error.absolute_path) == list(union.absolute_path)
        and "type" in error.validator_value
        and "type" not in union.instance
    )


def _leaves(error: ValidationError) -> Iterator[ValidationError]:
    """The innermost errors of an anyOf tree, skipping members whose ``type`` tag does not match.

    The spec's unions are tagged by a ``type`` property; a member for another tag says nothing useful
    about what is wrong with the instance. A union where no member fits the tag is itself a leaf.
    """
    if not error.context:
        yield error
        return
    members: dict[Any, list[ValidationError]] = {}
    for sub in error.context:
        members.setdefault(sub.relative_schema_path[0], []).append(sub)
    followed = False
    for errors in members.values():
        if isinstance(error.instance, dict) and any(_is_tag_mismatch(e, error) for e in errors):
            continue
        followed = True
        for sub in errors:
            yield from _leaves(sub)
    if not followed:
        yield error


def _rank(error: ValidationError) -> int:
    """At equal depth prefer a concrete complaint, then "wrong type", "not in enum", "no member fits"."""
    if error.context:
        return 0
    return {"enum": 1, "const": 1, "type": 2}.get(str(error.validator), 3)


def _describe(error: ValidationError) -> str:
    """A readable line: the deepest problems within the union members matching the instance's tag."""
    if not error.context:
        return _line(error)
    # "is not of type 'null'" only says the field is not null: never the interesting complaint.
    leaves = [e for e in _leaves(error) if not (e.validator == "type" and e.validator_value == "null")] or [
        error
    ]
    leaves.sort(key=lambda e: (len(e.absolute_path), _rank(e)), reverse=True)
    first = leaves[0]
    lines = [_line(first)]
    # Two members may each be "almost" right (e.g. a bad role vs. a bad content shape): show both.
    for other in leaves[1:]:
        same_depth = len(other.absolute_path) == len(first.absolute_path)
        distinct = other.absolute_path != first.absolute_path or _rank(other) == _rank(first)
        if same_depth and distinct and (line := _line(other)) not in lines:
            lines.append(line)
            break
    return " | or: ".join(lines)


def _line(error: ValidationError) -> str:
    if error.context and isinstance(error.instance, dict) and isinstance(error.instance.get("type"), str):
        return f"{error.json_path}: type {error.instance['type']!r} is not allowed here"
    message = error.message
    if len(message) > 300:  # anyOf failures repeat the whole (possibly huge) instance
        message = message[:150] + " ... " + message[-120:]
    return f"{error.json_path}: {message}"


_spec: Spec | None = None
_spec_lock = threading.Lock()


def get_spec() -> Spec:
    """The process-wide spec (parsed YAML cached as JSON in the temp dir, keyed by the file's size+mtime)."""
    global _spec
    if _spec is None:
        with _spec_lock:
            if _spec is None:
                if not SPEC_PATH.is_file():
                    raise FileNotFoundError(f"OpenAI spec not found at {SPEC_PATH}")
                _spec = Spec(_load_spec_uncached(SPEC_PATH))
    return _spec


# --------------------------------------------------------------------------------------------------
# Scripted behaviour
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """What the next ``POST /v1/responses`` does (see the module docstring for the failure semantics)."""

    text: str | None = None  # None: f"Echo: {last user input text}"
    chunk_size: int = 8
    first_token_delay: float = 0.0
    chunk_delay: float = 0.0
    # Answer with this HTTP error instead; nothing is stored.
    http_status: int | None = None
    error_code: str | None = None
    error_type: str | None = None
    error_message: str | None = None  # also the message of a `fail_with` failure
    retry_after: float | None = None  # sets the `retry-after` header
    # Stream this many text deltas, then cut the connection (no response.completed).
    drop_after_chunks: int | None = None
    # After a drop, the server still finishes the response (stored completed, committed to the conversation).
    server_completes: bool = False
    # Emit `response.failed` with this error code (e.g. "server_error") after the deltas.
    fail_with: str | None = None
    # End `incomplete` with this reason (e.g. "max_output_tokens") after the deltas.
    incomplete_reason: str | None = None
    # Extra annotations on the answer (e.g. url_citation dicts with start_index/end_index into `text`).
    # File citations come from the file_search tool itself: each `{cite}` in `text` becomes one (citing the
    # search hits in turn), or, without `{cite}`, one per hit at the end of the text.
    annotations: tuple[Json, ...] = ()
    # Stream every annotation.added event after the last text delta instead of where its index points.
    annotations_at_end: bool = False
    # Tool use (see tests/fakes/openai_tools.py). Function calls stream after the text; with tool calls and
    # no `text` the response has no message at all.
    tool_calls: tuple[ToolCall, ...] = ()
    # A hosted MCP server's use (see tests/fakes/openai_tools.py, McpScript).
    mcp: McpScript | None = None
    # The text is "Tool said: <output>" per function_call_output item of the request (one line each).
    echo_tool_outputs: bool = False
    # A code interpreter run (needs a declared code_interpreter tool): its code, the files it writes to its
    # container (each cited in the text), and its logs (returned with include=code_interpreter_call.outputs).
    code: str | None = None
    code_files: tuple[ContainerFile, ...] = ()
    code_logs: str | None = None
    # A web search (needs a declared web_search tool) finding these (url, title) results, each cited.
    web_results: tuple[tuple[str, str], ...] = ()
    # Reasoning tokens the "model" spent: reported in usage.output_tokens_details.reasoning_tokens and, as
    # with the real API, counted in output_tokens too (reasoning is billed as output).
    reasoning_tokens: int = 0


@dataclass
class _Failure:
    method: str
    path: re.Pattern[str]
    status: int
    times: int
    code: str | None


@dataclass
class _Delay:
    method: str
    path: re.Pattern[str]
    seconds: float
    times: int


_DEFAULT_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Country not supported."),
    404: ("invalid_request_error", None, "Not found."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again later."),
    500: ("server_error", "server_error", "The server had an error while processing your request."),
    502: ("server_error", "bad_gateway", "Bad gateway."),
    503: (
        "server_error",
        "service_unavailable",
        "The engine is currently overloaded, please try again later.",
    ),
}


# The fake's send buffer for container file content (the kernel doubles it): small, so that what the fake
# counts as sent is close to what the client read.
CONTENT_SNDBUF = 16 * 1024


async def _acked(sock: socket.socket) -> None:
    """Until the peer's kernel acknowledged everything sent on `sock` (Linux: SIOCOUTQ is 0), so one chunk
    at most is on its way and the reader's receive buffer never grows past what it reads."""
    while True:
        try:
            unacked = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
        except OSError:
            return  # closed, or not Linux: nothing to wait for
        if unacked <= 0:
            return
        await asyncio.sleep(0.001)


@dataclass
class ContentDownload:
    """One ``GET /v1/containers/{id}/files/{file_id}/content``: how much of the file was handed to the
    connection, whether all of it was, and whether the transfer is over (finished or cut by the client)."""

    container_id: str
    file_id: str
    filename: str
    size: int
    sent: int = 0
    completed: bool = False
    ended: bool = False


def _error(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)


# The models a fresh fake project can use: the bot's default (bot/settings.py ASSISTANT_MODEL) and its
# smaller siblings. `Model` (shared/specs/openai-openapi.yaml): id, object "model", created, owned_by, and
# shutdown_date (null while none is announced).
DEFAULT_MODELS = ("gpt-5.1", "gpt-5-mini", "gpt-5-nano")


def _model_object(model_id: str) -> Json:
    return {
        "id": model_id,
        "object": "model",
        "created": 1_762_800_000,
        "owned_by": "system",
        "shutdown_date": None,
    }


def _default_models() -> dict[str, Json]:
    return {m: _model_object(m) for m in DEFAULT_MODELS}


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


_ITEM_PREFIXES = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "reasoning": "rs",
    "item_reference": "ref",
    "compaction": "cmp",
}


def _normalize_item(item: Json) -> Json:
    """An input item as the conversation stores it: with an id, a type and a status; text content as parts."""
    stored = copy.deepcopy(item)
    kind = stored.setdefault("type", "message")
    stored.setdefault("id", _new_id(_ITEM_PREFIXES.get(kind, "item")))
    if kind in ("function_call", "function_call_output"):
        stored = {k: v for k, v in stored.items() if v is not None}
        stored.setdefault("status", "completed")
    if kind == "message":
        stored["status"] = "completed"
        content = stored.get("content")
        if isinstance(content, str):
            if stored.get("role") == "assistant":
                stored["content"] = [
                    {"type": "output_text", "text": content, "annotations": [], "logprobs": []}
                ]
            else:
                stored["content"] = [{"type": "input_text", "text": content}]
    return stored


def _last_turn_start(items: list[Json]) -> int:
    """Where the items after the last assistant message start (the request's new part)."""
    for index in range(len(items) - 1, -1, -1):
        if items[index].get("type") in ("message", "function_call") and items[index].get("role") != "user":
            return index + 1
    return 0


def _item_text(item: Json) -> str:
    content = item.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / 4) if text else 0


# The default context window: gpt-5.1 (the bot's default model) has a 400,000-token context window and
# up to 128,000 output tokens, so at most 272,000 input tokens (https://platform.openai.com/docs/models/gpt-5.1).
DEFAULT_CONTEXT_WINDOW = 272_000
# "Background mode stores response data for roughly 10 minutes to enable polling"; a background response
# is kept beyond that only with an explicit store=true (https://platform.openai.com/docs/guides/background).
DEFAULT_BACKGROUND_RETENTION = 600.0
# The Responses API's answer to an input larger than the model's context window.
_CONTEXT_EXCEEDED = (
    "Your input exceeds the context window of this model. Please adjust your input and try again."
)


def _rendered_text(item: Json) -> str:
    """All the text of an item the model reads: message text, call arguments, tool outputs, compactions."""
    parts = [_item_text(item)]
    for key in ("arguments", "output", "encrypted_content", "code"):
        if isinstance(item.get(key), str):
            parts.append(item[key])
    return "".join(parts)


def context_tokens(items: list[Json], instructions: str | None = None) -> int:
    """The fake's token count of a rendered context: ceil(characters / 4) of all its text."""
    return _estimate_tokens("".join(_rendered_text(i) for i in items) + (instructions or ""))


def _compaction_entry(body: Json) -> Json | None:
    """The request's `context_management` entry asking for server-side compaction (CreateResponse.
    context_management, items ContextManagementParam: "Currently only 'compaction' is supported")."""
    for entry in body.get("context_management") or []:
        if isinstance(entry, dict) and entry.get("type") == "compaction":
            return entry
    return None


def _compact(
    history: list[Json], tail: list[Json], instructions: str | None, target: int
) -> tuple[Json, int]:
    """Server-side compaction (guides/compaction: "When the rendered token count crosses the configured
    threshold, the server runs server-side compaction"): the oldest items of `history` give way to one
    opaque `compaction` item (spec CompactionBody: type, id, encrypted_content), keeping the newest items
    that fit in `target` tokens with the new input `tail`. A function_call_output is never kept without its
    function_call. Returns the compaction item and how many leading history items it replaces."""
    item = {
        "id": _new_id("cmp"),
        "type": "compaction",
        "encrypted_content": "gAAAAA" + secrets.token_urlsafe(42),
    }
    cut = len(history)
    for start in range(1, len(history) + 1):
        kept = history[start:]
        dropped_calls = {i.get("call_id") for i in history[:start] if i.get("type") == "function_call"}
        orphan = any(
            i.get("type") == "function_call_output" and i.get("call_id") in dropped_calls for i in kept
        )
        if not orphan and context_tokens([item, *kept, *tail], instructions) <= target:
            cut = start
            break
    return item, cut


def _conversation_object(conv: Json) -> Json:
    return {k: conv[k] for k in ("id", "object", "created_at", "metadata")}


# --------------------------------------------------------------------------------------------------
# One response being generated
# --------------------------------------------------------------------------------------------------


_DROP = object()  # marker yielded by the generator where the connection must be cut


@dataclass
class _Run:
    id: str
    body: Json
    model: str
    conversation_id: str | None
    reply: Reply
    text: str
    new_items: list[Json]  # normalized input of this request
    seen_items: list[Json]  # everything the model saw
    epoch: int
    created_at: int = field(default_factory=lambda: int(time.time()))
    message_id: str = field(default_factory=lambda: _new_id("msg"))
    sequence: int = 0
    finished: bool = False
    annotations: list[Json] = field(default_factory=list)  # of the answer's output_text, by position
    # Tool use: output items before the message (file search, web search, code interpreter) and after it
    # (function calls), and whether there is a message at all.
    items_before: list[Json] = field(default_factory=list)
    items_after: list[Json] = field(default_factory=list)
    has_message: bool = True
    # Server-side compaction: the compaction item (output index 0) and the ids of the items it replaces.
    compaction: Json | None = None
    compacted_ids: list[str] = field(default_factory=list)
    tokens_before: int = 0
    threshold: int = 0
    # vanish_next_response(): the run is deleted after this many events; `vanished` once it is.
    vanish_after: int | None = None
    vanished: bool = False
    ended_at: float | None = None  # time.monotonic() when it ended (background retention)

    # Background runs: every event emitted, where the creating request's connection is cut, and whether
    # the log is complete; `changed` wakes the requests following the log.
    log: list[Json] = field(default_factory=list)
    drop_at: int | None = None
    ended: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def background(self) -> bool:
        return bool(self.body.get("background"))

    def publish(self, event: Json | None = None, *, drop: bool = False, end: bool = False) -> None:
        if event is not None:
            self.log.append(event)
        if drop and self.drop_at is None:
            self.drop_at = len(self.log)
        if end:
            self.ended = True
        self.changed.set()
        self.changed = asyncio.Event()

    @property
    def store(self) -> bool:
        return self.body.get("store") is not False

    def event(self, type_: str, **fields: Any) -> Json:
        event = {"type": type_, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def output_message(self, status: str, text: str | None) -> Json:
        content = [] if text is None else [self.output_part(text, self.annotations)]
        return {
            "id": self.message_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content,
        }

    @staticmethod
    def output_part(text: str, annotations: list[Json] | None = None) -> Json:
        return {
            "type": "output_text",
            "text": text,
            "annotations": copy.deepcopy(annotations or []),
            "logprobs": [],
        }

    def response_object(
        self,
        status: str,
        *,
        output: list[Json] | None = None,
        error: Json | None = None,
        incomplete_reason: str | None = None,
    ) -> Json:
        body = self.body
        done = status in ("completed", "failed", "cancelled", "incomplete")
        usage = None
        if status in ("completed", "incomplete"):
            # ResponseUsage (spec): everything the model read (the context, the instructions and the tool
            # definitions) is input; what it wrote (text, call arguments, reasoning) is output.
            tool_specs = json.dumps(body["tools"]) if body.get("tools") else ""
            input_tokens = context_tokens(self.seen_items, body.get("instructions")) + _estimate_tokens(
                tool_specs
            )
            reasoning = self.reply.reasoning_tokens
            arguments = "".join(str(i.get("arguments", "")) for i in self.items_after)
            output_tokens = _estimate_tokens(self.text + arguments) + reasoning
            usage = {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": reasoning},
                "total_tokens": input_tokens + output_tokens,
            }
        response = {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": bool(body.get("background")),
            "completed_at": int(time.time()) if status == "completed" else None,
            "conversation": {"id": self.conversation_id} if self.conversation_id else None,
            "error": error,
            "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "max_tool_calls": body.get("max_tool_calls"),
            "metadata": body.get("metadata") or {},
            "model": self.model,
            "output": output if output is not None else [],
            "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
            "previous_response_id": body.get("previous_response_id"),
            "prompt_cache_key": body.get("prompt_cache_key"),
            "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
            "safety_identifier": body.get("safety_identifier"),
            "service_tier": "default",
            "store": self.store,
            "temperature": body.get("temperature") if body.get("temperature") is not None else 1.0,
            "text": body.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": body.get("tool_choice") or "auto",
            "tools": body.get("tools") or [],
            "top_logprobs": body.get("top_logprobs") or 0,
            "top_p": body.get("top_p") if body.get("top_p") is not None else 1.0,
            "truncation": body.get("truncation") or "disabled",
            "usage": usage if done else None,
            "user": body.get("user"),
        }
        # The spec does not allow null for these two: leave them out instead.
        for key in ("usage", "user"):
            if response[key] is None:
                del response[key]
        return response


def _annotation_at(annotation: Json) -> int:
    """Where in the text an annotation applies: a file citation's index, a URL citation's end."""
    return int(annotation.get("index", annotation.get("end_index", 0)))


def _compose(reply: Reply, base: str | None, last_user: str, hits: list[Hit]) -> tuple[str, list[Json]]:
    """The answer's text and its annotations: `base` (scripted or made from tool results; None: the echo),
    with file citations of the search hits at each `{cite}`, else one per hit at the end (the echo quotes
    each hit's snippet)."""
    echo = base is None
    base = f"Echo: {last_user}" if base is None else base
    annotations: list[Json] = []

    def cite(hit: Hit, at: int) -> None:
        annotations.append(
            {"type": "file_citation", "file_id": hit.file_id, "filename": hit.filename, "index": at}
        )

    pieces = base.split("{cite}")
    text = pieces[0]
    for n, piece in enumerate(pieces[1:]):
        if hits:
            cite(hits[n % len(hits)], len(text))
        text += piece
    if len(pieces) == 1:
        for hit in hits:
            if echo:
                text += f"\n\nFrom {hit.filename}: {hit.snippet}"
            cite(hit, len(text))
    annotations += [copy.deepcopy(a) for a in reply.annotations]
    annotations.sort(key=_annotation_at)
    return text, annotations


# --------------------------------------------------------------------------------------------------
# The fake
# --------------------------------------------------------------------------------------------------


class FakeOpenAI:
    """See the module docstring. State attributes return deep copies, safe to read from any thread."""

    def __init__(self, api_key: str = "sk-test-fake") -> None:
        self.api_key = api_key
        self.spec = get_spec()
        self._lock = threading.Lock()  # guards all state below; never held across an await
        self._epoch = 0  # bumped by reset() so runs still in flight cannot write into the new state
        self._conversations: dict[str, Json] = {}
        self._responses: dict[str, Json] = {}
        self._histories: dict[str, list[Json]] = {}  # response id -> items, for previous_response_id
        self._busy: set[str] = set()  # conversations with a response in progress
        self._model_inputs: list[Json] = []
        self._requests: list[Json] = []
        self._violations: list[str] = []
        self._scripts: deque[Reply] = deque()
        # What an unscripted response does (the benchmark sets model latency and token rate here).
        self.default_reply = Reply()
        # response id -> time.monotonic() of its first text delta and of its end (for the benchmark).
        self._timings: dict[str, dict[str, float]] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # background generations, kept alive
        self._files = FilesState()  # files, vector stores, file search (tests/fakes/openai_files.py)
        self._failures: list[_Failure] = []  # fail_next(): scripted HTTP errors on any path
        self._delays: list[_Delay] = []  # slow_down(): extra latency on any path
        self._runs: dict[str, _Run] = {}  # background runs by response id (their event logs)
        # Tool use (tests/fakes/openai_tools.py)
        self._containers: dict[str, tools.StoredContainer] = {}
        self._tool_outputs: list[Json] = []
        self._code_runs: list[Json] = []
        self._content_downloads: list[ContentDownload] = []  # GET .../files/{id}/content, as served
        self._tool_mismatches: list[str] = []
        self._mcp_tools_seen: list[Json] = []
        # Limits (see set_context_window / set_background_retention / vanish_next_response)
        self._context_window = DEFAULT_CONTEXT_WINDOW
        self._retention = DEFAULT_BACKGROUND_RETENTION
        self._vanish_after: int | None = None
        self._compactions: list[Json] = []
        self._vanished: list[str] = []
        self._models: dict[str, Json] = _default_models()
        self._api_style = "openai"  # set_api_style (tests/fakes/openai_chat.py)
        self._server: ServerThread | None = None
        self.app = self._build_app()

    # ---- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> FakeOpenAI:
        self._server = ServerThread(self.app).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeOpenAI is not started")
        return f"{self._server.base_url}/v1"

    # ---- state for assertions ----------------------------------------------------------------------

    @property
    def conversations(self) -> dict[str, Json]:
        with self._lock:
            return copy.deepcopy(self._conversations)

    def conversation(self, conv_id: str) -> Json:
        with self._lock:
            return copy.deepcopy(self._conversations[conv_id])

    def response(self, response_id: str) -> Json:
        """The stored Response object (as ``GET /v1/responses/{id}`` would return it)."""
        with self._lock:
            return copy.deepcopy(self._responses[response_id])

    @property
    def model_inputs(self) -> list[Json]:
        with self._lock:
            return copy.deepcopy(self._model_inputs)

    @property
    def requests(self) -> list[Json]:
        with self._lock:
            return copy.deepcopy(self._requests)

    @property
    def spec_violations(self) -> list[str]:
        with self._lock:
            return list(self._violations)

    @property
    def scripts_left(self) -> int:
        """Scripted replies not used yet."""
        with self._lock:
            return len(self._scripts)

    @property
    def mcp_tools_seen(self) -> list[Json]:
        """The hosted ``mcp`` tools of every request that scripted an MCP use, as sent (headers included)."""
        with self._lock:
            return copy.deepcopy(self._mcp_tools_seen)

    @property
    def tool_outputs(self) -> list[Json]:
        """Every function_call_output a request sent: {call_id, name, output, response_id, conversation}."""
        with self._lock:
            return copy.deepcopy(self._tool_outputs)

    @property
    def code_runs(self) -> list[Json]:
        """Every code interpreter run: {response_id, container_id, input_file_ids, code, files}, where
        input_file_ids are Files API ids and files are {file_id, filename} of what the run wrote."""
        with self._lock:
            return copy.deepcopy(self._code_runs)

    @property
    def containers(self) -> dict[str, Json]:
        """Containers by id: the ContainerResource plus input_file_ids and files (each a
        ContainerFileResource plus its content bytes and mime)."""
        with self._lock:
            return {cid: c.record() for cid, c in self._containers.items()}

    def container(self, container_id: str) -> Json:
        with self._lock:
            return self._containers[container_id].record()

    @property
    def container_file_downloads(self) -> list[ContentDownload]:
        """Every container file content download, as served so far (``sent`` grows while one runs)."""
        with self._lock:
            return [copy.copy(d) for d in self._content_downloads]

    @property
    def tool_mismatches(self) -> list[str]:
        """Scripted tool use that did not happen because the request did not allow it."""
        with self._lock:
            return list(self._tool_mismatches)

    # ---- limits and faults ---------------------------------------------------------------------------

    @property
    def context_window(self) -> int:
        with self._lock:
            return self._context_window

    def set_context_window(self, tokens: int) -> None:
        """The model's input limit in tokens (default DEFAULT_CONTEXT_WINDOW; reset() restores it). Counted
        as ceil(characters / 4) of the text of the conversation's items + instructions + the new input."""
        with self._lock:
            self._context_window = tokens

    def set_background_retention(self, seconds: float) -> None:
        """How long a background response without an explicit store=true is kept after it ends (default
        DEFAULT_BACKGROUND_RETENTION); then GET/cancel answer 404 and previous_response_id cannot find it."""
        with self._lock:
            self._retention = seconds

    def vanish_next_response(self, after_events: int = 0) -> None:
        """The next background response is deleted after `after_events` SSE events: every stream of it is
        cut there, then GET /v1/responses/{id} (streaming or not) and cancel answer 404. It never completes,
        so its conversation is left unchanged (no input, no output) and unlocked."""
        with self._lock:
            self._vanish_after = after_events

    @property
    def compactions(self) -> list[Json]:
        """Every server-side compaction committed: {response_id, conversation, item (the compaction item),
        removed_item_ids, tokens_before, tokens_after, threshold}."""
        with self._lock:
            return copy.deepcopy(self._compactions)

    @property
    def vanished(self) -> list[str]:
        """Ids of the responses that vanished (vanish_next_response)."""
        with self._lock:
            return list(self._vanished)

    def script(self, *behaviours: Reply) -> None:
        with self._lock:
            self._scripts.extend(behaviours)

    # ---- files and vector stores: state and scripting ----------------------------------------------

    @property
    def files(self) -> dict[str, Json]:
        """Every stored File object, by id."""
        with self._lock:
            return copy.deepcopy(self._files.files)

    def file_content(self, file_id: str) -> bytes:
        with self._lock:
            return self._files.contents[file_id]

    def add_file(self, filename: str, content: bytes, purpose: str = "user_data") -> str:
        """Store a file as if uploaded with POST /v1/files; returns its id."""
        with self._lock:
            return str(self._files.create_file(filename, content, purpose, None)["id"])

    @property
    def vector_stores(self) -> dict[str, Json]:
        """Every vector store (as the API returns it), by id."""
        with self._lock:
            return {vs_id: self._files.get_vector_store(vs_id) for vs_id in self._files.vector_stores}

    def vector_store_files(self, vs_id: str) -> dict[str, Json]:
        """The vector-store file objects of one store, by file id (without counting as a poll)."""
        with self._lock:
            return {fid: copy.deepcopy(e.obj) for fid, e in self._files.vs_files.get(vs_id, {}).items()}

    def set_index_polls(self, polls: int) -> None:
        """How many GETs of a vector-store file it takes for indexing to finish (0: at once)."""
        with self._lock:
            self._files.index_polls = polls

    def fail_indexing(self, filename: str, code: str = "unsupported_file") -> None:
        """Indexing of files with this name ends `failed` with `last_error.code` = code."""
        with self._lock:
            self._files.index_failures[filename] = code

    def hold_indexing(self, filename: str) -> None:
        """Files with this name stay ``in_progress`` in every vector store, however often they are polled."""
        with self._lock:
            self._files.index_holds.add(filename)

    def expire_vector_store(self, vs_id: str) -> None:
        with self._lock:
            self._files.expire(vs_id)

    def idle_vector_store(self, vs_id: str, days: float) -> None:
        """Move the store's `last_active_at` back, as if unused for `days` (its expiry counts from it)."""
        with self._lock:
            self._files.vector_stores[vs_id]["last_active_at"] -= int(days * 86_400)

    def delete_vector_store(self, vs_id: str) -> None:
        """A store deleted by someone else (as with DELETE /v1/vector_stores/{id})."""
        with self._lock:
            self._files.delete_vector_store(vs_id)

    def add_vector_store(self, files: dict[str, bytes], *, metadata: dict[str, str] | None = None) -> str:
        """A ready vector store holding these files (e.g. shared knowledge the bot did not create)."""
        with self._lock:
            vs = self._files.create_vector_store({"metadata": metadata or {}})
            for name, content in files.items():
                file = self._files.create_file(name, content, "assistants", None)
                self._files.attach(vs["id"], file["id"], None)
                self._files.get_vs_file(vs["id"], file["id"])  # finish indexing at once
                self._files.vs_files[vs["id"]][file["id"]].obj["status"] = "completed"
            return str(vs["id"])

    def set_api_style(self, style: str) -> None:
        """Play a server with only some of OpenAI's APIs (see tests/fakes/openai_chat.py)."""
        assert style in chat.STYLES, style
        with self._lock:
            self._api_style = style

    def set_models(self, *model_ids: str) -> None:
        """The models this key's project can use (GET /v1/models/{model}); reset() restores the default."""
        with self._lock:
            self._models = {m: _model_object(m) for m in model_ids}

    def fail_next(
        self, method: str, path: str, *, status: int = 500, times: int = 1, code: str | None = None
    ) -> None:
        """The next `times` requests whose method matches and whose path matches the regex `path`
        (e.g. r"/v1/vector_stores/[^/]+/files$") answer this HTTP error before doing anything."""
        with self._lock:
            self._failures.append(_Failure(method.upper(), re.compile(path), status, times, code))

    def slow_down(self, method: str, path: str, seconds: float, *, times: int = 1_000_000) -> None:
        """The next `times` requests whose method and path (regex) match take `seconds` longer."""
        with self._lock:
            self._delays.append(_Delay(method.upper(), re.compile(path), seconds, times))

    def _take_delay(self, request: web.Request) -> float:
        with self._lock:
            for delay in self._delays:
                if delay.method == request.method and delay.path.search(request.path):
                    delay.times -= 1
                    if delay.times <= 0:
                        self._delays.remove(delay)
                    return delay.seconds
        return 0.0

    def reset(self) -> None:
        with self._lock:
            self._epoch += 1
            self._delays.clear()
            self._conversations.clear()
            self._responses.clear()
            self._histories.clear()
            self._busy.clear()
            self._model_inputs.clear()
            self._requests.clear()
            self._violations.clear()
            self._scripts.clear()
            self._timings.clear()
            self.default_reply = Reply()
            self._files = FilesState()
            self._failures.clear()
            self._runs.clear()
            self._containers.clear()
            self._tool_outputs.clear()
            self._code_runs.clear()
            self._content_downloads.clear()
            self._tool_mismatches.clear()
            self._mcp_tools_seen.clear()
            self._context_window = DEFAULT_CONTEXT_WINDOW
            self._retention = DEFAULT_BACKGROUND_RETENTION
            self._vanish_after = None
            self._compactions.clear()
            self._vanished.clear()
            self._models = _default_models()
            self._api_style = "openai"

    # ---- app and cross-cutting checks --------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app.on_response_prepare.append(self._add_request_id)
        app.on_cleanup.append(self._cancel_background)
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/v1/models/{model}", self._get_model),
            ("POST", "/v1/conversations", self._create_conversation),
            ("GET", "/v1/conversations/{conversation_id}", self._get_conversation),
            ("POST", "/v1/conversations/{conversation_id}", self._update_conversation),
            ("DELETE", "/v1/conversations/{conversation_id}", self._delete_conversation),
            ("GET", "/v1/conversations/{conversation_id}/items", self._list_items),
            ("POST", "/v1/conversations/{conversation_id}/items", self._create_items),
            ("GET", "/v1/conversations/{conversation_id}/items/{item_id}", self._get_item),
            ("DELETE", "/v1/conversations/{conversation_id}/items/{item_id}", self._delete_item),
            ("POST", "/v1/responses", self._create_response),
            ("POST", "/v1/chat/completions", self._create_chat_completion),
            ("GET", "/v1/responses/{response_id}", self._get_response),
            ("POST", "/v1/files", self._create_file),
            ("GET", "/v1/files", self._list_files),
            ("GET", "/v1/files/{file_id}", self._get_file),
            ("GET", "/v1/files/{file_id}/content", self._get_file_content),
            ("DELETE", "/v1/files/{file_id}", self._delete_file),
            ("POST", "/v1/vector_stores", self._create_vector_store),
            ("GET", "/v1/vector_stores", self._list_vector_stores),
            ("GET", "/v1/vector_stores/{vs_id}", self._get_vector_store),
            ("POST", "/v1/vector_stores/{vs_id}", self._update_vector_store),
            ("DELETE", "/v1/vector_stores/{vs_id}", self._delete_vector_store),
            ("POST", "/v1/vector_stores/{vs_id}/files", self._attach_file),
            ("GET", "/v1/vector_stores/{vs_id}/files", self._list_vs_files),
            ("GET", "/v1/vector_stores/{vs_id}/files/{file_id}", self._get_vs_file),
            ("DELETE", "/v1/vector_stores/{vs_id}/files/{file_id}", self._detach_file),
            ("POST", "/v1/responses/{response_id}/cancel", self._cancel_response),
            ("POST", "/v1/containers", self._create_container),
            ("GET", "/v1/containers/{container_id}", self._get_container),
            ("GET", "/v1/containers/{container_id}/files", self._list_container_files),
            ("GET", "/v1/containers/{container_id}/files/{file_id}", self._get_container_file),
            (
                "GET",
                "/v1/containers/{container_id}/files/{file_id}/content",
                self._get_container_file_content,
            ),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
        return app

    async def _cancel_background(self, app: web.Application) -> None:
        # Background generations are not request handlers, so aiohttp would not cancel them itself.
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @staticmethod
    async def _add_request_id(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.setdefault("x-request-id", _new_id("req"))

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.content_type == "multipart/form-data":
            return await self._multipart(request, handler)
        raw = await request.read() if request.body_exists else b""
        body: Any = None
        bad_json = False
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError:
                bad_json = True
        auth_ok = request.headers.get("Authorization") == f"Bearer {self.api_key}"
        with self._lock:
            self._requests.append(
                {
                    "method": request.method,
                    "path": request.path,
                    "query": dict(request.query),
                    "json": body,
                    "authorization_ok": auth_ok,
                }
            )
        if not auth_ok:
            given = request.headers.get("Authorization", "")
            message = (
                "Incorrect API key provided."
                if given
                else "You didn't provide an API key in the Authorization header."
            )
            return _error(401, message, code="invalid_api_key")
        api_path = request.path.removeprefix("/v1")
        if bad_json:
            return self._violation(request, ["body: the request body is not valid JSON"])
        problems = self.spec.request_errors(request.method, api_path, request.query, body, bool(raw.strip()))
        if problems:
            limit = self.spec.limit_error(request.method, api_path, body)
            return self._violation(request, problems, limit)
        if request.match_info.http_exception is not None or not chat.served(
            self._api_style, request.method, request.path
        ):
            return _error(404, f"Invalid URL ({request.method} {request.path})")
        if delay := self._take_delay(request):
            await asyncio.sleep(delay)
        failed = self._take_failure(request)
        if failed is not None:
            return failed
        request[_JSON] = body if isinstance(body, dict) else {}
        return await handler(request)

    async def _multipart(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """A multipart upload (POST /v1/files): its form fields are checked against the spec's schema."""
        form = await request.post()
        fields: Json = {}
        upload: Json | None = None
        for name, value in form.items():
            if isinstance(value, web.FileField):
                content = value.file.read()
                upload = {"filename": value.filename, "content": content, "content_type": value.content_type}
                fields[name] = "<binary>"
                continue
            match = re.fullmatch(r"(\w+)\[(\w+)\]", name)
            if match:  # expires_after[seconds]=3600, as the SDK flattens nested form fields
                inner = value if not value.isdigit() else int(value)
                fields.setdefault(match.group(1), {})[match.group(2)] = inner
            else:
                fields[name] = value
        auth_ok = request.headers.get("Authorization") == f"Bearer {self.api_key}"
        with self._lock:
            self._requests.append(
                {
                    "method": request.method,
                    "path": request.path,
                    "query": dict(request.query),
                    "json": None,
                    "form": dict(fields),
                    "authorization_ok": auth_ok,
                }
            )
        if not auth_ok:
            return _error(401, "Incorrect API key provided.", code="invalid_api_key")
        problems = []
        if request.path == "/v1/files":
            problems = self.spec.schema_errors("CreateFileRequest", fields)
            if upload is None:
                problems.append("form: the 'file' part must be a file upload")
        if problems:
            return self._violation(request, problems)
        if request.match_info.http_exception is not None:
            return _error(404, f"Invalid URL ({request.method} {request.path})")
        failed = self._take_failure(request)
        if failed is not None:
            return failed
        request[_JSON] = {**fields, "_upload": upload}
        return await handler(request)

    def _take_failure(self, request: web.Request) -> web.Response | None:
        with self._lock:
            for failure in self._failures:
                if failure.method == request.method and failure.path.search(request.path):
                    failure.times -= 1
                    if failure.times <= 0:
                        self._failures.remove(failure)
                    status = failure.status
                    default_type, default_code, message = _DEFAULT_ERRORS.get(
                        status, ("server_error" if status >= 500 else "invalid_request_error", None, "Error.")
                    )
                    return _error(status, message, type_=default_type, code=failure.code or default_code)
        return None

    def _violation(
        self, request: web.Request, problems: list[str], limit: tuple[str, str, str] | None = None
    ) -> web.Response:
        """A 400 for a request the spec forbids (recorded in spec_violations). A broken size/range limit
        gets the real API's param, code and message (see _LIMITS); anything else a generic message."""
        with self._lock:
            self._violations += [f"{request.method} {request.path}: {p}" for p in problems]
        if limit is not None:
            param, code, message = limit
            return _error(400, message, param=param, code=code)
        return _error(400, "Invalid request: " + "; ".join(problems))

    # ---- models ------------------------------------------------------------------------------------

    async def _get_model(self, request: web.Request) -> web.StreamResponse:
        # retrieveModel (shared/specs/openai-openapi.yaml, GET /models/{model}) answers a `Model`. An id the
        # project cannot use gets 404 with the API's error object, code `model_not_found` (the spec gives no
        # error bodies; the wording is the API's usual one for an unknown model).
        model_id = request.match_info["model"]
        with self._lock:
            model = copy.deepcopy(self._models.get(model_id))
        if model is None:
            return _error(
                404,
                f"The model `{model_id}` does not exist or you do not have access to it.",
                code="model_not_found",
            )
        return web.json_response(model)

    # ---- conversations -----------------------------------------------------------------------------

    def _find_conversation(self, request: web.Request) -> Json | None:
        return self._conversations.get(request.match_info["conversation_id"])

    @staticmethod
    def _conversation_missing(conv_id: str, param: str | None = None) -> web.Response:
        return _error(404, f"Conversation with id '{conv_id}' not found.", param=param)

    async def _create_conversation(self, request: web.Request) -> web.StreamResponse:
        body = request[_JSON]
        conv: Json = {
            "id": _new_id("conv"),
            "object": "conversation",
            "created_at": int(time.time()),
            "metadata": body.get("metadata") or {},
            "items": [_normalize_item(i) for i in body.get("items") or []],
        }
        with self._lock:
            self._conversations[conv["id"]] = conv
            return web.json_response(_conversation_object(conv))

    async def _get_conversation(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            conv = self._find_conversation(request)
            if conv is None:
                return self._conversation_missing(request.match_info["conversation_id"])
            return web.json_response(_conversation_object(conv))

    async def _update_conversation(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            conv = self._find_conversation(request)
            if conv is None:
                return self._conversation_missing(request.match_info["conversation_id"])
            conv["metadata"] = request[_JSON].get("metadata") or {}
            return web.json_response(_conversation_object(conv))

    async def _delete_conversation(self, request: web.Request) -> web.StreamResponse:
        conv_id = request.match_info["conversation_id"]
        with self._lock:
            if self._conversations.pop(conv_id, None) is None:
                return self._conversation_missing(conv_id)
        return web.json_response({"id": conv_id, "object": "conversation.deleted", "deleted": True})

    async def _list_items(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        order = query.get("order", "desc")
        try:
            limit = int(query.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            return _error(400, "Invalid 'limit': must be between 1 and 100.", param="limit")
        with self._lock:
            conv = self._find_conversation(request)
            if conv is None:
                return self._conversation_missing(request.match_info["conversation_id"])
            items = list(conv["items"])
            if order == "desc":
                items.reverse()
            after = query.get("after")
            if after:
                ids = [i["id"] for i in items]
                items = items[ids.index(after) + 1 :] if after in ids else []
            page = copy.deepcopy(items[:limit])
        return web.json_response(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else "",
                "last_id": page[-1]["id"] if page else "",
                "has_more": len(items) > limit,
            }
        )

    async def _create_items(self, request: web.Request) -> web.StreamResponse:
        new_items = [_normalize_item(i) for i in request[_JSON].get("items", [])]
        with self._lock:
            conv = self._find_conversation(request)
            if conv is None:
                return self._conversation_missing(request.match_info["conversation_id"])
            conv["items"].extend(new_items)
            data = copy.deepcopy(new_items)
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else "",
                "last_id": data[-1]["id"] if data else "",
                "has_more": False,
            }
        )

    async def _get_item(self, request: web.Request) -> web.StreamResponse:
        item_id = request.match_info["item_id"]
        with self._lock:
            conv = self._find_conversation(request)
            if conv is None:
                return self._conversation_missing(request.match_info["conversation_id"])
            for item in conv["items"]:
                if item["id"] == item_id:
                    return web.json_response(item)
        return _error(404, f"Item with id '{item_id}' not found.")

    async def _delete_item(self, request: web.Request) -> web.StreamResponse:
        item_id = request.match_info["item_id"]
        with self._lock:
            conv = self._find_conversation(request)
            if conv is None:
                return self._conversation_missing(request.match_info["conversation_id"])
            kept = [i for i in conv["items"] if i["id"] != item_id]
            if len(kept) == len(conv["items"]):
                return _error(404, f"Item with id '{item_id}' not found.")
            conv["items"] = kept
            return web.json_response(_conversation_object(conv))

    # ---- files and vector stores (state and rules in tests/fakes/openai_files.py) -------------------

    def _files_call(self, call: Callable[[], Json], *, poll: bool = False) -> web.Response:
        try:
            with self._lock:
                body = call()
        except ApiError as exc:
            return _error(exc.status, exc.message, param=exc.param, code=exc.code)
        headers = {"openai-poll-after-ms": POLL_AFTER_MS} if poll else None
        return web.json_response(body, headers=headers)

    @staticmethod
    def _page(items: list[Json], query: MultiMapping[str], *, default_limit: int) -> Json:
        """A cursor page (`limit`, `order` by created_at, `after`, `before`) as the list endpoints return."""
        ordered = sorted(items, key=lambda i: i["created_at"], reverse=query.get("order", "desc") == "desc")
        ids = [i["id"] for i in ordered]
        if query.get("after") in ids:
            ordered = ordered[ids.index(query["after"]) + 1 :]
        elif query.get("before") in ids:
            ordered = ordered[: ids.index(query["before"])]
        limit = int(query.get("limit", default_limit))
        page = ordered[:limit]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else "",
            "last_id": page[-1]["id"] if page else "",
            "has_more": len(ordered) > limit,
        }

    async def _create_file(self, request: web.Request) -> web.StreamResponse:
        form = request[_JSON]
        upload = form["_upload"]
        return self._files_call(
            lambda: self._files.create_file(
                upload["filename"] or "upload", upload["content"], form["purpose"], form.get("expires_after")
            )
        )

    async def _list_files(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        return self._files_call(
            lambda: self._page(self._files.list_files(query.get("purpose")), query, default_limit=10_000)
        )

    async def _get_file(self, request: web.Request) -> web.StreamResponse:
        return self._files_call(lambda: self._files.get_file(request.match_info["file_id"]))

    async def _delete_file(self, request: web.Request) -> web.StreamResponse:
        return self._files_call(lambda: self._files.delete_file(request.match_info["file_id"]))

    async def _get_file_content(self, request: web.Request) -> web.StreamResponse:
        file_id = request.match_info["file_id"]
        try:
            with self._lock:
                self._files.get_file(file_id)
                content = self._files.contents.get(file_id, b"")
        except ApiError as exc:
            return _error(exc.status, exc.message, param=exc.param, code=exc.code)
        return web.Response(body=content, content_type="application/octet-stream")

    async def _create_vector_store(self, request: web.Request) -> web.StreamResponse:
        return self._files_call(lambda: self._files.create_vector_store(request[_JSON]))

    async def _list_vector_stores(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        return self._files_call(lambda: self._page(self._files.list_vector_stores(), query, default_limit=20))

    async def _get_vector_store(self, request: web.Request) -> web.StreamResponse:
        return self._files_call(lambda: self._files.get_vector_store(request.match_info["vs_id"]))

    async def _update_vector_store(self, request: web.Request) -> web.StreamResponse:
        vs_id = request.match_info["vs_id"]
        return self._files_call(lambda: self._files.update_vector_store(vs_id, request[_JSON]))

    async def _delete_vector_store(self, request: web.Request) -> web.StreamResponse:
        return self._files_call(lambda: self._files.delete_vector_store(request.match_info["vs_id"]))

    async def _attach_file(self, request: web.Request) -> web.StreamResponse:
        body, vs_id = request[_JSON], request.match_info["vs_id"]
        return self._files_call(
            lambda: self._files.attach(vs_id, body["file_id"], body.get("attributes")), poll=True
        )

    async def _list_vs_files(self, request: web.Request) -> web.StreamResponse:
        vs_id, query = request.match_info["vs_id"], request.query
        return self._files_call(
            lambda: self._page(self._files.list_vs_files(vs_id, query.get("filter")), query, default_limit=20)
        )

    async def _get_vs_file(self, request: web.Request) -> web.StreamResponse:
        vs_id, file_id = request.match_info["vs_id"], request.match_info["file_id"]
        return self._files_call(lambda: self._files.get_vs_file(vs_id, file_id), poll=True)

    async def _detach_file(self, request: web.Request) -> web.StreamResponse:
        vs_id, file_id = request.match_info["vs_id"], request.match_info["file_id"]
        return self._files_call(lambda: self._files.detach(vs_id, file_id))

    # ---- containers (for the code interpreter; their input files are FilesState files) --------------

    def _unknown_files(self, file_ids: list[str]) -> web.Response | None:
        """A 404 naming the first of ``file_ids`` never uploaded (call under the lock), else None."""
        missing = [f for f in file_ids if not self._files.file_exists(f)]
        return _error(404, f"No such File object: {missing[0]}", param="id") if missing else None

    async def _create_container(self, request: web.Request) -> web.StreamResponse:
        body = request[_JSON]
        file_ids = list(body.get("file_ids") or [])
        with self._lock:
            if (problem := self._unknown_files(file_ids)) is not None:
                return problem
            container = tools.new_container(
                str(body.get("name", "")), file_ids, self._files, body.get("memory_limit") or "1g"
            )
            self._containers[container.id] = container
            return web.json_response(container.json())

    def _find_container(self, request: web.Request) -> tools.StoredContainer | web.Response:
        container_id = request.match_info["container_id"]
        found = self._containers.get(container_id)
        return found if found else _error(404, f"Container with id '{container_id}' not found.")

    def _find_container_file(self, request: web.Request) -> tools.StoredContainerFile | web.Response:
        container = self._find_container(request)
        if isinstance(container, web.Response):
            return container
        file_id = request.match_info["file_id"]
        found = container.files.get(file_id)
        return found if found else _error(404, f"Container file with id '{file_id}' not found.")

    async def _get_container(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            found = self._find_container(request)
            return found if isinstance(found, web.Response) else web.json_response(found.json())

    async def _list_container_files(self, request: web.Request) -> web.StreamResponse:
        limit = request.query.get("limit", "20")
        # The spec (ListContainerFiles): "Limit can range between 1 and 100, and the default is 20."
        if not limit.isdecimal() or not 1 <= int(limit) <= 100:
            return _error(400, "Invalid 'limit': must be between 1 and 100.", param="limit")
        with self._lock:
            found = self._find_container(request)
            if isinstance(found, web.Response):
                return found
            page = self._page([f.json() for f in found.files.values()], request.query, default_limit=20)
        return web.json_response(page)

    async def _get_container_file(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            found = self._find_container_file(request)
            return found if isinstance(found, web.Response) else web.json_response(found.json())

    async def _get_container_file_content(self, request: web.Request) -> web.StreamResponse:
        """The file's bytes, chunked and made lazily, paced by the client's reading (openai_tools doc)."""
        with self._lock:
            found = self._find_container_file(request)
            if isinstance(found, web.Response):
                return found
            download = ContentDownload(found.container_id, found.id, found.filename, found.size)
            self._content_downloads.append(download)
        response = web.StreamResponse(headers={"Content-Type": found.mime})
        response.enable_chunked_encoding()
        await response.prepare(request)
        transport = request.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if transport is None or sock is None:
            return response
        # Small kernel buffer, no transport buffer: a chunk goes out only once the last one left.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CONTENT_SNDBUF)
        transport.set_write_buffer_limits(high=0)
        try:
            while chunk := found.chunk(download.sent):
                await response.write(chunk)
                with self._lock:
                    download.sent += len(chunk)
                await _acked(sock)
            await response.write_eof()
            with self._lock:
                download.completed = True
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client hung up: the transfer ends here
        finally:
            with self._lock:
                download.ended = True
        return response

    # ---- responses ---------------------------------------------------------------------------------

    async def _get_response(self, request: web.Request) -> web.StreamResponse:
        response_id = request.match_info["response_id"]
        with self._lock:
            self._expire_background()
            stored = copy.deepcopy(self._responses.get(response_id))
            run = self._runs.get(response_id)
        if stored is None:
            return _error(404, f"Response with id '{response_id}' not found.")
        if request.query.get("stream") != "true":
            return web.json_response(stored)
        if run is None:
            return _error(
                400, "Only responses created with background=true can be streamed again.", param="stream"
            )
        after = request.query.get("starting_after")
        return await self._follow(request, run, int(after) + 1 if after is not None else 0, cut=False)

    async def _cancel_response(self, request: web.Request) -> web.StreamResponse:
        response_id = request.match_info["response_id"]
        with self._lock:
            self._expire_background()
            run = self._runs.get(response_id)
            known = response_id in self._responses
        if not known:
            return _error(404, f"Response with id '{response_id}' not found.")
        if run is None:
            return _error(400, "Only responses created with background=true can be cancelled.")
        if not run.finished:
            if run.task is not None:
                run.task.cancel()
            self._finish(run, "cancelled")
            run.publish(end=True)
        with self._lock:
            final = self._responses.get(response_id)
        if final is None:  # it vanished meanwhile
            return _error(404, f"Response with id '{response_id}' not found.")
        return web.json_response(copy.deepcopy(final))

    async def _create_response(self, request: web.Request) -> web.StreamResponse:
        body: Json = request[_JSON]
        conversation = body.get("conversation")
        conv_id = conversation.get("id") if isinstance(conversation, dict) else conversation
        previous_id = body.get("previous_response_id")
        raw_input = body.get("input")
        if isinstance(raw_input, str):
            raw_input = [
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": raw_input}]}
            ]
        new_items = [_normalize_item(i) for i in raw_input or []]

        with self._lock:
            self._expire_background()
            if (refused := chat.responses_problem(self._api_style, body)) is not None:
                return _error(400, refused, param="store")
            if conv_id and previous_id:
                return _error(
                    400,
                    "Mutually exclusive parameters: 'previous_response_id' and 'conversation'.",
                    param="conversation",
                )
            history: list[Json] = []
            if conv_id:
                conv = self._conversations.get(conv_id)
                if conv is None:
                    return self._conversation_missing(conv_id, param="conversation")
                if conv_id in self._busy:
                    return _error(
                        400,
                        "Another response is currently in progress for this conversation.",
                        code="conversation_locked",
                        param="conversation",
                    )
                history = conv["items"]
            elif previous_id:
                if previous_id not in self._histories:
                    return _error(
                        404,
                        f"Previous response with id '{previous_id}' not found.",
                        param="previous_response_id",
                    )
                history = self._histories[previous_id]
            search_tools = [
                t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type") == "file_search"
            ]
            vs_ids = [vs_id for t in search_tools for vs_id in t.get("vector_store_ids") or []]
            try:
                self._files.check_search(vs_ids)
                self._check_file_inputs(new_items)
            except ApiError as exc:
                return _error(exc.status, exc.message, param=exc.param, code=exc.code)
            rejected = self._tool_request_problem(body, history, new_items)
            if rejected is not None:
                return rejected
            # The context window (see set_context_window), or server-side compaction when requested.
            instructions = body.get("instructions")
            tokens_before = context_tokens([*history, *new_items], instructions)
            entry = _compaction_entry(body)
            compaction: Json | None = None
            compacted: list[Json] = []
            threshold = self._context_window
            if entry is not None:
                threshold = min(entry.get("compact_threshold") or self._context_window, self._context_window)
            if entry is not None and tokens_before > threshold and history:
                compaction, cut = _compact(history, new_items, instructions, threshold)
                compacted, history = history[:cut], history[cut:]
            seen = ([compaction] if compaction else []) + copy.deepcopy(history) + new_items
            if context_tokens(seen, instructions) > self._context_window:
                return _error(400, _CONTEXT_EXCEEDED, param="input", code="context_length_exceeded")
            reply = self._scripts.popleft() if self._scripts else self.default_reply
            if reply.http_status is not None:
                return self._scripted_error(reply)
            users = [i for i in seen if i.get("type") == "message" and i.get("role") == "user"]
            last_user = _item_text(users[-1]) if users else ""
            hits: list[Hit] = []
            search_call: Json | None = None
            if search_tools:
                limit = int(search_tools[0].get("max_num_results") or 10)
                hits = self._files.search(vs_ids, last_user, limit)
                search_call = {
                    "id": _new_id("fs"),
                    "type": "file_search_call",
                    "status": "completed",
                    "queries": [last_user],
                    "results": None,
                }
            run = _Run(
                id=_new_id("resp"),
                body=body,
                model=str(body.get("model", "")),
                conversation_id=conv_id,
                reply=reply,
                text="",
                new_items=new_items,
                seen_items=seen,
                epoch=self._epoch,
                compaction=compaction,
                compacted_ids=[i["id"] for i in compacted],
                tokens_before=tokens_before,
                threshold=threshold,
            )
            if run.background and self._vanish_after is not None:
                run.vanish_after, self._vanish_after = self._vanish_after, None
            if search_call is not None:
                run.items_before.append(search_call)
            self._plan(run, last_user, hits)
            if conv_id:
                self._busy.add(conv_id)
            if run.store:
                self._responses[run.id] = run.response_object("in_progress")
            self._model_inputs.append(
                {
                    "response_id": run.id,
                    "conversation": conv_id,
                    "model": run.model,
                    "instructions": body.get("instructions"),
                    "tools": copy.deepcopy(body.get("tools") or []),
                    "input_items": copy.deepcopy(seen),
                    "file_search": (
                        {"vector_store_ids": vs_ids, "hits": [h.filename for h in hits]}
                        if search_tools
                        else None
                    ),
                }
            )
            self._record_tool_outputs(run)

        if run.background:
            with self._lock:
                self._runs[run.id] = run
            snapshot = run.response_object("in_progress")
            run.task = asyncio.create_task(self._produce(run))
            self._tasks.add(run.task)
            run.task.add_done_callback(self._tasks.discard)
            if body.get("stream"):
                # Following the log: a client that hangs up leaves the response running.
                return await self._follow(request, run, 0, cut=True)
            return web.json_response(snapshot)
        try:
            if body.get("stream"):
                return await self._stream(request, run)
            return await self._respond_once(request, run)
        finally:
            self._finish(run, "cancelled")  # no-op unless the handler died midway

    async def _create_chat_completion(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/chat/completions (see tests/fakes/openai_chat.py)."""
        body: Json = request[_JSON]
        messages: list[Json] = body.get("messages") or []
        items = [_normalize_item(i) for i in chat.as_items(messages)]
        instructions = "".join(
            chat._content_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer")
        )
        with self._lock:
            if str(body.get("model")) not in self._models:
                # As GET /v1/models/{model}: a model the server doesn't serve is 404 `model_not_found`.
                return _error(
                    404,
                    f"The model `{body.get('model')}` does not exist or you do not have access to it.",
                    code="model_not_found",
                )
            if (problem := chat.pairing_problem(messages)) is not None:
                return _error(400, problem, param="messages")
            if context_tokens(items, instructions) > self._context_window:
                return _error(400, _CONTEXT_EXCEEDED, param="messages", code="context_length_exceeded")
            reply = self._scripts.popleft() if self._scripts else self.default_reply
            if reply.http_status is not None:
                return self._scripted_error(reply)
            completion_id = chat.new_id("chatcmpl")
            functions = {
                str((t.get("function") or {}).get("name"))
                for t in body.get("tools") or []
                if isinstance(t, dict)
            }
            calls = [c for c in reply.tool_calls if c.name in functions]
            for call in reply.tool_calls:
                if call.name not in functions:
                    self._tool_mismatches.append(f"{completion_id}: function call {call.name!r} not declared")
            new = items[_last_turn_start(items) :]
            users = [i for i in items if i.get("type") == "message" and i.get("role") == "user"]
            if reply.text is not None:
                text = reply.text
            elif reply.echo_tool_outputs:
                text = tools.echo_text(new)
            elif calls:
                text = ""
            else:
                text = f"Echo: {_item_text(users[-1]) if users else ''}"
            self._model_inputs.append(
                {
                    "response_id": completion_id,
                    "conversation": None,
                    "api": "chat_completions",
                    "model": body.get("model"),
                    "instructions": instructions,
                    "tools": copy.deepcopy(body.get("tools") or []),
                    "input_items": copy.deepcopy(items),
                    "messages": copy.deepcopy(messages),
                }
            )
        model, created = str(body.get("model")), chat.now()
        finish = "length" if reply.incomplete_reason else ("tool_calls" if calls else "stop")
        prompt = context_tokens(items, instructions)
        completion = _estimate_tokens(text + "".join(c.arguments_json for c in calls))
        if not body.get("stream"):
            message: Json = {"role": "assistant", "content": text or None, "refusal": None}
            if calls:
                message["tool_calls"] = [
                    {
                        "id": c.call_id or _new_id("call"),
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments_json},
                    }
                    for c in calls
                ]
            choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
            return web.json_response(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [choice],
                    "usage": chat.usage(prompt, completion),
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await response.prepare(request)

        def piece(delta: Json, end: str | None = None) -> Json:
            return chat.chunk(completion_id, model, created, delta, end)

        try:
            await chat.write_event(response, piece({"role": "assistant", "content": ""}))
            size = max(1, reply.chunk_size)
            for index, start in enumerate(range(0, len(text), size)):
                if index == reply.drop_after_chunks:
                    self._cut(request)
                    return response
                if index and reply.chunk_delay:
                    await asyncio.sleep(reply.chunk_delay)
                await chat.write_event(response, piece({"content": text[start : start + size]}))
            if reply.drop_after_chunks is not None and reply.drop_after_chunks >= len(
                range(0, len(text), size)
            ):
                self._cut(request)
                return response
            for n, call in enumerate(calls):
                head = {
                    "index": n,
                    "id": call.call_id or _new_id("call"),
                    "type": "function",
                    "function": {"name": call.name, "arguments": ""},
                }
                if call.call_id == "":
                    # The spec's ChatCompletionMessageToolCallChunk requires only `index`: a server may
                    # give no id (some local servers don't).
                    del head["id"]
                await chat.write_event(response, piece({"tool_calls": [head]}))
                args = {"index": n, "function": {"arguments": call.arguments_json}}
                await chat.write_event(response, piece({"tool_calls": [args]}))
            await chat.write_event(response, piece({}, finish))
            if (body.get("stream_options") or {}).get("include_usage"):
                last = chat.chunk(completion_id, model, created, {})
                last["choices"] = []
                last["usage"] = chat.usage(prompt, completion)
                await chat.write_event(response, last)
            await chat.write_event(response, "[DONE]")
            await response.write_eof()
            return response
        except (ConnectionError, RuntimeError):  # the client hung up (a stopped answer): nothing to send
            return response

    # ---- tool use in responses (under the lock) -------------------------------------------------------

    def _tool_request_problem(
        self, body: Json, history: list[Json], new_items: list[Json]
    ) -> web.Response | None:
        """The real API's rejection of unpaired function calls/outputs or unknown containers/files."""
        message = tools.tool_call_problem(history + new_items, new_items)
        if message is None:
            message = tools.mcp_approval_problem(history, new_items)
        if message is not None:
            return _error(400, message, param="input")
        interpreter = tools.declared_code_interpreter(body.get("tools") or [])
        if interpreter is None:
            return None
        container = interpreter.get("container")
        if isinstance(container, str):
            if container not in self._containers:
                return _error(404, f"Container with id '{container}' not found.", param="tools")
            return None
        return self._unknown_files(list((container or {}).get("file_ids") or []))

    def _plan(self, run: _Run, last_user: str, hits: list[Hit]) -> None:
        """Decide the run's output: tool items (where the request allows them), text and annotations
        (file citations of the search hits, scripted ones, then citations of the tools' results)."""
        reply, body = run.reply, run.body
        declared = body.get("tools") or []
        include = body.get("include") or []
        citations: list[tuple[Json, tuple[str, ...]]] = []  # (annotation without indexes, where to look)

        def mismatch(what: str) -> None:
            self._tool_mismatches.append(f"{run.id}: {what}")

        if reply.web_results:
            if tools.declared_web_search(declared):
                with_sources = "web_search_call.action.sources" in include
                run.items_before.append(tools.web_search_item(last_user, reply.web_results, with_sources))
                for url, title in reply.web_results:
                    annotation = {"type": "url_citation", "url": url, "title": title}
                    citations.append((annotation, (f"[{title}]({url})", url, title)))
            else:
                mismatch("web_results scripted, but the request declared no web_search tool")
        if reply.code is not None or reply.code_files:
            interpreter = tools.declared_code_interpreter(declared)
            if interpreter is None:
                mismatch("a code interpreter run scripted, but the request declared no code_interpreter tool")
            else:
                container = self._container_for(interpreter.get("container"))
                written = [
                    container.add(f.name, f.content, f.mime, "assistant", f.size) for f in reply.code_files
                ]
                logs = reply.code_logs if "code_interpreter_call.outputs" in include else None
                item = tools.code_interpreter_item(container.id, reply.code or "", logs)
                run.items_before.append(item)
                self._code_runs.append(
                    {
                        "response_id": run.id,
                        "container_id": container.id,
                        "input_file_ids": list(container.input_file_ids),
                        "code": item["code"],
                        "files": [{"file_id": f.id, "filename": f.filename} for f in written],
                    }
                )
                for f in written:
                    annotation = {
                        "type": "container_file_citation",
                        "container_id": container.id,
                        "file_id": f.id,
                        "filename": f.filename,
                    }
                    citations.append(
                        (annotation, (f"[{f.filename}](sandbox:{f.path})", f"sandbox:{f.path}", f.filename))
                    )
        mcp_text: str | None = None
        if reply.mcp is not None:
            mcp_text = self._plan_mcp(run, reply.mcp, declared, mismatch)
            if mcp_text == "":
                return  # only the approval request: no message
        if reply.tool_calls:
            functions = tools.declared_functions(declared)
            calls = [c for c in reply.tool_calls if c.name in functions]
            for call in reply.tool_calls:
                if call.name not in functions:
                    mismatch(
                        f"function call {call.name!r} scripted, but the request declared no such function"
                    )
            if body.get("parallel_tool_calls") is False and len(calls) > 1:
                mismatch(
                    f"{len(calls)} function calls scripted, but parallel_tool_calls is false: only the first"
                )
                calls = calls[:1]
            run.items_after = [tools.function_call_item(c, "completed") for c in calls]

        base: str | None = None  # None: the echo (quoting the search hits)
        if reply.text is not None:
            base = reply.text
        elif mcp_text is not None:
            base = mcp_text
        elif reply.echo_tool_outputs:
            base = tools.echo_text(run.new_items)
        elif run.items_after and not hits:
            run.has_message = False  # only function calls: no message
            return
        elif citations:
            base = " ".join(where[0] for _, where in citations)
        run.text, run.annotations = _compose(reply, base, last_user, hits)
        # Tool citations keep the order of the results they cite (after the file and scripted ones).
        for annotation, where in citations:
            start, end = tools.span(run.text, *where)
            run.annotations.append({**annotation, "start_index": start, "end_index": end})

    def _plan_mcp(
        self, run: _Run, script: tools.McpScript, declared: list[Json], mismatch: Callable[[str], None]
    ) -> str | None:
        """A hosted MCP server's items (see ``McpScript``); the text the reply falls back on, "" when the
        response only asks for approval, None when the request declared no such server."""
        server = tools.declared_mcp(declared, script.server_label)
        self._mcp_tools_seen.extend(copy.deepcopy(t) for t in declared if t.get("type") == "mcp")
        if server is None:
            mismatch(f"MCP server {script.server_label!r} scripted, but the request declared no such server")
            return None
        allowed = server.get("allowed_tools")
        if isinstance(allowed, list) and script.tool not in allowed:
            mismatch(f"MCP tool {script.tool!r} scripted, but the request's allowed_tools leave it out")
            return None
        listed = any(
            i.get("type") == "mcp_list_tools" and i.get("server_label") == script.server_label
            for i in run.seen_items
        )
        if not listed:  # listed once per conversation: the list stays in its context
            run.items_before.append(
                tools.mcp_list_tools_item(script.server_label, script.tools or (script.tool,))
            )
        asked = [
            i
            for i in run.seen_items
            if i.get("type") == "mcp_approval_request" and i.get("server_label") == script.server_label
        ]
        answers = {
            i.get("approval_request_id"): bool(i.get("approve"))
            for i in run.new_items
            if i.get("type") == "mcp_approval_response"
        }
        request_id = next((a["id"] for a in reversed(asked) if a.get("id") in answers), None)
        if request_id is None and tools.mcp_needs_approval(server, script.tool):
            run.items_after.append(tools.mcp_approval_request_item(script))
            run.has_message = False
            return ""
        if request_id is not None and not answers[request_id]:
            return f"The call to {script.tool} was not approved, so I did not run it."
        run.items_before.append(tools.mcp_call_item(script, request_id))
        if script.error is not None:
            return f"The {script.tool} tool failed: {script.error}"
        return f"MCP said: {script.output}"

    def _container_for(self, spec: Any) -> tools.StoredContainer:
        """The container a code_interpreter tool names (already checked), or a new one for "auto"."""
        if isinstance(spec, str):
            return self._containers[spec]
        spec = spec if isinstance(spec, dict) else {}
        container = tools.new_container(
            "code-interpreter",
            list(spec.get("file_ids") or []),
            self._files,
            spec.get("memory_limit") or "1g",
        )
        self._containers[container.id] = container
        return container

    def _record_tool_outputs(self, run: _Run) -> None:
        names = {i.get("call_id"): i.get("name") for i in run.seen_items if i.get("type") == "function_call"}
        for item in run.new_items:
            if item.get("type") == "function_call_output":
                self._tool_outputs.append(
                    {
                        "call_id": item.get("call_id"),
                        "name": names.get(item.get("call_id")),
                        "output": copy.deepcopy(item.get("output")),
                        "response_id": run.id,
                        "conversation": run.conversation_id,
                    }
                )

    async def _produce(self, run: _Run) -> None:
        """A background run: generate its events into its log, whoever is listening."""
        events = self._generate(run)
        try:
            async for event in events:
                if event is _DROP:
                    run.publish(drop=True)
                    continue
                if run.vanish_after is not None and len(run.log) >= run.vanish_after:
                    await events.aclose()
                    self._vanish(run)
                    return
                run.publish(event)
            if run.vanish_after is not None:  # it completed before its vanishing point: deleted now
                self._vanish(run)
        except asyncio.CancelledError:
            self._finish(run, "cancelled")
            raise
        finally:
            run.publish(end=True)

    def _vanish(self, run: _Run) -> None:
        """Delete a background run (vanish_next_response): unknown from now on; its streams are cut."""
        with self._lock:
            if not run.finished:
                run.finished = True  # never completes: nothing is committed to the conversation
                if run.conversation_id and run.epoch == self._epoch:
                    self._busy.discard(run.conversation_id)
            run.vanished = True
            if run.epoch == self._epoch:
                self._responses.pop(run.id, None)
                self._runs.pop(run.id, None)
                self._histories.pop(run.id, None)
                self._vanished.append(run.id)

    def _expire_background(self) -> None:
        """Forget background responses past their retention (call under the lock; see
        DEFAULT_BACKGROUND_RETENTION): only an explicit store=true keeps them longer."""
        now = time.monotonic()
        for response_id, run in list(self._runs.items()):
            if run.body.get("store") is True or run.ended_at is None:
                continue
            if now - run.ended_at >= self._retention:
                self._responses.pop(response_id, None)
                self._runs.pop(response_id, None)
                self._histories.pop(response_id, None)

    async def _follow(self, request: web.Request, run: _Run, start: int, *, cut: bool) -> web.StreamResponse:
        """Stream a background run's log from index `start`, live until the run ends; with `cut`, cut
        the connection where the run's scripted drop is."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        response.headers["Cache-Control"] = "no-cache"
        await response.prepare(request)
        index = max(0, start)
        while True:
            if cut and run.drop_at is not None and index >= run.drop_at:
                self._cut(request)
                return response
            if index < len(run.log):
                event = run.log[index]
                index += 1
                data = json.dumps(event, separators=(",", ":"))
                try:
                    await response.write(f"event: {event['type']}\ndata: {data}\n\n".encode())
                    self._time(run.id, event["type"])
                except (ConnectionError, RuntimeError):  # the client hung up: the run goes on
                    return response
                continue
            if run.vanished:  # deleted: the stream just stops, without an end
                self._cut(request)
                return response
            if run.ended:
                break
            await run.changed.wait()
        await response.write_eof()
        return response

    def _check_file_inputs(self, items: list[Json]) -> None:
        """An input_image / input_file naming a file id must name a stored file (the real API 400s)."""
        for item in items:
            content = item.get("content")
            for part in content if isinstance(content, list) else []:
                file_id = part.get("file_id") if isinstance(part, dict) else None
                if file_id and not self._files.file_exists(file_id):
                    raise ApiError(400, f"The file '{file_id}' does not exist.", param="input")

    @staticmethod
    def _scripted_error(reply: Reply) -> web.Response:
        status = reply.http_status
        assert status is not None
        default_type, default_code, default_message = _DEFAULT_ERRORS.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None, f"HTTP {status}")
        )
        headers = {}
        if reply.retry_after is not None:
            seconds = reply.retry_after
            headers["retry-after"] = str(int(seconds)) if float(seconds).is_integer() else str(seconds)
        return _error(
            status,
            reply.error_message or default_message,
            type_=reply.error_type or default_type,
            code=reply.error_code or default_code,
            headers=headers,
        )

    async def _generate(self, run: _Run) -> AsyncGenerator[Any, None]:
        """The event sequence of one response, with the scripted delays; updates state as it ends."""
        reply = run.reply
        yield run.event("response.created", response=run.response_object("in_progress"))
        yield run.event("response.in_progress", response=run.response_object("in_progress"))
        done: list[Json] = []  # finished output items
        if run.compaction is not None:
            # "The response stream includes the encrypted compaction item" (guides/compaction): an output
            # item (spec OutputItem includes CompactionBody) announced by output_item.added / .done.
            item = copy.deepcopy(run.compaction)
            yield run.event("response.output_item.added", output_index=0, item=item)
            yield run.event("response.output_item.done", output_index=0, item=copy.deepcopy(item))
            done.append(item)
        for item in run.items_before:
            async for event in self._tool_events(run, len(done), item):
                yield event
            done.append(copy.deepcopy(item))
        at = len(done)  # the message's output index
        if run.has_message:
            yield run.event(
                "response.output_item.added", output_index=at, item=run.output_message("in_progress", None)
            )
            yield run.event(
                "response.content_part.added",
                item_id=run.message_id,
                output_index=at,
                content_index=0,
                part=run.output_part(""),
            )
        # Chunks of chunk_size, also cut where an annotation applies, so its annotation.added event can
        # follow exactly the text it refers to (as the real stream does).
        size = max(1, reply.chunk_size)
        cuts = set(range(0, len(run.text), size)) | {_annotation_at(a) for a in run.annotations}
        cuts = [*sorted(c for c in cuts if 0 < c < len(run.text)), len(run.text)]
        bounds = list(zip([0, *cuts[:-1]], cuts, strict=True)) if run.text else []
        chunks = [(start, run.text[start:end]) for start, end in bounds]
        pending = list(enumerate(run.annotations))

        def due(position: int) -> list[Json]:
            if reply.annotations_at_end and position < len(run.text):
                return []
            ready = [(n, a) for n, a in pending if _annotation_at(a) <= position]
            for entry in ready:
                pending.remove(entry)
            return [
                run.event(
                    "response.output_text.annotation.added",
                    item_id=run.message_id,
                    output_index=at,
                    content_index=0,
                    annotation_index=n,
                    annotation=copy.deepcopy(a),
                )
                for n, a in ready
            ]

        if reply.first_token_delay:
            await asyncio.sleep(reply.first_token_delay)
        for index, (start, chunk) in enumerate(chunks):
            for event in due(start):
                yield event
            if index == reply.drop_after_chunks:
                yield _DROP
                if not reply.server_completes:
                    failed = self._finish_dropped(run)
                    if failed is not None:
                        yield failed
                    return
            if index and reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay)
            yield run.event(
                "response.output_text.delta",
                item_id=run.message_id,
                output_index=at,
                content_index=0,
                delta=chunk,
                logprobs=[],
            )
        if reply.drop_after_chunks is not None and reply.drop_after_chunks >= len(chunks):
            yield _DROP
            if not reply.server_completes:
                failed = self._finish_dropped(run)
                if failed is not None:
                    yield failed
                return
        for event in due(len(run.text)):
            yield event
        if reply.fail_with is not None:
            error = {
                "code": reply.fail_with,
                "message": reply.error_message or "The model failed to respond.",
            }
            failed = run.response_object("failed", error=error)
            self._finish(run, "failed", failed)
            yield run.event("response.failed", response=failed)
            return
        if reply.incomplete_reason is not None:
            partial = [run.output_message("incomplete", run.text)] if run.has_message else []
            incomplete = run.response_object(
                "incomplete", output=done + partial, incomplete_reason=reply.incomplete_reason
            )
            self._finish(run, "incomplete", incomplete)
            yield run.event("response.incomplete", response=incomplete)
            return
        if run.has_message:
            message = run.output_message("completed", run.text)
            common = {"item_id": run.message_id, "output_index": at, "content_index": 0}
            yield run.event("response.output_text.done", **common, text=run.text, logprobs=[])
            part = run.output_part(run.text, run.annotations)
            yield run.event("response.content_part.done", **common, part=part)
            yield run.event("response.output_item.done", output_index=at, item=message)
            done.append(message)
        for item in run.items_after:
            async for event in self._tool_events(run, len(done), item):
                yield event
            done.append(copy.deepcopy(item))
        completed = run.response_object("completed", output=done)
        self._finish(run, "completed", completed)
        yield run.event("response.completed", response=completed)

    @staticmethod
    async def _tool_events(run: _Run, index: int, item: Json) -> AsyncIterator[Json]:
        """A tool item's events, with the reply's chunk delay between its deltas."""
        reply = run.reply
        for event, is_delta in tools.stream_item(run.event, index, item, chunk_size=reply.chunk_size):
            if is_delta and reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay)
            yield event

    def _time(self, response_id: str, event_type: str) -> None:
        mark = {"response.output_text.delta": "first_token_at", "response.completed": "completed_at"}.get(
            event_type
        )
        if mark is not None:
            with self._lock:
                self._timings.setdefault(response_id, {}).setdefault(mark, time.monotonic())

    def timings(self) -> dict[str, dict[str, float]]:
        """response id -> {"first_token_at", "completed_at"}: when the model's text went out (monotonic)."""
        with self._lock:
            return copy.deepcopy(self._timings)

    def _finish_dropped(self, run: _Run) -> Json | None:
        """The server side of a dropped response fails too; a background run's log ends with the
        `response.failed` event (returned), so a client resuming it learns how it ended."""
        error = {"code": "server_error", "message": "The response was interrupted."}
        failed = run.response_object("failed", error=error)
        self._finish(run, "failed", failed)
        return run.event("response.failed", response=failed) if run.background else None

    def _finish(self, run: _Run, status: str, final: Json | None = None) -> None:
        """End a run once: store its final Response, release the lock, commit items if completed."""
        with self._lock:
            if run.finished:
                return
            if run.vanish_after is not None and len(run.log) >= run.vanish_after:
                return  # it vanishes before its end is published: it never completes (see _vanish)
            run.finished = True
            if run.epoch != self._epoch:
                return  # reset() happened meanwhile
            if run.conversation_id:
                self._busy.discard(run.conversation_id)
            if final is None:
                final = run.response_object(status)
            if run.store:
                self._responses[run.id] = final
            if run.background:
                run.ended_at = time.monotonic()
            if status not in ("completed", "incomplete"):
                return
            # The compaction item is already first in seen_items; the conversation gets it in place of
            # the items it replaces (items added meanwhile with items.create are kept).
            output = [i for i in copy.deepcopy(final["output"]) if i.get("type") != "compaction"]
            if run.store:
                self._histories[run.id] = run.seen_items + output
            conv = self._conversations.get(run.conversation_id or "")
            if conv is not None:
                if run.compaction is not None:
                    gone = set(run.compacted_ids)
                    kept = [i for i in conv["items"] if i["id"] not in gone]
                    conv["items"] = [copy.deepcopy(run.compaction), *kept]
                conv["items"].extend(copy.deepcopy(run.new_items) + output)
            if run.compaction is not None:
                self._compactions.append(
                    {
                        "response_id": run.id,
                        "conversation": run.conversation_id,
                        "item": copy.deepcopy(run.compaction),
                        "removed_item_ids": list(run.compacted_ids),
                        "tokens_before": run.tokens_before,
                        "tokens_after": context_tokens(run.seen_items, run.body.get("instructions")),
                        "threshold": run.threshold,
                    }
                )

    @staticmethod
    async def _drain(events: AsyncIterator[Any]) -> None:
        async for _ in events:
            pass

    @staticmethod
    def _cut(request: web.Request) -> None:
        # Closing the transport mid-body makes the client see an incomplete chunked response.
        if request.transport is not None:
            request.transport.close()

    async def _stream(self, request: web.Request, run: _Run) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        response.headers["Cache-Control"] = "no-cache"
        await response.prepare(request)
        events = self._generate(run)
        async for event in events:
            if event is _DROP:
                self._cut(request)
                await self._drain(events)  # server_completes: keep generating after the cut
                return response
            data = json.dumps(event, separators=(",", ":"))
            try:
                await response.write(f"event: {event['type']}\ndata: {data}\n\n".encode())
                self._time(run.id, event["type"])
            except (ConnectionError, RuntimeError):  # the client hung up
                await events.aclose()
                self._finish(run, "cancelled")
                return response
        await response.write_eof()
        return response

    async def _respond_once(self, request: web.Request, run: _Run) -> web.StreamResponse:
        final: Json | None = None
        events = self._generate(run)
        async for event in events:
            if event is _DROP:
                self._cut(request)
                await self._drain(events)
                return web.Response(status=500)  # never reaches the client: the connection is closed
            if event["type"] in ("response.completed", "response.failed"):
                final = event["response"]
        return web.json_response(final)
