"""Flows named on the command line as ``package.module:attribute``."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from objstore_wfp.errors import InvalidArgumentError
from objstore_wfp.runtime import Flow


def load_flows(specs: list[str]) -> list[Flow]:
    """Import ``package.module:attribute`` specs; the attribute is a Flow or a list of Flows.
    The current directory is importable, as with ``python -m``, so project modules are found.

    Raises :class:`InvalidArgumentError` naming the spec when it is malformed, the module cannot
    be imported (or raises while importing), the attribute does not exist or holds no Flow.
    """
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    flows: list[Flow] = []
    for spec in specs:
        module_name, sep, attribute = spec.partition(":")
        if not sep or not module_name or not attribute:
            raise InvalidArgumentError(f"--flow must look like package.module:attribute, got {spec!r}")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise InvalidArgumentError(f"--flow {spec}: cannot import {module_name!r}: {exc}") from None
        except Exception as exc:
            # The user's module failed at import time: its error, not ours.
            raise InvalidArgumentError(
                f"--flow {spec}: importing {module_name!r} raised {type(exc).__name__}: {exc}"
            ) from None
        if not hasattr(module, attribute):
            known = sorted(name for name, value in vars(module).items() if isinstance(value, Flow))
            raise InvalidArgumentError(
                f"--flow {spec}: module {module_name!r} has no attribute {attribute!r}"
                + (f" (its flows: {', '.join(known)})" if known else "")
            )
        value = getattr(module, attribute)
        found: list[Any] = list(value) if isinstance(value, (list, tuple)) else [value]
        if not found or not all(isinstance(f, Flow) for f in found):
            raise InvalidArgumentError(
                f"--flow {spec}: {attribute!r} is a {type(value).__name__}, not a Flow or a list of Flows"
            )
        flows.extend(f for f in found if isinstance(f, Flow))
    return flows
