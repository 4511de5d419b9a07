"""Tests of the example backends in ``examples/`` (not part of the installed package).

Importing this package puts ``examples/`` on ``sys.path``, so tests (and the processes the
claim race spawns, which import :mod:`tests.examples.claim_race`) can import
``redis_backend`` and ``postgres_backend``.
"""

import sys
from pathlib import Path

EXAMPLES_DIR = str(Path(__file__).resolve().parents[2] / "examples")
if EXAMPLES_DIR not in sys.path:
    sys.path.insert(0, EXAMPLES_DIR)
