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


DOCS = sorted(
    [
        ROOT / "README.md",
        ROOT / "CHANGELOG.md",
        *(ROOT / "docs").glob("*.md"),
        *(ROOT / "examples").rglob("*.md"),
        *(ROOT / "benchmarks").glob("*.md"),
    ]
)
#: Markdown links and code spans that name a file of this repository.
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
PATH = re.compile(r"`((?:objstore_wfp|docs|tests|examples|benchmarks|scripts)/[\w./-]+)`")
#: Dotted public names in code spans: ``objstore_wfp.x.y`` (a module, or an attribute of one).
NAME = re.compile(r"`(objstore_wfp(?:\.\w+)+)`")


def _targets(doc: Path) -> list[tuple[str, Path]]:
    text = doc.read_text(encoding="utf-8")
    found = [
        (m, doc.parent / m) for m in LINK.findall(text) if "://" not in m and not m.startswith("mailto:")
    ]
    found += [(m, ROOT / m) for m in PATH.findall(text)]
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_path_a_doc_names_exists(doc: Path) -> None:
    missing = [name for name, path in _targets(doc) if not path.resolve().exists()]
    assert not missing, f"{doc.relative_to(ROOT)} names files that do not exist: {missing}"


def _resolves(dotted: str) -> bool:
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(target, attribute):
                return False
            target = getattr(target, attribute)
        return True
    return False


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_public_name_a_doc_names_exists(doc: Path) -> None:
    names = sorted(set(NAME.findall(doc.read_text(encoding="utf-8"))))
    missing = [n for n in names if not _resolves(n)]
    assert not missing, f"{doc.relative_to(ROOT)} names what the package does not have: {missing}"


def test_every_doc_the_code_points_to_exists() -> None:
    mentions = {
        (source.relative_to(ROOT), name)
        for source in sorted((ROOT / "objstore_wfp").rglob("*.py"))
        for name in re.findall(r"\b(docs/[\w.-]+\.md)\b", source.read_text(encoding="utf-8"))
    }
    missing = sorted(f"{source}: {name}" for source, name in mentions if not (ROOT / name).exists())
    assert not missing, f"the code points to docs that do not exist: {missing}"
