"""The package as a new user meets it: metadata, the extras the README lists, the conformance kit
without the test toolchain."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def project() -> dict[str, Any]:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    doc: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return doc["project"]


def test_license_is_an_spdx_expression_with_its_text(project: dict[str, Any]) -> None:
    assert project["license"] == "Apache-2.0"
    [license_file] = project["license-files"]
    text = (ROOT / license_file).read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert not any(c.startswith("License ::") for c in project["classifiers"])  # PEP 639 forbids both


def test_classifiers_name_every_supported_python(project: dict[str, Any]) -> None:
    low, high = re.fullmatch(r">=3\.(\d+),<3\.(\d+)", project["requires-python"]).groups()
    versions = {f"Programming Language :: Python :: 3.{minor}" for minor in range(int(low), int(high))}
    assert versions <= set(project["classifiers"])
    assert {"Homepage", "Changelog", "Issues"} <= set(project["urls"])
    assert (ROOT / "CHANGELOG.md").read_text().startswith("# Changelog")


def test_the_readme_install_table_lists_every_extra(project: dict[str, Any]) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Install\n", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([a-z0-9]+)` \|", section, re.MULTILINE))
    assert listed == set(project["optional-dependencies"])
    assert "objstore-wfp[conformance]" in project["optional-dependencies"]["test"]


def test_the_conformance_kit_without_pytest_names_its_extra() -> None:
    code = "import sys; sys.modules['pytest'] = None; import objstore_wfp.testing"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "ImportError: objstore_wfp.testing needs pytest: pip install 'objstore-wfp[conformance]'"
    )
