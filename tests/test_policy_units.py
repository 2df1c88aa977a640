"""Channel policy rules without I/O (issue 15 item 4): stored policies read back exactly, anything else
reads as no policy; every change is a policy or a refusal naming the problem; a channel's settings win
over the workspace default's, and instructions add up; the form's private_metadata is checked."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.errors import PolicyInvalid
from bot.threads.commands import POLICY_KEYS
from bot.threads.policy import SETTINGS, Policy, changed, describe
from bot.threads.policy_modal import PolicyRef

PURE = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
KNOWN_TOOLS = ("web_search", "code_interpreter", "file_search", "current_time", "get_weather")

names = st.lists(st.text(min_size=1, max_size=20), max_size=4).map(tuple)
policies = st.builds(
    Policy,
    instructions=st.none() | st.text(max_size=300),
    model=st.none() | st.text(max_size=40),
    tools=st.none() | names,
    knowledge=st.none() | names,
    user_per_minute=st.none() | st.integers(0, 10_000),
    thread_answers=st.none() | st.integers(0, 10_000),
)
values = st.one_of(
    st.text(max_size=60),
    st.sampled_from(
        ["", " ", "none", "gpt-5-mini", "web_search,get_weather", "vs_abc", "vs_a,vs_b", "7", "-1"]
    ),
)


def test_the_command_and_the_policy_know_the_same_settings() -> None:
    assert POLICY_KEYS == SETTINGS


@PURE
@given(policy=policies)
def test_a_stored_policy_reads_back_exactly(policy: Policy) -> None:
    assert Policy.load(policy.dump()) == policy
    assert bool(policy) == (policy.dump() != "{}")


@PURE
@given(raw=st.text(max_size=200) | st.binary(max_size=50))
def test_anything_else_reads_as_a_policy_never_a_crash(raw: str | bytes) -> None:
    assert isinstance(Policy.load(raw), Policy)


@PURE
@given(current=policies, pairs=st.dictionaries(st.sampled_from(SETTINGS), values, max_size=6))
def test_a_change_is_a_policy_or_a_refusal_that_saves_nothing(current: Policy, pairs: dict[str, str]) -> None:
    try:
        updated = changed(current, pairs, KNOWN_TOOLS)
    except PolicyInvalid as exc:
        assert exc.user_message.startswith("Nothing was saved:")
        return
    for key in SETTINGS:
        if key not in pairs:
            assert getattr(updated, key) == getattr(current, key)
        elif not pairs[key].strip():
            assert getattr(updated, key) is None
    if "tools" in pairs:
        assert set(updated.tools or ()) <= set(KNOWN_TOOLS)
    if "knowledge" in pairs:
        assert all(s.startswith("vs_") for s in updated.knowledge or ())
    assert Policy.load(updated.dump()) == updated
    assert describe(updated, where="x").startswith("*Assistant policy of x*")


@PURE
@given(channel=policies, default=policies)
def test_the_channels_settings_win_and_instructions_add_up(channel: Policy, default: Policy) -> None:
    merged = channel.over(default)
    for key in ("model", "tools", "knowledge", "user_per_minute", "thread_answers"):
        mine = getattr(channel, key)
        assert getattr(merged, key) == (mine if mine is not None else getattr(default, key))
    parts = [p for p in (default.instructions, channel.instructions) if p]
    assert merged.instructions == ("\n\n".join(parts) or None)
    assert merged.offers("anything") == (merged.tools is None or "anything" in merged.tools)


def test_the_allowlist_is_hard() -> None:
    assert Policy(tools=()).offers("web_search") is False
    assert Policy(tools=("web_search",)).offers("code_interpreter") is False
    assert Policy().offers("code_interpreter") is True


@PURE
@given(raw=st.text(max_size=120) | st.lists(st.none() | st.text(max_size=12), max_size=5).map(repr))
def test_the_forms_reference_is_read_or_refused(raw: str) -> None:
    ref = PolicyRef.load(raw)
    assert ref is None or PolicyRef.load(ref.dump()) == ref


def test_a_forms_reference_names_a_channel_or_the_workspace() -> None:
    assert PolicyRef.load('["T1", null, "C0GENERAL", "U1"]') == PolicyRef("T1", None, "C0GENERAL", "U1")
    assert PolicyRef.load('["T1", null, "*", "U1"]') is not None
    assert PolicyRef.load('["T1", null, "<!channel>", "U1"]') is None
    assert PolicyRef.load('["T1", "", "C0GENERAL", "U1"]') is None
