"""The session state machine: the table is the whole truth, and it has no dead ends."""

from __future__ import annotations

import itertools

import pytest

from gateway.engine.states import (
    FINAL,
    TRANSITIONS,
    IllegalTransition,
    SessionState,
    transition,
)

S = SessionState


def test_the_states_are_a2as() -> None:
    assert {state.value for state in S} == {
        "submitted",
        "working",
        "input_required",
        "completed",
        "failed",
        "canceled",
        "rejected",
    }
    assert set(TRANSITIONS) == set(S)
    assert {S.COMPLETED, S.FAILED, S.CANCELED, S.REJECTED} == FINAL


@pytest.mark.parametrize(("current", "new"), list(itertools.product(S, S)))
def test_every_move_is_either_in_the_table_or_raises(current: S, new: S) -> None:
    if new in TRANSITIONS[current]:
        assert transition(current, new) is new
    else:
        with pytest.raises(IllegalTransition, match=f"from {current} to {new}"):
            transition(current, new)


def test_every_state_is_reached_from_submitted_and_reaches_an_end() -> None:
    reached = {S.SUBMITTED}
    frontier = [S.SUBMITTED]
    while frontier:
        for after in TRANSITIONS[frontier.pop()]:
            if after not in reached:
                reached.add(after)
                frontier.append(after)
    assert reached == set(S)
    for state in S:
        ends, seen, frontier = set(), {state}, [state]
        while frontier:
            current = frontier.pop()
            if current in FINAL:
                ends.add(current)
            for after in TRANSITIONS[current] - seen:
                seen.add(after)
                frontier.append(after)
        assert ends, f"{state} leads to no final state"
        if state not in FINAL:  # a running session can always be cancelled or fail
            assert {S.CANCELED, S.FAILED} <= TRANSITIONS[state]


def test_a_final_state_says_so() -> None:
    with pytest.raises(IllegalTransition, match="none: it is final"):
        transition(S.COMPLETED, S.WORKING)
