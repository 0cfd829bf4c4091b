import json
import math
from pathlib import Path

import pytest

from sae_lens.training.metrics_log import (
    MetricsLog,
    curve_points,
    plot_training_curves,
    read_metrics,
)


def _write_run(path: Path, n: int) -> MetricsLog:
    log = MetricsLog(path)
    for step in range(n):
        log.log(
            {
                "losses/overall_loss": 1.0 / (step + 1),
                "metrics/l0": 10.0 - step,
                "metrics/explained_variance": step / n,
                "sparsity/dead_features": step % 3,
                "details/n_training_tokens": (step + 1) * 64,
            },
            step=step,
        )
    return log


def test_log_writes_one_json_object_per_step(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / "run" / "metrics.jsonl")
    log.log({"losses/overall_loss": 0.5, "metrics/l0": 3, "note": "x", "hist": object()}, 4)
    log.log({"metrics/l0": math.nan, "flag": True}, 9)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"step": 4, "losses/overall_loss": 0.5, "metrics/l0": 3, "note": "x"},
        {"step": 9, "metrics/l0": None, "flag": True},  # NaN -> null, valid JSON
    ]


def test_truncate_after_drops_later_steps(tmp_path: Path) -> None:
    log = _write_run(tmp_path / "metrics.jsonl", 6)
    log.truncate_after(2)
    assert [r["step"] for r in read_metrics(log.path)] == [0, 1, 2]
    log.log({"metrics/l0": 1.0}, 3)
    assert [r["step"] for r in read_metrics(log.path)] == [0, 1, 2, 3]


def test_read_skips_a_torn_last_line_but_not_a_corrupt_middle(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0}\n{"step": 1}\n{"step": 2, "metr')
    assert read_metrics(path) == [{"step": 0}, {"step": 1}]
    path.write_text('{"step": 0}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        read_metrics(path)


def test_curve_points_use_tokens_on_the_x_axis(tmp_path: Path) -> None:
    log = _write_run(tmp_path / "metrics.jsonl", 5)
    log.log({"some/eval": 1.0, "details/n_training_tokens": 999}, 5)  # no curve keys
    x_key, curves = curve_points(read_metrics(log.path))
    assert x_key == "details/n_training_tokens"
    assert curves["metrics/l0"] == ([64, 128, 192, 256, 320], [10.0, 9.0, 8.0, 7.0, 6.0])
    assert curves["sparsity/dead_features"][1] == [0, 1, 2, 0, 1]


def test_curve_points_fall_back_to_steps() -> None:
    x_key, curves = curve_points([{"step": 3, "metrics/l0": 2.0}, {"step": 7}])
    assert x_key == "step"
    assert curves["metrics/l0"] == ([3], [2.0])
    assert curves["losses/overall_loss"] == ([], [])


def test_plot_writes_a_png(tmp_path: Path) -> None:
    from matplotlib.image import imread

    _write_run(tmp_path / "metrics.jsonl", 20)
    png = plot_training_curves(tmp_path / "metrics.jsonl", tmp_path / "out" / "curves.png")
    image = imread(png)
    assert image.shape[:2] == (700, 1000)
    assert image.std() > 0.05  # not a blank canvas
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["curves.png"]


def test_plot_of_an_empty_file_raises(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="no metrics to plot in .*metrics.jsonl"):
        plot_training_curves(tmp_path / "metrics.jsonl", tmp_path / "c.png")
