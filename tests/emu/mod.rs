//! Support for the kernel tests that run kernels/*.cu on the CPU emulator
//! (crates/cuda-emu): typed launches whose geometry mirrors the wrappers in
//! src/cuda, guarded buffers, and the comparison with the CPU spec.
#![allow(dead_code)]
pub use cuda_emu::{Arg, Buffer, LaunchConfig};
use iwtvae::model::{ModelConfig, Transform};
use iwtvae::ops::grid::Warp;

/// Launch and run `kernel`; a failed launch (argument kinds, limits, a
/// deadlock) fails the test with the emulator's message.
pub fn run(kernel: &str, cfg: LaunchConfig, args: &[Arg]) {
    // SAFETY: every test passes Buffers of the sizes that the kernel's
    // wrapper in src/cuda checks before its launch.
    unsafe { cuda_emu::launch(kernel, cfg, args) }.unwrap_or_else(|e| panic!("{e}"));
}

pub fn blocks(n: usize, threads: usize) -> u32 {
    n.div_ceil(threads).max(1) as u32
}

/// src/cuda/forward.rs `cfg1`: one thread per element.
pub fn cfg1(n: usize, threads: u32) -> LaunchConfig {
    LaunchConfig::new((blocks(n, threads as usize), 1, 1), (threads, 1, 1), 0)
}

/// src/cuda/mod.rs `pixels_by_rows`: 256 pixels per block along x, one row per y.
pub fn pixels_by_rows(d: usize, rows: usize, shared_bytes: usize) -> LaunchConfig {
    LaunchConfig::new((blocks(d, 256), rows as u32, 1), (256, 1, 1), shared_bytes as u32)
}

/// src/cuda/linear.rs `gemm_grid` (unsplit): 64×64 output tiles.
pub fn gemm_grid(m: usize, n: usize) -> LaunchConfig {
    use iwtvae::cuda::shapes::{GEMM_THREADS, GEMM_TILE};
    LaunchConfig::new((blocks(n, GEMM_TILE), blocks(m, GEMM_TILE), 1), (GEMM_THREADS as u32, 1, 1), 0)
}

/// C[m, n] = A[m, k]·B[k, n] (+ C when `accumulate`; ⊙ relu'(H) given
/// H) through `kernel` (gemm_strided or gemm_strided_tf32), A and B given by (row, column) strides, with
/// src/cuda/linear.rs's arguments.
pub fn gemm_strided(
    kernel: &str,
    (a, (rsa, csa)): (&mut Buffer<f32>, (usize, usize)),
    (b, (rsb, csb)): (&mut Buffer<f32>, (usize, usize)),
    c: &mut Buffer<f32>,
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
    relu_of: Option<&Buffer<f32>>,
) {
    let stride = |v: usize| Arg::I64(v as i64);
    let args = [
        a.arg(),
        stride(rsa),
        stride(csa),
        b.arg(),
        stride(rsb),
        stride(csb),
        c.arg(),
        i32_(n),
        i32_(m),
        i32_(n),
        i32_(k),
        Arg::I32(accumulate as i32),
        relu_of.unwrap_or(c).arg(),
        Arg::I32(relu_of.is_some() as i32),
    ];
    run(kernel, gemm_grid(m, n), &args);
}

pub fn i32_(v: usize) -> Arg {
    Arg::I32(i32::try_from(v).expect("a test size fits i32"))
}

pub fn input<T: cuda_emu::Element>(v: &[T]) -> Buffer<T> {
    Buffer::from_slice(v)
}

/// An output the kernel must write in full: it starts as NaN.
pub fn output(n: usize) -> Buffer<f32> {
    Buffer::poisoned(n)
}

pub fn zeros(n: usize) -> Buffer<f32> {
    Buffer::from_slice(&vec![0f32; n])
}

pub fn read<T: cuda_emu::Element>(b: &Buffer<T>) -> Vec<T> {
    b.read().unwrap_or_else(|e| panic!("{e}"))
}

/// |a − b| ≤ tol·(1 + max(|a|, |b|)), NaN matching NaN and ∞ matching ∞.
pub fn close(name: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{name}: lengths");
    for (i, (&x, &y)) in got.iter().zip(want).enumerate() {
        let ok = (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= tol * (1.0 + x.abs().max(y.abs()));
        assert!(ok, "{name}[{i}]: emulated kernel {x} vs cpu {y} (tol {tol})");
    }
}

/// Deterministic values in [lo, hi).
pub fn values(n: usize, seed: u32, lo: f32, hi: f32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let w = iwtvae::rng::philox4x32_10([i as u32, seed, 0, 0], [0x1234_5678, 0x9abc_def0])[0];
            lo + (hi - lo) * iwtvae::rng::uniform_from_u32(w)
        })
        .collect()
}

/// A small model on 28×28 images (u = 4 with a transform, 0 without).
pub fn small_config(transform: Transform) -> ModelConfig {
    ModelConfig {
        transform,
        z_dim: 6,
        u_dim: if transform == Transform::None { 0 } else { 4 },
        hidden: 40,
        tps_grid: 3,
        height: 28,
        width: 28,
    }
}

/// θ rows near the identity, a few far from it (sampling past the border).
pub fn thetas(warp: &Warp<f32>, rows: usize) -> Vec<f32> {
    let id = warp.theta_identity();
    (0..rows)
        .flat_map(|r| {
            let scale = if r % 3 == 2 { 1.5 } else { 0.1 };
            id.iter().enumerate().map(move |(i, &v)| v + scale * ((r * 7 + i) as f32).sin()).collect::<Vec<_>>()
        })
        .collect()
}

/// MNIST from $IWTVAE_DATA, ./data/mnist (the GPU bundle runs from the
/// repository root on another machine, where the build tree is not) or the
/// build tree.
pub fn mnist(split: iwtvae::data::Split, limit: usize) -> Option<iwtvae::data::Dataset> {
    let dirs = [
        std::env::var("IWTVAE_DATA").unwrap_or_default(),
        "data/mnist".into(),
        concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist").into(),
    ];
    dirs.iter()
        .filter(|d| !d.is_empty())
        .find_map(|d| iwtvae::data::Dataset::load(std::path::Path::new(d), split, Some(limit)).ok())
}
