"""The complete Python examples in docs/runtime.md run as written and print what they say."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "runtime.md"
# Complete programs end by running their main(); the other blocks show signatures.
BLOCKS = [
    b
    for b in re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    if "asyncio.run(main())" in b
]


def test_the_doc_has_examples() -> None:
    assert BLOCKS


@pytest.mark.parametrize("code", BLOCKS, ids=lambda c: c.splitlines()[0][:40])
def test_runtime_doc_example_runs(code: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    for promised in re.findall(r"print\(.*\)  # (.+)", code):
        assert promised in done.stdout
