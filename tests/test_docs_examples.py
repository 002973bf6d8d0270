"""Every Python example in the README and docs/ runs, as written, in a fresh interpreter."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _examples() -> list[tuple[str, str]]:
    found = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for number, match in enumerate(_BLOCK.finditer(page.read_text(encoding="utf-8")), 1):
            found.append((f"{page.relative_to(REPO)}#{number}", match.group(1)))
    return found


def test_the_readme_has_python_examples():
    assert sum(1 for name, _ in _examples() if name.startswith("README")) >= 2


@pytest.mark.parametrize("name,code", _examples(), ids=[name for name, _ in _examples()])
def test_example_runs(name, code, tmp_path):
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{name} failed:\n{result.stderr[-3000:]}"
