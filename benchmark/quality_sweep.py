"""Calibration of this library's training options on the training benchmark's workload.

Trains one of our SAEs per option set (same model, tokens, budget and evaluation as
`train_throughput.py`, no step timing) and prints L0, explained variance and KL score, so
that the options `train_throughput.py` uses can be chosen by measurement, at matched L0.

    .venv/bin/python benchmark/quality_sweep.py --architecture standard \\
        --options '{"l1_coefficient": 0.1}' '{"l1_coefficient": 0.1, "lr": 1e-2}'

Each option set is a JSON object of `LanguageModelSAERunnerConfig` fields added to the
benchmark's defaults for the architecture (lr 3e-3 unless given). Results are appended
to `<work>/quality_sweep.jsonl`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "peers"))

import train_throughput as bench  # noqa: E402
import workload as wl  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--architecture", required=True, choices=bench.ARCHITECTURES)
    parser.add_argument(
        "--library",
        default="ours",
        choices=["ours", "saelens6"],
        help="saelens6: each option set is {'sae_options': {...}, 'runner_options': {...}}",
    )
    parser.add_argument("--options", nargs="+", required=True, help="JSON objects")
    parser.add_argument("--tokens", type=int, default=bench.DEFAULT_TOKENS)
    parser.add_argument("--work", type=Path, default=Path("/tmp/sae_lens_train_bench"))
    args = parser.parse_args()

    from safetensors.torch import load_file

    paths = bench.prepare(args.work)
    model = wl.load_hooked_transformer(paths["model_dir"])
    eval_tokens = load_file(paths["acts"])["eval_tokens"]
    eval_acts = bench._hook_acts(model, eval_tokens)
    downstream = bench.Downstream(model, eval_tokens)
    log = args.work / "quality_sweep.jsonl"
    for i, text in enumerate(args.options):
        job = dict(
            paths,
            training_tokens=args.tokens,
            step_bench_steps=0,
            name=f"sweep/{args.library}/{args.architecture}/{i}",
            architecture=args.architecture,
            out_dir=str(args.work / "jobs" / f"sweep_{args.library}_{args.architecture}_{i}"),
        )
        if args.library == "ours":
            options = {
                "lr": bench.LR[args.architecture],
                **bench.OURS[args.architecture],
                **json.loads(text),
            }
            job["options"] = options
            script = HERE / "train_throughput.py"
        else:
            defaults = bench.SAELENS6[args.architecture]
            given = json.loads(text)
            options = {
                "sae_options": {**defaults["sae_options"], **given.get("sae_options", {})},
                "runner_options": {
                    "lr": bench.LR[args.architecture],
                    **given.get("runner_options", {}),
                },
            }
            job.update(options)
            script = HERE / "peers" / "saelens6_driver.py"
        result = bench.run_job(bench.PYTHONS[args.library], script, job, 1800, False)
        scores = bench.evaluate(
            args.architecture, Path(job["out_dir"]) / "weights.safetensors", eval_acts, downstream
        )
        row = {
            "library": args.library,
            "architecture": args.architecture,
            "options": options,
            **scores,
            "train_wall_s": result["train_wall_s"],
        }
        with log.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(
            f"{json.dumps(options)}: L0 {scores['l0']:.1f}, EV {scores['explained_variance']:.4f}, "
            f"KL score {scores['kl_score']:.4f}, {result['train_wall_s']:.1f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
