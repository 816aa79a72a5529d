//! 2-D convolution and transposed convolution, NCHW (`shaders/conv.wgsl`). Three gather kernels
//! (forward, input gradient, weight gradient) serve both ops: conv_transpose2d's forward is
//! conv2d's input gradient, its input gradient is conv2d's forward and its weight gradient is
//! conv2d's weight gradient with the roles of the two operands swapped. The f64 references are in
//! [`cpu`]; the transposed one is written from its own definition.

use crate::autodiff::Var;
use crate::device::{groups_1d, AdapterClass, WG};
use crate::error::{Error, Result};
use crate::ops::layout;
use crate::ops::reduce::{reduce, Reduce};
use crate::tensor::{DType, Tensor};

crate::shader!(SHADER = "conv");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    o: u32,
    ho: u32,
    wo: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    ph: u32,
    pw: u32,
    total: u32,
    chunk: u32,
    splits: u32,
    wov: u32,
    wxv: u32,
    _pad: [u32; 2],
}

/// The sizes of one conv2d in its own terms: x [n, c, h, w], w [o, c, kh, kw], y [n, o, ho, wo].
#[derive(Clone, Copy, Debug)]
struct Geom {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    ho: usize,
    wo: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    ph: usize,
    pw: usize,
}

impl Geom {
    fn params(&self, total: usize) -> Params {
        Params {
            n: self.n as u32,
            c: self.c as u32,
            h: self.h as u32,
            w: self.w as u32,
            o: self.o as u32,
            ho: self.ho as u32,
            wo: self.wo as u32,
            kh: self.kh as u32,
            kw: self.kw as u32,
            sh: self.sh as u32,
            sw: self.sw as u32,
            ph: self.ph as u32,
            pw: self.pw as u32,
            total: total as u32,
            chunk: 0,
            splits: 1,
            wov: 0,
            wxv: 0,
            _pad: [0; 2],
        }
    }
    fn x_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }
    fn w_shape(&self) -> [usize; 4] {
        [self.o, self.c, self.kh, self.kw]
    }
    fn y_shape(&self) -> [usize; 4] {
        [self.n, self.o, self.ho, self.wo]
    }
}

fn dims4(op: &'static str, what: &str, t: &Tensor, other: &Tensor) -> Result<[usize; 4]> {
    t.expect(op, DType::F32)?;
    match t.shape() {
        &[a, b, c, d] => Ok([a, b, c, d]),
        s => Err(Error::shape(op, format!("{what} must be 4-D, got {s:?} (with {:?})", other.shape()))),
    }
}

fn check_step(op: &'static str, x: &[usize], w: &[usize], stride: (usize, usize)) -> Result<()> {
    if stride.0 == 0 || stride.1 == 0 {
        return Err(Error::shape(op, format!("zero stride {stride:?} for input {x:?} and weight {w:?}")));
    }
    if x[1..].contains(&0) || w.contains(&0) {
        return Err(Error::shape(op, format!("empty dimension in input {x:?} or weight {w:?}")));
    }
    Ok(())
}

/// Validates conv2d operands and returns its geometry.
fn conv2d_geom(x: &Tensor, w: &Tensor, stride: (usize, usize), padding: (usize, usize)) -> Result<Geom> {
    dims4("conv2d", "input", x, w)?;
    dims4("conv2d", "weight", w, x)?;
    geom_from_shapes("conv2d", x.shape(), w.shape(), stride, padding)
}

/// The conv2d geometry of an input shape and a weight shape, or an error naming `op` and both.
fn geom_from_shapes(
    op: &'static str,
    xs: &[usize],
    ws: &[usize],
    stride: (usize, usize),
    padding: (usize, usize),
) -> Result<Geom> {
    let (&[n, c, h, wd], &[o, wc, kh, kw]) = (xs, ws) else {
        return Err(Error::shape(op, format!("input {xs:?} and weight {ws:?} must both be 4-D")));
    };
    check_step(op, xs, ws, stride)?;
    if wc != c {
        return Err(Error::shape(
            op,
            format!("input {xs:?} has {c} channels but weight {ws:?} expects {wc} (weight is [O, C, KH, KW])"),
        ));
    }
    if h + 2 * padding.0 < kh || wd + 2 * padding.1 < kw {
        return Err(Error::shape(
            op,
            format!("kernel of weight {ws:?} is larger than input {xs:?} padded by {padding:?}"),
        ));
    }
    Ok(Geom {
        n,
        c,
        h,
        w: wd,
        o,
        ho: (h + 2 * padding.0 - kh) / stride.0 + 1,
        wo: (wd + 2 * padding.1 - kw) / stride.1 + 1,
        kh,
        kw,
        sh: stride.0,
        sw: stride.1,
        ph: padding.0,
        pw: padding.1,
    })
}

/// Validates conv_transpose2d operands and returns the geometry of the conv2d whose input
/// gradient it is: that conv2d's input is the transposed conv's output and vice versa.
fn conv_transpose2d_geom(
    x: &Tensor,
    w: &Tensor,
    stride: (usize, usize),
    padding: (usize, usize),
    output_padding: (usize, usize),
) -> Result<Geom> {
    const OP: &str = "conv_transpose2d";
    let [n, cin, h, wd] = dims4(OP, "input", x, w)?;
    let [wcin, cout, kh, kw] = dims4(OP, "weight", w, x)?;
    let (xs, ws) = (x.shape(), w.shape());
    check_step(OP, xs, ws, stride)?;
    if wcin != cin {
        return Err(Error::shape(
            OP,
            format!("input {xs:?} has {cin} channels but weight {ws:?} expects {wcin} (weight is [Cin, Cout, KH, KW])"),
        ));
    }
    if output_padding.0 >= stride.0 || output_padding.1 >= stride.1 {
        return Err(Error::shape(
            OP,
            format!(
                "output_padding {output_padding:?} must be smaller than stride {stride:?} \
                 (input {xs:?}, weight {ws:?})"
            ),
        ));
    }
    let out = |len: usize, s: usize, p: usize, k: usize, op: usize| ((len - 1) * s + k + op).checked_sub(2 * p);
    let (Some(ho), Some(wo)) =
        (out(h, stride.0, padding.0, kh, output_padding.0), out(wd, stride.1, padding.1, kw, output_padding.1))
    else {
        return Err(Error::shape(
            OP,
            format!("padding {padding:?} leaves no output for input {xs:?} and weight {ws:?}"),
        ));
    };
    if ho == 0 || wo == 0 {
        return Err(Error::shape(
            OP,
            format!("padding {padding:?} leaves no output for input {xs:?} and weight {ws:?}"),
        ));
    }
    // conv2d terms: its input is [n, cout, ho, wo], its weight [o = cin, c = cout, kh, kw], its
    // output [n, cin, h, w]; (ho + 2p - k) / s + 1 == h because output_padding < stride.
    Ok(Geom {
        n,
        c: cout,
        h: ho,
        w: wo,
        o: cin,
        ho: h,
        wo: wd,
        kh,
        kw,
        sh: stride.0,
        sw: stride.1,
        ph: padding.0,
        pw: padding.1,
    })
}

fn block(op: &'static str, what: &str, b: usize) -> Result<usize> {
    if (1..=8).contains(&b) {
        Ok(b)
    } else {
        Err(Error::Config(format!("{op}: {what} block must be 1..=8, got {b}")))
    }
}

/// The forward and input-gradient kernels' window per block row (`WIN` in shaders/conv.wgsl).
const WINDOW: usize = 32;

/// y = conv(x, w) for geometry `g` with `ob` output channels x `pb` pixels per invocation
/// (fewer pixels where the kernel's input window would not fit: `(pb - 1) sw + kw <= 32`).
fn forward_raw(op: &'static str, x: &Tensor, w: &Tensor, g: &Geom, ob: usize, pb: usize) -> Result<Tensor> {
    if g.kw > WINDOW {
        return Err(Error::shape(op, format!("kernel width {} exceeds {WINDOW}", g.kw)));
    }
    let pb = pb.min((WINDOW - g.kw) / g.sw + 1);
    let dev = x.device();
    let y = Tensor::empty(dev, op, &g.y_shape(), DType::F32)?;
    // The kernel reads the weights as [C, KH, KW, O] rows of whole vec4s (one small copy).
    let wt = layout::pad_last_to(&layout::permute(w, &[1, 2, 3, 0])?, 4)?;
    let total = g.n * g.o.div_ceil(ob) * g.ho * g.wo.div_ceil(pb);
    dev.dispatch(
        &SHADER,
        "conv_forward",
        &[("OB", ob as f64), ("PB", pb as f64), ("KW", g.kw as f64), ("SW", g.sw as f64)],
        bytemuck::bytes_of(&g.params(total)),
        &[x.bind(), wt.bind(), y.bind()],
        groups_1d(total, WG),
    );
    Ok(y)
}

/// dx = the input gradient of conv `g` from dy, `cb` input channels x `pb` pixels (`sw` apart)
/// per invocation.
fn backward_input_raw(op: &'static str, dy: &Tensor, w: &Tensor, g: &Geom, (cb, pb): (usize, usize)) -> Result<Tensor> {
    let taps = g.kw.div_ceil(g.sw);
    if taps > WINDOW {
        return Err(Error::shape(op, format!("kernel width {} at stride {} exceeds the window", g.kw, g.sw)));
    }
    let pb = pb.min(WINDOW + 1 - taps);
    let dev = dy.device();
    let dx = Tensor::empty(dev, op, &g.x_shape(), DType::F32)?;
    // The kernel reads the weights as [O, KH, KW, C] rows of whole vec4s (one small copy).
    let wt = layout::pad_last_to(&layout::permute(w, &[0, 2, 3, 1])?, 4)?;
    // Pixel blocks per row: each residue class modulo sw in blocks of pb (shader: wblocks).
    let wblocks = g.sw * g.w.div_ceil(g.sw).div_ceil(pb);
    let total = g.n * g.c.div_ceil(cb) * g.h * wblocks;
    dev.dispatch(
        &SHADER,
        "conv_backward_input",
        &[("CB", cb as f64), ("PB", pb as f64), ("KW", g.kw as f64), ("SW", g.sw as f64)],
        bytemuck::bytes_of(&g.params(total)),
        &[dy.bind(), wt.bind(), dx.bind()],
        groups_1d(total, WG),
    );
    Ok(dx)
}

/// Invocations below which the weight gradient splits its (n, oh) rows to keep the device busy.
fn busy_target(class: AdapterClass) -> usize {
    match class {
        AdapterClass::Cpu => 2048,
        AdapterClass::Gpu => 32768,
    }
}

/// How the weight gradient is computed (`shaders/conv.wgsl`); both give the same sums up to
/// rounding, deterministically.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightKernel {
    /// `conv_backward_weight`: one invocation per block of up to 8 x 8 channels and one tap,
    /// scalar loads (where the rows form does not fit).
    Taps,
    /// `conv_backward_weight_rows`: one invocation per block of up to 8 x 4 channels and a whole
    /// kernel row, on rows padded to whole vec4s (two small copies per call): per 4 output
    /// columns 1 / (KW x 4) of the loads per multiply-add: the default on every adapter where it
    /// fits (faster than `Taps` on lavapipe and the H200: docs/PERFORMANCE.md). Needs
    /// 3 * stride + kernel width <= 16.
    Rows,
}

/// The rows form's window: 3 sw + kw inputs under 4 output columns.
const ROW_WINDOW: usize = 16;

impl WeightKernel {
    /// The default for this geometry on this adapter class.
    fn pick(g: &Geom) -> Self {
        if Self::fits(g) {
            WeightKernel::Rows
        } else {
            WeightKernel::Taps
        }
    }

    fn fits(g: &Geom) -> bool {
        3 * g.sw + g.kw <= ROW_WINDOW
    }

    /// The largest (output, input) channel block the kernel holds.
    fn max_blocks(self) -> (usize, usize) {
        match self {
            WeightKernel::Taps => (8, 8),
            WeightKernel::Rows => (8, 4),
        }
    }

    /// The default channel blocks.
    fn blocks(self, g: &Geom, class: AdapterClass) -> (usize, usize) {
        let (o, c) = self.max_blocks();
        let cap = block_cap(class);
        (g.o.min(o).min(cap), g.c.min(c).min(cap))
    }

    /// Invocations per split for `ob` x `cb` channel blocks.
    fn invocations(self, g: &Geom, (ob, cb): (usize, usize)) -> usize {
        let taps = match self {
            WeightKernel::Taps => g.kh * g.kw,
            WeightKernel::Rows => g.kh,
        };
        g.o.div_ceil(ob) * g.c.div_ceil(cb) * taps
    }
}

/// How many splits of the N*Ho rows the weight gradient uses by default, for `nw` invocations
/// per split.
fn auto_splits(g: &Geom, class: AdapterClass, nw: usize) -> usize {
    let rows = g.n * g.ho;
    let target = busy_target(class);
    if nw >= target || rows <= 1 {
        return 1;
    }
    // Each split keeps at least ~256 multiply-adds per invocation so the extra pass pays off.
    let min_rows = 256usize.div_ceil(g.wo.max(1));
    let by_work = (rows / min_rows).max(1);
    target.div_ceil(nw).min(by_work).min(rows)
}

/// dw = the weight gradient of conv `g` from dy and x by `kernel`, `ob` output x `cb` input
/// channels per invocation, its rows cut into `splits` chunks whose partial sums are added by a
/// deterministic reduction.
fn backward_weight_raw(
    op: &'static str,
    dy: &Tensor,
    x: &Tensor,
    g: &Geom,
    splits: usize,
    (ob, cb): (usize, usize),
    kernel: WeightKernel,
) -> Result<Tensor> {
    let dev = dy.device();
    let nw = g.o * g.c * g.kh * g.kw;
    let invocations = kernel.invocations(g, (ob, cb));
    let rows = g.n * g.ho;
    let chunk = rows.div_ceil(splits.max(1)).max(1);
    let splits = rows.div_ceil(chunk).max(1);
    let out = Tensor::empty(dev, op, &[splits, nw], DType::F32)?;
    let mut p = g.params(splits * invocations);
    p.chunk = chunk as u32;
    p.splits = splits as u32;
    let groups = groups_1d(splits * invocations, WG);
    match kernel {
        WeightKernel::Taps => dev.dispatch(
            &SHADER,
            "conv_backward_weight",
            &[("OB", ob as f64), ("CB", cb as f64)],
            bytemuck::bytes_of(&p),
            &[dy.bind(), x.bind(), out.bind()],
            groups,
        ),
        WeightKernel::Rows => {
            // dy's rows as whole vec4s; x's rows behind pw zeros, long enough for the last
            // window: (wov - 1) sw vec4s to its start, then ceil((3 sw + kw) / 4).
            let wov = g.wo.div_ceil(4);
            let wxv = ((wov - 1) * g.sw + (3 * g.sw + g.kw).div_ceil(4)).max((g.pw + g.w).div_ceil(4));
            let dy4 = layout::pad_last_to(dy, 4)?;
            let x4 = if g.pw == 0 && 4 * wxv == g.w {
                x.clone()
            } else {
                layout::pad_axis(x, &[g.n, g.c, g.h, 4 * wxv], 3, g.pw)?
            };
            p.wov = wov as u32;
            p.wxv = wxv as u32;
            dev.dispatch(
                &SHADER,
                "conv_backward_weight_rows",
                &[("OB", ob as f64), ("CB", cb as f64), ("KW", g.kw as f64), ("SW", g.sw as f64)],
                bytemuck::bytes_of(&p),
                &[dy4.bind(), x4.bind(), out.bind()],
                groups,
            )
        }
    }
    let dw = if splits == 1 { out } else { reduce(&out, 0, Reduce::Sum, false)? };
    dw.reshape(&g.w_shape())
}

/// Default register blocks: conv_forward's (output channels, output pixels) and
/// conv_backward_input's (input channels, input pixels).
fn default_blocks(g: &Geom, c: AdapterClass) -> (usize, usize) {
    (g.o.min(block_cap(c)), g.wo.min(block_cap(c)))
}
fn default_input_blocks(g: &Geom, c: AdapterClass) -> (usize, usize) {
    (g.c.min(block_cap(c)), g.w.div_ceil(g.sw).min(block_cap(c)))
}

/// The largest default register block side: 8 x 8 (64 sums, 16 loads per 64 multiply-adds) on
/// CPU adapters, where loads cost most; 4 x 4 on GPUs, where 8 x 8 was no faster
/// (docs/PERFORMANCE.md).
fn block_cap(c: AdapterClass) -> usize {
    match c {
        AdapterClass::Cpu => 8,
        AdapterClass::Gpu => 4,
    }
}

/// The weight gradient with the default kernel, blocks and splits.
fn weight_grad(op: &'static str, dy: &Tensor, x: &Tensor, g: &Geom) -> Result<Tensor> {
    let class = x.device().class();
    let kernel = WeightKernel::pick(g);
    let blocks = kernel.blocks(g, class);
    let splits = auto_splits(g, class, kernel.invocations(g, blocks));
    backward_weight_raw(op, dy, x, g, splits, blocks, kernel)
}

/// conv2d: x [N, C, H, W], w [O, C, KH, KW] -> y [N, O, Ho, Wo], Ho = (H + 2ph - KH) / sh + 1.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: (usize, usize), padding: (usize, usize)) -> Result<Tensor> {
    let g = conv2d_geom(x, w, stride, padding)?;
    let (ob, pb) = default_blocks(&g, x.device().class());
    forward_raw("conv2d", x, w, &g, ob, pb)
}

/// conv2d with an explicit register block: `ob` output channels x `pb` output pixels per
/// invocation (each 1..=8). Results equal [`conv2d`]'s; exposed so tests cover every block.
pub fn conv2d_with(
    x: &Tensor,
    w: &Tensor,
    stride: (usize, usize),
    padding: (usize, usize),
    ob: usize,
    pb: usize,
) -> Result<Tensor> {
    let g = conv2d_geom(x, w, stride, padding)?;
    forward_raw("conv2d", x, w, &g, block("conv2d", "channel", ob)?, block("conv2d", "pixel", pb)?)
}

fn check_dy(op: &'static str, dy: &Tensor, g: &Geom, other: &Tensor) -> Result<()> {
    dy.expect(op, DType::F32)?;
    if dy.shape() != g.y_shape() {
        return Err(Error::shape(
            op,
            format!(
                "gradient {:?} does not match the output shape {:?} (operand {:?})",
                dy.shape(),
                g.y_shape(),
                other.shape()
            ),
        ));
    }
    Ok(())
}

/// The geometry of conv2d's input gradient, validated through the forward's rules on a
/// shape-only description of x.
fn backward_input_geom(
    dy: &Tensor,
    w: &Tensor,
    input_hw: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
) -> Result<Geom> {
    const OP: &str = "conv2d_backward_input";
    let [n, ..] = dims4(OP, "gradient", dy, w)?;
    let [_, c, ..] = dims4(OP, "weight", w, dy)?;
    let g = geom_from_shapes(OP, &[n, c, input_hw.0, input_hw.1], w.shape(), stride, padding)?;
    check_dy(OP, dy, &g, w)?;
    Ok(g)
}

/// The geometry of conv2d's weight gradient, validated.
fn backward_weight_geom(
    dy: &Tensor,
    x: &Tensor,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
) -> Result<Geom> {
    const OP: &str = "conv2d_backward_weight";
    let [_, o, ..] = dims4(OP, "gradient", dy, x)?;
    let [_, c, ..] = dims4(OP, "input", x, dy)?;
    let g = geom_from_shapes(OP, x.shape(), &[o, c, kernel.0, kernel.1], stride, padding)?;
    check_dy(OP, dy, &g, x)?;
    Ok(g)
}

/// The input gradient of conv2d: dy [N, O, Ho, Wo], w [O, C, KH, KW] -> dx [N, C, H, W] for an
/// input of spatial size `input_hw`.
pub fn conv2d_backward_input(
    dy: &Tensor,
    w: &Tensor,
    input_hw: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
) -> Result<Tensor> {
    conv2d_backward_input_with(dy, w, input_hw, stride, padding, (0, 0))
}

/// [`conv2d_backward_input`] with `cb` input channels x `pb` pixels (`sw` apart) per invocation
/// (each 1..=8; 0 picks). Results equal the default's.
pub fn conv2d_backward_input_with(
    dy: &Tensor,
    w: &Tensor,
    input_hw: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    (cb, pb): (usize, usize),
) -> Result<Tensor> {
    const OP: &str = "conv2d_backward_input";
    let g = backward_input_geom(dy, w, input_hw, stride, padding)?;
    let (dcb, dpb) = default_input_blocks(&g, dy.device().class());
    let cb = if cb == 0 { dcb } else { block(OP, "channel", cb)? };
    let pb = if pb == 0 { dpb } else { block(OP, "pixel", pb)? };
    backward_input_raw(OP, dy, w, &g, (cb, pb))
}

/// The weight gradient of conv2d: dy [N, O, Ho, Wo], x [N, C, H, W] -> dw [O, C, KH, KW].
pub fn conv2d_backward_weight(
    dy: &Tensor,
    x: &Tensor,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
) -> Result<Tensor> {
    conv2d_backward_weight_with(dy, x, kernel, stride, padding, WeightPlan::default())
}

/// How [`conv2d_backward_weight_with`] runs; zero / None fields pick by the adapter class.
#[derive(Clone, Copy, Debug, Default)]
pub struct WeightPlan {
    pub kernel: Option<WeightKernel>,
    /// Partial sums over runs of the N*Ho rows, added by a deterministic reduction.
    pub splits: usize,
    /// Output x input channels per invocation: each 1..=8 for [`WeightKernel::Taps`], 1..=8 x
    /// 1..=4 for [`WeightKernel::Rows`].
    pub blocks: (usize, usize),
}

/// [`conv2d_backward_weight`] run as `plan` says; every plan gives the same result up to
/// rounding and is deterministic.
pub fn conv2d_backward_weight_with(
    dy: &Tensor,
    x: &Tensor,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    plan: WeightPlan,
) -> Result<Tensor> {
    const OP: &str = "conv2d_backward_weight";
    let g = backward_weight_geom(dy, x, kernel, stride, padding)?;
    let class = x.device().class();
    let form = plan.kernel.unwrap_or_else(|| WeightKernel::pick(&g));
    if form == WeightKernel::Rows && !WeightKernel::fits(&g) {
        return Err(Error::shape(
            OP,
            format!(
                "the rows kernel needs 3 * stride + kernel width <= {ROW_WINDOW}, got stride {stride:?} and kernel {kernel:?}"
            ),
        ));
    }
    let pick = |b: usize, default: usize, max: usize, what: &str| match b {
        0 => Ok(default),
        b if b <= max => block(OP, what, b),
        b => Err(Error::Config(format!("{OP}: {what} block must be 1..={max} for {form:?}, got {b}"))),
    };
    let (defaults, max) = (form.blocks(&g, class), form.max_blocks());
    let blocks = (
        pick(plan.blocks.0, defaults.0, max.0, "output channel")?,
        pick(plan.blocks.1, defaults.1, max.1, "input channel")?,
    );
    let splits = match plan.splits {
        0 => auto_splits(&g, class, form.invocations(&g, blocks)),
        s => s,
    };
    backward_weight_raw(OP, dy, x, &g, splits, blocks, form)
}

/// conv_transpose2d (PyTorch semantics): x [N, Cin, H, W], w [Cin, Cout, KH, KW] ->
/// y [N, Cout, Ho, Wo], Ho = (H - 1) * sh - 2ph + KH + oph; output_padding < stride.
pub fn conv_transpose2d(
    x: &Tensor,
    w: &Tensor,
    stride: (usize, usize),
    padding: (usize, usize),
    output_padding: (usize, usize),
) -> Result<Tensor> {
    let g = conv_transpose2d_geom(x, w, stride, padding, output_padding)?;
    // x plays conv2d's dy, y is conv2d's dx.
    backward_input_raw("conv_transpose2d", x, w, &g, default_input_blocks(&g, x.device().class()))
}

// ---- conv2d as a matrix product (GPU path, opt-in: Device::set_gemm_conv) ----
//   y[n] = W [O, C*KH*KW] x col[n] [C*KH*KW, Ho*Wo] with col = im2col(x): the matmul cores do the
//   arithmetic. dx = col2im(W^T x dy[n]); dW = sum over n of dy[n] x col[n]^T (fixed order).

/// `col [N, C*KH*KW, Ho*Wo]` of x for this geometry (0 where the window leaves x).
fn im2col(op: &'static str, x: &Tensor, g: &Geom) -> Result<Tensor> {
    layout_pass(op, "im2col", x, &[g.n, g.c * g.kh * g.kw, g.ho * g.wo], g)
}

/// The adjoint of [`im2col`]: `dx [N, C, H, W]` from `dcol [N, C*KH*KW, Ho*Wo]`, gathered.
fn col2im(op: &'static str, dcol: &Tensor, g: &Geom) -> Result<Tensor> {
    layout_pass(op, "col2im", dcol, &g.x_shape(), g)
}

/// One invocation per element of a new `out_shape` tensor, computed by `entry` from `src`.
fn layout_pass(op: &'static str, entry: &str, src: &Tensor, out_shape: &[usize], g: &Geom) -> Result<Tensor> {
    let out = Tensor::empty(src.device(), op, out_shape, DType::F32)?;
    let total = out.numel();
    if total > u32::MAX as usize {
        return Err(Error::shape(op, format!("{total} elements are too many for one dispatch")));
    }
    let p = g.params(total);
    src.device().dispatch(&SHADER, entry, &[], bytemuck::bytes_of(&p), &[src.bind(), out.bind()], groups_1d(total, WG));
    Ok(out)
}

/// The weight as the matrix `[O, C*KH*KW]`.
fn w_matrix(w: &Tensor, g: &Geom) -> Result<Tensor> {
    w.reshape(&[g.o, g.c * g.kh * g.kw])
}

/// y from col: `[N, O, Ho, Wo]`.
fn gemm_forward(w: &Tensor, col: &Tensor, g: &Geom) -> Result<Tensor> {
    crate::ops::matmul::matmul(&w_matrix(w, g)?, col, false, false)?.reshape(&g.y_shape())
}

/// dx from dy: col2im(W^T x dy[n]).
fn gemm_backward_input(dy: &Tensor, w: &Tensor, g: &Geom) -> Result<Tensor> {
    let dy3 = dy.reshape(&[g.n, g.o, g.ho * g.wo])?;
    col2im("conv2d_backward_input", &crate::ops::matmul::matmul(&w_matrix(w, g)?, &dy3, true, false)?, g)
}

/// dW from dy and col: the sum over n of dy[n] x col[n]^T.
fn gemm_backward_weight(dy: &Tensor, col: &Tensor, g: &Geom) -> Result<Tensor> {
    let dy3 = dy.reshape(&[g.n, g.o, g.ho * g.wo])?;
    let per = crate::ops::matmul::matmul(&dy3, col, false, true)?; // [N, O, C*KH*KW]
    let dw = if g.n == 1 { per } else { reduce(&per, 0, Reduce::Sum, false)? };
    dw.reshape(&g.w_shape())
}

/// conv2d through im2col and the matmul cores; equals [`conv2d`] up to rounding.
pub fn conv2d_gemm(x: &Tensor, w: &Tensor, stride: (usize, usize), padding: (usize, usize)) -> Result<Tensor> {
    let g = conv2d_geom(x, w, stride, padding)?;
    gemm_forward(w, &im2col("conv2d", x, &g)?, &g)
}

/// [`conv2d_backward_input`] through the matmul cores and col2im.
pub fn conv2d_backward_input_gemm(
    dy: &Tensor,
    w: &Tensor,
    input_hw: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
) -> Result<Tensor> {
    gemm_backward_input(dy, w, &backward_input_geom(dy, w, input_hw, stride, padding)?)
}

/// [`conv2d_backward_weight`] through im2col and the matmul cores.
pub fn conv2d_backward_weight_gemm(
    dy: &Tensor,
    x: &Tensor,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
) -> Result<Tensor> {
    let g = backward_weight_geom(dy, x, kernel, stride, padding)?;
    gemm_backward_weight(dy, &im2col("conv2d_backward_weight", x, &g)?, &g)
}

impl Var {
    /// 2-D convolution, NCHW, zero padding, no bias: self [N, C, H, W], w [O, C, KH, KW].
    /// Gradients: dx by the gather kernel, dw by the weight kernel; or, where the device opted in
    /// to the GEMM path (`Device::set_gemm_conv`), all three through im2col and the matmul cores.
    pub fn conv2d(&self, w: &Var, stride: (usize, usize), padding: (usize, usize)) -> Result<Var> {
        let (xv, wv) = (self.value().clone(), w.value().clone());
        let g = conv2d_geom(&xv, &wv, stride, padding)?;
        if xv.device().gemm_conv() {
            let col = im2col("conv2d", &xv, &g)?;
            let y = gemm_forward(&wv, &col, &g)?;
            let need = (self.requires_grad(), w.requires_grad());
            return Ok(self.tape().op(y, &[self, w], move |gy| {
                let gx = if need.0 { Some(gemm_backward_input(gy, &wv, &g)?) } else { None };
                let gw = if need.1 { Some(gemm_backward_weight(gy, &col, &g)?) } else { None };
                Ok(vec![gx, gw])
            }));
        }
        let class = xv.device().class();
        let (ob, pb) = default_blocks(&g, class);
        let y = forward_raw("conv2d", &xv, &wv, &g, ob, pb)?;
        let need = (self.requires_grad(), w.requires_grad());
        Ok(self.tape().op(y, &[self, w], move |gy| {
            let blocks = default_input_blocks(&g, class);
            let gx = if need.0 { Some(backward_input_raw("conv2d", gy, &wv, &g, blocks)?) } else { None };
            let gw = if need.1 { Some(weight_grad("conv2d", gy, &xv, &g)?) } else { None };
            Ok(vec![gx, gw])
        }))
    }

    /// Transposed 2-D convolution (PyTorch semantics): self [N, Cin, H, W], w [Cin, Cout, KH, KW].
    /// Its input gradient is conv2d(gy, w); its weight gradient is conv2d's weight gradient
    /// with dy := self and x := gy.
    pub fn conv_transpose2d(
        &self,
        w: &Var,
        stride: (usize, usize),
        padding: (usize, usize),
        output_padding: (usize, usize),
    ) -> Result<Var> {
        let (xv, wv) = (self.value().clone(), w.value().clone());
        let g = conv_transpose2d_geom(&xv, &wv, stride, padding, output_padding)?;
        let class = xv.device().class();
        let y = backward_input_raw("conv_transpose2d", &xv, &wv, &g, default_input_blocks(&g, class))?;
        let need = (self.requires_grad(), w.requires_grad());
        Ok(self.tape().op(y, &[self, w], move |gy| {
            let (ob, pb) = default_blocks(&g, class);
            let gx = if need.0 { Some(forward_raw("conv_transpose2d", gy, &wv, &g, ob, pb)?) } else { None };
            let gw = if need.1 { Some(weight_grad("conv_transpose2d", &xv, gy, &g)?) } else { None };
            Ok(vec![gx, gw])
        }))
    }
}

/// f64 references, written straight from the definitions (scatter form, not the gather form the
/// kernels use). Shapes are `[N, C, H, W]`; results are row-major with their shape.
pub mod cpu {
    fn out_len(len: usize, k: usize, s: usize, p: usize) -> usize {
        (len + 2 * p - k) / s + 1
    }

    /// Calls `f(y index, x index, w index)` for every product conv2d sums: output y[n, o, oh, ow]
    /// times x[n, c, oh*sh - ph + kh, ow*sw - pw + kw] and w[o, c, kh, kw], for every tap inside
    /// the input; returns the output shape `[N, O, Ho, Wo]`. The three references below are this
    /// one loop with a different accumulation.
    fn taps(
        xs: [usize; 4],
        ws: [usize; 4],
        stride: (usize, usize),
        padding: (usize, usize),
        mut f: impl FnMut(usize, usize, usize),
    ) -> [usize; 4] {
        let [n, c, h, wd] = xs;
        let [o, _, kh, kw] = ws;
        let (ho, wo) = (out_len(h, kh, stride.0, padding.0), out_len(wd, kw, stride.1, padding.1));
        for b in 0..n {
            for oc in 0..o {
                for oy in 0..ho {
                    for ox in 0..wo {
                        for ic in 0..c {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy = (oy * stride.0 + ky) as isize - padding.0 as isize;
                                    let ix = (ox * stride.1 + kx) as isize - padding.1 as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                        continue;
                                    }
                                    f(
                                        ((b * o + oc) * ho + oy) * wo + ox,
                                        ((b * c + ic) * h + iy as usize) * wd + ix as usize,
                                        ((oc * c + ic) * kh + ky) * kw + kx,
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
        [n, o, ho, wo]
    }

    /// y[n, o, oh, ow] = sum x[n, c, oh*sh - ph + kh, ow*sw - pw + kw] * w[o, c, kh, kw].
    pub fn conv2d(
        x: &[f64],
        xs: [usize; 4],
        w: &[f64],
        ws: [usize; 4],
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> (Vec<f64>, [usize; 4]) {
        let [n, _, h, wd] = xs;
        let [o, _, kh, kw] = ws;
        let mut y = vec![0.0; n * o * out_len(h, kh, stride.0, padding.0) * out_len(wd, kw, stride.1, padding.1)];
        let ys = taps(xs, ws, stride, padding, |yi, xi, wi| y[yi] += x[xi] * w[wi]);
        (y, ys)
    }

    /// dx of conv2d, scattered: every (output, tap) pair adds dy * w to the input it read.
    pub fn conv2d_backward_input(
        dy: &[f64],
        xs: [usize; 4],
        w: &[f64],
        ws: [usize; 4],
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Vec<f64> {
        let mut dx = vec![0.0; xs.iter().product()];
        taps(xs, ws, stride, padding, |yi, xi, wi| dx[xi] += dy[yi] * w[wi]);
        dx
    }

    /// dw of conv2d: dw[o, c, kh, kw] = sum over n, oh, ow of dy * the input that tap read.
    pub fn conv2d_backward_weight(
        dy: &[f64],
        x: &[f64],
        xs: [usize; 4],
        ws: [usize; 4],
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Vec<f64> {
        let mut dw = vec![0.0; ws.iter().product()];
        taps(xs, ws, stride, padding, |yi, xi, wi| dw[wi] += dy[yi] * x[xi]);
        dw
    }

    /// Transposed convolution from its definition: every input element x[n, ci, i, j] spreads
    /// x * w[ci, co, kh, kw] onto y[n, co, i*sh - ph + kh, j*sw - pw + kw] (dropped outside y),
    /// with Ho = (H - 1) * sh - 2ph + KH + oph. w is [Cin, Cout, KH, KW].
    pub fn conv_transpose2d(
        x: &[f64],
        xs: [usize; 4],
        w: &[f64],
        ws: [usize; 4],
        stride: (usize, usize),
        padding: (usize, usize),
        output_padding: (usize, usize),
    ) -> (Vec<f64>, [usize; 4]) {
        let [n, cin, h, wd] = xs;
        let [_, cout, kh, kw] = ws;
        let ho = (h - 1) * stride.0 + kh + output_padding.0 - 2 * padding.0;
        let wo = (wd - 1) * stride.1 + kw + output_padding.1 - 2 * padding.1;
        let mut y = vec![0.0; n * cout * ho * wo];
        for b in 0..n {
            for ci in 0..cin {
                for i in 0..h {
                    for j in 0..wd {
                        let v = x[((b * cin + ci) * h + i) * wd + j];
                        for co in 0..cout {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let oy = (i * stride.0 + ky) as isize - padding.0 as isize;
                                    let ox = (j * stride.1 + kx) as isize - padding.1 as isize;
                                    if oy < 0 || ox < 0 || oy >= ho as isize || ox >= wo as isize {
                                        continue;
                                    }
                                    y[((b * cout + co) * ho + oy as usize) * wo + ox as usize] +=
                                        v * w[((ci * cout + co) * kh + ky) * kw + kx];
                                }
                            }
                        }
                    }
                }
            }
        }
        (y, [n, cout, ho, wo])
    }
}
