//! Your own WGSL kernels, run exactly as the built-in ones are: compiled once per device into the
//! same pipeline cache, recorded into the same command encoder (a training step stays one
//! submit), their parameter block appended to the same arena. With [`Tape::op`] a kernel gets an
//! autodiff rule and joins the tape like any built-in op.
//!
//! A kernel's WGSL follows the conventions of the files in `shaders/`:
//!
//! - binding 0 of group 0 is the parameter block, declared exactly as
//!   `@group(0) @binding(0) var<uniform> p: Params;` (on CPU adapters the device rewrites that
//!   line into a storage buffer copied into registers, see [`crate::device::Shader::source_for`]);
//!   every entry point reads it (at least for its bounds check);
//! - bindings 1, 2, .. are storage buffers, one per tensor passed with [`Launch::arg`], in order
//!   (each entry point uses bindings 1 to k without a gap): `array<f32>` (or of `vec4<f32>`) for
//!   [`DType::F32`] tensors, `array<u32>` for [`DType::U32`];
//! - a 1-D kernel launched with [`Launch::over`] rebuilds its index as
//!   `gid.x + gid.y * nwg.x * WG` (`gid` the global invocation id, `nwg` the workgroup count, `WG`
//!   its workgroup width), because more than 65535 workgroups fold into y, and returns for
//!   indices past its element count.
//!
//! User kernels always compile with wgpu's runtime checks (index clamps, loop counters), whatever
//! [`Device::set_shader_checks`] says: only the built-in kernels are trusted to bound their own
//! accesses.
//!
//! ```
//! use atomgrad::kernel::Kernel;
//! use atomgrad::{DType, Device, Tape, Tensor, Var};
//!
//! const SRC: &str = r#"
//! struct Params { n: u32 }
//! @group(0) @binding(0) var<uniform> p: Params;
//! @group(0) @binding(1) var<storage, read> x: array<f32>;
//! @group(0) @binding(2) var<storage, read_write> y: array<f32>;
//! @compute @workgroup_size(256)
//! fn cube(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
//!     let i = gid.x + gid.y * nwg.x * 256u;
//!     if i >= p.n { return; }
//!     y[i] = x[i] * x[i] * x[i];
//! }
//! "#;
//!
//! # fn main() -> atomgrad::Result<()> {
//! let dev = Device::new()?;
//! let kernel = Kernel::new("cube", SRC)?; // parsed and validated once
//! let x = Tensor::from_slice(&dev, &[1.0, 2.0, 3.0], &[3])?;
//! let y = Tensor::uninit(&dev, x.shape(), DType::F32)?;
//! kernel.launch(&dev, "cube").params(&[x.numel() as u32]).arg(&x).arg(&y).over(x.numel()).record()?;
//! assert_eq!(y.to_vec()?, vec![1.0, 8.0, 27.0]);
//! # Ok(()) }
//! ```
//!
//! `examples/custom_kernel.rs` adds a backward kernel, records both on the tape with
//! [`Tape::op`] and checks the gradient against central differences.

use crate::device::{groups_1d, Device, Shader, PARAMS_UNIFORM, PARAM_BLOCK};
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};
#[allow(unused_imports)] // named in the docs
use crate::Tape;

/// A user WGSL compute shader, parsed and validated (with naga) once, in both the form GPUs run
/// and the form CPU adapters run. Create it once and keep it: every `Kernel::new` is compiled
/// anew, and its source lives as long as the program (as the built-in ones do).
#[derive(Clone, Debug)]
pub struct Kernel {
    shader: &'static Shader,
    entries: Vec<Entry>,
}

/// What a kernel's entry point binds and how wide its workgroups are.
#[derive(Clone, Debug)]
struct Entry {
    name: String,
    /// Storage bindings it uses (1, 2, ..), sorted, with the tensor type each holds where it is
    /// an array of f32 or u32 scalars or vectors.
    storage: Vec<(u32, Option<DType>)>,
    /// Bytes of its parameter block as the WGSL declares it.
    params: u32,
    /// Invocations per workgroup.
    lanes: u32,
}

/// naga's parse and validation of `src`, as one line of text on failure.
fn validate(name: &str, src: &str) -> Result<(naga::Module, naga::valid::ModuleInfo)> {
    let module = naga::front::wgsl::parse_str(src)
        .map_err(|e| Error::Config(format!("kernel {name}: {}", one_line(&e.emit_to_string(src)))))?;
    let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all());
    let info = v
        .validate(&module)
        .map_err(|e| Error::Config(format!("kernel {name}: {}", one_line(&e.emit_to_string(src)))))?;
    Ok((module, info))
}

/// naga's multi-line diagnostics folded into one line.
fn one_line(s: &str) -> String {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

impl Kernel {
    /// Parses and validates `source` (WGSL, following the conventions in the [module
    /// docs](self)); `name` labels its pipelines and errors. Errors name the kernel and what is
    /// wrong: a WGSL error with its line, an entry point without the parameter block, a binding
    /// outside group 0.
    pub fn new(name: &str, source: &str) -> Result<Kernel> {
        let (module, info) = validate(name, source)?;
        // The CPU form must validate too (the parameter block rewritten, see Shader::source_for).
        let cpu = Shader::cpu_form(source);
        validate(name, &cpu).map_err(|e| {
            Error::Config(format!(
                "{e} (in the form CPU adapters run; declare the parameter block as `{PARAMS_UNIFORM}`)"
            ))
        })?;
        let mut layouter = naga::proc::Layouter::default();
        layouter
            .update(module.to_ctx())
            .map_err(|e| Error::Config(format!("kernel {name}: laying out its types failed: {e}")))?;
        let mut entries = Vec::new();
        for (i, ep) in module.entry_points.iter().enumerate() {
            if ep.stage != naga::ShaderStage::Compute {
                continue;
            }
            let fi = info.get_entry_point(i);
            let (mut params, mut storage) = (None, Vec::new());
            for (h, var) in module.global_variables.iter() {
                let Some(b) = &var.binding else { continue };
                if fi[h].is_empty() {
                    continue;
                }
                if b.group != 0 {
                    return Err(Error::Config(format!(
                        "kernel {name}: entry point {} uses binding {} of group {}; kernels bind group 0 only",
                        ep.name, b.binding, b.group
                    )));
                }
                match (b.binding, var.space) {
                    (0, naga::AddressSpace::Uniform) => params = Some(layouter[var.ty].size),
                    (0, _) => {
                        return Err(Error::Config(format!(
                            "kernel {name}: binding 0 must be the parameter block, declared as `{PARAMS_UNIFORM}`"
                        )))
                    }
                    (k, naga::AddressSpace::Storage { .. }) => storage.push((k, element_dtype(&module, var.ty))),
                    (k, _) => {
                        return Err(Error::Config(format!(
                            "kernel {name}: binding {k} of entry point {} is not a storage buffer",
                            ep.name
                        )))
                    }
                }
            }
            let Some(params) = params else {
                return Err(Error::Config(format!(
                    "kernel {name}: entry point {} does not read its parameter block `p` (binding 0); every kernel \
                     reads one, at least for its bounds check",
                    ep.name
                )));
            };
            storage.sort_unstable_by_key(|s| s.0);
            let lanes = ep.workgroup_size.iter().product::<u32>().max(1);
            entries.push(Entry { name: ep.name.clone(), storage, params, lanes });
        }
        if entries.is_empty() {
            return Err(Error::Config(format!("kernel {name}: no @compute entry point")));
        }
        let name: &'static str = Box::leak(name.to_string().into_boxed_str());
        let source: &'static str = Box::leak(source.to_string().into_boxed_str());
        Ok(Kernel { shader: Box::leak(Box::new(Shader { name, source })), entries })
    }

    pub fn name(&self) -> &str {
        self.shader.name
    }

    /// The entry points, in source order.
    pub fn entry_points(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.name.as_str()).collect()
    }

    /// Starts describing one dispatch of `entry` on `dev`; [`Launch::record`] records it.
    pub fn launch<'a>(&'a self, dev: &'a Device, entry: &'a str) -> Launch<'a> {
        Launch { kernel: self, dev, entry, params: Vec::new(), constants: Vec::new(), args: Vec::new(), groups: None }
    }
}

/// One dispatch of a [`Kernel`] being described: its parameter block, override constants,
/// tensors and workgroup count. Nothing runs until the device's next flush (a readback flushes).
#[must_use = "a launch does nothing until .record()"]
pub struct Launch<'a> {
    kernel: &'a Kernel,
    dev: &'a Device,
    entry: &'a str,
    params: Vec<u8>,
    constants: Vec<(&'a str, f64)>,
    args: Vec<&'a Tensor>,
    groups: Option<[u32; 3]>,
}

impl<'a> Launch<'a> {
    /// The parameter block (binding 0): any plain-old-data value laid out as the WGSL `Params`
    /// struct (`#[repr(C)]`, `bytemuck::Pod`; a `[u32; k]` array for an all-`u32` struct), at
    /// most 256 bytes.
    pub fn params<P: bytemuck::Pod>(mut self, p: &P) -> Self {
        self.params = bytemuck::bytes_of(p).to_vec();
        self
    }
    /// A pipeline-overridable constant (`override NAME: T = ..;` in the WGSL): each distinct
    /// value compiles its own pipeline, once.
    pub fn constant(mut self, name: &'a str, value: f64) -> Self {
        self.constants.push((name, value));
        self
    }
    /// The next storage binding (1, 2, ..): the whole tensor.
    pub fn arg(mut self, t: &'a Tensor) -> Self {
        self.args.push(t);
        self
    }
    /// Workgroups along x, y, z.
    pub fn groups(mut self, groups: [u32; 3]) -> Self {
        self.groups = Some(groups);
        self
    }
    /// Enough workgroups for `n` invocations of a 1-D kernel (folded into y past 65535
    /// workgroups: see the [module docs](self) for the index the kernel rebuilds).
    pub fn over(mut self, n: usize) -> Self {
        let lanes = self.kernel.entries.iter().find(|e| e.name == self.entry).map_or(1, |e| e.lanes);
        self.groups = Some(groups_1d(n, lanes));
        self
    }

    /// Checks the launch against the kernel (entry point, bindings, devices, parameter block
    /// size) and records it. Errors name the kernel and the problem; nothing is recorded then.
    pub fn record(self) -> Result<()> {
        let k = self.kernel;
        let bad = |msg: String| Err(Error::Config(format!("kernel {}::{}: {msg}", k.shader.name, self.entry)));
        let Some(entry) = k.entries.iter().find(|e| e.name == self.entry) else {
            return bad(format!("no such @compute entry point (it has: {})", k.entry_points().join(", ")));
        };
        let want: Vec<u32> = (1..=self.args.len() as u32).collect();
        let uses: Vec<u32> = entry.storage.iter().map(|s| s.0).collect();
        if uses.iter().enumerate().any(|(i, &k)| k != i as u32 + 1) {
            return bad(format!(
                "it uses storage bindings {uses:?}: an entry point's storage bindings must be 1, 2, .. without a \
                 gap (the tensors passed with .arg() are bound in that order)"
            ));
        }
        if uses != want {
            return bad(format!(
                "it uses storage bindings {uses:?} and was given {} tensor(s) (bindings {want:?}); pass one tensor \
                 per binding it uses, in order",
                self.args.len()
            ));
        }
        for ((k, dtype), t) in entry.storage.iter().zip(&self.args) {
            if dtype.is_some_and(|d| d != t.dtype()) {
                return bad(format!("binding {k} holds {:?} values; it was given {t:?}", dtype.unwrap()));
            }
        }
        if self.params.len() != entry.params as usize {
            return bad(format!(
                "its Params struct is {} bytes in the WGSL; the parameter block given has {}",
                entry.params,
                self.params.len()
            ));
        }
        if self.params.len() as u64 > PARAM_BLOCK {
            return bad(format!("parameter block of {} bytes; at most {PARAM_BLOCK}", self.params.len()));
        }
        if let Some(t) = self.args.iter().find(|t| !t.device().same(self.dev)) {
            return bad(format!("tensor {t:?} lives on another device"));
        }
        let Some(groups) = self.groups else {
            return bad("no workgroup count: call .over(n) or .groups([x, y, z])".into());
        };
        let max = self.dev.limits().max_compute_workgroups_per_dimension;
        if groups.iter().any(|&g| g > max) {
            return bad(format!("workgroups {groups:?} exceed this adapter's {max} per dimension"));
        }
        let binds: Vec<(&wgpu::Buffer, u64)> = self.args.iter().map(|t| t.bind()).collect();
        self.dev.dispatch_form(k.shader, self.entry, &self.constants, &self.params, &binds, groups, true);
        Ok(())
    }
}

/// The tensor type a storage binding of type `ty` holds: an array of f32 or u32 scalars or
/// vectors; `None` for anything else (not checked).
fn element_dtype(module: &naga::Module, ty: naga::Handle<naga::Type>) -> Option<DType> {
    use naga::{ScalarKind, TypeInner};
    let TypeInner::Array { base, .. } = module.types[ty].inner else { return None };
    let scalar = match module.types[base].inner {
        TypeInner::Scalar(s) | TypeInner::Vector { scalar: s, .. } => s,
        _ => return None,
    };
    match (scalar.kind, scalar.width) {
        (ScalarKind::Float, 4) => Some(DType::F32),
        (ScalarKind::Uint, 4) => Some(DType::U32),
        _ => None,
    }
}
