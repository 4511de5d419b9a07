"""docs/langgraph.md's example runs as written: a graph on s3:// (moto_server) killed in the
middle, then resumed to the end by another process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers.s3 import REGION, S3Endpoint

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "langgraph.md"


def _example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.DOTALL)
    [resume] = [b for b in blocks if "def crunch" in b]
    return resume


@pytest.mark.slow
def test_guide_example_resumes_after_a_kill(moto_s3: S3Endpoint, tmp_path: Path) -> None:
    script = tmp_path / "resume.py"
    script.write_text(_example(), encoding="utf-8")
    url = f"s3://{moto_s3.create_bucket('guide')}/agents"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "AWS_ENDPOINT_URL": moto_s3.url,
        "AWS_ACCESS_KEY_ID": moto_s3.key,
        "AWS_SECRET_ACCESS_KEY": moto_s3.secret,
        "AWS_DEFAULT_REGION": REGION,
    }

    def run(crash: bool) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(script), url],
            env={**env, "CRASH": "1" if crash else "0"},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    killed = run(crash=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = run(crash=False)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.splitlines() == [
        "resuming before ('crunch',) with {'steps': ['fetched']}",
        "['fetched', 'crunched', 'reported']",
    ]
