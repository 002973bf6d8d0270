"""Generation pipeline: items land whole in the store, failures are recorded, resume adds no duplicates."""

from __future__ import annotations

import pytest
from dspy.utils.exceptions import LMServerError

from trajectory2task.programs.generation.adapting import BaselineAdaptation
from trajectory2task.programs.generation.exploration import BaselineExplorer
from trajectory2task.programs.generation.pipeline import GenerationConfig, GenerationPipeline, id_prefix, item_seed
from trajectory2task.programs.generation.writing import BaselineWriter, WriterError
from trajectory2task.signatures.models import CONDITIONS
from trajectory2task.store import TaskStore
from trajectory2task.store.failures import StoreSink, generation_items


@pytest.fixture(scope="module")
def env(retail):
    return retail.environment(retail.generate_db(5, 150))


def _config(env, n=10, seed=1):
    config = GenerationConfig(domain="retail", n=n, conditions=list(CONDITIONS), seed=seed, db_users=150,
                              db_initial_hash=env.initial_hash(),
                              roles={"explorer": "baseline", "writer": "baseline", "adapter": "baseline"})
    config.id_prefix = id_prefix(config, None)
    return config


def _pipeline(env, store, config, **kwargs):
    programs = dict(explorer=BaselineExplorer(), writer=BaselineWriter(), adaptation=BaselineAdaptation())
    programs.update({k: kwargs.pop(k) for k in list(kwargs) if k in programs})
    return GenerationPipeline(env, StoreSink(store), config, **programs, **kwargs)


def _run(env, path, config, run_id="run", **kwargs):
    with TaskStore(path) as store:
        store.start_run("generate", config.model_dump(mode="json"), seed=config.seed, run_id=run_id)
        return _pipeline(env, store, config, **kwargs).run(run_id)


def _task_set(path):
    """The stored tasks as JSON, without the run id (the only thing two equal runs may differ in)."""
    with TaskStore(path, read_only=True) as store:
        return sorted(t.model_copy(update={"provenance": t.provenance.model_copy(update={"run_id": None})})
                      .model_dump_json() for t in store.tasks())


def _no_duplicates(path):
    with TaskStore(path, read_only=True) as store:
        for table, key in (("tasks", "task_id"), ("trajectories", "trajectory_id")):
            _, [(rows, distinct)] = store.query(f"SELECT count(*), count(DISTINCT {key}) FROM {table}")
            assert rows == distinct, table
        _, [(events, indexes)] = store.query(
            "SELECT count(*), count(DISTINCT details->>'index') FROM run_events WHERE status = 'item'")
        assert events == indexes


def test_every_item_is_stored_with_its_tasks_and_verdicts(env, tmp_path):
    config = _config(env)
    summary = _run(env, tmp_path / "s.duckdb", config)
    with TaskStore(tmp_path / "s.duckdb", read_only=True) as store:
        items = generation_items(store, "run")
        assert [i.index for i in items] == list(range(config.n))
        stored = {t.id: t for t in store.tasks()}
        for item in items:
            assert item.seed == item_seed(config.seed, item.index)
            for condition, task_id in item.tasks.items():
                assert stored[task_id].condition == condition
        assert set(stored) == {task_id for i in items for task_id in i.tasks.values()}
        _, verdicts = store.query("SELECT task_id, pass FROM verdicts WHERE kind = 'static'")
        assert {t: p for t, p in verdicts} == {i.tasks[c]: i.verified[c] for i in items for c in i.tasks}
        _, [(n_traj,)] = store.query("SELECT count(*) FROM trajectories")
        assert n_traj == sum(1 for i in items if i.trajectory_id)
        _, [(status,)] = store.query("SELECT status FROM runs_status WHERE run_id = 'run'")
        assert status == "finished"
    assert summary.items == config.n
    general = next(c for c in summary.conditions if c.condition == "general")
    assert general.tasks == general.verified == len([i for i in items if "general" in i.tasks])


def test_interrupted_run_resumes_to_the_uninterrupted_result(env, tmp_path):
    config = _config(env, n=10)
    _run(env, tmp_path / "whole.duckdb", config, run_id="whole")

    def stop_after_four(item):
        if item.index == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(env, tmp_path / "cut.duckdb", config, run_id="cut", after_item=stop_after_four)
    with TaskStore(tmp_path / "cut.duckdb", read_only=True) as store:
        assert [i.index for i in generation_items(store, "cut")] == [0, 1, 2, 3]
        _, [(status,)] = store.query("SELECT status FROM runs_status WHERE run_id = 'cut'")
        assert status == "interrupted"
    summary = _run(env, tmp_path / "cut.duckdb", config, run_id="cut")  # start_run again = resume
    assert summary.items == config.n
    assert _task_set(tmp_path / "cut.duckdb") == _task_set(tmp_path / "whole.duckdb")
    _no_duplicates(tmp_path / "cut.duckdb")


class _DiesOnThirdItem(TaskStore):
    """A store whose third item transaction fails just before COMMIT (a kill mid-write)."""

    items = 0

    def _before_commit(self, cur, op):
        if op == "add_generation_item":
            type(self).items += 1
            if type(self).items == 3:
                raise RuntimeError("killed mid-write")


def test_an_item_is_stored_whole_or_not_at_all(env, tmp_path):
    config = _config(env, n=5)
    path = tmp_path / "k.duckdb"
    with _DiesOnThirdItem(path) as store:
        store.start_run("generate", config.model_dump(mode="json"), run_id="k")
        with pytest.raises(RuntimeError, match="killed mid-write"):
            _pipeline(env, store, config).run("k")
    with TaskStore(path, read_only=True) as store:
        items = generation_items(store, "k")
        assert [i.index for i in items] == [0, 1]
        _, [(trajectories,)] = store.query("SELECT count(*) FROM trajectories")
        _, [(steps_of_others,)] = store.query(
            "SELECT count(*) FROM steps WHERE trajectory_id NOT IN (SELECT trajectory_id FROM trajectories)")
        assert trajectories == sum(1 for i in items if i.trajectory_id) and steps_of_others == 0
        assert {t.id for t in store.tasks()} == {tid for i in items for tid in i.tasks.values()}


class _FlakyExplorer(BaselineExplorer):
    def __init__(self, failing_seed):
        super().__init__()
        self.failing_seed = failing_seed

    def explore(self, env, seed, **kwargs):
        if seed == self.failing_seed:
            raise LMServerError("injected 500 after retries", model="openai/test")
        return super().explore(env, seed, **kwargs)


class _RejectingWriter(BaselineWriter):
    def __init__(self, failing_seed):
        super().__init__()
        self.failing_seed = failing_seed

    def write(self, trajectory, env, provenance=None):
        if provenance is not None and provenance.seed == self.failing_seed:
            raise WriterError("writer output did not parse after 2 attempts: garbage")
        return super().write(trajectory, env, provenance)


def test_lm_failures_are_recorded_on_the_item_and_the_run_goes_on(env, tmp_path):
    config = _config(env, n=6)
    explorer_fails, writer_fails = item_seed(config.seed, 1), item_seed(config.seed, 4)
    summary = _run(env, tmp_path / "f.duckdb", config, explorer=_FlakyExplorer(explorer_fails),
                   writer=_RejectingWriter(writer_fails))
    with TaskStore(tmp_path / "f.duckdb", read_only=True) as store:
        items = {i.index: i for i in generation_items(store, "run")}
        assert len(items) == 6
        assert (items[1].status, items[1].stage, items[1].reason) == ("failed", "explore", "lm_error")
        assert "LMServerError" in items[1].detail and items[1].trajectory_id is None
        assert (items[4].status, items[4].stage, items[4].reason) == ("failed", "write", "lm_error")
        # the valid trajectory of the item whose writer failed is kept
        assert items[4].trajectory_id is not None
        assert store.trajectories("trajectory_id = ?", [items[4].trajectory_id])
        # these programs raised without calling an LM: no LM call is recorded for them (the LMs'
        # ledger callback records every real call, failed ones included: tests/test_generate_lm.py)
        _, [(calls,)] = store.query("SELECT count(*) FROM lm_calls")
        assert calls == 0
        assert sum(1 for i in items.values() if i.status == "done") >= 3
    assert summary.failed.get("lm_error") == 2


def test_items_in_flight_together_give_the_same_tasks(env, tmp_path):
    config = _config(env, n=8)
    _run(env, tmp_path / "one.duckdb", config)
    _run(env, tmp_path / "four.duckdb", config, workers=4)
    assert _task_set(tmp_path / "one.duckdb") == _task_set(tmp_path / "four.duckdb")
    _no_duplicates(tmp_path / "four.duckdb")
