"""The Python examples in the README run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    # Blocks that import a user's own package are templates, not runnable examples.
    return [b for b in BLOCK.findall(text) if "my_package" not in b]


@pytest.mark.parametrize("code", _blocks(), ids=lambda c: c.splitlines()[0][:40])
def test_readme_example_runs(code: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
