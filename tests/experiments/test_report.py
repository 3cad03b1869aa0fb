"""``adaptive-tts report RUN_DIR``: the table and plot of a finished run re-rendered from its
``results.json`` (written as ``bench`` writes it), without re-running; one-line errors for a
directory that holds no usable results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.cli import main
from experiments.run import summarise, table, write_results

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def make_run(out: Path) -> dict:
    """A run directory as ``run_experiment`` leaves it (two methods, four pairs each)."""
    runs = [{"label": "naive", "method": "naive"}, {"label": "best-of-2", "method": "best-of-n"}]
    records = [
        {"label": r["label"], "group": "", "method": r["method"], "prompt": p, "seed": s,
         "noise_seed": 2 * s + p, "reward": 0.1 * (i + 1) + 0.01 * s, "nfe": 6 * (i + 1),
         "eval": float(p == 0), "seconds": 0.01}
        for i, r in enumerate(runs) for s in (0, 1) for p in (0, 1)
    ]  # fmt: skip
    result = {"config": {"name": "smoke", "task": "gmm-target"}, "pairs": 4, "processes": 1}
    result.update(rows=summarise(records, runs), records=records)
    out.mkdir()
    write_results(result, out)
    return result


def test_report_rerenders_table_and_plot(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    result = make_run(run)
    before = (run / "results.json").read_bytes()
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(table(result["rows"]))  # the table bench printed
    assert (run / "reward_vs_nfe.png").read_bytes().startswith(PNG)
    assert (run / "results.json").read_bytes() == before  # nothing re-run or rewritten
    assert sorted(p.name for p in run.iterdir()) == [
        "results.csv", "results.json", "reward_vs_nfe.png"
    ]  # fmt: skip
    elsewhere = tmp_path / "plots" / "again.svg"
    assert main(["report", str(run), "--out", str(elsewhere)]) == 0
    assert elsewhere.is_file() and f"plot: {elsewhere}" in capsys.readouterr().out
    assert main(["report", str(run), "--no-plot", "--out", str(tmp_path / "no.png")]) == 0
    assert not (tmp_path / "no.png").exists()


def test_report_on_a_committed_run(tmp_path, capsys) -> None:
    committed = ROOT / "experiments" / "results" / "table1"
    assert main(["report", str(committed), "--out", str(tmp_path / "t1.png")]) == 0
    out = capsys.readouterr().out
    rows = json.loads((committed / "results.json").read_text())["rows"]
    assert all(r["label"] in out for r in rows) and (tmp_path / "t1.png").is_file()


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "holds no results.json"),
        ("{not json", "not readable JSON"),
        ('{"rows": []}', "no 'rows'"),
        ('{"rows": [{"label": "a", "reward": 1.0}]}', "row 0 lacks ci95"),
        (
            '{"rows": [{"label": "a", "reward": "NaN", "ci95": 0, "nfe": 1, "eval_rate": 0,'
            ' "seconds_per_sample": 0}]}',
            "reward not finite",
        ),
    ],
)
def test_report_errors_are_one_line(tmp_path, capsys, content, message) -> None:
    run = tmp_path / "run"
    run.mkdir()
    if content is not None:
        (run / "results.json").write_text(content)
    before = sorted(run.iterdir())
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("adaptive-tts: error:") and message in err[0]
    assert sorted(run.iterdir()) == before  # no plot written


def test_report_checks_paths_first(tmp_path, capsys) -> None:
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "directory not found" in capsys.readouterr().err
    run = tmp_path / "run"
    make_run(run)
    assert main(["report", str(run), "--out", str(tmp_path / "plot.txt")]) == 2
    assert "--out" in capsys.readouterr().err and not (run / "reward_vs_nfe.png").exists()
