"""A long run's kept results leave the collector's scans (programs/lm/event_loop.py).

Without it, each full collection of a one-process generate run walked every task the run had
kept so far: the scans grew from 0.26 s to 1.1 s per 200 items over 1,000 items. These tests
read the collector's own state (``gc.get_freeze_count``, ``gc.get_objects``, weak references),
not the code under test.
"""

from __future__ import annotations

import gc
import weakref

import pytest

from trajectory2task.programs.lm import event_loop


class _Kept:
    """A result a run keeps (its objects are tracked by the collector)."""

    def __init__(self) -> None:
        self.fields = {"rows": [1, 2, 3]}


class _Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def _clean_heap():
    gc.unfreeze()
    yield
    gc.unfreeze()


def _frozen(obj: object) -> bool:
    """Whether the collector's scans skip ``obj``: it is in no generation any more."""
    return not any(o is obj for generation in range(3) for o in gc.get_objects(generation))


def test_results_kept_in_a_run_are_frozen_every_so_often_and_released_after_it() -> None:
    kept: list[_Kept] = []
    with event_loop.frozen_heap():
        for _ in range(event_loop.FREEZE_EVERY - 1):
            kept.append(_Kept())
            event_loop.result_kept()
        # one short of the period: the newest result is still scanned
        assert not _frozen(kept[-1].fields)
        kept.append(_Kept())
        event_loop.result_kept()
        assert all(_frozen(k.fields) for k in kept)
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0  # after the run, the collector sees them all again
    assert not _frozen(kept[0].fields)


def test_the_garbage_an_item_left_is_collected_not_frozen() -> None:
    with event_loop.frozen_heap():
        cycle = _Cycle()
        gone = weakref.ref(cycle)
        del cycle  # unreachable, but only the collector can free a cycle
        for _ in range(event_loop.FREEZE_EVERY):
            event_loop.result_kept()
        assert gone() is None


def test_an_inner_run_leaves_the_outer_runs_heap_frozen() -> None:
    with event_loop.frozen_heap():
        outer = _Kept()
        for _ in range(event_loop.FREEZE_EVERY):
            event_loop.result_kept()
        assert _frozen(outer.fields)
        event_loop.run(_nothing())  # a run inside a run opens and closes a block of its own
        assert _frozen(outer.fields)
    assert not _frozen(outer.fields)


def test_outside_a_run_nothing_is_frozen() -> None:
    for _ in range(event_loop.FREEZE_EVERY):
        event_loop.result_kept()
    assert gc.get_freeze_count() == 0


async def _nothing() -> None:
    return None


@pytest.mark.parametrize("where", ["one process", "bench"])
def test_a_generate_run_and_a_bench_freeze_what_they_keep(monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    from trajectory2task.usecases import bench, generate

    monkeypatch.setattr(event_loop, "FREEZE_EVERY", 3)
    frozen: list[int] = []
    if where == "one process":
        generate("retail", n=4, users=20, progress=lambda item: frozen.append(gc.get_freeze_count()))
    else:
        from trajectory2task.domains import get_domain

        made = generate("retail", n=2, users=20)
        retail = get_domain("retail")
        env = retail.environment(retail.generate_db(0, 20))
        original = event_loop.result_kept

        def counted() -> None:
            original()
            frozen.append(gc.get_freeze_count())

        monkeypatch.setattr(event_loop, "result_kept", counted)
        bench(made.tasks[:4], env, agents=["oracle"], trials=1)
    # the progress line runs after the item is kept: the third kept result froze the heap again
    assert frozen[2] > frozen[1]
    assert gc.get_freeze_count() == 0
