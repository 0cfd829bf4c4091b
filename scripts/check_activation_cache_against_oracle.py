"""Check that activation caches are interchangeable with SAELens 5.6.0 (which needs
datasets < 3):

1. our CacheActivationsRunner writes a cache; 5.6.0's ActivationsStore (oracle venv)
   reads it back and gets exactly the activations and token ids we computed;
2. 5.6.0's CacheActivationsRunner writes a cache for a small model built from a config;
   our ActivationsStore reads it and gets the activations our own forward pass gives.

Run from the repository root with the project venv:
    .venv/bin/python scripts/check_activation_cache_against_oracle.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ORACLE_PYTHON = "/work/oracle-venv/bin/python"
HOOK = "blocks.0.hook_resid_post"
CTX = 16
TINY_CFG = dict(
    n_layers=2,
    d_model=16,
    d_head=4,
    n_heads=4,
    d_mlp=32,
    n_ctx=32,
    d_vocab=50,
    act_fn="gelu",
    normalization_type="LN",
    seed=0,
    device="cpu",
)


def ours_write(work: Path) -> None:
    from sae_lens.cache_activations_runner import CacheActivationsRunner
    from sae_lens.config import CacheActivationsRunnerConfig

    texts = [f"def f{i}(x):\n    return x * {i} + {i * i}" for i in range(80)]
    (work / "texts").mkdir()
    (work / "texts" / "t.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    cfg = CacheActivationsRunnerConfig(
        dataset_path=str(work / "texts"),
        model_name="tiny-pydoc-gpt2",
        model_batch_size=2,
        hook_name=HOOK,
        hook_layer=0,
        d_in=128,
        training_tokens=320,
        context_size=CTX,
        new_cached_activations_path=str(work / "ours"),
        buffer_size_gb=2 * 2 * CTX * 512 / 1e9,
        device="cpu",
        shuffle=True,
    )
    dataset = CacheActivationsRunner(cfg).run().with_format("numpy")[:]
    np.savez(work / "ours_expected.npz", acts=dataset[HOOK], tokens=dataset["token_ids"])


def oracle_read(work: Path) -> None:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from sae_lens.config import CacheActivationsRunnerConfig
    from sae_lens.training.activations_store import ActivationsStore

    cfg = CacheActivationsRunnerConfig(
        dataset_path=str(work / "texts"),
        model_name="unused",
        model_batch_size=2,
        hook_name=HOOK,
        hook_layer=0,
        d_in=128,
        training_tokens=320,
        context_size=CTX,
        new_cached_activations_path=str(work / "ours"),
        device="cpu",
    )
    model = HookedTransformer(HookedTransformerConfig(**TINY_CFG))
    store = ActivationsStore.from_cache_activations(model, cfg)
    acts, tokens = store.get_buffer(10, shuffle=False)
    expected = np.load(work / "ours_expected.npz")
    assert np.array_equal(acts[:, 0].numpy(), expected["acts"].reshape(-1, 128)), (
        "activations differ"
    )
    assert np.array_equal(tokens.numpy().astype(np.int64), expected["tokens"].reshape(-1)), (
        "token ids differ"
    )
    print(f"5.6.0 read our cache: {acts.shape[0]} activations identical")


def oracle_write(work: Path) -> None:
    from datasets import Dataset
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    import sae_lens.cache_activations_runner as runner_module
    from sae_lens.config import CacheActivationsRunnerConfig

    model = HookedTransformer(HookedTransformerConfig(**TINY_CFG))
    torch.save(model.state_dict(), work / "tiny.pt")
    runner_module.load_model = lambda **kwargs: model
    tokens = torch.randint(0, 50, (24, CTX), generator=torch.Generator().manual_seed(0))
    np.save(work / "tokens.npy", tokens.numpy())
    cfg = CacheActivationsRunnerConfig(
        dataset_path="unused",
        model_name="tiny",
        model_batch_size=4,
        hook_name=HOOK,
        hook_layer=0,
        d_in=16,
        training_tokens=24 * CTX,
        context_size=CTX,
        new_cached_activations_path=str(work / "oracle"),
        device="cpu",
        shuffle=False,
        buffer_size_gb=4 * CTX * 16 * 4 * 2 / 1e9,
        prepend_bos=False,
    )
    runner_module.CacheActivationsRunner(
        cfg, override_dataset=Dataset.from_dict({"tokens": tokens.tolist()})
    ).run()
    print("5.6.0 wrote its cache")


def ours_read_oracle_cache(work: Path) -> None:
    from datasets import Dataset
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from sae_lens.training.activations_store import ActivationsStore

    model = HookedTransformer(HookedTransformerConfig(**TINY_CFG))
    model.load_state_dict(torch.load(work / "tiny.pt", weights_only=True))
    tokens = torch.from_numpy(np.load(work / "tokens.npy")).long()
    store = ActivationsStore(
        model=model,
        dataset=Dataset.from_dict({"tokens": tokens.tolist()}),
        streaming=False,
        hook_name=HOOK,
        hook_layer=0,
        hook_head_index=None,
        context_size=CTX,
        d_in=16,
        n_batches_in_buffer=2,
        total_training_tokens=10**4,
        store_batch_size_prompts=4,
        train_batch_size_tokens=16,
        prepend_bos=False,
        normalize_activations="none",
        device="cpu",
        dtype="float32",
        cached_activations_path=str(work / "oracle"),
    )
    acts, token_ids = store.get_buffer(6, shuffle=False)
    _, cache = model.run_with_cache(tokens, names_filter=HOOK)
    torch.testing.assert_close(acts[:, 0], cache[HOOK].reshape(-1, 16), rtol=1e-5, atol=1e-5)
    assert token_ids is not None and torch.equal(token_ids, tokens.reshape(-1))
    print(f"we read 5.6.0's cache: {acts.shape[0]} activations match our forward pass")


def run_oracle(step: str, work: Path) -> None:
    subprocess.run([ORACLE_PYTHON, __file__, step, str(work)], check=True)


def main() -> None:
    if len(sys.argv) == 3:
        {"oracle_read": oracle_read, "oracle_write": oracle_write}[sys.argv[1]](Path(sys.argv[2]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ours_write(work)
        run_oracle("oracle_read", work)
        run_oracle("oracle_write", work)
        ours_read_oracle_cache(work)
    print("OK: activation caches are interchangeable with sae-lens 5.6.0")


if __name__ == "__main__":
    main()
