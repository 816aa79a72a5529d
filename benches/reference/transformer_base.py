"""The 4-layer sentiment Transformer in PyTorch: the model of src/nn/transformer.rs with the recipe
of ClassifyConfig::sentiment_base() (d 128, 4 heads, 4 pre-norm layers, feed-forward 512, GELU
(tanh), dropout 0.1, learned positions, mean over real tokens; AdamW lr 5e-4, weight decay 0.01
on every parameter, one epoch of linear warm-up then a half cosine to 0, per step; batch 64,
10 epochs).

    python3 benches/reference/transformer_base.py --time [--batch 64] [--compile | --mode reduce-overhead]
    python3 benches/reference/transformer_base.py --train REVIEWS.json [--epochs 10] [--seed 0]

--train: on the very reviews, split and vocabulary atomgrad uses (`atomgrad data --task
sentiment --out DIR` writes REVIEWS.json), validation and test accuracy after every epoch, then
the test accuracy at the best validation epoch: one JSON line. TF32 is off unless --tf32.
"""

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

from common import add_mode_args, apply_mode, mode_suffix, device, emit, fail, step_result, time_steps
from transformer import Transformer


def lr_at(step, lr, warmup, total):
    if step < warmup:
        return lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * 0.5 * (1.0 + math.cos(math.pi * t))


def encode(split, max_len):
    n = len(split["ids"])
    ids = torch.zeros(n, max_len, dtype=torch.long)
    lengths = torch.tensor([len(r) for r in split["ids"]])
    for i, r in enumerate(split["ids"]):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return ids, lengths, torch.tensor(split["labels"])


def accuracy(model, ids, lengths, labels, dev):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, ids.shape[0], 256):
            logits = model(ids[i : i + 256].to(dev), lengths[i : i + 256].to(dev))
            correct += (logits.argmax(1).cpu() == labels[i : i + 256]).sum().item()
    model.train()
    return correct / ids.shape[0]


def base_model(vocab, max_len, dev):
    return Transformer(vocab, max_len, d=128, heads=4, layers=4, ff=512, p=0.1).to(dev).train()


def train(args, dev):
    data = json.load(open(args.train))
    L = data["max_len"]
    tr, va, te = (tuple(t[: args.limit] for t in encode(data[s], L)) for s in ("train", "val", "test"))
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = base_model(data["vocab"], L, dev)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    B, per_epoch = args.batch, tr[0].shape[0] // args.batch
    total, warmup = args.epochs * per_epoch, per_epoch
    history, step, t0 = [], 0, time.perf_counter()
    for epoch in range(args.epochs):
        order = torch.randperm(tr[0].shape[0], generator=gen)
        for b in range(per_epoch):
            idx = order[b * B : (b + 1) * B]
            for g in opt.param_groups:
                g["lr"] = lr_at(step, args.lr, warmup, total)
            loss = F.cross_entropy(model(tr[0][idx].to(dev), tr[1][idx].to(dev)), tr[2][idx].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        val, test = accuracy(model, *va, dev), accuracy(model, *te, dev)
        history.append({"epoch": epoch + 1, "val": val, "test": test, "seconds": time.perf_counter() - t0})
        print(json.dumps(history[-1]), flush=True)
    best = max(range(len(history)), key=lambda i: (history[i]["val"], -i))
    emit("transformer-base-train", dev, history, seed=args.seed, selected_epoch=best + 1, val=history[best]["val"],
         test=history[best]["test"], recipe="ClassifyConfig::sentiment_base")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--time", action="store_true")
    p.add_argument("--train", metavar="REVIEWS_JSON")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab", type=int, default=9217, help="the bundled reviews' training vocabulary")
    add_mode_args(p)
    p.add_argument("--budget", type=float, default=1.0)
    p.add_argument("--limit", type=int, default=None, help="--train on at most this many samples per split (smoke tests)")
    args = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    dev = device()
    if args.train:
        try:
            return train(args, dev)
        except Exception as e:  # noqa: BLE001
            fail("transformer-base-train", dev, e)
    compiled = args.compile or args.mode is not None
    name = "transformer-base" + mode_suffix(args)
    B, L = args.batch, 64
    ids = torch.randint(2, args.vocab, (4096, L))
    lengths = torch.randint(4, 54, (4096,))
    ids[torch.arange(L)[None, :] >= lengths[:, None]] = 0
    labels = torch.randint(0, 2, (4096,))
    results = []
    try:
        torch.manual_seed(0)
        model = base_model(args.vocab, L, dev)
        opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.01)
        (fwd,), _ = apply_mode(args, model)

        def step():
            idx = torch.randint(0, ids.shape[0], (B,))
            F.cross_entropy(fwd(ids[idx].to(dev), lengths[idx].to(dev)), labels[idx].to(dev)).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        s = time_steps(step, dev, args.budget, warmup=10 if compiled else 3)
        results.append(step_result(f"sentiment Transformer base batch {B}", B, s, mode=args.mode))
    except Exception as e:  # noqa: BLE001
        fail(name, dev, e)
    emit(name, dev, results, compiled=compiled, tf32=args.tf32, amp=args.amp and dev.type == "cuda")


if __name__ == "__main__":
    main()
