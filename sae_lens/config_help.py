"""One line of meaning per config field: the single source of the command lines' `--help`
(`sae_lens.cli_support`) and of the config reference in docs/training.md
(`docs/gen_config_reference.py`).

A new config field needs its line here, in the group where it belongs: the docs generator
fails on a `LanguageModelSAERunnerConfig` field missing from `TRAINING_FIELD_GROUPS`, and the
tests check that every flag of every command line has a description. Text is Markdown
(backticks, links); the command lines show it as plain text.
"""

from __future__ import annotations

# (topic, {field name: meaning}): every LanguageModelSAERunnerConfig field appears exactly once.
TRAINING_FIELD_GROUPS: list[tuple[str, dict[str, str]]] = [
    (
        "Model and hook",
        {
            "model_name": "Model to read activations from: the embedded `tiny-pydoc-gpt2`, a TransformerLens or Hugging Face name, or a local folder.",
            "model_class_name": "How to load the model: `HookedTransformer`, `AutoModelForCausalLM` (wrapped in `HookedProxyLM`, hook names are module paths) or `HookedMamba`.",
            "model_kwargs": "Extra keyword arguments passed to every forward call of the model (JSON object on the command line).",
            "model_from_pretrained_kwargs": 'Keyword arguments for loading the model. `None` becomes `{"center_writing_weights": false}` for `HookedTransformer`, `{}` otherwise.',
            "hook_name": "Hook point whose activations the SAE reconstructs, e.g. `blocks.1.hook_resid_pre`. A cross-layer transcoder (`architecture='clt'`) names a pattern with `*` for the layer, e.g. `blocks.*.ln2.hook_normalized`: see [Cross-layer transcoders](clt.md).",
            "hook_eval": "Kept for 5.6.0 compatibility; not used.",
            "hook_layer": "Layer of `hook_name`; the model stops after this layer when producing activations. A CLT spans layers 0 to `hook_layer`.",
            "hook_head_index": "For per-head hooks (`hook_z`, `hook_q`...): train on this head only. `None` flattens all heads.",
        },
    ),
    (
        "Dataset and tokens",
        {
            "dataset_path": "Text or tokenized dataset: the embedded `pydoc-corpus`, a Hugging Face dataset name, a folder saved with `save_to_disk`, or local data files.",
            "dataset_trust_remote_code": "Allow the dataset's loading script to run code. Off by default (5.6.0 had it on).",
            "streaming": "Stream the dataset instead of downloading/loading it whole.",
            "is_dataset_tokenized": "Kept for 5.6.0 compatibility: whether the dataset is tokenized is detected from its columns (`tokens`/`input_ids` vs `text`).",
            "context_size": "Tokens per sequence fed to the model (at most the model's `n_ctx`).",
            "prepend_bos": "Start every sequence with the BOS token (text datasets are tokenized on the fly with this setting).",
            "seqpos_slice": "`(start, stop, step)` slice of sequence positions kept for training, e.g. `(1,)` drops the first position.",
            "exclude_special_tokens": "Drop activations at special tokens: `true` for the tokenizer's BOS/EOS/PAD ids, or a list of token ids.",
        },
    ),
    (
        "Transcoder",
        {
            "hook_name_out": "Train a transcoder: the hook point whose activation the SAE predicts from `hook_name`'s, e.g. `blocks.0.hook_mlp_out` from `blocks.0.ln2.hook_normalized`. `None` trains an SAE. See [Transcoders](transcoders.md).",
            "hook_layer_out": "Layer of `hook_name_out`; `None` takes it from the name (`blocks.<layer>.`).",
            "d_out": "Width of `hook_name_out`'s activation; `None` reads it from the model.",
            "skip_connection": "Add a linear skip path `x @ W_skip` (W_skip [d_in, d_out], initialised at zero) to the transcoder's prediction.",
        },
    ),
    (
        "Activation store",
        {
            "n_batches_in_buffer": "Model batches held in the shuffle buffer; half of it is refilled at a time, so each training batch mixes many prompts.",
            "store_batch_size_prompts": "Sequences per model forward pass when producing activations.",
            "normalize_activations": "`none`, `expected_average_only_in` (scale inputs so their mean norm is `sqrt(d_in)`, folded into the weights after training), `constant_norm_rescale` or `layer_norm` (applied inside the SAE at run time).",
            "use_cached_activations": "Read activations written by the cache runner instead of running the model.",
            "cached_activations_path": "Folder of cached activations. `None` with `use_cached_activations` becomes `activations/<dataset>/<model>/<hook_name>[_<head>]`.",
            "act_store_device": "Device of the activation buffer; `with_model` means the same as `device`.",
        },
    ),
    (
        "SAE architecture and initialisation",
        {
            "architecture": "`standard` (ReLU + L1), `gated`, `jumprelu`, `topk`, `batchtopk`, `matryoshka_batchtopk`, `clt` (a cross-layer transcoder, see [Cross-layer transcoders](clt.md)), or any architecture registered with `sae_lens.saes.register_architecture`: see the section on architectures and [Adding an architecture](adding_an_architecture.md).",
            "d_in": "Width of the hooked activation (the model's `d_model` for residual hooks, `n_heads * d_head` for a flattened `hook_z`).",
            "d_sae": "Number of SAE latents. Set this or `expansion_factor`, not both.",
            "expansion_factor": "`d_sae = d_in * expansion_factor`; when neither is set it is 4.",
            "activation_fn": 'Latent activation: `relu` (the default) or `topk` (implied by `architecture="topk"`).',
            "activation_fn_kwargs": 'Arguments of the activation, e.g. `{"k": 32}` for TopK (for BatchTopK: the average k, which may be fractional). `None` becomes `{"k": 100}` for TopK and BatchTopK, `{"k": 32}` for a CLT, `{}` otherwise. For a CLT, k counts per layer; `"topk_scope": "global"` keeps k * n_layers over all layers instead of k in each (`"layer"`, the default).',
            "k_decay_steps": "With a k (TopK): decay the number of active latents linearly from `initial_k` at the first step to `k` after this many steps (sparsify's `k_decay_steps`); `0` keeps `k`.",
            "initial_k": "The k of the first step of a k decay; `None` is sparsify's min(d_sae, 10 * d_in).",
            "b_dec_init_method": "Initial decoder bias: `geometric_median` or `mean` of a buffer of activations, or `zeros`.",
            "apply_b_dec_to_input": "Subtract `b_dec` from the input before encoding.",
            "normalize_sae_decoder": "Keep decoder rows at unit norm during training (and project their gradient).",
            "decoder_orthogonal_init": "Initialise the decoder rows orthogonally.",
            "decoder_heuristic_init": "Initialise decoder rows with small random norms (needs `normalize_sae_decoder=False`).",
            "init_encoder_as_decoder_transpose": "Initialise `W_enc` as the transpose of `W_dec`.",
            "encoder_init_norm": "Scale each latent's encoder weights (a column of `W_enc`) to this norm after initialisation; `None` keeps them. Not in 5.6.0.",
            "decoder_init_norm": "SAELens 6's initialisation: decoder rows (kaiming-uniform) scaled to this norm and `W_enc = W_dec.T` (needs `normalize_sae_decoder=False`). Not in 5.6.0; `None` keeps 5.6.0's initialisation.",
            "noise_scale": "Standard deviation of Gaussian noise added to the pre-activations during training.",
            "from_pretrained_path": "Folder of a saved SAE to continue training from instead of a fresh initialisation.",
            "jumprelu_init_threshold": "Initial threshold of every JumpReLU latent.",
            "jumprelu_bandwidth": "Width of the rectangle kernel in the JumpReLU threshold's pseudo-gradient.",
            "jumprelu_sparsity_loss_mode": "JumpReLU's sparsity loss: `step` (the L0 count, 5.6.0's) or `tanh` (SAELens 6's smooth `sum_i tanh(jumprelu_tanh_scale * f_i * ||W_dec[i]||)`), either times `l1_coefficient`.",
            "jumprelu_tanh_scale": "Scale inside the `tanh` sparsity loss of JumpReLU.",
            "pre_act_loss_coefficient": "JumpReLU: weight of SAELens 6's pre-activation loss, which pulls dead latents' pre-activations up to their thresholds; `None` is off (Anthropic used 3e-6).",
            "topk_threshold_lr": "BatchTopK: rate of the bias-corrected moving average of each step's smallest kept score (pre-activation times decoder row norm), which becomes the per-latent threshold of the saved (JumpReLU) SAE; 0.01 follows about the last 100 steps (raise it for short runs).",
            "matryoshka_widths": "Matryoshka BatchTopK: nested prefix sizes of the latents, smallest first, ending at `d_sae` (e.g. `[64, 128, 256, 512]`); each adds its reconstruction loss. `None` is d_sae/64, d_sae/16, d_sae/4, d_sae without levels under 16.",
        },
    ),
    (
        "Training length",
        {
            "training_tokens": "Activations (tokens) to train on.",
            "finetuning_tokens": "Extra tokens trained after `training_tokens` with only some parameters free (see `finetuning_method`).",
            "finetuning_method": "`scale`, `decoder` or `unrotated_decoder`: which parameters stay trainable during fine-tuning; `None` means no fine-tuning.",
            "train_batch_size_tokens": "Activations per optimiser step. Steps = `(training_tokens + finetuning_tokens) // train_batch_size_tokens`.",
            "seed": "Seed of the SAE initialisation and of the data shuffling.",
        },
    ),
    (
        "Loss and sparsity penalty",
        {
            "l1_coefficient": "Weight of the sparsity penalty (L1 for standard and gated, L0 for JumpReLU; unused by TopK).",
            "lp_norm": "The `p` of the Lp sparsity penalty of the standard architecture.",
            "l1_warm_up_steps": "Steps over which the sparsity coefficient rises linearly from 0 to `l1_coefficient`.",
            "scale_sparsity_penalty_by_decoder_norm": "Weight each latent's penalty by its decoder row norm (needs `normalize_sae_decoder=False`).",
            "mse_loss_normalization": "`None`, or `dense_batch` to divide each token's squared error by the distance of its activation from the batch mean.",
            "use_ghost_grads": "Add the ghost-grads loss that pushes dead latents towards the residual error.",
        },
    ),
    (
        "Optimiser and learning rate",
        {
            "lr": "Adam learning rate.",
            "adam_beta1": "Adam beta1.",
            "adam_beta2": "Adam beta2.",
            "lr_scheduler_name": "`constant`, `cosineannealing` or `cosineannealingwarmrestarts`.",
            "lr_warm_up_steps": "Steps of linear warm-up from `lr / lr_warm_up_steps` to `lr`.",
            "lr_decay_steps": "Final steps of linear decay to 0 (from `lr` for `constant`, from `lr_end` for the cosine schedules).",
            "lr_end": "Final LR of the cosine schedules; `None` becomes `lr / 10`.",
            "n_restart_cycles": "Number of cycles of `cosineannealingwarmrestarts`.",
            "optimizer": "`adam` (5.6.0's), `signsgd` (`p -= lr * sign(grad)`) or `muon` (Newton-Schulz-orthogonalised momentum for `W_enc`/`W_dec`, Adam for the other parameters).",
            "schedule_free": "With `optimizer=signsgd`: schedule-free averaging (momentum 0.95), as sparsify's default; evaluations, checkpoints and the final SAE use the averaged weights.",
            "scale_lr_with_width": "Multiply `lr` and `lr_end` by 1 / sqrt(d_sae / 16384), sparsify's rule: `lr` is then the rate of a 16,384-latent SAE.",
            "max_grad_norm": "Clip the gradient norm to this value before each step (5.6.0 clips at 1); `0` does not clip.",
            "gradient_accumulation_steps": "Split each batch of `train_batch_size_tokens` into this many micro-batches, summing their gradients into one step (the same update, less memory).",
            "recipe": "`5.6.0` (changes nothing) or `recommended` (optimizer, learning rate, initialisation; see the training guide); fields you set yourself win over it.",
        },
    ),
    (
        "Dead features",
        {
            "feature_sampling_window": "Steps over which latent firing frequencies are accumulated, logged and reset.",
            "dead_feature_window": "A latent that has not fired for this many steps counts as dead (ghost grads, TopK auxiliary loss).",
            "dead_feature_threshold": "Latents firing less often than this fraction are counted in the logged sparsity statistics.",
        },
    ),
    (
        "Devices, precision and speed",
        {
            "device": "Device of the model and the SAE (`cpu`, `cuda`, `cuda:1`, `mps`).",
            "dtype": "Dtype of the SAE parameters: `float32`, `float64`, `float16` or `bfloat16`.",
            "autocast": "Run the SAE training step under `torch.autocast`.",
            "autocast_lm": "Run the model under `torch.autocast` while producing activations.",
            "compile_llm": "`torch.compile` the pass that computes the activations (the fused forward); refused where that pass cannot serve the hook.",
            "fused_forward": "Compute the hook's activations with the fused forward pass where it reproduces the model's (it steps aside by itself whenever hooks, swapped modules or a changed config could make it differ); `False` always runs the model's own forward.",
            "reuse_freed_memory": "On a CPU device, make glibc keep freed large blocks for reuse during `run()` (faster steps; the memory is given back when the run ends). Off by default in Python, on by default in the command-line runners; `SAE_LENS_KEEP_MALLOC_DEFAULTS=1` refuses it everywhere.",
            "llm_compilation_mode": "Mode passed to `torch.compile` for the model.",
            "compile_sae": "`torch.compile` the SAE training step.",
            "sae_compilation_mode": "Mode passed to `torch.compile` for the SAE.",
        },
    ),
    (
        "Evaluation during training",
        {
            "n_eval_batches": "Batches used by each periodic evaluation.",
            "eval_batch_size_prompts": "Sequences per evaluation batch; `None` uses `store_batch_size_prompts`.",
            "eval_every_n_wandb_logs": "Run the evaluation every this many log steps.",
        },
    ),
    (
        "Logging",
        {
            "log_to_wandb": "Log to Weights & Biases (offline mode when no API key is configured). Metrics are always written to `metrics.jsonl` too.",
            "wandb_project": "wandb project name.",
            "wandb_entity": "wandb entity (user or team).",
            "wandb_id": "wandb run id; also names the run's checkpoint folder.",
            "run_name": "Run name; `None` builds one from `d_sae`, `l1_coefficient`, `lr` and `training_tokens`.",
            "wandb_log_frequency": "Log training metrics every this many steps.",
            "log_activations_store_to_wandb": "Kept for 5.6.0 compatibility: also upload the activation store state with checkpoints.",
            "log_optimizer_state_to_wandb": "Kept for 5.6.0 compatibility: also upload the optimiser state with checkpoints.",
            "verbose": "Log the run name, step count and progress.",
        },
    ),
    (
        "Checkpoints and resume",
        {
            "checkpoint_path": "Folder for checkpoints and the final SAE. A fresh run writes into `<checkpoint_path>/<run id>`; with `resume` the folder is used as given.",
            "n_checkpoints": "Splits the run into this many equal parts and writes a checkpoint at each boundary inside the run: `n_checkpoints - 1` intermediate checkpoints (5.6.0's spacing; `2` writes one, halfway), plus the final SAE, which is always saved.",
            "checkpoint_spacing": "`linear` (5.6.0's equal parts) or `log`: the checkpoints come after steps ceil(S ** (i / n_checkpoints)) of the S training steps.",
            "resume": "Continue from the latest complete checkpoint in `checkpoint_path`; the result equals an uninterrupted run.",
        },
    ),
    (
        "Versions",
        {
            "sae_lens_version": "Version of the library that wrote the config.",
            "sae_lens_training_version": "Version of the library that trained the SAE.",
        },
    ),
]

# CacheActivationsRunnerConfig (`python -m sae_lens.cache_activations_runner`).
CACHE_FIELD_HELP: dict[str, str] = {
    "dataset_path": "Text or tokenized dataset: the embedded `pydoc-corpus`, a Hugging Face dataset name, a folder saved with `save_to_disk`, or local data files.",
    "model_name": "Model to read activations from: the embedded `tiny-pydoc-gpt2`, a TransformerLens or Hugging Face name, or a local folder.",
    "model_class_name": "How to load the model: `HookedTransformer` or `AutoModelForCausalLM` (hook names are then module paths such as `transformer.h.1.mlp`).",
    "model_batch_size": "Sequences per model forward pass.",
    "hook_name": "Hook point whose activations are cached, e.g. `blocks.1.hook_resid_pre`.",
    "hook_layer": "Layer of `hook_name`; the model stops after it.",
    "d_in": "Width of the activation at `hook_name` (the model's `d_model` for residual hooks).",
    "extra_hooks": 'More hooks to cache in the same pass, one column each: hook name -> its d_in (JSON object on the command line), e.g. `{"blocks.1.hook_resid_post": 128}`. Each SAE of a multi-SAE run reads its hook\'s column.',
    "training_tokens": "Tokens (activations) to cache, rounded up to whole shards of `buffer_size_gb`.",
    "context_size": "Tokens per sequence. `-1` reads it from the first row of a pretokenized dataset; on the command line a text dataset then gets 128.",
    "new_cached_activations_path": "Folder to write the cache into (must be new or empty). `None` becomes `activations/<dataset>/<model>/<hook_name>`.",
    "shuffle": "Shuffle the sequences within each shard.",
    "seed": "Seed of the shuffling.",
    "dtype": "Dtype the activations are stored in: `float32`, `float64`, `float16` or `bfloat16`.",
    "device": "Device the model runs on (`cpu`, `cuda`, `cuda:1`, `mps`); defaults to `cuda` when available.",
    "buffer_size_gb": "Size of one shard on disk, in GB; the cache is written in whole shards.",
    "hf_repo_id": "Hugging Face dataset repo to upload the cache to; `None` keeps it local.",
    "hf_num_shards": "Number of shards of the upload; `None` lets `datasets` choose.",
    "hf_revision": "Branch of the Hugging Face repo to upload to.",
    "hf_is_private_repo": "Create the Hugging Face repo as private.",
    "model_kwargs": "Extra keyword arguments passed to every forward call of the model (JSON object on the command line).",
    "model_from_pretrained_kwargs": "Keyword arguments for loading the model (JSON object on the command line).",
    "compile_llm": "`torch.compile` the pass that computes the activations.",
    "llm_compilation_mode": "Mode passed to `torch.compile` for the model.",
    "reuse_freed_memory": "On a CPU device, make glibc keep freed large blocks for reuse during the run (on by default on the command line).",
    "prepend_bos": "Start every sequence with the BOS token (text datasets are tokenized on the fly with this setting).",
    "seqpos_slice": "`(start, stop, step)` slice of sequence positions cached, e.g. `1` drops the first position.",
    "streaming": "Stream the dataset instead of loading it whole.",
    "autocast_lm": "Run the model under `torch.autocast`.",
    "dataset_trust_remote_code": "Allow the dataset's loading script to run code.",
}

# PretokenizeRunnerConfig (`python -m sae_lens.pretokenize_runner`).
PRETOKENIZE_FIELD_HELP: dict[str, str] = {
    "tokenizer_name": "Tokenizer to use: the embedded `tiny-pydoc-gpt2`, a Hugging Face name or a local folder.",
    "dataset_path": "Text dataset to tokenize: the embedded `pydoc-corpus`, a Hugging Face dataset name, a folder saved with `save_to_disk`, or local data files.",
    "dataset_name": "Configuration name of a Hugging Face dataset.",
    "dataset_trust_remote_code": "Allow the dataset's loading script to run code.",
    "split": "Split of the dataset to tokenize (slices such as `train[:1000]` work too).",
    "data_files": "Data files of the dataset to read (passed to `datasets.load_dataset`).",
    "data_dir": "Folder of the dataset's data files (passed to `datasets.load_dataset`).",
    "num_proc": "Processes that tokenize in parallel (1 when streaming).",
    "context_size": "Tokens per row of the result.",
    "column_name": "Column of the dataset that holds the text.",
    "shuffle": "Shuffle the rows of the result.",
    "seed": "Seed of the shuffling.",
    "streaming": "Stream the dataset instead of loading it whole.",
    "pretokenize_batch_size": "Texts tokenized and concatenated together (rows never cross a batch).",
    "begin_batch_token": "Token starting each row: a token id, `bos`, `eos`, `sep` or `None`.",
    "begin_sequence_token": "Token starting each text: a token id, `bos`, `eos`, `sep` or `None`.",
    "sequence_separator_token": "Token between two texts: a token id, `bos`, `eos`, `sep` or `None`.",
    "save_path": "Folder to save the result into (must be new or empty), with a `sae_lens.json` metadata file.",
    "hf_repo_id": "Hugging Face dataset repo to upload the result to.",
    "hf_num_shards": "Number of shards of the upload.",
    "hf_revision": "Branch of the Hugging Face repo to upload to.",
    "hf_is_private_repo": "Create the Hugging Face repo as private.",
}


def training_field_help() -> dict[str, str]:
    """Field name -> meaning for every `LanguageModelSAERunnerConfig` field."""
    return {name: text for _, group in TRAINING_FIELD_GROUPS for name, text in group.items()}


# The fields of `MultiSAETrainingRunnerConfig` beyond the LanguageModelSAERunnerConfig ones.
MULTI_SAE_FIELD_HELP: dict[str, str] = {
    "saes": 'The SAEs of a multi-SAE run: a mapping from each SAE\'s name to the fields it sets (JSON object on the command line), e.g. `{"resid0": {"hook_name": "blocks.0.hook_resid_post", "d_sae": 512}}`. A `hook_name` with `*` gives one SAE per matching hook (`<name>_<match>`).',
    "stack_saes": 'Step the SAEs of one architecture and shape (same widths and options, e.g. the same k) together: one batched matmul over their stacked weights per step instead of one per SAE. "auto" (default): only on CUDA, where it keeps the GPU busy with many small SAEs; on CPU the batched matmuls are no faster and the SAEs\' own CPU kernels are faster, so they step one after another. true / false: always / never. Stacked SAEs end with the weights of SAEs trained alone up to float rounding (batched matmuls sum in another order).',
    "distribute_saes": "Under torchrun: spread the SAEs over the processes instead of copying every SAE to every process. Each process runs the model on its part of every batch, and each SAE trains on the whole batch (its rows gathered from every process) in the one process that owns it (the SAEs are shared out by size, largest first). Needs at least as many SAEs as processes; wandb logging is not supported in this mode. Default false: data parallel (every process steps every SAE on its part and the gradients are averaged).",
}
