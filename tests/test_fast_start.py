"""Commands that need no store, no LM and no training import none of them (a fast start):
`t2t domains`, `t2t domain show`, `t2t replay`, `t2t verify`. Nor do they import the modules
of the other commands, which `t2t` loads only when one of them is asked for."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import TAU2_DIR

HEAVY = ("duckdb", "pyarrow", "numpy", "dspy", "litellm", "torch", "transformers",
         # the other commands' modules (t2t/cli.py builds them on first need)
         "trajectory2task.cmd_store", "trajectory2task.cmd_generate", "trajectory2task.cmd_bench",
         "trajectory2task.cmd_optimize", "trajectory2task.cmd_audit", "trajectory2task.cmd_finetune",
         "trajectory2task.lm_options", "trajectory2task.usecases")
PROBE = """
import contextlib, io, sys
from trajectory2task.cli import main
sys.argv = ["t2t", *{args!r}]
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main()
    except SystemExit as exc:
        assert not exc.code, exc.code
print(",".join(m for m in {heavy!r} if m in sys.modules))
"""


def _imported(args: list[str], tmp_path, modules: tuple[str, ...] = HEAVY) -> str:
    result = subprocess.run([sys.executable, "-c", PROBE.format(args=args, heavy=modules)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# what only generation and database checks need: a domain names them with Deferred
GENERATION_ONLY = tuple(f"trajectory2task.domains.{d}.{m}" for d in ("retail", "airline")
                        for m in ("kit", "generate", "consistency", "conditions", "exploration"))


@pytest.mark.parametrize("args", [["domains"], ["domain", "show", "retail"], ["domain", "show", "airline"]],
                         ids=lambda a: " ".join(a))
def test_domain_commands_import_no_store_lm_or_training_library(args, tmp_path):
    assert _imported(args, tmp_path, HEAVY + GENERATION_ONLY + ("trajectory2task.domains.kit",)) == ""


@pytest.mark.parametrize("command", ["replay", "verify"])
def test_replay_and_verify_import_no_store_lm_or_training_library(command, tmp_path):
    if not (TAU2_DIR / "db.json").is_file():
        pytest.skip(f"tau2 reference data not found at {TAU2_DIR}")
    args = [command, "--domain", "retail", "--db", str(TAU2_DIR / "db.json"), str(TAU2_DIR / "tasks.json"), "--json"]
    # JSON lines need no rich (t2t/output.py loads it on first use)
    assert _imported(args, tmp_path, HEAVY + ("rich",) + (GENERATION_ONLY if command == "replay" else ())) == ""


def test_a_deferred_domain_field_imports_its_module_on_first_read(tmp_path, monkeypatch):
    from trajectory2task.domains.runtime import Deferred, Domain

    (tmp_path / "lazy_generator_probe.py").write_text("CALLS = []\n"
                                                     "def generate(seed, users):\n    CALLS.append(seed)\n"
                                                     "    return {'seed': seed}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    domain = Domain(name="probe", summary="", db_model=dict, tools=(), policy="",  # type: ignore[arg-type]
                    generate_db=Deferred("lazy_generator_probe", "generate"))
    assert "lazy_generator_probe" not in sys.modules
    assert domain.generate_db(3, 1) == {"seed": 3}
    assert sys.modules["lazy_generator_probe"].CALLS == [3]
    assert domain.generate_db is sys.modules["lazy_generator_probe"].generate  # resolved once, then kept
    assert domain.kit is None and domain.check_db(None) == []  # the defaults
    given = Domain(name="probe", summary="", db_model=dict, tools=(), policy="",  # type: ignore[arg-type]
                   generate_db=domain.generate_db)
    assert given == domain


def test_a_tool_builds_its_argument_validator_on_first_call_and_still_refuses_bad_arguments():
    from trajectory2task.domains import get_domain
    from trajectory2task.domains.runtime import tool_spec

    domain = get_domain("retail")
    spec = tool_spec(domain.tool("get_order_details").function)
    assert not spec.arguments_model.__pydantic_complete__  # declaring the tool built nothing
    assert list(spec.arguments_model.model_fields) == ["order_id"]
    with pytest.raises(Exception, match="extra"):
        spec.arguments_model.model_validate({"order_id": "#W1", "note": "x"})
    assert spec.arguments_model.__pydantic_complete__


def test_loading_a_database_pauses_the_collector_then_freezes_the_database_out_of_its_scans(tmp_path):
    import gc

    from trajectory2task.errors import UserError
    from trajectory2task.settings import load_environment

    if not (TAU2_DIR / "db.json").is_file():
        pytest.skip(f"tau2 reference data not found at {TAU2_DIR}")
    bad = tmp_path / "bad.json"
    bad.write_text('{"users": 3}')
    gc.unfreeze()
    try:
        with pytest.raises(UserError):
            load_environment("retail", str(bad))
        assert gc.isenabled() and gc.get_freeze_count() == 0  # a refused file freezes nothing
        env = load_environment("retail", str(TAU2_DIR / "db.json"))
        assert gc.isenabled()
        frozen = gc.get_freeze_count()
        assert frozen > sum(len(records) for records in env.base.tables.values())
        gc.disable()  # a caller's choice to keep the collector off is kept
        load_environment("retail", str(TAU2_DIR / "db.json"))
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()


WORKER_PROBE = """
import asyncio, sys
from trajectory2task.domains import get_domain
from trajectory2task.programs.distributed.generate_ray import ItemWorker, WorkerSetup
from trajectory2task.programs.generation.pipeline import GenerationConfig

domain = get_domain("retail")
env = domain.environment(domain.generate_db(3, 40))
config = GenerationConfig(domain="retail", domain_module="trajectory2task.domains.retail", n=2, seed=3, db_users=40,
                          db_initial_hash=env.initial_hash(), source="baseline",
                          roles={{r: "baseline" for r in ("explorer", "writer", "adapter")}})
config.id_prefix = "probe"
worker = ItemWorker(WorkerSetup(config=config), None)
outputs = asyncio.run(worker.run_items("run", [(0, None), (1, None)]))
assert sum(len(o.tasks) for o in outputs) > 2, outputs  # it made tasks, adapted ones too
print(",".join(m for m in {heavy!r} if m in sys.modules))
"""


def test_an_offline_ray_worker_imports_no_lm_or_store_library(tmp_path):
    # a worker's start is most of what a short Ray run pays over one process: offline items
    # need the domain and the baselines, not DSPy (half a second), the store or Ray's extras
    result = subprocess.run([sys.executable, "-c", WORKER_PROBE.format(heavy=HEAVY)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_an_offline_generate_command_imports_no_lm_library(tmp_path):
    # no role has a model: the run needs the store, not DSPy or LiteLLM (about 0.45 s a command)
    args = ["generate", "--domain", "retail", "--n", "2", "--users", "20", "--store", "run.duckdb", "--json"]
    assert _imported(args, tmp_path, ("dspy", "litellm", "torch", "transformers", "ray")) == ""
    assert (tmp_path / "run.duckdb").is_file()
