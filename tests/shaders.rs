//! Every `.wgsl` file in `shaders/` parses, validates and translates to SPIR-V with naga (what
//! wgpu runs on Vulkan).

#[test]
fn every_shader_validates_with_naga() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "wgsl"));
    files.sort();
    assert!(!files.is_empty(), "no shaders found in {}", dir.display());
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
        // With the index clamping wgpu's Vulkan backend asks for.
        let restrict = naga::proc::BoundsCheckPolicy::Restrict;
        let opts = naga::back::spv::Options {
            bounds_check_policies: naga::proc::BoundsCheckPolicies {
                index: restrict,
                buffer: restrict,
                image_load: restrict,
                binding_array: naga::proc::BoundsCheckPolicy::Unchecked,
            },
            ..Default::default()
        };
        if let Err(e) = naga::back::spv::write_vec(&module, &info, &opts, None) {
            failures.push(format!("{}: SPIR-V output: {e}", path.display()));
        }
        // Each file opens with a comment saying what it computes, its bindings and workgroup layout.
        assert!(src.starts_with("//"), "{} must open with a comment describing it", path.display());
        assert!(src.contains("Bindings"), "{} must document its bindings", path.display());
        assert!(src.contains("Workgroup"), "{} must document its workgroup layout", path.display());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
