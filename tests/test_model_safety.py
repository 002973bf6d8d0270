"""Model directories a user downloaded are data, never code: no `auto_map` code runs, nothing is
downloaded, and `finetune --output` never replaces what it trains from (issue: hostile input)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli import run_t2t

pytest.importorskip("transformers", reason="the train extra is not installed (pip install -e '.[train]')")
pytest.importorskip("peft", reason="the train extra is not installed (pip install -e '.[train]')")

from tests.tiny_model import tiny_model  # noqa: E402

SFT_LINE = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})


def _evil_dir(root: Path, marker: Path) -> Path:
    """A model directory whose config maps to its own Python code; running it creates ``marker``."""
    evil = root / "evil"
    evil.mkdir()
    (evil / "config.json").write_text(json.dumps({
        "model_type": "t2t_evil_unknown", "architectures": ["EvilModel"],
        "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}}))
    (evil / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    return evil


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("safety") / "tiny", [SFT_LINE] * 4)


def _one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and lines[0].startswith("t2t: error:"), result.stderr
    return lines[0]


def test_finetune_refuses_a_model_directory_with_its_own_code_even_when_told_yes(tmp_path):
    marker = tmp_path / "ran.txt"
    evil = _evil_dir(tmp_path, marker)
    data = tmp_path / "sft.jsonl"
    data.write_text(SFT_LINE + "\n")
    out = tmp_path / "out"
    import subprocess
    import sys

    from tests.cli import REPO

    result = subprocess.run([sys.executable, "-m", "trajectory2task.cli", "finetune", "--base", str(evil), "--data", str(data),
                             "--output", str(out), "--store", str(tmp_path / "s.duckdb")],
                            input="y\n" * 20, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert "never runs code" in _one_error_line(result)
    assert not marker.exists() and not out.exists()
    assert not (tmp_path / "s.duckdb").exists()  # refused before anything was recorded


def test_bench_with_a_local_model_that_needs_its_own_code_fails_in_one_line_and_keeps_stdout_clean(tmp_path):
    marker = tmp_path / "ran.txt"
    evil = _evil_dir(tmp_path, marker)
    store = tmp_path / "t2t.duckdb"
    assert run_t2t("generate", "--n", "1", "--conditions", "general", "--store", str(store)).returncode == 0
    result = run_t2t("bench", "--agent-lm", f"local/{evil}", "--store", str(store), "--json", timeout=300)
    assert "never runs code" in _one_error_line(result)
    assert result.stdout == "" and not marker.exists()


def test_loading_with_trust_remote_code_off_even_without_auto_map_in_the_config(tiny, tmp_path):
    # a tokenizer config with auto_map is refused as well (the tokenizer class would run code too)
    from trajectory2task.programs.lm.local import ModelLoadError, load_tokenizer_and_model

    import shutil

    copy = tmp_path / "tok-evil"
    shutil.copytree(tiny, copy)
    config = json.loads((copy / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": ["evil.Tok", None]}
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="never runs code"):
        load_tokenizer_and_model(copy)


def test_finetune_output_never_replaces_the_base_or_the_data(tiny, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data = data_dir / "x.jsonl"
    data.write_text(SFT_LINE + "\n")
    weights = sorted(p.name for p in tiny.iterdir())
    same = run_t2t("finetune", "--base", str(tiny), "--data", str(data), "--output", str(tiny), "--force",
                   "--store", str(tmp_path / "s.duckdb"))
    assert "would replace --base" in _one_error_line(same)
    assert sorted(p.name for p in tiny.iterdir()) == weights
    over_data = run_t2t("finetune", "--base", str(tiny), "--data", str(data), "--output", str(data_dir), "--force",
                        "--store", str(tmp_path / "s.duckdb"))
    assert "would replace --data" in _one_error_line(over_data)
    assert data.read_text() == SFT_LINE + "\n"
    inside = run_t2t("finetune", "--base", str(tiny), "--data", str(data), "--output", str(tiny / "sub"),
                     "--store", str(tmp_path / "s.duckdb"))
    assert "inside --base" in _one_error_line(inside)
    assert not (tmp_path / "s.duckdb").exists()


def _adapter_dir(root: Path, base: str) -> Path:
    adapter = root / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "peft_type": "LORA"}))
    return adapter


def test_an_adapter_that_names_itself_as_base_is_one_error_not_a_recursion(tmp_path):
    from trajectory2task.programs.lm.local import ModelLoadError, load_tokenizer_and_model

    adapter = tmp_path / "adapter"
    _adapter_dir(tmp_path, str(adapter))
    with pytest.raises(ModelLoadError, match="own base|loops"):
        load_tokenizer_and_model(adapter)


def test_an_adapter_whose_base_is_a_hub_id_is_refused_without_contacting_the_hub(tmp_path, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    from trajectory2task.programs.lm.local import ModelLoadError, load_tokenizer_and_model

    adapter = _adapter_dir(tmp_path, "HuggingFaceTB/SmolLM2-135M-Instruct")
    with pytest.raises(ModelLoadError, match="downloads nothing"):
        load_tokenizer_and_model(adapter)


def test_a_pickle_checkpoint_is_not_unpickled(tiny, tmp_path):
    # only safetensors weights load: a pytorch_model.bin can run code when unpickled
    import shutil

    from trajectory2task.programs.lm.local import ModelLoadError, load_tokenizer_and_model

    copy = tmp_path / "pickled"
    shutil.copytree(tiny, copy)
    (copy / "model.safetensors").unlink()
    (copy / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ModelLoadError, match="cannot load the model"):
        load_tokenizer_and_model(copy)


def test_a_text_file_named_gguf_and_an_empty_config_are_one_error_each(tmp_path):
    from trajectory2task.programs.lm.local import ModelLoadError, load_tokenizer_and_model

    fake = tmp_path / "model.gguf"
    fake.write_text("not a gguf file")
    with pytest.raises(ModelLoadError):
        load_tokenizer_and_model(fake)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError):
        load_tokenizer_and_model(empty)
