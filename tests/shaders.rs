//! Every `.wgsl` file in `shaders/` parses and validates with naga (the same front end wgpu uses).

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
        if let Err(e) = v.validate(&module) {
            failures.push(format!("{}: {}", path.display(), e.emit_to_string(&src)));
        }
        // Each file opens with a comment saying what it computes, its bindings and workgroup layout.
        assert!(src.starts_with("//"), "{} must open with a comment describing it", path.display());
        assert!(src.contains("Bindings"), "{} must document its bindings", path.display());
        assert!(src.contains("Workgroup"), "{} must document its workgroup layout", path.display());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
