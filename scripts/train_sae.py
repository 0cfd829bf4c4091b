"""Train an SAE from a YAML (or JSON) config file of `LanguageModelSAERunnerConfig` fields.

    python scripts/train_sae.py run.yaml
    python scripts/train_sae.py run.yaml --lr 1e-4 --training_tokens 2000000   # override
    python scripts/train_sae.py run.yaml --dry_run                             # check only

Any config field can follow the file as a flag and overrides the file's value
(`python -m sae_lens.sae_training_runner --help` lists them). The config is validated
before the model is loaded. At the end the script prints where the SAE went and the last
logged training metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Keys of metrics.jsonl shown in the closing summary, with their labels.
SUMMARY_METRICS = {
    "losses/overall_loss": "loss",
    "metrics/l0": "L0",
    "metrics/explained_variance": "explained variance",
    "sparsity/dead_features": "dead features",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python scripts/train_sae.py",
        allow_abbrev=False,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Further --<field> VALUE flags override the file; see "
        "`python -m sae_lens.sae_training_runner --help` for every field.",
    )
    parser.add_argument("config", type=Path, help="a .yaml, .yml or .json file of config fields")
    parser.add_argument(
        "--dry_run",
        action="store_true",
        help="print the resolved config and the number of steps, then exit without training",
    )
    return parser


def last_logged_metrics(metrics_path: Path) -> dict[str, Any]:
    """The last line of a run's metrics.jsonl (empty if nothing was logged)."""
    if not metrics_path.is_file():
        return {}
    lines = [line for line in metrics_path.read_text().splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else {}


def main(argv: Sequence[str] | None = None) -> int:
    args, overrides = build_parser().parse_known_args(argv)
    from sae_lens.sae_training_runner import parse_cli_config

    if not args.config.is_file():
        print(f"error: config file {str(args.config)!r} does not exist", file=sys.stderr)
        return 2
    try:
        cfg = parse_cli_config(["--config", str(args.config), *overrides])
    except (ValueError, TypeError, argparse.ArgumentError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    print(
        f"{cfg.architecture} SAE, d_in={cfg.d_in} -> d_sae={cfg.d_sae}, on {cfg.model_name} "
        f"{cfg.hook_name}, {cfg.total_training_tokens:,} tokens of {cfg.dataset_path} "
        f"({cfg.total_training_steps:,} steps); run folder {cfg.checkpoint_path}"
    )
    if args.dry_run:
        print(json.dumps(cfg.to_dict(), indent=2, default=str))
        return 0

    from sae_lens.sae_training_runner import SAETrainingRunner
    from sae_lens.training import checkpoints
    from sae_lens.training.metrics_log import CURVES_FILENAME, METRICS_FILENAME

    SAETrainingRunner(cfg).run()
    run_dir = Path(cfg.checkpoint_path)
    print(f"SAE folder:      {checkpoints.final_sae_folder(run_dir)}")
    print(f"metrics:         {run_dir / METRICS_FILENAME}")
    print(f"training curves: {run_dir / CURVES_FILENAME}")
    last = last_logged_metrics(run_dir / METRICS_FILENAME)
    for key, label in SUMMARY_METRICS.items():
        if last.get(key) is not None:
            print(f"last logged {label}: {last[key]:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
