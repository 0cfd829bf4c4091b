"""Wrong hook names and hook layers, for TransformerLens hook points and for the module paths
of a Hugging Face model: in splicing, in hooks added to the model, and in the activation
store the training and caching runners build before any data is read. Each is a
HookNameError (a ValueError and, as 5.6.0 raised, a KeyError) whose one-line message names
the hook and the closest valid names, and nothing stays attached to the model."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from sae_lens.analysis.hooked_sae_transformer import HookedSAETransformer, splice_saes
from sae_lens.errors import HookNameError
from sae_lens.load_model import HookedProxyLM
from sae_lens.training.activations_store import ActivationsStore
from tests.loaders_bad_input.conftest import assert_one_line, make_sae

# A dataset path that does not exist: a store that got as far as reading data would fail
# with FileNotFoundError instead, so a HookNameError shows the hook was checked first.
NO_DATASET = "/nonexistent/dataset"


def _identity(activation: torch.Tensor, hook: Any) -> torch.Tensor:  # noqa: ARG001
    return activation


def _store(model: Any, hook_name: str, hook_layer: int, d_in: int = 16) -> ActivationsStore:
    return ActivationsStore(
        model=model,
        dataset=NO_DATASET,
        streaming=False,
        hook_name=hook_name,
        hook_layer=hook_layer,
        hook_head_index=None,
        context_size=8,
        d_in=d_in,
        n_batches_in_buffer=2,
        total_training_tokens=64,
        store_batch_size_prompts=2,
        train_batch_size_tokens=4,
        prepend_bos=True,
        normalize_activations="none",
        device="cpu",
        dtype="float32",
    )


# --- splicing into a HookedSAETransformer ---------------------------------------------------


def test_add_sae_with_a_misspelt_hook_suggests_the_closest(
    sae_transformer: HookedSAETransformer,
) -> None:
    hooks_before = list(sae_transformer.hook_dict)
    sae = make_sae(d_in=128, hook_name="blocks.0.hook_resid_prex")
    with pytest.raises(HookNameError) as caught:
        sae_transformer.add_sae(sae)
    assert_one_line(
        caught.value,
        "no hook point 'blocks.0.hook_resid_prex'",
        "did you mean 'blocks.0.hook_resid_pre'",
    )
    assert isinstance(caught.value, KeyError)
    assert sae_transformer.acts_to_saes == {} and list(sae_transformer.hook_dict) == hooks_before


def test_run_with_saes_attaches_nothing_when_one_hook_is_wrong(
    sae_transformer: HookedSAETransformer,
) -> None:
    good = make_sae(d_in=128, hook_name="blocks.0.hook_resid_pre")
    bad = make_sae(d_in=128, hook_name="blocks.1.hook_mlp_outt")
    with pytest.raises(HookNameError) as caught:
        sae_transformer.run_with_saes("def f(): pass", saes=[good, bad])
    assert_one_line(
        caught.value, "'blocks.1.hook_mlp_outt'", "did you mean 'blocks.1.hook_mlp_out'"
    )
    assert sae_transformer.acts_to_saes == {}
    assert "blocks.0.hook_resid_pre.hook_sae_acts_post" not in sae_transformer.hook_dict


def test_run_with_hooks_on_a_misspelt_hook_point(sae_transformer: HookedSAETransformer) -> None:
    with pytest.raises(HookNameError) as caught:
        sae_transformer.run_with_hooks(
            "x = 1", fwd_hooks=[("blocks.1.attn.hook_patern", _identity)]
        )
    assert_one_line(caught.value, "did you mean 'blocks.1.attn.hook_pattern'")


# --- the Hugging Face proxy -----------------------------------------------------------------


def test_hooks_on_a_misspelt_module_path_suggest_the_closest(hf_proxy: HookedProxyLM) -> None:
    tokens = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(HookNameError) as caught:
        hf_proxy.run_with_hooks(tokens, fwd_hooks=[("transformer.h.1.mlpp", _identity)])
    assert_one_line(caught.value, "'transformer.h.1.mlpp'", "did you mean 'transformer.h.1.mlp'")
    sae = make_sae(d_in=16, hook_name="transformer.h.0.attnn")
    with pytest.raises(HookNameError, match="did you mean 'transformer.h.0.attn'"):
        with splice_saes(hf_proxy, sae):
            pass
    assert not any(hook_point.fwd_hooks for hook_point in hf_proxy.hook_dict.values())


def test_a_transformer_lens_name_on_a_hf_model_lists_that_blocks_module_paths(
    hf_proxy: HookedProxyLM,
) -> None:
    with pytest.raises(HookNameError) as caught:
        _store(hf_proxy, "blocks.1.hook_mlp_out", 1)
    assert_one_line(
        caught.value,
        "hook_name 'blocks.1.hook_mlp_out' is not a hook point of the model",
        "hook names are its module paths",
        "'transformer.h.1.attn'",
        "'transformer.h.1.mlp'",
    )


# --- the activation store (training and caching runners) ----------------------------------


def test_the_store_refuses_a_misspelt_module_path_before_reading_data(
    hf_proxy: HookedProxyLM,
) -> None:
    with pytest.raises(HookNameError) as caught:
        _store(hf_proxy, "transformer.h.1.mlpp", 1)
    assert_one_line(
        caught.value,
        "hook_name 'transformer.h.1.mlpp' is not a hook point",
        "did you mean 'transformer.h.1.mlp'",
    )


def test_a_hook_layer_below_the_module_paths_layer_is_refused(hf_proxy: HookedProxyLM) -> None:
    with pytest.raises(HookNameError) as caught:
        _store(hf_proxy, "transformer.h.1.mlp", 0)
    assert_one_line(
        caught.value, "hook_layer=0 but hook 'transformer.h.1.mlp' is in layer 1", "hook_layer=1"
    )


def test_a_hook_layer_past_the_last_block_is_refused(hf_proxy: HookedProxyLM) -> None:
    with pytest.raises(HookNameError) as caught:
        _store(hf_proxy, "transformer.h.1.mlp", 5)
    assert_one_line(caught.value, "hook_layer=5 but the model has 2 layers", "set hook_layer=1")


def test_a_hook_layer_past_the_hook_only_warns(hf_proxy: HookedProxyLM) -> None:
    with pytest.warns(
        UserWarning, match=r"hook_layer=1 but hook 'transformer.h.0.mlp' is in layer 0"
    ):
        with pytest.raises(FileNotFoundError):  # got past the hook checks to the dataset
            _store(hf_proxy, "transformer.h.0.mlp", 1)


def test_the_store_refuses_a_misspelt_transformer_lens_hook(
    sae_transformer: HookedSAETransformer,
) -> None:
    with pytest.raises(HookNameError) as caught:
        _store(sae_transformer, "blocks.1.hook_resid_prex", 1, d_in=128)
    assert_one_line(caught.value, "did you mean 'blocks.1.hook_resid_pre'")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the matching layer warns of nothing
        with pytest.raises(FileNotFoundError):
            _store(sae_transformer, "blocks.1.hook_resid_pre", 1, d_in=128)


def test_the_hf_layer_check_runs_in_the_training_runner(tmp_path: Path) -> None:
    from sae_lens.config import LanguageModelSAERunnerConfig
    from sae_lens.sae_training_runner import SAETrainingRunner

    cfg = LanguageModelSAERunnerConfig(
        model_class_name="AutoModelForCausalLM",
        hook_name="transformer.h.1.mlp",
        hook_layer=0,
        d_in=128,
        dead_feature_window=10,
        log_to_wandb=False,
        checkpoint_path=str(tmp_path / "checkpoints"),
    )
    with pytest.raises(HookNameError, match="hook 'transformer.h.1.mlp' is in layer 1"):
        SAETrainingRunner(cfg)
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())
