from pathlib import Path

import pytest
import torch

from sae_lens.demo import main


def test_demo_trains_evaluates_and_prints_where_things_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sae_lens.dataset_sources as sources

    splits_read: list[str] = []
    load = sources.load_any_dataset

    def recording_load(path: str, split: str = "train", **kwargs: object) -> object:
        splits_read.append(split)
        return load(path, split=split, **kwargs)

    monkeypatch.setattr(sources, "load_any_dataset", recording_load)
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
    never = next(line for line in out.splitlines() if "latents never firing (of 1024)" in line)
    assert 0 <= int(never.split()[-1]) <= 1024
    assert splits_read == ["test"]  # the final evaluation reads the held-out split
    assert f"SAE folder:       {run_dir / 'final_15360'}" in out
    assert f"metrics file:     {run_dir / 'metrics.jsonl'}" in out
    assert f"training curves:  {run_dir / 'training_curves.png'}" in out
    assert (run_dir / "training_curves.png").is_file()
    assert (run_dir / "final_15360" / "sae_weights.safetensors").is_file()
