"""Sentiment Transformer training step in PyTorch: the model of src/nn/transformer.rs with the
settings of ClassifyConfig::sentiment() (d 64, 4 heads, 2 pre-norm layers, feed-forward 128,
dropout 0.1, GELU (tanh), 64 positions; Adam lr 1e-3), at batch 64, cross-entropy.

    python3 benches/reference/transformer.py [--batch 64] [--vocab 9913] [--len 64]

Random token ids and lengths stand in for the reviews (the work does not depend on the lengths:
every position is computed and padded keys are masked, on both sides). --vocab should be the
bundled corpus' vocabulary, which `kernels train/` prints ("# sentiment data: vocab V ids").
Attention uses F.scaled_dot_product_attention (PyTorch's fused kernels). Prints one JSON line.
"""

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import add_mode_args, apply_mode, mode_suffix, device, emit, fail, step_result, time_steps


def attention(q, k, v, keep, p):
    """Scaled dot-product attention over real keys: PyTorch's fused kernels where it has them
    (2.0 and later), the same arithmetic written out otherwise (older CPU builds)."""
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=p)
    s = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    a = F.dropout(s.masked_fill(~keep, float("-inf")).softmax(-1), p)
    return a @ v


class Block(nn.Module):
    def __init__(self, d, heads, ff, p):
        super().__init__()
        self.heads, self.p = heads, p
        self.ln1, self.qkv, self.proj = nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ln2, self.ff1, self.ff2 = nn.LayerNorm(d), nn.Linear(d, ff), nn.Linear(ff, d)

    def forward(self, x, keep):  # x [N, L, d], keep [N, 1, 1, L] (True = real key)
        N, L, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(N, L, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # [N, H, L, dh]
        p = self.p if self.training else 0.0
        o = attention(q, k, v, keep, p)  # [N, H, L, dh]
        x = x + F.dropout(self.proj(o.transpose(1, 2).reshape(N, L, d)), p, self.training)
        f = self.ff2(F.gelu(self.ff1(self.ln2(x)), approximate="tanh"))
        return x + F.dropout(f, p, self.training)


class Transformer(nn.Module):
    def __init__(self, vocab, max_len=64, d=64, heads=4, layers=2, ff=128, p=0.1, classes=2):
        super().__init__()
        self.emb = nn.Parameter(torch.randn(vocab, d) * 0.02)
        self.pos = nn.Parameter(torch.randn(max_len, d) * 0.02)
        self.blocks = nn.ModuleList(Block(d, heads, ff, p) for _ in range(layers))
        self.ln_f, self.head = nn.LayerNorm(d), nn.Linear(d, classes)

    def forward(self, ids, lengths):  # ids [N, L], lengths [N]
        N, L = ids.shape
        real = torch.arange(L, device=ids.device)[None, :] < lengths[:, None]  # [N, L]
        x = self.emb[ids] + self.pos[:L]  # [N, L, d]
        for b in self.blocks:
            x = b(x, real[:, None, None, :])
        h = self.ln_f(x)
        z = (h * real[..., None]).sum(1) / lengths[:, None]  # mean over real tokens [N, d]
        return self.head(z)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--vocab", type=int, default=9913, help="the bundled reviews' vocabulary (see the docstring)")
    p.add_argument("--len", type=int, default=64)
    p.add_argument("--budget", type=float, default=1.0)
    add_mode_args(p)
    args = p.parse_args()
    dev = device()
    B, L = args.batch, args.len
    ids = torch.randint(2, args.vocab, (4096, L))  # host "data set"; 0 = padding, 1 = unknown
    lengths = torch.randint(4, 54, (4096,))  # the corpus' reviews have 1..53 tokens
    ids[torch.arange(L)[None, :] >= lengths[:, None]] = 0
    labels = torch.randint(0, 2, (4096,))
    results = []
    try:
        torch.manual_seed(0)
        model = Transformer(args.vocab, L).to(dev).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        (fwd,), suffix = apply_mode(args, model)

        def step():
            idx = torch.randint(0, ids.shape[0], (B,))
            x, n, y = ids[idx].to(dev), lengths[idx].to(dev), labels[idx].to(dev)
            F.cross_entropy(fwd(x, n), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        s = time_steps(step, dev, args.budget, warmup=10 if suffix else 3)
        results.append(step_result(f"sentiment Transformer batch {B}", B, s, vocab=args.vocab, len=L))
    except Exception as e:  # noqa: BLE001
        fail("transformer", dev, e)
    emit("transformer" + mode_suffix(args), dev, results, mode=args.mode, tf32=args.tf32, amp=args.amp and dev.type == "cuda")


if __name__ == "__main__":
    main()
