//! 2-D max and average pooling, NCHW, floor mode (`shaders/pool.wgsl`). Max pooling saves the
//! argmax of every window (a U32 tensor of flat indices into the input plane) for its gather-form
//! backward; average pooling counts padding (`count_include_pad = true`). The f64 references are
//! in [`cpu`].

use crate::autodiff::Var;
use crate::device::{groups_1d, AdapterClass, Device, WG};
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

crate::shader!(SHADER = "pool");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    planes: u32,
    h: u32,
    w: u32,
    ho: u32,
    wo: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    ph: u32,
    pw: u32,
    total: u32,
    scale: f32,
    _pad: [u32; 3],
}

/// Sizes of one pooling: input [n, c, h, w], output [n, c, ho, wo].
#[derive(Clone, Copy, Debug)]
struct Geom {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    k: (usize, usize),
    s: (usize, usize),
    p: (usize, usize),
}

impl Geom {
    fn params(&self, total: usize) -> Params {
        Params {
            planes: (self.n * self.c) as u32,
            h: self.h as u32,
            w: self.w as u32,
            ho: self.ho as u32,
            wo: self.wo as u32,
            kh: self.k.0 as u32,
            kw: self.k.1 as u32,
            sh: self.s.0 as u32,
            sw: self.s.1 as u32,
            ph: self.p.0 as u32,
            pw: self.p.1 as u32,
            total: total as u32,
            scale: 1.0 / (self.k.0 * self.k.1) as f32,
            _pad: [0; 3],
        }
    }
    fn in_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }
    fn out_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.ho, self.wo]
    }
}

/// Validates a pooling of an input of shape `xs` and returns its geometry.
fn geom(
    op: &'static str,
    xs: &[usize],
    k: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
) -> Result<Geom> {
    let &[n, c, h, w] = xs else {
        return Err(Error::shape(op, format!("input must be 4-D [N, C, H, W], got {xs:?} (kernel {k:?})")));
    };
    if k.0 == 0 || k.1 == 0 || stride.0 == 0 || stride.1 == 0 {
        return Err(Error::shape(op, format!("kernel {k:?} and stride {stride:?} must be positive (input {xs:?})")));
    }
    if h == 0 || w == 0 {
        return Err(Error::shape(op, format!("empty spatial dimension in input {xs:?} (kernel {k:?})")));
    }
    if padding.0 > k.0 / 2 || padding.1 > k.1 / 2 {
        return Err(Error::shape(
            op,
            format!("padding {padding:?} must be at most half of kernel {k:?} (input {xs:?})"),
        ));
    }
    if h + 2 * padding.0 < k.0 || w + 2 * padding.1 < k.1 {
        return Err(Error::shape(op, format!("kernel {k:?} is larger than input {xs:?} padded by {padding:?}")));
    }
    Ok(Geom {
        n,
        c,
        h,
        w,
        ho: (h + 2 * padding.0 - k.0) / stride.0 + 1,
        wo: (w + 2 * padding.1 - k.1) / stride.1 + 1,
        k,
        s: stride,
        p: padding,
    })
}

fn check_gy(op: &'static str, gy: &Tensor, g: &Geom) -> Result<()> {
    gy.expect(op, DType::F32)?;
    if gy.shape() != g.out_shape() {
        return Err(Error::shape(
            op,
            format!(
                "gradient {:?} does not match the output {:?} of input {:?}",
                gy.shape(),
                g.out_shape(),
                g.in_shape()
            ),
        ));
    }
    Ok(())
}

/// Elements along W per invocation (the shader's RB): on CPU rasterisers a run of 8 divides
/// its indices once instead of once per element (integer division is scalar there).
fn run_len(dev: &Device) -> usize {
    match dev.class() {
        AdapterClass::Cpu => 8,
        AdapterClass::Gpu => 1,
    }
}

/// Max pooling: returns the output [N, C, Ho, Wo] and the argmax of every window (U32, flat
/// index ih * W + iw into the input plane). Padding must be at most half the kernel.
pub fn max_pool2d(
    x: &Tensor,
    k: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "max_pool2d";
    x.expect(OP, DType::F32)?;
    let g = geom(OP, x.shape(), k, stride, padding)?;
    let dev = x.device();
    let y = Tensor::empty(dev, OP, &g.out_shape(), DType::F32)?;
    let idx = Tensor::empty(dev, OP, &g.out_shape(), DType::U32)?;
    let rb = run_len(dev);
    let total = g.n * g.c * g.ho * g.wo.div_ceil(rb);
    // Without padding no window leaves the input: the kernel size as constants, no bounds checks.
    let window = [("RB", rb as f64), ("PKH", g.k.0 as f64), ("PKW", g.k.1 as f64)];
    let (entry, constants) =
        if g.p == (0, 0) { ("max_pool_forward_inside", &window[..]) } else { ("max_pool_forward", &window[..1]) };
    dev.dispatch(
        &SHADER,
        entry,
        constants,
        bytemuck::bytes_of(&g.params(total)),
        &[x.bind(), y.bind(), idx.bind()],
        groups_1d(total, WG),
    );
    Ok((y, idx))
}

/// The input gradient of max pooling over an input of shape `x_shape`, from the output
/// gradient and the saved argmax.
pub fn max_pool2d_backward(
    gy: &Tensor,
    idx: &Tensor,
    x_shape: &[usize],
    k: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
) -> Result<Tensor> {
    const OP: &str = "max_pool2d_backward";
    let g = geom(OP, x_shape, k, stride, padding)?;
    check_gy(OP, gy, &g)?;
    idx.expect(OP, DType::U32)?;
    if idx.shape() != gy.shape() {
        return Err(Error::shape(OP, format!("argmax {:?} does not match gradient {:?}", idx.shape(), gy.shape())));
    }
    let dev = gy.device();
    let gx = Tensor::empty(dev, OP, x_shape, DType::F32)?;
    let rb = run_len(dev);
    // Windows that tile the input (the CNN's 2 x 2 pools) hold each element exactly once: one
    // invocation per run of windows; otherwise one per run of input elements.
    let window = [("RB", rb as f64), ("PKH", g.k.0 as f64), ("PKW", g.k.1 as f64)];
    let tiled = g.k == g.s && g.p == (0, 0) && g.h == g.ho * g.k.0 && g.w == g.wo * g.k.1;
    let (entry, constants, total) = if tiled {
        ("max_pool_backward_tiled", &window[..], g.n * g.c * g.ho * g.wo.div_ceil(rb))
    } else {
        ("max_pool_backward", &window[..1], g.n * g.c * g.h * g.w.div_ceil(rb))
    };
    dev.dispatch(
        &SHADER,
        entry,
        constants,
        bytemuck::bytes_of(&g.params(total)),
        &[gy.bind(), idx.bind(), gx.bind()],
        groups_1d(total, WG),
    );
    Ok(gx)
}

/// Average pooling with count_include_pad = true: every window sum is divided by kh * kw.
pub fn avg_pool2d(x: &Tensor, k: (usize, usize), stride: (usize, usize), padding: (usize, usize)) -> Result<Tensor> {
    const OP: &str = "avg_pool2d";
    x.expect(OP, DType::F32)?;
    let g = geom(OP, x.shape(), k, stride, padding)?;
    let dev = x.device();
    let y = Tensor::empty(dev, OP, &g.out_shape(), DType::F32)?;
    let rb = run_len(dev);
    let total = g.n * g.c * g.ho * g.wo.div_ceil(rb);
    dev.dispatch(
        &SHADER,
        "avg_pool_forward",
        &[("RB", rb as f64)],
        bytemuck::bytes_of(&g.params(total)),
        &[x.bind(), y.bind()],
        groups_1d(total, WG),
    );
    Ok(y)
}

/// The input gradient of average pooling over an input of shape `x_shape`.
pub fn avg_pool2d_backward(
    gy: &Tensor,
    x_shape: &[usize],
    k: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
) -> Result<Tensor> {
    const OP: &str = "avg_pool2d_backward";
    let g = geom(OP, x_shape, k, stride, padding)?;
    check_gy(OP, gy, &g)?;
    let dev = gy.device();
    let gx = Tensor::empty(dev, OP, x_shape, DType::F32)?;
    let rb = run_len(dev);
    let total = g.n * g.c * g.h * g.w.div_ceil(rb);
    dev.dispatch(
        &SHADER,
        "avg_pool_backward",
        &[("RB", rb as f64)],
        bytemuck::bytes_of(&g.params(total)),
        &[gy.bind(), gx.bind()],
        groups_1d(total, WG),
    );
    Ok(gx)
}

impl Var {
    /// Max pooling; the gradient of each window goes to its saved argmax.
    pub fn max_pool2d(&self, k: (usize, usize), stride: (usize, usize), padding: (usize, usize)) -> Result<Var> {
        let (y, idx) = max_pool2d(self.value(), k, stride, padding)?;
        let shape = self.shape().to_vec();
        Ok(self
            .tape()
            .op(y, &[self], move |gy| Ok(vec![Some(max_pool2d_backward(gy, &idx, &shape, k, stride, padding)?)])))
    }

    /// Average pooling (count_include_pad = true); each window spreads gy / (kh * kw).
    pub fn avg_pool2d(&self, k: (usize, usize), stride: (usize, usize), padding: (usize, usize)) -> Result<Var> {
        let y = avg_pool2d(self.value(), k, stride, padding)?;
        let shape = self.shape().to_vec();
        Ok(self.tape().op(y, &[self], move |gy| Ok(vec![Some(avg_pool2d_backward(gy, &shape, k, stride, padding)?)])))
    }
}

/// f64 references straight from the definitions. Input shape `[N, C, H, W]`.
pub mod cpu {
    fn out_shape(xs: [usize; 4], k: (usize, usize), s: (usize, usize), p: (usize, usize)) -> [usize; 4] {
        let [n, c, h, w] = xs;
        [n, c, (h + 2 * p.0 - k.0) / s.0 + 1, (w + 2 * p.1 - k.1) / s.1 + 1]
    }

    /// The real (unpadded) positions of window (oh, ow), row-major.
    fn taps(
        xs: [usize; 4],
        k: (usize, usize),
        s: (usize, usize),
        p: (usize, usize),
        oh: usize,
        ow: usize,
    ) -> Vec<(usize, usize)> {
        let [_, _, h, w] = xs;
        let mut v = Vec::new();
        for ky in 0..k.0 {
            for kx in 0..k.1 {
                let iy = (oh * s.0 + ky) as isize - p.0 as isize;
                let ix = (ow * s.1 + kx) as isize - p.1 as isize;
                if iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize {
                    v.push((iy as usize, ix as usize));
                }
            }
        }
        v
    }

    /// Max pooling: (values, argmax as ih * W + iw within the plane, output shape). The first
    /// largest real element of each window wins.
    pub fn max_pool2d(
        x: &[f64],
        xs: [usize; 4],
        k: (usize, usize),
        s: (usize, usize),
        p: (usize, usize),
    ) -> (Vec<f64>, Vec<u32>, [usize; 4]) {
        let os = out_shape(xs, k, s, p);
        let [n, c, h, w] = xs;
        let (mut y, mut idx) = (Vec::new(), Vec::new());
        for pl in 0..n * c {
            for oh in 0..os[2] {
                for ow in 0..os[3] {
                    let mut best: Option<(f64, usize)> = None;
                    for (iy, ix) in taps(xs, k, s, p, oh, ow) {
                        let v = x[pl * h * w + iy * w + ix];
                        if best.is_none_or(|(b, _)| v > b) {
                            best = Some((v, iy * w + ix));
                        }
                    }
                    let (v, at) = best.expect("every window holds a real element");
                    y.push(v);
                    idx.push(at as u32);
                }
            }
        }
        (y, idx, os)
    }

    /// Average pooling, count_include_pad = true.
    pub fn avg_pool2d(
        x: &[f64],
        xs: [usize; 4],
        k: (usize, usize),
        s: (usize, usize),
        p: (usize, usize),
    ) -> (Vec<f64>, [usize; 4]) {
        let os = out_shape(xs, k, s, p);
        let [n, c, h, w] = xs;
        let mut y = Vec::new();
        for pl in 0..n * c {
            for oh in 0..os[2] {
                for ow in 0..os[3] {
                    let sum: f64 = taps(xs, k, s, p, oh, ow).iter().map(|&(iy, ix)| x[pl * h * w + iy * w + ix]).sum();
                    y.push(sum / (k.0 * k.1) as f64);
                }
            }
        }
        (y, os)
    }
}
