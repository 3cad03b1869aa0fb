"""Name -> object registries with strict names and options (BoTorch-style decorator registries).

A :class:`Registry` refuses a duplicate name and answers an unknown one with an error listing the
registered names; :func:`check_options` refuses an option a callable does not take (a
``TypeError`` naming the option and the thing it was meant for). The core registries live here:

* :data:`METHODS`: search methods, ``method(denoiser, sampler, x_T, *, cond, reward, generator,
  ...) -> SearchResult`` (seeded from :data:`adaptive_tts.search.METHODS`);
* :data:`SAMPLERS`: sampler factories by name, ``factory(steps, sigma_max=..., **kw) -> Sampler``;
* rebuilding a sampler from its saved description: :func:`sampler_from_description` (DDIM
  included; a new sampler class is made rebuildable by :func:`register_sampler`), both from
  :mod:`adaptive_tts.sampling`.

Models, rewards and tasks are registered in :mod:`adaptive_tts.tasks`; controller kinds in
:mod:`controllers.registry`. Adding one is one call::

    from adaptive_tts.registry import METHODS

    @METHODS.register("my-method")
    def my_method(denoiser, sampler, x_T, *, cond, reward, generator=None, n=4): ...
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar, overload

from adaptive_tts.sampling import (
    Sampler,
    make_sampler,
    register_sampler,
    sampler_from_description,
)
from adaptive_tts.types import SearchResult

T = TypeVar("T")

__all__ = [
    "METHODS",
    "SAMPLERS",
    "Registry",
    "UnknownNameError",
    "check_options",
    "register_sampler",
    "sampler_from_description",
]


class UnknownNameError(ValueError, KeyError):
    """A name that is not registered (a ``ValueError`` and a ``KeyError``)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry(Mapping[str, T], Generic[T]):
    """Names -> objects of one kind (``what``: "search method", "model", ...).

    Reads like a read-only mapping (``name in reg``, ``sorted(reg)``, ``reg[name]``); grows only
    through :meth:`register`, which refuses duplicates. ``builtins``, when given, is called on
    first use for the built-in entries (so that importing a registry imports nothing heavy and
    modules it lists may themselves import this one).
    """

    def __init__(
        self,
        what: str,
        items: Mapping[str, T] | None = None,
        builtins: Callable[[], Mapping[str, T]] | None = None,
    ) -> None:
        self.what = what
        self._items: dict[str, T] = {}
        self._builtins = builtins
        for name, obj in (items or {}).items():
            self.register(name, obj)

    def _load(self) -> dict[str, T]:
        if self._builtins is not None:
            load, self._builtins = self._builtins, None
            for name, obj in load().items():
                self.register(name, obj)
        return self._items

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T) -> T: ...

    def register(self, name: str, obj: Any = None) -> Any:
        """Register ``obj`` under ``name``; without ``obj``, a decorator that registers what it
        decorates. A name registered already is a ``ValueError``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.what} name must be a non-empty string, got {name!r}")

        def add(o: T) -> T:
            if name in self._load():
                raise ValueError(f"{self.what} {name!r} is already registered")
            self._items[name] = o
            return o

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> T:
        """Remove and return ``name`` (for tests and plugins that replace an entry)."""
        self.get_or_raise(name)
        return self._load().pop(name)

    def get_or_raise(self, name: str) -> T:
        """The object registered as ``name``; an unknown name lists the registered ones."""
        items = self._load()
        if name not in items:
            raise UnknownNameError(
                f"unknown {self.what} {name!r}; registered: {', '.join(sorted(items))}"
            )
        return items[name]

    def __getitem__(self, name: str) -> T:
        return self.get_or_raise(name)

    def __contains__(self, name: object) -> bool:
        return name in self._load()

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {sorted(self._load())})"


def accepted_options(
    fn: Callable[..., Any], skip: int = 0, exclude: tuple[str, ...] = ()
) -> list[str] | None:
    """Keyword options ``fn`` takes after its first ``skip`` parameters, less ``exclude``
    (``None``: any, it has ``**kwargs``)."""
    params = list(inspect.signature(fn).parameters.values())[skip:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    ok = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in ok and p.name not in exclude]


def check_options(
    what: str,
    name: str,
    fn: Callable[..., Any],
    options: Mapping[str, Any],
    skip: int = 0,
    exclude: tuple[str, ...] = (),
) -> None:
    """Raise ``TypeError`` naming the first option in ``options`` that ``fn`` does not take
    (after its first ``skip`` parameters; names in ``exclude`` are not options)."""
    allowed = accepted_options(fn, skip, exclude)
    if allowed is None:
        return
    for key in options:
        if key not in allowed:
            raise TypeError(
                f"{what} {name!r} takes no option {key!r}; its options: {', '.join(allowed)}"
            )


def _builtin_methods() -> Mapping[str, Callable[..., SearchResult]]:
    from adaptive_tts.search import METHODS as builtin

    return builtin


METHODS: Registry[Callable[..., SearchResult]] = Registry(
    "search method", builtins=_builtin_methods
)
"""Search methods by name (the built-in ones of :mod:`adaptive_tts.search`, plus plug-ins)."""

SAMPLERS: Registry[Callable[..., Sampler]] = Registry("sampler")
"""Sampler factories by name: ``factory(steps, sigma_max=80.0, **kw) -> Sampler``."""

for _name in ("heun", "euler", "ancestral"):
    SAMPLERS.register(
        _name,
        lambda steps, _n=_name, **kw: make_sampler(_n, steps, **kw),  # type: ignore[misc]
    )
