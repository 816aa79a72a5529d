//! Shader micro-benchmarks: `cargo bench` (all), `cargo bench -- matmul` (names containing
//! "matmul"), `cargo bench -- --quick` (fewer repetitions). Each line reports GFLOP/s or GB/s next to
//! the device ceiling measured in the same run: the FMA probe (`shaders/peak.wgsl`) for arithmetic and
//! the better of a buffer-to-buffer copy and a vec4 copy kernel for memory. Times are wall clock per call from recording to GPU completion,
//! averaged over a batch of calls submitted together, so host recording cost is included.
//!
//! `train/` cases time whole training steps of the experiments' models (forward, backward, Adam,
//! one submit) on random data of the experiments' shapes, as `benches/reference/*.py` does in
//! PyTorch: the batch is gathered on the host and uploaded inside the step (as `train::fit` does),
//! but no file is read or decoded. `cargo bench -- --profile train/` adds, under each training
//! step, where its GPU time goes: kernels by their summed GPU time over 3 profiled steps
//! (`Device::set_profiling`: timestamps around every dispatch; the `atom/L_A` cases too).
//! `--checked` / `--unchecked`
//! compile every kernel with / without wgpu's runtime checks (`Device::set_shader_checks`; the
//! default is the adapter's: off on GPUs, on for CPU adapters), to time both forms.

use atomgrad::data::fashion::{FashionData, FashionOrigin, ImageSet, PIXELS};
use atomgrad::experiments::classify::{ClassifyConfig, FashionLearner, SentimentLearner};
use atomgrad::experiments::gan::{FashionGan, FashionGanConfig};
use atomgrad::experiments::Method;
use atomgrad::ops::atom::StructureKernel;
use atomgrad::ops::{batchnorm, conv, elementwise, layernorm, layout, matmul, peak, pool, reduce, softmax};
use atomgrad::optim::{Adam, AdamConfig, Optimizer};
use atomgrad::rng::Rng;
use atomgrad::train::Learner;
use atomgrad::{Device, Tensor};
use atomgrad::{Param, Tape};
use std::time::Instant;

struct Bench {
    dev: Device,
    filter: Vec<String>,
    budget: f64,
    peak_gflops: f64,
    peak_gbs: f64,
    /// `--profile`: print the per-kernel GPU time of each training step and atom case.
    profile: bool,
}

impl Bench {
    fn wants(&self, name: &str) -> bool {
        self.filter.is_empty() || self.filter.iter().any(|f| name.contains(f.as_str()))
    }

    /// Whether any case named `prefix...` can be wanted (to skip a group's setup).
    fn wants_group(&self, prefix: &str) -> bool {
        self.wants(prefix) || self.filter.iter().any(|f| f.starts_with(prefix))
    }

    /// Seconds per call of `f`: warm-up calls (one on CPU adapters; on GPUs for at least 0.1 s,
    /// see below), then batches until the time budget is spent.
    fn time(&self, mut f: impl FnMut()) -> f64 {
        // A GPU left idle (here while the host builds the next case) drops its clock (an H100 idled
        // at 345 of 1980 MHz); twice on 2026-11-27 an H100 timed the CNN + atom step 3.8x slower
        // in every kernel. Busy calls first, so the timing starts at speed (ten runs with this
        // saw no slow step, but neither did ten without it: the cause is not pinned down).
        let warm = if self.dev.class() == atomgrad::device::AdapterClass::Gpu { 0.1 } else { 0.0 };
        let t = Instant::now();
        loop {
            f();
            self.dev.sync().unwrap();
            if t.elapsed().as_secs_f64() >= warm {
                break;
            }
        }
        let mut iters = 1usize;
        loop {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            self.dev.sync().unwrap();
            let dt = t.elapsed().as_secs_f64();
            if dt > self.budget || iters >= 1 << 16 {
                return dt / iters as f64;
            }
            iters = (iters * 2).max((iters as f64 * self.budget / dt.max(1e-6)) as usize).min(iters * 8);
        }
    }

    fn flops(&self, name: &str, flops: f64, mut f: impl FnMut()) {
        if !self.wants(name) {
            return;
        }
        let s = self.time(&mut f);
        let g = flops / s / 1e9;
        println!(
            "{name:<44} {:>10.3} ms {:>10.2} GFLOP/s {:>6.1}% of FMA ceiling",
            s * 1e3,
            g,
            100.0 * g / self.peak_gflops
        );
        self.atom_profile(name, f);
    }

    /// Under `--profile`, which kernels an atom case's time goes to (L_A's many; the latent
    /// distances split or not; the rest's one or two kernels against the host's share).
    fn atom_profile(&self, name: &str, mut f: impl FnMut()) {
        if self.profile && name.starts_with("atom/") {
            self.print_profile(3, || {
                f();
                self.dev.flush().unwrap();
                f64::NAN
            });
        }
    }

    fn bytes(&self, name: &str, bytes: f64, mut f: impl FnMut()) {
        if !self.wants(name) {
            return;
        }
        let s = self.time(&mut f);
        let g = bytes / s / 1e9;
        println!(
            "{name:<44} {:>10.3} ms {:>10.2} GB/s    {:>6.1}% of copy ceiling",
            s * 1e3,
            g,
            100.0 * g / self.peak_gbs
        );
        self.atom_profile(name, f);
    }

    /// A whole training step of `batch` samples: time per step, samples/s, and the dispatches and
    /// submits one step records (counted on the fourth call, after pipelines, pool and bind-group
    /// cache are warm). `f` returns the seconds it spent recording (the ops, up to the flush), or
    /// NaN if it cannot tell; with the device's encode and submit times (`Stats`) the line shows
    /// the host's share of a step, per dispatch.
    fn step(&self, name: &str, batch: usize, mut f: impl FnMut() -> f64) {
        if !self.wants(name) {
            return;
        }
        // A GAN step settles one call later than a classifier step (its two players' buffers
        // trade places once in the pool), so count on the fourth call.
        f();
        f();
        f();
        let s0 = self.dev.stats();
        f();
        let s1 = self.dev.stats();
        let (mut rec, mut calls) = (0.0, 0usize);
        let t = self.time(|| {
            rec += f();
            calls += 1;
        });
        let dispatches = s1.dispatches - s0.dispatches;
        let s2 = self.dev.stats();
        let per = |x: f64| x / calls as f64 * 1e6 / dispatches as f64;
        let (enc, sub) = ((s2.encode_ns - s1.encode_ns) as f64 * 1e-9, (s2.submit_ns - s1.submit_ns) as f64 * 1e-9);
        let host = if rec.is_nan() {
            format!(", host encodes {:.1} + submits {:.1} us per dispatch", per(enc), per(sub))
        } else {
            format!(
                ", host records {:.1} + encodes {:.1} + submits {:.1} us per dispatch",
                per(rec),
                per(enc),
                per(sub)
            )
        };
        println!(
            "{name:<44} {:>10.3} ms {:>10.1} samples/s  {dispatches} dispatches, {} submits, {} new bind groups per step{host}",
            t * 1e3,
            batch as f64 / t,
            s1.submits - s0.submits,
            s1.bind_groups_created - s0.bind_groups_created
        );
        if self.profile {
            self.print_profile(3, f);
        }
    }

    /// Runs `f` (one step) `steps` times with every dispatch timed and prints the kernels that
    /// take 95% of the GPU time, with their share.
    fn print_profile(&self, steps: usize, mut f: impl FnMut() -> f64) {
        if let Err(e) = self.dev.set_profiling(true) {
            println!("  profile: {e}");
            return;
        }
        for _ in 0..steps {
            f();
        }
        self.dev.set_profiling(false).unwrap();
        let (kernels, untimed) = self.dev.profile();
        self.dev.reset_profile();
        let total: f64 = kernels.iter().map(|k| k.ms).sum();
        println!(
            "  profile ({steps} steps, {:.3} ms of kernel time per step, {untimed} dispatches untimed):",
            total / steps as f64
        );
        let mut shown = 0.0;
        for k in &kernels {
            if shown >= 0.95 * total {
                break;
            }
            shown += k.ms;
            println!(
                "    {:<40} {:>9.3} ms/step {:>5.1}%  {} dispatches/step",
                k.name,
                k.ms / steps as f64,
                100.0 * k.ms / total,
                k.dispatches as usize / steps
            );
        }
    }
}

/// One training step of a [`Learner`], as `train::fit` records it: tape, loss, backward, optimizer
/// step, zero_grad, one submit. `idx` are `batch` random training indices. Returns the seconds
/// spent recording, before the flush.
fn learner_step(dev: &Device, l: &mut dyn Learner, batch: usize, step: &mut usize, rng: &mut Rng) -> f64 {
    let idx: Vec<usize> = (0..batch).map(|_| rng.below(l.train_len())).collect();
    let t = Instant::now();
    let tape = Tape::new();
    let loss = l.loss(&tape, &idx, *step, rng).unwrap();
    loss.backward().unwrap();
    l.optimizer().step().unwrap();
    l.optimizer().zero_grad();
    drop((loss, tape));
    let rec = t.elapsed().as_secs_f64();
    dev.flush().unwrap();
    *step += 1;
    rec
}

/// `n` random 28x28 images (values as the data module normalises them) with random labels.
fn random_images(rng: &mut Rng, n: usize) -> ImageSet {
    ImageSet {
        x: (0..n * PIXELS).map(|_| rng.range(-0.8, 2.0) as f32).collect(),
        y: (0..n).map(|_| rng.below(10) as u32).collect(),
    }
}

fn rand(dev: &Device, rng: &mut Rng, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.range(-1.0, 1.0) as f32).collect();
    Tensor::from_slice(dev, &v, shape).unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let quick = args.iter().any(|a| a == "--quick");
    let profile = args.iter().any(|a| a == "--profile");
    let checks = if args.iter().any(|a| a == "--checked") {
        Some(true)
    } else if args.iter().any(|a| a == "--unchecked") {
        Some(false)
    } else {
        None
    };
    let filter = args.into_iter().filter(|a| !a.starts_with("--")).collect();
    let dev = Device::new().unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1);
    });
    let gpu = dev.class() == atomgrad::device::AdapterClass::Gpu;
    println!("adapter: {}", dev.describe());
    if let Some(on) = checks {
        // Every kernel, the ceiling probes included, compiled with or without wgpu's runtime checks.
        dev.set_shader_checks(on);
    }
    println!("shader checks: {}", if dev.shader_checks() { "on" } else { "off" });
    let mut b = Bench {
        dev: dev.clone(),
        filter,
        budget: if quick { 0.1 } else { 0.5 },
        peak_gflops: 0.0,
        peak_gbs: 0.0,
        profile,
    };
    let mut rng = Rng::new(0);

    // Ceilings, measured first so every later line can be read against them.
    let (n, iters) = if gpu { (1 << 22, 4096) } else { (1 << 16, 1024) };
    let s = b.time(|| drop(peak::fma_peak(&dev, n, iters, 0.999, 0.001).unwrap()));
    b.peak_gflops = peak::fma_peak_flops(n, iters) / s / 1e9;
    let bytes = if gpu { 1 << 28 } else { 1 << 25 };
    let src = Tensor::zeros(&dev, &[bytes / 4]).unwrap();
    let dst = Tensor::zeros(&dev, &[bytes / 4]).unwrap();
    // Memory: the better of the driver's buffer copy and a vec4 copy kernel (read + write).
    let s = b.time(|| atomgrad::ops::layout::copy_buffer(&src, &dst).unwrap());
    let buffer_copy = 2.0 * bytes as f64 / s / 1e9;
    let s = b.time(|| peak::copy_vec4(&src, &dst).unwrap());
    let kernel_copy = 2.0 * bytes as f64 / s / 1e9;
    b.peak_gbs = buffer_copy.max(kernel_copy);
    println!(
        "ceiling: FMA {:.1} GFLOP/s, copy {:.1} GB/s (read + write; buffer copy {buffer_copy:.1}, vec4 kernel {kernel_copy:.1})",
        b.peak_gflops, b.peak_gbs
    );
    drop((src, dst));

    // Elementwise: bandwidth-bound, 4 bytes read + 4 written per element (binary reads 8).
    let n = if gpu { 1 << 24 } else { 1 << 22 };
    let x = rand(&dev, &mut rng, &[n]);
    let y = rand(&dev, &mut rng, &[n]);
    b.bytes(&format!("elementwise/gelu n={n}"), 8.0 * n as f64, || {
        drop(elementwise::unary(&x, elementwise::Unary::Gelu).unwrap())
    });
    b.bytes(&format!("elementwise/mul n={n}"), 12.0 * n as f64, || {
        drop(elementwise::binary(&x, &y, elementwise::Binary::Mul).unwrap())
    });
    let rows = n / 1024;
    let xm = x.reshape(&[rows, 1024]).unwrap();
    let bias = rand(&dev, &mut rng, &[1024]);
    b.bytes(&format!("elementwise/add-broadcast [{rows},1024]+[1024]"), 8.0 * n as f64, || {
        drop(elementwise::binary(&xm, &bias, elementwise::Binary::Add).unwrap())
    });
    // A per-channel scale over [N, C, H, W] with odd H, W: the scalar kernel's index walk.
    let (c, hw) = (if gpu { 64 } else { 16 }, 63);
    let xc = layout::slice(&x, 0, 0, n / (c * hw * hw) * c * hw * hw)
        .unwrap()
        .reshape(&[n / (c * hw * hw), c, hw, hw])
        .unwrap();
    let scale = rand(&dev, &mut rng, &[c, 1, 1]);
    let shape = format!("{:?}", xc.shape()).replace(' ', "");
    b.bytes(&format!("elementwise/mul-broadcast {shape}*[{c},1,1]"), 8.0 * xc.numel() as f64, || {
        drop(elementwise::binary(&xc, &scale, elementwise::Binary::Mul).unwrap())
    });

    // Layout: strided copies, 4 bytes read + 4 written per element. Attention's head split
    // [B, T, H, Dh] -> [B, H, T, Dh] (whole vec4 rows) and a 2-D transpose (one element each).
    let (bt, h, dh) = (n / (64 * 4 * 16), 4, 16);
    let heads = x.reshape(&[bt, 64, h, dh]).unwrap();
    b.bytes(&format!("layout/permute [{bt},64,{h},{dh}] -> [{bt},{h},64,{dh}]"), 8.0 * n as f64, || {
        drop(layout::permute(&heads, &[0, 2, 1, 3]).unwrap())
    });
    let t = layout::slice(&x, 0, 0, 1023 * (n / 1024)).unwrap().reshape(&[n / 1024, 1023]).unwrap();
    b.bytes(&format!("layout/transpose [{},1023]", n / 1024), 8.0 * t.numel() as f64, || {
        drop(layout::transpose(&t, 0, 1).unwrap())
    });
    drop((xc, heads, t));

    // Reductions: bandwidth-bound, every input byte read once.
    b.bytes(&format!("reduce/sum-all n={n} (tree)"), 4.0 * n as f64, || {
        drop(reduce::reduce(&x, 0, reduce::Reduce::Sum, false).unwrap())
    });
    b.bytes(&format!("reduce/sum-rows [{rows},1024] axis 1"), 4.0 * n as f64, || {
        drop(reduce::reduce(&xm, 1, reduce::Reduce::Sum, false).unwrap())
    });
    b.bytes(&format!("reduce/sum-cols [{rows},1024] axis 0"), 4.0 * n as f64, || {
        drop(reduce::reduce(&xm, 0, reduce::Reduce::Sum, false).unwrap())
    });
    // The CNN's conv bias gradient over H W (batch 128, 16 channels, 28 x 28): the adapter's form
    // (GPUs: team) and on GPUs also one invocation per output.
    let g = rand(&dev, &mut rng, &[128, 16, 784]);
    b.bytes("reduce/sum-hw [128,16,784] axis 2", 4.0 * g.numel() as f64, || {
        drop(reduce::reduce(&g, 2, reduce::Reduce::Sum, false).unwrap())
    });
    if gpu {
        b.bytes("reduce/sum-hw rows [128,16,784] axis 2", 4.0 * g.numel() as f64, || {
            drop(reduce::reduce_with(reduce::Form::Rows, &g, 2, reduce::Reduce::Sum, false).unwrap())
        });
    }
    drop((x, y, xm, g));

    // Matmul: 2 M N K flops, both cores at sizes that are and are not tile multiples.
    let sizes: &[usize] = if gpu { &[256, 1000, 1024, 2048, 4096] } else { &[128, 255, 256, 512] };
    for &s in sizes {
        let a = rand(&dev, &mut rng, &[s, s]);
        let c = rand(&dev, &mut rng, &[s, s]);
        use matmul::Variant::*;
        for v in [Blocked, Blocked8, Blocked8V, Tiled, Tiled128] {
            b.flops(&format!("matmul/{v:?} {s}x{s}x{s}"), 2.0 * (s * s * s) as f64, || {
                drop(matmul::matmul_with(v, &a, &c, false, false).unwrap())
            });
        }
        // The opt-in f16 tensor-core kernel, under its own prefix so it can run (and fail) apart.
        // Coop16Packed's time includes packing both operands to f16 (two more dispatches).
        if dev.has_coop16() {
            for v in [Coop16, Coop16Packed] {
                b.flops(&format!("mixed/{v:?} {s}x{s}x{s}"), 2.0 * (s * s * s) as f64, || {
                    drop(matmul::matmul_with(v, &a, &c, false, false).unwrap())
                });
            }
        }
        b.flops(&format!("matmul/default A^T B {s}"), 2.0 * (s * s * s) as f64, || {
            drop(matmul::matmul(&a, &c, true, false).unwrap())
        });
    }
    // Matmul at the experiments' own shapes (batch, M, K, N, A transposed, B transposed): the
    // Transformer's projections (forward x Wᵀ, input gradient, weight gradient per sequence),
    // attention blocks (scores Q Kᵀ, mixing P V and its gradients), the CNN's head, the synthetic
    // task's token MLP, the DCGAN discriminator's logit (forward, weight and input gradients);
    // every core and the default.
    for (bt, m, k, n, ta, tb) in [
        (1, 4096, 64, 64, false, false),
        (1, 4096, 64, 128, false, false),
        (1, 4096, 64, 192, false, true),
        (1, 4096, 192, 64, false, false),
        (64, 64, 64, 192, true, false),
        (1, 64, 4096, 64, false, false),
        (1, 64, 4096, 192, true, false),
        (64, 64, 64, 64, false, false),
        (256, 64, 16, 64, false, true),
        (256, 64, 64, 16, false, false),
        (256, 64, 64, 16, true, false),
        (1, 128, 1568, 10, false, false),
        (1, 512, 12, 32, false, false),
        (1, 128, 1568, 1, false, false),
        (1, 1568, 128, 1, true, false),
        (1, 128, 1, 1568, false, true),
    ] {
        let a = rand(&dev, &mut rng, &if ta { [bt, k, m] } else { [bt, m, k] });
        let c = rand(&dev, &mut rng, &if tb { [bt, n, k] } else { [bt, k, n] });
        let flops = 2.0 * (bt * m * k * n) as f64;
        let t = format!("{}{}", if ta { " Aᵀ" } else { "" }, if tb { " Bᵀ" } else { "" });
        for v in [
            matmul::Variant::Blocked,
            matmul::Variant::Blocked8,
            matmul::Variant::Blocked8V,
            matmul::Variant::Tiled,
            matmul::Variant::Tiled128,
        ] {
            b.flops(&format!("matmul/{v:?} [{bt}] {m}x{k}x{n}{t}"), flops, || {
                drop(matmul::matmul_with(v, &a, &c, ta, tb).unwrap())
            });
        }
        b.flops(&format!("matmul/default [{bt}] {m}x{k}x{n}{t}"), flops, || {
            drop(matmul::matmul(&a, &c, ta, tb).unwrap())
        });
    }
    // Softmax and cross-entropy over rows: bandwidth-bound (read + write).
    let (r, l) = if gpu { (8192, 1024) } else { (2048, 512) };
    let x = rand(&dev, &mut rng, &[r, l]);
    // Both row forms: one invocation per row, and 32-lane teams (the GPU default for L >= 256),
    // on long rows and on the Transformer's attention rows (64 keys).
    let att = rand(&dev, &mut rng, &[r * l / 64, 64]);
    for (t, rows, len) in [(&x, r, l), (&att, r * l / 64, 64)] {
        for k in [softmax::RowKernel::PerRow, softmax::RowKernel::Team] {
            b.bytes(&format!("softmax/rows {k:?} [{rows},{len}]"), 8.0 * (rows * len) as f64, || {
                drop(softmax::softmax_with(k, t, None, false).unwrap())
            });
        }
    }
    drop(att);
    let labels = Tensor::from_u32(&dev, &(0..r as u32).map(|i| i % l as u32).collect::<Vec<_>>(), &[r]).unwrap();
    b.bytes(&format!("softmax/cross-entropy [{r},{l}]"), 4.0 * (r * l) as f64, || {
        drop(softmax::cross_entropy(&x, &labels).unwrap())
    });
    drop((x, labels));

    // Convolutions at the Fashion-MNIST CNN's first two layers: 2 N O C KH KW Ho Wo flops.
    let nb = if gpu { 128 } else { 16 };
    for (c, o, hw) in [(1usize, 32usize, 28usize), (32, 64, 14)] {
        let x = rand(&dev, &mut rng, &[nb, c, hw, hw]);
        let w = rand(&dev, &mut rng, &[o, c, 3, 3]);
        let flops = 2.0 * (nb * o * c * 9 * hw * hw) as f64;
        let tag = format!("[{nb},{c},{hw},{hw}] * [{o},{c},3,3]");
        b.flops(&format!("conv/forward {tag}"), flops, || drop(conv::conv2d(&x, &w, (1, 1), (1, 1)).unwrap()));
        let dy = rand(&dev, &mut rng, &[nb, o, hw, hw]);
        b.flops(&format!("conv/backward-input {tag}"), flops, || {
            drop(conv::conv2d_backward_input(&dy, &w, (hw, hw), (1, 1), (1, 1)).unwrap())
        });
        b.flops(&format!("conv/backward-weight {tag}"), flops, || {
            drop(conv::conv2d_backward_weight(&dy, &x, (3, 3), (1, 1), (1, 1)).unwrap())
        });
        if gpu {
            // 8 x 8 register blocks (the CPU default; GPUs use 4 x 4 until these are measured).
            b.flops(&format!("conv/forward b8 {tag}"), flops, || {
                drop(conv::conv2d_with(&x, &w, (1, 1), (1, 1), 8, 8).unwrap())
            });
            b.flops(&format!("conv/backward-input b8 {tag}"), flops, || {
                drop(conv::conv2d_backward_input_with(&dy, &w, (hw, hw), (1, 1), (1, 1), (8, 8)).unwrap())
            });
            b.flops(&format!("conv/backward-weight b8 {tag}"), flops, || {
                let plan = conv::WeightPlan { kernel: Some(conv::WeightKernel::Taps), splits: 0, blocks: (8, 8) };
                drop(conv::conv2d_backward_weight_with(&dy, &x, (3, 3), (1, 1), (1, 1), plan).unwrap())
            });
        }
        // The per-tap weight-gradient form (the default is the rows form where it fits).
        b.flops(&format!("conv/backward-weight taps {tag}"), flops, || {
            let plan = conv::WeightPlan { kernel: Some(conv::WeightKernel::Taps), ..Default::default() };
            drop(conv::conv2d_backward_weight_with(&dy, &x, (3, 3), (1, 1), (1, 1), plan).unwrap())
        });
        {
            // The opt-in GEMM path (im2col + matmul cores + col2im), same flops.
            b.flops(&format!("conv/forward gemm {tag}"), flops, || {
                drop(conv::conv2d_gemm(&x, &w, (1, 1), (1, 1)).unwrap())
            });
            b.flops(&format!("conv/backward-input gemm {tag}"), flops, || {
                drop(conv::conv2d_backward_input_gemm(&dy, &w, (hw, hw), (1, 1), (1, 1)).unwrap())
            });
            b.flops(&format!("conv/backward-weight gemm {tag}"), flops, || {
                drop(conv::conv2d_backward_weight_gemm(&dy, &x, (3, 3), (1, 1), (1, 1)).unwrap())
            });
        }
        b.bytes(&format!("pool/max 2x2 [{nb},{o},{hw},{hw}]"), 6.0 * (nb * o * hw * hw) as f64, || {
            drop(pool::max_pool2d(&dy, (2, 2), (2, 2), (0, 0)).unwrap())
        });
        let bn = batchnorm::BatchNorm::new(&dev, o).unwrap();
        let (g, be) = (Tensor::full(&dev, &[o], 1.0).unwrap(), Tensor::zeros(&dev, &[o]).unwrap());
        b.bytes(&format!("batchnorm/train forward [{nb},{o},{hw},{hw}]"), 12.0 * (nb * o * hw * hw) as f64, || {
            drop(batchnorm::batch_norm(&dy, &g, &be, &bn, true).unwrap())
        });
    }

    // Layer norm over a Transformer-sized hidden state.
    let (rows, d) = if gpu { (65536, 256) } else { (4096, 128) };
    let x = rand(&dev, &mut rng, &[rows, d]);
    let (g, be) = (Tensor::full(&dev, &[d], 1.0).unwrap(), Tensor::zeros(&dev, &[d]).unwrap());
    b.bytes(&format!("layernorm/forward [{rows},{d}]"), 8.0 * (rows * d) as f64, || {
        drop(layernorm::layer_norm(&x, &g, &be, 1e-5).unwrap())
    });
    drop(x);

    // Adam over 1M parameters: reads p, g, m, v and writes p, m, v (28 bytes per parameter).
    let n = 1 << 20;
    let p = Param::new("p", rand(&dev, &mut rng, &[n]));
    p.set_grad(Some(rand(&dev, &mut rng, &[n])));
    let mut adam = Adam::new(vec![p], AdamConfig::default()).unwrap();
    b.bytes(&format!("optim/adam step n={n}"), 28.0 * n as f64, || adam.step().unwrap());

    // Atom modeling: L_A forward + backward and the dominant pairwise token pass S alone.
    // Effective flops count the token pass like a matmul of its dot products: 2 N^2 n^2 m forward,
    // 4 N^2 n^2 m backward. Both kernel forms compute only half of S (it is symmetric); with
    // that, the register kernels do about 1.25x these flops (a subtraction per multiply-add),
    // the Gram kernels about 1.0x (differences only in the backward's second product).
    let grid: &[(usize, usize, usize)] = if gpu {
        &[
            (64, 16, 32),
            (64, 49, 64),
            (128, 16, 32),
            (128, 49, 64),
            (128, 64, 64),
            (256, 16, 32),
            (256, 49, 32),
            (256, 64, 64),
        ]
    } else {
        &[(64, 16, 32), (64, 49, 32), (128, 16, 32), (64, 16, 64)]
    };
    // Latent distances of L_A and the hinge baselines (tiny latents: per-dispatch cost shows).
    // And the Fashion CNN's latents (128 of 3136 dims), on GPUs also without splitting the dims.
    for (nb, d) in [(64usize, 2usize), (128, 16), (128, 3136)] {
        let z = rand(&dev, &mut rng, &[nb, d]);
        let bytes = 4.0 * (nb * d + nb * nb) as f64;
        b.bytes(&format!("atom/pdist N={nb} D={d}"), bytes, || {
            drop(atomgrad::ops::atom::pdist(&z, atomgrad::ops::atom::Norm::Floored, 1e-3).unwrap())
        });
        if gpu {
            b.bytes(&format!("atom/pdist unsplit N={nb} D={d}"), bytes, || {
                drop(atomgrad::ops::atom::pdist_with(&z, atomgrad::ops::atom::Norm::Floored, 1e-3, 1).unwrap())
            });
        }
    }
    // The latents' unit-RMS normalisation forward and backward (with the bench's product and
    // sum; counted as six passes over [N, D]), on GPUs also as one workgroup each way.
    {
        let (nb, d) = (128usize, 3136usize);
        let z = rand(&dev, &mut rng, &[nb, d]);
        let gy = rand(&dev, &mut rng, &[nb, d]);
        let forms: &[(bool, &str)] = if gpu { &[(true, ""), (false, " one-workgroup")] } else { &[(false, "")] };
        for &(many, tag) in forms {
            b.bytes(&format!("atom/spread-scale{tag} N={nb} D={d}"), 4.0 * 6.0 * (nb * d) as f64, || {
                let tape = Tape::new();
                let v = tape.leaf(z.clone());
                let y = atomgrad::ops::atom::spread_scale_var_with(&v, many).unwrap();
                drop(y.mul(&tape.constant(gy.clone())).unwrap().sum_all().unwrap().backward().unwrap());
            });
        }
    }
    for &(nb, n, m) in grid {
        let h = rand(&dev, &mut rng, &[nb, n, m]);
        let w = Tensor::rand_uniform(&dev, &[nb, n], 0.05, 0.95, 1).unwrap();
        let z = rand(&dev, &mut rng, &[nb, 16]);
        let mask = atomgrad::atom::TokenMask::new(&dev, &vec![n; nb], n).unwrap();
        let pairs = (nb * nb * n * n * m) as f64;
        let cfg = atomgrad::atom::AtomConfig::default();
        // The adapter's default structure kernels and, on GPUs, each form it picks from: the 8 x 8
        // register blocks ("r8") and, for n > 32, the Gram form ("gram128");
        // `StructureKernel::for_device` says which it takes where.
        let mut kernels = vec![(None, "")];
        if gpu {
            kernels.push((Some(StructureKernel::Registers8), " r8"));
            if n > 32 {
                kernels.push((Some(StructureKernel::Gram128), " gram128"));
            }
        }
        for (kernel, tag) in kernels {
            dev.set_policy(kernel);
            b.flops(&format!("atom/structure-forward{tag} N={nb} n={n} m={m}"), 2.0 * pairs, || {
                drop(atomgrad::ops::atom::structure(&h, &w, &mask, 1e-3).unwrap())
            });
            b.flops(&format!("atom/L_A-forward+backward{tag} N={nb} n={n} m={m}"), 6.0 * pairs, || {
                let tape = Tape::new();
                let (zv, hv, wv) = (tape.leaf(z.clone()), tape.leaf(h.clone()), tape.leaf(w.clone()));
                let terms = atomgrad::atom::atom_terms(&zv, &hv, &wv, &mask, &cfg).unwrap();
                drop(terms.l_a.backward().unwrap());
            });
        }
        dev.set_policy::<StructureKernel>(None);
    }

    // Host overhead: a whole MLP training step (forward, backward, Adam), one submit.
    if b.wants_group("step/") {
        let model = atomgrad::nn::Mlp::new(&dev, "mlp", &[2, 64, 64, 2], atomgrad::nn::Activation::Relu, 0).unwrap();
        let mut opt = Adam::new(model.params(), AdamConfig::default()).unwrap();
        let xb = rand(&dev, &mut rng, &[64, 2]);
        let yb = Tensor::from_u32(&dev, &[0u32, 1].repeat(32), &[64]).unwrap();
        let mut step = || {
            let tape = Tape::new();
            let loss = model.forward(&tape, &tape.constant(xb.clone())).unwrap().cross_entropy(&yb).unwrap();
            loss.backward().unwrap();
            opt.step().unwrap();
            opt.zero_grad();
            drop(tape);
            dev.flush().unwrap();
        };
        step();
        let s0 = dev.stats();
        step();
        let s1 = dev.stats();
        let dispatches = s1.dispatches - s0.dispatches;
        let t = b.time(&mut step);
        println!(
            "{:<44} {:>10.3} ms  {} dispatches, {} submit per step, {:.1} us per dispatch",
            "step/moons MLP 2-64-64-2 batch 64",
            t * 1e3,
            dispatches,
            s1.submits - s0.submits,
            t * 1e6 / dispatches as f64
        );
    }

    // Whole training steps of the experiments' models (issue 7's PyTorch comparisons):
    // ms per step and samples/s, `benches/reference/*.py` measure the same in PyTorch.
    if b.wants_group("train/") {
        // The synthetic task of the default `cargo run --release` (SyntheticConfig::default(): 8
        // tokens, batch 64), one step per method: small products, where dispatch cost dominates.
        let syn = atomgrad::experiments::synthetic::SyntheticConfig::default();
        let syn_data = atomgrad::experiments::synthetic::SyntheticData::generate(&syn);
        for (method, tag) in [(Method::Ce, "cross-entropy"), (Method::Atom, "atom"), (Method::SimClr, "SimCLR")] {
            let name = format!("train/synthetic MLP {tag} batch {}", syn.batch);
            if b.wants(&name) {
                let mut l =
                    atomgrad::experiments::synthetic::SyntheticLearner::new(&dev, &syn, &syn_data, method, 0).unwrap();
                let (mut step, mut r) = (0, Rng::new(1));
                b.step(&name, syn.batch, || learner_step(&dev, &mut l, syn.batch, &mut step, &mut r));
            }
        }
        // Fashion-MNIST CNN (ClassifyConfig::fashion(): channels 16, 32; Adam lr 2e-3) at batch 128.
        let batch = 128;
        let data = FashionData {
            train: random_images(&mut rng, 1024),
            val: random_images(&mut rng, 16),
            test: random_images(&mut rng, 16),
            origin: FashionOrigin::Bundled,
            indices: Default::default(),
        };
        let cfg = ClassifyConfig { batch, ..ClassifyConfig::fashion() };
        for (method, tag) in [(Method::Ce, "cross-entropy"), (Method::Atom, "atom")] {
            let name = format!("train/fashion CNN {tag} batch {batch}");
            if b.wants(&name) {
                let mut l = FashionLearner::new(&dev, &data, &cfg, method, 0).unwrap();
                let (mut step, mut r) = (0, Rng::new(1));
                b.step(&name, batch, || learner_step(&dev, &mut l, batch, &mut step, &mut r));
            }
        }
        // On GPUs also with the opt-in paths: convolutions through the matmul cores, and the
        // Gram-form atom kernels.
        if gpu {
            for (method, tag) in [(Method::Ce, "cross-entropy"), (Method::Atom, "atom")] {
                let name = format!("train/fashion CNN {tag} batch {batch} gemm-conv gram-atom");
                if b.wants(&name) {
                    dev.set_gemm_conv(true);
                    dev.set_policy(Some(StructureKernel::Gram128));
                    let mut l = FashionLearner::new(&dev, &data, &cfg, method, 0).unwrap();
                    let (mut step, mut r) = (0, Rng::new(1));
                    b.step(&name, batch, || learner_step(&dev, &mut l, batch, &mut step, &mut r));
                    dev.set_gemm_conv(false);
                    dev.set_policy::<StructureKernel>(None);
                }
            }
        }
        // DCGAN (FashionGanConfig::default(): noise 64, channels 32): one D step and one G step in
        // one submit (`Gan::step`).
        let images = random_images(&mut rng, 1024);
        for (method, tag, batch) in [(Method::Ce, "plain", 64), (Method::Ce, "plain", 128), (Method::Atom, "atom", 64)]
        {
            let name = format!("train/DCGAN G+D {tag} batch {batch}");
            if b.wants(&name) {
                let cfg = FashionGanConfig { batch, ..FashionGanConfig::default() };
                let mut gan = FashionGan::fashion(&dev, &cfg, &images, method, 0).unwrap();
                b.step(&name, batch, || {
                    gan.step().unwrap();
                    f64::NAN // Gan::step records and submits in one call
                });
            }
        }
        // The standard-size DCGAN of `--model base` (FashionGanConfig::base(): 7x7x256 to 28x28x64,
        // discriminator 64/128/256) at its batch 128, plain and with atom modeling.
        for (method, tag) in [(Method::Ce, "plain"), (Method::Atom, "atom")] {
            let name = format!("train/DCGAN base G+D {tag} batch 128");
            if b.wants(&name) {
                let cfg = FashionGanConfig::base();
                let mut gan = FashionGan::fashion(&dev, &cfg, &images, method, 0).unwrap();
                b.step(&name, cfg.batch, || {
                    gan.step().unwrap();
                    f64::NAN
                });
            }
        }
        // PacGAN's 2-D models (Gan2dConfig::pacgan(): 4x400 BN-ReLU generator, maxout
        // discriminator) at batch 100.
        for (method, tag) in [(Method::Ce, "plain"), (Method::Atom, "atom")] {
            let name = format!("train/PacGAN 2-D G+D {tag} batch 100");
            if b.wants(&name) {
                let cfg = atomgrad::experiments::gan::Gan2dConfig::pacgan();
                let mut gan = atomgrad::experiments::gan::Gan2d::new(
                    &dev,
                    &cfg,
                    atomgrad::experiments::gan::Mixture::Grid25,
                    method,
                    0,
                )
                .unwrap();
                b.step(&name, cfg.batch, || {
                    gan.step().unwrap();
                    f64::NAN
                });
            }
        }
        // The residual CNN of `--model resnet` (ClassifyConfig::fashion_resnet(): stages 32/64/128,
        // AdamW, augmentation on the host) at its batch 128.
        let res = ClassifyConfig::fashion_resnet();
        for (method, tag) in [(Method::Ce, "cross-entropy"), (Method::Atom, "atom")] {
            let name = format!("train/fashion ResNet {tag} batch {}", res.batch);
            if b.wants(&name) {
                let mut l = FashionLearner::new(&dev, &data, &res, method, 0).unwrap();
                let (mut step, mut r) = (0, Rng::new(1));
                b.step(&name, res.batch, || learner_step(&dev, &mut l, res.batch, &mut step, &mut r));
            }
        }
        // Each also under `--mixed-precision` (forward matmuls on f16 tensor cores, "... mixed"),
        // the peer of PyTorch's autocast (`benches/reference/*.py --amp`), where the adapter has
        // the f16 matrices.
        let mut cases = Vec::new();
        for (cfg, name) in [
            (ClassifyConfig::sentiment(), "train/sentiment Transformer batch 64"),
            (ClassifyConfig::sentiment_base(), "train/sentiment Transformer base batch 64"),
        ] {
            cases.push((cfg.clone(), name.to_string(), false));
            if dev.has_coop16() {
                cases.push((cfg, format!("{name} mixed"), true));
            }
        }
        cases.retain(|(_, name, _)| b.wants(name));
        if !cases.is_empty() {
            let data = atomgrad::data::load_reviews(None, 0, 64).unwrap();
            println!("# sentiment data: vocab {} ids, {} positions", data.vocab.len(), data.train.max_len);
            for (cfg, name, mixed) in cases {
                dev.set_mixed_precision(mixed).unwrap();
                let mut l = SentimentLearner::new(&dev, &data, &cfg, Method::Ce, 0).unwrap();
                let (mut step, mut r) = (0, Rng::new(1));
                b.step(&name, cfg.batch, || learner_step(&dev, &mut l, cfg.batch, &mut step, &mut r));
            }
            dev.set_mixed_precision(false).unwrap();
        }
    }
}
