"""Quiet third-party libraries at the source, narrowly (one message, one import or one call).

* diffusers logs "Cannot initialize model with low cpu memory usage because `accelerate` was not
  found ..." on every ``from_pretrained`` when accelerate is absent: :func:`diffusers_kwargs`
  passes ``low_cpu_mem_usage`` explicitly (what diffusers would fall back to anyway), so the
  notice is never logged.
* linear_operator (imported by gpytorch / BoTorch) decorates two functions with
  ``torch.jit.script``, which torch >= 2.10 deprecates with a ``FutureWarning`` at import time:
  :func:`quiet_gp_imports` imports it with that one warning filtered; later imports are cached.
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

JIT_SCRIPT_DEPRECATED = r"`torch\.jit\.script` is deprecated"
GP_MODULES = ("linear_operator", "gpytorch", "botorch")

__all__ = ["diffusers_kwargs", "ignore_jit_script_deprecation", "quiet_gp_imports"]


def diffusers_kwargs() -> dict[str, Any]:
    """Keyword arguments for diffusers' ``from_pretrained``: local files only, and
    ``low_cpu_mem_usage`` set to what is possible (True only with accelerate installed)."""
    return {
        "local_files_only": True,
        "low_cpu_mem_usage": importlib.util.find_spec("accelerate") is not None,
    }


@contextmanager
def ignore_jit_script_deprecation() -> Iterator[None]:
    """Within the block, drop torch's "`torch.jit.script` is deprecated" FutureWarning only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=JIT_SCRIPT_DEPRECATED, category=FutureWarning)
        yield


def quiet_gp_imports(modules: tuple[str, ...] = GP_MODULES) -> None:
    """Import the GP stack (``linear_operator``, ``gpytorch``, ``botorch``) without the
    ``torch.jit.script`` deprecation warning; a module that is not installed is skipped (the
    caller's own import then raises as usual). Call before ``from botorch ... import``."""
    with ignore_jit_script_deprecation():
        for name in modules:
            if importlib.util.find_spec(name) is not None:
                importlib.import_module(name)
