//! The CUDA module registry checked without a GPU: every kernel the Rust
//! side launches by name is registered in src/cuda/mod.rs, and every
//! registered kernel is an `extern "C" __global__` function of the registered
//! kernels/<module>.cu. A typo here would otherwise surface only on a GPU.
use std::collections::BTreeSet;
use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A kernel source with each declaration's `__launch_bounds__(…)` taken
/// out, so that `__global__ void name(` finds a kernel however its
/// declaration is wrapped.
fn without_bounds(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("__launch_bounds__(") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        rest = after[after.find(')').expect("a closed __launch_bounds__") + 1..].trim_start();
    }
    out.push_str(rest);
    out
}

/// Every file of src/cuda that launches kernels: all but driver.rs, which
/// defines `launcher(` itself.
fn cuda_host_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(Path::new(ROOT).join("src/cuda"))
        .expect("src/cuda/")
        .map(|e| e.expect("a directory entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".rs") && name != "driver.rs")
        .map(|name| format!("src/cuda/{name}"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "{files:?}");
    files
}

/// The contents of every `"..."` string literal in `text`.
fn literals(text: &str) -> Vec<String> {
    text.split('"').skip(1).step_by(2).map(str::to_string).collect()
}

#[test]
fn every_launched_kernel_is_registered_and_defined() {
    let registry = read("src/cuda/mod.rs");
    let start = registry.find("const MODULES").expect("MODULES in src/cuda/mod.rs");
    let end = start + registry[start..].find("];").expect("end of MODULES");
    let mut registered = BTreeSet::new();
    // Entries are ("module", fatbin!("module"), &["kernel", ...]), however rustfmt wraps them.
    let block = &registry[start..end];
    for piece in block.split("fatbin!(\"").skip(1) {
        let module = &piece[..piece.find('"').unwrap()];
        let list = &piece[piece.find("&[").expect("kernel list")..];
        let list = &list[..list.find(']').expect("end of kernel list")];
        let source = without_bounds(&read(&format!("kernels/{module}.cu")));
        for kernel in literals(list) {
            assert!(
                source.contains(&format!("__global__ void {kernel}(")),
                "kernel {kernel} is registered for kernels/{module}.cu but not defined there"
            );
            assert!(registered.insert(kernel.clone()), "kernel {kernel} registered twice");
        }
    }
    assert!(registered.len() > 20, "registry parsed: {registered:?}");
    // Names passed to `launcher`, directly or through a `let name = ...` choice.
    for file in cuda_host_files() {
        let file = file.as_str();
        let text = read(file);
        for (i, piece) in text.split("launcher(\"").chain(text.split("f_opt_in(\"").skip(1)).enumerate().skip(1) {
            let name = &piece[..piece.find('"').unwrap()];
            assert!(registered.contains(name), "{file}: launch #{i} names unregistered kernel {name}");
        }
        for line in text.lines().filter(|l| l.trim_start().starts_with("let name = if")) {
            for name in literals(line) {
                assert!(registered.contains(&name), "{file}: unregistered kernel {name}");
            }
        }
    }
}

/// Parameters of `__global__ void name(...)` in the kernels' sources.
fn cuda_param_count(name: &str) -> Option<usize> {
    for entry in std::fs::read_dir(Path::new(ROOT).join("kernels")).unwrap() {
        let text = without_bounds(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
        if let Some(at) = text.find(&format!("__global__ void {name}(")) {
            let rest = &text[at..];
            let params = &rest[rest.find('(').unwrap() + 1..rest.find(')').unwrap()];
            return Some(if params.trim().is_empty() { 0 } else { params.split(',').count() });
        }
    }
    None
}

/// cudarc does not check kernel arguments: a launch that pushes a different
/// number of arguments than the kernel takes reads garbage on the GPU. Each
/// launch (from `launcher(…)` to its `.launch(`) must push as many
/// `.arg(…)` as the kernel has parameters; a padded weight's `.push_to(…)`
/// pushes one. (The emulator checks the kinds too, but only of the launches
/// a test makes; this covers every launch in the source.)
#[test]
fn every_launch_passes_as_many_arguments_as_its_kernel_takes() {
    let mut checked = 0;
    for file in cuda_host_files() {
        let file = file.as_str();
        let text = read(file);
        for piece in text.split("launcher(").skip(1) {
            let span = &piece[..piece.find(".launch(").unwrap_or_else(|| panic!("{file}: launch without .launch("))];
            // The kernel: named in the call (`launcher("name")`, `launcher(if
            // … { "a" } else { "b" })`), or a variable chosen on the nearest
            // line before it (`self.f_opt_in("a", …)`, `let name = if …`).
            let first_line = span.lines().next().unwrap_or("");
            let names: Vec<String> = if first_line.contains('"') {
                literals(first_line)
            } else {
                let before = &text[..text.find(span).unwrap()];
                let line = before
                    .lines()
                    .rev()
                    .find(|l| (l.contains("let name = if") || l.contains(".f_opt_in(")) && l.contains('"'))
                    .expect("a kernel name choice before the launch");
                literals(line)
            };
            let pushed = span.matches(".arg(").count() + span.matches(".push_to(").count();
            for name in names {
                let want = cuda_param_count(&name).unwrap_or_else(|| panic!("{file}: no kernel {name}"));
                assert_eq!(pushed, want, "{file}: launch of {name} pushes {pushed} arguments, the kernel takes {want}");
                checked += 1;
            }
        }
    }
    assert!(checked > 25, "only {checked} launches found");
}

/// Every `extern "C" __global__` kernel in kernels/*.cu is launched by a
/// test on the CPU emulator (tests/emulated_*.rs), so a new kernel cannot
/// land without one.
#[test]
fn every_kernel_has_an_emulated_test() {
    let tests = read("tests/emulated_kernels.rs") + &read("tests/emulated_layers.rs");
    let launched: BTreeSet<String> = literals(&tests).into_iter().collect();
    let marker = "extern \"C\" __global__ void ";
    let mut missing = Vec::new();
    let mut kernels = 0;
    for entry in std::fs::read_dir(Path::new(ROOT).join("kernels")).expect("kernels/") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_none_or(|x| x != "cu") {
            continue;
        }
        let source = without_bounds(&std::fs::read_to_string(&path).expect("a kernel source"));
        for piece in source.split(marker).skip(1) {
            let name = piece[..piece.find('(').expect("a parameter list")].trim().to_string();
            kernels += 1;
            if !launched.contains(&name) {
                missing.push(name);
            }
        }
    }
    assert!(kernels >= 30, "parsed {kernels} kernels");
    assert!(missing.is_empty(), "kernels without a test in tests/emulated_*.rs: {missing:?}");
}
