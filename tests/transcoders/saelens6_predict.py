"""Run by the SAELens 6.54 interpreter (not by pytest): load each transcoder folder with
SAELens 6's `SAE.load_from_disk` and write its class name and its outputs on given inputs.

    python saelens6_predict.py JOB.json

JOB.json: {"folders": [...], "inputs": "x.safetensors", "output": "out.safetensors"}; the
class names go to out.safetensors' metadata.
"""

from __future__ import annotations

import json
import sys

import torch
from safetensors.torch import load_file, save_file

from sae_lens import SAE


def main(job_path: str) -> None:
    job = json.loads(open(job_path).read())
    x = load_file(job["inputs"])["x"]
    outputs, classes = {}, {}
    for i, folder in enumerate(job["folders"]):
        sae = SAE.load_from_disk(folder)
        with torch.no_grad():
            outputs[str(i)] = sae(x).contiguous()
        classes[str(i)] = type(sae).__name__
    save_file(outputs, job["output"], metadata=classes)


if __name__ == "__main__":
    main(sys.argv[1])
