"""Check that SAELens 5.6.0 loads the SAE folders our training runs write.

Trains a small SAE of each architecture with `SAETrainingRunner` on the embedded model
(a few seconds each), then loads every final folder and one intermediate checkpoint with
the oracle (the published sae-lens 5.6.0 in /work/oracle-venv, in a subprocess) and
compares its encode/forward outputs with ours on the same inputs.

    .venv/bin/python scripts/compat_training_output.py [--oracle-python PATH]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.sae import SAE
from sae_lens.sae_training_runner import SAETrainingRunner
from sae_lens.training import checkpoints

ARCHITECTURES = {
    "standard": {"l1_coefficient": 2.0},
    "gated": {"l1_coefficient": 2.0},
    "jumprelu": {"l1_coefficient": 1.0},
    "topk": {"activation_fn_kwargs": {"k": 16}},
}

ORACLE_PROGRAM = """
import sys, warnings
warnings.filterwarnings("ignore")
import torch
from safetensors.torch import load_file, save_file
from sae_lens import SAE
for folder in sys.argv[1:]:
    x = load_file(folder + "/compat_inputs.safetensors")["x"]
    sae = SAE.load_from_pretrained(folder)
    with torch.no_grad():
        save_file({"acts": sae.encode(x), "out": sae(x)}, folder + "/compat_oracle.safetensors")
"""


def train(architecture: str, root: Path) -> Path:
    cfg = LanguageModelSAERunnerConfig(
        architecture=architecture,  # type: ignore[arg-type]
        hook_name="blocks.0.hook_resid_post",
        hook_layer=0,
        d_sae=256,
        training_tokens=128 * 60,
        train_batch_size_tokens=128,
        context_size=32,
        store_batch_size_prompts=8,
        n_batches_in_buffer=4,
        lr=3e-3,
        n_checkpoints=2,
        normalize_activations="expected_average_only_in",
        log_to_wandb=False,
        checkpoint_path=str(root / architecture),
        verbose=False,
        **ARCHITECTURES[architecture],
    )
    SAETrainingRunner(cfg).run()
    return Path(cfg.checkpoint_path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oracle-python", default="/work/oracle-venv/bin/python")
    args = parser.parse_args()
    folders = []
    with tempfile.TemporaryDirectory() as tmp:
        for architecture in ARCHITECTURES:
            run_dir = train(architecture, Path(tmp))
            final = checkpoints.final_sae_folder(run_dir)
            intermediate = checkpoints.latest_checkpoint(run_dir)
            folders += [(architecture, final), (architecture, intermediate)]
        torch.manual_seed(0)
        for _, folder in folders:
            x = torch.randn(64, 128) * 4
            save_file({"x": x}, str(folder / "compat_inputs.safetensors"))
        subprocess.run(
            [args.oracle_python, "-c", ORACLE_PROGRAM, *(str(f) for _, f in folders)],
            check=True,
            cwd=tmp,  # not the repo root, where `import sae_lens` would find ours
        )
        worst = 0.0
        print(
            f"{'architecture':<12} {'folder':<16} {'max |encode diff|':>18} {'max |forward diff|':>19}"
        )
        for architecture, folder in folders:
            x = load_file(str(folder / "compat_inputs.safetensors"))["x"]
            oracle = load_file(str(folder / "compat_oracle.safetensors"))
            sae = SAE.load_from_pretrained(str(folder))
            with torch.no_grad():
                acts_diff = (sae.encode(x) - oracle["acts"]).abs().max().item()
                out_diff = (sae(x) - oracle["out"]).abs().max().item()
            worst = max(worst, acts_diff, out_diff)
            print(f"{architecture:<12} {folder.name:<16} {acts_diff:>18.2e} {out_diff:>19.2e}")
    ok = worst <= 1e-6
    print(f"worst difference {worst:.2e}: {'OK' if ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
