"""The channel policy form: `/assistant config` opens it (a loading view first: a trigger id lives 3
seconds), filled with the scope's policy for those who may change it, or the policy and a refusal for
anyone else. A submission is checked (who, every value, the model and stores asked of OpenAI) before the
ack: problems show under the form's inputs and nothing is saved."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import BotError, NotPolicyAdmin, PolicyError, StoreUnavailable
from bot.keys import POLICY_WORKSPACE
from bot.models import Workspace
from bot.slack.client import SLACK_CALL_ERRORS, slack_error
from bot.slack.events import metadata_fields
from bot.threads.policy import (
    INSTRUCTIONS,
    KNOWLEDGE,
    MAX_INSTRUCTIONS_CHARS,
    MCP,
    MODEL,
    NONE,
    SETTINGS,
    THREAD_ANSWERS,
    TOOLS,
    USER_PER_MINUTE,
    WHERE_WORKSPACE,
    ChannelPolicies,
    Policy,
)

log = logging.getLogger(__name__)

POLICY_CALLBACK = "channel_policy_modal"
# One input block per setting: block id `policy_<setting>`, action id `value`.
BLOCK_PREFIX = "policy_"
INPUT_ACTION = "value"
TITLE = "Assistant policy"
UNREADABLE = (
    "I couldn't tell which policy this form is for. Please close it and run `/assistant config` again."
)
FOREIGN = "This form was opened by someone else."
_CHANNEL = re.compile(r"[CGD][A-Z0-9]{2,}")

View = dict[str, Any]

LABELS = {
    INSTRUCTIONS: "Instructions (added to the assistant's)",
    MODEL: "Model",
    TOOLS: "Allowed tools, comma-separated (empty: all; none: no tools)",
    MCP: "MCP servers, by label, comma-separated (empty: the configured defaults; none: no servers)",
    KNOWLEDGE: "Knowledge stores (vector store ids, comma-separated; none: no shared stores)",
    USER_PER_MINUTE: "Answers per person per minute (0: no limit)",
    THREAD_ANSWERS: "Answers per thread per day (0: no limit)",
}


@dataclass(frozen=True)
class PolicyRef:
    """Whose form, for which scope (the workspace default or a channel), carried in private_metadata."""

    team_id: str
    enterprise_id: str | None
    scope: str
    user: str

    def dump(self) -> str:
        return json.dumps([self.team_id, self.enterprise_id, self.scope, self.user])

    @classmethod
    def load(cls, raw: str) -> PolicyRef | None:
        fields = metadata_fields(raw, 4)
        if fields is None:
            return None
        team, enterprise, scope, user = fields
        if not all(isinstance(v, str) and v for v in (team, scope, user)):
            return None
        if enterprise is not None and not (isinstance(enterprise, str) and enterprise):
            return None
        if scope != POLICY_WORKSPACE and not _CHANNEL.fullmatch(scope):
            return None
        return cls(team, enterprise, scope, user)

    @property
    def workspace(self) -> Workspace:
        return Workspace(team_id=self.team_id, enterprise_id=self.enterprise_id)


class PolicyForm:
    def __init__(self, policies: ChannelPolicies, client: AsyncWebClient) -> None:
        self._policies = policies
        self._client = client

    async def open(
        self, workspace: Workspace, user: str, scope: str, *, trigger_id: str, external: bool
    ) -> str:
        """Open the form; the text to answer the command with ("" once the form is open)."""
        view_id = await self._open_loading(trigger_id)
        if view_id is None:
            return "Sorry, I couldn't open the policy form. Please try again, or use `/assistant config set`."
        try:
            policy = await self._policies.store.get(workspace.keys, scope)
            may = await self._policies.admins.may_change(workspace, user, external=external)
            view = (
                policy_form(PolicyRef(workspace.team_id, workspace.enterprise_id, scope, user), policy)
                if may
                else notice_view(
                    await self._policies.show(workspace, scope) + "\n\n" + NotPolicyAdmin.user_message
                )
            )
        except (BotError, RedisError) as exc:
            problem = exc.user_message if isinstance(exc, BotError) else StoreUnavailable.user_message
            view = notice_view(problem)
        await self._show(view_id, view)
        return ""

    async def submit(
        self,
        workspace: Workspace,
        user: str,
        private_metadata: str,
        values: Mapping[str, str],
        *,
        external: bool,
    ) -> dict[str, str] | None:
        """A submitted form, before the ack: saved when every check passes (None), else the problems to
        show by block id (nothing saved)."""
        first = f"{BLOCK_PREFIX}{INSTRUCTIONS}"
        ref = PolicyRef.load(private_metadata)
        if ref is None:
            return {first: UNREADABLE}
        if ref.user != user or ref.workspace != workspace:
            return {first: FOREIGN}
        pairs = {key: values.get(f"{BLOCK_PREFIX}{key}", "") for key in SETTINGS}
        try:
            await self._policies.change(
                workspace, user, ref.scope, pairs, external=external, replace_all=True
            )
        except PolicyError as exc:
            return {_block_of(exc.user_message): exc.user_message[:1900]}
        except BotError as exc:
            return {first: exc.user_message}
        return None

    async def _open_loading(self, trigger_id: str) -> str | None:
        try:
            response = await self._client.views_open(
                trigger_id=trigger_id, view=notice_view("Loading the policy…")
            )
        except SLACK_CALL_ERRORS as exc:
            log.warning("views.open failed: %s", slack_error(exc))
            return None
        return str((response.get("view") or {}).get("id") or "") or None

    async def _show(self, view_id: str, view: View) -> None:
        try:
            await self._client.views_update(view_id=view_id, view=view)
        except SLACK_CALL_ERRORS as exc:
            log.warning("views.update failed: %s", slack_error(exc))


def _block_of(message: str) -> str:
    """The input a problem is about (the first setting it names), so Slack shows it there."""
    lowered = message.lower()
    for key, words in (
        (MODEL, ("model",)),
        (KNOWLEDGE, ("vector store", "knowledge")),
        (TOOLS, ("tool",)),
        (USER_PER_MINUTE, ("user_per_minute",)),
        (THREAD_ANSWERS, ("thread_answers",)),
    ):
        if any(w in lowered for w in words):
            return f"{BLOCK_PREFIX}{key}"
    return f"{BLOCK_PREFIX}{INSTRUCTIONS}"


def _initial(key: str, policy: Policy) -> str:
    value = getattr(policy, key)
    if value is None:
        return ""
    if isinstance(value, tuple):
        return ",".join(value) if value else NONE
    return str(value)


def policy_form(ref: PolicyRef, policy: Policy) -> View:
    where = WHERE_WORKSPACE if ref.scope == POLICY_WORKSPACE else f"<#{ref.scope}>"
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": f"The assistant's policy for {where}. An empty field is not set here "
                + (
                    "(the configuration applies)."
                    if ref.scope == POLICY_WORKSPACE
                    else "(the workspace default applies)."
                ),
            },
        }
    ]
    for key in SETTINGS:
        element: dict[str, Any] = {"type": "plain_text_input", "action_id": INPUT_ACTION}
        if key == INSTRUCTIONS:
            element |= {"multiline": True, "max_length": MAX_INSTRUCTIONS_CHARS}
        else:
            element["max_length"] = 2000
        if initial := _initial(key, policy):
            element["initial_value"] = initial
        blocks.append(
            {
                "type": "input",
                "block_id": f"{BLOCK_PREFIX}{key}",
                "optional": True,
                "label": {"type": "plain_text", "text": LABELS[key]},
                "element": element,
            }
        )
    return {
        "type": "modal",
        "callback_id": POLICY_CALLBACK,
        "private_metadata": ref.dump(),
        "title": {"type": "plain_text", "text": TITLE},
        "submit": {"type": "plain_text", "text": "Save"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": blocks,
    }


def notice_view(text: str) -> View:
    return {
        "type": "modal",
        "title": {"type": "plain_text", "text": TITLE},
        "close": {"type": "plain_text", "text": "Close"},
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}],
    }
