//! The GPU device: adapter choice, limits, the pipeline cache, the buffer pool and the recorder
//! that puts every dispatch of a training step into one command encoder and one submit.
//!
//! Life of a step:
//! 1. ops call `Device::dispatch`: the dispatch is recorded into the open compute pass, its small
//!    parameter block is appended to a host-side arena;
//! 2. buffers of tensors dropped during the step go to `limbo` (the pending commands may still
//!    read them);
//! 3. [`Device::flush`] writes the parameter arena, submits the one command buffer and moves limbo
//!    buffers back to the free lists, where the next step finds them.

use crate::error::{Error, Result};
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Bytes reserved for one dispatch's uniform parameter block (and its alignment).
pub(crate) const PARAM_BLOCK: u64 = 256;
/// Bytes in one uniform chunk of the parameter arena.
const PARAM_CHUNK: u64 = 64 * 1024;
/// Bytes of dropped tensors' buffers held back for the pending commands (until the next submit)
/// before an allocation that finds no free buffer submits first (`Device::set_release_limit`).
const DEFAULT_LIMBO_LIMIT: u64 = 1 << 30;
/// Invocations per workgroup of every 1-D kernel.
pub(crate) const WG: u32 = 256;

/// A WGSL source, compiled lazily and cached per device: a file under `shaders/` ([`crate::shader!`]),
/// or a user kernel ([`crate::kernel::Kernel`]).
#[derive(Debug)]
pub struct Shader {
    pub name: &'static str,
    pub source: &'static str,
}

/// How every kernel declares its parameter block (binding 0), checked for each file by
/// `tests/shaders.rs`.
pub const PARAMS_UNIFORM: &str = "@group(0) @binding(0) var<uniform> p: Params;";

impl Shader {
    /// The source as compiled for this adapter class. On CPU adapters the parameter block is a
    /// read-only storage buffer copied into a private `p` as each entry point starts: Mesa's
    /// lavapipe (22.x) inlines uniform-buffer values that bound loops and recompiles the kernel at
    /// every dispatch whose kernel shrinks enough, and never inlines storage buffers (the
    /// measurements: docs/PERFORMANCE.md, "Why the code chooses what it chooses"). The private
    /// copy keeps the values in registers: read straight from storage they would be reloaded after
    /// every store the compiler cannot prove apart from them. Array fields (`p.shape[d]`) are
    /// still read from the buffer: indexed by a loop counter, the private copy would be a
    /// per-invocation array in memory, one gather per read, where the buffer's address is the
    /// same for every invocation.
    pub fn source_for(&self, class: AdapterClass) -> std::borrow::Cow<'static, str> {
        if class == AdapterClass::Gpu || !self.source.contains(PARAMS_UNIFORM) {
            return self.source.into();
        }
        Shader::cpu_form(self.source).into()
    }

    /// `source` as CPU adapters compile it (see [`Shader::source_for`]); unchanged when it does
    /// not declare its parameter block as [`PARAMS_UNIFORM`].
    pub fn cpu_form(source: &str) -> String {
        if !source.contains(PARAMS_UNIFORM) {
            return source.to_string();
        }
        let decl = "@group(0) @binding(0) var<storage, read> p_in: Params;\nvar<private> p: Params;";
        let src = array_fields_from_buffer(&source.replacen(PARAMS_UNIFORM, decl, 1));
        let mut out = String::with_capacity(src.len() + 1024);
        let mut rest = src.as_str();
        // Every entry point's body opens at the first brace after its attribute.
        while let Some(at) = rest.find("@compute") {
            let Some(brace) = rest[at..].find('{').map(|b| at + b) else { break };
            out.push_str(&rest[..=brace]);
            out.push_str("\n    p = p_in;");
            rest = &rest[brace + 1..];
        }
        out.push_str(rest);
        out
    }
}

/// `p.field[` -> `p_in.field[` wherever `p` is a whole identifier (see [`Shader::source_for`]).
fn array_fields_from_buffer(src: &str) -> String {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(src.len() + 256);
    let mut rest = src;
    while let Some(at) = rest.find("p.") {
        let whole = rest[..at].chars().next_back().is_none_or(|c| !ident(c));
        let field: String = rest[at + 2..].chars().take_while(|&c| ident(c)).collect();
        let indexed = !field.is_empty() && rest[at + 2 + field.len()..].starts_with('[');
        out.push_str(&rest[..at]);
        out.push_str(if whole && indexed { "p_in." } else { "p." });
        rest = &rest[at + 2..];
    }
    out.push_str(rest);
    out
}

/// Declares `static NAME: Shader` from `shaders/<file>.wgsl`.
#[macro_export]
macro_rules! shader {
    ($vis:vis $name:ident = $file:literal) => {
        $vis static $name: $crate::device::Shader = $crate::device::Shader {
            name: $file,
            source: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/", $file, ".wgsl")),
        };
    };
}

/// Counters that show whether a step really is one submit and whether the pool stopped growing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub dispatches: u64,
    pub submits: u64,
    pub buffers_created: u64,
    pub bytes_created: u64,
    pub readbacks: u64,
    /// Bind groups created (a warm training step creates none: they are cached).
    pub bind_groups_created: u64,
    /// Host nanoseconds spent in wgpu finishing command encoders (encoding the recorded passes)
    /// and in queue submits, summed over flushes: with the recording time, a step's host cost.
    /// (lavapipe's submit waits while the previous submission still runs, so there it is mostly
    /// waiting.)
    pub encode_ns: u64,
    pub submit_ns: u64,
}

/// Which matmul/conv core suits this adapter: CPU rasterisers (lavapipe) hate barriers,
/// real GPUs want shared-memory tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterClass {
    Cpu,
    Gpu,
}

/// A GPU (or lavapipe) opened for compute: the handle every tensor and kernel lives on. Cheap to
/// clone (shared).
///
/// Ops do not run when called: each one records a dispatch into the device's open command
/// encoder (and its small parameter block into a host arena). [`Device::flush`] submits
/// everything recorded as one command buffer: a training step calls it once, after the optimizer
/// update. Reading a tensor back ([`crate::Tensor::to_vec`], `item`) flushes first and waits, so
/// results are always current; a loop that never flushes or reads still works, but records ever
/// more work (and holds its dropped buffers) until something does. GPU validation errors and
/// device loss surface as [`Error::Gpu`] from the next flush or readback, never as a panic.
///
/// [`Device::new`] picks the adapter (`ATOMGRAD_ADAPTER=<name>` to choose); [`Device::stats`]
/// counts dispatches, submits and allocations; [`Device::set_policy`] holds the op families'
/// kernel choices.
#[derive(Clone)]
pub struct Device {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    pub class: AdapterClass,
    /// Forward matmuls on f16 tensor cores (opt-in, see `set_mixed_precision`).
    mixed: AtomicBool,
    /// Kernel-choice policies of the op families, by type (see [`Device::set_policy`]).
    policies: Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>,
    /// conv2d through im2col and the matmul cores (opt-in, see `set_gemm_conv`).
    gemm_conv: AtomicBool,
    /// Kernels compiled without wgpu's runtime checks (the GPU default, see `set_shader_checks`).
    unchecked: AtomicBool,
    /// Bytes of dropped buffers held for the pending commands before an allocation submits.
    limbo_limit: AtomicU64,
    /// The adapter's cooperative-matrix configurations (printed by `atomgrad info`).
    coop_props: Vec<wgpu::CooperativeMatrixProperties>,
    /// Compiled modules by (the source's address, with wgpu's runtime checks): a source is
    /// `'static`, so its address names it (user kernels may share a built-in file's name).
    modules: Mutex<HashMap<(usize, bool), wgpu::ShaderModule>>,
    /// Compiled pipelines by the hash of what they were compiled from (see [`Device::pipeline`]).
    pipelines: Mutex<HashMap<u64, Vec<CachedPipeline>>>,
    state: Mutex<State>,
    gpu_error: Arc<Mutex<Option<String>>>,
}

#[derive(Default)]
struct State {
    encoder: Option<wgpu::CommandEncoder>,
    pass: Option<wgpu::ComputePass<'static>>,
    /// Per-kernel GPU timing, when on (`Device::set_profiling`).
    prof: Option<Profiler>,
    /// Kernel name -> (dispatches, ms) profiled so far, and the dispatches that went untimed.
    prof_totals: HashMap<String, (u64, f64)>,
    prof_untimed: u64,
    params: Vec<u8>,
    param_chunks: Vec<wgpu::Buffer>,
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    limbo: Vec<(u64, wgpu::Buffer)>,
    /// Bytes in `limbo`: past `Inner::limbo_limit` an allocation submits first (`alloc`).
    limbo_bytes: u64,
    staging: HashMap<u64, Vec<wgpu::Buffer>>,
    bind_groups: HashMap<BindKey, wgpu::BindGroup>,
    stats: Stats,
}

/// Dispatches timed per submit in profiling mode (two timestamps each; wgpu's query-set limit is
/// 4096); later ones in the same submit run untimed and are counted.
const PROFILE_DISPATCHES: usize = 2048;

/// GPU time of one kernel over the dispatches profiled (`Device::profile`).
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    /// `shader::entry`, e.g. `matmul::mm_tiled128`.
    pub name: String,
    pub dispatches: u64,
    /// Sum of the dispatches' GPU times (end minus start timestamp of each one's pass).
    pub ms: f64,
}

struct Profiler {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    /// Kernel names of the timed dispatches recorded since the last submit, in order.
    pending: Vec<String>,
}

/// A compute pipeline and what it was compiled from: file, entry point, override constants (as
/// f64 bits) and whether wgpu's runtime checks are in.
struct CachedPipeline {
    shader: &'static str,
    /// The source's address (see `Inner::modules`).
    source: usize,
    entry: String,
    constants: Vec<(String, u64)>,
    checked: bool,
    pipeline: wgpu::ComputePipeline,
}

impl CachedPipeline {
    fn is(&self, shader: &Shader, entry: &str, constants: &[(&str, f64)], checked: bool) -> bool {
        self.shader == shader.name
            && self.source == shader.source.as_ptr() as usize
            && self.entry == entry
            && self.checked == checked
            && self.constants.len() == constants.len()
            && self.constants.iter().zip(constants).all(|((k, b), (k2, v))| k == k2 && *b == v.to_bits())
    }
}

/// What a dispatch binds: its pipeline, its parameter block and its storage buffers.
#[derive(PartialEq, Eq, Hash)]
struct BindKey {
    pipeline: wgpu::ComputePipeline,
    chunk: usize,
    offset: u64,
    pbytes: u64,
    bufs: Vec<(wgpu::Buffer, u64)>,
}

/// Bind groups kept before the cache starts over.
const BIND_GROUP_CACHE: usize = 1 << 14;

/// Rounds a byte count up to its pool size class: powers of two split into quarters,
/// so no buffer wastes more than 25%.
pub(crate) fn size_class(bytes: u64) -> u64 {
    let b = bytes.max(256);
    let p = 63 - (b - 1).leading_zeros() as u64; // b <= 2^(p+1)
    let base = 1u64 << p;
    let quarter = (base / 4).max(1);
    let steps = (b - base).div_ceil(quarter);
    base + steps * quarter
}

/// Whether the adapter offers what matmul_coop.wgsl needs: 16x16x16 f16 x f16 -> f32 matrices at
/// subgroup scope, subgroups of exactly 32 (the kernel maps invocation t to subgroup t / 32),
/// shader f16 and 45 KiB of workgroup memory.
fn coop16_offered(adapter: &wgpu::Adapter, limits: &wgpu::Limits, features: wgpu::Features) -> bool {
    use wgpu::CooperativeScalarType as T;
    let info = adapter.get_info();
    adapter.features().contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
        && features.contains(wgpu::Features::SHADER_F16)
        && info.subgroup_min_size == 32
        && info.subgroup_max_size == 32
        && limits.max_compute_workgroup_storage_size >= 46080
        && limits.max_compute_invocations_per_workgroup >= 256
        && adapter
            .cooperative_matrix_properties()
            .iter()
            .any(|p| (p.m_size, p.n_size, p.k_size) == (16, 16, 16) && p.ab_type == T::F16 && p.cr_type == T::F32)
}

impl Device {
    /// Opens the best adapter: `ATOMGRAD_ADAPTER=<substring>` picks one by name, otherwise a
    /// discrete GPU beats an integrated one beats a CPU rasteriser.
    pub fn new() -> Result<Device> {
        let wanted = std::env::var("ATOMGRAD_ADAPTER").ok().filter(|s| !s.is_empty());
        Self::open(wanted.as_deref())
    }

    pub fn open(wanted: Option<&str>) -> Result<Device> {
        // Only headless compute: no display handle, Vulkan/Metal/DX12 (GL lacks compute on many drivers).
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::PRIMARY;
        let instance = wgpu::Instance::new(desc);
        let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY));
        let rank = |a: &wgpu::Adapter| match a.get_info().device_type {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Other => 3,
            wgpu::DeviceType::Cpu => 4,
        };
        let adapter = match wanted {
            Some(w) => {
                let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
                adapters.into_iter().find(|a| a.get_info().name.to_lowercase().contains(&w.to_lowercase())).ok_or_else(
                    || Error::Gpu(format!("ATOMGRAD_ADAPTER={w:?} matches no adapter; available: {names:?}")),
                )?
            }
            None => adapters.into_iter().min_by_key(rank).ok_or_else(|| {
                Error::Gpu(
                    "no GPU adapter found (Vulkan, Metal or DX12). On a CPU-only Linux machine \
                     install Mesa's software Vulkan driver: apt-get install mesa-vulkan-drivers libvulkan1"
                        .into(),
                )
            })?,
        };
        let info = adapter.get_info();
        // Ask for the adapter's real limits (WebGPU's defaults cap buffers at 128 MiB).
        let limits = adapter.limits();
        // Optional features are taken when offered, never required.
        let optional = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP;
        let mut features = adapter.features() & optional;
        let coop_props = adapter.cooperative_matrix_properties();
        let coop16 = coop16_offered(&adapter, &limits, features);
        if coop16 {
            features |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("atomgrad"),
            required_features: features,
            required_limits: limits.clone(),
            // SAFETY: wgpu's experimental features are asked for only where the adapter offers
            // the f16 tensor-core configuration matmul_coop.wgsl uses; that kernel runs only when
            // a caller opts in (Variant::Coop16, set_mixed_precision), never by default.
            experimental_features: if coop16 {
                unsafe { wgpu::ExperimentalFeatures::enabled() }
            } else {
                wgpu::ExperimentalFeatures::disabled()
            },
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::Gpu(format!("could not open device on {}: {e}", info.name)))?;
        // Validation errors and device loss become an Error at the next flush instead of a panic.
        let gpu_error = Arc::new(Mutex::new(None::<String>));
        let sink = gpu_error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut s = sink.lock().unwrap();
            if s.is_none() {
                *s = Some(e.to_string());
            }
        }));
        let sink = gpu_error.clone();
        device.set_device_lost_callback(move |reason, msg| {
            let mut s = sink.lock().unwrap();
            if s.is_none() {
                *s = Some(format!("device lost ({reason:?}): {msg}"));
            }
        });
        let class = if info.device_type == wgpu::DeviceType::Cpu { AdapterClass::Cpu } else { AdapterClass::Gpu };
        Ok(Device {
            inner: Arc::new(Inner {
                device,
                queue,
                info,
                limits,
                features,
                class,
                mixed: AtomicBool::new(false),
                coop_props,
                policies: Mutex::default(),
                gemm_conv: AtomicBool::new(false),
                unchecked: AtomicBool::new(class == AdapterClass::Gpu),
                limbo_limit: AtomicU64::new(DEFAULT_LIMBO_LIMIT),
                modules: Mutex::default(),
                pipelines: Mutex::default(),
                state: Mutex::default(),
                gpu_error,
            }),
        })
    }

    /// Whether both handles are the same device.
    pub fn same(&self, other: &Device) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }
    pub fn features(&self) -> wgpu::Features {
        self.inner.features
    }
    pub fn class(&self) -> AdapterClass {
        self.inner.class
    }
    /// Whether `matmul::Variant::Coop16` (f16 x f16 -> f32 cooperative matrices) can run here.
    pub fn has_coop16(&self) -> bool {
        self.inner.features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
    }
    /// Opt-in mixed precision: the forward matmuls of the autodiff tape (`Var::matmul*`) round
    /// their operands to f16 on tensor cores and accumulate in f32; weights, gradients and
    /// optimizer state stay f32. Errors where the adapter has no 16x16 f16 cooperative matrices.
    pub fn set_mixed_precision(&self, on: bool) -> Result<()> {
        if on && !self.has_coop16() {
            return Err(Error::Config(format!(
                "--mixed-precision needs 16x16 f16 cooperative matrices with 32-wide subgroups, which {} does not offer \
                 (`atomgrad info` lists what it has)",
                self.inner.info.name
            )));
        }
        self.inner.mixed.store(on, Ordering::Relaxed);
        Ok(())
    }
    pub fn coop_matrix_properties(&self) -> &[wgpu::CooperativeMatrixProperties] {
        &self.inner.coop_props
    }
    /// Sets (or, with `None`, clears) a kernel-choice policy of type `T` on this device: the op
    /// families define their own policy types and read them with [`Device::policy`] (e.g.
    /// `dev.set_policy(Some(ops::atom::StructureKernel::Gram128))` makes the atom-modeling
    /// structure term use the Gram kernels where they apply). The device stores them without
    /// knowing any kernel family.
    pub fn set_policy<T: Any + Send + Sync + Copy>(&self, value: Option<T>) {
        let mut p = self.inner.policies.lock().unwrap_or_else(|p| p.into_inner());
        match value {
            Some(v) => p.insert(TypeId::of::<T>(), Box::new(v)),
            None => p.remove(&TypeId::of::<T>()),
        };
    }
    /// The policy of type `T` set with [`Device::set_policy`], if any.
    pub fn policy<T: Any + Send + Sync + Copy>(&self) -> Option<T> {
        let p = self.inner.policies.lock().unwrap_or_else(|p| p.into_inner());
        p.get(&TypeId::of::<T>()).and_then(|b| b.downcast_ref::<T>()).copied()
    }
    /// Opt-in: conv2d (`Var::conv2d`, forward and both gradients) through im2col and the matmul
    /// cores; off by default: slower than the direct kernels on the CNN's layers
    /// (docs/PERFORMANCE.md, "Why the code chooses what it chooses").
    pub fn set_gemm_conv(&self, on: bool) {
        self.inner.gemm_conv.store(on, Ordering::Relaxed);
    }
    pub fn gemm_conv(&self) -> bool {
        self.inner.gemm_conv.load(Ordering::Relaxed)
    }
    /// wgpu's runtime checks in the kernels: every index into a workgroup or private array
    /// clamped, a counter in every loop, and buffer indices clamped where the driver lacks robust
    /// buffer access. Off, the kernels compile as written; they guard their own accesses
    /// (`tests/models.rs` trains both forms bit for bit). Off by default on GPUs, where the clamps
    /// and counters sat in the cores' inner loops, on by default on CPU adapters, where they cost
    /// nothing measurable (docs/PERFORMANCE.md, "Why the code chooses what it chooses"). Applies to kernels compiled from then on (each form
    /// is cached apart).
    pub fn set_shader_checks(&self, on: bool) {
        self.inner.unchecked.store(!on, Ordering::Relaxed);
    }
    pub fn shader_checks(&self) -> bool {
        !self.inner.unchecked.load(Ordering::Relaxed)
    }
    /// Bytes of dropped tensors' buffers kept for the commands recorded since the last submit
    /// before an allocation that finds no free buffer submits them (default 1 GiB): bounds the
    /// memory of eager code that records many large ops without a sync. A training step stays
    /// one submit as long as it drops less than this.
    pub fn set_release_limit(&self, bytes: u64) {
        self.inner.limbo_limit.store(bytes, Ordering::Relaxed);
    }
    pub fn mixed_precision(&self) -> bool {
        self.inner.mixed.load(Ordering::Relaxed)
    }
    pub fn wgpu(&self) -> (&wgpu::Device, &wgpu::Queue) {
        (&self.inner.device, &self.inner.queue)
    }
    pub fn stats(&self) -> Stats {
        self.state().stats
    }
    /// Bytes one storage binding may span on this adapter.
    pub fn max_binding(&self) -> u64 {
        self.inner.limits.max_storage_buffer_binding_size.min(self.inner.limits.max_buffer_size)
    }

    /// A one-line description: adapter, backend, driver.
    pub fn describe(&self) -> String {
        let i = &self.inner.info;
        format!("{} ({:?}, {:?}, driver {} {})", i.name, i.backend, i.device_type, i.driver, i.driver_info)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a storage buffer of at least `bytes` from the pool (or creates one).
    pub(crate) fn alloc(&self, op: &'static str, bytes: u64) -> Result<(wgpu::Buffer, u64)> {
        if bytes > self.max_binding() {
            return Err(Error::TooLarge { op, bytes, limit: self.max_binding() });
        }
        let class = size_class(bytes).min(self.max_binding().max(bytes));
        let mut st = self.state();
        if st.free.get(&class).is_none_or(|v| v.is_empty())
            && st.limbo_bytes >= self.inner.limbo_limit.load(Ordering::Relaxed)
        {
            // Eager code that never syncs (a benchmark loop) would otherwise hold every dropped
            // buffer until its next sync: submit what is recorded so they can be reused.
            drop(st);
            self.flush()?;
            st = self.state();
        }
        if let Some(b) = st.free.get_mut(&class).and_then(|v| v.pop()) {
            return Ok((b, class));
        }
        st.stats.buffers_created += 1;
        st.stats.bytes_created += class;
        drop(st);
        // STORAGE for kernels, COPY_SRC for readback, COPY_DST for uploads and clears.
        let buf = self.inner.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(op),
            size: class,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok((buf, class))
    }

    /// Returns a buffer; it becomes reusable after the pending commands are submitted.
    pub(crate) fn release(&self, class: u64, buf: wgpu::Buffer) {
        let mut st = self.state();
        st.limbo_bytes += class;
        st.limbo.push((class, buf));
    }

    /// Writes host data into a buffer that no pending command uses (fresh from the pool).
    pub(crate) fn upload(&self, buf: &wgpu::Buffer, data: &[u8]) {
        if !data.is_empty() {
            // Queue writes land before the next submit; the buffer is not in the open encoder.
            self.inner.queue.write_buffer(buf, 0, data);
        }
    }

    fn module(&self, shader: &'static Shader, checked: bool) -> wgpu::ShaderModule {
        let mut m = self.inner.modules.lock().unwrap();
        m.entry((shader.source.as_ptr() as usize, checked))
            .or_insert_with(|| {
                // Compiled once per device and form; naga validates it (tests validate every file too).
                let desc = wgpu::ShaderModuleDescriptor {
                    label: Some(shader.name),
                    source: wgpu::ShaderSource::Wgsl(shader.source_for(self.inner.class)),
                };
                if checked {
                    self.inner.device.create_shader_module(desc)
                } else {
                    // SAFETY: every kernel bounds its own indices and loops; the tests check the
                    // unchecked form against the checked one (`set_shader_checks`).
                    unsafe {
                        self.inner.device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
                    }
                }
            })
            .clone()
    }

    /// The compute pipeline for `shader::entry` with override constants, compiled with wgpu's
    /// runtime checks or without (`checked`), created once.
    fn pipeline(
        &self,
        shader: &'static Shader,
        entry: &str,
        constants: &[(&str, f64)],
        checked: bool,
    ) -> wgpu::ComputePipeline {
        // Looked up on every dispatch, so by a hash of the parts (no string built, no float
        // formatted: that was a third of a small op's host time) and compared part by part.
        let mut h = std::hash::DefaultHasher::new();
        (shader.name, shader.source.as_ptr() as usize, entry, checked).hash(&mut h);
        for (k, v) in constants {
            (k, v.to_bits()).hash(&mut h);
        }
        let hash = h.finish();
        let cached = self
            .inner
            .pipelines
            .lock()
            .unwrap()
            .get(&hash)
            .and_then(|ps| ps.iter().find(|c| c.is(shader, entry, constants, checked)).map(|c| c.pipeline.clone()));
        if let Some(p) = cached {
            return p;
        }
        let mut label = format!("{}::{entry}", shader.name);
        for (k, v) in constants {
            label.push_str(&format!(";{k}={v}"));
        }
        if !checked {
            label.push_str(";unchecked");
        }
        let module = self.module(shader, checked);
        let p = self.inner.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: None, // derived from the shader: binding 0 = params, 1.. = storage
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        self.inner.pipelines.lock().unwrap().entry(hash).or_default().push(CachedPipeline {
            shader: shader.name,
            source: shader.source.as_ptr() as usize,
            entry: entry.to_string(),
            constants: constants.iter().map(|(k, v)| (k.to_string(), v.to_bits())).collect(),
            checked,
            pipeline: p.clone(),
        });
        p
    }

    /// Records one dispatch: `params` goes to binding 0 (uniform), `bufs` to bindings 1..
    /// as `(buffer, bytes bound)`. Nothing runs until [`Device::flush`].
    pub(crate) fn dispatch(
        &self,
        shader: &'static Shader,
        entry: &str,
        constants: &[(&str, f64)],
        params: &[u8],
        bufs: &[(&wgpu::Buffer, u64)],
        groups: [u32; 3],
    ) {
        self.dispatch_form(shader, entry, constants, params, bufs, groups, self.shader_checks())
    }

    /// [`Device::dispatch`] compiled with wgpu's runtime checks or without (`checked`): user
    /// kernels ([`crate::kernel`]) always run checked, whatever [`Device::set_shader_checks`] says.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn dispatch_form(
        &self,
        shader: &'static Shader,
        entry: &str,
        constants: &[(&str, f64)],
        params: &[u8],
        bufs: &[(&wgpu::Buffer, u64)],
        groups: [u32; 3],
        checked: bool,
    ) {
        assert!(params.len() as u64 <= PARAM_BLOCK, "parameter block of {entry} too large");
        if groups.contains(&0) {
            return;
        }
        let pipeline = self.pipeline(shader, entry, constants, checked);
        let mut st = self.state();
        let at = st.params.len() as u64;
        let chunk = (at / PARAM_CHUNK) as usize;
        while st.param_chunks.len() <= chunk {
            // A new parameter chunk; kept and reused by every later step. Bound as a uniform
            // buffer on GPUs and as read-only storage on CPU adapters (Shader::source_for).
            let binding = match self.inner.class {
                AdapterClass::Gpu => wgpu::BufferUsages::UNIFORM,
                AdapterClass::Cpu => wgpu::BufferUsages::STORAGE,
            };
            let b = self.inner.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("params"),
                size: PARAM_CHUNK,
                usage: binding | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            st.param_chunks.push(b);
        }
        st.params.extend_from_slice(params);
        st.params.resize((at + PARAM_BLOCK) as usize, 0);
        let pbytes = (params.len() as u64).max(16).next_multiple_of(16);
        // Bind groups are cached: a training step records the same dispatches on the same pooled
        // buffers at the same parameter offsets every time, so after the first step every lookup
        // hits and the step creates no bind group (pool buffers and parameter chunks live as long
        // as the device, so a cached group never keeps a freed buffer alive).
        let key = BindKey {
            pipeline: pipeline.clone(),
            chunk,
            offset: at % PARAM_CHUNK,
            pbytes,
            bufs: bufs.iter().map(|(b, n)| ((*b).clone(), *n)).collect(),
        };
        let bg = match st.bind_groups.get(&key) {
            Some(bg) => bg.clone(),
            None => {
                let layout = pipeline.get_bind_group_layout(0);
                let mut entries = Vec::with_capacity(bufs.len() + 1);
                entries.push(wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &st.param_chunks[chunk],
                        offset: at % PARAM_CHUNK,
                        size: wgpu::BufferSize::new(pbytes),
                    }),
                });
                for (i, (b, bytes)) in bufs.iter().enumerate() {
                    entries.push(wgpu::BindGroupEntry {
                        binding: i as u32 + 1,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: b,
                            offset: 0,
                            size: wgpu::BufferSize::new((*bytes).max(4)),
                        }),
                    });
                }
                let bg = self.inner.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: None,
                    layout: &layout,
                    entries: &entries,
                });
                if st.bind_groups.len() >= BIND_GROUP_CACHE {
                    // Shapes changed a lot (e.g. evaluation after training): start over.
                    st.bind_groups.clear();
                }
                st.bind_groups.insert(key, bg.clone());
                st.stats.bind_groups_created += 1;
                bg
            }
        };
        st.stats.dispatches += 1;
        if st.prof.is_none() {
            let pass = self.pass(&mut st);
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bg, &[]);
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
            return;
        }
        // Profiling: a pass of its own, with timestamps at its start and end.
        st.pass = None;
        let st = &mut *st;
        let enc = st.encoder.get_or_insert_with(|| {
            self.inner.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("step") })
        });
        let prof = st.prof.as_mut().expect("profiling is on");
        let slot = prof.pending.len() as u32;
        let timed = prof.pending.len() < PROFILE_DISPATCHES;
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: None,
            timestamp_writes: timed.then_some(wgpu::ComputePassTimestampWrites {
                query_set: &prof.queries,
                beginning_of_pass_write_index: Some(2 * slot),
                end_of_pass_write_index: Some(2 * slot + 1),
            }),
        });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        drop(pass);
        if timed {
            prof.pending.push(format!("{}::{entry}", shader.name));
        } else {
            st.prof_untimed += 1;
        }
    }

    fn pass<'a>(&self, st: &'a mut State) -> &'a mut wgpu::ComputePass<'static> {
        if st.pass.is_none() {
            let enc = st.encoder.get_or_insert_with(|| {
                self.inner.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("step") })
            });
            // One long compute pass; wgpu inserts the barriers between dependent dispatches.
            let pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
            st.pass = Some(pass.forget_lifetime());
        }
        st.pass.as_mut().unwrap()
    }

    fn encoder<'a>(&self, st: &'a mut State) -> &'a mut wgpu::CommandEncoder {
        st.pass = None; // copies and clears happen outside the compute pass
        st.encoder.get_or_insert_with(|| {
            self.inner.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("step") })
        })
    }

    /// Records zero-filling the first `bytes` of a buffer.
    pub(crate) fn clear(&self, buf: &wgpu::Buffer, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let mut st = self.state();
        self.encoder(&mut st).clear_buffer(buf, 0, Some(bytes.next_multiple_of(4)));
    }

    /// Records a buffer-to-buffer copy.
    pub(crate) fn copy(&self, src: &wgpu::Buffer, src_off: u64, dst: &wgpu::Buffer, dst_off: u64, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let mut st = self.state();
        self.encoder(&mut st).copy_buffer_to_buffer(src, src_off, dst, dst_off, bytes);
    }

    /// Submits everything recorded so far as one command buffer (in profiling mode, also waits
    /// for it and adds up its dispatches' GPU times).
    pub fn flush(&self) -> Result<()> {
        let mut st = self.state();
        st.pass = None;
        if let Some(mut enc) = st.encoder.take() {
            let timed = st.prof.as_ref().map_or(0, |p| p.pending.len() as u64);
            if let Some(prof) = st.prof.as_ref().filter(|_| timed > 0) {
                // The timestamps into a mappable buffer, behind the step's commands.
                enc.resolve_query_set(&prof.queries, 0..2 * timed as u32, &prof.resolve, 0);
                enc.copy_buffer_to_buffer(&prof.resolve, 0, &prof.readback, 0, 16 * timed);
            }
            // The parameter arena goes up in one write per chunk, ahead of the commands that read it.
            let params = std::mem::take(&mut st.params);
            for (i, c) in params.chunks(PARAM_CHUNK as usize).enumerate() {
                self.inner.queue.write_buffer(&st.param_chunks[i], 0, c);
            }
            let t = std::time::Instant::now();
            let commands = enc.finish();
            let t1 = std::time::Instant::now();
            self.inner.queue.submit([commands]);
            st.stats.encode_ns += (t1 - t).as_nanos() as u64;
            st.stats.submit_ns += t1.elapsed().as_nanos() as u64;
            st.params = params;
            st.params.clear();
            st.stats.submits += 1;
            if timed > 0 {
                self.collect_profile(&mut st, timed)?;
            }
        }
        let limbo = std::mem::take(&mut st.limbo);
        st.limbo_bytes = 0;
        let mut touched = Vec::new();
        for (class, b) in limbo {
            st.free.entry(class).or_default().push(b);
            touched.push(class);
        }
        // Free lists in a fixed order, so a step that allocates what the last one did gets the
        // same buffers in the same places, and its bind groups come from the cache.
        touched.sort_unstable();
        touched.dedup();
        for class in touched {
            if let Some(v) = st.free.get_mut(&class) {
                v.sort_unstable_by(|a, b| b.cmp(a));
            }
        }
        drop(st);
        self.check()
    }

    /// Waits for the submit that resolved `timed` dispatches' timestamps and adds each one's
    /// time to its kernel.
    fn collect_profile(&self, st: &mut State, timed: u64) -> Result<()> {
        let prof = st.prof.as_mut().expect("profiling is on");
        let totals = &mut st.prof_totals;
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&self.map_read(&prof.readback, 16 * timed)?);
        let ns_per_tick = self.inner.queue.get_timestamp_period() as f64;
        for (name, t) in prof.pending.drain(..).zip(ticks.chunks_exact(2)) {
            let e = totals.entry(name).or_default();
            e.0 += 1;
            e.1 += t[1].saturating_sub(t[0]) as f64 * ns_per_tick * 1e-6;
        }
        Ok(())
    }

    /// Profiling mode: each dispatch runs in a compute pass of its own with GPU timestamps at
    /// its start and end, and every flush waits for the GPU and adds the times up per kernel
    /// (`profile`). Far slower than normal recording (a pass per dispatch, a wait per submit): it
    /// shows where a step's time goes, it does not time the step. Needs timestamp queries
    /// (`atomgrad info`); switching it off keeps the totals until `reset_profile`.
    pub fn set_profiling(&self, on: bool) -> Result<()> {
        if on == self.state().prof.is_some() {
            return Ok(());
        }
        // What is recorded so far is timed (or not) as it was recorded.
        self.flush()?;
        if !on {
            self.state().prof = None;
            return Ok(());
        }
        if !self.inner.features.contains(wgpu::Features::TIMESTAMP_QUERY) {
            return Err(Error::Config(format!(
                "profiling needs timestamp queries, which {} does not offer",
                self.inner.info.name
            )));
        }
        let d = &self.inner.device;
        let bytes = 16 * PROFILE_DISPATCHES as u64;
        let prof = Profiler {
            queries: d.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("profile"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * PROFILE_DISPATCHES as u32,
            }),
            resolve: d.create_buffer(&wgpu::BufferDescriptor {
                label: Some("profile resolve"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            readback: d.create_buffer(&wgpu::BufferDescriptor {
                label: Some("profile readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            pending: Vec::new(),
        };
        self.state().prof = Some(prof);
        Ok(())
    }

    /// GPU time per kernel profiled so far, most first, and the dispatches that went untimed
    /// (more than 2048 in one submit).
    pub fn profile(&self) -> (Vec<KernelTime>, u64) {
        let st = self.state();
        let mut v: Vec<KernelTime> =
            st.prof_totals.iter().map(|(k, &(n, ms))| KernelTime { name: k.clone(), dispatches: n, ms }).collect();
        v.sort_by(|a, b| b.ms.total_cmp(&a.ms).then_with(|| a.name.cmp(&b.name)));
        (v, st.prof_untimed)
    }

    /// Forgets the profiled times.
    pub fn reset_profile(&self) {
        let mut st = self.state();
        st.prof_totals.clear();
        st.prof_untimed = 0;
    }

    /// Reports a GPU validation error or device loss seen since the last check.
    pub fn check(&self) -> Result<()> {
        match self.inner.gpu_error.lock().unwrap().take() {
            Some(e) => Err(Error::Gpu(e)),
            None => Ok(()),
        }
    }

    /// Copies `bytes` from a buffer back to the host: records the copy, submits, waits.
    pub(crate) fn read(&self, src: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let class = size_class(bytes);
        let staging = self.state().staging.get_mut(&class).and_then(|v| v.pop());
        let staging = staging.unwrap_or_else(|| {
            self.inner.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: class,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        self.copy(src, 0, &staging, 0, bytes);
        self.flush()?;
        self.state().stats.readbacks += 1;
        let out = self.map_read(&staging, bytes)?;
        self.state().staging.entry(class).or_default().push(staging);
        self.check()?;
        Ok(out)
    }

    /// The first `bytes` of a MAP_READ buffer whose copy is submitted: maps it, blocks until the
    /// GPU has finished and the map callback has run, copies, unmaps.
    fn map_read(&self, buf: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        let slice = buf.slice(0..bytes);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.inner
            .device
            .poll(wgpu::PollType::Wait { submission_index: None, timeout: None })
            .map_err(|e| Error::Gpu(format!("waiting for the GPU failed: {e}")))?;
        rx.recv()
            .map_err(|_| Error::Gpu("readback callback never ran".into()))?
            .map_err(|e| Error::Gpu(format!("mapping a readback buffer failed: {e}")))?;
        let out = slice
            .get_mapped_range()
            .map_err(|e| Error::Gpu(format!("reading a mapped buffer failed: {e:?}")))?
            .to_vec();
        buf.unmap();
        Ok(out)
    }

    /// Waits until the GPU has finished everything submitted.
    pub fn sync(&self) -> Result<()> {
        self.flush()?;
        self.inner
            .device
            .poll(wgpu::PollType::Wait { submission_index: None, timeout: None })
            .map_err(|e| Error::Gpu(format!("waiting for the GPU failed: {e}")))?;
        self.check()
    }
}

/// Workgroup counts for `n` invocations of a 1-D kernel with `wg` lanes, folded into y when x
/// would pass the 65535 limit. Kernels rebuild the index as `gid.x + gid.y * nwg.x * wg`.
pub(crate) fn groups_1d(n: usize, wg: u32) -> [u32; 3] {
    let g = (n as u64).div_ceil(wg as u64);
    if g <= 65535 {
        [g as u32, 1, 1]
    } else {
        let y = g.div_ceil(65535);
        [g.div_ceil(y) as u32, y as u32, 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn size_classes_round_up_within_a_quarter() {
        assert_eq!(size_class(1), 256);
        assert_eq!(size_class(256), 256);
        assert_eq!(size_class(257), 320);
        assert_eq!(size_class(1000), 1024);
        assert_eq!(size_class(1025), 1280);
        for b in [300u64, 4097, 1 << 20, (1 << 20) + 1, 123_456_789] {
            let c = size_class(b);
            assert!(c >= b && (c as f64) <= b as f64 * 1.25 + 64.0, "{b} -> {c}");
        }
    }
    #[test]
    fn groups_fold_past_the_dimension_limit() {
        assert_eq!(groups_1d(10, 256), [1, 1, 1]);
        let g = groups_1d(256 * 70000, 256);
        assert!(g[0] <= 65535 && g[0] as u64 * g[1] as u64 >= 70000);
    }
}
