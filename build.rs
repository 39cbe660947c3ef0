//! Build script: find nvcc, compile each kernels/*.cu into a fatbin in
//! OUT_DIR, and set `cfg(iwtvae_cuda)` so the CUDA backend is compiled in.
//! Without nvcc (or without kernels) the crate builds CPU-only; a missing
//! nvcc is reported once as a cargo warning when there are kernels to build.
//!
//! nvcc is looked for in $NVCC, $CUDA_HOME/bin, $CUDA_PATH/bin, $PATH, then
//! the project's .cuda/ (scripts/install-cuda.sh). Architectures come from
//! $IWTVAE_CUDA_ARCHS (default "80 90": sm_80 and sm_90 SASS plus compute_90
//! PTX). No fast-math: the kernels are tested against the CPU path. ptxas
//! warns when a kernel spills registers to local memory (none does today);
//! nvcc's warnings become cargo warnings, since cargo hides a build script's
//! output unless it fails.
use std::path::{Path, PathBuf};
use std::process::Command;

fn find_nvcc(root: &Path) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("NVCC") {
        candidates.push(PathBuf::from(p));
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(p) = std::env::var_os(var) {
            candidates.push(PathBuf::from(p).join("bin/nvcc"));
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("nvcc")));
    }
    candidates.push(root.join(".cuda/nvidia/cu13/bin/nvcc"));
    candidates.into_iter().find(|p| p.is_file())
}

fn main() {
    println!("cargo::rustc-check-cfg=cfg(iwtvae_cuda)");
    println!("cargo::rerun-if-changed=kernels");
    for var in ["NVCC", "CUDA_HOME", "CUDA_PATH", "IWTVAE_CUDA_ARCHS"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let mut kernels: Vec<PathBuf> = std::fs::read_dir(root.join("kernels"))
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "cu")).collect()
        })
        .unwrap_or_default();
    kernels.sort();
    if kernels.is_empty() {
        return;
    }
    let Some(nvcc) = find_nvcc(&root) else {
        println!("cargo::warning=nvcc not found: building iwtvae CPU-only (scripts/install-cuda.sh installs a pinned CUDA 13.0 nvcc)");
        return;
    };
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    let archs = std::env::var("IWTVAE_CUDA_ARCHS").unwrap_or_else(|_| "80 90".into());
    let archs: Vec<&str> = archs.split_whitespace().collect();
    for cu in &kernels {
        let stem = cu.file_stem().expect("file name").to_string_lossy().into_owned();
        let fatbin = out.join(format!("{stem}.fatbin"));
        let mut cmd = Command::new(&nvcc);
        cmd.arg("--fatbin").arg("-O3").arg("-std=c++17").arg("-Xptxas=--warn-on-spills");
        cmd.arg("-I").arg(root.join("kernels"));
        for a in &archs {
            cmd.arg(format!("-gencode=arch=compute_{a},code=sm_{a}"));
        }
        if let Some(last) = archs.last() {
            cmd.arg(format!("-gencode=arch=compute_{last},code=compute_{last}"));
        }
        cmd.arg("-o").arg(&fatbin).arg(cu);
        let run = cmd.output().unwrap_or_else(|e| panic!("running {}: {e}", nvcc.display()));
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "nvcc failed on {}:\n{stderr}", cu.display());
        for line in stderr.lines().filter(|l| l.contains("warning")) {
            println!("cargo::warning={stem}.cu: {line}");
        }
    }
    println!("cargo::rustc-cfg=iwtvae_cuda");
}
