"""The collector pause around pure builds (`core.collector.paused`): paused while a build
runs, resumed after it (also when it raises), left off when it was off, and resumed only
when the last of several concurrent builds ends."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from orgsync.core.collector import paused


@pytest.fixture(autouse=True)
def collector_restored() -> Iterator[None]:
    was = gc.isenabled()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


@paused
def state_inside() -> bool:
    return gc.isenabled()


def test_paused_during_the_build_and_resumed_after() -> None:
    gc.enable()
    assert state_inside() is False
    assert gc.isenabled()


def test_resumed_when_the_build_raises() -> None:
    @paused
    def failing() -> None:
        raise RuntimeError("bad input")

    gc.enable()
    with pytest.raises(RuntimeError):
        failing()
    assert gc.isenabled()


def test_left_off_when_it_was_off() -> None:
    gc.disable()
    assert state_inside() is False
    assert not gc.isenabled()


def test_nested_builds_resume_once_at_the_outer_end() -> None:
    @paused
    def outer() -> tuple[bool, bool]:
        inner = state_inside()
        return inner, gc.isenabled()

    gc.enable()
    assert outer() == (False, False)
    assert gc.isenabled()


def test_concurrent_builds_resume_when_the_last_one_ends() -> None:
    first_inside, release_first = threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    @paused
    def first() -> None:
        first_inside.set()
        release_first.wait(10)

    @paused
    def second() -> None:
        seen["second"] = gc.isenabled()

    gc.enable()
    thread = threading.Thread(target=first)
    thread.start()
    assert first_inside.wait(10)
    second()  # starts and ends while `first` is still building
    seen["between"] = gc.isenabled()
    release_first.set()
    thread.join(10)
    assert seen == {"second": False, "between": False}
    assert gc.isenabled()
