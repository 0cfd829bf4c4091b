"""circuit-tracer's layouts (safety-research/circuit-tracer), written and read back.

A folder holds `config.yaml` and the weights:
- `model_kind: transcoder_set`: one `layer_{i}.safetensors` per layer i = 0..L-1, each with
  `W_enc` [d_sae, d_in] (transposed against ours: circuit-tracer encodes with F.linear),
  `W_dec` [d_sae, d_out], `b_enc` [d_sae], `b_dec` [d_out], and as the transcoder has them
  `W_skip` [d_out, d_in] and `activation_function.threshold` [d_sae] (JumpReLU); a TopK
  set's k is config.yaml's `k` (a `k` tensor in the file, which circuit-tracer also writes,
  is read too).
- `model_kind: cross_layer_transcoder`: per layer i, `W_enc_{i}.safetensors` with `W_enc_{i}`
  [n, d_in] (transposed), `b_enc_{i}` [n], `b_dec_{i}` [d_out], and `W_dec_{i}.safetensors`
  with `W_dec_{i}` [n, L - i, d_out] (layer i's latents to layers i..L-1).

`config.yaml` names `model_name`, the per-layer `feature_input_hook` / `feature_output_hook`
(the hook name after `blocks.{i}.`, e.g. `ln2.hook_normalized`, `hook_mlp_out`), the
`activation` (`relu`, `jump_relu`, `topk` with `k`), and, written by sae_lens,
`sae_lens_config` (the SAE config, so a round trip keeps the run's metadata and a CLT its
`topk_scope`). circuit-tracer's CLT class applies ReLU or JumpReLU only: a TopK CLT exported
here loads there with ReLU in place of its TopK (see docs/clt.md).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file

from sae_lens.errors import SAEWeightsError
from sae_lens.saes.clt import CLTLayout, hook_at, is_clt
from sae_lens.toolkit.loaders.common import StateDict, read_safetensors, require_keys

CONFIG_FILENAME = "config.yaml"
TRANSCODER_SET, CLT_KIND = "transcoder_set", "cross_layer_transcoder"
_BLOCK_HOOK = re.compile(r"^blocks\.(\d+|\*)\.(?P<suffix>.+)$")
_THRESHOLD = "activation_function.threshold"


def _suffix(hook_name: str) -> str:
    """`blocks.3.ln2.hook_normalized` (or a `*` pattern) -> `ln2.hook_normalized`."""
    match = _BLOCK_HOOK.match(hook_name)
    if match is None:
        raise ValueError(
            f"circuit-tracer names per-layer hooks 'blocks.<layer>.<hook>'; {hook_name!r} is not one"
        )
    return match["suffix"]


def _activation(cfg: Any, threshold: bool) -> dict[str, Any]:
    if threshold:
        return {"activation": "jump_relu"}
    if cfg.activation_fn_str == "topk":
        return {"activation": "topk", "k": int(cfg.activation_fn_kwargs["k"])}
    return {"activation": "relu"}


def _write_config(path: Path, cfg: Any, kind: str, extra: dict[str, Any]) -> None:
    config = {
        "model_kind": kind,
        "model_name": cfg.model_name,
        "feature_input_hook": _suffix(cfg.hook_name),
        "feature_output_hook": _suffix(cfg.hook_name_out),
        **extra,
        "sae_lens_config": cfg.to_dict(),
    }
    (path / CONFIG_FILENAME).write_text(yaml.safe_dump(config, sort_keys=False))


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu").contiguous()


def export_circuit_tracer(saes: Any | Sequence[Any], path: str | Path) -> Path:
    """Write a CLT, or per-layer transcoders (one per layer 0..L-1, same hooks), as a
    circuit-tracer folder at `path`; returns the folder."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    if not isinstance(saes, Sequence):
        saes = [saes]
    if len(saes) == 1 and is_clt(saes[0].cfg):
        _export_clt(saes[0], folder)
    else:
        _export_transcoder_set(list(saes), folder)
    return folder


def _export_clt(clt: Any, folder: Path) -> None:
    layout = CLTLayout.of(clt.cfg)
    if getattr(clt.cfg, "finetuning_scaling_factor", False):
        raise ValueError("fold the finetuning scaling factor into W_dec before exporting")
    for i in layout.layers:
        rows, outs = layout.latents_of(i), slice(i * layout.d_model_out, None)
        save_file(
            {
                f"W_enc_{i}": _cpu(clt.W_enc[:, rows].T),
                f"b_enc_{i}": _cpu(clt.b_enc[rows]),
                f"b_dec_{i}": _cpu(clt.b_dec[layout.outputs_of(i)]),
            },
            str(folder / f"W_enc_{i}.safetensors"),
        )
        w_dec = clt.W_dec[rows, outs].unflatten(-1, (layout.n_layers - i, layout.d_model_out))
        save_file({f"W_dec_{i}": _cpu(w_dec)}, str(folder / f"W_dec_{i}.safetensors"))
    extra = _activation(clt.cfg, threshold=False) | {"topk_scope": layout.topk_scope}
    _write_config(folder, clt.cfg, CLT_KIND, extra)


def _export_transcoder_set(saes: list[Any], folder: Path) -> None:
    if not saes:
        raise ValueError("export_circuit_tracer needs a CLT or at least one transcoder")
    first = saes[0]
    for layer, sae in enumerate(saes):
        cfg = sae.cfg
        expected = (hook_at(f"blocks.*.{_suffix(first.cfg.hook_name)}", layer),)
        expected += (hook_at(f"blocks.*.{_suffix(first.cfg.hook_name_out)}", layer),)
        if cfg.hook_name_out is None or (cfg.hook_name, cfg.hook_name_out) != expected:
            raise ValueError(
                f"circuit-tracer's transcoder_set is one transcoder per layer 0..L-1 with the "
                f"same hooks: transcoder {layer} should read {expected[0]!r} and write "
                f"{expected[1]!r}, it maps {cfg.hook_name!r} -> {cfg.hook_name_out!r}"
            )
        state = {
            "W_enc": _cpu(sae.W_enc.T),
            "W_dec": _cpu(sae.W_dec),
            "b_enc": _cpu(sae.b_enc),
            "b_dec": _cpu(sae.b_dec),
        }
        if cfg.skip_connection:
            state["W_skip"] = _cpu(sae.W_skip.T)  # [d_out, d_in]: circuit-tracer's x @ W_skip.T
        threshold = _threshold_of(sae)
        if threshold is not None:
            state[_THRESHOLD] = _cpu(threshold)
        save_file(state, str(folder / f"layer_{layer}.safetensors"))
    _write_config(folder, first.cfg, TRANSCODER_SET, _activation(first.cfg, _THRESHOLD in state))


def _threshold_of(sae: Any) -> torch.Tensor | None:
    """A JumpReLU transcoder's threshold [d_sae] (None for other activations)."""
    try:
        return sae.threshold
    except (AttributeError, ValueError):
        return None


# --- reading -------------------------------------------------------------------------------
def read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILENAME
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise SAEWeightsError(f"could not read circuit-tracer config {path}: {e}") from e
    if not isinstance(config, dict) or config.get("model_kind") not in (TRANSCODER_SET, CLT_KIND):
        raise SAEWeightsError(
            f"{path}: model_kind must be {TRANSCODER_SET!r} or {CLT_KIND!r}, got "
            f"{(config or {}).get('model_kind') if isinstance(config, dict) else config!r}"
        )
    for key in ("feature_input_hook", "feature_output_hook"):
        if key not in config:
            raise SAEWeightsError(f"{path} lacks {key!r}")
    return config


def _base_cfg(config: dict[str, Any], layer: int | str) -> dict[str, Any]:
    """An SAE config dict from config.yaml alone (sizes and architecture set by the caller)."""
    saved = dict(config.get("sae_lens_config") or {})
    return {
        "model_name": config.get("model_name", ""),
        "context_size": 1024,
        "prepend_bos": True,
        "dataset_path": "",
        "dtype": "float32",
        "device": "cpu",
        "normalize_activations": "none",
        "apply_b_dec_to_input": False,
        **saved,
        "hook_name": f"blocks.{layer}.{config['feature_input_hook']}",
        "hook_name_out": f"blocks.{layer}.{config['feature_output_hook']}",
    }


def read_transcoder_layer(path: Path, device: str = "cpu") -> tuple[dict[str, Any], StateDict]:
    """(config dict, state dict) of `layer_{i}.safetensors` in a transcoder_set folder."""
    match = re.fullmatch(r"layer_(\d+)\.safetensors", path.name)
    if match is None:
        raise ValueError(f"circuit-tracer transcoder files are named layer_<i>.safetensors: {path}")
    layer = int(match[1])
    config = read_config(path.parent)
    if config["model_kind"] != TRANSCODER_SET:
        raise SAEWeightsError(f"{path.parent} holds a {config['model_kind']}, not a transcoder set")
    raw = read_safetensors(path, device)
    require_keys(raw, ["W_enc", "W_dec", "b_enc", "b_dec"], str(path))
    state: StateDict = {
        "W_enc": raw["W_enc"].T.contiguous(),
        "W_dec": raw["W_dec"],
        "b_enc": raw["b_enc"],
        "b_dec": raw["b_dec"],
    }
    cfg = _base_cfg(config, layer)
    d_sae, d_in = raw["W_enc"].shape
    cfg.update(d_in=d_in, d_sae=d_sae, d_out=int(raw["b_dec"].shape[0]), hook_layer=layer)
    cfg.update(hook_layer_out=layer, skip_connection="W_skip" in raw)
    if "W_skip" in raw:
        state["W_skip"] = raw["W_skip"]  # saved [d_out, d_in], as sae_lens saves it
    if _THRESHOLD in raw:
        state["threshold"] = raw[_THRESHOLD].reshape(-1)
        cfg.update(architecture="jumprelu", activation_fn_str="relu", activation_fn_kwargs={})
    elif config.get("activation") == "topk" or "k" in raw:
        k = int(raw["k"]) if "k" in raw else int(config["k"])
        cfg.update(architecture="topk", activation_fn_str="topk", activation_fn_kwargs={"k": k})
    else:
        cfg.update(architecture="standard", activation_fn_str="relu", activation_fn_kwargs={})
    return cfg, state


def read_clt_folder(folder: Path, device: str = "cpu") -> tuple[dict[str, Any], StateDict]:
    """(config dict, state dict) of a cross_layer_transcoder folder, as an sae_lens CLT."""
    config = read_config(folder)
    if config["model_kind"] != CLT_KIND:
        raise SAEWeightsError(f"{folder} holds a {config['model_kind']}, not a CLT")
    n_layers = len(list(folder.glob("W_enc_*.safetensors")))
    if n_layers == 0:
        raise SAEWeightsError(f"{folder} has no W_enc_<i>.safetensors files")
    enc = [read_safetensors(folder / f"W_enc_{i}.safetensors", device) for i in range(n_layers)]
    dec = [read_safetensors(folder / f"W_dec_{i}.safetensors", device) for i in range(n_layers)]
    if any(f"threshold_{i}" in enc[i] for i in range(n_layers)) or config.get("activation") not in (
        "topk",
        None,
    ):
        raise SAEWeightsError(
            f"{folder}: sae_lens CLTs use TopK, this one uses "
            f"{config.get('activation') or 'jump_relu'}; it cannot be loaded as an sae_lens clt"
        )
    n, d_in = enc[0][f"W_enc_{0}"].shape
    d_out = int(enc[0][f"b_dec_{0}"].shape[0])
    w_dec = torch.zeros(
        n_layers * n, n_layers * d_out, dtype=enc[0]["W_enc_0"].dtype, device=device
    )
    for i in range(n_layers):
        block = dec[i][f"W_dec_{i}"]  # [n, L - i, d_out]
        if tuple(block.shape) != (n, n_layers - i, d_out):
            raise SAEWeightsError(
                f"{folder}: W_dec_{i} has shape {list(block.shape)}, expected "
                f"{[n, n_layers - i, d_out]}"
            )
        w_dec[i * n : (i + 1) * n, i * d_out :] = block.flatten(1)
    state: StateDict = {
        "W_enc": torch.cat([enc[i][f"W_enc_{i}"].T for i in range(n_layers)], dim=1),
        "b_enc": torch.cat([enc[i][f"b_enc_{i}"] for i in range(n_layers)]),
        "W_dec": w_dec,
        "b_dec": torch.cat([enc[i][f"b_dec_{i}"] for i in range(n_layers)]),
    }
    cfg = _base_cfg(config, "*")
    k = int(config.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k") or 1)
    scope = config.get("topk_scope", "layer")
    cfg.update(
        architecture="clt",
        activation_fn_str="topk",
        activation_fn_kwargs={"k": k, "topk_scope": scope},
        d_in=n_layers * d_in,
        d_out=n_layers * d_out,
        d_sae=n_layers * n,
        hook_layer=n_layers - 1,
        hook_layer_out=n_layers - 1,
        skip_connection=False,
    )
    return cfg, state


def read_circuit_tracer(path: Path, device: str = "cpu") -> tuple[dict[str, Any], StateDict]:
    """A CLT folder, or one `layer_{i}.safetensors` of a transcoder_set folder."""
    if path.is_file():
        return read_transcoder_layer(path, device)
    return read_clt_folder(path, device)
