//! Compiles every ../../kernels/*.cu as C++ against include/ (the CUDA
//! dialect, bfloat16 and WMMA for the CPU) plus src/runtime.cpp (the
//! scheduler), and generates the registry: one table per module of its
//! `extern "C" __global__` kernels, found in the source text.
use std::fmt::Write as _;
use std::path::PathBuf;

/// The `extern "C" __global__` kernels of a source: each name with the
/// expression of its `__launch_bounds__` (the most threads a block may
/// have), which every kernel must declare.
fn kernels(file: &str, source: &str) -> Vec<(String, String)> {
    let marker = "extern \"C\" __global__ void ";
    let bounds = "__launch_bounds__(";
    source
        .match_indices(marker)
        .map(|(at, _)| {
            let rest = source[at + marker.len()..].trim_start();
            let Some(inner) = rest.strip_prefix(bounds) else {
                let name = rest[..rest.find('(').unwrap_or(rest.len())].trim();
                panic!(
                    "{file}: kernel {name} declares no __launch_bounds__(IWTVAE_MAX_THREADS): every kernel states the \
                     largest block it runs with"
                );
            };
            let close = inner.find(')').unwrap_or_else(|| panic!("{file}: unclosed __launch_bounds__("));
            let rest = inner[close + 1..].trim_start();
            let name = rest[..rest.find('(').unwrap_or(rest.len())].trim();
            (name.to_string(), inner[..close].trim().to_string())
        })
        .collect()
}

fn main() {
    let here = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let kernels_dir = here.join("../../kernels").canonicalize().expect("the iwtvae repository's kernels/ folder");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    println!("cargo::rerun-if-changed={}", kernels_dir.display());
    println!("cargo::rerun-if-changed=include");
    println!("cargo::rerun-if-changed=src/runtime.cpp");
    println!("cargo::rerun-if-changed=src/fake_driver.cpp");

    let mut sources: Vec<PathBuf> = std::fs::read_dir(&kernels_dir)
        .expect("reading kernels/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    sources.sort();

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++20")
        .opt_level(2)
        .include(here.join("include"))
        .include(&kernels_dir)
        .flag("-include")
        .flag(here.join("include/cuda_emu.h").to_str().expect("utf-8 path"))
        .flag_if_supported("-Wno-unknown-pragmas")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-ffp-contract=off")
        .file(here.join("src/runtime.cpp"));
    let mut registry = String::from("#include \"emu_registry.h\"\n#include <string.h>\n");
    let mut modules = Vec::new();
    for cu in &sources {
        let stem = cu.file_stem().expect("file name").to_string_lossy().into_owned();
        let text = std::fs::read_to_string(cu).expect("reading a kernel source");
        let names = kernels(&cu.display().to_string(), &text);
        if names.is_empty() {
            continue;
        }
        let mut unit = format!(
            "#include \"{}\"\n#include \"emu_registry.h\"\nstatic const emu::Entry entries[] = {{\n",
            cu.display()
        );
        for (n, max_threads) in &names {
            writeln!(unit, "  emu::entry(\"{n}\", &{n}, {max_threads}),").expect("write to String");
        }
        writeln!(
            unit,
            "}};\nextern \"C\" const emu::Entry* emu_module_{stem}(size_t* n) {{\n  *n = sizeof(entries) / sizeof(entries[0]);\n  return entries;\n}}"
        )
        .expect("write to String");
        let path = out.join(format!("emu_{stem}.cpp"));
        std::fs::write(&path, unit).expect("writing a generated unit");
        build.file(path);
        writeln!(registry, "extern \"C\" const emu::Entry* emu_module_{stem}(size_t* n);").expect("write to String");
        modules.push(stem);
    }
    registry
        .push_str("namespace emu {\nconst Entry* find_kernel(const char* name) {\n  size_t n;\n  const Entry* e;\n");
    for m in &modules {
        writeln!(
            registry,
            "  e = emu_module_{m}(&n);\n  for (size_t i = 0; i < n; ++i)\n    if (strcmp(e[i].name, name) == 0) return &e[i];"
        )
        .expect("write to String");
    }
    registry.push_str("  return nullptr;\n}\n}  // namespace emu\n");
    let path = out.join("emu_registry.cpp");
    std::fs::write(&path, registry).expect("writing the registry");
    build.file(path);
    build.compile("iwtvae_cuda_emu");

    // The stand-in libcuda.so (src/fake_driver.cpp) over the same archive.
    // Optional: without it the tests that need it say so and skip.
    let dir = match fake_driver(&here, &out) {
        Ok(dir) => dir.display().to_string(),
        Err(why) => {
            println!("cargo::warning=cuda-emu: the fake libcuda.so was not built ({why}); its tests will skip");
            String::new()
        }
    };
    println!("cargo::rustc-env=CUDA_EMU_FAKE_DRIVER_DIR={dir}");
}

/// Links src/fake_driver.cpp and the emulator's archive (compiled
/// position-independent by cc) into `OUT_DIR/fake-cuda/libcuda.so`, whose
/// only exported symbols are the driver API's `cu*`, so its copy of the
/// emulator cannot clash with one linked into the process that loads it.
fn fake_driver(here: &std::path::Path, out: &std::path::Path) -> Result<PathBuf, String> {
    let objects = cc::Build::new()
        .cpp(true)
        .std("c++20")
        .opt_level(2)
        .include(here.join("include"))
        .file(here.join("src/fake_driver.cpp"))
        .try_compile_intermediates()
        .map_err(|e| e.to_string())?;
    let dir = out.join("fake-cuda");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let exports = out.join("fake_driver.map");
    std::fs::write(&exports, "{ global: cu*; local: *; };\n").map_err(|e| e.to_string())?;
    let lib = dir.join("libcuda.so");
    let status = cc::Build::new()
        .cpp(true)
        .get_compiler()
        .to_command()
        .arg("-shared")
        .arg("-o")
        .arg(&lib)
        .args(&objects)
        .arg("-Wl,--whole-archive")
        .arg(out.join("libiwtvae_cuda_emu.a"))
        .arg("-Wl,--no-whole-archive")
        .arg(format!("-Wl,--version-script={}", exports.display()))
        .arg("-Wl,-soname,libcuda.so.1")
        .arg("-lpthread")
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("linking {} failed: {status}", lib.display()));
    }
    Ok(dir)
}
