"""Reads what benches/gpu.sh left in its output folder and prints the comparison table; writes
results.json there. Standard library only.

    python3 benches/reference/summarize.py OUT_DIR

Sources: OUT_DIR/stages.tsv (stage, status, exit code, seconds), OUT_DIR/<stage>.out (the
atomgrad bench's text lines, the references' JSON lines), info.out, nvidia-smi.out.
Ratio = atomgrad's throughput / PyTorch's (above 1: atomgrad is faster).
"""

import json
import os
import re
import sys

# "name   12.345 ms   67.89 GFLOP/s ..." or "... samples/s ..." (benches/kernels.rs)
LINE = re.compile(r"^(?P<name>\S.*?)\s+(?P<ms>\d+\.\d+) ms\s+(?P<rate>\d+\.\d+) (?P<unit>GFLOP/s|GB/s|samples/s)?")
# "    atom::structure_backward   1.234 ms/step  44.7%  1 dispatches/step" (--profile, under a step)
PROFILE = re.compile(r"^\s+(?P<kernel>\w+::\w+)\s+(?P<ms>\d+\.\d+) ms/step\s+(?P<pct>\d+\.\d+)%")


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "gpu-results"
    stages = []
    for line in read(os.path.join(out, "stages.tsv")).splitlines():
        f = line.split("\t")
        if len(f) == 4:
            stages.append({"stage": f[0], "status": f[1], "exit": int(f[2]), "seconds": int(f[3])})
    names = sorted(n for n in os.listdir(out) if n.endswith(".out")) if os.path.isdir(out) else []
    ours, refs, vocab, profiles, ceilings = {}, [], None, {}, {}
    for n in names:
        text = read(os.path.join(out, n))
        if n.startswith("bench"):
            case = None
            # The bench-checked stage times cases of the other stages with wgpu's shader checks
            # on (off is the GPU default): its names get " checked" so both forms stand side by side.
            suffix = " checked" if n.startswith("bench-checked") else ""
            for line in text.splitlines():
                c = re.match(r"ceiling: FMA (\d+\.\d+) GFLOP/s, copy (\d+\.\d+) GB/s", line)
                if c:
                    ceilings[n[:-4]] = {"fma_gflops": float(c[1]), "copy_gbs": float(c[2])}
                m = LINE.match(line)
                if m and m["unit"]:
                    case = m["name"].strip() + suffix
                    ours[case] = {"ms": float(m["ms"]), "rate": float(m["rate"]), "unit": m["unit"]}
                k = PROFILE.match(line)
                if k and case:
                    profiles.setdefault(case, []).append(
                        {"kernel": k["kernel"], "ms_per_step": float(k["ms"]), "percent": float(k["pct"])})
                v = re.match(r"# sentiment data: vocab (\d+)", line)
                if v:
                    vocab = int(v[1])
        elif n.startswith("py-"):
            for line in text.splitlines():
                if line.startswith("{"):
                    try:
                        refs.append(json.loads(line))
                    except ValueError:
                        pass
    notes = [l for l in read(os.path.join(out, "notes.txt")).splitlines() if l.strip()]
    info = read(os.path.join(out, "info.out"))
    adapter = re.search(r"^adapter:\s*(.*)$", info, re.M)
    driver = re.search(r"^driver:\s*(.*)$", info, re.M)
    smi = read(os.path.join(out, "nvidia-smi.out")).strip()

    def ref(bench, **match):
        for r in refs:
            if r.get("bench") == bench:
                for x in r.get("results", []):
                    if all(x.get(k) == v for k, v in match.items()):
                        return x
        return None

    def atomgrad_matmul(n, kernels="matmul/(Blocked|Tiled|Tiled128)"):
        rates = [v["rate"] for k, v in ours.items() if re.match(rf"{kernels} {n}x{n}x{n}$", k)]
        return max(rates) / 1e3 if rates else None  # TFLOP/s

    rows = []  # (name, atomgrad, pytorch, unit, higher_is_better)
    for n in (4096, 2048, 1024):
        for tf32 in (False, True):
            r = ref("matmul", n=n, tf32=tf32)
            label = f"matmul f32 {n} vs cuBLAS {'TF32' if tf32 else 'f32 (TF32 off)'}"
            rows.append((label, atomgrad_matmul(n), r and r["tflops"], "TFLOP/s", True))
        r = ref("matmul", n=n, f16=True)
        label = f"matmul f16 tensor cores {n} vs cuBLAS f16"
        rows.append((label, atomgrad_matmul(n, "mixed/Coop16(Packed)?"), r and r["tflops"], "TFLOP/s", True))
    for method, tag in (("ce", "cross-entropy"), ("atom", "atom")):
        a = ours.get(f"train/fashion CNN {tag} batch 128")
        r = ref("cnn", method=method)
        rows.append((f"Fashion CNN step {tag} b128 vs eager", a and a["rate"], r and r["samples_per_s"], "samples/s", True))
        a2 = ours.get(f"train/fashion CNN {tag} batch 128 gemm-conv gram-atom")
        if a2:
            rows.append((f"Fashion CNN step {tag} b128, opt-in paths, vs eager", a2["rate"], r and r["samples_per_s"], "samples/s", True))
        r = ref("cnn-compile", method=method)
        if r or method == "ce":
            rows.append((f"Fashion CNN step {tag} b128 vs compile", a and a["rate"], r and r["samples_per_s"], "samples/s", True))
    for b in (64, 128):
        a = ours.get(f"train/DCGAN G+D plain batch {b}")
        r = ref("dcgan", name=f"DCGAN G+D plain batch {b}")
        rows.append((f"DCGAN G+D step b{b}", a and a["rate"], r and r["samples_per_s"], "samples/s", True))
    a = ours.get("train/DCGAN G+D atom batch 64")
    rows.append(("DCGAN G+D step atom b64 (no reference)", a and a["rate"], None, "samples/s", True))
    a = ours.get("train/sentiment Transformer batch 64")
    r = ref("transformer", batch=64)
    rows.append(("Transformer step b64", a and a["rate"], r and r["samples_per_s"], "samples/s", True))
    r = ref("atom", N=256, n=64, m=64)
    for tag in ("", " gram128"):
        a = ours.get(f"atom/L_A-forward+backward{tag} N=256 n=64 m=64")
        rows.append((f"atom L_A fwd+bwd{tag} N=256 n=64 m=64", a and a["ms"], r and r["ms"], "ms", False))

    # Opt-in or newer kernels timed beside the current default (decide which to adopt from these).
    alternatives = []
    for name, v in sorted(ours.items()):
        for tag, base_tag in ((" checked", ""), ("Coop16Packed ", "Coop16 "), (" gram128", ""), (" gemm", ""), (" taps", ""), (" unsplit", ""), (" one-workgroup", ""), (" b8", ""), (" r8", ""),
                              (" Team", " PerRow"), (" rows", ""),
                              (" gemm-conv gram-atom", "")):
            if tag in name and (name.replace(tag, base_tag, 1)) in ours:
                d = ours[name.replace(tag, base_tag, 1)]
                alternatives.append({"name": name, "ms": v["ms"], "default": name.replace(tag, base_tag, 1),
                                     "default_ms": d["ms"], "speedup": d["ms"] / v["ms"] if v["ms"] else None})
                break

    # Issue 7's targets, each with its verdict: (target, measured, goal, unit).
    mm = atomgrad_matmul(4096)
    targets = [
        ("f32 matmul 4096 >= 25 TFLOP/s", mm, 25.0, "TFLOP/s"),
        ("f16 tensor cores 4096 >= 100 TFLOP/s", atomgrad_matmul(4096, "mixed/Coop16(Packed)?"), 100.0, "TFLOP/s"),
    ]
    for tag in ("", " gram128"):
        a = ours.get(f"atom/L_A-forward+backward{tag} N=256 n=64 m=64")
        targets.append((f"L_A fwd+bwd{tag} N=256 n=64 m=64 >= half the f32 matmul rate", a and a["rate"] / 1e3,
                        mm and mm / 2, "TFLOP/s"))
    for name, a, p, unit, higher in rows:
        if name in ("Fashion CNN step cross-entropy b128 vs eager", "DCGAN G+D step b128"):
            targets.append((f"{name}: no slower than PyTorch", a, p, unit))
    verdicts = [{"target": t, "measured": v, "goal": g, "unit": u,
                 "met": None if v is None or g is None else v >= g} for t, v, g, u in targets]

    table = []
    for name, a, p, unit, higher in rows:
        ratio = (a / p if higher else p / a) if a and p else None
        table.append({"name": name, "atomgrad": a, "pytorch": p, "unit": unit, "ratio": ratio})

    tests = [s for s in stages if s["stage"].startswith("test-")]
    result = {
        "adapter": adapter and adapter[1],
        "driver": driver and driver[1],
        "nvidia_smi": smi or None,
        "pytorch": next(({k: r.get(k) for k in ("device", "torch", "cuda")} for r in refs), None),
        "sentiment_vocab": vocab,
        "notes": notes,
        "stages": stages,
        "tests_passed": sum(s["status"] == "ok" for s in tests),
        "tests_failed": [s["stage"][5:] for s in tests if s["status"] != "ok"],
        "atomgrad_bench": ours,
        "pytorch_refs": refs,
        "table": table,
        "alternatives": alternatives,
        "issue_7_targets": verdicts,
        "step_profiles": profiles,
        "ceilings": ceilings,
        "ratio": "atomgrad throughput / PyTorch throughput (time ratio for ms rows); > 1 = atomgrad faster",
    }
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(result, f, indent=1)

    fmt = lambda v: "not measured" if v is None else f"{v:.4g}"  # noqa: E731
    print(f"atomgrad adapter: {result['adapter'] or 'unknown'} | driver: {result['driver'] or 'unknown'}")
    if smi:
        print("nvidia-smi: " + " / ".join(smi.splitlines()))
    if result["pytorch"]:
        p = result["pytorch"]
        print(f"PyTorch {p['torch']} (CUDA {p['cuda']}) on {p['device']}")
    print(f"kernel tests: {result['tests_passed']} binaries passed, failed or not run: {result['tests_failed'] or 'none'}")
    for n in notes:
        print("note: " + n)
    bad = [f"{s['stage']} ({s['status']})" for s in stages if s["status"] != "ok"]
    if bad:
        print("stages not ok: " + ", ".join(bad))
    w = max(len(t["name"]) for t in table)
    print(f"\n{'name':<{w}} | {'atomgrad':>12} | {'PyTorch':>12} | {'unit':<9} | ratio")
    print(f"{'-' * w}-|-{'-' * 12}-|-{'-' * 12}-|-{'-' * 9}-|------")
    for t in table:
        r = "-" if t["ratio"] is None else f"{t['ratio']:.2f}x"
        print(f"{t['name']:<{w}} | {fmt(t['atomgrad']):>12} | {fmt(t['pytorch']):>12} | {t['unit']:<9} | {r}")
    print("\nratio = atomgrad / PyTorch throughput (PyTorch ms / atomgrad ms for the atom row); > 1: atomgrad faster")
    if profiles:
        print("\nwhere the training steps' GPU time goes (top kernels, share of kernel time):")
        for case, ks in profiles.items():
            top = ", ".join(f"{k['kernel']} {k['percent']:.0f}%" for k in ks[:3])
            print(f"  {case}: {top}")
    for stage, c in ceilings.items():
        print(f"ceiling probes in {stage}: FMA {c['fma_gflops'] / 1e3:.2f} TFLOP/s, copy {c['copy_gbs']:.0f} GB/s")
    if alternatives:
        print("\nalternatives beside the default (speedup > 1: the alternative is faster):")
        for x in alternatives:
            print(f"  {x['name']}: {x['ms']:.4g} ms vs {x['default_ms']:.4g} ms, speedup {x['speedup']:.2f}x")
    print("\nissue 7's targets:")
    for v in verdicts:
        verdict = {None: "not measured", True: "met", False: "NOT met"}[v["met"]]
        print(f"  {v['target']}: {fmt(v['measured'])} {v['unit']} (goal {fmt(v['goal'])}): {verdict}")
    print(f"full results: {os.path.join(out, 'results.json')}")


if __name__ == "__main__":
    main()
