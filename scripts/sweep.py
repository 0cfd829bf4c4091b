"""Train one small SAE per value of a hyperparameter and tabulate how they compare.

    python scripts/sweep.py --param expansion_factor --values 2 4 8
    python scripts/sweep.py --param l1_coefficient --values 1 3 10 --config base.yaml
    python scripts/sweep.py --param k --values 8 16 32 --training_tokens 200000

`--param` is `expansion_factor`, `l1_coefficient` or `k` (TopK's number of active latents;
sets `architecture=topk`). The base run is the embedded model and corpus unless `--config`
or further `--<field> VALUE` flags (any `LanguageModelSAERunnerConfig` field) say
otherwise. After training, each SAE is evaluated with `run_evals` on the batches that
follow its training data: L0, explained variance and CE loss score. The table goes to `<output_dir>/sweep.csv` and
`<output_dir>/sweep.md`; each run's folder is under `<output_dir>/runs/`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SWEEPABLE = ("expansion_factor", "l1_coefficient", "k")
COLUMNS = (
    "param",
    "value",
    "architecture",
    "d_sae",
    "l0",
    "explained_variance",
    "ce_loss_score",
    "train_seconds",
    "sae_folder",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python scripts/sweep.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Further --<field> VALUE flags set fields of the base run config "
        "(`python -m sae_lens.sae_training_runner --help` lists them).",
        allow_abbrev=False,
    )
    parser.add_argument("--param", required=True, choices=SWEEPABLE, help="what to vary")
    parser.add_argument(
        "--values", required=True, nargs="+", type=float, help="the values to train with"
    )
    parser.add_argument("--config", type=Path, help="a .yaml/.json file of base config fields")
    parser.add_argument(
        "--output_dir", type=Path, default=Path("sweep_results"), help="default: %(default)s"
    )
    parser.add_argument(
        "--eval_batches",
        type=int,
        default=4,
        help="batches of prompts for each SAE's evaluation (default: %(default)s)",
    )
    parser.add_argument(
        "--eval_batch_size_prompts",
        type=int,
        default=8,
        help="prompts per evaluation batch (default: %(default)s)",
    )
    return parser


def flags_for(param: str, value: float) -> list[str]:
    """Command-line flags that set the swept hyperparameter to `value`."""
    if param == "l1_coefficient":
        return ["--l1_coefficient", repr(value)]
    if not value.is_integer() or value < 1:
        raise ValueError(f"--values for {param} must be positive integers, got {value:g}")
    if param == "expansion_factor":
        return ["--expansion_factor", str(int(value))]
    return ["--architecture", "topk", "--activation_fn_kwargs", json.dumps({"k": int(value)})]


def evaluate(runner: Any, sae: Any, n_batches: int, batch_size: int) -> dict[str, float]:
    """L0, explained variance and CE loss score of the trained SAE on the batches that follow
    the training data in the run's activation store, ignoring BOS/EOS/PAD positions."""
    from sae_lens.evals import EvalConfig, run_evals

    eval_config = EvalConfig(
        batch_size_prompts=batch_size,
        n_eval_reconstruction_batches=n_batches,
        n_eval_sparsity_variance_batches=n_batches,
        compute_ce_loss=True,
        compute_sparsity_metrics=True,
        compute_variance_metrics=True,
    )
    tokenizer = getattr(runner.model, "tokenizer", None)
    ignore = (
        {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
        if tokenizer is not None
        else set()
    )
    metrics, _ = run_evals(
        sae.eval(), runner.activations_store, runner.model, eval_config, ignore_tokens=ignore
    )
    return {
        "l0": metrics["sparsity"]["l0"],
        "explained_variance": metrics["reconstruction_quality"]["explained_variance"],
        "ce_loss_score": metrics["model_performance_preservation"]["ce_loss_score"],
    }


def train_and_evaluate(
    base_flags: list[str], param: str, value: float, args: argparse.Namespace
) -> dict[str, Any]:
    """One row of the table: train the SAE for `param = value`, then evaluate it."""
    from sae_lens.sae_training_runner import SAETrainingRunner, parse_cli_config
    from sae_lens.training import checkpoints

    run_name = f"{param}={value:g}"
    cfg = parse_cli_config(
        [
            *base_flags,
            *flags_for(param, value),
            "--checkpoint_path",
            str(args.output_dir / "runs" / run_name),
            "--resume",
            "false",
        ]
    )
    print(f"[{run_name}] training {cfg.architecture} d_sae={cfg.d_sae} on {cfg.hook_name}")
    start = time.perf_counter()
    runner = SAETrainingRunner(cfg)
    sae = runner.run()
    train_seconds = time.perf_counter() - start
    sae_folder = checkpoints.final_sae_folder(cfg.checkpoint_path)
    if sae_folder is None:
        raise RuntimeError(f"run {cfg.checkpoint_path} finished without a final SAE folder")
    metrics = evaluate(runner, sae, args.eval_batches, args.eval_batch_size_prompts)
    return {
        "param": param,
        "value": value,
        "architecture": cfg.architecture,
        "d_sae": cfg.d_sae,
        **metrics,
        "train_seconds": round(train_seconds, 1),
        "sae_folder": str(sae_folder),
    }


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table, numbers to 4 significant digits."""

    def cell(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
        *("| " + " | ".join(cell(row[c]) for c in COLUMNS) + " |" for row in rows),
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args, extra_flags = build_parser().parse_known_args(argv)
    base_flags = [*(["--config", str(args.config)] if args.config else []), *extra_flags]
    try:
        for value in args.values:
            flags_for(args.param, value)
        from sae_lens.sae_training_runner import parse_cli_config

        parse_cli_config([*base_flags, *flags_for(args.param, args.values[0])])
    except (ValueError, TypeError, argparse.ArgumentError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    import pandas as pd

    args.output_dir.mkdir(parents=True, exist_ok=True)
    rows = [train_and_evaluate(base_flags, args.param, value, args) for value in args.values]
    pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(args.output_dir / "sweep.csv", index=False)
    table = markdown_table(rows)
    (args.output_dir / "sweep.md").write_text(table)
    print(table)
    print(f"written: {args.output_dir / 'sweep.csv'}, {args.output_dir / 'sweep.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
