"""The standard-size DCGAN in PyTorch: the models of src/nn/gan.rs in their deep form with the
recipe of FashionGanConfig::base() (noise 100 -> 7x7x256 -> 14x14x128 -> 28x28x64 -> 3x3 conv ->
tanh, batch norm and ReLU between; discriminator convolutions 64, 128, 256 with leaky ReLU 0.2
and a linear logit; DCGAN's N(0, 0.02) weights; Adam 2e-4, betas (0.5, 0.999); batch 128; the
non-saturating loss), scored in the features of atomgrad's own feature network, so both sides'
Fréchet distances are measured by the same network.

    python3 benches/reference/dcgan_base.py --time [--batch 128] [--compile | --mode reduce-overhead]
    python3 benches/reference/dcgan_base.py --train SPLIT.json --features FEATURE_CNN.safetensors \\
        [--epochs 20] [--seeds 0,1,2]

SPLIT.json: `atomgrad data --task fashion --out DIR`; FEATURE_CNN.safetensors: the residual CNN an
atomgrad `gan --model base` run trained into its folder (feature-cnn.safetensors). For each seed:
train, keep the generator of the epoch with the lowest Fréchet distance of 2,000 samples to the
validation images, then score 10,000 samples against the test images: Fréchet distance, classes
with >= 4% of the samples, the share classified with probability >= 0.9. One JSON line.
"""

import argparse
import copy
import json
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import add_mode_args, apply_mode, mode_suffix, device, emit, fail, step_result, time_steps
from resnet import ResNet, load_split


class Generator(nn.Module):
    def __init__(self, noise=100, c=256):
        super().__init__()
        self.c = c
        self.fc = nn.Linear(noise, c * 49)
        self.bn0 = nn.BatchNorm2d(c)
        self.up1 = nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c // 2)
        self.up2 = nn.ConvTranspose2d(c // 2, c // 4, 4, 2, 1)
        self.bn2 = nn.BatchNorm2d(c // 4)
        self.out = nn.Conv2d(c // 4, 1, 3, padding=1)
        for m in (self.up1, self.up2, self.out):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, z):
        x = F.relu(self.bn0(self.fc(z).view(-1, self.c, 7, 7)))
        x = F.relu(self.bn1(self.up1(x)))
        x = F.relu(self.bn2(self.up2(x)))
        return torch.tanh(self.out(x))


class Discriminator(nn.Module):
    def __init__(self, c=128):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, c // 2, 4, 2, 1), nn.Conv2d(c // 2, c, 4, 2, 1)
        self.c3 = nn.Conv2d(c, 2 * c, 3, 2, 1)
        self.fc = nn.Linear(2 * c * 16, 1)
        for m in (self.c1, self.c2, self.c3):
            nn.init.normal_(m.weight, 0.0, 0.02)
            nn.init.zeros_(m.bias)

    def forward(self, x):
        for c in (self.c1, self.c2, self.c3):
            x = F.leaky_relu(c(x), 0.2)
        return self.fc(x.flatten(1))


def read_safetensors(path):
    """The F32 tensors of a safetensors file (its format: an 8-byte header length, JSON, data)."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__" or t["dtype"] != "F32":
            continue
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a : 8 + n + b], "<f4").reshape(t["shape"])
    return out


def feature_net(path, dev):
    """atomgrad's residual CNN (src/nn/resnet.rs names) as the PyTorch ResNet of resnet.py."""
    w = read_safetensors(path)
    net = ResNet()
    state = {}
    for name, a in w.items():
        if name.startswith(("optim.", "train.")):  # a train checkpoint's other state
            continue
        name = name[len("model."):] if name.startswith("model.") else name
        if name.startswith("proj."):
            continue
        t = torch.from_numpy(a.copy())
        key = name
        if key.startswith("stage"):
            s, b = int(key[5]), int(key.split(".")[1][5:])
            key = f"blocks.{2 * s + b}." + ".".join(key.split(".")[2:])
        key = key.replace("importance.", "")
        key = key.replace(".gamma", ".weight").replace(".beta", ".bias")
        if key.endswith(".w"):
            key = key[:-2] + ".weight"
            t = t.T.contiguous() if key == "head.weight" else t
        elif key.endswith(".b"):
            key = key[:-2] + ".bias"
            t = t.reshape(-1)
        state[key] = t
    missing = net.load_state_dict(state, strict=False)
    real_missing = [k for k in missing.missing_keys if not k.endswith("num_batches_tracked")]
    if real_missing or missing.unexpected_keys:
        raise RuntimeError(f"feature net: missing {real_missing}, unexpected {missing.unexpected_keys}")
    return net.to(dev).eval()


MEAN, STD = 0.2860, 0.3530


def features(net, x, dev):
    """x [n, 1, 28, 28] in the data set's normalisation -> (features [n, C], predictions, top probability)."""
    fs, ps, tops = [], [], []
    with torch.no_grad():
        for i in range(0, x.shape[0], 1000):
            y = net.blocks(F.relu(net.stem(x[i : i + 1000].to(dev))))
            f = y.mean((2, 3))
            prob = F.softmax(net.head(f), 1)
            fs.append(f.double().cpu())
            ps.append(prob.argmax(1).cpu())
            tops.append(prob.max(1).values.cpu())
    return torch.cat(fs).numpy(), torch.cat(ps).numpy(), torch.cat(tops).numpy()


def frechet(a, b):
    ma, mb = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    va, ua = np.linalg.eigh(ca)
    sa = (ua * np.sqrt(np.clip(va, 0, None))) @ ua.T
    vm = np.linalg.eigvalsh(sa @ cb @ sa)
    return float(((ma - mb) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * np.sqrt(np.clip(vm, 0, None)).sum())


def generate(g, n, seed, dev):
    gen = torch.Generator().manual_seed(seed)
    g.eval()
    out = []
    with torch.no_grad():
        for i in range(0, n, 500):
            z = torch.randn(min(500, n - i), 100, generator=gen).to(dev)
            out.append(g(z).cpu())
    g.train()
    return ((torch.cat(out) + 1) / 2 - MEAN) / STD


def score(net, real, fake, dev):
    fr, _, _ = features(net, real, dev)
    ff, pred, top = features(net, fake, dev)
    counts = np.bincount(pred, minlength=10)
    return {"frechet": frechet(fr, ff), "classes_covered": int((counts >= 0.04 * len(pred)).sum()),
            "confident": float((top >= 0.9).mean()), "class_share": (counts / len(pred)).tolist()}


def train(args, dev):
    data = load_split(args.train)
    xt = data["train"][0] * STD + MEAN  # back to [0, 1]
    xt = xt * 2 - 1
    net = feature_net(args.features, dev)
    runs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        g, d = Generator().to(dev).train(), Discriminator().to(dev).train()
        og = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
        od = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
        B = args.batch
        per_epoch = xt.shape[0] // B
        best, best_fd, history = None, float("inf"), []
        for epoch in range(args.epochs):
            order = torch.randperm(xt.shape[0], generator=gen)
            for b in range(per_epoch):
                real = xt[order[b * B : (b + 1) * B]].to(dev)
                fake = g(torch.randn(B, 100, device=dev))
                logits = d(torch.cat([real, fake.detach()]))
                target = torch.cat([torch.ones(B, 1), torch.zeros(B, 1)]).to(dev)
                ld = 2 * F.binary_cross_entropy_with_logits(logits, target)
                od.zero_grad(set_to_none=True)
                ld.backward()
                od.step()
                lg = F.binary_cross_entropy_with_logits(d(fake), torch.ones(B, 1, device=dev))
                og.zero_grad(set_to_none=True)
                lg.backward()
                og.step()
            fd = score(net, data["val"][0], generate(g, 2000, seed + 1000, dev), dev)["frechet"]
            history.append({"epoch": epoch + 1, "val_frechet": fd})
            print(json.dumps({"seed": seed, **history[-1]}), flush=True)
            if fd < best_fd:
                best, best_fd = copy.deepcopy(g.state_dict()), fd
        g.load_state_dict(best)
        test = score(net, data["test"][0], generate(g, 10000, seed + 2000, dev), dev)
        runs.append({"seed": seed, "history": history, "val_frechet": best_fd, **test})
    emit("dcgan-base-train", dev, runs, recipe="FashionGanConfig::base", epochs=args.epochs,
         median_test_frechet=float(np.median([r["frechet"] for r in runs])))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--time", action="store_true")
    p.add_argument("--train", metavar="SPLIT_JSON")
    p.add_argument("--features", metavar="FEATURE_CNN_SAFETENSORS")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--batch", type=int, default=128)
    add_mode_args(p)
    p.add_argument("--budget", type=float, default=1.0)
    args = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    dev = device()
    if args.train:
        try:
            return train(args, dev)
        except Exception as e:  # noqa: BLE001
            fail("dcgan-base-train", dev, e)
    compiled = args.compile or args.mode is not None
    name = "dcgan-base" + mode_suffix(args)
    B = args.batch
    X = torch.rand(1024, 1, 28, 28) * 2 - 1
    try:
        torch.manual_seed(0)
        g, d = Generator().to(dev).train(), Discriminator().to(dev).train()
        og = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
        od = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
        (G, D), _ = apply_mode(args, g, d)
        target = torch.cat([torch.ones(B, 1), torch.zeros(B, 1)]).to(dev)
        ones = torch.ones(B, 1, device=dev)

        def step():
            real = X[torch.randint(0, 1024, (B,))].to(dev)
            fake = G(torch.randn(B, 100, device=dev))
            ld = 2 * F.binary_cross_entropy_with_logits(D(torch.cat([real, fake.detach()])), target)
            od.zero_grad(set_to_none=True)
            ld.backward()
            od.step()
            lg = F.binary_cross_entropy_with_logits(D(fake), ones)
            og.zero_grad(set_to_none=True)
            lg.backward()
            og.step()

        s = time_steps(step, dev, args.budget, warmup=10 if compiled else 3)
        results = [step_result(f"DCGAN base G+D batch {B}", B, s, mode=args.mode)]
    except Exception as e:  # noqa: BLE001
        fail(name, dev, e)
    emit(name, dev, results, compiled=compiled, tf32=args.tf32, amp=args.amp and dev.type == "cuda")


if __name__ == "__main__":
    main()
