"""Subscribers: added and stopped at any time, each stop once."""

from __future__ import annotations

from collections.abc import Callable

from gateway.subscribers import Subscribers


def test_each_stop_stops_its_own_registration_once() -> None:
    changes: list[int] = []
    told: list[str] = []
    subscribers = Subscribers[Callable[[str], None]](
        on_change=lambda: changes.append(len(subscribers.current))
    )
    first = subscribers.add(told.append)
    second = subscribers.add(told.append)  # the same callable, twice
    assert len(subscribers.current) == 2
    first()
    first()  # again: nothing, the other registration stays
    assert list(subscribers.current) == [told.append]
    second()
    assert len(subscribers.current) == 0
    assert changes == [1, 2, 1, 0]


def test_a_stop_while_telling_leaves_the_round_under_way_alone() -> None:
    told: list[str] = []
    subscribers = Subscribers[Callable[[], None]]()
    stops: list[Callable[[], None]] = []

    def a() -> None:
        told.append("a")
        stops[1]()

    stops.append(subscribers.add(a))
    stops.append(subscribers.add(lambda: told.append("b")))
    for subscriber in subscribers.current:
        subscriber()
    assert told == ["a", "b"]  # b was stopped by a, and told in this round all the same
    assert subscribers.current == (a,)
