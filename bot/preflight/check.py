"""`slack-assistant check`: is this deployment's configuration working? A pass/fail table, a one-line hint
under each row that is not a pass, and a failure count for the exit status.

Each group of checks (Slack bot token and scopes; the app token; OpenAI key, model and knowledge stores;
Redis) runs under its own deadline, all groups at once, so a dead host costs one timeout, not one per call.
Nothing here ever prints a secret: rows are built only from what Slack, OpenAI and Redis say about
themselves (names, ids, versions) and this module's own words; never from exception text (an SDK's error
may echo part of a key). `Report.table()` also blanks any secret value it finds, in case one slips in.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import openai
from openai import AsyncOpenAI
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, RedisClusterException, RedisError, ResponseError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.assistant.knowledge import USABLE, KnowledgeStores
from bot.queue.connection import SentinelURL, open_redis
from bot.settings import SENTINEL_SCHEMES, Settings
from bot.slack.client import SLACK_TRANSPORT_ERRORS, slack_error

DEFAULT_TIMEOUT_SECONDS = 10.0

# Slack's answers for a token it does not take (auth.test's and apps.connections.open's error lists,
# docs.slack.dev/reference/methods/auth.test, .../apps.connections.open).
SLACK_TOKEN_ERRORS = frozenset(
    {"invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive", "org_login_required"}
)


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "FAIL"
    # Could not tell, for a reason that is not a fault (e.g. a managed Redis that hides its settings).
    UNKNOWN = "unknown"
    # Not applicable here (not configured, or an earlier check of the same group failed).
    SKIP = "skip"


@dataclass(frozen=True)
class Row:
    name: str
    outcome: Outcome
    detail: str
    hint: str = ""


def passed(name: str, detail: str) -> Row:
    return Row(name, Outcome.PASS, detail)


def failed(name: str, detail: str, hint: str) -> Row:
    return Row(name, Outcome.FAIL, detail, hint)


def skipped(name: str, detail: str) -> Row:
    return Row(name, Outcome.SKIP, detail)


@dataclass(frozen=True)
class Report:
    rows: list[Row]
    secrets: tuple[str, ...] = ()

    @property
    def failures(self) -> int:
        return sum(r.outcome is Outcome.FAIL for r in self.rows)

    def table(self) -> str:
        name_width = max(len("CHECK"), *(len(r.name) for r in self.rows))
        result_width = max(len(o.value) for o in Outcome)
        indent = " " * (name_width + result_width + 4)
        lines = [f"{'CHECK':<{name_width}}  {'RESULT':<{result_width}}  DETAIL"]
        for row in self.rows:
            lines.append(f"{row.name:<{name_width}}  {row.outcome.value:<{result_width}}  {row.detail}")
            if row.hint and row.outcome is not Outcome.PASS:
                lines.append(f"{indent}hint: {row.hint}")
        n = self.failures
        lines.append("")
        lines.append("all checks passed" if not n else f"{n} check{'s' if n > 1 else ''} failed")
        return self._scrub("\n".join(lines))

    def _scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "[redacted]")
        return text


# ------------------------------------------------------------------------------------------ manifest


def default_manifest() -> Path | None:
    """manifest.yml in the working folder, else the one in the project this package runs from."""
    for candidate in (Path("manifest.yml"), Path(__file__).resolve().parents[2] / "manifest.yml"):
        if candidate.is_file():
            return candidate
    return None


def manifest_bot_scopes(path: Path) -> list[str] | None:
    """`oauth_config.scopes.bot` of a Slack app manifest; None when the file has no such list."""
    import yaml  # deferred: only this command reads the manifest

    try:
        manifest: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    bot: Any = manifest
    for key in ("oauth_config", "scopes", "bot"):
        bot = bot.get(key) if isinstance(bot, dict) else None
    if not isinstance(bot, list) or not all(isinstance(s, str) for s in bot):
        return None
    return list(bot)


# ------------------------------------------------------------------------------------------ Slack


def _host(url: str | None, default: str) -> str:
    """The host (and port) of a URL, never its user, password, path or query."""
    if not url:
        return default
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix:{parts.path}"
    host = parts.hostname or default
    return f"{host}:{parts.port}" if parts.port else host


def _slack_client(settings: Settings, token: str | None, seconds: float) -> AsyncWebClient:
    # No retry handlers: a check reports the first answer, and a dead host must not cost several timeouts.
    return AsyncWebClient(
        token=token, base_url=settings.slack_api_url, timeout=math.ceil(seconds), retry_handlers=[]
    )


def _granted_scopes(headers: Any) -> set[str] | None:
    # Slack lists a token's scopes, comma-separated, in the `x-oauth-scopes` header of its Web API answers;
    # Bolt reads the bot's scopes from auth.test's the same way (slack_bolt/middleware/authorization/
    # internals.py, `_to_authorize_result`), as node-slack-sdk does into `response_metadata.scopes`.
    # aiohttp's headers are case-insensitive.
    value = headers.get("x-oauth-scopes") if headers is not None else None
    if not isinstance(value, str):
        return None
    return {s.strip() for s in value.split(",") if s.strip()}


def _scopes_row(headers: Any, manifest: Path | None) -> Row:
    name = "slack scopes"
    if manifest is None:
        return Row(
            name,
            Outcome.UNKNOWN,
            "no manifest.yml to compare with",
            "run from the project folder or pass --manifest PATH",
        )
    required = manifest_bot_scopes(manifest)
    if required is None:
        return Row(
            name,
            Outcome.UNKNOWN,
            f"{manifest.name} lists no oauth_config.scopes.bot",
            "pass --manifest with the app's manifest.yml",
        )
    granted = _granted_scopes(headers)
    if granted is None:
        return Row(
            name,
            Outcome.UNKNOWN,
            "Slack did not say which scopes the token has (no x-oauth-scopes header)",
            "compare OAuth & Permissions -> Bot Token Scopes with manifest.yml by hand",
        )
    missing = [s for s in required if s not in granted]
    if missing:
        return failed(
            name,
            f"missing {', '.join(missing)} ({len(required) - len(missing)} of {len(required)} granted)",
            "add them under OAuth & Permissions -> Bot Token Scopes (or update the app from manifest.yml), "
            "then reinstall the app to the workspace",
        )
    return passed(name, f"all {len(required)} bot scopes of {manifest.name} granted")


async def check_slack(settings: Settings, manifest: Path | None, seconds: float) -> list[Row]:
    if settings.oauth or settings.slack_bot_token is None:
        return await check_oauth(settings, manifest, seconds)
    host = _host(settings.slack_api_url, "slack.com")
    client = _slack_client(settings, settings.slack_bot_token.get_secret_value(), seconds)
    try:
        auth = await client.auth_test()
    except SlackApiError as exc:
        code = slack_error(exc)
        hint = (
            "copy the Bot User OAuth Token (xoxb-...) from OAuth & Permissions into SLACK_BOT_TOKEN; "
            "reinstall the app if it was revoked"
            if code in SLACK_TOKEN_ERRORS
            else "see docs.slack.dev/reference/methods/auth.test for this error"
        )
        return [
            failed("slack bot token", f"Slack refused it: {code}", hint),
            skipped("slack scopes", "needs a working bot token"),
        ]
    except SLACK_TRANSPORT_ERRORS as exc:
        return [
            failed(
                "slack bot token",
                f"no answer from {host} ({type(exc).__name__})",
                "check SLACK_API_URL and that this host can reach Slack over HTTPS (proxy, firewall)",
            ),
            skipped("slack scopes", "needs a working bot token"),
        ]
    who = f"team {auth.get('team')} ({auth.get('team_id')}), bot @{auth.get('user')} ({auth.get('user_id')})"
    if auth.get("enterprise_id"):
        who += f", enterprise {auth.get('enterprise_id')}"
    return [passed("slack bot token", who), _scopes_row(auth.headers, manifest)]


# A made-up code exchanged with the app's credentials: Slack names a wrong client id or secret
# (`invalid_client_id`, `bad_client_secret`) when it checks them before the code. Slack does not document
# that order, so a refusal of the code alone only shows the id is known; the secret is proven by the first
# install.
CREDENTIAL_ERRORS = frozenset({"invalid_client_id", "bad_client_secret"})


async def check_oauth(settings: Settings, manifest: Path | None, seconds: float) -> list[Row]:
    """Installed with OAuth: the app credentials (a code exchange Slack must refuse for the code alone)
    and whether SLACK_SCOPES asks for every bot scope of the manifest."""
    name = "slack app credentials"
    host = _host(settings.slack_api_url, "slack.com")
    secret = settings.slack_client_secret.get_secret_value() if settings.slack_client_secret else ""
    client = _slack_client(settings, None, seconds)
    try:
        await client.oauth_v2_access(
            client_id=settings.slack_client_id or "", client_secret=secret, code="slack-assistant-check"
        )
        row = failed(name, "Slack accepted a made-up code", "check SLACK_API_URL: this is not Slack")
    except SlackApiError as exc:
        code = slack_error(exc)
        if code in CREDENTIAL_ERRORS:
            row = failed(
                name,
                f"Slack refused them: {code}",
                "copy Client ID and Client Secret from Basic Information -> App Credentials into "
                "SLACK_CLIENT_ID and SLACK_CLIENT_SECRET",
            )
        else:
            row = passed(
                name, f"client {settings.slack_client_id} known to Slack (a made-up code was refused: {code})"
            )
    except SLACK_TRANSPORT_ERRORS as exc:
        row = failed(
            name,
            f"no answer from {host} ({type(exc).__name__})",
            "check SLACK_API_URL and that this host can reach Slack over HTTPS (proxy, firewall)",
        )
    return [row, _requested_scopes_row(settings, manifest)]


def _requested_scopes_row(settings: Settings, manifest: Path | None) -> Row:
    name = "slack scopes"
    required = manifest_bot_scopes(manifest) if manifest is not None else None
    if required is None:
        return Row(name, Outcome.UNKNOWN, "no manifest bot scopes to compare with", "pass --manifest PATH")
    missing = [s for s in required if s not in settings.slack_scopes]
    if missing:
        return failed(
            name,
            f"SLACK_SCOPES leaves out {', '.join(missing)}",
            "ask for every bot scope of manifest.yml (unset SLACK_SCOPES for the default)",
        )
    return passed(
        name, f"installs ask for all {len(required)} bot scopes of {manifest.name if manifest else ''}"
    )


async def check_app_token(settings: Settings, seconds: float) -> list[Row]:
    name = "slack app token"
    token = settings.slack_app_token.get_secret_value().strip() if settings.slack_app_token else ""
    if not token:
        return [skipped(name, "SLACK_APP_TOKEN not set (only Socket Mode needs it)")]
    client = _slack_client(settings, None, seconds)
    try:
        # Slack issues a one-off WebSocket URL; nothing connects to it, so no socket stays open.
        await client.apps_connections_open(app_token=token)
    except SlackApiError as exc:
        code = slack_error(exc)
        if code == "ratelimited":
            # apps.connections.open is Tier 1 (about one call a minute): a running Socket Mode bot, or the
            # previous check, may have used it up. Says nothing about the token.
            return [Row(name, Outcome.UNKNOWN, "Slack rate-limited the check", "run it again in a minute")]
        if code in SLACK_TOKEN_ERRORS or code == "not_allowed_token_type":
            hint = (
                "generate an app-level token with connections:write under Basic Information -> "
                "App-Level Tokens and put it in SLACK_APP_TOKEN"
            )
        elif code == "missing_scope":
            hint = "the app-level token needs the connections:write scope: generate a new one with it"
        else:
            hint = "check that Socket Mode is on for the app (Settings -> Socket Mode)"
        return [failed(name, f"Slack refused it: {code}", hint)]
    except SLACK_TRANSPORT_ERRORS as exc:
        return [
            failed(
                name,
                f"no answer from {_host(settings.slack_api_url, 'slack.com')} ({type(exc).__name__})",
                "check SLACK_API_URL and that this host can reach Slack over HTTPS (proxy, firewall)",
            )
        ]
    return [passed(name, "Socket Mode connection URL issued (not connected)")]


# ------------------------------------------------------------------------------------------ OpenAI


async def check_openai(settings: Settings, seconds: float) -> list[Row]:
    client = AsyncOpenAI(
        api_key=settings.openai_api_key.get_secret_value(),
        base_url=settings.openai_base_url,
        timeout=seconds,
        max_retries=0,
    )
    try:
        return await _openai_rows(client, settings)
    finally:
        await client.close()


async def _openai_rows(client: AsyncOpenAI, settings: Settings) -> list[Row]:
    if settings.held_threads:
        return await _held_rows(client, settings)
    host = _host(settings.openai_base_url, "api.openai.com")
    model = settings.assistant_model
    no_key = [
        skipped("openai model", "needs a working OpenAI key"),
        skipped("knowledge stores", "needs a working OpenAI key"),
    ]
    key_ok = passed("openai key", f"accepted by {host}")
    try:
        found = await client.models.retrieve(model)
    except openai.AuthenticationError:
        hint = "create a key at https://platform.openai.com/api-keys and put it in OPENAI_API_KEY"
        return [failed("openai key", "refused (401)", hint), *no_key]
    except openai.NotFoundError:
        hint = "set ASSISTANT_MODEL to a model this key's project can use (https://platform.openai.com/docs/models)"
        rows = [key_ok, failed("openai model", f"{model}: no such model (404)", hint)]
        return [*rows, *await _knowledge_rows(client, settings)]
    except openai.PermissionDeniedError:
        hint = "allow the model for the key's project (settings -> Limits) or use another ASSISTANT_MODEL"
        rows = [key_ok, failed("openai model", f"{model}: not allowed for this key (403)", hint)]
        return [*rows, *await _knowledge_rows(client, settings)]
    except openai.RateLimitError:
        hint = "check the project's billing and rate limits at https://platform.openai.com/settings"
        return [failed("openai key", "rate limited or out of quota (429)", hint), *no_key]
    except openai.APIConnectionError as exc:  # APITimeoutError included
        hint = "check OPENAI_BASE_URL and that this host can reach OpenAI over HTTPS (proxy, firewall)"
        return [failed("openai key", f"no answer from {host} ({type(exc).__name__})", hint), *no_key]
    except openai.APIStatusError as exc:
        hint = "OpenAI had a problem: try again later (https://status.openai.com)"
        return [failed("openai key", f"{host} answered HTTP {exc.status_code}", hint), *no_key]
    detail = f"{found.id} (owned by {found.owned_by})"
    if found.shutdown_date:
        detail += f"; shuts down on {found.shutdown_date}"
    return [key_ok, passed("openai model", detail), *await _knowledge_rows(client, settings)]


def _held_path(settings: Settings) -> str:
    return "/v1/chat/completions" if settings.assistant_backend == "chat_completions" else "/v1/responses"


async def _probe(client: AsyncOpenAI, settings: Settings) -> None:
    """The smallest request of the kind the bot sends to a server with no Conversations API: it keeps
    nothing (a /v1/responses server may keep nothing) and costs a handful of tokens (16: OpenAI's minimum)."""
    model = settings.assistant_model
    if settings.assistant_backend == "chat_completions":
        ping: Any = [{"role": "user", "content": "ping"}]
        await client.chat.completions.create(model=model, messages=ping, max_completion_tokens=16)
    else:
        await client.responses.create(model=model, input="ping", store=False, max_output_tokens=16)


async def _held_rows(client: AsyncOpenAI, settings: Settings) -> list[Row]:
    """A Redis-held backend's server (issue 17): one minimal request of the API ASSISTANT_BACKEND names,
    as the bot makes them (the models endpoint proves nothing about that API being there)."""
    host = _host(settings.openai_base_url, "api.openai.com")
    model, path = settings.assistant_model, _held_path(settings)
    backend = f"ASSISTANT_BACKEND={settings.assistant_backend}"
    stores = skipped("knowledge stores", f"none on a Redis-held backend ({backend})")
    no_key = [skipped("openai model", "needs a key the server takes"), stores]
    key_ok = passed("openai key", f"accepted by {host}")
    try:
        await _probe(client, settings)
    except openai.AuthenticationError:
        hint = (
            "put the key the server at OPENAI_BASE_URL expects in OPENAI_API_KEY (any text if it needs none)"
        )
        return [failed("openai key", f"{host} refused it (401)", hint), *no_key]
    except openai.NotFoundError:
        hint = (
            f"set ASSISTANT_MODEL to a model the server serves, and check that it serves {path} under "
            f"OPENAI_BASE_URL (else set {backend.split('=')[0]} to the API it has)"
        )
        return [key_ok, failed("openai model", f"{model}: POST {path} answered 404", hint), stores]
    except openai.PermissionDeniedError:
        hint = "allow the model for this key on the server, or use another ASSISTANT_MODEL"
        return [key_ok, failed("openai model", f"{model}: not allowed for this key (403)", hint), stores]
    except openai.RateLimitError:
        hint = "the server is rate limiting this key: check its limits and try again"
        return [failed("openai key", "rate limited or out of quota (429)", hint), *no_key]
    except openai.BadRequestError:
        hint = f"the server refused a minimal request: check ASSISTANT_MODEL and {backend} against its docs"
        return [key_ok, failed("openai model", f"{model}: POST {path} answered 400", hint), stores]
    except openai.APIConnectionError as exc:  # APITimeoutError included
        hint = "check OPENAI_BASE_URL (it ends in /v1) and that the server runs and this host can reach it"
        return [failed("openai key", f"no answer from {host} ({type(exc).__name__})", hint), *no_key]
    except openai.APIStatusError as exc:
        hint = "the server at OPENAI_BASE_URL had a problem: see its log, then run the check again"
        return [failed("openai key", f"{host} answered HTTP {exc.status_code}", hint), *no_key]
    detail = f"{model} answered POST {path} ({backend}, nothing stored)"
    return [key_ok, passed("openai model", detail), stores]


async def _knowledge_rows(client: AsyncOpenAI, settings: Settings) -> list[Row]:
    name = "knowledge stores"
    ids = settings.knowledge_vector_store_ids
    if not ids:
        return [skipped(name, "none configured (KNOWLEDGE_VECTOR_STORE_IDS)")]
    states = await KnowledgeStores(client, ids).states()
    usable = [i for i, s in states.items() if s == USABLE]
    if len(usable) == len(states):
        return [passed(name, f"{len(usable)} of {len(states)} usable: {', '.join(usable)}")]
    problems = [f"{len(usable)} of {len(states)} usable"]
    hints = []
    for state, hint in (
        (
            "missing",
            "fix KNOWLEDGE_VECTOR_STORE_IDS (ids from platform.openai.com/storage) or create the store",
        ),
        (
            "expired",
            "an expired store cannot be revived: create it again and update KNOWLEDGE_VECTOR_STORE_IDS",
        ),
        (None, "OpenAI did not answer for it: run the check again"),
    ):
        these = [i for i, s in states.items() if s == state]
        if these:
            problems.append(f"{state or 'not checked'}: {', '.join(these)}")
            hints.append(hint)
    return [failed(name, "; ".join(problems), "; ".join(hints))]


# ------------------------------------------------------------------------------------------ Redis


async def check_redis(settings: Settings, seconds: float) -> list[Row]:
    if not settings.redis_url:
        return [
            skipped(
                "redis", f"REDIS_URL not set: the bot runs an embedded Redis (data in {settings.data_dir})"
            ),
            skipped("redis persistence", "the embedded Redis keeps an append-only file"),
        ]
    where = _redis_where(settings)
    # No retries, short socket timeouts: a dead or silent host gives a failure row within `seconds`.
    options = {
        "decode_responses": True,
        "socket_connect_timeout": seconds,
        "socket_timeout": seconds,
        "retry": Retry(NoBackoff(), 0),
        "driver_info": None,
    }
    try:
        handle = open_redis(settings.redis_url, cluster=settings.redis_cluster, options=options)
    except ValueError as exc:  # its message never repeats the URL
        return [
            failed("redis", f"REDIS_URL is malformed: {exc}", "see README, Configuration"),
            skipped("redis persistence", "needs a reachable Redis"),
        ]
    try:
        return await _redis_rows(handle.client, where)
    finally:
        with contextlib.suppress(RedisError, OSError, RedisClusterException):
            await handle.close()


def _redis_where(settings: Settings) -> str:
    """Where REDIS_URL points, for the report: hosts, ports and a Sentinel service, never a password."""
    url = settings.redis_url or ""
    if url.split("://", 1)[0].lower() in SENTINEL_SCHEMES:
        try:
            target = SentinelURL.parse(url)
        except ValueError:
            return "the Sentinels in REDIS_URL"
        sentinels = ",".join(f"{host}:{port}" for host, port in target.sentinels)
        return f"{target.service} via Sentinel {sentinels}"
    where = _host(url, "localhost")
    return f"{where} (a node of the cluster)" if settings.redis_cluster else where


async def _redis_rows(client: Redis, where: str) -> list[Row]:
    unreachable = skipped("redis persistence", "needs a reachable Redis")
    try:
        server: dict[str, Any] = await client.info("server")
    except AuthenticationError:
        hint = "check the user and password in REDIS_URL"
        return [failed("redis", f"{where} refused the credentials", hint), unreachable]
    except ResponseError as exc:
        # NOAUTH (a password is needed) or NOPERM (an ACL user that may not run INFO).
        first = str(exc).split(" ", 1)[0]
        code = first if first.isalpha() and first.isupper() else "error"
        hint = "set the user and password in REDIS_URL (redis://user:password@host:port/0)"
        return [failed("redis", f"{where} refused INFO ({code})", hint), unreachable]
    except (RedisError, OSError, RedisClusterException) as exc:
        hint = "check REDIS_URL's host and port, that Redis runs there, and firewalls"
        return [failed("redis", f"nothing answered at {where} ({type(exc).__name__})", hint), unreachable]
    detail = f"Redis {server.get('redis_version', '?')} at {where}"
    if server.get("redis_mode") not in (None, "standalone"):
        detail += f" ({server.get('redis_mode')})"
    return [passed("redis", detail), await _persistence_row(client)]


async def _persistence_row(client: Redis) -> Row:
    name = "redis persistence"
    unknown_hint = (
        "CONFIG is disabled here (as on most managed Redis): check in the provider's console that "
        "persistence (AOF or snapshots) is on"
    )
    try:
        info: dict[str, Any] = await client.info("persistence")
    except ResponseError:
        return Row(name, Outcome.UNKNOWN, "INFO persistence not allowed", unknown_hint)
    aof = str(info.get("aof_enabled", "0")) == "1"
    try:
        save: str | None = str((await client.config_get("save")).get("save", "")).strip()
    except ResponseError:
        save = None  # CONFIG renamed away or not allowed (NOPERM): the snapshot schedule is unknown
    if aof:
        return passed(name, "append-only file on" + (f"; snapshots (save {save})" if save else ""))
    if save is None:
        return Row(name, Outcome.UNKNOWN, "append-only off; snapshot schedule unreadable", unknown_hint)
    if save:
        return passed(name, f"snapshots only (save {save}); append-only off, so a crash loses recent writes")
    return failed(
        name,
        "none: append-only off and no snapshots",
        "a restart loses thread mappings and queued turns: set `appendonly yes` in redis.conf "
        "(or turn persistence on in the provider's console)",
    )


# ------------------------------------------------------------------------------------------ all


async def _within(
    seconds: float, names: list[str], what: str, check: Callable[[], Awaitable[list[Row]]]
) -> list[Row]:
    """The check's rows, or, past `seconds`, a failure for its first row and a skip for the rest."""
    try:
        async with asyncio.timeout(seconds):
            return await check()
    except TimeoutError:
        first, *rest = names
        hint = f"check that {what} is up and reachable from here"
        return [
            failed(first, f"no answer within {seconds:g}s", hint),
            *(skipped(n, f"{first} timed out") for n in rest),
        ]


def _secrets(settings: Settings) -> tuple[str, ...]:
    values = [
        s.get_secret_value()
        for s in (
            settings.slack_bot_token,
            settings.slack_app_token,
            settings.slack_signing_secret,
            settings.openai_api_key,
            settings.slack_client_secret,
        )
        if s is not None
    ]
    if settings.redis_url:
        values.append(urlsplit(settings.redis_url).password or "")
        values += parse_qs(urlsplit(settings.redis_url).query).get("sentinel_password", [])
    return tuple(v for v in values if v.strip())


async def run_checks(
    settings: Settings, *, manifest: Path | None, seconds: float = DEFAULT_TIMEOUT_SECONDS
) -> Report:
    slack_host = _host(settings.slack_api_url, "slack.com")
    openai_host = _host(settings.openai_base_url, "api.openai.com")
    redis_host = _redis_where(settings)
    groups = await asyncio.gather(
        _within(
            seconds,
            ["slack app credentials" if settings.oauth else "slack bot token", "slack scopes"],
            slack_host,
            lambda: check_slack(settings, manifest, seconds),
        ),
        _within(seconds, ["slack app token"], slack_host, lambda: check_app_token(settings, seconds)),
        _within(
            seconds,
            ["openai key", "openai model", "knowledge stores"],
            openai_host,
            lambda: check_openai(settings, seconds),
        ),
        _within(
            seconds,
            ["redis", "redis persistence"],
            f"Redis at {redis_host}",
            lambda: check_redis(settings, seconds),
        ),
    )
    return Report([row for group in groups for row in group], _secrets(settings))
