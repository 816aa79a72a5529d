"""The residual CNN for Fashion-MNIST in PyTorch: the model of src/nn/resnet.rs with the recipe
of ClassifyConfig::fashion_resnet() (stages 32/64/128 of two basic blocks, convolutions with bias
as atomgrad's, batch norm momentum 0.1 eps 1e-5; AdamW lr 2e-3, weight decay 0.05 on every
parameter, one epoch of linear warm-up then a half cosine to 0 at the last step, per step; batch
128, 20 epochs; a random shift of up to 2 pixels filled with the background and a horizontal flip
with probability 1/2).

    python3 benches/reference/resnet.py --time [--batch 128] [--compile | --mode reduce-overhead]
    python3 benches/reference/resnet.py --train SPLIT.json [--epochs 20] [--seed 0] [--method ce|atom]

--time: seconds per training step on random images (as benches/kernels.rs `train/`), one JSON
line. --train: the whole recipe on the split atomgrad uses (`atomgrad data --task fashion --out
DIR` writes SPLIT.json: the official files and each split's indices), validation and test
accuracy after every epoch, then the test accuracy at the best validation epoch (as the protocol
reports it): one JSON line. TF32 is off (f32 as atomgrad) unless --tf32.
"""

import argparse
import gzip
import json
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import add_mode_args, apply_mode, mode_suffix, device, emit, fail, step_result, time_steps

MEAN, STD = 0.2860, 0.3530


class ConvBn(nn.Module):
    def __init__(self, cin, cout, k, stride):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=True)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)

    def forward(self, x):
        return self.bn(self.conv(x))


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.a, self.b = ConvBn(cin, cout, 3, stride), ConvBn(cout, cout, 3, 1)
        self.shortcut = ConvBn(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x):
        y = self.b(F.relu(self.a(x)))
        return F.relu(y + (self.shortcut(x) if self.shortcut is not None else x))


class ResNet(nn.Module):
    def __init__(self, widths=(32, 64, 128), classes=10):
        super().__init__()
        self.stem = ConvBn(1, widths[0], 3, 1)
        blocks, cin = [], widths[0]
        for s, w in enumerate(widths):
            for b in range(2):
                blocks.append(Block(cin, w, 2 if s > 0 and b == 0 else 1))
                cin = w
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(cin, classes)
        self.u = nn.Parameter(torch.empty(cin).uniform_(-(cin**-0.5), cin**-0.5))  # importance head
        self.c = nn.Parameter(torch.zeros(1))

    def forward(self, x, gated=False):  # x [N, 1, 28, 28]
        y = self.blocks(F.relu(self.stem(x)))  # [N, C, 7, 7]
        N, C, S, _ = y.shape
        h = y.flatten(2).transpose(1, 2)  # tokens [N, 49, C]
        w = None
        if gated:
            w = torch.sigmoid(h @ self.u + self.c)
            y = y * w.view(N, 1, S, S)
        return self.head(y.mean((2, 3))), y.flatten(1), h, w


def lr_at(step, lr, warmup, total):
    """optim::Schedule::lr_at: linear warm-up over `warmup` steps, then a half cosine to 0."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * 0.5 * (1.0 + math.cos(math.pi * t))


def augment(x, gen):
    """A random shift of up to 2 pixels (background fill) and a horizontal flip with p = 1/2."""
    N = x.shape[0]
    pad = F.pad(x, (2, 2, 2, 2), value=-MEAN / STD)
    dy = torch.randint(0, 5, (N,), generator=gen)
    dx = torch.randint(0, 5, (N,), generator=gen)
    flip = torch.randint(0, 2, (N,), generator=gen).bool()
    out = torch.stack([pad[i, :, dy[i] : dy[i] + 28, dx[i] : dx[i] + 28] for i in range(N)])
    out[flip] = out[flip].flip(-1)
    return out


def idx_images(path):
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)


def idx_labels(path):
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8, offset=8)


def load_split(path):
    s = json.load(open(path))
    out = {}
    for part in ("train", "val", "test"):
        img = s["images"][part]
        x = idx_images(img)[s[part]]
        y = idx_labels(img.replace("images-idx3", "labels-idx1"))[s[part]]
        out[part] = (torch.from_numpy((x / 255.0 - MEAN) / STD).float(), torch.from_numpy(y.astype(np.int64)))
    return out


def accuracy(model, x, y, dev, gated):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, x.shape[0], 1000):
            logits = model(x[i : i + 1000].to(dev), gated)[0]
            correct += (logits.argmax(1).cpu() == y[i : i + 1000]).sum().item()
    model.train()
    return correct / x.shape[0]


def train(args, dev):
    from atom import atom_terms

    data = load_split(args.train)
    (xt, yt), (xv, yv), (xs, ys) = ((x[: args.limit], y[: args.limit]) for x, y in (data[k] for k in ("train", "val", "test")))
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    gated = args.method == "atom"
    model = ResNet().to(dev).train()
    params = [p for n, p in model.named_parameters() if gated or n not in ("u", "c")]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05)
    B, per_epoch = args.batch, xt.shape[0] // args.batch
    total, warmup = args.epochs * per_epoch, per_epoch
    counts = torch.full((B,), 49, device=dev)
    history, step, t0 = [], 0, time.perf_counter()
    for epoch in range(args.epochs):
        order = torch.randperm(xt.shape[0], generator=gen)
        for b in range(per_epoch):
            idx = order[b * B : (b + 1) * B]
            x, y = augment(xt[idx], gen).to(dev), yt[idx].to(dev)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, args.lr, warmup, total)
            logits, z, h, w = model(x, gated)
            loss = F.cross_entropy(logits, y)
            if gated:
                l_a, c_w = atom_terms(z, h, w, counts)
                loss = loss + args.lam * l_a + c_w
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        val, test = accuracy(model, xv, yv, dev, gated), accuracy(model, xs, ys, dev, gated)
        history.append({"epoch": epoch + 1, "val": val, "test": test, "seconds": time.perf_counter() - t0})
        print(json.dumps(history[-1]), flush=True)
    best = max(range(len(history)), key=lambda i: (history[i]["val"], -i))
    emit("resnet-train", dev, history, method=args.method, seed=args.seed, selected_epoch=best + 1,
         val=history[best]["val"], test=history[best]["test"], recipe="ClassifyConfig::fashion_resnet")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--time", action="store_true")
    p.add_argument("--train", metavar="SPLIT_JSON")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--lam", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method", default="ce", choices=["ce", "atom"])
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
            fail("resnet-train", dev, e)
    from atom import atom_terms

    compiled = args.compile or args.mode is not None
    name = "resnet" + mode_suffix(args)
    B = args.batch
    X, Y = torch.randn(1024, 1, 28, 28), torch.randint(0, 10, (1024,))
    results = []
    try:
        for method in ["ce", "atom"] if args.method == "ce" else [args.method]:
            gated = method == "atom"
            torch.manual_seed(0)
            model = ResNet().to(dev).train()
            params = [p for n, p in model.named_parameters() if gated or n not in ("u", "c")]
            opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.05)
            (fwd,), _ = apply_mode(args, model)
            counts = torch.full((B,), 49, device=dev)

            def step():
                idx = torch.randint(0, X.shape[0], (B,))
                x, y = X[idx].to(dev), Y[idx].to(dev)
                logits, z, h, w = fwd(x, gated)
                loss = F.cross_entropy(logits, y)
                if gated:
                    l_a, c_w = atom_terms(z, h, w, counts)
                    loss = loss + 0.1 * l_a + c_w
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            s = time_steps(step, dev, args.budget, warmup=10 if compiled else 3)
            results.append(step_result(f"fashion ResNet {method} batch {B}", B, s, method=method, mode=args.mode))
    except Exception as e:  # noqa: BLE001
        fail(name, dev, e)
    emit(name, dev, results, compiled=compiled, tf32=args.tf32, amp=args.amp and dev.type == "cuda")


if __name__ == "__main__":
    main()
