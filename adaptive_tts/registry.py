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
import math
import numbers
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
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
    "OPTION_RULES",
    "RESERVED",
    "OptionRule",
    "check_method_options",
    "check_option_value",
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


@dataclass(frozen=True)
class OptionRule:
    """The type and inclusive range of a method option (``many``: a non-empty sequence of
    such values). The upper bounds keep memory and run time sane; a method checks more."""

    kind: type
    lo: float
    hi: float
    many: bool = False

    @property
    def allowed(self) -> str:
        what = "an integer" if self.kind is int else "a finite number"
        hi = f"{self.hi:g}" if self.kind is float else str(int(self.hi))
        lo = f"{self.lo:g}" if self.kind is float else str(int(self.lo))
        one = f"{what} in [{lo}, {hi}]"
        return (
            f"a non-empty list of {one.removeprefix('an ').removeprefix('a ')}s"
            if self.many
            else one
        )

    def ok(self, value: Any) -> bool:
        if self.many:
            return (
                isinstance(value, (list, tuple))
                and len(value) > 0
                and all(OptionRule(self.kind, self.lo, self.hi).ok(v) for v in value)
            )
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.kind is int and not isinstance(value, numbers.Integral):
            return False
        return math.isfinite(float(value)) and self.lo <= float(value) <= self.hi


OPTION_RULES: dict[str, OptionRule] = {
    "n": OptionRule(int, 1, 4096),
    "k": OptionRule(int, 0, 10_000),
    "eps": OptionRule(float, 0.0, 1.0),
    "lam": OptionRule(float, 0.0, 1e6),
    "width": OptionRule(int, 1, 4096),
    "sims": OptionRule(int, 1, 10_000),
    "k_global": OptionRule(int, 1, 4096),
    "k_local": OptionRule(int, 0, 4096),
    "elites": OptionRule(int, 1, 4096),
    "beta": OptionRule(float, 0.0, 1.0),
    "tournament": OptionRule(int, 1, 4096),
    "population": OptionRule(int, 1, 4096, many=True),
    "schedule": OptionRule(int, 0, 10_000, many=True),
    "max_batch": OptionRule(int, 1, 2**24),
    "budget": OptionRule(int, 0, 10**9),
    "children": OptionRule(int, 1, 4096),
    "max_tries": OptionRule(int, 1, 10_000),
    "every": OptionRule(int, 1, 10_000),
    "t_start": OptionRule(int, 0, 10_000),
    "ess_frac": OptionRule(float, 0.0, 1.0),
    "c": OptionRule(float, 0.0, 1e6),
}
"""Types and ranges of the common method options (checked by :func:`check_method_options`;
an option without a rule is checked against a ``Literal`` annotation when it has one)."""

RESERVED = ("denoiser", "sampler", "x_T", "cond", "reward", "generator")
"""Arguments a runner passes to a search method itself; an option may not set them."""


def check_option_value(
    name: str, key: str, value: Any, fn: Callable[..., Any] | None = None
) -> None:
    """Raise ``ValueError`` ``"<name>=<value> is invalid, allowed: ..."`` if ``value`` breaks
    the rule of option ``key`` (:data:`OPTION_RULES`, else ``fn``'s ``Literal`` annotation)."""
    rule = OPTION_RULES.get(key)
    if rule is not None:
        if value is not None and not rule.ok(value):
            raise ValueError(f"{name}={value!r} is invalid, allowed: {rule.allowed}")
        return
    if fn is None:
        return
    try:
        hint = typing.get_type_hints(fn).get(key)
    except Exception:  # an annotation that does not resolve: the method checks it
        return
    if typing.get_origin(hint) is typing.Literal and value not in typing.get_args(hint):
        choices = ", ".join(repr(a) for a in typing.get_args(hint))
        raise ValueError(f"{name}={value!r} is invalid, allowed: one of {choices}")


def check_method_options(
    method: str, options: Mapping[str, Any], names: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The options of search method ``method`` with ``None`` values dropped, checked: a name
    the method does not take (or one in :data:`RESERVED`) is a ``TypeError`` naming the option
    and the method; a value of the wrong type or range is a ``ValueError``. ``names`` maps an
    option to the name shown in messages (a command-line flag, a config key path)."""
    fn = METHODS[method]
    kw = {k: v for k, v in options.items() if v is not None}
    show = dict(names or {})
    for key in kw:
        if key in RESERVED:
            raise TypeError(
                f"option {show.get(key, key)!r} of search method {method!r} is set by the runner"
            )
    allowed = accepted_options(fn, exclude=RESERVED)
    for key in kw:
        if allowed is not None and key not in allowed:
            raise TypeError(
                f"search method {method!r} takes no option {show.get(key, key)!r}; "
                f"its options: {', '.join(show.get(a, a) for a in allowed)}"
            )
    for key, value in kw.items():
        check_option_value(show.get(key, key), key, value, fn)
    return kw


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
