"""Channel policy (issue 15 item 4): a workspace default and a policy per channel, set by admins.

A policy holds instructions (added to the assistant's), a model, a hard allowlist of tools (a tool not in it
is never offered to the model, hosted or function; `none` turns MCP servers off too), the MCP servers offered
(issue 16: by label, from those the configuration declares for the workspace; unset, the servers marked
`default`), the knowledge stores searched (instead of
KNOWLEDGE_VECTOR_STORE_IDS), and two spend limits: answers per person per minute in the channel, and answers
per thread per day. A channel's value of a setting replaces the default's, except instructions, which add
to them (the default's first). DMs follow the workspace default.

Both live in one hash per workspace (`Keys.policy`: field `*` the default, a channel id its policy), so a
turn reads what applies to it with one HMGET, from its next turn on: existing threads included.

Only workspace admins and owners (users.info, cached briefly) and the people in POLICY_ADMINS change a
policy; a Slack Connect guest never does. Every value is checked (the model and stores asked of OpenAI)
before anything is saved.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.assistant.catalog import Catalog
from bot.errors import NotPolicyAdmin, PolicyInvalid, PolicyLimited, StoreUnavailable
from bot.keys import POLICY_THREAD_WINDOW, POLICY_WORKSPACE, SPEND_WINDOW, Keys, ms
from bot.models import Workspace
from bot.queue.spend import BUCKETS_LUA
from bot.settings import McpServer
from bot.slack.inert import escape_mrkdwn
from bot.threads.usage import Admins

log = logging.getLogger(__name__)

# The settings, as written in `config set` and in the modal (`commands.POLICY_KEYS` is the same list).
INSTRUCTIONS, MODEL, TOOLS, KNOWLEDGE = "instructions", "model", "tools", "knowledge"
USER_PER_MINUTE, THREAD_ANSWERS = "user_per_minute", "thread_answers"
MCP = "mcp"  # the MCP servers offered (issue 16), by label
SETTINGS = (INSTRUCTIONS, MODEL, TOOLS, MCP, KNOWLEDGE, USER_PER_MINUTE, THREAD_ANSWERS)
# Instructions fit the form's text box (Slack's plain_text_input max_length is 1..3000,
# docs.slack.dev/reference/block-kit/block-elements/plain-text-input-element). Our own bound (OpenAI
# documents none): a short list of stores keeps file search fast.
MAX_INSTRUCTIONS_CHARS = 3000
MAX_KNOWLEDGE_STORES = 10
MAX_LIMIT = 10_000
# `tools=none` / `knowledge=none`: nothing (an empty list); an empty value unsets the setting.
NONE = "none"
# Hosted tools a policy can name; function tools are the registry's.
HOSTED_TOOLS = ("web_search", "code_interpreter", "file_search")
CHECK_SECONDS = 2.5  # a modal's submission is answered within Slack's 3 s
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_STORE_ID = re.compile(r"vs_[A-Za-z0-9_-]{1,128}")
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

WHERE_WORKSPACE = "the workspace default"


@dataclass(frozen=True)
class Policy:
    """One scope's policy; None: not set here (the workspace default's applies, or the configuration)."""

    instructions: str | None = None
    model: str | None = None
    tools: tuple[str, ...] | None = None
    mcp: tuple[str, ...] | None = None
    knowledge: tuple[str, ...] | None = None
    user_per_minute: int | None = None
    thread_answers: int | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in asdict(self).values())

    def dump(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None}, sort_keys=True)

    @classmethod
    def load(cls, raw: str | bytes | None) -> Policy:
        """The stored policy; what can't be read is no policy (logged), never a crash of the turn."""
        if not raw:
            return cls()
        try:
            data = json.loads(raw)
            return cls(
                instructions=_opt(data, INSTRUCTIONS, str),
                model=_opt(data, MODEL, str),
                tools=_opt_names(data, TOOLS),
                mcp=_opt_names(data, MCP),
                knowledge=_opt_names(data, KNOWLEDGE),
                user_per_minute=_opt(data, USER_PER_MINUTE, int),
                thread_answers=_opt(data, THREAD_ANSWERS, int),
            )
        except (ValueError, TypeError, AttributeError):
            log.warning("an unreadable channel policy was ignored")
            return cls()

    def offers(self, tool: str) -> bool:
        """Whether the allowlist lets the model have this tool (no allowlist: every configured tool)."""
        return self.tools is None or tool in self.tools

    def offers_server(self, label: str, *, default: bool) -> bool:
        """Whether the model has this MCP server's tools here: never with `tools=none` (no tool at all);
        else the policy's list when it sets one, else the server's own `default` from the configuration.
        A `tools` list that names tools leaves MCP servers to `mcp`."""
        if self.tools == ():
            return False
        return default if self.mcp is None else label in self.mcp

    def over(self, base: Policy) -> Policy:
        """This (channel) policy on top of `base` (the workspace default): each setting set here replaces
        the default's; instructions add to them."""
        parts = [p for p in (base.instructions, self.instructions) if p]
        merged = {k: v if v is not None else getattr(base, k) for k, v in asdict(self).items()}
        merged[INSTRUCTIONS] = "\n\n".join(parts) or None
        return Policy(**merged)


def _opt(data: Mapping[str, Any], key: str, kind: type) -> Any:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(key)
    return value


def _opt_names(data: Mapping[str, Any], key: str) -> tuple[str, ...] | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(key)
    return tuple(value)


class PolicyStore:
    """The policies in Redis: one hash per workspace."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._take = redis.register_script(_TAKE)

    async def applied(self, keys: Keys, channel: str, *, is_dm: bool) -> Policy:
        """The policy a turn in this channel runs with (one HMGET). Raises RedisError."""
        fields = [POLICY_WORKSPACE] if is_dm else [POLICY_WORKSPACE, channel]
        raw = await self._redis.hmget(keys.policy(), fields)
        default = Policy.load(raw[0])
        return Policy.load(raw[1]).over(default) if len(raw) > 1 else default

    async def get(self, keys: Keys, scope: str) -> Policy:
        return Policy.load(await self._redis.hget(keys.policy(), scope))

    async def put(self, keys: Keys, scope: str, policy: Policy) -> None:
        if policy:
            await self._redis.hset(keys.policy(), scope, policy.dump())
        else:
            await self._redis.hdel(keys.policy(), scope)

    async def scopes(self, keys: Keys) -> list[str]:
        """The workspace default (when set) and the channels with a policy, sorted."""
        return sorted(str(k) for k in await self._redis.hkeys(keys.policy()))

    async def take(self, keys: Keys, channel: str, user: str, thread: str, policy: Policy) -> None:
        """A turn's answer against its policy's spend limits (all or nothing). Raises PolicyLimited (the
        user message names the limit) or RedisError."""
        per_user, per_thread = policy.user_per_minute or 0, policy.thread_answers or 0
        if not per_user and not per_thread:
            return
        short = await self._take(
            keys=[keys.policy_user_bucket(channel, user), keys.policy_thread_bucket(thread)],
            args=[per_user, per_thread, ms(SPEND_WINDOW), ms(POLICY_THREAD_WINDOW)],
        )
        if int(short) == 1:
            raise PolicyLimited(
                f"policy user_per_minute {per_user}",
                user_message=f"This channel allows {per_user} answer(s) per person per minute. "
                "Please wait a minute and ask again.",
            )
        if int(short) == 2:
            raise PolicyLimited(
                f"policy thread_answers {per_thread}",
                user_message=f"This channel allows {per_thread} answer(s) per thread per day, and this "
                "thread has had them. Start a new thread to go on.",
            )


# KEYS: user bucket, thread bucket. ARGV: user cap, thread cap (0: none), user window ms, thread window ms.
_TAKE = (
    BUCKETS_LUA
    + """
return spend_take({{KEYS[1], ARGV[1], 1, ARGV[3]}, {KEYS[2], ARGV[2], 1, ARGV[4]}}, tonumber(ARGV[3]))
"""
)


def _shown(text: str, limit: int = 60) -> str:
    return escape_mrkdwn(text if len(text) <= limit else text[: limit - 1] + "…")


def _names(value: str) -> tuple[str, ...]:
    if value.strip().lower() == NONE:
        return ()
    return tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))


def _limit(key: str, value: str) -> int:
    text = value.strip()
    if not (text.isdecimal() and int(text) <= MAX_LIMIT):
        raise PolicyInvalid(
            f"{key}={text[:20]!r}",
            user_message=f"`{key}` takes a whole number from 0 (no limit) to {MAX_LIMIT:,}.",
        )
    return int(text)


def changed(
    current: Policy, pairs: Mapping[str, str], known_tools: Iterable[str], known_servers: Iterable[str] = ()
) -> Policy:
    """`current` with the settings given (an empty value unsets one), every value's form checked (which
    models and stores exist is `Validator`'s). Raises PolicyInvalid naming each problem."""
    known = set(known_tools)
    servers = set(known_servers)
    problems: list[str] = []
    updates: dict[str, Any] = {}
    for key, value in pairs.items():
        if not value.strip():
            updates[key] = None
        elif key == INSTRUCTIONS:
            if len(value) > MAX_INSTRUCTIONS_CHARS:
                problems.append(
                    f"`instructions` is {len(value):,} characters; at most {MAX_INSTRUCTIONS_CHARS:,}."
                )
            updates[key] = value.strip()
        elif key == MODEL:
            if not _MODEL_ID.fullmatch(value.strip()):
                problems.append(f"`{_shown(value)}` is not a model name.")
            updates[key] = value.strip()
        elif key == TOOLS:
            names = _names(value)
            unknown = [n for n in names if n not in known or not _TOOL_NAME.fullmatch(n)]
            if unknown:
                problems.append(
                    f"Unknown tool(s): {', '.join(f'`{_shown(n, 40)}`' for n in unknown)}. "
                    f"Known: {', '.join(f'`{n}`' for n in sorted(known))} (or `none`)."
                )
            updates[key] = names
        elif key == MCP:
            labels = _names(value)
            unknown = [n for n in labels if n not in servers]
            if unknown:
                listed = ", ".join(f"`{n}`" for n in sorted(servers)) or "none are configured"
                problems.append(
                    f"Unknown MCP server(s): {', '.join(f'`{_shown(n, 40)}`' for n in unknown)}. "
                    f"Known: {listed} (or `none`)."
                )
            updates[key] = labels
        elif key == KNOWLEDGE:
            ids = _names(value)
            bad = [i for i in ids if not _STORE_ID.fullmatch(i)]
            if bad:
                problems.append(
                    f"Not a vector store id: {', '.join(f'`{_shown(i, 40)}`' for i in bad)} "
                    "(ids look like `vs_…`, or `none`)."
                )
            if len(ids) > MAX_KNOWLEDGE_STORES:
                problems.append(f"At most {MAX_KNOWLEDGE_STORES} knowledge stores.")
            updates[key] = ids
        elif key in (USER_PER_MINUTE, THREAD_ANSWERS):
            try:
                updates[key] = _limit(key, value)
            except PolicyInvalid as exc:
                problems.append(exc.user_message)
        else:  # the parsers refuse unknown keys first; kept total here too
            problems.append(f"Unknown setting `{_shown(key, 40)}`.")
    if problems:
        raise PolicyInvalid("; ".join(problems), user_message=_not_saved(problems))
    return replace(current, **updates)


def _not_saved(problems: list[str]) -> str:
    return "Nothing was saved:\n" + "\n".join(f"• {p}" for p in problems)


class Validator:
    """Asks OpenAI whether the model and stores a change names exist."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    async def check(self, before: Policy, after: Policy) -> None:
        """Raises PolicyInvalid when a new model or store does not exist (or OpenAI could not tell)."""
        problems: list[str] = []
        unsure = False
        if after.model is not None and after.model != before.model:
            found = await self._catalog.model(after.model)
            unsure |= found is None
            if found == "missing":
                problems.append(
                    f"The model `{_shown(after.model)}` does not exist (or this API key can't use it)."
                )
        for store_id in [s for s in after.knowledge or () if s not in (before.knowledge or ())]:
            found = await self._catalog.vector_store(store_id)
            unsure |= found is None
            if found in ("missing", "expired"):
                problems.append(
                    f"The vector store `{_shown(store_id)}` is "
                    + ("expired." if found == "expired" else "not found.")
                )
        if problems:
            raise PolicyInvalid("; ".join(problems), user_message=_not_saved(problems))
        if unsure:
            raise PolicyInvalid(
                "OpenAI could not check the change",
                user_message="Nothing was saved: I couldn't check those values with OpenAI just now. "
                "Please try again in a minute.",
            )


def describe(policy: Policy, *, where: str, default: Policy | None = None) -> str:
    """A policy as mrkdwn (every value anyone's text, shown inert); `default`: the workspace's, for a
    channel's settings it does not set."""
    lines = [f"*Assistant policy of {where}*"]
    if not policy and not default:
        lines.append("_Not set: the bot's configuration applies._")
    for key in SETTINGS:
        value = getattr(policy, key)
        note = ""
        if value is None and default is not None and getattr(default, key) is not None:
            value, note = getattr(default, key), " _(workspace default)_"
        lines.append(f"• `{key}`: {_value(key, value)}{note}")
    return "\n".join(lines)


def _value(key: str, value: object) -> str:
    if value is None:
        return "_(not set)_"
    if isinstance(value, tuple):
        return ", ".join(f"`{escape_mrkdwn(v)}`" for v in value) if value else f"`{NONE}`"
    if key in (USER_PER_MINUTE, THREAD_ANSWERS):
        return "no limit" if value == 0 else f"{value}"
    text = str(value)
    if key == INSTRUCTIONS:
        return "\n> " + escape_mrkdwn(text).replace("\n", "\n> ")
    return f"`{escape_mrkdwn(text)}`"


class PolicyAdmins:
    """Who may change policies: workspace admins and owners, and the people in POLICY_ADMINS; never a
    Slack Connect guest."""

    def __init__(self, admins: Admins, extra: Iterable[str]) -> None:
        self._admins = admins
        self._extra = frozenset(extra)

    async def may_change(self, workspace: Workspace, user: str, *, external: bool) -> bool:
        if external:
            return False
        if user in self._extra:
            return True
        return await self._admins.is_admin(workspace, user, external=external)


class ChannelPolicies:
    """`/assistant config …`: show, set, reset a channel's policy or the workspace default."""

    def __init__(
        self,
        store: PolicyStore,
        admins: PolicyAdmins,
        validator: Validator,
        known_tools: Iterable[str],
        servers: Iterable[McpServer] = (),
    ) -> None:
        self.store = store
        self.admins = admins
        self._validator = validator
        self.known_tools = tuple(dict.fromkeys([*HOSTED_TOOLS, *known_tools]))
        self._servers = tuple(servers)  # the MCP servers configured (issue 16)

    def known_servers(self, workspace: Workspace) -> list[str]:
        """The labels a policy of this workspace may name: the servers that serve it."""
        return [s.label for s in self._servers if s.serves(workspace.team_id)]

    async def show(self, workspace: Workspace, scope: str) -> str:
        keys = workspace.keys
        try:
            default = await self.store.get(keys, POLICY_WORKSPACE)
            if scope == POLICY_WORKSPACE:
                return describe(default, where=WHERE_WORKSPACE)
            return describe(await self.store.get(keys, scope), where=f"<#{scope}>", default=default)
        except RedisError as exc:
            raise StoreUnavailable(f"Redis: {type(exc).__name__}") from exc

    async def change(
        self,
        workspace: Workspace,
        user: str,
        scope: str,
        pairs: Mapping[str, str] | None,
        *,
        external: bool,
        replace_all: bool = False,
    ) -> str:
        """Set the settings `pairs` in the scope (`replace_all`: the others unset, as the modal sends every
        one); None: reset it. Raises NotPolicyAdmin, PolicyInvalid or StoreUnavailable; nothing is saved
        unless every check passed."""
        if not await self.admins.may_change(workspace, user, external=external):
            raise NotPolicyAdmin(f"{user} may not change the policy of {scope}")
        keys = workspace.keys
        try:
            current = await self.store.get(keys, scope)
            if pairs is None:
                await self.store.put(keys, scope, Policy())
                log.info("policy of %s reset by %s", scope, user)
                fallback = "configuration" if scope == POLICY_WORKSPACE else "workspace default"
                return f"Reset {_where(scope)}: the {fallback} applies."
            base = Policy() if replace_all else current
            updated = changed(base, pairs, self.known_tools, self.known_servers(workspace))
            try:
                await asyncio.wait_for(self._validator.check(current, updated), CHECK_SECONDS)
            except TimeoutError as exc:
                raise PolicyInvalid(
                    "checking with OpenAI took too long",
                    user_message="Nothing was saved: checking those values with OpenAI took too long. "
                    "Please try again.",
                ) from exc
            await self.store.put(keys, scope, updated)
        except RedisError as exc:
            raise StoreUnavailable(f"Redis: {type(exc).__name__}") from exc
        log.info("policy of %s changed by %s: %s", scope, user, ", ".join(sorted(pairs)))
        return "Saved.\n" + await self.show(workspace, scope)

    async def listing(self, workspace: Workspace, user: str) -> list[str] | None:
        """The scopes with a policy, for someone who may change them (None for anyone else)."""
        if not await self.admins.may_change(workspace, user, external=False):
            return None
        try:
            return await self.store.scopes(workspace.keys)
        except RedisError:
            log.warning("App Home: Redis unavailable; no policies listed")
            return []


def _where(scope: str) -> str:
    return WHERE_WORKSPACE if scope == POLICY_WORKSPACE else f"the policy of <#{scope}>"
