"""SAEDashboard's side of `benchmark/dashboard_vs_saedashboard.py`, run in its own venv
(sae-dashboard 0.8.0 with SAELens 6): build the feature-centric dashboard of the given
latents on the given tokens, time it, and report each latent's top examples.

    /work/saedash-venv/bin/python benchmark/dashboard_saedashboard_driver.py JOB.json

JOB.json: {"model_dir", "sae_dir", "tokens", "features", "threads", "batch_size_prompts",
"out_html", "result"}.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
from workload import load_hooked_transformer  # noqa: E402


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    torch.set_num_threads(job["threads"])
    from sae_dashboard.data_writing_fns import save_feature_centric_vis
    from sae_dashboard.sae_vis_data import SaeVisConfig
    from sae_dashboard.sae_vis_runner import SaeVisRunner

    from sae_lens import SAE

    model = load_hooked_transformer(job["model_dir"])
    sae = SAE.load_from_disk(job["sae_dir"], device="cpu")
    tokens = torch.load(job["tokens"], weights_only=True)
    tokenizer = model.tokenizer
    special = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
    config = SaeVisConfig(
        hook_point=sae.cfg.metadata.hook_name,
        features=job["features"],
        minibatch_size_features=64,
        minibatch_size_tokens=job["batch_size_prompts"],
        device="cpu",
        ignore_tokens={i for i in special if i is not None},
    )
    start, cpu_start = time.perf_counter(), time.process_time()
    data = SaeVisRunner(config).run(encoder=sae, model=model, tokens=tokens)
    gathered = time.perf_counter() - start
    save_feature_centric_vis(sae_vis_data=data, filename=job["out_html"])
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    top = {}
    for feature in job["features"]:
        group = data.feature_data_dict[feature].sequence_data.seq_group_data[0]
        top[str(feature)] = [
            [s.original_index, s.qualifying_token_index, list(s.feat_acts), list(s.token_ids)]
            for s in group.seq_data
        ]
    result = {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "gather_seconds": gathered,
        "top": top,
    }
    Path(job["result"]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
