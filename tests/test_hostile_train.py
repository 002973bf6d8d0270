"""Hostile input to `t2t finetune` (issue 29): malformed --data, out-of-range knobs, a run
that diverges, Ctrl-C, SIGKILL, a dangling-symlink or unwritable --output, a GPU that is not
there. Each gives one `t2t: error:` line and a non-zero exit (or succeeds safely), and leaves
no half-written model or temporary directory behind.

The model is the tests' tiny two-layer Llama; the data four short hand-written conversations,
so a training run is a couple of seconds after the imports."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli import run_t2t
from trajectory2task.programs.training.finetune import (MAX_RECORD_CHARS, MAX_RECORD_DEPTH, TEMP_MARK,  # noqa: E402
                                                        DataError, read_sft_file)

TRAIN_TIMEOUT = 300


def conversation(i: int) -> dict:
    """A record as `t2t export --format sft` writes one: a call, its result, an answer."""
    return {"messages": [
        {"role": "system", "content": "You help with sums."},
        {"role": "user", "content": f"What is {i} plus {i}?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "add", "arguments": json.dumps({"a": i, "b": i})}}]},
        {"role": "tool", "tool_call_id": "c1", "content": str(2 * i)},
        {"role": "assistant", "content": f"It is {2 * i}."}],
        "tools": [{"type": "function", "function": {"name": "add", "description": "Add two numbers.", "parameters": {
            "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}}}]}


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------ the data reader


def test_well_formed_records_read_back_as_written(tmp_path):
    records = [conversation(i) for i in range(3)]
    path = write_lines(tmp_path / "sft.jsonl", [json.dumps(r) for r in records[:2]] + ["", json.dumps(records[2])])
    assert read_sft_file(path) == records


def _refusal(tmp_path: Path, line: str, number: int = 2) -> str:
    path = write_lines(tmp_path / "sft.jsonl", [json.dumps(conversation(0))] * (number - 1) + [line])
    with pytest.raises(DataError) as caught:
        read_sft_file(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}:{number}: "), message
    return message


def _with(change) -> str:
    record = conversation(1)
    change(record)
    return json.dumps(record)


@pytest.mark.parametrize(("line", "expected"), [
    ("[" * 100_000 + "]" * 100_000, f"nested more than {MAX_RECORD_DEPTH} levels"),
    ('{"messages": ' + "[" * 500 + "]" * 500 + "}", f"nested more than {MAX_RECORD_DEPTH} levels"),
    (_with(lambda r: r.update(tools=[1, "x", None])), "tools[0]"),
    (_with(lambda r: r["tools"][0]["function"].pop("name")), "tools[0].function.name"),
    (_with(lambda r: r["messages"][1].update(role="wizard")), "messages[1].role"),
    (_with(lambda r: r["messages"][1].update(role=None)), "messages[1].role"),
    (_with(lambda r: r["messages"][1].update(content=["a", "list"])), "messages[1].content"),
    (_with(lambda r: r["messages"][1].update(content=7)), "messages[1].content"),
    (_with(lambda r: r["messages"][2].update(tool_calls=[{"function": "x"}])), "messages[2].tool_calls[0].function"),
    (_with(lambda r: r["messages"][2].update(tool_calls="add")), "messages[2].tool_calls"),
    (_with(lambda r: r["messages"][2]["tool_calls"][0]["function"].update(name="")), "function.name"),
    (_with(lambda r: r["messages"][2]["tool_calls"][0]["function"].update(arguments="{not json")), "not JSON text"),
    (_with(lambda r: r["messages"][2]["tool_calls"][0]["function"].update(arguments="[1, 2]")), "JSON object"),
    (_with(lambda r: r["messages"][1].update(tool_calls=r["messages"][2]["tool_calls"])), "only an assistant"),
    (_with(lambda r: r.update(messages=[])), "messages"),
    ('{"messages": "hi"}', "messages"),
    ("[1, 2]", "a record is a JSON object"),
    ("not json at all", "not JSON"),
])
def test_a_malformed_record_is_one_data_error_naming_file_and_line(tmp_path, line, expected):
    assert expected in _refusal(tmp_path, line)


def test_a_line_over_the_cap_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    import trajectory2task.programs.training.finetune as finetune

    parsed: list[int] = []
    real_loads = json.loads
    monkeypatch.setattr(finetune.json, "loads", lambda text, *a, **k: parsed.append(len(text)) or real_loads(text))
    huge = json.dumps({"messages": [{"role": "user", "content": "x" * MAX_RECORD_CHARS}]})
    message = _refusal(tmp_path, huge)
    assert f"more than the {MAX_RECORD_CHARS}" in message
    assert parsed and max(parsed) < MAX_RECORD_CHARS  # the line before it was parsed; the long one never


# ------------------------------------------------------------------ a tiny model


pytest.importorskip("transformers", reason="the train extra is not installed (pip install -e '.[train]')")
pytest.importorskip("trl", reason="the train extra is not installed (pip install -e '.[train]')")
pytest.importorskip("peft", reason="the train extra is not installed (pip install -e '.[train]')")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> tuple[Path, Path]:
    """(a tiny model, an SFT file of four conversations)."""
    from tests.tiny_model import tiny_model

    root = tmp_path_factory.mktemp("hostile-train")
    lines = [json.dumps(conversation(i)) for i in range(4)]
    data = write_lines(root / "sft.jsonl", lines)
    return tiny_model(root / "tiny", lines), data


def finetune_args(tiny: Path, data: Path, out: Path, store: Path, *extra: str) -> list[str]:
    return ["finetune", "--base", str(tiny), "--data", str(data), "--output", str(out), "--store", str(store),
            "--method", "full", "--threads", "1", *extra]


def run_status(store: Path) -> list[tuple[str, str]]:
    from trajectory2task.store import read_only_query

    if not store.exists():
        return []
    return [tuple(r) for r in read_only_query(store, "SELECT run_id, status FROM runs_status "
                                                     "WHERE kind = 'finetune' ORDER BY started_at")[1]]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if TEMP_MARK in p.name or ".t2t-old-" in p.name)


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    errors = [line for line in done.stderr.splitlines() if not line.startswith("t2t finetune: ")]
    assert len(errors) == 1 and errors[0].startswith("t2t: error: "), done.stderr
    return errors[0]


def test_a_bad_data_file_is_one_line_from_the_command(workspace, tmp_path):
    tiny, _ = workspace
    data = write_lines(tmp_path / "sft.jsonl", [_with(lambda r: r.update(tools=[1, "x", None]))])
    store = tmp_path / "t2t.duckdb"
    done = run_t2t(*finetune_args(tiny, data, tmp_path / "out", store), cwd=tmp_path)
    assert done.returncode == 2
    assert one_error_line(done).startswith(f"t2t: error: {data}:1: tools[0]: ")
    assert not (tmp_path / "out").exists() and run_status(store) == []


@pytest.mark.parametrize(("flag", "value", "expected"), [
    ("--epochs", "inf", "--epochs inf: input should be a finite number (allowed: a finite number above 0 and at most 1000)"),
    ("--epochs", "nan", "--epochs nan: input should be a finite number"),
    ("--epochs", "1e6", "--epochs 1000000.0: input should be less than or equal to 1000"),
    ("--lr", "1e30", "--lr 1e+30: input should be less than or equal to 1 (allowed: a finite number above 0 and at most 1)"),
    ("--lr", "0", "--lr 0.0: input should be greater than 0"),
    ("--lr", "-inf", "--lr -inf: input should be a finite number"),
])
def test_knobs_out_of_range_are_one_line_before_anything_runs(workspace, tmp_path, flag, value, expected):
    tiny, data = workspace
    store = tmp_path / "t2t.duckdb"
    done = run_t2t(*finetune_args(tiny, data, tmp_path / "out", store, flag, value), cwd=tmp_path)
    assert done.returncode == 2
    line = one_error_line(done)
    assert line.startswith(f"t2t: error: {expected}") and "(allowed: a finite number above 0 and at most" in line
    assert not (tmp_path / "out").exists() and run_status(store) == []


def test_a_dangling_symlink_output_is_refused_before_training(workspace, tmp_path):
    tiny, data = workspace
    out = tmp_path / "out"
    out.symlink_to(tmp_path / "nowhere")
    store = tmp_path / "t2t.duckdb"
    done = run_t2t(*finetune_args(tiny, data, out, store, "--force"), cwd=tmp_path)
    assert done.returncode == 2 and "symbolic link to nothing" in one_error_line(done)
    assert "step" not in done.stderr and run_status(store) == []  # refused before training, nothing recorded
    assert out.is_symlink() and not (tmp_path / "nowhere").exists()


def _no_gpu() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: this checks the line a machine without one gives")


def test_device_cuda_without_a_gpu_is_one_line_in_finetune_and_in_bench(workspace, tmp_path, tau2_dir):
    _no_gpu()
    tiny, data = workspace
    store = tmp_path / "t2t.duckdb"
    done = run_t2t(*finetune_args(tiny, data, tmp_path / "out", store, "--device", "cuda"), cwd=tmp_path)
    assert done.returncode == 2 and "--device cuda: no CUDA device" in one_error_line(done)
    assert run_status(store) == []
    # the local/ model path of bench, with the device from the environment
    bench_store = tmp_path / "bench.duckdb"
    done = run_t2t("bench", "--agent-lm", f"local/{tiny}", "--tasks", str(tau2_dir / "tasks.json"), "--db",
                   str(tau2_dir / "db.json"), "--store", str(bench_store), "--max-turns", "2",
                   env={"T2T_LOCAL_DEVICE": "cuda"}, cwd=tmp_path, timeout=TRAIN_TIMEOUT)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "no CUDA device" in lines[0], done.stderr
    if bench_store.exists():
        from trajectory2task.store import read_only_query

        assert read_only_query(bench_store, "SELECT count(*) FROM runs_status WHERE status = 'started'")[1] == [(0,)]


def test_a_run_whose_loss_turns_nan_fails_in_one_line_and_saves_nothing(workspace, tmp_path):
    """A base whose weights hold a NaN: the first loss is NaN, as after a learning rate that
    blew the weights up. The run must fail, not save a model and report a loss."""
    from safetensors.torch import load_file, save_file

    tiny, data = workspace
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in tiny.iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    weights = load_file(str(broken / "model.safetensors"))
    name = next(k for k in weights if "layers.0" in k and weights[k].dim() == 2)
    weights[name][0, 0] = float("nan")
    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
    out, store = tmp_path / "out", tmp_path / "t2t.duckdb"
    done = run_t2t(*finetune_args(broken, data, out, store, "--max-steps", "3"), cwd=tmp_path, timeout=TRAIN_TIMEOUT)
    assert done.returncode == 2, done.stderr
    line = one_error_line(done)
    assert "training diverged" in line and "nan" in line.lower(), line
    assert not out.exists() and leftovers(tmp_path) == []
    assert [status for _, status in run_status(store)] == ["failed"]


def test_ctrl_c_is_one_line_exit_130_recorded_interrupted_and_leaves_nothing(workspace, tmp_path):
    tiny, data = workspace
    out, store = tmp_path / "out", tmp_path / "t2t.duckdb"
    args = [sys.executable, "-m", "trajectory2task.cli", *finetune_args(tiny, data, out, store, "--max-steps", "100000")]
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", COLUMNS="200")
    with subprocess.Popen(args, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:  # wait until it is really training
            seen.append(line)
            if "step 2/" in line:
                break
        else:
            pytest.fail("training never started: " + "".join(seen))
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        code = proc.wait(timeout=120)
    assert code == 130, rest
    errors = [line for line in rest.splitlines() if not line.startswith("t2t finetune: ")]
    assert len(errors) == 1 and errors[0].startswith("t2t: error: interrupted"), rest
    assert "Traceback" not in rest
    assert not out.exists() and leftovers(tmp_path) == []
    assert [status for _, status in run_status(store)] == ["interrupted"]


def test_a_killed_run_is_cleaned_up_by_the_next_one_whose_output_follows_the_umask(workspace, tmp_path):
    tiny, data = workspace
    out, store = tmp_path / "out", tmp_path / "t2t.duckdb"
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", COLUMNS="200")
    args = [sys.executable, "-m", "trajectory2task.cli", *finetune_args(tiny, data, out, store, "--max-steps", "100000")]
    with subprocess.Popen(args, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "step 2/" in line:
                break
        proc.kill()  # SIGKILL: no handler runs, nothing is cleaned up
        proc.wait(timeout=60)
    killed_pid = proc.pid
    left = leftovers(tmp_path)
    assert len(left) == 1 and left[0].startswith(f".out{TEMP_MARK}{killed_pid}-"), left
    [(killed_run, status)] = run_status(store)
    assert status == "started"

    # a leftover of a process that is still running (this one) is named and kept
    alive = tmp_path / f".out{TEMP_MARK}{os.getpid()}-0-0"
    alive.mkdir()

    def umask_027() -> None:
        os.umask(0o027)

    done = subprocess.run([sys.executable, "-m", "trajectory2task.cli",
                           *finetune_args(tiny, data, out, store, "--max-steps", "1")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=TRAIN_TIMEOUT, preexec_fn=umask_027)
    assert done.returncode == 0, done.stderr
    assert f"run {killed_run} was left 'started' by process {killed_pid}, which is gone: marked abandoned" \
        in done.stderr
    assert f"removed {left[0]}" in done.stderr and f"kept {alive.name}" in done.stderr
    assert leftovers(tmp_path) == [alive.name]
    statuses = dict(run_status(store))
    assert statuses.pop(killed_run) == "abandoned" and list(statuses.values()) == ["finished"]
    # the output is the user's as a directory they made would be: umask 027 -> 0750, files 0640
    assert (out / "config.json").is_file()
    assert out.stat().st_mode & 0o777 == 0o750
    assert {p.stat().st_mode & 0o777 for p in out.iterdir() if p.is_file()} == {0o640}
    from trajectory2task.store import read_only_query

    [(config,)] = read_only_query(store, f"SELECT config FROM runs WHERE run_id = '{killed_run}'")[1]
    assert json.loads(config)["process"] == {"pid": killed_pid, "host": socket.gethostname()}


def test_an_output_the_disk_cannot_take_is_one_line_and_leaves_nothing(workspace, tmp_path):
    """A file size limit (RLIMIT_FSIZE) makes every write past it fail as a full disk does,
    in the same system call: the weights (well over the limit) cannot be written, while the
    store (well under it) can."""
    # a model whose weights file is ~16 MB: a wide feed-forward layer, cheap to train on four short examples
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    tiny, data = workspace
    config = AutoConfig.from_pretrained(str(tiny))
    config.intermediate_size = 10240
    wide = tmp_path / "wide"
    LlamaForCausalLM(config).save_pretrained(str(wide))
    AutoTokenizer.from_pretrained(str(tiny)).save_pretrained(str(wide))
    limit = 8 * 1024 * 1024
    assert (wide / "model.safetensors").stat().st_size > 1.5 * limit
    out, store = tmp_path / "out", tmp_path / "t2t.duckdb"

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", COLUMNS="200")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "trajectory2task.cli",
                           *finetune_args(wide, data, out, store, "--max-steps", "1")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=TRAIN_TIMEOUT, preexec_fn=small_files)
    assert done.returncode == 2, done.stderr
    line = one_error_line(done)
    assert f"--output {out}: could not write the model" in line and "too large" in line.lower(), line
    assert not out.exists() and leftovers(tmp_path) == []
    assert [status for _, status in run_status(store)] == ["failed"]
    assert time.monotonic() - started < TRAIN_TIMEOUT
