//! Every `.wgsl` file in `shaders/` parses, validates and translates with naga to SPIR-V (what
//! wgpu runs on Vulkan), and each of its entry points to MSL and HLSL (Metal, DX12).

/// Every `.wgsl` file under `shaders/`, sorted.
fn wgsl_files() -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "wgsl"));
    files.sort();
    files
}

#[test]
fn every_shader_validates_with_naga() {
    let files = wgsl_files();
    assert!(!files.is_empty(), "no shaders found in shaders/");
    let mut failures = Vec::new();
    for path in &files {
        let src = std::fs::read_to_string(path).unwrap();
        let module = match naga::front::wgsl::parse_str(&src) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{}: {}", path.display(), e.emit_to_string(&src)));
                continue;
            }
        };
        let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all());
        let info = match v.validate(&module) {
            Ok(info) => info,
            Err(e) => {
                failures.push(format!("{}: {}", path.display(), e.emit_to_string(&src)));
                continue;
            }
        };
        // And translates to SPIR-V, what wgpu hands Vulkan drivers (catches backend-only gaps,
        // e.g. in the cooperative-matrix kernel that lavapipe cannot run).
        // Override constants keep their defaults here, as they do in pipelines that set none.
        let (module, info) =
            match naga::back::pipeline_constants::process_overrides(&module, &info, None, &Default::default()) {
                Ok(r) => r,
                Err(e) => {
                    failures.push(format!("{}: override constants: {e}", path.display()));
                    continue;
                }
            };
        // With the index clamping wgpu's Vulkan backend asks for (CPU adapters) and without it
        // (GPUs, `Device::set_shader_checks`).
        for policy in [naga::proc::BoundsCheckPolicy::Restrict, naga::proc::BoundsCheckPolicy::Unchecked] {
            let opts = naga::back::spv::Options {
                bounds_check_policies: naga::proc::BoundsCheckPolicies {
                    index: policy,
                    buffer: policy,
                    image_load: policy,
                    binding_array: naga::proc::BoundsCheckPolicy::Unchecked,
                },
                ..Default::default()
            };
            if let Err(e) = naga::back::spv::write_vec(&module, &info, &opts, None) {
                failures.push(format!("{}: SPIR-V output ({policy:?}): {e}", path.display()));
            }
        }
        // Each file opens with a comment saying what it computes, its bindings and workgroup layout.
        assert!(src.starts_with("//"), "{} must open with a comment describing it", path.display());
        assert!(src.contains("Bindings"), "{} must document its bindings", path.display());
        assert!(src.contains("Workgroup"), "{} must document its workgroup layout", path.display());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Each entry point of every kernel translates to Metal Shading Language and to HLSL, what wgpu
/// hands Metal and DX12 (wgpu builds those writers only on macOS and Windows, so without this a
/// user there would meet a backend gap first), with its override constants at their defaults and
/// the oldest language versions the writers target (MSL 1.0, shader model 5.1). The
/// cooperative-matrix kernel is Vulkan-only (the device enables it only where the adapter reports
/// 16x16 f16 matrices, which Metal's 8x8 simdgroup matrices are not) and is skipped.
#[test]
fn every_kernel_translates_to_msl_and_hlsl() {
    let files = wgsl_files();
    let mut failures = Vec::new();
    let mut translated = 0;
    for path in &files {
        let src = std::fs::read_to_string(path).unwrap();
        if src.contains("enable wgpu_cooperative_matrix;") {
            continue;
        }
        let module = naga::front::wgsl::parse_str(&src).unwrap();
        let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all());
        let info = v.validate(&module).unwrap();
        for ep in &module.entry_points {
            let name = format!("{}::{}", path.file_stem().unwrap().to_string_lossy(), ep.name);
            let (m, i) = naga::back::pipeline_constants::process_overrides(
                &module,
                &info,
                Some((ep.stage, &ep.name)),
                &Default::default(),
            )
            .unwrap();
            let msl = naga::back::msl::Options::default();
            let msl_pipeline = naga::back::msl::PipelineOptions {
                entry_point: Some((ep.stage, ep.name.clone())),
                ..Default::default()
            };
            if let Err(e) = naga::back::msl::write_string(&m, &i, &msl, &msl_pipeline) {
                failures.push(format!("{name}: MSL: {e}"));
            }
            let hlsl = naga::back::hlsl::Options::default();
            let hlsl_pipeline = naga::back::hlsl::PipelineOptions { entry_point: Some((ep.stage, ep.name.clone())) };
            let mut out = String::new();
            if let Err(e) = naga::back::hlsl::Writer::new(&mut out, &hlsl, &hlsl_pipeline).write(&m, &i, None) {
                failures.push(format!("{name}: HLSL: {e}"));
            }
            translated += 1;
        }
    }
    eprintln!("{translated} entry points translated");
    assert!(translated > 50, "only {translated} entry points found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The form CPU adapters compile (`Shader::source_for`: the parameter block as read-only storage,
/// copied into a private `p` as every entry point starts) validates too, every file declares its
/// block the one way that rewrite finds, and every entry point gets the copy.
#[test]
fn every_shader_validates_in_its_cpu_form() {
    use atomgrad::device::{AdapterClass, Shader, PARAMS_UNIFORM};
    let files = wgsl_files();
    let mut failures = Vec::new();
    for path in &files {
        let source: &'static str = Box::leak(std::fs::read_to_string(path).unwrap().into_boxed_str());
        let name = path.display().to_string();
        if source.contains("var<uniform>") && source.matches(PARAMS_UNIFORM).count() != 1 {
            failures.push(format!("{name}: its uniform block must be declared exactly as `{PARAMS_UNIFORM}`"));
            continue;
        }
        if source.contains("enable wgpu_cooperative_matrix;") {
            continue; // GPU-only kernel
        }
        let cpu = Shader { name: "test", source }.source_for(AdapterClass::Cpu);
        let module = match naga::front::wgsl::parse_str(&cpu) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{name} (CPU form): {}", e.emit_to_string(&cpu)));
                continue;
            }
        };
        let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all());
        if let Err(e) = v.validate(&module) {
            failures.push(format!("{name} (CPU form): {}", e.emit_to_string(&cpu)));
        }
        if source.contains(PARAMS_UNIFORM) {
            let copies = cpu.matches("p = p_in;").count();
            if copies != module.entry_points.len() || cpu.contains("var<uniform>") {
                failures
                    .push(format!("{name}: {copies} parameter copies for {} entry points", module.entry_points.len()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
