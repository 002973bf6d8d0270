"""Coverage-guided generation: cells with the fewest verified tasks are picked by SQL and
exploration aims at them, batch after batch."""

from __future__ import annotations

import json
import shutil

import pytest

from trajectory2task.optimize.coverage import GIVE_UP_AFTER, GuidedTargets, coverage_cells, pick_targets, target_goal
from trajectory2task.programs.generation.adapting import BaselineAdaptation
from trajectory2task.programs.generation.exploration import BaselineExplorer
from trajectory2task.programs.generation.pipeline import GenerationConfig, GenerationPipeline, id_prefix
from trajectory2task.programs.generation.writing import BaselineWriter
from trajectory2task.signatures.models import CONDITIONS, Trajectory
from trajectory2task.store import TaskStore
from trajectory2task.store.failures import StoreSink

USERS = 60
DB_SEED = 3


@pytest.fixture(scope="module")
def env(retail):
    return retail.environment(retail.generate_db(DB_SEED, USERS))


def _run(env, store, run_id, n, seed, targets=None, after_item=None):
    config = GenerationConfig(domain="retail", n=n, conditions=list(CONDITIONS), seed=seed, db_users=USERS,
                              db_initial_hash=env.initial_hash(), guided=targets is not None,
                              roles={"explorer": "baseline", "writer": "baseline", "adapter": "baseline"})
    config.id_prefix = id_prefix(config, run_id)
    store.start_run("generate", config.model_dump(mode="json"), seed=seed, run_id=run_id)
    GenerationPipeline(env, StoreSink(store), config, explorer=BaselineExplorer(), writer=BaselineWriter(),
                       adaptation=BaselineAdaptation(), targets=targets, after_item=after_item).run(run_id)


def _verified(store, domain) -> dict[tuple[str, str], int]:
    return {(c.tool, c.condition): c.verified_tasks for c in coverage_cells(store, domain)}


def _warm(env, tmp_path_factory, n):
    path = tmp_path_factory.mktemp("guided") / "warm.duckdb"
    with TaskStore(path) as store:
        _run(env, store, "warm", n=n, seed=1)
    return path


@pytest.fixture(scope="module")
def warm_store(env, tmp_path_factory):
    """A store after an unguided run of 16 items: some cells full, some still empty."""
    return _warm(env, tmp_path_factory, 16)


def test_cells_are_write_tools_by_condition_and_count_infeasible_forbidden_writes(env, warm_store):
    with TaskStore(warm_store, read_only=True) as store:
        cells = coverage_cells(store, env.domain)
        _, rows = store.query(
            "SELECT count(*) FROM tasks_latest WHERE condition = 'infeasible' AND verified "
            "AND list_contains(json_extract_string(json, '$.actions_should_not_take[*].name'), "
            "'cancel_pending_order')")
    writes = sorted(t.name for t in env.domain.tools if t.kind == "write")
    assert sorted({c.tool for c in cells}) == writes
    assert len(cells) == len(writes) * len(CONDITIONS)
    by_cell = {(c.tool, c.condition): c for c in cells}
    assert by_cell[("cancel_pending_order", "infeasible")].verified_tasks == rows[0][0] > 0


def test_pick_targets_takes_the_least_covered_cells(env, warm_store):
    with TaskStore(warm_store, read_only=True) as store:
        counts = _verified(store, env.domain)
        picked = pick_targets(store, env.domain, CONDITIONS, 5)
    assert len(picked) == 5
    chosen = [counts[(t.tool, t.condition)] for t in picked]
    rest = [v for cell, v in counts.items() if cell not in {(t.tool, t.condition) for t in picked}]
    assert max(chosen) <= min(rest)
    assert any(v > 0 for v in counts.values())


def test_pick_targets_respects_the_chosen_conditions(env, warm_store):
    with TaskStore(warm_store, read_only=True) as store:
        picked = pick_targets(store, env.domain, ["infeasible"], 3)
        with pytest.raises(ValueError, match="unknown condition"):
            pick_targets(store, env.domain, ["impossible"], 3)
    assert {t.condition for t in picked} == {"infeasible"}


def test_a_cell_tried_often_without_success_goes_last(env, tmp_path):
    with TaskStore(tmp_path / "s.duckdb") as store:
        first = pick_targets(store, env.domain, ["general"], 1)[0]
        store.start_run("generate", {})
        dead = [Trajectory(id=f"dead-{i}", domain="retail", steps=[], goal=target_goal(first.tool, "general"),
                           initial_state_hash="x", end_state_hash="x") for i in range(GIVE_UP_AFTER)]
        _, [(run_id,)] = store.query("SELECT run_id FROM runs")
        store.add_trajectories(run_id, dead)
        ranked = pick_targets(store, env.domain, ["general"], 7)
    assert (ranked[0].tool, ranked[0].condition) != (first.tool, first.condition)
    assert (ranked[-1].tool, ranked[-1].condition) == (first.tool, first.condition)


STEERED = ("general", "changing")  # conditions whose write is the explored one


@pytest.fixture(scope="module")
def small_warm_store(env, tmp_path_factory):
    """A short unguided run: several cells of the steered conditions are still empty."""
    return _warm(env, tmp_path_factory, 6)


def test_guided_batch_fills_empty_cells_that_an_unguided_batch_misses(env, small_warm_store, tmp_path):
    """Same store, same item seeds: aiming at the picked cells fills more of them.

    One item per picked cell; eight batch seeds are summed so that a lucky unguided walk
    cannot decide the comparison. The cells are those of the conditions whose write is the
    one the explorer was steered to make."""
    warm_store = small_warm_store
    with TaskStore(warm_store, read_only=True) as store:
        before = _verified(store, env.domain)
        targets = [(t.tool, t.condition) for t in pick_targets(store, env.domain, STEERED, 4)]
    empty = [cell for cell in targets if before[cell] == 0]
    assert empty  # the least-covered cells include some that nothing has filled yet
    filled = {False: 0, True: 0}
    for seed in range(2, 10):
        for guided in (False, True):
            path = tmp_path / f"{seed}-{guided}.duckdb"
            shutil.copy(warm_store, path)
            with TaskStore(path) as store:
                plan = GuidedTargets(store, env.domain, STEERED, batch_size=4) if guided else None
                _run(env, store, "batch", n=4, seed=seed, targets=plan)
                after = _verified(store, env.domain)
                if guided:
                    assert [(t.tool, t.condition) for t in plan.picks[0]] == targets
                    _, goals = store.query("SELECT goal FROM trajectories WHERE run_id = 'batch'")
                    picked = {target_goal(t.tool, t.condition) for batch in plan.picks.values() for t in batch}
                    assert goals and {g for (g,) in goals} <= picked
            filled[guided] += sum(after[cell] > 0 for cell in empty)
    assert filled[True] > filled[False], filled


def test_coverage_of_an_empty_cell_rises_over_batches(env, small_warm_store, tmp_path):
    path = tmp_path / "batches.duckdb"
    shutil.copy(small_warm_store, path)
    snapshots = []
    with TaskStore(path) as store:
        plan = GuidedTargets(store, env.domain, STEERED, batch_size=4)

        def after_item(item):
            if (item.index + 1) % 4 == 0:
                snapshots.append(_verified(store, env.domain))

        before = _verified(store, env.domain)
        _run(env, store, "guided", n=8, seed=2, targets=plan, after_item=after_item)
    first_batch = [(t.tool, t.condition) for t in plan.picks[0]]
    rising = [cell for cell in first_batch if before[cell] == 0 < snapshots[0][cell]]
    assert rising, "no targeted empty cell got a verified task in the first batch"
    # the second batch was picked from the store after the first: the filled cells gave way
    second_batch = [(t.tool, t.condition) for t in plan.picks[1]]
    assert not set(rising) & set(second_batch)
    assert sum(snapshots[1].values()) > sum(snapshots[0].values()) > sum(before.values())


def test_generate_guided_command_aims_batches_and_records_it(tmp_path):
    store = tmp_path / "cli.duckdb"
    from typer.testing import CliRunner

    from trajectory2task.cli import app

    for _ in range(2):
        result = CliRunner().invoke(app, ["generate", "--n", "3", "--users", str(USERS), "--seed", str(DB_SEED),
                                          "--guided", "--store", str(store), "--json"])
        assert result.exit_code == 0, result.output
    with TaskStore(store, read_only=True) as ts:
        _, configs = ts.query("SELECT config FROM runs WHERE kind = 'generate'")
        _, goals = ts.query("SELECT goal FROM trajectories")
        _, [(rows, distinct)] = ts.query("SELECT count(*), count(DISTINCT trajectory_id) FROM trajectories")
    assert [json.loads(c)["guided"] for (c,) in configs] == [True, True]
    assert goals and all(g.startswith("coverage:") for (g,) in goals)
    # a guided run depends on the store, so two runs with one seed keep their own ids
    assert rows == distinct == len(goals)
