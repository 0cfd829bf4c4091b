"""Build the embedded default model: tokenizer + tiny GPT-2 trained on the pydoc corpus.

Usage: .venv/bin/python scripts/build_embedded_model.py [--steps N] [--out DIR]

Steps (all seeded, deterministic data order):
1. build/load the embedded corpus (sae_lens.embedded.corpus);
2. train a byte-level BPE tokenizer on the train split and wrap it as a
   ``PreTrainedTokenizerFast`` (``<|endoftext|>`` is BOS = EOS = PAD, as in GPT-2);
3. cut the token stream (documents joined by EOS) into BOS-prefixed n_ctx windows;
4. train a ``GPT2LMHeadModel`` with AdamW (linear warmup, cosine decay);
5. measure held-out CE (nats/token) on the test split against its unigram entropy;
6. write config.json, model.safetensors, tokenizer files and metrics.json to --out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sae_lens.embedded.corpus import corpus_key, load_embedded_dataset  # noqa: E402

SPECIAL = "<|endoftext|>"
DEFAULT_OUT = ROOT / "sae_lens" / "embedded" / "default_model"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--n-ctx", type=int, default=256)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=60)
    p.add_argument("--eval-windows", type=int, default=256, help="test windows for held-out CE")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE (GPT-2 style) with one special token used as BOS/EOS/PAD."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[SPECIAL],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL,
        eos_token=SPECIAL,
        pad_token=SPECIAL,
        unk_token=SPECIAL,
        add_bos_token=False,
        model_max_length=1_000_000,
        clean_up_tokenization_spaces=False,
    )


def token_stream(tok: PreTrainedTokenizerFast, texts: list[str]) -> torch.Tensor:
    """All documents' tokens, each followed by EOS, as one 1-D tensor."""
    eos = tok.eos_token_id
    ids: list[int] = []
    for enc in tok(texts, add_special_tokens=False)["input_ids"]:
        ids.extend(enc)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def windows(stream: torch.Tensor, n_ctx: int, bos: int) -> torch.Tensor:
    """Cut the stream into [N, n_ctx] windows: BOS followed by n_ctx - 1 stream tokens."""
    body = n_ctx - 1
    n = stream.numel() // body
    chunks = stream[: n * body].view(n, body)
    return torch.cat([torch.full((n, 1), bos, dtype=torch.long), chunks], dim=1)


@torch.no_grad()
def heldout_ce(model: GPT2LMHeadModel, seqs: torch.Tensor, batch_size: int = 32) -> float:
    """Mean next-token cross-entropy (nats) over all positions of ``seqs``."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(seqs), batch_size):
        batch = seqs[i : i + batch_size]
        logits = model(batch).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum"
        )
        total += loss.item()
        count += batch[:, 1:].numel()
    model.train()
    return total / count


def unigram_numbers(train_stream: torch.Tensor, targets: torch.Tensor, vocab: int) -> dict:
    """Entropy of the held-out targets' own unigram distribution, and CE of the
    (add-one smoothed) train unigram distribution on them, both in nats/token."""
    counts = torch.bincount(targets.reshape(-1), minlength=vocab).double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
    train_p = torch.bincount(train_stream, minlength=vocab).double() + 1.0
    train_p /= train_p.sum()
    cross = -(p * train_p.log()).sum().item()
    return {"unigram_entropy_nats": entropy, "unigram_train_ce_nats": cross}


def lr_at(step: int, args: argparse.Namespace) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    frac = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def main() -> None:
    args = parse_args()
    t_start = time.time()
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)

    train_texts = list(load_embedded_dataset("train")["text"])
    test_texts = list(load_embedded_dataset("test")["text"])
    print(
        f"corpus {corpus_key()}: train {len(train_texts)} docs "
        f"{sum(map(len, train_texts)) / 1e6:.2f} MB, test {len(test_texts)} docs "
        f"{sum(map(len, test_texts)) / 1e6:.2f} MB",
        flush=True,
    )

    t0 = time.time()
    tok = train_tokenizer(train_texts, args.vocab_size)
    train_stream = token_stream(tok, train_texts)
    test_stream = token_stream(tok, test_texts)
    bos = tok.bos_token_id
    train_seqs = windows(train_stream, args.n_ctx, bos)
    test_seqs = windows(test_stream, args.n_ctx, bos)
    gen = torch.Generator().manual_seed(args.seed)
    eval_idx = torch.randperm(len(test_seqs), generator=gen)[: args.eval_windows].sort().values
    eval_seqs = test_seqs[eval_idx]
    print(
        f"tokenizer: vocab {len(tok)}, train {train_stream.numel()} tokens "
        f"({sum(map(len, train_texts)) / train_stream.numel():.2f} chars/token), "
        f"test {test_stream.numel()} tokens, {time.time() - t0:.1f}s",
        flush=True,
    )

    config = GPT2Config(
        vocab_size=len(tok),
        n_positions=args.n_ctx,
        n_embd=args.d_model,
        n_layer=args.n_layers,
        n_head=args.n_heads,
        n_inner=4 * args.d_model,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=bos,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    model = GPT2LMHeadModel(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params} params, {args.n_layers} layers, d_model {args.d_model}", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.98),
    )
    order = torch.randperm(len(train_seqs), generator=gen)
    model.train()
    t_train = time.time()
    pos = 0
    for step in range(args.steps):
        if pos + args.batch_size > len(order):
            order, pos = torch.randperm(len(train_seqs), generator=gen), 0
        batch = train_seqs[order[pos : pos + args.batch_size]]
        pos += args.batch_size
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        loss = model(batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(
                f"step {step:5d} loss {loss.item():.4f} lr {lr_at(step, args):.2e} "
                f"{time.time() - t_train:.0f}s",
                flush=True,
            )
    train_seconds = time.time() - t_train
    tokens_seen = args.steps * args.batch_size * args.n_ctx

    ce = heldout_ce(model, eval_seqs)
    uni = unigram_numbers(train_stream, eval_seqs[:, 1:], len(tok))
    metrics = {
        "model_name": "tiny-pydoc-gpt2",
        "corpus_key": corpus_key(),
        "n_params": n_params,
        "n_layers": args.n_layers,
        "d_model": args.d_model,
        "n_ctx": args.n_ctx,
        "vocab_size": len(tok),
        "train_steps": args.steps,
        "batch_size": args.batch_size,
        "train_tokens_seen": tokens_seen,
        "train_corpus_tokens": int(train_stream.numel()),
        "train_seconds": round(train_seconds, 1),
        "eval_windows": int(len(eval_seqs)),
        "eval_window_indices_seed": args.seed,
        "heldout_ce_nats": ce,
        **uni,
    }
    write_outputs(args.out, model, tok, metrics)
    print(json.dumps(metrics, indent=2))
    print(
        f"held-out CE {ce:.3f} nats/token vs unigram entropy "
        f"{uni['unigram_entropy_nats']:.3f} (train-unigram CE {uni['unigram_train_ce_nats']:.3f})"
    )
    print(f"training {train_seconds:.0f}s, total run time {time.time() - t_start:.0f}s")


def write_outputs(
    out: Path, model: GPT2LMHeadModel, tok: PreTrainedTokenizerFast, metrics: dict
) -> None:
    """Write the HF folder atomically (temp folder, then swap into place)."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    # The class name every transformers version (4.x and 5.x) resolves to a fast tokenizer.
    tok_cfg_path = tmp / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text())
    tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    tok_cfg_path.write_text(json.dumps(tok_cfg, indent=2) + "\n")
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


if __name__ == "__main__":
    main()
