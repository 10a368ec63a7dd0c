"""The error taxonomy's one table (gateway/providers/errors.py): every kind's traits, checked against the
separate sets retry.py, breaker.py and errors.py kept before, and against the policy's `retry.on` words."""

from __future__ import annotations

import itertools
import typing

import orjson
import pytest

from gateway.execution.breaker import Breakers
from gateway.execution.retry import should_retry
from gateway.policy.sections import RETRY_ON
from gateway.policy.schema import BreakerSpec, RetrySpec
from gateway.providers.errors import Action, ErrorKind, RetryOn, UpstreamError, kind_for_status
from gateway.state.memory import MemoryStore

# The oracle: the string sets the three modules kept before the table, copied as they were.
OLD_RETRY_KINDS = {"timeout", "connect", "rate_limit", "server", "malformed", "stream_cut", "overloaded"}
OLD_FAILOVER_KINDS = {"context_window", "content_policy", "unavailable", "not_found_upstream", "auth_upstream",
                      "redirect", "oversized"}
OLD_CONDITION = {
    "rate_limit": "429", "overloaded": "429",
    "server": "5xx", "malformed": "5xx",
    "timeout": "timeout",
    "connect": "connect", "stream_cut": "connect",
}
OLD_COUNTED = {"rate_limit", "overloaded", "server", "malformed", "timeout", "connect", "stream_cut",
               "auth_upstream", "not_found_upstream", "unavailable", "oversized"}
# Kinds the gateway raises today (providers, execution, api) that fell through to CLIENT by default.
OLD_CLIENT_KINDS = {"bad_request"}


def old_action(kind: str) -> Action:
    if kind in OLD_RETRY_KINDS:
        return Action.RETRY
    if kind in OLD_FAILOVER_KINDS:
        return Action.FAILOVER
    return Action.CLIENT


def old_should_retry(spec: RetrySpec, error: UpstreamError) -> bool:
    if old_action(str(error.kind)) is not Action.RETRY:
        return False
    if error.status in (408, 409) and str(error.status) in spec.on:
        return True
    return OLD_CONDITION.get(str(error.kind)) in spec.on


def test_the_kinds_are_exactly_the_ones_in_use():
    assert {k.value for k in ErrorKind} == OLD_RETRY_KINDS | OLD_FAILOVER_KINDS | OLD_CLIENT_KINDS


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_every_kind_has_one_action_the_old_one(kind):
    assert isinstance(kind.action, Action)
    assert kind.action is old_action(kind.value)
    assert UpstreamError(kind.value, "x").action is kind.action


def test_the_actions_partition_the_kinds():
    by_action = {a: {k for k in ErrorKind if k.action is a} for a in Action}
    assert sum(len(s) for s in by_action.values()) == len(ErrorKind)
    assert all(by_action.values())  # no action is left without a kind


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_a_kind_has_a_retry_condition_exactly_when_it_is_retried(kind):
    assert (kind.retry_on is not None) == (kind.action is Action.RETRY)
    assert kind.retry_on == OLD_CONDITION.get(kind.value)


def test_the_policy_vocabulary_covers_every_retry_condition():
    used = {k.retry_on for k in ErrorKind if k.retry_on is not None}
    assert used <= set(RETRY_ON)
    assert set(typing.get_args(RetryOn)) <= set(RETRY_ON)
    assert used == set(typing.get_args(RetryOn))  # no condition in the type that no kind uses


def test_request_bound_kinds_fail_over_and_spare_the_breaker():
    bound = {k for k in ErrorKind if k.request_bound}
    assert bound == {ErrorKind.CONTEXT_WINDOW, ErrorKind.CONTENT_POLICY}
    assert all(k.action is Action.FAILOVER and not k.counts_for_breaker for k in bound)


def test_the_breaker_counts_exactly_the_kinds_it_counted_before():
    assert {k.value for k in ErrorKind if k.counts_for_breaker} == OLD_COUNTED


@pytest.mark.parametrize("kind", list(ErrorKind))
async def test_breakers_open_on_one_failure_only_for_counted_kinds(kind):
    """Through Breakers itself (count mode, one failure opens), with the kind as a plain string, as the
    signature allows."""
    breakers = Breakers(MemoryStore())
    spec = BreakerSpec(failures=1, failure_ratio=None)
    await breakers.failure(spec, "d", kind.value)
    assert await breakers.is_open(spec, "d") is (kind.value in OLD_COUNTED)


_ON_SETS = [frozenset(c) for n in range(len(RETRY_ON) + 1) for c in itertools.combinations(RETRY_ON, n)]


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_should_retry_matches_the_old_table_for_every_condition(kind):
    for status, on in itertools.product((None, 200, 400, 408, 409, 429, 500, 503), _ON_SETS):
        error = UpstreamError(kind.value, "x", status=status)
        assert should_retry(RetrySpec(on=on), error) is old_should_retry(RetrySpec(on=on), error), (status, on)


def test_should_retry_ignores_what_is_not_an_upstream_error():
    assert not should_retry(RetrySpec(on=frozenset(RETRY_ON)), TimeoutError("x"))


@pytest.mark.parametrize("name", ["time_out", "Timeout", "TIMEOUT", "", "error", "deadline"])
def test_an_unknown_kind_is_refused_at_construction(name):
    with pytest.raises(ValueError):
        UpstreamError(name, "a typo must not pass as a client error")


def test_a_kind_still_reads_as_its_string():
    error = UpstreamError("stream_cut", "cut")
    assert error.kind is ErrorKind.STREAM_CUT
    assert error.kind == "stream_cut" and error.kind in {"stream_cut"} and {"stream_cut": 1}[error.kind] == 1
    assert str(error.kind) == f"{error.kind}" == "stream_cut"  # metrics labels, headers, log lines
    assert orjson.loads(orjson.dumps({"error": error.kind})) == {"error": "stream_cut"}
    assert repr(error) == "UpstreamError(kind='stream_cut', status=None, action=retry)"
    assert UpstreamError(ErrorKind.OVERSIZED, "big").kind is ErrorKind.OVERSIZED


def test_kind_for_status_gives_a_kind_for_every_status():
    assert all(isinstance(kind_for_status(status), ErrorKind) for status in range(100, 600))


@pytest.mark.parametrize("status,message,kind", [
    (429, "", ErrorKind.RATE_LIMIT), (408, "", ErrorKind.TIMEOUT), (409, "", ErrorKind.SERVER),
    (502, "", ErrorKind.SERVER), (307, "", ErrorKind.REDIRECT), (403, "", ErrorKind.AUTH_UPSTREAM),
    (404, "", ErrorKind.NOT_FOUND_UPSTREAM), (400, "maximum context length is 8192", ErrorKind.CONTEXT_WINDOW),
    (400, "flagged by the content_filter", ErrorKind.CONTENT_POLICY), (422, "bad temperature", ErrorKind.BAD_REQUEST),
])
def test_kind_for_status_maps_as_before(status, message, kind):
    assert kind_for_status(status, message) is kind
