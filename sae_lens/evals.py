"""Evaluate SAEs (the SAELens 5.6.0 module `sae_lens.evals`).

The metrics themselves (`EvalConfig`, `run_evals` and the functions it calls) live in
`sae_lens.eval_metrics`, whose docstring defines every metric and how it differs from 5.6.0;
they are re-exported here. This module adds evaluating many SAEs, from the pretrained registry
(release and SAE id matched by two regexes) and from local SAE folders, writing the results as
JSON and CSV, and the command line `python -m sae_lens.evals` (see `--help`).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from sae_lens.cli_support import (
    CLIError,
    CommandLineParser,
    check_dataset_path,
    check_device,
    check_input_path,
    check_output_folder,
    did_you_mean,
    parse_command_line,
    report_user_errors,
)
from sae_lens.config import MODEL_CLASS_NAMES
from sae_lens.dataset_sources import looks_like_local_path
from sae_lens.eval_metrics import (
    EvalConfig,
    get_downstream_reconstruction_metrics,
    get_eval_everything_config,
    get_featurewise_weight_based_metrics,
    get_git_hash,
    get_library_version,
    get_recons_loss,
    get_sparsity_and_variance_metrics,
    run_evals,
)
from sae_lens.load_model import load_model
from sae_lens.sae import SAE
from sae_lens.toolkit.pretrained_saes_directory import get_pretrained_saes_directory
from sae_lens.training.activations_store import ActivationsStore

if TYPE_CHECKING:
    from transformer_lens.hook_points import HookedRootModule


__all__ = [
    "EvalConfig",
    "all_loadable_saes",
    "build_arg_parser",
    "dict_to_nested",
    "get_downstream_reconstruction_metrics",
    "get_eval_everything_config",
    "get_featurewise_weight_based_metrics",
    "get_git_hash",
    "get_library_version",
    "get_recons_loss",
    "get_saes_from_regex",
    "get_sparsity_and_variance_metrics",
    "main",
    "multiple_evals",
    "nested_dict",
    "process_results",
    "replace_nans_with_negative_one",
    "run_evals",
    "run_evaluations",
]

# Default datasets of `multiple_evals` (5.6.0's); the command line defaults to the embedded corpus.
DEFAULT_EVAL_DATASETS = ["Skylion007/openwebtext", "lighteval/MATH"]
# Tokens the sparsity, variance and feature-density metrics read when the number of batches
# is not given: a latent firing once in 10,000 tokens is then seen about 6 times, so the
# reported densities (down to 1/DENSITY_SAMPLE_TOKENS) tell rare latents from dead ones.
DENSITY_SAMPLE_TOKENS = 65_536


# ---------------------------------------------------------------------------------------------
# Many SAEs: from the pretrained registry and from local folders


def all_loadable_saes() -> list[tuple[str, str, float, float]]:
    """(release, sae_id, expected variance explained, expected L0) for every registry SAE."""
    return [
        (
            release,
            sae_id,
            lookup.expected_var_explained.get(sae_id, math.nan),
            lookup.expected_l0.get(sae_id, math.nan),
        )
        for release, lookup in get_pretrained_saes_directory().items()
        for sae_id in lookup.saes_map
    ]


def get_saes_from_regex(
    sae_regex_pattern: str, sae_block_pattern: str
) -> list[tuple[str, str, float, float]]:
    """Registry SAEs whose release fully matches `sae_regex_pattern` and whose id fully
    matches `sae_block_pattern`."""
    release_regex = re.compile(sae_regex_pattern)
    block_regex = re.compile(sae_block_pattern)
    return [
        sae
        for sae in all_loadable_saes()
        if release_regex.fullmatch(sae[0]) and block_regex.fullmatch(sae[1])
    ]


def nested_dict() -> defaultdict[Any, Any]:
    """A dict whose missing keys are new nested dicts."""
    return defaultdict(nested_dict)


def dict_to_nested(flat_dict: dict[str, Any]) -> defaultdict[Any, Any]:
    """{"a/b/c": v} -> {"a": {"b": {"c": v}}}."""
    nested = nested_dict()
    for key, value in flat_dict.items():
        *parents, last = key.split("/")
        node = nested
        for part in parents:
            node = node[part]
        node[last] = value
    return nested


@dataclass
class _SAESource:
    """Where one SAE to evaluate comes from: a registry release and id, or a local folder."""

    sae_set: str
    sae_id: str
    path: str | None = None

    @property
    def unique_id(self) -> str:
        return f"{self.sae_set}-{self.sae_id}"

    def model_class_name(self, hook_name: str, override: str | None = None) -> str:
        """How to load this SAE's model: `override`, else the `model_class_name` its
        folder's cfg.json records (a training run writes it), else by its hook name:
        TransformerLens hook points all hold `hook_` (`blocks.1.hook_resid_post`), so a
        module path such as `transformer.h.1.mlp` means the Hugging Face model."""
        if override is not None:
            return override
        if self.path is not None:
            try:
                recorded = json.loads((Path(self.path) / "cfg.json").read_text())
            except (OSError, ValueError):  # another folder format: its loader reads it
                recorded = {}
            if isinstance(recorded, dict) and isinstance(recorded.get("model_class_name"), str):
                return recorded["model_class_name"]
        return "HookedTransformer" if "hook_" in hook_name else "AutoModelForCausalLM"

    def load(self, device: str) -> SAE:
        """The SAE. Its warning about loading the model with the SAE's
        `model_from_pretrained_kwargs` is not shown: the evals load it that way."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="This SAE was trained on a model loaded")
            if self.path is not None:
                return SAE.load_from_pretrained(self.path, device=device)
            return SAE.from_pretrained(self.sae_set, self.sae_id, device=device)[0]


LOCAL_SAE_SET = "local"


def _sae_sources(
    sae_regex_pattern: str | None, sae_block_pattern: str | None, sae_paths: list[str]
) -> list[_SAESource]:
    sources = [_SAESource(LOCAL_SAE_SET, path, path=path) for path in sae_paths]
    for path in sae_paths:
        if not Path(path).is_dir():
            raise FileNotFoundError(f"SAE folder {path!r} does not exist")
    if sae_regex_pattern is not None:
        block_pattern = ".*" if sae_block_pattern is None else sae_block_pattern
        matches = get_saes_from_regex(sae_regex_pattern, block_pattern)
        sources += [_SAESource(release, sae_id) for release, sae_id, _, _ in matches]
    if not sources:
        releases = list(get_pretrained_saes_directory()) if sae_regex_pattern else []
        hint = did_you_mean(sae_regex_pattern or "", releases)
        raise ValueError(f"No SAEs matched the given regex patterns{hint}")
    return sources


def _ignore_tokens_of(model: HookedRootModule) -> set[int | None]:
    """The pad, EOS and BOS token ids of the model's tokenizer, as 5.6.0 ignores them."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        return set()
    return {tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id}


def _check_hook(source: _SAESource, sae: SAE, model: HookedRootModule, class_name: str) -> None:
    """Refuse an SAE whose hook the model lacks, before any evaluation, with the closest
    hook names and, for a module path read through a HookedTransformer, the fix."""
    hook_names = list(model.hook_dict)
    if sae.cfg.hook_name in hook_names:
        return
    fix = ""
    if class_name == "HookedTransformer" and "hook_" not in sae.cfg.hook_name:
        fix = (
            "; a module path like this is read through the Hugging Face model: pass "
            "--model_class_name AutoModelForCausalLM"
        )
    raise ValueError(
        f"SAE {source.sae_id!r} reads hook {sae.cfg.hook_name!r}, which {sae.cfg.model_name} "
        f"loaded as {class_name} does not have{did_you_mean(sae.cfg.hook_name, hook_names)}{fix}"
    )


def multiple_evals(
    sae_regex_pattern: str | None,
    sae_block_pattern: str | None,
    n_eval_reconstruction_batches: int,
    n_eval_sparsity_variance_batches: int | None,
    eval_batch_size_prompts: int = 8,
    datasets: list[str] = DEFAULT_EVAL_DATASETS,
    ctx_lens: list[int] | None = [128],
    output_dir: str = "eval_results",
    verbose: bool = False,
    sae_paths: list[str] = [],
    eval_config: EvalConfig | None = None,
    device: str | None = None,
    model_class_name: str | None = None,
) -> list[dict[str, Any]]:
    """Evaluate every registry SAE matching the two regexes (skipped if `sae_regex_pattern`
    is None) and every local SAE folder in `sae_paths`, on each dataset and context length.

    `eval_config` defaults to everything on; its batch counts and batch size are overridden by
    the arguments here. `ctx_lens=None` evaluates each SAE at its own `context_size`;
    `n_eval_sparsity_variance_batches=None` takes enough batches for `DENSITY_SAMPLE_TOKENS`
    tokens. Each SAE's model is loaded as `model_class_name`, or as its folder's cfg.json
    records (see `_SAESource.model_class_name`). Returns one result dict per SAE x context
    length x dataset; its `eval_cfg` says what was used."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    sources = _sae_sources(sae_regex_pattern, sae_block_pattern, sae_paths)
    base_config = eval_config or get_eval_everything_config()
    base_settings = {
        **base_config.__dict__,
        "batch_size_prompts": eval_batch_size_prompts,
        "n_eval_reconstruction_batches": n_eval_reconstruction_batches,
    }

    results: list[dict[str, Any]] = []
    model: HookedRootModule | None = None
    model_key: str | None = None
    n_ctx = 1 if ctx_lens is None else len(ctx_lens)
    # no bar where stderr is not a terminal (logs, pipes): an error there stays one line
    progress = tqdm(total=len(sources) * n_ctx * len(datasets), desc="SAE evals", disable=None)
    for source in sources:
        sae = source.load(device)
        class_name = source.model_class_name(sae.cfg.hook_name, model_class_name)
        wanted_key = json.dumps(
            [class_name, sae.cfg.model_name, sae.cfg.model_from_pretrained_kwargs], sort_keys=True
        )
        if wanted_key != model_key:
            model = None  # free the previous model before loading the next
            model = load_model(
                class_name,
                sae.cfg.model_name,
                device=device,
                model_from_pretrained_kwargs=sae.cfg.model_from_pretrained_kwargs,
            )
            model_key = wanted_key
        assert model is not None
        _check_hook(source, sae, model, class_name)
        for ctx_len in [sae.cfg.context_size] if ctx_lens is None else ctx_lens:
            n_density_batches = n_eval_sparsity_variance_batches or math.ceil(
                DENSITY_SAMPLE_TOKENS / (eval_batch_size_prompts * ctx_len)
            )
            eval_config = EvalConfig(
                **{**base_settings, "n_eval_sparsity_variance_batches": n_density_batches}
            )
            for dataset in datasets:
                progress.set_postfix_str(f"{source.unique_id} ctx={ctx_len} {dataset}")
                store = ActivationsStore.from_sae(
                    model,
                    sae,
                    context_size=ctx_len,
                    dataset=dataset,
                    store_batch_size_prompts=eval_batch_size_prompts,
                    device=device,
                )
                store.shuffle_input_dataset(seed=42)
                scalar_metrics, feature_metrics = run_evals(
                    sae=sae,
                    activation_store=store,
                    model=model,
                    eval_config=eval_config,
                    ignore_tokens=_ignore_tokens_of(model),
                    verbose=verbose,
                )
                result = nested_dict()
                result["unique_id"] = source.unique_id
                result["sae_set"] = source.sae_set
                result["sae_id"] = source.sae_id
                result["eval_cfg"]["context_size"] = ctx_len
                result["eval_cfg"]["dataset"] = dataset
                result["eval_cfg"]["model_class_name"] = class_name
                result["eval_cfg"] |= eval_config.__dict__
                result["metrics"] = scalar_metrics
                result["feature_metrics"] = feature_metrics
                result["sae_cfg"] = sae.cfg.to_dict()
                results.append(result)
                progress.update()
    progress.close()
    return results


def run_evaluations(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run `multiple_evals` from parsed command-line arguments (see `build_arg_parser`).

    It is called with 5.6.0's keyword arguments; `sae_paths`, `eval_config` and `device`
    are added only when the arguments ask for local folders, chosen metrics or a device."""
    from sae_lens.embedded import EMBEDDED_DATASET_NAME

    sae_paths = list(getattr(args, "sae_paths", None) or [])
    sae_regex = args.sae_regex_pattern
    block_regex = args.sae_block_pattern
    if sae_regex is not None and Path(sae_regex).is_dir():
        sae_paths.insert(0, sae_regex)  # a folder given in place of the regex
        sae_regex = None
    if sae_regex is None and not sae_paths:
        raise ValueError("give SAE_REGEX and BLOCK_REGEX, an SAE folder, or --sae_paths")
    n_registry = len(get_saes_from_regex(sae_regex, block_regex or ".*")) if sae_regex else 0
    print(f"SAEs to evaluate: {n_registry} from the registry, {len(sae_paths)} local folders")
    return multiple_evals(
        sae_regex_pattern=sae_regex,
        sae_block_pattern=block_regex,
        n_eval_reconstruction_batches=args.n_eval_reconstruction_batches,
        n_eval_sparsity_variance_batches=args.n_eval_sparsity_variance_batches,
        eval_batch_size_prompts=args.batch_size_prompts,
        datasets=args.datasets or [EMBEDDED_DATASET_NAME],
        ctx_lens=args.ctx_lens,
        output_dir=args.output_dir,
        verbose=args.verbose,
        **_extra_eval_options(args, sae_paths),
    )


def _extra_eval_options(args: argparse.Namespace, sae_paths: list[str]) -> dict[str, Any]:
    """`multiple_evals` arguments beyond 5.6.0's, for the options that are set."""
    options: dict[str, Any] = {}
    if sae_paths:
        options["sae_paths"] = sae_paths
    if any(getattr(args, flag, False) for flag in _METRIC_FLAGS):
        options["eval_config"] = _eval_config_from_args(args)
    if getattr(args, "device", None) is not None:
        options["device"] = args.device
    if getattr(args, "model_class_name", None) is not None:
        options["model_class_name"] = args.model_class_name
    return options


# EvalConfig switches exposed on the command line, with what each computes.
_METRIC_FLAGS = {
    "compute_kl": "KL divergence of the next-token distribution with the SAE spliced in "
    "and with the activation zero-ablated, and the KL score.",
    "compute_ce_loss": "Cross-entropy loss without the SAE, with it spliced in and with the "
    "activation zero-ablated, and the CE loss score.",
    "compute_l2_norms": "L2 norms of SAE input and output, their ratio and the relative "
    "reconstruction bias.",
    "compute_sparsity_metrics": "L0 and L1 of the latents.",
    "compute_variance_metrics": "Explained variance, MSE and cosine similarity of the "
    "reconstruction.",
    "compute_featurewise_density_statistics": "Per-latent firing density.",
    "compute_featurewise_weight_based_metrics": "Per-latent encoder bias, encoder norm and "
    "encoder/decoder cosine similarity.",
}


def _eval_config_from_args(args: argparse.Namespace) -> EvalConfig:
    """Only the metrics flagged on the command line."""
    return EvalConfig(**{flag: bool(getattr(args, flag, False)) for flag in _METRIC_FLAGS})


# ---------------------------------------------------------------------------------------------
# Writing results


def replace_nans_with_negative_one(obj: Any) -> Any:
    """A copy of nested dicts/lists with every float NaN replaced by -1."""
    if isinstance(obj, dict):
        return {key: replace_nans_with_negative_one(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [replace_nans_with_negative_one(item) for item in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return -1
    return obj


def _result_filename(result: dict[str, Any]) -> str:
    cfg = result["eval_cfg"]
    name = f"{result['unique_id']}_{cfg['context_size']}_{cfg['dataset']}.json"
    return name.replace("/", "_").replace("\\", "_")


def process_results(
    eval_results: list[dict[str, Any]], output_dir: str
) -> dict[str, list[Path] | Path]:
    """Write one JSON per result, all results in `all_eval_results.json`, and
    `all_eval_results.csv` with one row per result and one column per flattened scalar
    (per-latent lists stay in the JSON files). NaN is written as -1."""
    import pandas as pd

    output_path = Path(output_dir)
    output_path.mkdir(parents=True, exist_ok=True)
    cleaned = [replace_nans_with_negative_one(result) for result in eval_results]

    individual = []
    for result in cleaned:
        path = output_path / _result_filename(result)
        path.write_text(json.dumps(result, indent=2, default=str))
        individual.append(path)
    combined = output_path / "all_eval_results.json"
    combined.write_text(json.dumps(cleaned, indent=2, default=str))

    table = pd.json_normalize(cleaned)
    table = table.drop(columns=[c for c in table.columns if c.startswith("feature_metrics.")])
    csv_path = output_path / "all_eval_results.csv"
    table.to_csv(csv_path, index=False)
    return {"individual_jsons": individual, "combined_json": combined, "csv": csv_path}


# ---------------------------------------------------------------------------------------------
# Command line

EVALS_PROG = "python -m sae_lens.evals"


def build_arg_parser() -> CommandLineParser:
    """The parser of `python -m sae_lens.evals`."""
    parser = CommandLineParser(
        prog=EVALS_PROG,
        description=(
            "Evaluate SAEs from the pretrained registry (release and SAE id matched by two "
            "regexes) and/or local SAE folders, on each dataset and context length. Writes one "
            "JSON per SAE x context length x dataset, all_eval_results.json and "
            "all_eval_results.csv (NaN written as -1) into --output_dir. Without any --compute_* "
            "flag every metric is computed. Mistakes exit with code 2 and one line naming the "
            "culprit."
        ),
    )
    parser.add_config_option()
    parser.add_argument(
        "sae_regex_pattern",
        nargs="?",
        help="Regex fully matching registry release names, e.g. 'gpt2-small-res-jb'. An "
        "existing folder here is evaluated as a local SAE folder instead.",
    )
    parser.add_argument(
        "sae_block_pattern",
        nargs="?",
        help="Regex fully matching SAE ids within the releases, e.g. 'blocks.8.hook_resid_pre' "
        "(default: all).",
    )
    parser.add_argument(
        "--sae_paths",
        nargs="+",
        default=[],
        metavar="PATH",
        help="Local SAE folders (cfg.json + sae_weights.safetensors) to evaluate as well.",
    )
    parser.add_argument(
        "--model_class_name",
        choices=MODEL_CLASS_NAMES,
        default=None,
        help="How to load the SAEs' model (default: as each SAE folder's cfg.json records it, "
        "so an SAE trained through the Hugging Face path loads AutoModelForCausalLM; without a "
        "record, HookedTransformer for hook names holding 'hook_', else AutoModelForCausalLM).",
    )
    for flag, kind, default, what in (
        ("batch_size_prompts", int, 16, "Prompts per evaluation batch"),
        ("n_eval_reconstruction_batches", int, 10, "Batches for the KL and CE-loss metrics"),
    ):
        parser.add_argument(
            f"--{flag}", type=kind, default=default, help=f"{what} (default: %(default)s)."
        )
    parser.add_argument(
        "--n_eval_sparsity_variance_batches",
        type=int,
        default=None,
        help="Batches for the sparsity, variance, L2 and feature-density metrics (default: "
        f"enough for {DENSITY_SAMPLE_TOKENS:,} tokens, so densities down to about 1e-4 are "
        "told from dead latents).",
    )
    for flag, what in _METRIC_FLAGS.items():
        parser.add_argument(f"--{flag}", action="store_true", help=what)
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=None,
        help="Datasets to evaluate on: the embedded corpus name, a local dataset path or a "
        "Hugging Face dataset (default: the embedded corpus, pydoc-corpus).",
    )
    parser.add_argument(
        "--ctx_lens",
        nargs="+",
        type=int,
        default=None,
        help="Context lengths to evaluate on (default: each SAE's own context_size).",
    )
    parser.add_argument(
        "--output_dir",
        default="eval_results",
        help="Directory to write results into (default: %(default)s).",
    )
    parser.add_argument(
        "--device", default=None, help="Device for model and SAEs (default: cuda if available)."
    )
    parser.add_argument(
        "--plots",
        action="store_true",
        help="Also write a feature-density histogram PNG per result and an index.html summary.",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="Show progress bars for the batches too."
    )
    return parser


def _check_arguments(args: argparse.Namespace) -> None:
    """What the command line refuses before loading any SAE or model."""
    for name in ("batch_size_prompts", "n_eval_reconstruction_batches"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if (
        args.n_eval_sparsity_variance_batches is not None
        and args.n_eval_sparsity_variance_batches < 1
    ):
        raise CLIError(
            "--n_eval_sparsity_variance_batches must be at least 1, got "
            f"{args.n_eval_sparsity_variance_batches}"
        )
    for ctx_len in args.ctx_lens or []:
        if ctx_len < 1:
            raise CLIError(f"--ctx_lens must be at least 1, got {ctx_len}")
    if args.device is not None:
        check_device(args.device)
    for dataset in args.datasets or []:
        check_dataset_path(dataset, "--datasets entry")
    for path in args.sae_paths:
        check_input_path(path, "SAE folder", local=True)
    if args.sae_regex_pattern is not None and looks_like_local_path(args.sae_regex_pattern):
        check_input_path(args.sae_regex_pattern, "SAE folder")
    check_output_folder(args.output_dir, "--output_dir")


def _print_what_was_used(results: list[dict[str, Any]]) -> None:
    for result in results:
        cfg = result["eval_cfg"]
        own = cfg["context_size"] == result["sae_cfg"]["context_size"]
        n_batches, batch = cfg["n_eval_sparsity_variance_batches"], cfg["batch_size_prompts"]
        print(
            f"{result['unique_id']} on {cfg['dataset']}: context {cfg['context_size']}"
            f"{' (the SAE’s context_size)' if own else ''}, model "
            f"{result['sae_cfg']['model_name']} as {cfg['model_class_name']}; sparsity and "
            f"feature density over {n_batches} batches x {batch} prompts = "
            f"{n_batches * batch * cfg['context_size']:,} tokens"
        )


def main(argv: list[str] | None = None) -> dict[str, list[Path] | Path]:
    """Entry point of `python -m sae_lens.evals`; returns the paths written. A mistake prints
    one line (`error: ...`) and exits with code 2, writing no results."""
    outcome = report_user_errors(lambda: _evaluate_from_command_line(argv))
    if isinstance(outcome, int):
        raise SystemExit(outcome)
    return outcome


def _evaluate_from_command_line(argv: list[str] | None) -> dict[str, list[Path] | Path]:
    values = parse_command_line(build_arg_parser(), sys.argv[1:] if argv is None else argv)
    args = argparse.Namespace(**values)
    _check_arguments(args)
    results = run_evaluations(args)
    _print_what_was_used(results)
    output_files = process_results(results, args.output_dir)
    print("Evaluation complete. Output files:")
    print(f"Individual JSONs: {len(output_files['individual_jsons'])}")  # type: ignore[arg-type]
    print(f"Combined JSON: {output_files['combined_json']}")
    print(f"CSV: {output_files['csv']}")
    if args.plots:
        from sae_lens.eval_reports import write_eval_report

        report = write_eval_report(replace_nans_with_negative_one(results), args.output_dir)
        output_files["report"] = report
        print(f"Report: {report}")
    return output_files


if __name__ == "__main__":
    main()
