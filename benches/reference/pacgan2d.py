"""PacGAN's 2-D experiments (Lin et al. 2018, Table 1; their public code) in PyTorch: the plain GAN,
or PacGAN-m (`--pack m`: the discriminator sees m samples concatenated), in their setup, which
atomgrad's `--task gan2d --model pacgan` (Gan2dConfig::pacgan) follows: 2-D N(0, I) noise, a
generator of 4 hidden layers of 400 units (linear without bias, batch norm, ReLU) and a linear
output; a discriminator of 3 maxout layers of 200 units with 5 pieces and a linear logit; weights
N(0, 0.02^2), biases 0; Adam lr 1e-4, beta1 0.8; batch 100; a fixed set of 100,000 training
points; 400 epochs. Scored on 2,500 generated points: a point is of high quality within 3 std of
its nearest mode, a mode is captured by one such point, and the KL divergence of the modes'
histogram from uniform.

    python3 benches/reference/pacgan2d.py --mixture grid25|ring8-unit [--pack 1] [--epochs 400] [--seeds 0-9]
    python3 benches/reference/pacgan2d.py --time
"""

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import device, emit, fail, step_result, time_steps


def centres(mixture):
    if mixture == "grid25":
        return np.array([(2.0 * (k // 5) - 4.0, 2.0 * (k % 5) - 4.0) for k in range(25)]), 0.05
    if mixture == "ring8-unit":
        a = 2 * math.pi * np.arange(8) / 8
        return np.stack([np.cos(a), np.sin(a)], 1), 0.01
    raise ValueError(mixture)


class Generator(nn.Module):
    def __init__(self, hidden=400, depth=4):
        super().__init__()
        layers, d = [], 2
        for _ in range(depth):
            layers += [nn.Linear(d, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU()]
            d = hidden
        self.net = nn.Sequential(*layers, nn.Linear(hidden, 2))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, z):
        return self.net(z)


class Maxout(nn.Module):
    def __init__(self, i, o, k):
        super().__init__()
        self.o, self.k = o, k
        self.lin = nn.Linear(i, o * k)
        nn.init.normal_(self.lin.weight, 0.0, 0.02)
        nn.init.zeros_(self.lin.bias)

    def forward(self, x):
        return self.lin(x).view(x.shape[0], self.o, self.k).max(2).values


class Discriminator(nn.Module):
    def __init__(self, pack=1, units=200, pieces=5, layers=3):
        super().__init__()
        mods, d = [], 2 * pack
        for _ in range(layers):
            mods.append(Maxout(d, units, pieces))
            d = units
        self.net = nn.Sequential(*mods)
        self.out = nn.Linear(units, 1)
        nn.init.normal_(self.out.weight, 0.0, 0.02)
        nn.init.zeros_(self.out.bias)

    def forward(self, x):
        return self.out(self.net(x))


def mode_stats(points, means, std):
    d = np.sqrt(((points[:, None, :] - means[None]) ** 2).sum(-1)) / std  # [n, modes]
    nearest, dist = d.argmin(1), d.min(1)
    good = dist < 3.0
    counts = np.bincount(nearest[good], minlength=len(means))
    hq = counts.sum()
    p = counts[counts > 0] / max(hq, 1)
    kl = float((p * np.log(p * len(means))).sum()) if hq > 0 else math.log(len(means))
    return {"modes": int((counts > 0).sum()), "high_quality": float(good.mean()), "kl": kl}


def run(mixture, pack, epochs, seed, dev, batch=100, n_train=100_000, log_every=20):
    means, std = centres(mixture)
    rng = np.random.default_rng(seed)
    comp = rng.integers(0, len(means), n_train)
    data = torch.tensor(means[comp] + std * rng.standard_normal((n_train, 2)), dtype=torch.float32)
    torch.manual_seed(seed)
    g, d = Generator().to(dev).train(), Discriminator(pack).to(dev).train()
    og = torch.optim.Adam(g.parameters(), lr=1e-4, betas=(0.8, 0.999))
    od = torch.optim.Adam(d.parameters(), lr=1e-4, betas=(0.8, 0.999))
    fixed = torch.randn(2500, 2, generator=torch.Generator().manual_seed(seed + 1)).to(dev)
    B, per_epoch, curve, t0 = batch, n_train // (batch * pack), [], time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(n_train)
        for b in range(per_epoch):
            real = data[order[b * B * pack : (b + 1) * B * pack]].to(dev).view(B, 2 * pack)
            fake = g(torch.randn(B * pack, 2, device=dev)).view(B, 2 * pack)
            ld = F.binary_cross_entropy_with_logits(d(real), torch.ones(B, 1, device=dev)) + F.binary_cross_entropy_with_logits(
                d(fake.detach()), torch.zeros(B, 1, device=dev))
            od.zero_grad(set_to_none=True)
            ld.backward()
            od.step()
            lg = F.binary_cross_entropy_with_logits(d(fake), torch.ones(B, 1, device=dev))
            og.zero_grad(set_to_none=True)
            lg.backward()
            og.step()
        if (epoch + 1) % log_every == 0 or epoch + 1 == epochs:
            g.eval()
            with torch.no_grad():
                s = mode_stats(g(fixed).cpu().numpy(), means, std)
            g.train()
            curve.append({"epoch": epoch + 1, "seconds": time.perf_counter() - t0, **s})
            print(json.dumps({"mixture": mixture, "pack": pack, "seed": seed, **curve[-1]}), flush=True)
    return {"seed": seed, **curve[-1], "curve": curve}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mixture", default="grid25", choices=["grid25", "ring8-unit"])
    p.add_argument("--pack", type=int, default=1)
    p.add_argument("--epochs", type=int, default=400)
    p.add_argument("--seeds", default="0-9")
    p.add_argument("--time", action="store_true")
    p.add_argument("--budget", type=float, default=1.0)
    args = p.parse_args()
    dev = device()
    if args.time:
        g, d = Generator().to(dev), Discriminator().to(dev)
        og = torch.optim.Adam(g.parameters(), lr=1e-4, betas=(0.8, 0.999))
        od = torch.optim.Adam(d.parameters(), lr=1e-4, betas=(0.8, 0.999))
        X = torch.randn(100_000, 2)
        ones, zeros = torch.ones(100, 1, device=dev), torch.zeros(100, 1, device=dev)

        def step():
            real = X[torch.randint(0, 100_000, (100,))].to(dev)
            fake = g(torch.randn(100, 2, device=dev))
            ld = F.binary_cross_entropy_with_logits(d(real), ones) + F.binary_cross_entropy_with_logits(d(fake.detach()), zeros)
            od.zero_grad(set_to_none=True)
            ld.backward()
            od.step()
            lg = F.binary_cross_entropy_with_logits(d(fake), ones)
            og.zero_grad(set_to_none=True)
            lg.backward()
            og.step()

        emit("pacgan2d-time", dev, [step_result("PacGAN 2-D G+D batch 100", 100, time_steps(step, dev, args.budget))])
        return
    a, b = (args.seeds.split("-") + [None])[:2]
    seeds = range(int(a), int(b) + 1) if b else [int(a)]
    try:
        runs = [run(args.mixture, args.pack, args.epochs, s, dev) for s in seeds]
    except Exception as e:  # noqa: BLE001
        fail("pacgan2d", dev, e)
    summary = {k: (float(np.mean([r[k] for r in runs])), float(np.std([r[k] for r in runs]))) for k in ("modes", "high_quality", "kl")}
    emit("pacgan2d", dev, runs, mixture=args.mixture, pack=args.pack, epochs=args.epochs, mean_std=summary)


if __name__ == "__main__":
    main()
