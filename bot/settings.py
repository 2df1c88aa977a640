"""All configuration, read once from the environment (and `.env`) at start-up and passed down.

The assistant definition (model, instructions, tools) lives here rather than in an OpenAI prompt object,
since prompt objects are shut down on 2026-11-30.
"""

from __future__ import annotations

import functools
import json
import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from dotenv import dotenv_values
from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.errors import ConfigError
from bot.keys import RUNNER_LOCK_TTL, SPEND_WINDOW


class Mode(StrEnum):
    SOCKET = "socket"
    HTTP = "http"
    # A maintenance command (e.g. cleanup-orphans): needs neither the app token nor the signing secret.
    TOOL = "tool"
    # `slack-assistant worker`: runs queued turns, takes no Slack requests, so needs neither either.
    WORKER = "worker"


# Worker processes the one command starts by default, at most (each takes ~100 MB; a turn mostly waits on
# OpenAI, so a few cores' worth of workers carry hundreds of turns at once each).
MAX_AUTO_WORKER_PROCESSES = 4


class SuggestedPrompt(BaseModel):
    title: str = Field(min_length=1, max_length=75)
    message: str = Field(min_length=1)


# Built-in tools, each switchable: hosted by OpenAI (web search, code interpreter) or run by the bot.
ToolName = Literal["web_search", "code_interpreter", "current_time", "slack_user_profile"]
# Where assistant threads live (issue 17): OpenAI Conversations, or Redis for servers without them (their
# Responses API with store=false, or their Chat Completions API).
BackendName = Literal["conversations", "responses", "chat_completions"]
# Built-in tools only OpenAI hosts: refused at start-up on a Redis-held backend.
HOSTED_TOOLS = frozenset({"web_search", "code_interpreter"})
DEFAULT_TOOLS: list[ToolName] = ["current_time", "slack_user_profile"]

# The bot scopes an OAuth install asks for: manifest.yml's `oauth_config.scopes.bot` (a test keeps the two
# the same).
BOT_SCOPES = (
    "app_mentions:read", "assistant:write", "channels:history", "chat:write", "commands", "files:read",
    "files:write", "groups:history", "im:history", "mpim:history", "users:read",
)  # fmt: skip

DEFAULT_INSTRUCTIONS = (
    "You are a helpful assistant inside Slack. Answer concisely and format with Markdown "
    "(short paragraphs, lists, code blocks). When a question is ambiguous, ask one clarifying question."
)

# What OpenAI's file_search can index (its supported file types), and the image types models read.
DEFAULT_DOCUMENT_TYPES = [
    "c", "cpp", "cs", "css", "doc", "docx", "go", "html", "java", "js", "json", "md", "pdf", "php",
    "pptx", "py", "rb", "sh", "tex", "ts", "txt",
]  # fmt: skip
DEFAULT_IMAGE_TYPES = ["png", "jpg", "jpeg", "webp", "gif"]
# Data files the code interpreter reads (accepted only while it is on); documents reach it too.
DEFAULT_DATA_TYPES = ["csv", "tsv", "xlsx", "xls", "parquet", "xml", "zip"]

# REDIS_URL schemes that name a Sentinel service instead of a server (bot.queue.connection).
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")

# MCP servers (issue 16). A label names a server in policies, steps and approvals; a bot-side server's tools
# reach the model as `<label>__<tool>` function tools, whose names the Responses API limits to 64 characters
# of [A-Za-z0-9_-] (spec `FunctionTool.name`).
McpTransport = Literal["hosted", "http", "stdio"]
SEP_IN_NAMES = "__"  # between a bot-side server's label and its tool's name
_MCP_LABEL = r"^[A-Za-z0-9_-]{1,32}$"
_TEAM_ID = r"^[TE][A-Z0-9]{1,20}$"
_HEADER_NAME = r"^[A-Za-z0-9-]{1,100}$"
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


class McpServer(BaseModel):
    """One MCP server, as MCP_SERVERS (or MCP_SERVERS_FILE) declares it.

    `hosted`: OpenAI calls it (the Responses `mcp` tool; `url` must be reachable from OpenAI). `http`
    (streamable HTTP) and `stdio` (`command`): the bot is the client. `headers_from_env` maps a header to
    the environment variable holding its value: secrets stay in the environment, never in this config,
    Redis, the logs or Slack. `approval`: the tools (or "always" / "never") that need the asker's yes in
    Slack before they run. `default`: offered where no channel policy names its servers (`mcp`); off unless
    set, so a new server reaches no channel before someone chooses it. `workspaces`: the team ids it serves
    (unset: every workspace of the install); elsewhere it is neither offered nor nameable in a policy."""

    model_config = {"extra": "forbid", "frozen": True}

    label: str = Field(pattern=_MCP_LABEL)
    transport: McpTransport
    url: str | None = None
    command: list[str] | None = Field(default=None, min_length=1)
    description: str | None = Field(default=None, max_length=1000)
    allowed_tools: list[str] | None = None
    approval: Literal["always", "never"] | list[str] = "never"
    headers_from_env: dict[str, str] = Field(default_factory=dict)
    default: bool = False
    workspaces: list[str] | None = None

    @field_validator("label")
    @classmethod
    def _label_routes(cls, v: str) -> str:
        # Tools are named `<label>__<tool>` and split at the first `__`: a label holding `__` or ending in
        # `_` would route a call to the wrong server or tool.
        if SEP_IN_NAMES in v or v.endswith("_"):
            raise ValueError("a label may not contain `__` or end with `_`")
        return v

    @field_validator("workspaces")
    @classmethod
    def _team_ids(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not all(re.fullmatch(_TEAM_ID, t) for t in v):
            raise ValueError("lists Slack team ids (T… or E…)")
        return v

    def serves(self, team_id: str) -> bool:
        """Whether this workspace may have the server (offered, or named in its policies)."""
        return self.workspaces is None or team_id in self.workspaces

    @field_validator("headers_from_env")
    @classmethod
    def _header_shapes(cls, v: dict[str, str]) -> dict[str, str]:
        for header, var in v.items():
            if not re.fullmatch(_HEADER_NAME, header) or not re.fullmatch(_ENV_NAME, var):
                raise ValueError("maps header names to environment variable names")
        return v

    def needs_approval(self, tool: str) -> bool:
        if isinstance(self.approval, list):
            return tool in self.approval
        return self.approval == "always"

    def allows(self, tool: str) -> bool:
        return self.allowed_tools is None or tool in self.allowed_tools


DEFAULT_PROMPTS = [
    SuggestedPrompt(title="Summarize a topic", message="Give me a short overview of "),
    SuggestedPrompt(title="Draft a message", message="Help me write a friendly message to my team about "),
    SuggestedPrompt(title="Explain code", message="Explain what this code does:\n"),
]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True)

    # One workspace: its bot token. Installed to many with OAuth (SLACK_CLIENT_ID and SLACK_CLIENT_SECRET
    # set): none, each workspace's comes from its installation (bot/slack/installations.py).
    slack_bot_token: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    # OAuth (HTTP mode): Basic Information -> App Credentials. Bolt's flow serves the install page and the
    # redirect; SLACK_REDIRECT_URI is the full public URL of the redirect path (as set in the app's
    # "Redirect URLs"), needed when the bot sits behind a proxy that changes the host.
    slack_client_id: str | None = None
    slack_client_secret: SecretStr | None = None
    slack_scopes: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(BOT_SCOPES))
    slack_install_path: str = "/slack/install"
    slack_redirect_uri_path: str = "/slack/oauth_redirect"
    slack_redirect_uri: str | None = None
    # Slack's authorize page, which the install page links to (a test points it elsewhere).
    slack_authorize_url: str = "https://slack.com/oauth/v2/authorize"

    openai_api_key: SecretStr
    openai_base_url: str | None = None
    openai_timeout: float = Field(default=120.0, gt=0)

    redis_url: str | None = None
    # REDIS_URL names one node of a Redis Cluster (redis://node:6379/0): the client finds the others, and each
    # workspace's keys live in one slot of it (bot/keys.py).
    redis_cluster: bool = False
    data_dir: Path = Path("data")

    # conversations: threads are OpenAI Conversations; responses / chat_completions: threads are held in
    # Redis and sent, trimmed to HISTORY_TOKEN_BUDGET, to a server's /v1/responses (store=false) or
    # /v1/chat/completions (bot/assistant/held.py).
    assistant_backend: BackendName = "conversations"
    # A Redis-held thread's history sent with each turn, at most (the instructions and the turn's own
    # input always go; the oldest items go first). Keep it inside the model's context window.
    history_token_budget: int = Field(default=100_000, ge=1000)
    assistant_model: str = Field(default="gpt-5.1", min_length=1)
    assistant_instructions: str = DEFAULT_INSTRUCTIONS
    assistant_tools: Annotated[list[ToolName], NoDecode] = Field(default_factory=lambda: list(DEFAULT_TOOLS))
    # Modules whose `@tool` functions (bot.tools) the assistant may call, e.g. "mycompany.slack_tools".
    assistant_tool_modules: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Tool loop limits per turn: model rounds that ask for function calls, one call's time, the whole loop.
    tool_max_rounds: int = Field(default=8, ge=1, le=50)
    tool_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    tool_loop_seconds: float = Field(default=300.0, gt=0, le=3600)
    # MCP servers (issue 16): a JSON list of `McpServer` objects, or a JSON file holding one (the file wins).
    mcp_servers: Annotated[list[McpServer], NoDecode] = Field(default_factory=list)
    mcp_servers_file: Path | None = None
    # How long an approval request waits for the asker's answer; no answer counts as Deny.
    mcp_approval_seconds: float = Field(default=600.0, gt=0, le=24 * 3600)
    # Server-side compaction (Responses `context_management`): once a thread's context passes this many
    # tokens, OpenAI summarizes its earlier part, so a thread of any length keeps answering. The API's
    # minimum is 1,000; keep it well inside the model's window.
    context_compact_threshold: int = Field(default=200_000, ge=1000)
    # Upper bound on the tokens one response may generate (reasoning included); unset: the model's own.
    max_output_tokens: int | None = Field(default=None, ge=16)
    assistant_suggested_prompts: list[SuggestedPrompt] = Field(
        default_factory=lambda: list(DEFAULT_PROMPTS), max_length=4
    )

    # Slack's rate tiers, as the bot budgets them across its replicas (bot/slack/budget.py): 1 = Slack's
    # published figures; more only for a workspace Slack has granted higher limits.
    slack_rate_scale: float = Field(default=1.0, gt=0, le=1000)
    # Streaming: send the first text at once, then at most one Slack call per interval (rate limits).
    stream_flush_seconds: float = Field(default=0.5, ge=0.05, le=5)
    # Slack accepts 12,000 Markdown characters per call; leave room for a closing code fence.
    max_message_chars: int = Field(default=11_000, ge=500, le=12_000)
    # A dead process's thread lock frees after this, and the turns it held (unacked stream entries idle
    # this long) are reclaimed by a sweep that runs every `recovery_interval_seconds`.
    runner_lock_seconds: float = Field(default=RUNNER_LOCK_TTL.total_seconds(), ge=1, le=600)
    recovery_interval_seconds: float = Field(default=10.0, ge=0.1, le=600)

    # Reliability and scale-out (see README "Reliability").
    # At most this many assistant threads are worked on at once by one process; 0: a front that only acks
    # and queues (turns run in `slack-assistant worker` processes). Turns mostly wait on OpenAI: the default
    # is sized by memory and CPU per turn in flight (README "Benchmark"), not by cores.
    worker_concurrency: int = Field(default=500, ge=0, le=5000)
    # Worker processes the one command (`slack-assistant`, HTTP or Socket Mode) starts and supervises for
    # the turns, so that the process taking Slack's requests only acks; unset: one per CPU core this process
    # may use, at most MAX_AUTO_WORKER_PROCESSES; 0: it runs the turns itself (one process, as the tests run
    # it). Ignored by `slack-assistant worker` and by fronts (WORKER_CONCURRENCY=0).
    worker_processes: int | None = Field(default=None, ge=0, le=64)
    # The event loop every process runs on: uvloop (libuv, in C: a fifth less CPU per turn than asyncio's
    # own loop in the bench's 300-mention burst), or `asyncio` (used anyway where uvloop is not installed).
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    # A turn that was started this many times (crashes, Slack refusing the answer) is given up with a notice.
    max_turn_attempts: int = Field(default=5, ge=1, le=20)
    # How long one answer may take in total, resumes and polling included.
    response_deadline_seconds: float = Field(default=600.0, gt=0, le=3600)
    # SIGTERM: running answers get this long to finish; what is left goes back to the queue.
    shutdown_grace_seconds: float = Field(default=25.0, ge=0, le=600)
    # Spend limits (token buckets in Redis, bot/queue/spend.py): tokens per window (a minute) per user and
    # per workspace; 0 = no limit. A message costs 1 token plus its files (below); a slash command that
    # acts on a thread, a message shortcut, a settings save or an App Home button costs 1.
    rate_limit_user_per_minute: int = Field(default=20, ge=0)
    rate_limit_team_per_minute: int = Field(default=300, ge=0)
    # Slack Connect: people from another organization in a shared channel (or a DM) are told the bot is
    # not theirs, by default. True: they are answered, without the shared knowledge stores and without
    # the tools that read the workspace (e.g. `slack_user_profile`).
    allow_external_users: bool = False
    # Channel policy (issue 15): Slack user ids who may change policies besides the workspace's admins
    # and owners (comma-separated).
    policy_admins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Uploads cost by size: one more token per started this many MB of a message's files, all together (a
    # file counts up to FILE_MAX_MB; one of unknown size counts as that much); 0 = files cost nothing extra.
    rate_limit_mb_per_token: float = Field(default=5.0, ge=0)
    # Answers one thread may get per window, so two apps answering each other (one posting with a user
    # token, so it looks like a person) stop; 0 = no cap.
    thread_answers_per_minute: int = Field(default=6, ge=0)
    # And per day (a bucket refilling over a day), for two apps slower than the cap above; 0 = no cap.
    thread_answers_per_day: int = Field(default=300, ge=0)
    # The window the limits above refill over, and the one notice per person (or paused thread) it allows.
    rate_limit_window_seconds: float = Field(default=SPEND_WINDOW.total_seconds(), ge=1, le=24 * 3600)

    # --- files and retrieval (issue 3) -------------------------------------------------------------------
    # A shared file larger than this is refused (before any download) with a message naming the limit.
    file_max_mb: float = Field(default=20.0, gt=0, le=512)
    # File types (extensions) accepted: documents go to the thread's vector store, images to the model.
    file_document_types: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_DOCUMENT_TYPES)
    )
    file_image_types: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_IMAGE_TYPES)
    )
    file_data_types: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(DEFAULT_DATA_TYPES))
    # A thread's vector store expires this many days after it was last used (OpenAI's `last_active_at`).
    vector_store_expiry_days: int = Field(default=7, ge=1, le=365)
    # Shared knowledge: vector stores searched in every thread, alongside the thread's own files.
    knowledge_vector_store_ids: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # They are checked at start-up and this often: one that is missing or expired is left out (and put
    # back once it answers again); 0: checked at start-up only.
    knowledge_check_hours: float = Field(default=6.0, ge=0, le=24 * 30)
    # How long a turn waits for a shared document to be indexed before giving up on it.
    file_index_timeout_seconds: float = Field(default=300.0, gt=0, le=3600)
    # A turn's shared files are brought in this many at a time, all under one deadline (downloads, uploads
    # and indexing waits included); a file not ready by then is named and the turn answers without it.
    file_download_concurrency: int = Field(default=4, ge=1, le=32)
    file_turn_deadline_seconds: float = Field(default=150.0, gt=0, le=3600)
    # What one assistant thread may take in over its life (reset starts it over); 0 = no limit.
    thread_file_quota_files: int = Field(default=100, ge=0)
    thread_file_quota_mb: float = Field(default=500.0, ge=0)
    # Files the code interpreter writes that one answer shares in Slack (each at most FILE_MAX_MB).
    generated_files_max: int = Field(default=10, ge=0, le=100)
    # The bot itself runs `cleanup-orphans` about this often (one replica at a time); 0 turns it off.
    orphan_sweep_hours: float = Field(default=24.0, ge=0, le=24 * 30)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # "json": one JSON object per log line (time, level, logger, message, team/channel/thread/turn ids).
    log_format: Literal["text", "json"] = "text"

    @field_validator("slack_bot_token", "slack_client_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, v: object) -> object:
        # `.env.example` ships these empty: an empty value is no value.
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("slack_bot_token")
    @classmethod
    def _bot_token_shape(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value().startswith(("xoxb-", "xoxe.xoxb-")):
            raise ValueError("must be a bot token starting with xoxb-")
        return v

    @field_validator("slack_install_path", "slack_redirect_uri_path")
    @classmethod
    def _path_shape(cls, v: str) -> str:
        if not v.startswith("/") or v == "/":
            raise ValueError("must be a path such as /slack/install")
        return v

    @property
    def oauth(self) -> bool:
        """Installed to many workspaces with Bolt's OAuth flow (HTTP mode), rather than one token."""
        return bool(self.slack_client_id and self.slack_client_secret)

    @field_validator("slack_app_token")
    @classmethod
    def _app_token_shape(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value().startswith("xapp-"):
            raise ValueError("must be an app-level token starting with xapp-")
        return v

    @field_validator("slack_api_url")
    @classmethod
    def _api_url_shape(cls, v: str) -> str:
        if not v.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL such as https://slack.com/api/")
        return v if v.endswith("/") else v + "/"

    @field_validator(
        "assistant_tools",
        "assistant_tool_modules",
        "file_document_types",
        "file_image_types",
        "file_data_types",
        "knowledge_vector_store_ids",
        "slack_scopes",
        "policy_admins",
        mode="before",
    )
    @classmethod
    def _split_list(cls, v: object) -> object:
        # Comma-separated or a JSON list, since env vars are flat strings.
        if isinstance(v, str):
            import json

            v = json.loads(v) if v.strip().startswith("[") else v.split(",")
        if isinstance(v, list):
            return [str(x).strip() for x in v if str(x).strip()]
        return v

    @field_validator("mcp_servers", mode="before")
    @classmethod
    def _mcp_json(cls, v: object) -> object:
        return json.loads(v) if isinstance(v, str) and v.strip() else ([] if isinstance(v, str) else v)

    @field_validator("mcp_servers_file")
    @classmethod
    def _mcp_file_readable(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError("must name a readable JSON file")
        return v

    def mcp_server_list(self) -> list[McpServer]:
        """The MCP servers configured (MCP_SERVERS_FILE over MCP_SERVERS), each checked: a transport's
        own fields present, labels unique, every header's variable set. Raises ConfigError."""
        servers = self.mcp_servers
        if self.mcp_servers_file is not None:
            try:
                raw = json.loads(self.mcp_servers_file.read_text())
                servers = [McpServer.model_validate(s) for s in raw]
            except (OSError, ValueError, TypeError) as exc:
                raise ConfigError(
                    f"MCP_SERVERS_FILE: not a JSON list of servers ({type(exc).__name__})"
                ) from exc
        labels = [s.label for s in servers]
        if len(set(labels)) != len(labels):
            raise ConfigError("MCP servers: two servers share a label")
        for server in servers:
            if server.transport in ("hosted", "http") and not (server.url or "").startswith(
                ("https://", "http://")
            ):
                raise ConfigError(f"MCP server {server.label}: `url` must be an http(s) URL")
            if server.transport == "stdio" and not server.command:
                raise ConfigError(f"MCP server {server.label}: a stdio server needs `command`")
            if server.transport == "hosted" and self.held_threads:
                # Refused up front, as the other hosted tools are: only OpenAI's Responses API calls it.
                raise ConfigError(
                    f"MCP server {server.label}: a hosted server needs OpenAI (not available with "
                    f"ASSISTANT_BACKEND={self.assistant_backend}); use transport http or stdio"
                )
            missing = [var for var in server.headers_from_env.values() if not _env_value(var)]
            if missing:
                # The variable's name only: its value is the secret.
                raise ConfigError(
                    f"MCP server {server.label}: environment variable(s) not set: {', '.join(missing)}"
                )
        return servers

    @staticmethod
    def mcp_headers(server: McpServer) -> dict[str, str]:
        """The server's headers with their secret values, read from the environment when they are sent."""
        return {header: _env_value(var) for header, var in server.headers_from_env.items()}

    @field_validator("redis_url")
    @classmethod
    def _redis_url_shape(cls, v: str | None) -> str | None:
        # Never echo the URL: it may hold a password. The full parse is bot.queue.connection's.
        if v and v.split("://", 1)[0].lower() in SENTINEL_SCHEMES:
            service = v.split("://", 1)[-1].partition("/")[2].partition("?")[0].strip("/")
            if not service:
                raise ValueError(
                    "a Sentinel URL names its service: redis+sentinel://host:26379[,host2:26379]/service[/db]"
                )
        return v

    @field_validator("redis_cluster")
    @classmethod
    def _cluster_needs_url(cls, v: bool, info: ValidationInfo) -> bool:
        url = info.data.get("redis_url")
        if v and not url:
            raise ValueError("needs REDIS_URL (a node of the cluster); the embedded Redis is one server")
        if v and str(url).split("://", 1)[0].lower() in SENTINEL_SCHEMES:
            raise ValueError("a Sentinel URL names one primary, not a cluster: unset REDIS_CLUSTER")
        return v

    @field_validator("file_document_types", "file_image_types", "file_data_types")
    @classmethod
    def _extensions(cls, v: list[str]) -> list[str]:
        return [x.lower().lstrip(".") for x in v]

    @property
    def worker_process_count(self) -> int:
        """WORKER_PROCESSES, or one per CPU core this process may use (at most MAX_AUTO_WORKER_PROCESSES)."""
        if self.worker_processes is not None:
            return self.worker_processes
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cores = os.cpu_count() or 1
        return max(1, min(cores, MAX_AUTO_WORKER_PROCESSES))

    @property
    def file_max_bytes(self) -> int:
        return int(self.file_max_mb * 1024 * 1024)

    @property
    def thread_file_quota_bytes(self) -> int:
        return int(self.thread_file_quota_mb * 1024 * 1024)

    @property
    def held_threads(self) -> bool:
        """Assistant threads are held in Redis (the server has no Conversations API)."""
        return self.assistant_backend != "conversations"

    @model_validator(mode="after")
    def _hosted_tools_need_openai(self) -> Settings:
        """What only OpenAI hosts is refused up front on a Redis-held backend, never silently dropped."""
        if not self.held_threads:
            return self
        hosted = [t for t in self.assistant_tools if t in HOSTED_TOOLS]
        if hosted:
            raise ValueError(
                f"ASSISTANT_TOOLS has {', '.join(hosted)}, which only OpenAI hosts: not available with "
                f"ASSISTANT_BACKEND={self.assistant_backend}"
            )
        if self.knowledge_vector_store_ids:
            raise ValueError(
                "KNOWLEDGE_VECTOR_STORE_IDS needs OpenAI's file search: not available with "
                f"ASSISTANT_BACKEND={self.assistant_backend}"
            )
        return self

    @property
    def code_interpreter(self) -> bool:
        return "code_interpreter" in self.assistant_tools


def _describe(err: dict[str, object]) -> str:
    loc = err.get("loc") or ()
    name = str(loc[0]).upper() if isinstance(loc, tuple) and loc else ""
    if err.get("type") == "missing":
        return f"{name or 'A setting'} is not set"
    # Never echo the input: it may be a secret.
    msg = str(err.get("msg", "is invalid")).removeprefix("Value error, ")
    # A check of several settings together names them itself.
    return f"{name}: {msg}" if name else msg


def _given(field: str, settings: Settings | None, overrides: dict[str, object]) -> bool:
    if settings is not None:
        value = getattr(settings, field)
        # An empty secret (as .env.example ships it) is no secret: HTTP mode would refuse every request.
        return bool(value.get_secret_value().strip()) if isinstance(value, SecretStr) else value is not None
    # Validation failed elsewhere: look at the raw sources so every problem is reported in one go.
    env_file = Path(".env")
    from_file = dotenv_values(env_file) if env_file.is_file() else {}
    name = field.upper()
    return bool(overrides.get(field) or os.environ.get(name) or from_file.get(name))


@functools.cache
def _dotenv() -> dict[str, str | None]:
    """`.env` of the working folder, as the settings read it (read once)."""
    env_file = Path(".env")
    return dotenv_values(env_file) if env_file.is_file() else {}


def _env_value(name: str) -> str:
    """A variable's value from the environment, else from `.env` (MCP header secrets: never settings fields,
    so they are never echoed with the configuration)."""
    return os.environ.get(name) or _dotenv().get(name) or ""


def load_settings(mode: Mode, **overrides: object) -> Settings:
    """Read settings once; raise ConfigError naming every missing or malformed variable."""
    problems: list[str] = []
    settings: Settings | None = None
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems.extend(_describe(dict(e)) for e in exc.errors())
    required = "slack_app_token" if mode is Mode.SOCKET else "slack_signing_secret"
    if mode in (Mode.SOCKET, Mode.HTTP) and not _given(required, settings, overrides):
        why = "needed for Socket Mode; or run with --http" if mode is Mode.SOCKET else "needed for HTTP mode"
        problems.append(f"{required.upper()} is not set ({why})")
    problems.extend(_token_problems(mode, settings, overrides))
    if problems or settings is None:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(
            "Configuration problem; set these in the environment or in .env (see .env.example):\n" + lines
        )
    return settings


def _token_problems(mode: Mode, settings: Settings | None, overrides: dict[str, object]) -> list[str]:
    """One workspace needs its bot token; OAuth needs both app credentials, and HTTP mode to serve the
    install pages."""
    oauth = [f for f in ("slack_client_id", "slack_client_secret") if _given(f, settings, overrides)]
    if len(oauth) == 1:
        missing = "SLACK_CLIENT_SECRET" if oauth == ["slack_client_id"] else "SLACK_CLIENT_ID"
        return [f"{missing} is not set (OAuth installs need both SLACK_CLIENT_ID and SLACK_CLIENT_SECRET)"]
    if oauth:
        if mode is Mode.SOCKET:
            return ["OAuth installs (SLACK_CLIENT_ID) need HTTP mode: run with --http"]
        return []
    if not _given("slack_bot_token", settings, overrides):
        return [
            "SLACK_BOT_TOKEN is not set (or SLACK_CLIENT_ID and SLACK_CLIENT_SECRET to install with OAuth)"
        ]
    return []
