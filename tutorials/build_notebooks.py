"""Write the tutorial notebooks (without outputs) from the cells defined here, so that they
can be reviewed as Python. Each notebook runs top to bottom offline, on the embedded model
and corpus, in about a minute on a CPU.

    python tutorials/build_notebooks.py           # rewrite tutorials/*.ipynb
    python tutorials/build_notebooks.py --check   # exit 1 if a notebook is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

# A cell is ("md", text) or ("py", code).
Cell = tuple[str, str]


def tiny_training(training_tokens: int) -> str:
    """The tiny training run the notebooks share: a TopK SAE on the residual stream before
    the embedded model's second block; about 15 seconds per 60k tokens on a CPU."""
    return f"""\
from sae_lens import LanguageModelSAERunnerConfig, SAETrainingRunner

cfg = LanguageModelSAERunnerConfig(
    model_name="tiny-pydoc-gpt2",
    dataset_path="pydoc-corpus",
    hook_name="blocks.1.hook_resid_pre",
    hook_layer=1,
    d_in=128,
    architecture="topk",
    activation_fn_kwargs={{"k": 16}},
    d_sae=512,
    context_size=64,
    training_tokens={training_tokens:_},
    train_batch_size_tokens=512,
    store_batch_size_prompts=16,
    n_batches_in_buffer=8,
    recipe="recommended",
    log_to_wandb=False,
    verbose=False,
    checkpoint_path="checkpoints",
)
trained_sae = SAETrainingRunner(cfg).run()
final_folder = next(Path(cfg.checkpoint_path).glob("final_*"))
print("saved to", final_folder)"""


TRAINING_AN_SAE: list[Cell] = [
    (
        "md",
        """\
# Training an SAE

This notebook trains a sparse autoencoder (SAE) on the residual stream of the embedded
model `tiny-pydoc-gpt2`, using the embedded corpus `pydoc-corpus`. Both ship with
`sae_lens`, so it runs offline, in about a minute on a CPU. The same code trains on any
TransformerLens or Hugging Face model and dataset: change `model_name`, `dataset_path`,
`hook_name`, `d_in` and the budget.""",
    ),
    (
        "py",
        """\
from pathlib import Path

import pandas as pd
import torch

from sae_lens.embedded import load_embedded_dataset, load_embedded_hooked_transformer

model = load_embedded_hooked_transformer()
print(f"layers={model.cfg.n_layers} d_model={model.cfg.d_model} n_ctx={model.cfg.n_ctx}")
print([name for name in model.hook_dict if name.startswith("blocks.1.hook_resid")])""",
    ),
    (
        "md",
        """\
## The run configuration

One `LanguageModelSAERunnerConfig` describes the whole run: the model and the hook to read
(`blocks.1.hook_resid_pre`, the residual stream after the first block, 128 wide), the
data, the SAE and the optimiser. We use a TopK SAE, which keeps the `k` largest latents
of each token, so its L0 is exactly `k` and there is no sparsity coefficient to tune.
The budget is tiny (50k tokens); real runs use hundreds of millions.

`recipe="recommended"` chooses the optimiser (signSGD with schedule-free averaging), the
learning rate (scaled with the SAE's width) and the initialisation that train the best
SAEs in short runs (docs/training.md, "The recommended recipe"). On this run it gives
explained variance 0.80 on held-out text, against 0.69 with 5.6.0's defaults and Adam at
`lr=1e-3`. Any field you set yourself wins over the recipe.

`log_to_wandb=False` keeps it local; metrics are always written to `metrics.jsonl` in the
run folder.""",
    ),
    ("py", tiny_training(50_000)),
    (
        "md",
        """\
## What the run wrote

The run folder holds the final SAE (`final_<tokens>`), the config (`run_config.json`),
the training log (`metrics.jsonl`) and a plot of the training curves.""",
    ),
    (
        "py",
        """\
run_dir = Path(cfg.checkpoint_path)
print(sorted(p.name for p in run_dir.iterdir()))
print(sorted(p.name for p in final_folder.iterdir()))

log = pd.read_json(run_dir / "metrics.jsonl", lines=True)
log[["step", "losses/overall_loss", "metrics/explained_variance", "metrics/l0"]].tail()""",
    ),
    (
        "py",
        """\
from IPython.display import Image

Image(filename=str(run_dir / "training_curves.png"))""",
    ),
    (
        "md",
        """\
## Did it learn?

Compare the trained SAE with a freshly initialised one on held-out text (the corpus's
test split): the explained variance is the fraction of the activations' variance the
reconstruction keeps, and L0 the number of active latents per token.""",
    ),
    (
        "py",
        """\
from sae_lens import SAE, TrainingSAE

texts = load_embedded_dataset(split="test")["text"][:16]
tokens = torch.cat([model.to_tokens(text)[:, :64] for text in texts if len(text) > 400])
_, cache = model.run_with_cache(
    tokens, names_filter=cfg.hook_name, stop_at_layer=cfg.hook_layer + 1
)
x = cache[cfg.hook_name].reshape(-1, cfg.d_in)  # [tokens, d_in]


def explained_variance(sae: SAE) -> float:
    with torch.no_grad():
        x_hat = sae(x)
    return (1 - (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()).item()


loaded = SAE.load_from_pretrained(str(final_folder))
untrained = TrainingSAE.from_dict(cfg.get_training_sae_cfg_dict())
with torch.no_grad():
    l0 = (loaded.encode(x) > 0).sum(-1).float().mean().item()
print(f"trained:   explained variance {explained_variance(loaded):.3f}, L0 {l0:.1f}")
print(f"untrained: explained variance {explained_variance(untrained):.3f}")
assert explained_variance(loaded) > explained_variance(untrained) + 0.2""",
    ),
    (
        "md",
        """\
## Next steps

- Any config field can be a command-line flag:
  `python -m sae_lens.sae_training_runner --hook_name blocks.1.hook_resid_pre --hook_layer 1 --architecture topk`
  (`--help` lists them all; `--config run.yaml` reads a file).
- `n_checkpoints` writes checkpoints during training; Ctrl-C saves one and stops; rerun
  with `resume=True` and `checkpoint_path` set to the run folder to continue exactly
  where it stopped.
- The other architectures: `architecture="standard"` (ReLU + L1, tune `l1_coefficient`),
  `"gated"`, `"jumprelu"`.
- `loading_and_splicing.ipynb` puts an SAE into the model; `evaluating_saes.ipynb`
  measures it.""",
    ),
]

LOADING_AND_SPLICING: list[Cell] = [
    (
        "md",
        """\
# Loading an SAE and splicing it into a model

We train a small SAE on the embedded model (or you would load a published one with
`SAE.from_pretrained(release, sae_id)`), load it back from its folder, splice it into
the model with `HookedSAETransformer`, with and without the error term, and look at the
latents that fire on a piece of Python.""",
    ),
    (
        "py",
        """\
from pathlib import Path

import torch

torch.manual_seed(0)""",
    ),
    ("py", tiny_training(30_000)),
    (
        "md",
        """\
## Loading

`SAE.load_from_pretrained(folder)` reads the on-disk format (`cfg.json` and
`sae_weights.safetensors`), the same format SAELens 5.6.0 uses. `SAE.from_pretrained`
takes a release and SAE id from the pretrained registry, a Hugging Face repo, or, as here,
a local path, and also returns the config dict and the log feature sparsity.""",
    ),
    (
        "py",
        """\
from sae_lens import SAE

sae = SAE.load_from_pretrained(str(final_folder))
print(sae.cfg.architecture, sae.cfg.hook_name, sae.cfg.d_in, "->", sae.cfg.d_sae)

same_sae, cfg_dict, log_sparsity = SAE.from_pretrained(str(final_folder), "")
print("log10 firing frequency of the first latents:", log_sparsity[:5])
assert torch.equal(same_sae.W_dec, sae.W_dec)""",
    ),
    (
        "md",
        """\
## Splicing

`HookedSAETransformer` is a TransformerLens `HookedTransformer` that can replace a hook
point by an SAE. `run_with_saes` splices the SAE in for one forward pass.""",
    ),
    (
        "py",
        r'''from sae_lens import HookedSAETransformer

# the model as the SAE was trained on it (without weight processing; the SAE's config
# records the loading kwargs)
model = HookedSAETransformer.from_pretrained(
    "tiny-pydoc-gpt2", **sae.cfg.model_from_pretrained_kwargs
)
prompt = (
    "def read_config(path):\n"
    '    """Read a JSON config file and return it as a dict."""\n'
    "    with open(path) as f:\n"
    "        return json.load(f)\n"
)
tokens = model.to_tokens(prompt)

loss_clean = model(tokens, return_type="loss").item()
loss_spliced = model.run_with_saes(tokens, saes=[sae], return_type="loss").item()
print(f"loss without the SAE {loss_clean:.3f}, with it {loss_spliced:.3f}")''',
    ),
    (
        "md",
        """\
## The error term

With `use_error_term=True` the SAE adds its reconstruction error back, so the model's
output is exactly what it was without the SAE, while the SAE's hook points still show its
real latents, reconstruction and error. This is what circuit analysis needs: edits to the
latents flow through, the reconstruction error does not.""",
    ),
    (
        "py",
        """\
logits_clean = model(tokens)
logits_exact = model.run_with_saes(tokens, saes=[sae], use_error_term=True)
print("identical logits with the error term:", torch.equal(logits_clean, logits_exact))

_, cache = model.run_with_cache_with_saes(tokens, saes=[sae], use_error_term=True)
error = cache[f"{sae.cfg.hook_name}.hook_sae_error"]
recons = cache[f"{sae.cfg.hook_name}.hook_sae_recons"]
print("relative size of the error:", (error.norm() / (error + recons).norm()).item())
assert model.hook_dict[sae.cfg.hook_name].__class__.__name__ == "HookPoint"  # removed again""",
    ),
    (
        "md",
        """\
## Top latents

The SAE's latents are cached under `<hook_name>.hook_sae_acts_post`. Which latents fire
most on this prompt, and on which tokens?""",
    ),
    (
        "py",
        """\
acts = cache[f"{sae.cfg.hook_name}.hook_sae_acts_post"][0]  # [pos, d_sae]
str_tokens = model.to_str_tokens(tokens)
strength, top_latents = acts.max(dim=0).values.topk(5)
for latent, value in zip(top_latents.tolist(), strength.tolist(), strict=True):
    pos = acts[:, latent].argmax().item()
    context = "".join(str_tokens[max(pos - 4, 0) : pos + 1])
    print(f"latent {latent:4d}  max {value:6.2f}  at {str_tokens[pos]!r:12} in {context!r}")""",
    ),
    (
        "md",
        """\
## Ablating a latent

`run_with_hooks_with_saes` combines SAEs with ordinary hooks. Zeroing the strongest
latent shows how much the model's loss depends on it. With the SAE attached by the
`saes` context manager and `use_error_term=True`, the reconstruction error is added back,
so the ablation is the only change.""",
    ),
    (
        "py",
        """\
latent = top_latents[0].item()


def ablate(acts, hook):
    acts[:, :, latent] = 0.0  # [batch, pos, d_sae]
    return acts


hook_name = f"{sae.cfg.hook_name}.hook_sae_acts_post"
loss_ablated_no_error = model.run_with_hooks_with_saes(
    tokens, saes=[sae], return_type="loss", fwd_hooks=[(hook_name, ablate)]
).item()
with model.saes(saes=[sae], use_error_term=True):  # spliced for the whole block
    print("hook point inside the block:", type(model.mod_dict[sae.cfg.hook_name]).__name__)
    loss_ablated = model.run_with_hooks(
        tokens, return_type="loss", fwd_hooks=[(hook_name, ablate)]
    ).item()
print(f"loss {loss_clean:.4f} -> {loss_ablated:.4f} with latent {latent} ablated (error term on)")
print(f"without the error term: {loss_spliced:.4f} -> {loss_ablated_no_error:.4f}")
print("after the block:", type(model.mod_dict[sae.cfg.hook_name]).__name__)""",
    ),
]

EVALUATING_SAES: list[Cell] = [
    (
        "md",
        """\
# Evaluating SAEs

`run_evals` measures how well an SAE reconstructs its activations, how sparse it is, and
how much splicing it into the model changes the model's predictions. The command
`python -m sae_lens.evals` does the same for many SAEs and writes JSON and CSV. We
evaluate a small trained SAE and, for contrast, an untrained one.""",
    ),
    (
        "py",
        """\
import json
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

torch.manual_seed(0)""",
    ),
    ("py", tiny_training(30_000)),
    (
        "py",
        """\
from sae_lens import SAE, TrainingSAE

untrained_folder = Path("checkpoints/untrained_sae")
TrainingSAE.from_dict(cfg.get_training_sae_cfg_dict()).save_model(str(untrained_folder))
saes = {
    "trained": SAE.load_from_pretrained(str(final_folder)),
    "untrained": SAE.load_from_pretrained(str(untrained_folder)),
}""",
    ),
    (
        "md",
        """\
## `run_evals` in Python

An `ActivationsStore` built from the SAE's config supplies batches of prompts;
`get_eval_everything_config` switches every metric on. BOS/EOS/padding positions are left
out of every metric.""",
    ),
    (
        "py",
        """\
from sae_lens import ActivationsStore, HookedSAETransformer, run_evals
from sae_lens.evals import get_eval_everything_config

model = HookedSAETransformer.from_pretrained("tiny-pydoc-gpt2")
eval_config = get_eval_everything_config(
    batch_size_prompts=8, n_eval_reconstruction_batches=2, n_eval_sparsity_variance_batches=2
)
tokenizer = model.tokenizer
ignore_tokens = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}

results = {}
for name, sae in saes.items():
    store = ActivationsStore.from_sae(model, sae, context_size=64, store_batch_size_prompts=8)
    results[name] = run_evals(sae, store, model, eval_config, ignore_tokens=ignore_tokens)

table = pd.DataFrame(
    {name: pd.json_normalize(metrics).iloc[0] for name, (metrics, _) in results.items()}
)
table""",
    ),
    (
        "md",
        """\
The CE loss score is `(CE with ablation − CE with SAE) / (CE with ablation − CE without
SAE)`: 1 when splicing the SAE costs nothing, 0 when it is as bad as zeroing the
activation. The trained SAE should be well above the untrained one on it and on the
explained variance.""",
    ),
    (
        "py",
        """\
trained, untrained = results["trained"][0], results["untrained"][0]
for group, key in [
    ("model_performance_preservation", "ce_loss_score"),
    ("model_behavior_preservation", "kl_div_score"),
    ("reconstruction_quality", "explained_variance"),
]:
    print(f"{key:20s} trained {trained[group][key]:7.3f}   untrained {untrained[group][key]:7.3f}")
assert (
    trained["reconstruction_quality"]["explained_variance"]
    > untrained["reconstruction_quality"]["explained_variance"]
)""",
    ),
    (
        "md",
        """\
## Feature density

`feature_metrics["feature_density"]` is the fraction of tokens on which each latent
fires. Latents that never fire are dead; very dense ones are usually uninterpretable.""",
    ),
    (
        "py",
        """\
density = torch.tensor(results["trained"][1]["feature_density"])
print(f"dead latents: {(density == 0).sum().item()} of {len(density)}")
plt.hist(torch.log10(density[density > 0]).numpy(), bins=40)
plt.xlabel("log10 feature density")
plt.ylabel("latents")
plt.show()""",
    ),
    (
        "md",
        """\
## The evals command

`python -m sae_lens.evals` evaluates registry SAEs matched by two regexes, or local SAE
folders given with `--sae_paths`, on each dataset and context length. Here: both folders,
on the embedded corpus.""",
    ),
    (
        "py",
        '''\
options = """
    --datasets pydoc-corpus --ctx_lens 64 --batch_size_prompts 8
    --n_eval_reconstruction_batches 1 --n_eval_sparsity_variance_batches 1
    --output_dir eval_results --device cpu
""".split()
command = [
    *[sys.executable, "-m", "sae_lens.evals"],
    *["--sae_paths", str(final_folder), str(untrained_folder)],
    *options,
]
completed = subprocess.run(command, capture_output=True, text=True)
print(completed.stdout)
assert completed.returncode == 0, completed.stderr[-2000:]
print(sorted(p.name for p in Path("eval_results").iterdir()))''',
    ),
    (
        "md",
        """\
The CSV has one row per SAE × dataset × context length and one column per metric, the
nested keys joined with dots; the JSON files also hold the per-latent metrics.""",
    ),
    (
        "py",
        """\
csv = pd.read_csv("eval_results/all_eval_results.csv")
csv[
    [
        "unique_id",
        "eval_cfg.dataset",
        "metrics.sparsity.l0",
        "metrics.reconstruction_quality.explained_variance",
        "metrics.model_performance_preservation.ce_loss_score",
    ]
]""",
    ),
    (
        "py",
        """\
all_results = json.loads(Path("eval_results/all_eval_results.json").read_text())
first = all_results[0]
print(first["unique_id"], sorted(first))
print("per-latent metrics:", sorted(first["feature_metrics"]))""",
    ),
]

TRANSCODERS: list[Cell] = [
    (
        "md",
        """\
# Training and splicing a skip transcoder

A transcoder reads one hook point and predicts the activation at another through sparse
latents. This notebook trains a TopK *skip* transcoder that reads the input of the
embedded model's first MLP (`blocks.0.ln2.hook_normalized`) and predicts its output
(`blocks.0.hook_mlp_out`), with a linear skip path `x @ W_skip` beside the latents; then
loads it, measures how much of the MLP output it explains on held-out text, and splices it
into the model in place of the MLP's output. It runs offline in about a minute on a CPU.""",
    ),
    (
        "py",
        """\
from pathlib import Path

import torch

from sae_lens import HookedSAETransformer

model = HookedSAETransformer.from_pretrained(
    "tiny-pydoc-gpt2", center_writing_weights=False
)
IN_HOOK, OUT_HOOK = "blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out"
tokens = model.to_tokens("def add(a, b):\\n    return a + b\\n")
_, cache = model.run_with_cache(tokens, names_filter=[IN_HOOK, OUT_HOOK])
print({name: tuple(cache[name].shape) for name in (IN_HOOK, OUT_HOOK)})""",
    ),
    (
        "md",
        """\
## Training

`hook_name_out` makes the run a transcoder's; `d_out` (the output's width) is read from the
model, and `skip_connection=True` adds `W_skip` [d_in, d_out], which starts at zero. The
activation store reads both hooks from one forward pass and keeps each token's input and
target together through the shuffle.""",
    ),
    (
        "py",
        """\
from sae_lens import LanguageModelSAERunnerConfig, SAETrainingRunner

cfg = LanguageModelSAERunnerConfig(
    model_name="tiny-pydoc-gpt2",
    dataset_path="pydoc-corpus",
    hook_name=IN_HOOK,
    hook_name_out=OUT_HOOK,
    skip_connection=True,
    architecture="topk",
    activation_fn_kwargs={"k": 16},
    d_sae=512,
    context_size=64,
    training_tokens=120_000,
    train_batch_size_tokens=512,
    store_batch_size_prompts=16,
    n_batches_in_buffer=8,
    lr=1e-3,
    log_to_wandb=False,
    verbose=False,
    checkpoint_path="checkpoints",
)
SAETrainingRunner(cfg).run()
final_folder = next(Path(cfg.checkpoint_path).glob("final_*"))
print("d_out read from the model:", cfg.d_out, "| saved to", final_folder)""",
    ),
    (
        "md",
        """\
## Loading it and measuring it on held-out text

The final folder loads like any SAE folder; `cfg.hook_name_out` names the hook it predicts,
and calling it on input activations returns the prediction. Its `cfg.json` names the
architecture as SAELens 6 does (a TopK one: `topk_skip_transcoder`; a standard one would be
`skip_transcoder`, which SAELens 6 loads as its `SkipTranscoder`). The fraction of variance
unexplained (FVU) of the MLP output is measured on the corpus's `test` split.""",
    ),
    (
        "py",
        """\
import json

from sae_lens import SAE
from sae_lens.embedded import load_embedded_dataset

transcoder = SAE.load_from_pretrained(str(final_folder))
print(json.loads((final_folder / "cfg.json").read_text())["architecture"])
print("predicts", transcoder.cfg.hook_name_out, "| W_skip", tuple(transcoder.W_skip.shape))

texts = load_embedded_dataset(split="test")["text"][:24]
held_out = torch.cat([model.to_tokens(text)[:, :64] for text in texts], dim=1)
held_out = held_out[:, : held_out.shape[1] // 64 * 64].view(-1, 64)
with torch.no_grad():
    _, cache = model.run_with_cache(held_out, names_filter=[IN_HOOK, OUT_HOOK])
    x, y = cache[IN_HOOK].flatten(0, 1), cache[OUT_HOOK].flatten(0, 1)
    prediction = transcoder(x)
fvu = ((y - prediction).pow(2).sum() / (y - y.mean(0)).pow(2).sum()).item()
print(f"held-out FVU of {OUT_HOOK}: {fvu:.3f} on {x.shape[0]} tokens")""",
    ),
    (
        "md",
        """\
## Splicing it into the model

`run_with_saes` reads the transcoder's input at `hook_name` and puts its prediction in
place of the activation at `hook_name_out`, which changes the logits and the loss. With
`use_error_term=True` the prediction's error is added back: the logits are the model's own,
bit for bit, while the transcoder's latents are cached under the output hook.""",
    ),
    (
        "py",
        """\
with torch.no_grad():
    clean_logits = model(held_out[:4])
    loss_clean = model(held_out[:4], return_type="loss").item()
    loss_spliced = model.run_with_saes(held_out[:4], saes=[transcoder], return_type="loss").item()
    logits, cache = model.run_with_cache_with_saes(
        held_out[:4], saes=[transcoder], use_error_term=True
    )
print(f"loss {loss_clean:.4f} -> {loss_spliced:.4f} with the MLP output replaced")
print("error term keeps the logits exactly:", torch.equal(logits, clean_logits))
latents = cache[f"{OUT_HOOK}.hook_sae_acts_post"]
print("latents per token:", (latents > 0).sum(-1).float().mean().item())""",
    ),
    (
        "md",
        """\
## The evals

`run_evals` compares the prediction with the activation at `hook_name_out` (its
`reconstruction_quality` adds `fvu`) and measures CE and KL with the prediction spliced in.""",
    ),
    (
        "py",
        """\
from sae_lens.eval_metrics import EvalConfig, run_evals
from sae_lens.training.activations_store import ActivationsStore

store = ActivationsStore.from_sae(
    model, transcoder, dataset=load_embedded_dataset(split="test"), streaming=False
)
eval_config = EvalConfig(
    batch_size_prompts=8,
    n_eval_reconstruction_batches=2,
    n_eval_sparsity_variance_batches=2,
    compute_ce_loss=True,
    compute_variance_metrics=True,
)
metrics, _ = run_evals(transcoder, store, model, eval_config)
print({key: round(value, 4) for key, value in metrics["reconstruction_quality"].items()})
print({key: round(value, 4) for key, value in metrics["model_performance_preservation"].items()})""",
    ),
]

NOTEBOOKS: dict[str, list[Cell]] = {
    "training_an_sae.ipynb": TRAINING_AN_SAE,
    "loading_and_splicing.ipynb": LOADING_AND_SPLICING,
    "evaluating_saes.ipynb": EVALUATING_SAES,
    "transcoders.ipynb": TRANSCODERS,
}


def build(cells: list[Cell]) -> nbformat.NotebookNode:
    """A notebook (no outputs) with a python3 kernelspec."""
    notebook = new_notebook(
        cells=[
            new_markdown_cell(text) if kind == "md" else new_code_cell(text) for kind, text in cells
        ],
        metadata={
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
    )
    # Stable cell ids, so rebuilding an unchanged notebook changes nothing on disk.
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{index}"
    return notebook


def render(cells: list[Cell]) -> str:
    return nbformat.writes(build(cells)) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a notebook is out of date")
    args = parser.parse_args(argv)
    stale = []
    for filename, cells in NOTEBOOKS.items():
        path = HERE / filename
        text = render(cells)
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(filename)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {stale}; run python tutorials/build_notebooks.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
