"""`vggspec plot RUN`: the curves of classification and localisation runs; bad metrics lines
and bad output names in one line (they were tracebacks)."""

from __future__ import annotations

import json


def _metrics(run, rows, tail: str = "") -> None:
    run.mkdir(exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in rows) + tail
    (run / "metrics.jsonl").write_text(text)


STEPS = [{"kind": "step", "step": s, "loss": 2.0 / s, "lr": 0.01} for s in (1, 2, 3)]
LOC_VALS = [  # what a localisation run's validation logs: no top-1 (KeyError: 'val_top1_error')
    {"kind": "val", "step": s, "val_loss": 1.0 / s, "val_loc_error": 0.5 / s, "val_mean_iou": 0.4}
    for s in (2, 3)
]


def test_a_localisation_run_and_a_line_cut_short_at_the_end_are_plotted(tmp_path, cli):
    run = tmp_path / "loc"
    _metrics(run, STEPS + LOC_VALS, tail='{"kind": "step", "st')  # a kill mid-write
    code, out, err = cli("plot", run)
    assert code == 0, err
    assert out.strip() == str(run / "curves.png") and (run / "curves.png").stat().st_size > 1000


def test_bad_metrics_lines_and_outputs_are_one_line(tmp_path, cli):
    run = tmp_path / "run"
    _metrics(run, STEPS, tail="\xff\xfe garbage\n")  # a whole line, not the last one cut short
    (run / "metrics.jsonl").write_bytes(
        (run / "metrics.jsonl").read_bytes() + json.dumps(STEPS[0]).encode() + b"\n"
    )
    code, _, err = cli("plot", run)
    assert code == 2 and err.strip() == f"{run / 'metrics.jsonl'}:4: not a JSON line", err
    _metrics(run, STEPS)
    for output, says in (
        (run / "curves.yaml", "curves.yaml: name an image file (."),  # a ValueError
        ("/proc/x.png", "cannot create files in /proc"),  # was exit 1, [Errno …]
    ):
        code, _, err = cli("plot", run, "-o", output)
        assert code == 2 and len(err.splitlines()) == 1 and says in err, err
    assert not (run / "curves.yaml").exists()
    code, _, err = cli("plot", run, "-o", tmp_path / "new" / "c.png")  # was [Errno 2]
    assert code == 0 and (tmp_path / "new" / "c.png").is_file(), err


def test_a_refused_plot_makes_no_folder(tmp_path, cli):
    # -o newdir/x.txt was refused after newdir/ had been made.
    run = tmp_path / "run"
    _metrics(run, STEPS)
    code, _, err = cli("plot", run, "-o", tmp_path / "newdir" / "x.txt")
    assert code == 2 and "name an image file" in err, err
    code, _, err = cli("plot", tmp_path / "not-a-run", "-o", tmp_path / "nd2" / "c.png")
    assert code == 2 and "no metrics.jsonl" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
