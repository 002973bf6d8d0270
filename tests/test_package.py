"""One installed package, `trajectory2task`: its public names resolve, and nothing generic
(`domains`, `store`, `programs`, ...) is importable from outside the repository."""

from __future__ import annotations

import subprocess
import sys


def _python(code: str, cwd) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_every_public_name_resolves_from_outside_the_repository(tmp_path):
    result = _python("import trajectory2task as t\n"
                     "missing = [n for n in t.__all__ if getattr(t, n, None) is None]\n"
                     "assert not missing, missing\n"
                     "print(len(t.__all__))", tmp_path)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 20


def test_no_generic_top_level_package_is_installed(tmp_path):
    # a user's own store.py or programs/ must not be shadowed by ours (nor shadow ours)
    (tmp_path / "store.py").write_text("MINE = True\n")
    code = ("import importlib.util, store\n"
            "assert store.MINE\n"
            "for name in ('domains', 'signatures', 'programs', 'optimize', 't2t'):\n"
            "    assert importlib.util.find_spec(name) is None, name\n"
            "from trajectory2task.store import TaskStore\n"
            "print('ok')")
    result = _python(code, tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_importing_the_package_imports_no_lm_or_store_library(tmp_path):
    result = _python("import sys, trajectory2task\n"
                     "print(sorted(m for m in ('dspy', 'litellm', 'duckdb', 'torch') if m in sys.modules))", tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "[]", (result.stdout, result.stderr)
