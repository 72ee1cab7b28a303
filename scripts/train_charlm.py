"""Train drnn's bundled character-level language model and save it in drnn's format.

The text is the standard library's pydoc_data.topics (every Python installation
carries it): the values of its `topics` dict joined in key order.  The last
5% of the characters are held out for validation.

    Embedding(V, 64) -> LSTM(64, 256, num_layers=2) -> Linear(256, V)

trained with PyTorch (Adam, truncated BPTT over contiguous streams, gradient
clipping, fixed seeds), converted with drnn.from_torch and written to
python/drnn/data/charlm.safetensors; the vocabulary (id -> character) goes to
python/drnn/data/charlm_vocab.json together with the training record.

    python scripts/train_charlm.py            # defaults as used for the bundled model
"""
import argparse
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "python", "drnn", "data")


def corpus():
    from pydoc_data.topics import topics
    return "".join(topics[k] for k in sorted(topics))


class CharLM(nn.Module):
    def __init__(self, vocab, embed, hidden, layers, dropout):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=layers, batch_first=True, dropout=dropout)
        self.drop = nn.Dropout(dropout)          # training only; from_torch skips it
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x, state=None):
        y, state = self.lstm(self.embed(x), state)
        return self.head(self.drop(y)), state


def streams(ids, n):
    """Cut a 1-D id tensor into n equal contiguous streams: (n, len // n)."""
    per = len(ids) // n
    return ids[: per * n].view(n, per)


@torch.no_grad()
def evaluate(model, data, seq):
    """Bits per character over `data` (n_streams, T), state carried across chunks."""
    model.eval()
    total, count, state = 0.0, 0, None
    for s in range(0, data.size(1) - 1, seq):
        x = data[:, s:s + seq]
        y = data[:, s + 1:s + 1 + seq]
        x = x[:, :y.size(1)]
        logits, state = model(x, state)
        total += nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1),
                                             reduction="sum").item()
        count += y.numel()
    model.train()
    return total / count / math.log(2)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--embed", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64, help="parallel contiguous streams")
    ap.add_argument("--seq", type=int, default=100, help="truncated BPTT length")
    ap.add_argument("--steps", type=int, default=2400)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=300)
    ap.add_argument("--out", default=os.path.join(DATA, "charlm.safetensors"))
    args = ap.parse_args(argv)

    command = "python scripts/train_charlm.py" + "".join(" " + a for a in (argv or sys.argv[1:]))
    print("command:", command, flush=True)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    t0 = time.time()

    text = corpus()
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.long)
    n_val = len(ids) // 20
    train_ids, val_ids = ids[:-n_val], ids[-n_val:]
    print(f"text: {len(text):,} chars, vocabulary {len(chars)}, "
          f"train {len(train_ids):,}, validation {len(val_ids):,}", flush=True)

    train = streams(train_ids, args.batch)
    val = streams(val_ids, 8)
    model = CharLM(len(chars), args.embed, args.hidden, args.layers, args.dropout)
    print(f"model: {sum(p.numel() for p in model.parameters()):,} parameters", flush=True)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / args.steps))))

    state, pos, epoch = None, 0, 0
    for step in range(1, args.steps + 1):
        if pos + args.seq + 1 > train.size(1):
            # a new epoch: restart at a (seeded) random offset so chunk edges move
            pos, state, epoch = int(torch.randint(0, args.seq, ())), None, epoch + 1
        x = train[:, pos:pos + args.seq]
        y = train[:, pos + 1:pos + 1 + args.seq]
        pos += args.seq
        if state is not None:
            state = tuple(s.detach() for s in state)
        logits, state = model(x, state)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0:
            print(f"step {step:5d}  epoch {epoch}  train bpc {loss.item() / math.log(2):.3f}  "
                  f"{time.time() - t0:6.0f} s", flush=True)
        if step % args.eval_every == 0 and step < args.steps:
            print(f"step {step:5d}  val bpc {evaluate(model, val, 200):.3f}", flush=True)

    val_bpc = evaluate(model, val, 200)
    train_time = time.time() - t0
    print(f"validation: {val_bpc:.4f} bits per character (last {n_val:,} chars)", flush=True)

    # Convert, save, and check drnn gives the same validation bpc without torch.
    sys.path.insert(0, os.path.join(HERE, "..", "python"))
    import drnn
    model.eval()
    dm = drnn.from_torch(model)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    dm.save(args.out)
    dm = drnn.load(args.out)
    v = val_ids.numpy()[: (len(val_ids) // 8) * 8].reshape(8, -1)
    logits = dm.predict(v[:, :-1]).astype(np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    drnn_bpc = -np.take_along_axis(logp, v[:, 1:, None], -1).mean() / math.log(2)
    print(f"drnn on the saved file: {drnn_bpc:.4f} bits per character", flush=True)

    vocab_path = os.path.join(os.path.dirname(args.out), "charlm_vocab.json")
    record = {
        "chars": chars,
        "text": "pydoc_data.topics.topics values joined in sorted key order "
                f"(Python {sys.version.split()[0]})",
        "command": command, "seed": args.seed,
        "architecture": f"Embedding({len(chars)}, {args.embed}) -> LSTM({args.embed}, {args.hidden}, "
                        f"num_layers={args.layers}) -> Linear({args.hidden}, {len(chars)})",
        "steps": args.steps, "batch": args.batch, "seq": args.seq, "lr": args.lr, "dropout": args.dropout,
        "epochs_seen": round(args.steps * args.batch * args.seq / len(train_ids), 2),
        "train_chars": len(train_ids), "val_chars": n_val,
        "val_bpc": round(val_bpc, 4), "train_seconds": round(train_time, 1),
        "torch": torch.__version__,
    }
    with open(vocab_path, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"saved {args.out} ({os.path.getsize(args.out):,} bytes) and {vocab_path}")
    print(f"run time: {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
