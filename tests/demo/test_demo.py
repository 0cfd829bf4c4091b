from pathlib import Path

import pytest
import torch

from sae_lens.demo import main


def test_demo_trains_evaluates_and_prints_where_things_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    threads = torch.get_num_threads()
    try:
        assert main(["--output_dir", str(tmp_path), "--training_tokens", str(512 * 30)]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    for name in ("L0 (active latents per token)", "explained variance", "CE loss score"):
        line = next(line for line in out.splitlines() if line.strip().startswith(name))
        float(line.split()[-1])  # a number
    assert "L0 (active latents per token) 32.0000" in " ".join(out.split())
    assert f"SAE folder:       {run_dir / 'final_15360'}" in out
    assert f"metrics file:     {run_dir / 'metrics.jsonl'}" in out
    assert f"training curves:  {run_dir / 'training_curves.png'}" in out
    assert (run_dir / "training_curves.png").is_file()
    assert (run_dir / "final_15360" / "sae_weights.safetensors").is_file()
