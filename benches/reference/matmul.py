"""cuBLAS matmul reference: C = A B for square A, B in f32, TF32 off ("highest") and on ("high"),
and in f16 (f16 inputs, f32 accumulation in cuBLAS; on CUDA only), atomgrad's Coop16 counterpart.

    python3 benches/reference/matmul.py [--sizes 1024,2048,4096] [--budget 1.0]

TFLOP/s = 2 n^3 / time; the time is measured with CUDA events over a batch of calls after warm-up
(wall clock on the CPU, where TF32 does not apply). Prints one JSON line.
"""

import argparse
import time

import torch

from common import device, emit, fail, sync


def bench(n, dev, budget, dtype=torch.float32):
    a = torch.randn(n, n, device=dev, dtype=dtype)  # [n, n]
    b = torch.randn(n, n, device=dev, dtype=dtype)  # [n, n]
    for _ in range(3):  # warm-up: cuBLAS heuristics, clocks
        c = a @ b
    sync(dev)
    iters = 1
    while True:
        if dev.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                c = a @ b  # [n, n]
            end.record()
            end.synchronize()
            dt = start.elapsed_time(end) / 1e3
        else:
            t = time.perf_counter()
            for _ in range(iters):
                c = a @ b
            dt = time.perf_counter() - t
        if dt > budget or iters >= 1 << 14:
            break
        iters = min(iters * 8, max(iters * 2, int(iters * budget / max(dt, 1e-6))))
    del c
    s = dt / iters
    return {"ms": 1e3 * s, "tflops": 2 * n**3 / s / 1e12, "iters": iters}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default=None, help="comma-separated n (default 1024,2048,4096; 256,512,1024 on CPU)")
    p.add_argument("--budget", type=float, default=1.0, help="seconds per measurement")
    args = p.parse_args()
    dev = device()
    sizes = args.sizes or ("1024,2048,4096" if dev.type == "cuda" else "256,512,1024")
    results = []
    try:
        for n in map(int, sizes.split(",")):
            for tf32, precision in [(False, "highest"), (True, "high")]:
                torch.set_float32_matmul_precision(precision)  # "high" lets cuBLAS use TF32
                r = bench(n, dev, args.budget)
                results.append({"name": f"matmul f32 {n}", "n": n, "tf32": tf32, "precision": precision, **r})
        torch.set_float32_matmul_precision("highest")
        if dev.type == "cuda":
            for n in map(int, sizes.split(",")):
                r = bench(n, dev, args.budget, torch.float16)
                results.append({"name": f"matmul f16 {n}", "n": n, "f16": True, **r})
    except Exception as e:  # noqa: BLE001 - report and exit non-zero
        fail("matmul", dev, e)
    emit("matmul", dev, results, tf32_applies=dev.type == "cuda")


if __name__ == "__main__":
    main()
