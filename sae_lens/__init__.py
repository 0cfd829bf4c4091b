"""sae_lens: train, evaluate, load and splice sparse autoencoders on language-model
activations, with the public interface of SAELens 5.6.0."""

import logging

from sae_lens.lazy_names import lazy_names

__version__ = "5.6.0"

logger = logging.getLogger(__name__)

# Public name -> module that defines it. Imported on first use, so `import sae_lens` stays
# quick and one heavy submodule is not loaded for a user who needs another.
_EXPORTS = {
    "SAE": "sae_lens.sae",
    "SAEConfig": "sae_lens.sae",
    "TrainingSAE": "sae_lens.training.training_sae",
    "TrainingSAEConfig": "sae_lens.training.training_sae",
    "HookedSAETransformer": "sae_lens.analysis.hooked_sae_transformer",
    "ActivationsStore": "sae_lens.training.activations_store",
    "LanguageModelSAERunnerConfig": "sae_lens.config",
    "CacheActivationsRunnerConfig": "sae_lens.config",
    "PretokenizeRunnerConfig": "sae_lens.config",
    "SAETrainingRunner": "sae_lens.sae_training_runner",
    "MultiSAETrainingRunner": "sae_lens.multi_sae_training_runner",
    "MultiSAETrainingRunnerConfig": "sae_lens.multi_sae_config",
    "CacheActivationsRunner": "sae_lens.cache_activations_runner",
    "PretokenizeRunner": "sae_lens.pretokenize_runner",
    "pretokenize_runner": "sae_lens.pretokenize_runner",
    "run_evals": "sae_lens.evals",
    "upload_saes_to_huggingface": "sae_lens.training.upload_saes_to_huggingface",
}

__all__ = [*_EXPORTS, "__version__", "logger"]

__getattr__ = lazy_names(globals(), _EXPORTS)


def __dir__() -> list[str]:
    return sorted(__all__)
