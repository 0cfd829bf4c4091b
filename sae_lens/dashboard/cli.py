"""`python -m sae_lens.dashboard`: feature dashboards of an SAE from the shell.

    python -m sae_lens.dashboard --sae_path FOLDER --n_tokens 100000 --features 0:16 \\
        --output_dir DIR

The model, hook and dataset come from the SAE's config, each overridable by a flag; the
SAE may also come from `--release` and `--sae_id`. Every `DashboardSettings` field is a
flag, `--config FILE` reads them from a file, and a mistake is one `error: ...` line with
exit code 2 (see `sae_lens.cli_support`)."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sae_lens.cli_support import (
    CLIError,
    CommandLineParser,
    check_dataset_path,
    check_device,
    check_input_path,
    check_model_name,
    check_output_folder,
    exit_code,
    layer_of_hook,
    parse_command_line,
    report_user_errors,
)
from sae_lens.config import MODEL_CLASS_NAMES
from sae_lens.dashboard.build import build_dashboard, default_device, load_sae, model_class_for
from sae_lens.dashboard.collect import DashboardSettings

PROG = "python -m sae_lens.dashboard"

SETTING_HELP = {
    "n_tokens": "Token positions to read, rounded up to whole sequences.",
    "batch_size_prompts": "Sequences per model forward pass.",
    "n_top_examples": "Top activating examples kept per latent.",
    "n_quantile_groups": "Equal-mass groups of each latent's nonzero activations to show "
    "examples from (0: none).",
    "examples_per_quantile": "Examples shown per quantile group.",
    "quantile_sample_size": "Active tokens sampled uniformly per latent for the quantile "
    "groups (0: 4 x groups x examples).",
    "context_left": "Tokens of context shown before an example's token.",
    "context_right": "Tokens of context shown after an example's token.",
    "n_histogram_bins": "Bins of the activation histogram (even).",
    "n_logit_tokens": "Top and bottom logit tokens listed per latent.",
    "exclude_special_tokens": "Leave BOS, EOS and pad tokens out of every statistic.",
    "seed": "Seed of the uniform sample behind the quantile examples.",
}


def parse_features(spec: str) -> list[int] | None:
    """Latent indices from `0:16` (a Python-style range, end excluded; `0:64:4` steps),
    `3,7,9`, or both mixed (`0:8,100,200:204`); None for `all`."""
    if spec.strip().lower() == "all":
        return None
    chosen: list[int] = []
    for part in (p.strip() for p in spec.split(",")):
        if re.fullmatch(r"\d+", part):
            chosen.append(int(part))
        elif re.fullmatch(r"\d+:\d+(:\d+)?", part):
            start, stop, *step = (int(n) for n in part.split(":"))
            if stop <= start or (step and step[0] < 1):
                raise CLIError(
                    f"--features range {part!r} is empty: write start:stop with stop > start"
                )
            chosen += list(range(start, stop, step[0] if step else 1))
        else:
            raise CLIError(
                f"--features {spec!r} is not understood at {part!r}: write indices and "
                "ranges like 0:16 or 3,7,9 or 0:8,100"
            )
    return chosen


def build_parser() -> CommandLineParser:
    parser = CommandLineParser(
        prog=PROG,
        description="Feature dashboards of an SAE: one streaming pass over tokens gathers, "
        "per latent, top activating examples, examples by activation quantile, an "
        "activation histogram and density, and top/bottom logit tokens. Writes "
        "OUTPUT_DIR/index.html (one self-contained page), dashboard.json and Neuronpedia "
        "batch files. Mistakes exit with code 2 and one line naming the culprit.",
    )
    parser.add_config_option()
    source = parser.add_group("which SAE")
    source.add_argument("--sae_path", default=None, help="A local SAE folder.")
    source.add_argument("--release", default=None, help="A release of the pretrained registry.")
    source.add_argument("--sae_id", default=None, help="The SAE id within --release.")
    source.add_argument(
        "--features",
        default="0:16",
        help="Latents to show: 0:16 (end excluded), 3,7,9, mixed, or all (default: %(default)s).",
    )
    inputs = parser.add_group("model and tokens (default: as the SAE's config says)")
    inputs.add_argument("--model_name", default=None, help="The model to run.")
    inputs.add_argument("--model_class_name", choices=MODEL_CLASS_NAMES, default=None,
                        help="How to load the model.")  # fmt: skip
    inputs.add_argument("--hook_name", default=None, help="The hook the SAE reads.")
    inputs.add_argument("--dataset_path", default=None, help="Dataset to read tokens from.")
    inputs.add_argument("--context_size", type=int, default=None, help="Tokens per sequence.")
    inputs.add_argument("--device", default=None, help="Device (default: cuda if available).")
    output = parser.add_group("output")
    output.add_argument("--output_dir", default="dashboard", help="Folder to write into "
                        "(default: %(default)s).")  # fmt: skip
    output.add_argument("--neuronpedia", action=argparse.BooleanOptionalAction, default=True,
                        help="Also write Neuronpedia batch files (default: yes).")  # fmt: skip
    output.add_argument("--latents_per_page", type=int, default=None,
                        help="Split sets larger than this into further pages (default 1000).")  # fmt: skip
    parser.add_fields(
        DashboardSettings, SETTING_HELP, groups=[("what each dashboard holds", list(SETTING_HELP))]
    )
    return parser


def _check(args: argparse.Namespace) -> list[int] | None:
    """What the command line refuses before loading anything; returns the features."""
    if args.sae_path is None and (args.release is None or args.sae_id is None):
        raise CLIError("give --sae_path FOLDER, or --release and --sae_id")
    if args.sae_path is not None and (args.release is not None or args.sae_id is not None):
        raise CLIError("give either --sae_path or --release/--sae_id, not both")
    if args.sae_path is not None:
        check_input_path(args.sae_path, "--sae_path", local=True)
        if not Path(args.sae_path).is_dir():
            raise CLIError(f"--sae_path {args.sae_path!r} is a file: give the SAE's folder")
    if args.device is not None:
        check_device(args.device)
    if args.dataset_path is not None:
        check_dataset_path(args.dataset_path, "--dataset_path")
    if args.model_name is not None:
        model_class = args.model_class_name or "HookedTransformer"
        check_model_name(model_class, args.model_name, "--model_name")
    if args.context_size is not None and args.context_size < 1:
        raise CLIError(f"--context_size must be at least 1, got {args.context_size}")
    if args.latents_per_page is not None and args.latents_per_page < 1:
        raise CLIError(f"--latents_per_page must be at least 1, got {args.latents_per_page}")
    check_output_folder(args.output_dir, "--output_dir")
    return parse_features(args.features)


def run(argv: Sequence[str]) -> int:
    values = parse_command_line(build_parser(), argv)
    settings_names = set(DashboardSettings.__dataclass_fields__)
    settings = DashboardSettings(**{k: v for k, v in values.items() if k in settings_names})
    args = argparse.Namespace(**{k: v for k, v in values.items() if k not in settings_names})
    features = _check(args)
    settings.check()
    device = args.device or default_device()
    sae, name = load_sae(args.sae_path, args.release, args.sae_id, device=device)
    if args.hook_name is not None:
        sae.cfg.hook_name, sae.cfg.hook_layer = args.hook_name, layer_of_hook(args.hook_name)
    if features is None:
        features = list(range(sae.cfg.d_sae))
    data = build_dashboard(
        sae,
        features,
        settings,
        output_dir=args.output_dir,
        dataset=args.dataset_path,
        context_size=args.context_size,
        model_name=args.model_name,
        model_class_name=model_class_for(sae, args.sae_path, args.model_class_name),
        sae_name=name,
        neuronpedia=args.neuronpedia,
        latents_per_page=args.latents_per_page,
    )
    _report(data, Path(args.output_dir))
    return 0


def _report(data: Any, output_dir: Path) -> None:
    dead = sum(1 for latent in data.latents if latent.n_active == 0)
    print(
        f"dashboards of {len(data.latents)} latents over {data.n_tokens:,} tokens"
        f"{f' ({dead} never fired)' if dead else ''}: {output_dir / 'index.html'}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 done, 2 a mistake, reported in one line)."""
    args = sys.argv[1:] if argv is None else list(argv)
    return exit_code(report_user_errors(lambda: run(args)))
