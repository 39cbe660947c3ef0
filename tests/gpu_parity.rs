//! Every CUDA kernel and the GPU pipeline (training step, epoch with
//! CUDA graphs, the large-k evaluator) against the CPU reference, on every
//! device this machine has: always the kernel emulator (crates/cuda-emu,
//! the same kernel sources and the same host code, run on the CPU), and a
//! real GPU when there is one. Without a GPU (CI never has one) the GPU half
//! prints SKIPPED. The tolerances say why they are what they are; the
//! emulator has no FMA contraction and the host's libm, so it sits inside
//! the GPU's bounds.

// Test fixtures shared with the emulated kernel tests (small_config).
#[allow(unused)]
mod emu;

use iwtvae::cuda::Gpu;
use iwtvae::device::Device;

/// Written straight to the process's stderr: the test harness captures
/// `eprintln!`, and a skip must be seen.
fn skip(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED (gpu_parity): {why}");
}

/// The first `n` images of the bundled MNIST, or a loud skip when it is
/// not found.
fn mnist(split: iwtvae::data::Split, n: usize) -> Option<iwtvae::data::Dataset> {
    let data = emu::mnist(split, n);
    if data.is_none() {
        skip("MNIST not found (set IWTVAE_DATA or run from the repository root)");
    }
    data
}

/// A measurement worth seeing in the log (stderr, uncaptured like `skip`).
fn note(what: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "gpu_parity: {what}");
}

/// The emulator, then GPU 0 when this machine has one (or a loud skip).
/// IWTVAE_PARITY_GPU_ONLY=1 leaves the emulator out (the GPU bundle sets
/// it: CI has run the emulated half already).
fn device_kinds() -> Vec<Device> {
    let mut kinds = Vec::new();
    if std::env::var_os("IWTVAE_PARITY_GPU_ONLY").is_none() {
        kinds.push(Device::Emulated);
    }
    if !iwtvae::device::CUDA_KERNELS {
        skip("the GPU half: built without CUDA kernels (nvcc not found; scripts/install-cuda.sh installs it)");
    } else if iwtvae::device::cuda_device_count() == 0 {
        skip("the GPU half: no CUDA GPU on this machine");
    } else {
        kinds.push(Device::Cuda(0));
    }
    kinds
}

fn devices() -> Vec<Gpu> {
    device_kinds().into_iter().map(|d| Gpu::open(d).expect("every listed device opens")).collect()
}

fn close(name: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{name}: lengths");
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let ok = (x.is_nan() && y.is_nan()) || (x - y).abs() <= tol * (1.0 + x.abs().max(y.abs()));
        assert!(ok, "{name}[{i}]: gpu {x} vs cpu {y} (tol {tol})");
    }
}

#[path = "gpu_parity/kernels.rs"]
mod kernels;
#[path = "gpu_parity/training.rs"]
mod training;
