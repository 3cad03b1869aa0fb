"""Quiet third-party libraries at the source, narrowly (one message, one import or one call).

* diffusers logs "Cannot initialize model with low cpu memory usage because `accelerate` was not
  found ..." on every ``from_pretrained`` when accelerate is absent: :func:`diffusers_kwargs`
  passes ``low_cpu_mem_usage`` explicitly (what diffusers would fall back to anyway), so the
  notice is never logged.
* transformers and diffusers show "Loading weights" / "Loading pipeline components" progress
  bars while a pipeline loads: :func:`disable_progress_bars` turns them off (the command line
  does when stderr is not a terminal, or with ``--quiet``).
* linear_operator (imported by gpytorch / BoTorch) decorates two functions with
  ``torch.jit.script``, which torch >= 2.10 deprecates with a ``FutureWarning`` at import time:
  :func:`quiet_gp_imports` imports it with that one warning filtered; later imports are cached.
  :func:`install_import_hook` does the same lazily: the first ``import linear_operator``
  anywhere (``from botorch ...`` in a controller fit) runs with that one warning filtered,
  and nothing is imported before it is needed (the command line installs it at start).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

JIT_SCRIPT_DEPRECATED = r"`torch\.jit\.script` is deprecated"
GP_MODULES = ("linear_operator", "gpytorch", "botorch")

__all__ = [
    "diffusers_kwargs",
    "disable_progress_bars",
    "ignore_jit_script_deprecation",
    "install_import_hook",
    "quiet_gp_imports",
]


def diffusers_kwargs() -> dict[str, Any]:
    """Keyword arguments for diffusers' ``from_pretrained``: local files only, and
    ``low_cpu_mem_usage`` set to what is possible (True only with accelerate installed)."""
    return {
        "local_files_only": True,
        "low_cpu_mem_usage": importlib.util.find_spec("accelerate") is not None,
    }


def disable_progress_bars() -> None:
    """Turn off the loaders' progress bars of huggingface_hub, transformers and diffusers (a
    process-wide switch of each library; transformers imported later reads the hub's)."""
    from huggingface_hub.utils import disable_progress_bars as hub_off

    hub_off()
    for name in ("transformers.utils.logging", "diffusers.utils.logging"):
        module = sys.modules.get(name)
        if module is None and name.startswith("diffusers"):
            module = importlib.import_module(name)  # diffusers does not read the hub's switch
        if module is not None:
            module.disable_progress_bar()


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


class _QuietLoader(importlib.abc.Loader):
    """Runs another loader's module with the ``torch.jit.script`` deprecation filtered."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with ignore_jit_script_deprecation():
            self.loader.exec_module(module)

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package, ...
        return getattr(self.loader, name)


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Finds ``linear_operator`` through the other finders and wraps its loader."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != GP_MODULES[0]:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _QuietLoader(spec.loader)
                return spec
        return None


def install_import_hook() -> None:
    """Make the first import of ``linear_operator`` (gpytorch / BoTorch) quiet (idempotent;
    a no-op once it is imported)."""
    if GP_MODULES[0] in sys.modules:
        return
    if not any(isinstance(f, _QuietFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietFinder())
