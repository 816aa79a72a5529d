"""Atom-modeling regulariser in PyTorch (src/atom.rs, shared/spec/atom-modeling.md) and its
forward + backward timing at the shapes of `benches/kernels.rs` (`atom/L_A-forward+backward`).

    python3 benches/reference/atom.py [--grid 256,64,64] [--budget 1.0]

L_A is written the way a PyTorch user would: the token distances of all N n tokens against all
N n tokens as one [N n, N n] matrix from a matmul (|a|^2 + |b|^2 - 2 a.b, cuBLAS, TF32 off), then
weighted sums. That needs (N n)^2 floats (1 GiB at N=256, n=64) where atomgrad's kernel keeps
only [N, N]. Prints one JSON line.
"""

import argparse

import torch

from common import device, emit, fail, time_steps

EPS, R_MAX, TAU_LO, TAU_HI, W_FLOOR = 1e-3, 20.0, 0.1, 0.5, 1e-6


def sqdist(a, b):
    """Squared Euclidean distances between rows: a [P, m], b [Q, m] -> [P, Q]."""
    return ((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T).clamp_min(0.0)


def atom_terms(z, h, w, counts, r_max=R_MAX):
    """z [N, D] latents, h [N, n, m] tokens, w [N, n] importances, counts [N] real tokens per sample
    (padding at the end). Returns (L_A, C_w) as in src/atom.rs (normalize = true; r_max 20 unless given)."""
    N, n, m = h.shape
    real = (torch.arange(n, device=h.device)[None, :] < counts[:, None]).to(h.dtype)  # [N, n]
    off = 1.0 - torch.eye(N, device=z.device)  # [N, N]
    pairs = N * (N - 1)
    zc = z - z.mean(0, keepdim=True)
    z = z / ((zc * zc).mean() + 1e-12).sqrt()  # the batch at unit RMS spread
    dbar = (sqdist(z, z) + EPS**2).sqrt()  # [N, N]
    s = (dbar * off).sum() / pairs
    dfl = (dbar * dbar + s * s / r_max**2).sqrt()  # soft floor
    wm = w * real  # [N, n]
    wsum = wm.sum(1)
    wa = wsum + (W_FLOOR - wsum).relu()  # max(W, floor)
    ht = (h * real[..., None]).reshape(N * n, m)  # [N n, m]
    dt = (sqdist(ht, ht) + EPS**2).sqrt().view(N, n, N, n)  # [N, n, N, n]
    S = torch.einsum("ai,aibj,bj->ab", wm, dt, wm)  # [N, N]
    k = S / (wa[:, None] * wa[None, :])
    kappa = k / ((k * off).sum() / pairs)
    r = s / dfl
    l_a = ((r * r - 2.0 * kappa * r) * off).sum() / pairs
    mw = wsum / counts.to(h.dtype)
    c_w = ((TAU_LO - mw).relu() ** 2 + (mw - TAU_HI).relu() ** 2).mean()
    return l_a, c_w


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--grid", default=None, help="N,n,m[;N,n,m...] (default 256,64,64;128,49,64 on CUDA, 64,16,32 on CPU)")
    p.add_argument("--budget", type=float, default=1.0)
    args = p.parse_args()
    dev = device()
    grid = args.grid or ("256,64,64;128,49,64;64,49,64" if dev.type == "cuda" else "64,16,32")
    torch.set_float32_matmul_precision("highest")
    results = []
    try:
        for spec in grid.split(";"):
            N, n, m = map(int, spec.split(","))
            z = torch.randn(N, 16, device=dev, requires_grad=True)  # [N, 16]
            h = torch.randn(N, n, m, device=dev, requires_grad=True)  # [N, n, m]
            w = torch.empty(N, n, device=dev).uniform_(0.05, 0.95).requires_grad_()  # [N, n]
            counts = torch.full((N,), n, device=dev)

            def step():
                l_a, _ = atom_terms(z, h, w, counts)
                l_a.backward()
                z.grad = h.grad = w.grad = None

            s = time_steps(step, dev, args.budget)
            pairs = N * N * n * n * m
            results.append({"name": f"atom L_A forward+backward N={N} n={n} m={m}", "N": N, "n": n, "m": m,
                            "ms": 1e3 * s, "effective_gflops": 6 * pairs / s / 1e9})
    except Exception as e:  # noqa: BLE001
        fail("atom", dev, e)
    emit("atom", dev, results)


if __name__ == "__main__":
    main()
