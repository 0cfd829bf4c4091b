"""Check our pretrained-SAE loading against the real packages (not part of the test suite).

1. Registry: SAELens 5.6.0's `get_pretrained_saes_directory()` (in the oracle venv) holds
   the same facts as ours.
2. Loaders: for one release of each registered format, tiny files are written in that
   format into an offline Hugging Face cache; SAELens 5.6.0's `SAE.from_pretrained` and
   ours load them; weights, config and outputs on the same inputs are compared.
3. Peer packages: EleutherAI sparsify and saprmarks/dictionary_learning (in their own
   venv) build and save SAEs in their own format and compute their outputs; ours loads
   the folders with `SAE.load_from_pretrained` and must give the same outputs.

    python scripts/compat_loaders.py \
        --oracle-python /work/oracle-venv/bin/python \
        --peer-python /work/peer-loaders-venv/bin/python

The peer venv: `python -m venv V; V/bin/pip install torch==2.13.0 eai-sparsify einops;
V/bin/pip install --no-deps dictionary-learning` (its training buffer needs nnsight, which
the peer script stubs out: only the dictionary classes are used).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

REPO_ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
D_IN, D_SAE = 6, 10


# --- 1. registry ---------------------------------------------------------------------------

DUMP_REGISTRY = """
import json, sys
from importlib import resources
import yaml
from sae_lens.toolkit.pretrained_saes_directory import get_pretrained_saes_directory
# get_norm_scaling_factor re-reads the YAML on each call in 5.6.0: read it once here.
raw = yaml.load(resources.files("sae_lens").joinpath("pretrained_saes.yaml").read_text(),
                Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
factors = {(name, s["id"]): s.get("norm_scaling_factor") for name, r in raw.items() for s in r["saes"]}
out = {}
for name, r in get_pretrained_saes_directory().items():
    out[name] = dict(repo_id=r.repo_id, model=r.model, conversion_func=r.conversion_func,
        saes_map=r.saes_map, expected_l0=r.expected_l0,
        expected_var_explained=r.expected_var_explained, neuronpedia_id=r.neuronpedia_id,
        config_overrides=r.config_overrides,
        norm_scaling_factor={i: factors[(name, i)] for i in r.saes_map})
json.dump(out, open(sys.argv[1], "w"))
"""


def compare_registry(oracle_python: str, workdir: Path) -> list[str]:
    """Differences between the oracle's registry and ours (empty when they agree)."""
    dump = workdir / "oracle_registry.json"
    subprocess.run([oracle_python, "-c", DUMP_REGISTRY, str(dump)], check=True, cwd=workdir)
    oracle = json.loads(dump.read_text())
    subprocess.run(
        [sys.executable, "-c", DUMP_REGISTRY, str(workdir / "ours.json")], check=True, cwd=REPO_ROOT
    )
    ours = json.loads((workdir / "ours.json").read_text())
    problems = []
    if set(oracle) != set(ours):
        problems.append(f"release names differ: {sorted(set(oracle) ^ set(ours))}")
    for name in sorted(set(oracle) & set(ours)):
        for key, value in oracle[name].items():
            mine = ours[name][key]
            if key == "conversion_func" and value is None:
                value = "sae_lens"  # our registry names the default format explicitly
            if mine != value:
                problems.append(f"{name}.{key}: oracle {str(value)[:80]} != ours {str(mine)[:80]}")
    n_saes = sum(len(r["saes_map"]) for r in ours.values())
    print(f"registry: {len(ours)} releases, {n_saes} SAEs compared; {len(problems)} differences")
    return problems


# --- 2. loaders vs SAELens 5.6.0 -----------------------------------------------------------


def _rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _repo(cache: Path, repo_id: str) -> Path:
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(COMMIT)
    snapshot = repo_dir / "snapshots" / COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def _sae_lens_case(cache: Path, repo_id: str, folder: str, hook: str, seed: int) -> None:
    root = _repo(cache, repo_id) / folder
    cfg = {
        "architecture": "standard", "d_in": D_IN, "d_sae": D_SAE, "dtype": "float32",
        "device": "cpu", "model_name": "gpt2-small", "hook_name": hook, "hook_layer": 0,
        "hook_head_index": None, "activation_fn_str": "relu", "apply_b_dec_to_input": True,
        "context_size": 128, "dataset_path": "d", "normalize_activations": "none",
        "prepend_bos": True, "finetuning_scaling_factor": False,
    }  # fmt: skip
    _json(root / "cfg.json", cfg)
    weights = {
        "W_enc": _rand(D_IN, D_SAE, seed=seed), "W_dec": _rand(D_SAE, D_IN, seed=seed + 1),
        "b_enc": _rand(D_SAE, seed=seed + 2), "b_dec": _rand(D_IN, seed=seed + 3),
    }  # fmt: skip
    save_file(weights, str(root / "sae_weights.safetensors"))
    save_file({"sparsity": _rand(D_SAE, seed=seed + 4)}, str(root / "sparsity.safetensors"))


def _openmoss(seed: int, d_sae: int = D_SAE) -> dict[str, torch.Tensor]:
    return {
        "encoder.weight": _rand(d_sae, D_IN, seed=seed) / 3,
        "encoder.bias": _rand(d_sae, seed=seed + 1) / 3,
        "decoder.weight": _rand(D_IN, d_sae, seed=seed + 2),
        "decoder.bias": _rand(D_IN, seed=seed + 3),
    }


def _dictionary_learning_case(cache: Path, path: str, dict_class: str, seed: int) -> None:
    root = _repo(cache, "canrager/lm_sae") / path
    trainer = {"dict_class": dict_class, "activation_dim": D_IN, "dict_size": D_SAE,
               "layer": 3, "lm_name": "EleutherAI/pythia-70m-deduped", "k": 3}  # fmt: skip
    _json(root / "config.json", {"trainer": trainer, "buffer": {"ctx_len": 128}})
    lin = {"encoder.weight": _rand(D_SAE, D_IN, seed=seed),
           "decoder.weight": _rand(D_IN, D_SAE, seed=seed + 1)}  # fmt: skip
    if dict_class == "AutoEncoder":
        ae = {
            **lin,
            "encoder.bias": _rand(D_SAE, seed=seed + 2),
            "bias": _rand(D_IN, seed=seed + 3),
        }
    elif dict_class == "GatedAutoEncoder":
        ae = {**lin, "decoder_bias": _rand(D_IN, seed=seed + 2), "r_mag": _rand(D_SAE, seed=seed + 3) / 4,
              "gate_bias": _rand(D_SAE, seed=seed + 4), "mag_bias": _rand(D_SAE, seed=seed + 5)}  # fmt: skip
    else:
        ae = {**lin, "encoder.bias": _rand(D_SAE, seed=seed + 2), "b_dec": _rand(D_IN, seed=seed + 3),
              "k": torch.tensor(3, dtype=torch.int), "threshold": torch.tensor(-1.0)}  # fmt: skip
    torch.save(ae, root / "ae.pt")


def write_oracle_cases(cache: Path) -> list[dict[str, Any]]:
    """Files for one release of each format; returns (release, sae_id, input shape) cases."""
    _sae_lens_case(cache, "jbloom/GPT2-Small-SAEs-Reformatted", "blocks.0.hook_resid_pre",
                   "blocks.0.hook_resid_pre", seed=1)  # fmt: skip
    _sae_lens_case(cache, "JoshEngels/Mistral-7B-Residual-Stream-SAEs", "mistral_7b_layer_8",
                   "blocks.8.hook_resid_pre", seed=10)  # fmt: skip

    gemma = _repo(cache, "google/gemma-scope-2b-pt-res") / "embedding/width_4k/average_l0_6"
    gemma.mkdir(parents=True, exist_ok=True)
    d_in, d_sae = 2304, 4096
    np.savez(
        gemma / "params.npz",
        W_enc=(_rand(d_in, d_sae, seed=20) / 40).numpy(), W_dec=_rand(d_sae, d_in, seed=21).numpy(),
        b_enc=_rand(d_sae, seed=22).numpy() / 10, b_dec=_rand(d_in, seed=23).numpy(),
        threshold=_rand(d_sae, seed=24).abs().numpy() / 10,
    )  # fmt: skip

    llama = _repo(cache, "fnlp/Llama3_1-8B-Base-LXR-8x") / "Llama3_1-8B-Base-L8R-8x"
    _json(llama / "hyperparams.json", {"d_model": D_IN, "d_sae": D_SAE,
          "hook_point_in": "blocks.8.hook_resid_post", "jump_relu_threshold": 0.2})  # fmt: skip
    (llama / "checkpoints").mkdir(parents=True, exist_ok=True)
    save_file(_openmoss(30), str(llama / "checkpoints" / "final.safetensors"))

    r1 = _repo(cache, "fnlp/Llama-Scope-R1-Distill") / "800M-Slimpajama-0-OpenR1-Math-220k/L0R"
    _json(r1 / "config.json", {"d_model": D_IN, "expansion_factor": 2,
          "hook_point_in": "blocks.0.hook_resid_post"})  # fmt: skip
    save_file({**_openmoss(40, 2 * D_IN), "log_jumprelu_threshold": _rand(2 * D_IN, seed=45) / 4},
              str(r1 / "sae_weights.safetensors"))  # fmt: skip

    _dictionary_learning_case(
        cache,
        "pythia70m_sweep_standard_ctx128_0712/resid_post_layer_3/trainer_10",
        "AutoEncoder",
        50,
    )
    _dictionary_learning_case(
        cache,
        "pythia70m_sweep_gated_ctx128_0730/resid_post_layer_3/trainer_0",
        "GatedAutoEncoder",
        60,
    )
    topk_path = "pythia70m_sweep_topk_ctx128_0730/resid_post_layer_3/trainer_10"
    _dictionary_learning_case(cache, topk_path, "AutoEncoderTopK", 70)

    hook_z = _repo(cache, "ckkissane/attn-saes-gpt2-small-all-layers")
    from sae_lens.toolkit.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    z_file = directory["gpt2-small-hook-z-kk"].saes_map["blocks.0.hook_z"]
    torch.save({"W_enc": _rand(D_IN, D_SAE, seed=80), "W_dec": _rand(D_SAE, D_IN, seed=81),
                "b_enc": _rand(D_SAE, seed=82), "b_dec": _rand(D_IN, seed=83)}, hook_z / z_file)  # fmt: skip
    _json(hook_z / z_file.replace(".pt", "_cfg.json"), {"act_size": D_IN, "dict_size": D_SAE,
          "act_name": "blocks.0.attn.hook_z", "layer": 0})  # fmt: skip

    topk_release = "sae_bench_pythia70m_sweep_topk_ctx128_0730"
    topk_id = next(i for i, p in directory[topk_release].saes_map.items() if p == topk_path)
    return [
        {"release": "gpt2-small-res-jb", "sae_id": "blocks.0.hook_resid_pre", "shape": [5, D_IN]},
        {"release": "mistral-7b-res-wg", "sae_id": "blocks.8.hook_resid_pre", "shape": [5, D_IN]},
        {"release": "gemma-scope-2b-pt-res", "sae_id": "embedding/width_4k/average_l0_6", "shape": [5, d_in]},
        {"release": "llama_scope_lxr_8x", "sae_id": "l8r_8x", "shape": [5, D_IN]},
        {"release": "llama_scope_r1_distill", "sae_id": "l0r_800m_slimpajama", "shape": [5, D_IN]},
        {"release": "sae_bench_pythia70m_sweep_standard_ctx128_0712", "sae_id": "blocks.3.hook_resid_post__trainer_10", "shape": [5, D_IN]},
        {"release": "sae_bench_pythia70m_sweep_gated_ctx128_0730", "sae_id": "blocks.3.hook_resid_post__trainer_0", "shape": [5, D_IN]},
        {"release": topk_release, "sae_id": topk_id, "shape": [5, D_IN]},
        {"release": "gpt2-small-hook-z-kk", "sae_id": "blocks.0.hook_z", "shape": [5, 2, D_IN // 2]},
    ]  # fmt: skip


RUN_FROM_PRETRAINED = """
import json, sys, warnings
import torch
from safetensors.torch import save_file, load_file
warnings.simplefilter("ignore")
from sae_lens import SAE
cases, out_dir = json.load(open(sys.argv[1])), sys.argv[2]
for i, case in enumerate(cases):
    x = load_file(f"{out_dir}/x{i}.safetensors")["x"]
    sae, cfg, sparsity = SAE.from_pretrained(case["release"], case["sae_id"])
    with torch.no_grad():
        x = x.to(sae.dtype)
        tensors = {"sd." + k: v.float().contiguous() for k, v in sae.state_dict().items()}
        tensors["out"] = sae(x).float().contiguous()
        tensors["acts"] = sae.encode(x).float().contiguous()
    save_file(tensors, f"{out_dir}/{sys.argv[3]}{i}.safetensors")
    json.dump({k: v for k, v in cfg.items() if isinstance(v, (str, int, float, bool, type(None), dict, list))},
              open(f"{out_dir}/{sys.argv[3]}{i}.json", "w"))
"""


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) if a.numel() else 0.0


def compare_loaders(oracle_python: str, workdir: Path) -> list[str]:
    cache = workdir / "hf_cache"
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    cases = write_oracle_cases(cache)
    (workdir / "cases.json").write_text(json.dumps(cases))
    for i, case in enumerate(cases):
        save_file(
            {"x": _rand(*case["shape"], seed=100 + i) * 2}, str(workdir / f"x{i}.safetensors")
        )
    for python, tag, cwd in [
        (oracle_python, "oracle", workdir),
        (sys.executable, "ours", REPO_ROOT),
    ]:
        subprocess.run([python, "-c", RUN_FROM_PRETRAINED, str(workdir / "cases.json"), str(workdir), tag],
                       check=True, env=env, cwd=cwd)  # fmt: skip
    problems = []
    print(f"\n{'release / sae_id':<72} {'weights':>9} {'acts':>9} {'out':>9}  config")
    for i, case in enumerate(cases):
        oracle, ours = (
            load_file(str(workdir / f"oracle{i}.safetensors")),
            load_file(str(workdir / f"ours{i}.safetensors")),
        )
        if set(oracle) != set(ours):
            problems.append(f"{case['release']}: tensors differ {sorted(set(oracle) ^ set(ours))}")
            continue
        weights = max(_max_diff(oracle[k], ours[k]) for k in oracle if k.startswith("sd."))
        acts, out = _max_diff(oracle["acts"], ours["acts"]), _max_diff(oracle["out"], ours["out"])
        cfg_o = json.loads((workdir / f"oracle{i}.json").read_text())
        cfg_m = json.loads((workdir / f"ours{i}.json").read_text())
        cfg_diff = sorted(k for k in set(cfg_o) | set(cfg_m) if cfg_o.get(k) != cfg_m.get(k))
        detail = ", ".join(f"{k}: {cfg_o.get(k)!r}->{cfg_m.get(k)!r}" for k in cfg_diff) or "same"
        print(
            f"{case['release'] + ' / ' + case['sae_id']:<72} {weights:9.2e} {acts:9.2e} {out:9.2e}  {detail}"
        )
        tolerance = 1e-2 if "llama_scope_lxr" in case["release"] else 1e-5  # bfloat16 SAE
        if max(weights, acts, out) > tolerance:
            problems.append(
                f"{case['release']}/{case['sae_id']}: max diff {max(weights, acts, out):.2e}"
            )
    return problems


# --- 3. peer packages ----------------------------------------------------------------------

PEER_SCRIPT = """
import json, sys, types
import torch
from safetensors.torch import save_file
sys.modules.setdefault("nnsight", types.SimpleNamespace(LanguageModel=object))  # buffer.py only
from sparsify import SparseCoder, SparseCoderConfig
from dictionary_learning.dictionary import AutoEncoder, GatedAutoEncoder, JumpReluAutoEncoder
from dictionary_learning.trainers.top_k import AutoEncoderTopK
from dictionary_learning.trainers.batch_top_k import BatchTopKSAE

out = sys.argv[1]
torch.manual_seed(0)
d_in, d_sae, k = 16, 64, 8
x = torch.randn(32, d_in) * 2
results = {"x": x}

def randomise(module, scale=0.3):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * scale)

# sparsify: one hookpoint folder in a run folder with its training config
coder = SparseCoder(d_in, SparseCoderConfig(num_latents=d_sae, k=k))
randomise(coder)
coder.save_to_disk(f"{out}/sparsify_run/layers.3")
json.dump({"sae": {"k": k}, "model": "EleutherAI/pythia-70m", "dataset": "d", "ctx_len": 512},
          open(f"{out}/sparsify_run/config.json", "w"))
with torch.no_grad():
    enc = coder.encode(x)
    dense = torch.zeros(x.shape[0], d_sae).scatter(-1, enc.top_indices, enc.top_acts)
    results["sparsify.acts"], results["sparsify.out"] = dense, coder(x).sae_out

def dictionary_learning(name, ae, dict_class, k=None):
    trainer = {"dict_class": dict_class, "activation_dim": d_in, "dict_size": d_sae,
               "layer": 2, "lm_name": "EleutherAI/pythia-70m-deduped"}
    if k is not None:
        trainer["k"] = k
    folder = f"{out}/{name}"
    import os; os.makedirs(folder, exist_ok=True)
    torch.save(ae.state_dict(), f"{folder}/ae.pt")
    json.dump({"trainer": trainer}, open(f"{folder}/config.json", "w"))
    with torch.no_grad():
        results[name + ".acts"], results[name + ".out"] = ae.encode(x), ae(x)

for cls, name in [(AutoEncoder, "AutoEncoder"), (GatedAutoEncoder, "GatedAutoEncoder")]:
    ae = cls(d_in, d_sae); randomise(ae); dictionary_learning(name, ae, name)
ae = JumpReluAutoEncoder(d_in, d_sae); randomise(ae)
with torch.no_grad():
    ae.threshold.copy_(torch.rand(d_sae) * 0.3)
dictionary_learning("JumpReluAutoEncoder", ae, "JumpReluAutoEncoder")
ae = AutoEncoderTopK(d_in, d_sae, k); randomise(ae); dictionary_learning("AutoEncoderTopK", ae, "AutoEncoderTopK", k)
ae = BatchTopKSAE(d_in, d_sae, k); randomise(ae)
ae.threshold = torch.tensor(0.2)  # as after training
dictionary_learning("BatchTopKSAE", ae, "BatchTopKSAE", k)
save_file({n: t.contiguous() for n, t in results.items()}, f"{out}/peer_results.safetensors")
"""


def compare_peers(peer_python: str, workdir: Path) -> list[str]:
    from sae_lens.sae import SAE

    subprocess.run([peer_python, "-c", PEER_SCRIPT, str(workdir)], check=True, cwd=workdir)
    results = load_file(str(workdir / "peer_results.safetensors"))
    x = results["x"]
    folders = {"sparsify": workdir / "sparsify_run" / "layers.3"}
    for name in [
        "AutoEncoder",
        "GatedAutoEncoder",
        "JumpReluAutoEncoder",
        "AutoEncoderTopK",
        "BatchTopKSAE",
    ]:
        folders[name] = workdir / name
    problems = []
    print(
        f"\n{'peer SAE (their package wrote it, we load it)':<48} {'acts':>9} {'out':>9}  loaded as"
    )
    for name, folder in folders.items():
        sae = SAE.load_from_pretrained(str(folder))
        with torch.no_grad():
            acts, out = (
                _max_diff(sae.encode(x), results[f"{name}.acts"]),
                _max_diff(sae(x), results[f"{name}.out"]),
            )
        print(f"{name:<48} {acts:9.2e} {out:9.2e}  {sae.cfg.architecture}/{sae.cfg.activation_fn_str} "
              f"hook={sae.cfg.hook_name} model={sae.cfg.model_name!r}")  # fmt: skip
        if max(acts, out) > 1e-5:
            problems.append(f"{name}: max diff {max(acts, out):.2e}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oracle-python", default="/work/oracle-venv/bin/python")
    parser.add_argument("--peer-python", default="/work/peer-loaders-venv/bin/python")
    args = parser.parse_args(argv)
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if Path(args.oracle_python).exists():
            problems += compare_registry(args.oracle_python, workdir)
            problems += compare_loaders(args.oracle_python, workdir)
        else:
            print(f"skipped registry and loader checks: no oracle python at {args.oracle_python}")
        if Path(args.peer_python).exists():
            problems += compare_peers(args.peer_python, workdir)
        else:
            print(f"skipped peer checks: no peer python at {args.peer_python}")
    print("\n" + ("\n".join(f"PROBLEM: {p}" for p in problems) if problems else "all checks agree"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))
    raise SystemExit(main())
