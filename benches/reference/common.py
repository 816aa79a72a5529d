"""Shared helpers of the PyTorch references: device choice, step timing, one JSON line out.

Every reference runs on CUDA when there is one, else on the CPU (to check the scripts anywhere).
Timing is wall clock per step from the host, with a device sync at the end of each batch of
steps, as atomgrad's `benches/kernels.rs` measures (so host overhead counts on both sides).
"""

import json
import sys
import time

import torch


def device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def time_steps(step, dev, budget=1.0, warmup=3, max_iters=1 << 14):
    """Seconds per call of `step`: `warmup` calls, then doubling batches until one takes `budget` s."""
    for _ in range(warmup):
        step()
    sync(dev)
    iters = 1
    while True:
        t = time.perf_counter()
        for _ in range(iters):
            step()
        sync(dev)
        dt = time.perf_counter() - t
        if dt > budget or iters >= max_iters:
            return dt / iters
        iters = min(iters * 8, max(iters * 2, int(iters * budget / max(dt, 1e-6))))


def header(dev):
    """What every JSON line carries about the machine."""
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    return {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda}


def emit(bench, dev, results, **extra):
    """Prints the one JSON line of a reference."""
    print(json.dumps({"bench": bench, **header(dev), **extra, "results": results}), flush=True)


def step_result(name, batch, seconds, **extra):
    return {"name": name, "batch": batch, "ms_per_step": 1e3 * seconds, "samples_per_s": batch / seconds, **extra}


def fail(bench, dev, err):
    """One JSON line saying what failed (the harness keeps going)."""
    emit(bench, dev, [], error=f"{type(err).__name__}: {err}")
    sys.exit(1)


def add_mode_args(p):
    """The PyTorch modes every step reference runs in: eager (default), `--compile`
    (torch.compile, default mode), `--mode reduce-overhead` (compiled with CUDA graphs); `--tf32`
    allows TF32 matmuls and convolutions (off by default: atomgrad's f32 is IEEE f32); `--amp`
    runs the forward under f16 autocast (the peer of atomgrad's --mixed-precision)."""
    p.add_argument("--compile", action="store_true", help="torch.compile, default mode")
    p.add_argument("--mode", default=None, help="torch.compile mode, e.g. reduce-overhead")
    p.add_argument("--tf32", action="store_true", help="allow TF32 (off: IEEE f32 as atomgrad)")
    p.add_argument("--amp", action="store_true", help="forward under torch.autocast(float16)")


def _to_f32(out):
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, (tuple, list)):
        return type(out)(_to_f32(o) for o in out)
    return out


class Autocast(torch.nn.Module):
    """A module whose forward runs under f16 autocast, outputs back in f32 (losses stay f32, as in
    atomgrad's mixed precision: f16 products, f32 accumulation and everything else). No loss
    scaling, as atomgrad has none."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, *a, **k):
        if next(self.m.parameters()).device.type != "cuda":  # f16 autocast is CUDA's
            return self.m(*a, **k)
        with torch.autocast(device_type="cuda", dtype=torch.float16):
            return _to_f32(self.m(*a, **k))


def mode_suffix(args):
    """The bench name's suffix of the mode: "", "-compile", "-reduce-overhead", then "-tf32",
    "-amp"."""
    s = "-" + (args.mode or "compile") if (args.compile or args.mode) else ""
    return s + ("-tf32" if args.tf32 else "") + ("-amp" if getattr(args, "amp", False) else "")


def apply_mode(args, *modules):
    """Sets TF32 as asked; returns the modules wrapped and compiled as asked (or as they are) and
    the suffix of the bench's name (`mode_suffix`)."""
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    if getattr(args, "amp", False):
        modules = tuple(Autocast(m) for m in modules)
    if args.compile or args.mode:
        modules = tuple(torch.compile(m, mode=args.mode) for m in modules)
    return modules, mode_suffix(args)
