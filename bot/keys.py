"""Every Redis key and TTL the bot uses, named in one place.

Keys are namespaced per Slack workspace (enterprise + team) so workspaces never see each other's
threads, and the namespace sits in a hash tag (`{...}`) so one workspace's keys share a Redis Cluster
slot and the multi-key scripts stay legal there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

PREFIX = "sa"

# A Slack retry arrives within minutes; a day covers every retry and the app_mention/message twin.
DEDUPE_TTL = timedelta(hours=24)
# The Slack key -> assistant thread map lives long and is refreshed on every turn.
THREAD_TTL = timedelta(days=180)
# Held by the process running a thread's turns; refreshed while it runs, so a dead holder frees it soon.
# Also the idle time after which a turn delivered to a worker that went silent is reclaimed (XAUTOCLAIM).
RUNNER_LOCK_TTL = timedelta(seconds=30)
# A turn's progress record (response id, Slack messages, done) outlives any retry of the turn.
TURN_RECORD_TTL = timedelta(days=7)
# Spend limits (per user, per workspace, answers per thread) refill over this window (the default of
# RATE_LIMIT_WINDOW_SECONDS). A bucket is full again one window after its last take, so it expires then.
# Rate-limit notices: at most one per person, and one per paused thread, per window (SET NX with this TTL).
SPEND_WINDOW = timedelta(minutes=1)
# The longer horizon of a thread's answers (THREAD_ANSWERS_PER_DAY): a bucket that refills over a day.
THREAD_DAY_WINDOW = timedelta(days=1)

# Token usage by day (issue 13) is kept a little over a year, for year-over-year comparisons.
USAGE_TTL = timedelta(days=400)
# A response's usage is counted once (SET NX): the marker outlives every retry of its turn.
USAGE_COUNTED_TTL = TURN_RECORD_TTL

# Feedback on answers (issue 15): a rating (and its comment) is kept as long as the thread it rates; the
# day's counts as long as the token usage they are shown with.
FEEDBACK_TTL = THREAD_TTL
FEEDBACK_COUNTS_TTL = USAGE_TTL

# The consumer group every replica reads the turn streams with.
TURN_GROUP = "workers"
# The one global key: the set of workspaces that have a turn stream, so workers know what to read.
# Only ever used alone (SADD/SMEMBERS), never in a multi-key script, so it is Redis Cluster safe.
TEAMS_KEY = f"{PREFIX}:teams"
# The App Home lists a user's most recent threads.
RECENT_THREADS_KEPT = 20
# What the user is looking at in Slack (app_context_changed) matters only for a while.
CONTEXT_TTL = timedelta(hours=12)
# A Slack Connect guest who is not served is told so at most once per this interval.
GUEST_NOTICE_TTL = timedelta(minutes=1)

# Channel policies (issue 15) are configuration: kept until reset (or the app is uninstalled), no TTL.
# The workspace default is the `POLICY_WORKSPACE` field of the same hash, so a turn reads both at once.
POLICY_WORKSPACE = "*"
# A channel policy's own spend limits: per person in the channel, per thread (token buckets).
POLICY_THREAD_WINDOW = timedelta(days=1)

# OAuth installs (issue 13): the `state` of an install link is good for this long (Bolt's default too),
# and is used once.
OAUTH_STATE_TTL = timedelta(minutes=10)
# The installations of the app, one member per workspace or Enterprise Grid org (`installation_member`):
# what `check` counts. Used alone (SADD/SREM/SCARD), never in a multi-key script: Cluster safe.
INSTALLS_KEY = f"{PREFIX}:installs"
# Held by the replica refreshing a rotating bot token: Slack revokes a refresh token once used, so only one
# replica may spend it; the others wait for the token it saves.
ROTATION_LOCK_TTL = timedelta(seconds=15)

# Which conversation items each Slack message of a thread became (issue 15): kept as long as the thread.
ITEMS_TTL = THREAD_TTL
# Agent sessions (issue 15): the turn running in a Slack thread, for the stop button. Slack's own
# `processing` state lapses after about an hour; a turn still running then is long past every deadline.
SESSION_TURN_TTL = timedelta(hours=1)
# A stop's mark in the workspace's `stopping` set outlives any turn that could still be running.
STOPPING_TTL = SESSION_TURN_TTL

# A Redis-held assistant thread (issue 17) lives as long as the Slack thread map that points at it; a
# response record as long as any retry of its turn.
HELD_THREAD_TTL = THREAD_TTL
HELD_RESPONSE_TTL = TURN_RECORD_TTL

# The files a thread uses (and its vector store id) are kept as long as the thread itself.
FILES_TTL = THREAD_TTL
# Held (for the sweep interval) by the replica that last swept orphaned files: one sweep per interval.
ORPHAN_SWEEP_LOCK = f"{PREFIX}:orphan-sweep"
# The in-process sweep leaves younger objects alone: a running turn may not have recorded them yet.
ORPHAN_MIN_AGE = timedelta(hours=1)

# MCP approvals (issue 16): a request waits MCP_APPROVAL_SECONDS for its answer; its record is kept a day
# longer, so a retried turn still finds the decision (and a late click is told the request is over).
APPROVAL_KEPT = timedelta(days=1)


def ms(td: timedelta) -> int:
    return int(td.total_seconds() * 1000)


def oauth_state(state: str) -> str:
    """STRING (OAUTH_STATE_TTL): an install link's `state`, issued and not yet used. Before an install
    there is no workspace yet, so it is the one key family outside a workspace's namespace."""
    return f"{PREFIX}:oauth-state:{state}"


def installation(enterprise_id: str | None, team_id: str | None) -> str:
    """HASH of one installation of the app (slack_sdk's `Installation` and `Bot`, as JSON): `bot` (the
    latest bot token and its refresh token), `installer` (the latest install), `installer:<user>` (each
    installer's latest). A workspace's is in its own namespace (the slot of its other keys); an Enterprise
    Grid org-wide install (no team) is the org's `{E:-}`."""
    return f"{PREFIX}:{{{enterprise_id or '-'}:{team_id or '-'}}}:install"


def org_pattern(enterprise_id: str) -> str:
    """SCAN MATCH pattern for the keys of every workspace of an Enterprise Grid org."""
    return f"{PREFIX}:{{{_glob_escape(enterprise_id)}:*"


def rotation_lock(enterprise_id: str | None, team_id: str | None) -> str:
    """STRING (ROTATION_LOCK_TTL): the replica refreshing this installation's bot token."""
    return f"{PREFIX}:{{{enterprise_id or '-'}:{team_id or '-'}}}:install-lock"


def installation_member(enterprise_id: str | None, team_id: str | None) -> str:
    """An installation as a member of `INSTALLS_KEY`."""
    return f"{enterprise_id or '-'}:{team_id or '-'}"


@dataclass(frozen=True, slots=True)
class Keys:
    """Key builder for one workspace."""

    team_id: str
    enterprise_id: str | None = None

    @property
    def ns(self) -> str:
        return f"{PREFIX}:{{{self.enterprise_id or '-'}:{self.team_id}}}"

    def thread(self, thread_ref: str) -> str:
        """HASH: conversation_id, created_at, channel, thread_ts, user, last_turn_at."""
        return f"{self.ns}:thread:{thread_ref}"

    def alias(self, thread_ref: str) -> str:
        """STRING: a Slack thread that continues another assistant thread (top-level DM replies)."""
        return f"{self.ns}:alias:{thread_ref}"

    def seen_event(self, event_id: str) -> str:
        return f"{self.ns}:seen:ev:{event_id}"

    def seen_message(self, channel: str, ts: str) -> str:
        return f"{self.ns}:seen:msg:{channel}:{ts}"

    @property
    def registry_member(self) -> str:
        """This workspace as a member of `TEAMS_KEY`."""
        return f"{self.enterprise_id or '-'}:{self.team_id}"

    @staticmethod
    def from_registry_member(member: str) -> Keys:
        enterprise, _, team = member.partition(":")
        return Keys(team, None if enterprise == "-" else enterprise)

    def turns(self) -> str:
        """STREAM of this workspace's turns (consumer group `TURN_GROUP`): one entry per turn, acked
        and deleted once the turn is done."""
        return f"{self.ns}:turns"

    def queue(self, thread_ref: str) -> str:
        """ZSET index of one assistant thread's unfinished turns: members `ts|stream entry id`, all
        scored 0 so they sort by Slack message ts."""
        return f"{self.ns}:queue:{thread_ref}"

    def turn(self, turn_id: str) -> str:
        """HASH: a turn's progress record (attempts, response_id, message_ts, done)."""
        return f"{self.ns}:turn:{turn_id}"

    def user_bucket(self, user_id: str) -> str:
        """HASH token bucket (tokens, at_ms): a user's spend limit."""
        return f"{self.ns}:rate:user:{user_id}"

    def team_bucket(self) -> str:
        """HASH token bucket (tokens, at_ms): the workspace's spend limit."""
        return f"{self.ns}:rate:team"

    def thread_answers(self, thread_ref: str) -> str:
        """HASH token bucket (tokens, at): the answers one assistant thread may get per window, so two
        apps talking to each other in a thread cannot run on forever."""
        return f"{self.ns}:rate:thread:{thread_ref}"

    def thread_answers_day(self, thread_ref: str) -> str:
        """HASH token bucket (tokens, at): the answers one assistant thread may get per day, so two apps
        slower than the per-minute cap still cannot run on forever."""
        return f"{self.ns}:rate:thread-day:{thread_ref}"

    def limit_notice(self, user_id: str) -> str:
        """STRING (SET NX, TTL one spend window): this person was told they are over a spend limit."""
        return f"{self.ns}:notice:limit:{user_id}"

    def pause_notice(self, thread_ref: str) -> str:
        """STRING (SET NX, TTL one spend window): this Slack thread was told it is paused."""
        return f"{self.ns}:notice:paused:{thread_ref}"

    def slack_budget(self, method: str, scope: str = "") -> str:
        """HASH token bucket (tokens, ts): the workspace's calls of one Slack Web API method (per channel
        for chat.postMessage), shared by every replica. Expires once it would be full again."""
        return f"{self.ns}:slack:{method}:{scope}"

    def runner(self, thread_ref: str) -> str:
        """STRING lock: the token of the worker running this thread's turns."""
        return f"{self.ns}:runner:{thread_ref}"

    def user_threads(self, user_id: str) -> str:
        """ZSET of the assistant threads a user wrote in, scored by last activity (for the App Home)."""
        return f"{self.ns}:recent:{user_id}"

    def user_context(self, user_id: str) -> str:
        return f"{self.ns}:context:{user_id}"

    def guest_notice(self, user_id: str) -> str:
        """STRING (GUEST_NOTICE_TTL): a Slack Connect guest was just told the bot does not serve them."""
        return f"{self.ns}:notice:guest:{user_id}"

    # --- channel policy (issue 15) ------------------------------------------------------------------------

    def policy(self) -> str:
        """HASH: channel id (or `POLICY_WORKSPACE` for the workspace default) -> the policy as JSON. One
        HMGET of the channel's field and the default's per turn; no TTL (configuration, until reset)."""
        return f"{self.ns}:policy"

    def policy_user_bucket(self, channel: str, user_id: str) -> str:
        """HASH token bucket (tokens, at): a person's answers per window in one channel (its policy's
        `user_per_minute`); expires once full again."""
        return f"{self.ns}:rate:policy-user:{channel}:{user_id}"

    def policy_thread_bucket(self, thread_ref: str) -> str:
        """HASH token bucket (tokens, at): one thread's answers per day (its channel policy's
        `thread_answers`); expires once full again (POLICY_THREAD_WINDOW)."""
        return f"{self.ns}:rate:policy-thread:{thread_ref}"

    def stopping(self) -> str:
        """ZSET (STOPPING_TTL): ids of the workspace's turns that a stop marked, scored by when; a worker
        reads it once per poll for all the workspace's turns it runs (instead of each turn's record)."""
        return f"{self.ns}:stopping"

    def session_turn(self, channel: str, thread_ts: str) -> str:
        """STRING (SESSION_TURN_TTL): the id of the turn running in this Slack thread (its agent session),
        set by the worker running it and removed when it ends; a stop (`agent_session_stopped`, on any
        front) marks that turn's progress record `stopped`."""
        return f"{self.ns}:session:{channel}:{thread_ts}"

    # --- usage accounting (issue 13); `day` is a UTC date, YYYY-MM-DD; every key has USAGE_TTL -----------

    def usage_workspace(self, day: str) -> str:
        """HASH (input, output, total, reasoning, responses): the workspace's tokens that day."""
        return f"{self.ns}:usage:{day}:team"

    def usage_user(self, day: str, user_id: str) -> str:
        """HASH like `usage_workspace`: one user's tokens that day."""
        return f"{self.ns}:usage:{day}:user:{user_id}"

    def usage_channel(self, day: str, channel: str) -> str:
        """HASH like `usage_workspace`: one channel's tokens that day (`dm`: all direct messages)."""
        return f"{self.ns}:usage:{day}:channel:{channel}"

    def usage_top_users(self, day: str) -> str:
        """ZSET user id -> total tokens that day."""
        return f"{self.ns}:usage:{day}:top:users"

    def usage_top_channels(self, day: str) -> str:
        """ZSET channel id (or `dm`) -> total tokens that day."""
        return f"{self.ns}:usage:{day}:top:channels"

    def usage_counted(self, response_id: str) -> str:
        """STRING (SET NX, USAGE_COUNTED_TTL): this response's usage is counted."""
        return f"{self.ns}:usage:counted:{response_id}"

    # --- MCP approvals (issue 16) --------------------------------------------------------------------------

    def approval(self, turn_id: str, ask_id: str) -> str:
        """HASH (until `expires` + APPROVAL_KEPT): one tool call of one turn waiting for a person's yes: user,
        channel, thread_ts, server, tool, expires (epoch ms), message_ts; once answered, decision and by; a
        bot-side call once approved: `ran` when it starts, `output` (capped) when it ended. Keyed by the turn
        too: call ids are the model's or a server's (they may repeat, even be empty). No argument values and
        no header values are kept."""
        return f"{self.ns}:approval:{turn_id}:{ask_id}"

    # --- feedback on answers (issue 15) -------------------------------------------------------------------

    def feedback(self, channel: str, answer_ts: str) -> str:
        """HASH (FEEDBACK_TTL): user id -> JSON (rating, response id, thread, at, comment) of one answer."""
        return f"{self.ns}:feedback:{channel}:{answer_ts}"

    def feedback_thread(self, thread_ref: str) -> str:
        """HASH (good, bad; FEEDBACK_TTL): the ratings of an assistant thread's answers, one per person and
        answer (what its `feedback_rating` metadata shows)."""
        return f"{self.ns}:fb-thread:{thread_ref}"

    def feedback_day(self, day: str) -> str:
        """HASH (good, bad; FEEDBACK_COUNTS_TTL): ratings of the workspace's answers posted that UTC day."""
        return f"{self.ns}:fb-day:{day}:team"

    def feedback_user_day(self, day: str, user_id: str) -> str:
        """HASH (good, bad; FEEDBACK_COUNTS_TTL): ratings a user gave to answers posted that UTC day."""
        return f"{self.ns}:fb-day:{day}:user:{user_id}"

    def thread_participants(self, thread_ref: str) -> str:
        """SET (FEEDBACK_TTL, refreshed by each answer): the people whose messages the thread answered, who
        may rate its answers."""
        return f"{self.ns}:participants:{thread_ref}"

    # --- files and retrieval (issue 3) -----------------------------------------------------------------

    def thread_files(self, thread_ref: str) -> str:
        """HASH: OpenAI file id -> JSON (name, kind, Slack file id, permalink) of the files a thread uses.
        Lives as long as the thread (FILES_TTL, refreshed by each turn)."""
        return f"{self.ns}:files:{thread_ref}"

    def thread_vector_store(self, thread_ref: str) -> str:
        """STRING: the id of the thread's own vector store (FILES_TTL)."""
        return f"{self.ns}:vstore:{thread_ref}"

    def thread_file_quota(self, thread_ref: str) -> str:
        """HASH (files, bytes): what the thread took in over its life, against THREAD_FILE_QUOTA_*. Lives
        as long as the thread's files (FILES_TTL, refreshed by each turn that uses them); reset deletes it."""
        return f"{self.ns}:fquota:{thread_ref}"

    def thread_uploads(self, thread_ref: str) -> str:
        """HASH: every OpenAI object (file or vector store) the bot created for the thread -> JSON (kind,
        created_at). No TTL: it outlives the thread so `cleanup-orphans` finds what is no longer mapped;
        an entry goes once its object is deleted."""
        return f"{self.ns}:uploads:{thread_ref}"

    # --- the thread follows Slack (issue 15) --------------------------------------------------------------

    def thread_items(self, thread_ref: str) -> str:
        """HASH (ITEMS_TTL, refreshed by each answered turn): `<user message ts>` -> JSON {"in": the user's
        conversation item ids, "out": the answer's item ids, "answers": the answer's Slack ts}, and
        `a:<answer ts>` -> the user message ts it answers. Reset deletes it."""
        return f"{self.ns}:items:{thread_ref}"

    # --- assistant threads held in Redis (issue 17) -------------------------------------------------------

    def held_thread(self, conversation_id: str) -> str:
        """HASH (HELD_THREAD_TTL, refreshed by each turn): created_at, metadata (JSON)."""
        return f"{self.ns}:held:{conversation_id}"

    def held_items(self, conversation_id: str) -> str:
        """LIST (HELD_THREAD_TTL): the thread's items, oldest first, each JSON {"id", "item"} (the item in
        the Responses API's input shape)."""
        return f"{self.ns}:helditems:{conversation_id}"

    def held_response(self, response_id: str) -> str:
        """HASH (HELD_RESPONSE_TTL): one response of a held thread: state (pending, done, cancelled), the
        request and input it runs with, and once done its text and function calls."""
        return f"{self.ns}:heldresp:{response_id}"

    # --- uninstall (issue 13) ----------------------------------------------------------------------------

    @property
    def pattern(self) -> str:
        """SCAN MATCH pattern for every key of this workspace (ids escaped; braces are not special)."""
        return f"{PREFIX}:{{{_glob_escape(self.enterprise_id or '-')}:{_glob_escape(self.team_id)}}}:*"

    def forgotten_on_uninstall(self, key: str) -> bool:
        """Whether an uninstall deletes this key of the workspace: everything it knows about its threads
        and people goes. Kept: the upload ledgers, so the orphan sweep finds the OpenAI files and stores
        no thread maps any more and deletes them; and the turn queue's own records (stream, per-thread
        index, progress, locks), which drain by themselves as queued turns find no installation."""
        prefix = f"{self.ns}:"
        if not key.startswith(prefix):
            return False
        kind = key[len(prefix) :].split(":", 1)[0]
        return kind not in _KEPT_ON_UNINSTALL

    @staticmethod
    def of_key(key: str) -> Keys | None:
        """The workspace a key belongs to (None for a key outside every workspace's namespace)."""
        match = _WORKSPACE_KEY.match(key)
        if match is None:
            return None
        enterprise, team = match.groups()
        return None if team == "-" else Keys(team, None if enterprise == "-" else enterprise)

    @staticmethod
    def parse_uploads(key: str) -> tuple[Keys, str] | None:
        """(workspace keys, thread ref) of a `thread_uploads` key, for the orphan sweep."""
        match = _UPLOADS_KEY.fullmatch(key)
        if match is None:
            return None
        enterprise, team, thread = match.groups()
        return Keys(team, None if enterprise == "-" else enterprise), thread


# `install` goes through the installation store's own delete (after the check that it is not a newer
# install than the uninstall).
_KEPT_ON_UNINSTALL = frozenset({"uploads", "turns", "queue", "turn", "runner", "install"})


def _glob_escape(text: str) -> str:
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


_WORKSPACE_KEY = re.compile(rf"{PREFIX}:\{{([^:}}]+):([^}}]+)\}}:")
_UPLOADS_KEY = re.compile(rf"{PREFIX}:\{{([^:}}]+):([^}}]+)\}}:uploads:(.+)")
