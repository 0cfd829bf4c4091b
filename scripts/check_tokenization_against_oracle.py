"""Compare `concat_and_batch_sequences` with SAELens 5.6.0's on random inputs.

Run with the oracle venv, which has sae-lens 5.6.0 installed, from the repository root:
    /work/oracle-venv/bin/python scripts/check_tokenization_against_oracle.py
"""

from __future__ import annotations

import importlib.util
import itertools
import random
import sys
from pathlib import Path

import torch

from sae_lens.tokenization_and_batching import concat_and_batch_sequences as oracle_concat

OURS = Path(__file__).resolve().parents[1] / "sae_lens" / "tokenization_and_batching.py"


def load_ours():  # noqa: ANN201
    spec = importlib.util.spec_from_file_location("our_tokenization", OURS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.concat_and_batch_sequences


def main() -> int:
    ours = load_ours()
    rng = random.Random(0)
    special = [None, 0, 1, 2]
    n_cases = 0
    for trial in range(300):
        seqs = [
            torch.tensor([rng.randrange(0, 6) for _ in range(rng.randrange(0, 12))])
            for _ in range(rng.randrange(0, 8))
        ]
        for ctx, bb, bs, sep in itertools.product([2, 3, 5, 8], special, special, special):
            kwargs = dict(
                begin_batch_token_id=bb, begin_sequence_token_id=bs, sequence_separator_token_id=sep
            )
            expected = list(oracle_concat(iter(seqs), ctx, **kwargs))
            got = list(ours(iter(seqs), ctx, **kwargs))
            if len(expected) != len(got) or any(
                not torch.equal(e.long(), g) for e, g in zip(expected, got, strict=True)
            ):
                print(f"MISMATCH trial={trial} ctx={ctx} {kwargs} seqs={seqs}")
                print("expected", expected)
                print("got", got)
                return 1
            n_cases += 1
    print(f"OK: {n_cases} cases identical to sae-lens 5.6.0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
