"""Fashion-MNIST CNN training step in PyTorch: the model of src/nn/cnn.rs with the settings of
ClassifyConfig::fashion() (channels 16, 32; Adam lr 2e-3), at batch 128.

    python3 benches/reference/cnn.py [--batch 128] [--method ce|atom|both] [--compile | --mode reduce-overhead] [--tf32]

Random images of the right shape stand in for the data: no file is read or decoded on either
side. As atomgrad's `train::fit`, each step gathers the batch on the host and uploads it.
`--compile` / `--mode M` time `torch.compile(model[, mode=M])` instead of eager (compilation is
excluded: warm-up); TF32 is off unless `--tf32`.
Prints one JSON line.
"""

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

from atom import atom_terms
from common import add_mode_args, apply_mode, mode_suffix, device, emit, fail, step_result, time_steps


class Cnn(nn.Module):
    def __init__(self, c1=16, c2=32, classes=10):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1)
        self.conv2, self.bn2 = nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2)
        self.head = nn.Linear(c2 * 49, classes)
        self.u = nn.Parameter(torch.empty(c2).uniform_(-c2**-0.5, c2**-0.5))  # importance head
        self.c = nn.Parameter(torch.zeros(1))

    def forward(self, x, gated):  # x [N, 1, 28, 28]
        N = x.shape[0]
        a = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)  # [N, 16, 14, 14]
        b = F.max_pool2d(F.relu(self.bn2(self.conv2(a))), 2)  # [N, 32, 7, 7]
        h = b.flatten(2).transpose(1, 2)  # tokens [N, 49, 32]
        w = None
        if gated:
            w = torch.sigmoid(h @ self.u + self.c)  # [N, 49]
            b = b * w.view(N, 1, 7, 7)
        z = b.flatten(1)  # [N, 1568]
        return self.head(z), z, h, w


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--method", default="both", choices=["ce", "atom", "both"])
    add_mode_args(p)
    p.add_argument("--budget", type=float, default=1.0)
    args = p.parse_args()
    dev = device()
    B = args.batch
    X = torch.randn(1024, 1, 28, 28)  # host "data set"
    Y = torch.randint(0, 10, (1024,))
    results = []
    try:
        for method in ["ce", "atom"] if args.method == "both" else [args.method]:
            gated = method == "atom"
            torch.manual_seed(0)
            model = Cnn().to(dev).train()
            params = [p for n, p in model.named_parameters() if gated or n not in ("u", "c")]
            opt = torch.optim.Adam(params, lr=2e-3)
            (fwd,), suffix = apply_mode(args, model)
            counts = torch.full((B,), 49, device=dev)

            def step():
                idx = torch.randint(0, X.shape[0], (B,))
                x, y = X[idx].to(dev), Y[idx].to(dev)  # [B, 1, 28, 28], [B]
                logits, z, h, w = fwd(x, gated)
                loss = F.cross_entropy(logits, y)
                if gated:
                    l_a, c_w = atom_terms(z, h, w, counts)
                    loss = loss + 0.1 * l_a + 1.0 * c_w  # lambda, mu_w
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            s = time_steps(step, dev, args.budget, warmup=10 if suffix else 3)
            results.append(step_result(f"fashion CNN {method} batch {B}", B, s, method=method))
    except Exception as e:  # noqa: BLE001
        fail("cnn", dev, e)
    emit("cnn" + mode_suffix(args), dev, results, mode=args.mode, compiled=bool(args.compile or args.mode), tf32=args.tf32, amp=args.amp and dev.type == "cuda")


if __name__ == "__main__":
    main()
