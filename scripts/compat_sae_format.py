"""Round-trip check of the SAE folder format against the published SAELens 5.6.0.

For every architecture and dtype, this project saves an SAE that SAELens loads, and SAELens
saves one that this project loads; both sides then compute encode / decode / forward on the
same inputs and the script prints the largest absolute differences. TrainingSAE folders are
checked the same way, comparing the training losses of one step.

BatchTopK and Matryoshka BatchTopK SAEs, which 5.6.0 lacks, are trained here for a few
steps, folded (activation scale, decoder norms) and saved as the trainer saves them, as
JumpReLU SAEs; SAELens 5.6.0 and SAELens 6 (`--saelens6-python`, its `SAE.load_from_disk`)
load them, and their outputs are compared with those of the TrainingSAE that wrote them
(in eval mode) as well as with this project's loaded copy.

    .venv/bin/python scripts/compat_sae_format.py [--oracle-python /work/oracle-venv/bin/python]
        [--saelens6-python /work/peer-venv/bin/python]

The same file runs inside the SAELens venv (`--side oracle`), where `import sae_lens` is the
published package; nothing here is imported by the test suite.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ARCHITECTURES = ("standard", "gated", "jumprelu", "topk")
# Trained by this project only, saved as JumpReLU SAEs.
SAVED_AS_JUMPRELU = ("batchtopk", "matryoshka_batchtopk")
DTYPES = ("float32", "float16", "bfloat16")
D_IN, D_SAE, K, N_TOKENS = 16, 48, 6, 32
L1_COEFFICIENT = 0.3
BASE_CFG = dict(
    d_in=D_IN,
    d_sae=D_SAE,
    apply_b_dec_to_input=True,
    finetuning_scaling_factor=False,
    context_size=16,
    model_name="compat-model",
    hook_name="blocks.0.hook_resid_pre",
    hook_layer=0,
    hook_head_index=None,
    prepend_bos=True,
    dataset_path="compat-data",
    dataset_trust_remote_code=False,
    normalize_activations="none",
    device="cpu",
    sae_lens_training_version=None,
)
TRAINING_CFG = dict(
    l1_coefficient=L1_COEFFICIENT,
    lp_norm=1.0,
    normalize_sae_decoder=False,
    noise_scale=0.0,
    decoder_orthogonal_init=False,
    mse_loss_normalization=None,
    jumprelu_init_threshold=0.001,
    jumprelu_bandwidth=0.05,
    decoder_heuristic_init=False,
    init_encoder_as_decoder_transpose=False,
    scale_sparsity_penalty_by_decoder_norm=False,
)


def sae_cfg(architecture: str, dtype: str) -> dict:
    is_topk = architecture == "topk"
    return {
        **BASE_CFG,
        "architecture": architecture,
        "dtype": dtype,
        "activation_fn_str": "topk" if is_topk else "relu",
        "activation_fn_kwargs": {"k": K} if is_topk else {},
    }


def training_cfg(architecture: str) -> dict:
    # Ghost grads only exist for standard SAEs.
    return {
        **sae_cfg(architecture, "float32"),
        **TRAINING_CFG,
        "use_ghost_grads": architecture == "standard",
    }


def randomize(sae: torch.nn.Module, seed: int) -> None:
    """Random values for every parameter (thresholds positive, as trained ones are)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            values = torch.randn(p.shape, generator=generator) * 0.4
            if name == "threshold":
                values = values.abs()
            if name == "log_threshold":
                values = values - 2.0
            p.copy_(values.to(p.dtype))


def folders(workdir: Path, writer: str) -> list[tuple[str, Path]]:
    """(kind, folder) for every SAE one side writes; kind is 'sae', 'training' or (ours
    only) 'trained', a BatchTopK-family SAE saved as JumpReLU."""
    out = [("sae", workdir / writer / f"{a}_{d}") for a in ARCHITECTURES for d in DTYPES]
    out += [("training", workdir / writer / f"training_{a}") for a in ARCHITECTURES]
    if writer == "ours":
        out += [("trained", workdir / writer / f"trained_{a}") for a in SAVED_AS_JUMPRELU]
    return out


def write_trained_batchtopk(folder: Path, architecture: str, x: torch.Tensor, seed: int) -> None:
    """Train a BatchTopK-family TrainingSAE for 5 steps (so its running threshold moves),
    fold an activation scale and the decoder norms into it as the trainer would, save it,
    and write its own eval-mode outputs on `x` as `outputs_source`."""
    from sae_lens import TrainingSAE

    cfg = {
        **training_cfg(architecture),
        "activation_fn_str": "relu",
        "activation_fn_kwargs": {"k": K},
        "use_ghost_grads": False,
        "matryoshka_widths": [8, 24, D_SAE] if architecture.startswith("matryoshka") else None,
    }
    sae = TrainingSAE.from_dict(cfg)
    randomize(sae, seed)
    optimizer = torch.optim.Adam(sae.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(seed)
    scale = 0.5  # the activation-norm scaling factor the inputs were trained with
    for _ in range(5):
        batch = torch.randn(N_TOKENS, D_IN, generator=generator) * 2 * scale
        sae.training_forward_pass(batch, L1_COEFFICIENT).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    sae.eval()
    sae.fold_activation_norm_scaling_factor(scale)
    sae.fold_W_dec_norm()
    sae.save_model(str(folder))
    with torch.no_grad():
        acts = sae.encode(x)
        outputs = {"encode": acts, "decode": sae.decode(acts), "forward": sae(x)}
    save_file(
        {k: v.contiguous() for k, v in outputs.items()}, folder / "outputs_source.safetensors"
    )


def write_saes(workdir: Path, writer: str) -> None:
    """Save one random SAE per (architecture, dtype) and one TrainingSAE per architecture."""
    from sae_lens import SAE, TrainingSAE

    inputs = load_file(workdir / "inputs.safetensors") if writer == "ours" else {}
    for i, (kind, folder) in enumerate(folders(workdir, writer)):
        architecture = folder.name.removeprefix("training_").split("_")[0]
        if kind == "trained":
            write_trained_batchtopk(folder, folder.name.removeprefix("trained_"), inputs["x"], i)
            continue
        if kind == "sae":
            sae = SAE.from_dict(sae_cfg(architecture, folder.name.split("_")[1]))
        else:
            sae = TrainingSAE.from_dict(training_cfg(architecture))
        randomize(sae, seed=1000 * (writer == "oracle") + i)
        sae.save_model(str(folder))


def evaluate(workdir: Path, side: str) -> None:
    """Load every folder and write this side's outputs next to it."""
    from sae_lens import SAE, TrainingSAE

    inputs = load_file(workdir / "inputs.safetensors")
    x, dead = inputs["x"], inputs["dead"].bool()
    for writer in ("ours", "oracle"):
        for kind, folder in folders(workdir, writer):
            if kind in ("sae", "trained"):
                sae = SAE.load_from_pretrained(str(folder))
                with torch.no_grad():
                    acts = sae.encode(x)
                    outputs = {"encode": acts, "decode": sae.decode(acts), "forward": sae(x)}
            else:
                training = TrainingSAE.load_from_pretrained(str(folder))
                training.train()
                step = training.training_forward_pass(x, L1_COEFFICIENT, dead)
                outputs = {"loss": step.loss.detach()}
                outputs.update({k: torch.as_tensor(v).detach() for k, v in step.losses.items()})
            save_file(
                {k: v.float().contiguous() for k, v in outputs.items()},
                folder / f"outputs_{side}.safetensors",
            )


def evaluate_saelens6(workdir: Path) -> None:
    """SAELens 6 loads the BatchTopK-family folders (`SAE.load_from_disk`) and writes its
    outputs next to them."""
    from sae_lens import SAE

    x = load_file(workdir / "inputs.safetensors")["x"]
    for kind, folder in folders(workdir, "ours"):
        if kind != "trained":
            continue
        sae = SAE.load_from_disk(str(folder))
        assert type(sae).__name__ == "JumpReLUSAE", type(sae).__name__
        with torch.no_grad():
            acts = sae.encode(x)
            outputs = {"encode": acts, "decode": sae.decode(acts), "forward": sae(x)}
        save_file(
            {k: v.contiguous() for k, v in outputs.items()}, folder / "outputs_saelens6.safetensors"
        )


def run_oracle(oracle_python: str, workdir: Path, step: str, side: str = "oracle") -> None:
    subprocess.run(
        [
            oracle_python,
            str(Path(__file__).resolve()),
            "--side",
            side,
            "--step",
            step,
            str(workdir),
        ],
        check=True,
        cwd=workdir,  # so that `import sae_lens` finds the published package, not this repo
    )


def compare_trained(workdir: Path, with_saelens6: bool) -> bool:
    """Print max differences of the BatchTopK-family folders' outputs: this project's and
    SAELens 5.6.0's (and 6's) loaded copies against the TrainingSAE that saved them."""
    all_ok = True
    print(f"\n{'folder':<28} {'loaded by':<16} {'output':<10} {'max abs diff vs writer':>23}")
    for _, folder in [f for f in folders(workdir, "ours") if f[0] == "trained"]:
        source = load_file(folder / "outputs_source.safetensors")
        l0 = (source["encode"] > 0).float().sum(-1).mean().item()
        print(f"{folder.name}: the writer's mean L0 on the inputs is {l0:.2f} (k = {K})")
        sides = ["ours", "oracle"] + (["saelens6"] if with_saelens6 else [])
        for side in sides:
            loaded = load_file(folder / f"outputs_{side}.safetensors")
            for name in sorted(source):
                diff = (loaded[name] - source[name]).abs().max().item()
                all_ok &= diff <= 1e-5
                label = {
                    "ours": "this project",
                    "oracle": "SAELens 5.6.0",
                    "saelens6": "SAELens 6",
                }[side]
                print(f"{folder.name:<28} {label:<16} {name:<10} {diff:>23.3e}")
    return all_ok


def compare(workdir: Path) -> bool:
    """Print max |ours - oracle| per folder and output; True when every difference is <= 1e-6
    (relative, for training losses)."""
    all_ok = True
    print(f"{'written by':<10} {'folder':<20} {'output':<30} {'max abs diff':>13}  {'bitwise'}")
    for writer in ("ours", "oracle"):
        for kind, folder in folders(workdir, writer):
            ours = load_file(folder / "outputs_ours.safetensors")
            oracle = load_file(folder / "outputs_oracle.safetensors")
            if set(ours) != set(oracle):
                print(
                    f"{writer:<10} {folder.name:<20} KEYS DIFFER: ours {sorted(ours)}, oracle {sorted(oracle)}"
                )
                all_ok = False
                continue
            for name in sorted(ours):
                diff = (ours[name] - oracle[name]).abs().max().item()
                scale = oracle[name].abs().max().item() if kind == "training" else 1.0
                ok = diff <= 1e-6 * max(scale, 1.0)
                all_ok &= ok
                exact = torch.equal(ours[name], oracle[name])
                flag = "yes" if exact else ("close" if ok else "NO")
                print(f"{writer:<10} {folder.name:<20} {name:<30} {diff:>13.3e}  {flag}")
    return all_ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", nargs="?", help="folder to work in (default: a temp folder)")
    parser.add_argument("--oracle-python", default="/work/oracle-venv/bin/python")
    parser.add_argument(
        "--saelens6-python",
        default="/work/peer-venv/bin/python",
        help="a Python with SAELens 6 installed ('' to skip that check)",
    )
    parser.add_argument(
        "--side", choices=["ours", "oracle", "saelens6"], default="ours", help=argparse.SUPPRESS
    )
    parser.add_argument("--step", choices=["write", "evaluate"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.side == "oracle":
        import sae_lens

        assert "oracle" in sae_lens.__file__, (
            f"expected the published sae_lens, got {sae_lens.__file__}"
        )
        workdir = Path(args.workdir)
        write_saes(workdir, "oracle") if args.step == "write" else evaluate(workdir, "oracle")
        return
    if args.side == "saelens6":
        import sae_lens

        assert sae_lens.__version__.startswith("6."), sae_lens.__version__
        evaluate_saelens6(Path(args.workdir))
        return

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        generator = torch.Generator().manual_seed(0)
        dead = torch.zeros(D_SAE)
        dead[::3] = 1
        save_file(
            {"x": torch.randn(N_TOKENS, D_IN, generator=generator) * 2, "dead": dead},
            workdir / "inputs.safetensors",
        )
        write_saes(workdir, "ours")
        run_oracle(args.oracle_python, workdir, "write")
        evaluate(workdir, "ours")
        run_oracle(args.oracle_python, workdir, "evaluate")
        if args.saelens6_python:
            run_oracle(args.saelens6_python, workdir, "evaluate", side="saelens6")
        ok = compare(workdir)
        ok &= compare_trained(workdir, with_saelens6=bool(args.saelens6_python))
    print("all outputs match" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
