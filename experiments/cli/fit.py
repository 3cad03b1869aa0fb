"""``adaptive-tts fit``: fit a controller kind on calibration traces; write its JSON.

Each kind takes its own options (:data:`FIT_FLAGS` maps them to flags; the kind's registered
option list, :meth:`~controllers.registry.ControllerKind.accepted`, says which): a flag the
kind does not use (``--budget`` with ``gain``) is an error, never ignored. Values are checked
before the traces are read (finite, in range: ``--budget nan|inf|-5`` is refused) and again
against the traces (``--budget`` at least plain sampling's calls, ``--k-mean`` at most the
calibration's K). ``--settings HASH`` picks one settings group of a directory whose traces
mix settings (without it, the refusal lists the hashes found). The plot is drawn and written
before the controller is committed: a failing plot leaves neither and exits with code 2; a
failing save removes the plot again. Files are written through unique temp names, so
concurrent fits to one ``--out`` never clobber each other's half-written file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from experiments.cli.common import check_out_file
from experiments.cli.errors import UsageError, usage

FIT_FLAGS = {
    "mapping": "--mapping",
    "kernel": "--kernel",
    "budget": "--budget",
    "k_mean": "--k-mean",
    "target": "--target",
    "reference": "--reference",
}
"""Option of a kind's fit -> the flag that sets it."""
REQUIRED = {"budget": ("budget",)}
"""Options a kind cannot fit without."""
PLOT_SUFFIXES = (".png", ".pdf", ".svg")


def add_fit(sub: argparse._SubParsersAction) -> None:
    from controllers.registry import CONTROLLERS

    fitted = sorted(k for k, v in CONTROLLERS.items() if v.fitted)
    p = sub.add_parser("fit", help="fit a controller on calibration traces; write schedule JSON")
    p.add_argument("--controller", choices=fitted, required=True)
    p.add_argument("--traces", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="controller JSON (.json)")
    p.add_argument(
        "--settings",
        default=None,
        metavar="HASH",
        help="fit only the traces of this settings hash (a directory mixing settings)",
    )
    p.add_argument("--mapping", choices=["eps", "ceil", "draw", "improve"], default=None)
    p.add_argument("--kernel", choices=["warp", "rbf"], default=None, help="gp (default warp)")
    p.add_argument(
        "--budget", type=float, default=None, help="budget/stopping: NFEs per sample, > 0"
    )
    p.add_argument(
        "--k-mean", type=float, default=None, help="gain/budget: target mean K_t, in (0, K]"
    )
    p.add_argument(
        "--target",
        type=float,
        default=None,
        help="stopping: share of the full search's gain over plain sampling to hold, (0, 1]",
    )
    p.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="stopping: traces of the full search (eps-greedy(4,20)) on the same pairs",
    )
    p.add_argument(
        "--option",
        dest="options",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="any other option of the kind's fit (value parsed as YAML)",
    )
    p.add_argument("--plot", type=Path, default=None, help="figure of the statistics and the fit")


def _finite(option: str, value: Any) -> None:
    """Every number in ``value`` (lists and mappings included) must be finite."""
    if isinstance(value, float) and not math.isfinite(value):
        raise usage(option, value, "finite numbers (no NaN or infinity)")
    if isinstance(value, dict):
        for v in value.values():
            _finite(option, v)
    elif isinstance(value, list):
        for v in value:
            _finite(option, v)


def check_fit_args(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """Every option checked before the traces are read: returns the kind's options (the
    ``--reference`` directory unread) and the flag each came from."""
    from controllers.registry import CONTROLLERS
    from experiments.cli.calibrate import check_positive
    from experiments.cli.sample import _extra_options

    kind = args.controller
    accepted = CONTROLLERS[kind].accepted()
    given = {key: getattr(args, key) for key in FIT_FLAGS if getattr(args, key, None) is not None}
    uses = [FIT_FLAGS[k] for k in FIT_FLAGS if accepted is None or k in accepted]
    for key in given:
        if accepted is not None and key not in accepted:
            raise UsageError(
                f"{FIT_FLAGS[key]} is not an option of --controller {kind}",
                None,
                f"its options: {', '.join([*uses, '--option KEY=VALUE'])}",
            )
    names = dict(FIT_FLAGS)
    opts: dict[str, Any] = dict(given)
    _extra_options(args.options, opts, names)
    for key, value in opts.items():
        if names[key].startswith("--option"):
            if accepted is not None and key not in accepted:
                raise UsageError(
                    f"--option {key} is not an option of --controller {kind}",
                    None,
                    f"its options: {', '.join(accepted)}",
                )
            _finite(names[key], value)
    for key in REQUIRED.get(kind, ()):
        if key not in opts:
            raise UsageError(f"--controller {kind} needs {FIT_FLAGS[key]}")
    if args.budget is not None:
        check_positive("--budget", args.budget)
    if args.k_mean is not None:
        check_positive("--k-mean", args.k_mean)
    if args.target is not None:
        check_positive("--target", args.target, 1.0)
    for flag, path in (("--traces", args.traces), ("--reference", args.reference)):
        if path is not None and not path.is_dir():
            raise UsageError(f"{flag} {path}: no such calibration directory")
    if args.settings is not None and not re.fullmatch(r"[0-9a-f]{16}", args.settings):
        raise usage("--settings", args.settings, "a settings hash (16 hex digits)")
    check_out_file(args.out, "--out", (".json",))
    if args.plot is not None:
        if CONTROLLERS[kind].plot is None:
            raise UsageError(f"--plot: --controller {kind} has no plot")
        check_out_file(args.plot, "--plot", PLOT_SUFFIXES)
        if args.plot.resolve() == args.out.resolve():
            raise UsageError("--plot and --out name the same file")
    return opts, names


def check_against_traces(opts: dict[str, Any], traces: list[dict[str, Any]], sampler: Any) -> None:
    """``--budget`` covers plain sampling; ``--k-mean`` at most the calibration's K."""
    from adaptive_tts.traces import run_k
    from controllers.budget import plain_cost

    if opts.get("budget") is not None:
        need = sum(plain_cost(sampler))
        if opts["budget"] < need:
            raise usage(
                "--budget", opts["budget"], f"a number >= {need} (plain sampling's NFEs per sample)"
            )
    if opts.get("k_mean") is not None:
        k_cal = max(int(run_k(t) or 0) for t in traces)
        if opts["k_mean"] > k_cal:
            raise usage("--k-mean", opts["k_mean"], f"a number in (0, {k_cal}] (the traces' K)")


def cmd_fit(args: argparse.Namespace) -> int:
    from adaptive_tts.registry import sampler_from_description
    from controllers.fitting import fit_controller
    from controllers.registry import CONTROLLERS

    opts, names = check_fit_args(args)
    traces = _load_calibration(args.traces, "--traces", args.settings)
    if "reference" in opts:
        opts["reference"] = _load_calibration(opts["reference"], "--reference")
    sampler = sampler_from_description(traces[0]["sampler"])
    check_against_traces(opts, traces, sampler)
    try:
        ctrl = fit_controller(args.controller, traces, sampler=sampler, **opts)
    except TypeError as err:  # an option the kind does not take (a plug-in's own check)
        raise UsageError(f"--controller {args.controller}: {err}") from err
    except ValueError as err:  # a fit's own range check: name the flag that set the value
        flag = next((names[k] for k in opts if re.match(rf"{k}\b", str(err))), None)
        if flag is None:
            raise
        raise UsageError(f"{flag}: {err}") from err
    plot = CONTROLLERS[args.controller].plot
    if args.plot is not None and plot is not None:
        _write_plot(plot, ctrl, traces, args.plot)
    try:
        ctrl.save(args.out)
    except BaseException as err:
        if args.plot is not None:
            args.plot.unlink(missing_ok=True)  # no figure of a controller that was not saved
        if isinstance(err, OSError):  # e.g. a full disk: the unique temp file is gone too
            raise UsageError(
                f"--out {args.out}: writing failed ({err}); nothing was written"
            ) from err
        raise
    base: Any = getattr(ctrl, "base", ctrl)
    if not hasattr(base, "steps"):  # closed loop: thresholds over sigma, not a step table
        print(json.dumps({"controller": args.controller, "out": str(args.out), **ctrl.summary()}))
        return 0
    print(
        json.dumps(
            {
                "controller": base.kind,
                "out": str(args.out),
                "k": [s["k"] for s in base.steps],
                "eps": [round(s["eps"], 3) for s in base.steps],
            }
        )
    )
    return 0


def _write_plot(plot: Any, ctrl: Any, traces: list[dict[str, Any]], path: Path) -> None:
    """Draw into a unique temp file beside ``path``, then rename it; a failure leaves
    nothing and is a :class:`UsageError` naming ``--plot``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        plot(ctrl, traces, str(tmp))
        os.replace(tmp, path)
    except Exception as err:
        tmp.unlink(missing_ok=True)
        raise UsageError(
            f"--plot {path}: the plot failed ({type(err).__name__}: {err}); nothing was written"
        ) from err


def _load_calibration(
    path: Path, flag: str = "--traces", settings: str | None = None
) -> list[dict[str, Any]]:
    """Traces of a calibration directory, or of its budget-varied runs (``DIR/kK``, each its
    own settings: ``settings`` then picks nothing and is an error)."""
    from adaptive_tts.traces import load_traces

    subdirs = sorted(p for p in path.glob("k*") if p.is_dir() and p.name[1:].isdigit())
    try:
        if subdirs and not any(path.glob("*.jsonl")):
            if settings is not None:
                raise UsageError(
                    f"--settings {settings}: {path} holds budget-varied runs "
                    f"({', '.join(p.name for p in subdirs)}), one setting each",
                    None,
                    "allowed: --settings only with a directory of trace shards",
                )
            return [t for d in subdirs for t in load_traces(d)]
        return load_traces(path, settings=settings)
    except FileNotFoundError as err:
        raise UsageError(f"{flag} {path}: {err}") from err
    except ValueError as err:
        if settings is None or isinstance(err, UsageError):
            raise
        raise UsageError(f"--settings {settings}: {err}") from err
