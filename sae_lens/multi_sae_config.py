"""The config of a multi-SAE run: many SAEs trained on one stream of model activations.

`MultiSAETrainingRunnerConfig` holds `LanguageModelSAERunnerConfig` fields at the top level
(shared by every SAE, or defaults for them) and `saes`, a mapping from an SAE's name to the
fields in which that SAE differs (hook, architecture, width, sparsity...). Fields that
decide the data stream, the run's length and batches, or the run folder and its logging,
are shared: an SAE may not set them (`SHARED_FIELDS`).

A `hook_name` holding `*` is a pattern: each `*` matches one dot-free part of a hook name,
and the SAE becomes one SAE per matching hook point of the model, named
`<name>_<matched part>` (`blocks.*.hook_resid_post` -> `resid_0`, `resid_1`...). An SAE
without `hook_layer` gets its hook's layer. A transcoder's `hook_name_out` may be a pattern
too: its `*`s take the parts `hook_name`'s matched (`blocks.*.ln2.hook_normalized` with
`blocks.*.hook_mlp_out`: one transcoder per layer's MLP).

`resolve(hook_names)` turns the config into one complete `LanguageModelSAERunnerConfig` per
SAE, its `checkpoint_path` `<run folder>/<name>`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from sae_lens.config import LanguageModelSAERunnerConfig, new_run_id
from sae_lens.errors import did_you_mean

RUN_FIELDS = frozenset(f.name for f in fields(LanguageModelSAERunnerConfig))
# Every SAE of a run has the same value of these: they decide the tokens and their order, the
# model's forward, how many steps of which batches, the run folder and its logging.
SHARED_FIELDS = frozenset(
    {
        "model_name",
        "model_class_name",
        "model_kwargs",
        "model_from_pretrained_kwargs",
        "dataset_path",
        "dataset_trust_remote_code",
        "streaming",
        "is_dataset_tokenized",
        "context_size",
        "use_cached_activations",
        "b_dec_init_method",
        "n_batches_in_buffer",
        "training_tokens",
        "finetuning_tokens",
        "store_batch_size_prompts",
        "normalize_activations",
        "seqpos_slice",
        "device",
        "act_store_device",
        "seed",
        "dtype",
        "prepend_bos",
        "autocast_lm",
        "compile_llm",
        "llm_compilation_mode",
        "reuse_freed_memory",
        "fused_forward",
        "train_batch_size_tokens",
        "recipe",
        "n_eval_batches",
        "eval_batch_size_prompts",
        "log_to_wandb",
        "log_activations_store_to_wandb",
        "log_optimizer_state_to_wandb",
        "wandb_project",
        "wandb_id",
        "run_name",
        "wandb_entity",
        "wandb_log_frequency",
        "eval_every_n_wandb_logs",
        "resume",
        "n_checkpoints",
        "checkpoint_spacing",
        "checkpoint_path",
        "verbose",
        "exclude_special_tokens",
        "sae_lens_version",
        "sae_lens_training_version",
    }
)
# Shared fields whose resolved values may differ between SAEs (each SAE's own folder and name).
_PER_SAE_DERIVED = frozenset({"checkpoint_path", "run_name"})
# Written into run configs (derived, not settable): a config file may hold them.
_DERIVED_KEYS = frozenset({"tokens_per_buffer"})
_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
RUN_CONFIG_FILENAME = "run_config.json"


def check_stack_saes(value: Any) -> None:
    """Refuse a `stack_saes` setting other than "auto", true or false."""
    if not (value == "auto" or isinstance(value, bool)):
        raise ValueError(f'stack_saes must be "auto", true or false, got {value!r}')


class MultiSAETrainingRunnerConfig:
    """Shared `LanguageModelSAERunnerConfig` fields (keyword arguments) and `saes`, a
    mapping from SAE name to the fields of that SAE (see the module docstring). Mistakes
    (unknown fields, shared fields set per SAE, bad names) raise a ValueError at once."""

    def __init__(
        self,
        saes: Mapping[str, Mapping[str, Any] | None],
        distribute_saes: bool = False,
        stack_saes: str | bool = "auto",
        **shared: Any,
    ) -> None:
        if not isinstance(distribute_saes, bool):
            raise ValueError(f"distribute_saes must be true or false, got {distribute_saes!r}")
        check_stack_saes(stack_saes)
        # under torchrun: each SAE in one process, on the whole batch (else data parallel)
        self.distribute_saes = distribute_saes
        # SAEs of one shape stepped together: "auto" on CUDA (see training.stacked_step)
        self.stack_saes = stack_saes
        self.shared = {k: v for k, v in shared.items() if k not in _DERIVED_KEYS}
        _check_fields(self.shared, "the multi-SAE config")
        self.saes = _checked_saes(saes)
        self.resume = bool(self.shared.get("resume", False))
        base = str(self.shared.get("checkpoint_path", "checkpoints"))
        if self.resume:
            self.run_dir = find_multi_run(base)
        else:
            self.run_dir = Path(base) / (self.shared.get("wandb_id") or new_run_id())
        # Every value is checked now, before any model is loaded (a pattern is kept as the
        # hook_name here: only a model can expand it).
        self._templates = {
            name: self._run_config(name, fields, **self._pattern_placeholders(name, fields))
            for name, fields in self.saes.items()
        }
        _check_shared_values(self._templates)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MultiSAETrainingRunnerConfig:
        """From a dict such as `to_dict()` returns (or a YAML/JSON file holds)."""
        data = dict(data)
        if "saes" not in data:
            raise ValueError(
                "the multi-SAE config has no `saes`: map each SAE's name to its fields"
            )
        return cls(data.pop("saes"), **data)

    def to_dict(self) -> dict[str, Any]:
        """The config as given (JSON values), the run folder as `checkpoint_path`: a file
        of it, with `resume: true`, continues the run."""
        return {
            **self.shared,
            "checkpoint_path": str(self.run_dir.resolve()),
            **({"distribute_saes": True} if self.distribute_saes else {}),
            **({} if self.stack_saes == "auto" else {"stack_saes": self.stack_saes}),
            "saes": {name: dict(values) for name, values in self.saes.items()},
        }

    @property
    def templates(self) -> dict[str, LanguageModelSAERunnerConfig]:
        """Each entry of `saes` as a run config, before pattern expansion (a pattern is
        its hook_name)."""
        return dict(self._templates)

    @property
    def template(self) -> LanguageModelSAERunnerConfig:
        """The run config of the first SAE (before pattern expansion): its shared fields
        are every SAE's."""
        return next(iter(self._templates.values()))

    def _pattern_placeholders(self, name: str, per_sae: Mapping[str, Any]) -> dict[str, Any]:
        """What a template needs in place of what a pattern leaves open: the output layer
        of a `hook_name_out` pattern (each expanded SAE takes it from its output hook)."""
        hook_name = str(per_sae.get("hook_name", self.shared.get("hook_name", "")))
        hook_name_out = per_sae.get("hook_name_out", self.shared.get("hook_name_out"))
        _check_output_pattern(name, hook_name, hook_name_out, per_sae)
        if isinstance(hook_name_out, str) and "*" in hook_name_out:
            return {"hook_layer_out": 0}
        return {}

    def _run_config(
        self, name: str, per_sae: Mapping[str, Any], **extra: Any
    ) -> LanguageModelSAERunnerConfig:
        values = {**self.shared, **per_sae, **extra, "resume": False, "checkpoint_path": "."}
        try:
            cfg = LanguageModelSAERunnerConfig(**values)
        except (TypeError, ValueError) as error:
            raise ValueError(f"SAE {name!r}: {error}") from None
        cfg.resume = self.resume
        cfg.checkpoint_path = str(self.run_dir / name)
        return cfg

    def resolve(
        self, hook_names: list[str], hook_layer_of: Any = None
    ) -> dict[str, LanguageModelSAERunnerConfig]:
        """One run config per SAE, patterns expanded over the model's `hook_names`.
        `hook_layer_of(hook_name) -> int | None` gives a hook's layer (default: the first
        number in its name)."""
        resolved: dict[str, LanguageModelSAERunnerConfig] = {}
        for name, per_sae in self.saes.items():
            hook_name = str(per_sae.get("hook_name", self.shared.get("hook_name", "")))
            expanded = _expand(name, hook_name, hook_names)
            if "*" in hook_name and "hook_layer" in per_sae:
                raise ValueError(
                    f"SAE {name!r} sets hook_layer with the hook_name pattern {hook_name!r}: "
                    "each hook the pattern matches gets its own layer; remove hook_layer"
                )
            hook_name_out = per_sae.get("hook_name_out", self.shared.get("hook_name_out"))
            for sae_name, hook, parts in expanded:
                if sae_name in resolved:
                    raise ValueError(
                        f"two SAEs are named {sae_name!r} (after expanding hook_name patterns): "
                        "rename one"
                    )
                extra: dict[str, Any] = {"hook_name": hook}
                if hook_name_out is not None and "*" in hook_name_out:
                    extra["hook_name_out"] = _fill_pattern(hook_name_out, parts)
                given = "hook_layer" in per_sae or "hook_layer" in self.shared
                if "*" in hook_name or not given:
                    layer = hook_layer_of(hook) if hook_layer_of else None
                    extra["hook_layer"] = _first_number(hook) if layer is None else layer
                resolved[sae_name] = self._run_config(sae_name, {**per_sae, **extra})
        _check_shared_values(resolved)
        return resolved


def _check_fields(values: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(values) - RUN_FIELDS)
    if unknown:
        hint = did_you_mean(unknown[0], sorted(RUN_FIELDS))
        raise ValueError(
            f"{where} sets {unknown[0]!r}, which is not a LanguageModelSAERunnerConfig field{hint}"
        )


def _checked_saes(saes: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(saes, Mapping) or not saes:
        raise ValueError(
            "`saes` must map each SAE's name to its fields, e.g. "
            "{'resid0': {'hook_name': 'blocks.0.hook_resid_post'}}; got "
            f"{type(saes).__name__} {saes!r}"
        )
    checked: dict[str, dict[str, Any]] = {}
    for name, values in saes.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
            raise ValueError(
                f"SAE name {name!r} is not a folder name: use letters, digits, '_', '-' and '.'"
            )
        values = {} if values is None else values
        if not isinstance(values, Mapping):
            raise ValueError(f"SAE {name!r}: its fields must be a mapping, got {values!r}")
        _check_fields(values, f"SAE {name!r}")
        shared = sorted(set(values) & SHARED_FIELDS)
        if shared:
            raise ValueError(
                f"SAE {name!r} sets {shared[0]!r}, which every SAE of a multi-SAE run shares: "
                "set it at the top level of the config"
            )
        checked[name] = dict(values)
    return checked


def _check_shared_values(cfgs: Mapping[str, LanguageModelSAERunnerConfig]) -> None:
    """Refuse SAEs whose resolved shared fields differ (a recipe can derive them)."""
    names = list(cfgs)
    first = cfgs[names[0]].to_dict()
    for name in names[1:]:
        other = cfgs[name].to_dict()
        for field in sorted(SHARED_FIELDS - _PER_SAE_DERIVED):
            if other[field] != first[field]:
                raise ValueError(
                    f"SAEs {names[0]!r} and {name!r} resolve to different {field} "
                    f"({first[field]!r} and {other[field]!r}), which every SAE of a multi-SAE "
                    "run shares: set it at the top level"
                )


def _check_output_pattern(
    name: str, hook_name: str, hook_name_out: Any, per_sae: Mapping[str, Any]
) -> None:
    """A transcoder's `hook_name_out` pattern takes the parts `hook_name`'s pattern matched:
    it must hold as many `*` (and leave the output layer to the name)."""
    if not isinstance(hook_name_out, str) or "*" not in hook_name_out:
        return
    if hook_name_out.count("*") != hook_name.count("*"):
        raise ValueError(
            f"SAE {name!r}: hook_name_out {hook_name_out!r} must hold as many '*' as "
            f"hook_name {hook_name!r}: each '*' takes the part the same '*' of hook_name matched"
        )
    if "hook_layer_out" in per_sae:
        raise ValueError(
            f"SAE {name!r} sets hook_layer_out with the hook_name_out pattern "
            f"{hook_name_out!r}: each output hook gets its layer from its name; remove "
            "hook_layer_out"
        )


def _fill_pattern(pattern: str, parts: tuple[str, ...]) -> str:
    """`pattern` with its `*`s replaced by `parts`, in order."""
    pieces = pattern.split("*")
    return "".join(p + part for p, part in zip(pieces, parts, strict=False)) + pieces[-1]


def _expand(
    name: str, hook_name: str, hook_names: list[str]
) -> list[tuple[str, str, tuple[str, ...]]]:
    """(SAE name, hook, the parts the `*`s matched) for `hook_name`, or for each hook
    matching it if it is a pattern."""
    if "*" not in hook_name:
        return [(name, hook_name, ())]
    pattern = re.compile(re.escape(hook_name).replace(r"\*", r"([^.]+)"))
    found = [(m.groups(), hook) for hook in hook_names if (m := pattern.fullmatch(hook))]
    if not found:
        raise ValueError(
            f"SAE {name!r}: no hook point of the model matches hook_name {hook_name!r} "
            f"('*' matches one dot-free part, e.g. blocks.*.hook_resid_post); "
            f"hooks look like {hook_names[-1]!r}"
        )
    return [(f"{name}_{'_'.join(parts)}", hook, parts) for parts, hook in found]


def _first_number(hook_name: str) -> int:
    match = re.search(r"(?:^|\.)(\d+)(?:\.|$)", hook_name)
    return int(match.group(1)) if match else 0


def find_multi_run(checkpoint_path: str | Path) -> Path:
    """The multi-SAE run folder to resume: `checkpoint_path` itself when it holds a
    `run_config.json`, else its most recently updated subfolder that does."""
    path = Path(checkpoint_path)
    if (path / RUN_CONFIG_FILENAME).is_file():
        return path
    runs = (
        [p for p in path.iterdir() if (p / RUN_CONFIG_FILENAME).is_file()] if path.is_dir() else []
    )
    if not runs:
        raise FileNotFoundError(
            f"resume=True but {str(path)!r} is not a multi-SAE run folder (it has no "
            f"{RUN_CONFIG_FILENAME}) nor holds one: pass the run folder to continue"
        )
    return max(runs, key=lambda p: (p / RUN_CONFIG_FILENAME).stat().st_mtime)
