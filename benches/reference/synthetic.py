"""The synthetic task's training step in PyTorch (src/experiments/synthetic.rs at
SyntheticConfig::default(): 8 tokens of 4 features plus a one-hot position, token MLP 12-32-16,
importance gate, 2-D latent, linear head; Adam 3e-3, batch 64; atom: CE + 0.1 L_A (r_max 2) +
C_w), for `train/synthetic MLP * batch 64` of benches/kernels.rs.

    python3 benches/reference/synthetic.py [--method ce|atom|both] [--compile | --mode reduce-overhead] [--amp]

Small products: the step is bound by launch overhead, which is what reduce-overhead's CUDA
graphs remove. One JSON line.
"""

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

from atom import atom_terms
from common import add_mode_args, apply_mode, device, emit, fail, mode_suffix, step_result, time_steps

TOKENS, FEATS, HIDDEN, M, LATENT = 8, 4, 32, 16, 2


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok1, self.tok2 = nn.Linear(FEATS + TOKENS, HIDDEN), nn.Linear(HIDDEN, M)
        self.u = nn.Parameter(torch.empty(M).uniform_(-(M**-0.5), M**-0.5))  # importance head
        self.c = nn.Parameter(torch.zeros(1))
        self.to_z, self.head = nn.Linear(TOKENS * M, LATENT), nn.Linear(LATENT, 2)

    def forward(self, x, gated):  # x [N, 8, 12]
        N = x.shape[0]
        h = self.tok2(F.relu(self.tok1(x)))  # tokens [N, 8, 16]
        w = torch.sigmoid(h @ self.u + self.c) if gated else None  # [N, 8]
        z = self.to_z((h * w[..., None] if gated else h).flatten(1))  # [N, 2]
        return self.head(z), z, h, w


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--method", default="both", choices=["ce", "atom", "both"])
    add_mode_args(p)
    p.add_argument("--budget", type=float, default=1.0)
    args = p.parse_args()
    dev = device()
    B = args.batch
    pos = torch.eye(TOKENS).expand(2048, TOKENS, TOKENS)
    X = torch.cat([torch.randn(2048, TOKENS, FEATS), pos], 2)  # host "data set" [2048, 8, 12]
    Y = torch.randint(0, 2, (2048,))
    results = []
    try:
        for method in ["ce", "atom"] if args.method == "both" else [args.method]:
            gated = method == "atom"
            torch.manual_seed(0)
            model = Model().to(dev).train()
            params = [p for n, p in model.named_parameters() if gated or n not in ("u", "c")]
            opt = torch.optim.Adam(params, lr=3e-3)
            (fwd,), suffix = apply_mode(args, model)
            counts = torch.full((B,), TOKENS, device=dev)

            def step():
                idx = torch.randint(0, X.shape[0], (B,))
                x, y = X[idx].to(dev), Y[idx].to(dev)
                logits, z, h, w = fwd(x, gated)
                loss = F.cross_entropy(logits, y)
                if gated:
                    l_a, c_w = atom_terms(z, h, w, counts, r_max=2.0)
                    loss = loss + 0.1 * l_a + c_w
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            s = time_steps(step, dev, args.budget, warmup=10 if suffix else 3)
            name = {"ce": "cross-entropy", "atom": "atom"}[method]
            results.append(step_result(f"synthetic MLP {name} batch {B}", B, s, method=method))
    except Exception as e:  # noqa: BLE001
        fail("synthetic", dev, e)
    emit("synthetic" + mode_suffix(args), dev, results, mode=args.mode, tf32=args.tf32, amp=args.amp and dev.type == "cuda")


if __name__ == "__main__":
    main()
