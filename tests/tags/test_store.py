"""The store: atomic reload, last good config kept, versions, subscribers, file watching."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from gateway.errors import ConfigError
from gateway.principal import Principal
from gateway.tags import TagManager, TagSet, TagStore, check

ACME = """
users:
  alice: {roles: [agent]}
tags:
  - tag: role_agent
    kind: role
    payload:
      config:
        assigned_roles: [agent]
        allowed_tools: [crm__get]
"""
ALICE = Principal("alice", "acme")


def test_open_refuses_an_invalid_config(tags_dir: Callable[..., Path]) -> None:
    directory = tags_dir(acme=ACME.replace("kind: role", "kind: nope"))
    with pytest.raises(ConfigError) as caught:
        TagStore.open(directory, directory.parent)
    assert str(caught.value.issues[0]).startswith("orgs/acme.yaml:6: tag 'role_agent': kind:")


def test_open_refuses_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tags directory does not exist"):
        TagStore.open(tmp_path / "nope")


def test_reload_swaps_in_a_new_version_and_notifies(tags_dir: Callable[..., Path]) -> None:
    directory = tags_dir(acme=ACME)
    store = TagStore.open(directory)
    seen: list[tuple[int, int]] = []
    unsubscribe = store.subscribe(lambda old, new: seen.append((old.version, new.version)))
    assert store.current.version == 1

    unchanged = store.reload()
    assert (unchanged.changed, unchanged.version) == (False, 1)
    assert seen == []

    (directory / "acme.yaml").write_text(ACME.replace("crm__get", "crm__list"))
    result = store.reload()
    assert (result.changed, result.version, result.ok) == (True, 2, True)
    assert seen == [(1, 2)]
    assert store.current.orgs["acme"].tags["role_agent"].tag.payload.config.allowed_tools == (
        "crm__list",
    )
    unsubscribe()
    (directory / "acme.yaml").write_text(ACME)
    assert store.reload().version == 3
    assert seen == [(1, 2)]


def test_invalid_change_keeps_the_last_good_config(
    tags_dir: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    directory = tags_dir(acme=ACME, globex="users: {gina: {}}\n")
    store = TagStore.open(directory)
    good = store.current
    # One valid change and one broken file in the same reload: nothing of it is applied.
    (directory / "acme.yaml").write_text(ACME.replace("crm__get", "crm__everything"))
    (directory / "globex.yaml").write_text("users: {gina: {roles: [1]}}\n")
    with caplog.at_level(logging.ERROR, logger="gateway.tags"):
        result = store.reload()
    assert not result.ok
    assert result.changed is False
    assert store.current is good
    assert store.last_error is result.error
    assert "version 1 stays in force" in caplog.text
    assert "globex.yaml:1: users.gina.roles[0]: expected text (got 1)" in caplog.text
    # Fixing the broken file applies the whole change at once.
    (directory / "globex.yaml").write_text("users: {gina: {}}\n")
    result = store.reload()
    assert (result.ok, result.version) == (True, 2)
    assert store.last_error is None
    assert store.current.orgs["acme"].tags["role_agent"].allowed[0].pattern == "crm__everything"


def test_a_failing_subscriber_does_not_stop_the_others(tags_dir: Callable[..., Path]) -> None:
    directory = tags_dir(acme=ACME)
    store = TagStore.open(directory)
    seen: list[int] = []

    def broken(_old: TagSet, _new: TagSet) -> None:
        raise RuntimeError("boom")

    store.subscribe(broken)
    store.subscribe(lambda _old, new: seen.append(new.version))
    (directory / "acme.yaml").write_text(ACME + "\n# changed\n")
    assert store.reload().changed
    assert seen == [2]


def test_removed_file_removes_the_org(tags_dir: Callable[..., Path]) -> None:
    directory = tags_dir(acme=ACME, globex="users: {gina: {}}\n")
    manager = TagManager.open(directory)
    assert check(manager.resolve(ALICE), "crm__get").allowed
    (directory / "acme.yaml").unlink()
    assert manager.store.reload().changed
    assert not check(manager.resolve(ALICE), "crm__get").allowed


def test_cache_never_serves_a_stale_permission(tags_dir: Callable[..., Path]) -> None:
    directory = tags_dir(acme=ACME)
    manager = TagManager.open(directory)
    first = manager.resolve(ALICE)
    assert manager.resolve(ALICE) is first  # cached
    assert check(manager.resolve(ALICE), "crm__get", {}).allowed
    (directory / "acme.yaml").write_text(
        ACME.replace("allowed_tools: [crm__get]", "denied_tools: [crm__get]")
    )
    manager.store.reload()
    assert manager.resolve(ALICE) is not first
    assert manager.resolve(ALICE).version == 2
    assert not check(manager.resolve(ALICE), "crm__get", {}).allowed


def test_cache_is_bounded(tags_dir: Callable[..., Path]) -> None:
    manager = TagManager.open(tags_dir(acme=ACME), cache_size=10)
    for index in range(25):
        manager.resolve(Principal(f"user{index}", "acme"))
    assert len(manager.resolver) == 10


@pytest.mark.anyio
async def test_watch_reloads_on_file_change(tags_dir: Callable[..., Path]) -> None:
    directory = tags_dir(acme=ACME)
    store = TagStore.open(directory)
    stop = anyio.Event()
    changed = anyio.Event()
    store.subscribe(lambda _old, _new: changed.set())
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(lambda: store.watch(debounce_ms=50, stop=stop))
        # The watcher needs a moment to arm; write until it sees a change (bounded).
        with anyio.fail_after(10):
            for attempt in range(100):
                (directory / "acme.yaml").write_text(ACME + f"\n# edit {attempt}\n")
                with anyio.move_on_after(0.3):
                    await changed.wait()
                if changed.is_set():
                    break
        stop.set()
    assert changed.is_set()
    assert store.current.version >= 2


@pytest.mark.anyio
async def test_watch_rejects_a_bad_edit_and_keeps_serving(tags_dir: Callable[..., Path]) -> None:
    directory = tags_dir(acme=ACME)
    store = TagStore.open(directory)
    stop = anyio.Event()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(lambda: store.watch(debounce_ms=50, stop=stop))
        with anyio.fail_after(10):
            for _ in range(100):
                # Whole, at once: write_text truncates first, and a watcher that read the
                # empty file between would load it (an org with no tags is valid).
                (directory / "acme.yaml.new").write_text("tags: [\n")
                (directory / "acme.yaml.new").replace(directory / "acme.yaml")
                await anyio.sleep(0.2)
                if store.last_error is not None:
                    break
        stop.set()
    assert store.last_error is not None
    assert store.current.version == 1
    assert (
        "crm__get" in store.current.orgs["acme"].tags["role_agent"].tag.payload.config.allowed_tools
    )


@pytest.mark.anyio
async def test_watch_rejects_an_alias_bomb_and_keeps_serving(
    tags_dir: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    # Nine aliases a level, six levels: 531,441 values in a field that takes any JSON, over
    # the limit and small enough that a loader without one survives it (and swaps it in).
    bomb = "        scopes:\n          crm__get:\n            amount:\n              const:\n"
    bomb += "                a0: &a0 [" + ", ".join(["lol"] * 9) + "]\n"
    bomb += "".join(
        f"                a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 6)
    )
    directory = tags_dir(acme=ACME)
    store = TagStore.open(directory)
    stop = anyio.Event()
    with caplog.at_level(logging.ERROR, logger="gateway.tags"):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(lambda: store.watch(debounce_ms=50, stop=stop))
            with anyio.fail_after(20):
                for attempt in range(100):  # until the armed watcher has seen it
                    (directory / "acme.yaml").write_text(ACME + bomb + f"# {attempt}\n")
                    await anyio.sleep(0.2)
                    if store.last_error is not None or store.current.version > 1:
                        break
                assert store.current.version == 1
                # The watcher lives on: a good edit after the bomb is swapped in.
                for attempt in range(100):
                    (directory / "acme.yaml").write_text(ACME + f"# fixed {attempt}\n")
                    await anyio.sleep(0.2)
                    if store.current.version > 1:
                        break
            stop.set()
    assert "acme.yaml:20: invalid YAML: aliases expand this list" in caplog.text
    assert "version 1 stays in force" in caplog.text
    assert store.current.version == 2
    assert store.last_error is None
