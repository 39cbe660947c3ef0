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

/// Written straight to the process's stderr: the test harness captures
/// `eprintln!`, and a skip must be seen.
fn skip(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED (gpu_parity): {why}");
}

/// A measurement worth seeing in the log (stderr, uncaptured like `skip`).
fn note(what: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "gpu_parity: {what}");
}

mod gpu {
    #![allow(clippy::needless_range_loop)]
    use super::emu::mnist;
    use iwtvae::cuda::Gpu;
    use iwtvae::device::Device;
    use iwtvae::model::{ModelConfig, Transform};
    use iwtvae::ops::grid::Warp;
    use iwtvae::ops::grid_sample::{grid_sample_row, grid_sample_row_backward};
    use iwtvae::ops::logsumexp::{logsumexp, normalized_weights};
    use iwtvae::optim::{Optimizer, OptimizerKind};
    use iwtvae::rng::{NoiseKey, Stream};

    /// The emulator, then GPU 0 when this machine has one (or a loud skip).
    /// IWTVAE_PARITY_GPU_ONLY=1 leaves the emulator out (the GPU bundle sets
    /// it: CI has run the emulated half already).
    fn device_kinds() -> Vec<Device> {
        let mut kinds = Vec::new();
        if std::env::var_os("IWTVAE_PARITY_GPU_ONLY").is_none() {
            kinds.push(Device::Emulated);
        }
        if !iwtvae::device::CUDA_KERNELS {
            super::skip(
                "the GPU half: built without CUDA kernels (nvcc not found; scripts/install-cuda.sh installs it)",
            );
        } else if iwtvae::device::cuda_device_count() == 0 {
            super::skip("the GPU half: no CUDA GPU on this machine");
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

    /// SPEC §3: the uniforms agree bit for bit.
    #[test]
    fn philox_uniforms_are_bit_identical() {
        for g in devices() {
            let key = NoiseKey::new(0xDEAD_BEEF_1234, Stream::EvalEps, 3);
            let items = [0u32, 7, 123_456];
            let (k, s0, dims) = (3, 11, 37);
            let got = g.philox(false, key, &items, k, s0, dims).unwrap();
            let mut want = vec![0f32; items.len() * k * dims];
            for (b, &item) in items.iter().enumerate() {
                for s in 0..k {
                    let r = b * k + s;
                    key.uniforms(item, (s0 + s) as u32, &mut want[r * dims..(r + 1) * dims]);
                }
            }
            assert_eq!(got, want);
        }
    }

    /// Normals go through each device's ln/sin/cos: the CPU's are ≤ 3 ulp,
    /// CUDA's logf/sincospif ≤ 2 ulp, so |n| ≤ 6 agrees to ~5e-6.
    #[test]
    fn philox_normals_agree() {
        for g in devices() {
            let key = NoiseKey::new(5, Stream::TrainEps, 9);
            let items = [2u32, 3];
            let got = g.philox(true, key, &items, 4, 0, 42).unwrap();
            let mut want = vec![0f32; 2 * 4 * 42];
            for (b, &item) in items.iter().enumerate() {
                for s in 0..4 {
                    let r = b * 4 + s;
                    key.normals(item, s as u32, &mut want[r * 42..(r + 1) * 42]);
                }
            }
            close(&format!("{}: normals", g.kind()), &got, &want, 1e-5);
        }
    }

    fn sample_inputs(rows: usize, h: usize, w: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let d = h * w;
        let c: Vec<f32> = (0..rows * d).map(|i| ((i * 37 % 101) as f32) / 100.0).collect();
        let mut xs: Vec<f32> = (0..rows * d).map(|i| ((i as f32) * 0.37).sin() * 1.3).collect();
        let mut ys: Vec<f32> = (0..rows * d).map(|i| ((i as f32) * 0.11).cos() * 1.2).collect();
        xs[5] = f32::NAN;
        ys[9] = f32::INFINITY;
        xs[d + 3] = 1.0;
        (c, xs, ys)
    }

    /// nvcc contracts a·b + c into FMAs (the CPU does not): values in [0, 1]
    /// differ by a few ulp, so 1e-6.
    #[test]
    fn grid_sample_forward_matches_cpu() {
        for g in devices() {
            let (rows, h, w) = (3, 5, 6);
            let (c, xs, ys) = sample_inputs(rows, h, w);
            let got = g.grid_sample_fwd(&c, &xs, &ys, h, w).unwrap();
            let mut want = vec![0f32; c.len()];
            let d = h * w;
            for r in 0..rows {
                let s = r * d..(r + 1) * d;
                grid_sample_row(&c[s.clone()], h, w, &xs[s.clone()], &ys[s.clone()], &mut want[s]);
            }
            close(&format!("{}: grid_sample_fwd", g.kind()), &got, &want, 1e-6);
        }
    }

    /// dc is summed with atomics in an unspecified order: 1e-5.
    #[test]
    fn grid_sample_backward_matches_cpu() {
        for g in devices() {
            let (rows, h, w) = (2, 28, 28);
            let (c, xs, ys) = sample_inputs(rows, h, w);
            let dout: Vec<f32> = (0..c.len()).map(|i| ((i as f32) * 0.7).sin()).collect();
            let (dc, dxs, dys) = g.grid_sample_bwd(&c, &xs, &ys, &dout, h, w).unwrap();
            let d = h * w;
            let (mut wdc, mut wdx, mut wdy) = (vec![0f32; c.len()], vec![0f32; c.len()], vec![0f32; c.len()]);
            for r in 0..rows {
                let s = r * d..(r + 1) * d;
                let (dcr, dxr, dyr) = (&mut wdc[s.clone()], &mut wdx[s.clone()], &mut wdy[s.clone()]);
                grid_sample_row_backward(&c[s.clone()], h, w, &xs[s.clone()], &ys[s.clone()], &dout[s], dcr, dxr, dyr);
            }
            close(&format!("{}: dc", g.kind()), &dc, &wdc, 1e-5);
            close(&format!("{}: dxs", g.kind()), &dxs, &wdx, 1e-5);
            close(&format!("{}: dys", g.kind()), &dys, &wdy, 1e-5);
        }
    }

    /// Sums of nb ≤ 9 products, FMA-contracted on the GPU: 1e-6.
    #[test]
    fn grid_generation_matches_cpu() {
        for g in devices() {
            for transform in [Transform::Affine, Transform::Tps] {
                let cfg = ModelConfig { transform, z_dim: 4, u_dim: 3, hidden: 8, tps_grid: 3, height: 28, width: 28 };
                let warp = Warp::<f32>::new(&cfg);
                let theta: Vec<f32> = (0..4)
                    .flat_map(|r| {
                        warp.theta_identity()
                            .into_iter()
                            .enumerate()
                            .map(move |(i, v)| v + 0.1 * ((r * 7 + i) as f32).sin())
                    })
                    .collect();
                let t = warp.theta_identity().len();
                let (xs, ys) = g.grid_fwd(&warp.basis, &theta, 784, warp.nb).unwrap();
                for r in 0..4 {
                    let (mut wx, mut wy) = (vec![0f32; 784], vec![0f32; 784]);
                    warp.grid_row(&theta[r * t..(r + 1) * t], &mut wx, &mut wy);
                    close(&format!("{}: grid xs", g.kind()), &xs[r * 784..(r + 1) * 784], &wx, 1e-6);
                    close(&format!("{}: grid ys", g.kind()), &ys[r * 784..(r + 1) * 784], &wy, 1e-6);
                }
            }
        }
    }

    /// f32 on the GPU vs f64 on the CPU over k ≤ 5000 terms: 1e-5 relative.
    #[test]
    fn iwae_weights_match_cpu() {
        for g in devices() {
            for k in [1usize, 5, 37, 5000] {
                let logw: Vec<f32> = (0..3 * k).map(|i| -90.0 + 15.0 * ((i as f32) * 0.31).sin()).collect();
                let (lse, coef) = g.iwae_weights(&logw, k, 1.0 / 3.0).unwrap();
                for b in 0..3 {
                    let v: Vec<f64> = logw[b * k..(b + 1) * k].iter().map(|&x| x as f64).collect();
                    assert!((lse[b] as f64 - logsumexp(&v)).abs() < 1e-5 * logsumexp(&v).abs(), "k {k}");
                    let mut wt = vec![0f64; k];
                    normalized_weights(&v, &mut wt);
                    let want: Vec<f32> = wt.iter().map(|w| (-w / 3.0) as f32).collect();
                    close(&format!("{}: coef", g.kind()), &coef[b * k..(b + 1) * k], &want, 1e-5);
                }
            }
        }
    }

    /// The evaluator on the GPU against the CPU's on the same keys: normals
    /// differ by a few ulp and sums run in another order, so log-weights near
    /// −100 differ by ~1e-4; the per-image NLL within 2e-3 nats.
    #[test]
    fn nll_evaluator_matches_cpu() {
        for g in devices() {
            let Some(data) = mnist(iwtvae::data::Split::Test, 20) else {
                super::skip("MNIST not found (set IWTVAE_DATA or run from the repository root)");
                return;
            };
            for transform in [Transform::None, Transform::Affine, Transform::Tps] {
                let cfg = ModelConfig {
                    transform,
                    z_dim: 6,
                    u_dim: if transform == Transform::None { 0 } else { 4 },
                    hidden: 32,
                    tps_grid: 3,
                    height: 28,
                    width: 28,
                };
                let layout = iwtvae::model::Layout::new(cfg);
                let params = iwtvae::model::init_params::<f32>(&layout, 3);
                let net = iwtvae::network::Network::<f32>::new(layout);
                let opts = iwtvae::eval::EvalOptions {
                    k: 700,
                    chunk: 250,
                    binarize: iwtvae::data::Binarize::Dynamic,
                    seed: 4,
                    precision: Default::default(),
                };
                let (_, cpu) = iwtvae::eval::evaluate(&net, &params, &data, &opts).unwrap();
                let (report, gpu_rows) = g.evaluate(&net, &params, &data, &opts).unwrap();
                assert!(report.device.starts_with(g.kind()), "{}", report.device);
                for (a, b) in gpu_rows.iter().zip(&cpu) {
                    assert_eq!(a.index, b.index);
                    assert!(
                        (a.nll - b.nll).abs() < 2e-3,
                        "{}: image {}: gpu {} cpu {}",
                        transform.name(),
                        a.index,
                        a.nll,
                        b.nll
                    );
                    assert!((a.elbo - b.elbo).abs() < 2e-3, "{}: elbo {} vs {}", transform.name(), a.elbo, b.elbo);
                    assert!((a.recon - b.recon).abs() < 2e-3, "{}: recon {} vs {}", transform.name(), a.recon, b.recon);
                }
            }
        }
    }

    /// Same expression order as src/optim.rs; sqrtf and division are
    /// correctly rounded on both, FMA contraction aside: 1e-6.
    #[test]
    fn adadelta_matches_cpu() {
        for g in devices() {
            let n = 10_000;
            let grads: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.013).sin()).collect();
            let mut p: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.029).cos()).collect();
            let mut cpu_p = p.clone();
            let (mut sq, mut acc) = (vec![0.1f32; n], vec![0.01f32; n]);
            let mut opt = Optimizer::new(OptimizerKind::Adadelta, n);
            opt.s1.copy_from_slice(&sq);
            opt.s2.copy_from_slice(&acc);
            opt.step(&mut cpu_p, &grads, 0.7);
            assert!(!g.adadelta_step(&mut p, &grads, &mut sq, &mut acc, 0.7).unwrap(), "finite gradients flagged");
            close(&format!("{}: params", g.kind()), &p, &cpu_p, 1e-6);
            close(&format!("{}: square_avg", g.kind()), &sq, &opt.s1, 1e-6);
            close(&format!("{}: acc_delta", g.kind()), &acc, &opt.s2, 1e-6);
        }
    }

    /// One whole training step on the GPU against the CPU spec, from the same
    /// parameters, optimizer state, batch and noise keys: the loss, the
    /// gradient and the updated parameters and optimizer state. The GPU sums
    /// in other orders (tiled GEMMs, warp reductions, shared-memory atomics
    /// in the sampler's scatter) and contracts FMAs, so values agree to f32
    /// rounding amplified by the depth of the network: 1e-4 relative on the
    /// loss, and on every gradient 2e-3 of the largest gradient of its tensor
    /// (the noise floor of a 500-row f32 sum of mixed-sign terms); Adadelta's
    /// first step divides by √(0.1·g² + 1e-6), so the parameter updates
    /// move by at most the gradients' error (see below).
    ///
    /// With --precision tf32 the reference is the CPU with its GEMM operands
    /// rounded to TF32 (`with_tf32_operands`), and the bounds are the same.
    /// Against the plain fp32 CPU a TF32 step's gradients differ by up to
    /// 10% of their norm at initialisation (TF32 moves each sample's
    /// log p(x|z,u), a sum over 784 pixels, by a few 0.01 nats, which shifts
    /// the IWAE weights; ReLU masks flip where a pre-activation is within
    /// rounding of 0), while against the rounded CPU they agree to 4e-4:
    /// the difference is TF32's, not the kernels'.
    #[test]
    fn training_step_matches_cpu() {
        use iwtvae::model::{init_params, Layout};
        use iwtvae::network::Network;
        use iwtvae::objective::{loss_and_grad, Objective};
        use iwtvae::ops::linear::with_tf32_operands;
        use iwtvae::train::{EpochPlan, TrainConfig};
        for device in device_kinds() {
            let Some(data) = mnist(iwtvae::data::Split::Train, 64) else {
                super::skip("MNIST not found (set IWTVAE_DATA or run from the repository root)");
                return;
            };
            for (transform, objective, k, binarize, precision) in [
                ("tps", "iwae", 5, "dynamic", "fp32"),
                ("affine", "elbo", 3, "dynamic", "fp32"),
                ("none", "elbo-kl", 1, "none", "fp32"),
                ("tps", "elbo-kl", 1, "none", "fp32"),
                ("tps", "iwae", 5, "dynamic", "tf32"),
                ("affine", "elbo", 3, "dynamic", "tf32"),
                ("none", "elbo-kl", 1, "none", "tf32"),
            ] {
                let cfg = TrainConfig {
                    precision: precision.into(),
                    transform: transform.into(),
                    z_dim: 10,
                    u_dim: if transform == "none" { 0 } else { 6 },
                    hidden: 48,
                    objective: objective.into(),
                    k,
                    epochs: 1,
                    batch_size: 24,
                    schedule: "constant".into(),
                    binarize: binarize.into(),
                    limit_train: Some(64),
                    seed: 11,
                    ..TrainConfig::seed_protocol()
                };
                let layout = Layout::new(cfg.model_config(28, 28).unwrap());
                let params = init_params::<f32>(&layout, cfg.seed);
                let opt = Optimizer::new(OptimizerKind::Adadelta, layout.total);
                let items: Vec<u32> = (0..24u32).map(|i| (i * 37) % 64).collect();
                let plan = EpochPlan::new(cfg.seed, 2, 1.0, &items);
                // CPU: the spec.
                let net = Network::<f32>::new(layout.clone());
                let mut ws = net.workspace(items.len(), k, true);
                let d = data.pixels();
                let mut scratch = vec![0f32; d];
                for (b, &i) in items.iter().enumerate() {
                    data.targets(
                        i as usize,
                        cfg.binarize().unwrap(),
                        plan.bin_key,
                        &mut scratch,
                        &mut ws.x[b * d..(b + 1) * d],
                    );
                }
                let mut cpu_grads = vec![0f32; layout.total];
                let obj = Objective::parse(objective).unwrap();
                let mut step = || {
                    loss_and_grad(
                        &net,
                        &params,
                        Some(&mut cpu_grads),
                        &mut ws,
                        &items,
                        k,
                        obj,
                        plan.keys,
                        iwtvae::ops::Par::Seq,
                    )
                };
                // TF32 against the CPU with its GEMM operands rounded alike.
                let cpu_loss = if precision == "tf32" { with_tf32_operands(step) } else { step() };
                let mut cpu_params = params.clone();
                let mut cpu_opt = opt.clone();
                cpu_opt.step(&mut cpu_params, &cpu_grads, 1.0);
                // GPU.
                let mut engine = iwtvae::cuda::train::GpuEngine::new(
                    Gpu::open(device).unwrap(),
                    &layout,
                    &cfg,
                    &data,
                    &params,
                    &opt,
                )
                .unwrap();
                let gpu_loss = engine.single_step(&items, &plan).unwrap();
                let gpu_grads = engine.gradients().unwrap();
                let (mut gpu_params, mut gpu_opt) = (vec![0f32; layout.total], opt.clone());
                engine.state(&mut gpu_params, &mut gpu_opt).unwrap();
                let name = format!("{transform}/{objective}/{precision}");
                assert!(
                    ((gpu_loss as f64) - cpu_loss).abs() <= 1e-4 * cpu_loss.abs(),
                    "{name}: loss gpu {gpu_loss} cpu {cpu_loss}"
                );
                for e in &layout.entries {
                    let r = e.offset..e.offset + e.len;
                    let scale = cpu_grads[r.clone()].iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
                    for i in r.clone() {
                        assert!(
                            (gpu_grads[i] - cpu_grads[i]).abs() <= 2e-3 * scale,
                            "{name}: grad {}[{}]: gpu {} cpu {} (scale {scale})",
                            e.name,
                            i - e.offset,
                            gpu_grads[i],
                            cpu_grads[i]
                        );
                        // Adadelta's first step is δ(g) = 1e-3·g/√(0.1g² + 1e-6): |δ'| ≤ 1 and
                        // |δ| < 3.2e-3, so |Δδ| ≤ min(|Δg|, 6.4e-3).
                        let ptol = (2e-3 * scale).min(6.4e-3) + 1e-7;
                        assert!(
                            (gpu_params[i] - cpu_params[i]).abs() <= ptol,
                            "{name}: param {}[{}]: gpu {} cpu {} (from {})",
                            e.name,
                            i - e.offset,
                            gpu_params[i],
                            cpu_params[i],
                            params[i]
                        );
                    }
                }
                close(&format!("{name}: square_avg"), &gpu_opt.s1, &cpu_opt.s1, 2e-3);
            }
        }
    }

    /// The linear layers' GEMMs (kernels/linear.cu: one block per 64×64
    /// tile, or split K, summed in order) against an f64 reference. Bound:
    /// an f32 sum of n terms, in any order, lies within γₙ·Σ|terms| of the
    /// exact sum (γₙ = n·u/(1 − n·u), u = 2⁻²⁴; Higham, Accuracy and
    /// Stability of Numerical Algorithms, §4.2), n = K products plus the
    /// bias or the accumulated value. The emulator and a GPU's FMAs both
    /// stay inside it; an indexing mistake misses by whole terms.
    ///
    /// The TF32 GEMMs (training's --precision tf32) against the exact
    /// product of their TF32-rounded operands (bias, accumulated value and
    /// db unrounded): the products of two 11-bit significands are exact, so
    /// what is left is the fp32 sum, within the same bound at u = 2⁻²³ (a
    /// tensor core aligns a block's addends to the largest and truncates:
    /// Fasi, Higham, Mikaitis, Pranesh, "Numerical behavior of NVIDIA tensor
    /// cores", PeerJ CS 2021).
    #[test]
    fn linear_layers_match_an_f64_reference_split_or_not() {
        use iwtvae::cuda::linear::{GemmMath, SplitK, SPLIT_TARGET_BLOCKS};
        let wave = |n: usize, seed: usize| -> Vec<f32> {
            (0..n).map(|i| ((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0 - 1.0).collect()
        };
        let gamma = |n: usize, u: f64| {
            let nu = n as f64 * u;
            nu / (1.0 - nu)
        };
        let check = |name: &str, got: &[f32], exact: &[f64], scale: &[f64], n: usize, u: f64| {
            for i in 0..got.len() {
                let err = (got[i] as f64 - exact[i]).abs();
                assert!(
                    err <= gamma(n, u) * scale[i] + 1e-30,
                    "{name}[{i}]: {} vs exact {} (bound {})",
                    got[i],
                    exact[i],
                    gamma(n, u) * scale[i]
                );
            }
        };
        // (rows, out, inp): the encoder's first layer on a batch of 100
        // (its forward splits K = 784 ten ways, dx four); a 4-way split of
        // K = 256; 3- and 2-way splits with a short last slice; one too
        // small to split.
        let shapes = [(100, 256, 784), (37, 42, 256), (130, 70, 200), (500, 18, 18)];
        let plan = |m, n, k| SplitK::plan(m, n, k, SPLIT_TARGET_BLOCKS);
        assert!(plan(100, 256, 784).splits == 10 && plan(130, 70, 200).splits == 3);
        let cases = [(GemmMath::Fp32, true), (GemmMath::Fp32, false), (GemmMath::Tf32, true), (GemmMath::Tf32, false)];
        for device in device_kinds() {
            for (math, split) in cases {
                let mut gpu = Gpu::open(device).unwrap();
                gpu.set_split_target(if split { SPLIT_TARGET_BLOCKS } else { 0 });
                gpu.set_gemm_math(math);
                let (round, u): (fn(f32) -> f32, f64) = match math {
                    GemmMath::Fp32 => (|v| v, 2f64.powi(-24)),
                    GemmMath::Tf32 => (super::emu::tf32, 2f64.powi(-23)),
                };
                for (rows, out, inp) in shapes {
                    let name = format!("{} {math:?} split {split} [{rows}x{inp}]·[{out}x{inp}]ᵀ", gpu.kind());
                    let (x, w, b) = (wave(rows * inp, 1), wave(out * inp, 2), wave(out, 3));
                    let (dy, dx0) = (wave(rows * out, 4), wave(rows * inp, 5));
                    // The GEMMs' operands as the kernels multiply them.
                    let r = |v: &[f32]| -> Vec<f32> { v.iter().map(|&e| round(e)).collect() };
                    let (xr, wr, dyr) = (r(&x), r(&w), r(&dy));
                    let (mut y, mut ys) = (vec![0f64; rows * out], vec![0f64; rows * out]);
                    let (mut dw, mut dws) = (vec![0f64; out * inp], vec![0f64; out * inp]);
                    let (mut db, mut dbs) = (vec![0f64; out], vec![0f64; out]);
                    let dx_init: Vec<f64> = dx0.iter().map(|&v| v as f64).collect();
                    let (mut dx, mut dxs) = (dx_init.clone(), dx_init.iter().map(|v| v.abs()).collect::<Vec<_>>());
                    for r in 0..rows {
                        for o in 0..out {
                            let (mut acc, mut mag) = (b[o] as f64, (b[o] as f64).abs());
                            let (g, gr) = (dy[r * out + o] as f64, dyr[r * out + o] as f64);
                            db[o] += g;
                            dbs[o] += g.abs();
                            let g = gr;
                            for i in 0..inp {
                                let (xv, wv) = (xr[r * inp + i] as f64, wr[o * inp + i] as f64);
                                acc += xv * wv;
                                mag += (xv * wv).abs();
                                dw[o * inp + i] += g * xv;
                                dws[o * inp + i] += (g * xv).abs();
                                dx[r * inp + i] += g * wv;
                                dxs[r * inp + i] += (g * wv).abs();
                            }
                            y[r * out + o] = acc;
                            ys[r * out + o] = mag;
                        }
                    }
                    for relu in [false, true] {
                        let got = gpu.linear_layer(&x, &w, &b, rows, relu).unwrap();
                        let exact: Vec<f64> = y.iter().map(|&v| if relu { v.max(0.0) } else { v }).collect();
                        check(&format!("{name} relu {relu}: y"), &got, &exact, &ys, inp + 1, u);
                    }
                    let (gw, gb, gx) = gpu.linear_layer_backward(&x, &dy, &w, &b, rows, &dx0).unwrap();
                    check(&format!("{name}: dW"), &gw, &dw, &dws, rows, u);
                    check(&format!("{name}: db"), &gb, &db, &dbs, rows, 2f64.powi(-24));
                    check(&format!("{name}: dx"), &gx, &dx, &dxs, out + 1, u);
                }
            }
        }
    }

    /// The tensor-core evaluators against the CPU's fp32 on the same noise.
    /// TF32 and BF16 round the decoder layers' inputs to 10- and 8-bit mantissas (relative
    /// 2⁻¹¹, 2⁻⁹ per product; fp32 sums), which moves logits by ~1e-3 (TF32)
    /// and ~5e-3 (BF16) and each image's NLL by up to ~0.05 / ~0.5 nats on
    /// an untrained model with 784 pixels; the bounds below are those, the
    /// measured mean differences are printed. Which precision is the default
    /// is decided on a trained model (gpu-bundle/run.sh, README).
    #[test]
    fn tensor_core_evaluators_are_close_to_fp32() {
        use iwtvae::eval::Precision;
        use iwtvae::model::Transform;
        for g in devices() {
            let Some(data) = mnist(iwtvae::data::Split::Test, 24) else {
                super::skip("MNIST not found (set IWTVAE_DATA or run from the repository root)");
                return;
            };
            for transform in [Transform::None, Transform::Tps] {
                // hidden 40 and 28×28 are not multiples of 16: the padding is exercised.
                let layout = iwtvae::model::Layout::new(super::emu::small_config(transform));
                let params = iwtvae::model::init_params::<f32>(&layout, 5);
                let net = iwtvae::network::Network::<f32>::new(layout);
                let mut opts = iwtvae::eval::EvalOptions {
                    k: 600,
                    chunk: 250,
                    binarize: iwtvae::data::Binarize::Dynamic,
                    seed: 4,
                    precision: Precision::Fp32,
                };
                let (_, cpu) = iwtvae::eval::evaluate(&net, &params, &data, &opts).unwrap();
                for (precision, bound) in [(Precision::Tf32, 0.05), (Precision::Bf16, 0.5)] {
                    opts.precision = precision;
                    let (report, rows) = g.evaluate(&net, &params, &data, &opts).unwrap();
                    assert_eq!(report.precision, precision.name());
                    let diffs: Vec<f64> = rows.iter().zip(&cpu).map(|(a, b)| (a.nll - b.nll).abs()).collect();
                    let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
                    let worst = diffs.iter().fold(0f64, |m, &v| m.max(v));
                    super::note(&format!(
                        "{} {} {}: mean |ΔNLL| {mean:.5}, max {worst:.5} nats vs CPU fp32",
                        g.kind(),
                        transform.name(),
                        precision.name()
                    ));
                    assert!(worst < bound, "{} {}: max |ΔNLL| {worst} ≥ {bound}", transform.name(), precision.name());
                    for (a, b) in rows.iter().zip(&cpu) {
                        assert!(
                            (a.recon_at_mean - b.recon_at_mean).abs() < 2e-3,
                            "recon_at_mean is fp32 in every mode"
                        );
                    }
                }
            }
        }
    }

    /// Whole epochs through `train_on`: on the device the full batches
    /// replay a CUDA graph captured per epoch and the short last batch runs
    /// directly; on the CPU the spec. Same init, keys and order.
    ///
    /// How close two trajectories stay depends on the transform. Without a
    /// warp the training map is smooth almost everywhere, so rounding-level
    /// differences stay rounding-level: 12 steps agree to 3e-5 (measured on
    /// the emulator), bound 2e-4. A warp makes it discontinuous (a sampling
    /// coordinate that crosses a pixel edge switches the bilinear slope;
    /// the border clamp zeroes it), so differences can jump by a step's
    /// size once a coordinate lands on the other side: 6 TPS steps on 130
    /// images ended 2.4e-2 apart although every step's gradient, taken from
    /// the same parameters, agreed to 5e-5 of its tensor's scale (as in
    /// training_step_matches_cpu). So TPS runs 3 steps (8e-6 measured).
    #[test]
    fn training_epochs_with_graphs_match_cpu() {
        use iwtvae::device::Device;
        use iwtvae::train::{train_on, Silent, TrainConfig};
        for device in device_kinds() {
            for (transform, u_dim, images, epochs) in [("none", 0, 130, 2), ("tps", 6, 58, 1)] {
                let Some(data) = mnist(iwtvae::data::Split::Train, images) else {
                    super::skip("MNIST not found (set IWTVAE_DATA or run from the repository root)");
                    return;
                };
                let cfg = TrainConfig {
                    transform: transform.into(),
                    z_dim: 8,
                    u_dim,
                    hidden: 32,
                    k: 3,
                    epochs,
                    batch_size: 24,
                    limit_train: Some(images),
                    seed: 7,
                    ..TrainConfig::seed_protocol()
                };
                let (dc, dg) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
                let cpu = train_on(Device::Cpu, &cfg, &data, dc.path(), false, &mut Silent).unwrap();
                let dev = train_on(device, &cfg, &data, dg.path(), false, &mut Silent).unwrap();
                let name = format!("{} {transform}", device.name());
                for (c, g) in cpu.logs.iter().zip(&dev.logs) {
                    assert!(
                        (c.loss - g.loss).abs() <= 1e-4 * c.loss.abs(),
                        "{name}: loss cpu {} vs {}",
                        c.loss,
                        g.loss
                    );
                }
                let worst = cpu.params.iter().zip(&dev.params).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                super::note(&format!("{name}: {epochs} epochs vs CPU: max |Δparam| {worst:e}"));
                assert!(worst <= 2e-4, "{name}: max |Δparam| {worst}");
                // The device run wrote a checkpoint the CPU can load and evaluate.
                let ck = iwtvae::model::checkpoint::load_checkpoint(&dg.path().join("checkpoint.safetensors")).unwrap();
                assert_eq!(ck.params, dev.params);
            }
        }
    }

    /// 58 training images in batches of 24 (two full, one short) for a
    /// small TPS model with k = 3: the epoch-level tests' run.
    fn small_run(seed: u64) -> Option<(iwtvae::data::Dataset, iwtvae::train::TrainConfig)> {
        let Some(data) = mnist(iwtvae::data::Split::Train, 58) else {
            super::skip("MNIST not found (set IWTVAE_DATA or run from the repository root)");
            return None;
        };
        let cfg = iwtvae::train::TrainConfig {
            z_dim: 8,
            u_dim: 6,
            hidden: 32,
            k: 3,
            batch_size: 24,
            limit_train: Some(58),
            seed,
            ..iwtvae::train::TrainConfig::seed_protocol()
        };
        Some((data, cfg))
    }

    /// `train --precision tf32` end to end: one epoch (3 steps, the full
    /// batches replayed from a captured graph) on the tensor-core GEMMs. The
    /// step itself is checked against the TF32-rounded CPU in
    /// training_step_matches_cpu; here the run must reach those kernels (its
    /// parameters differ from the fp32 run's: Adadelta's near-sign updates
    /// pass TF32's gradient changes on to 1e-2, where fp32 runs agree to
    /// 2e-4) and its epoch loss stay within 3e-4 of the CPU's fp32 one (TF32
    /// moves it by ~2e-5). The CPU path refuses tf32 before writing
    /// anything, and bf16 is not a training precision.
    #[test]
    fn a_tf32_training_run_reaches_the_tensor_cores_and_keeps_the_loss() {
        use iwtvae::train::{train_on, Silent, TrainConfig};
        let Some((data, cfg)) = small_run(9) else { return };
        let cfg = TrainConfig { epochs: 1, ..cfg };
        let tf32 = TrainConfig { precision: "tf32".into(), ..cfg.clone() };
        let dir = tempfile::tempdir().unwrap();
        let err = train_on(Device::Cpu, &tf32, &data, dir.path(), false, &mut Silent).err().unwrap();
        assert!(err.to_string().contains("--precision tf32"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the refused run wrote to --out");
        let bad = TrainConfig { precision: "bf16".into(), ..cfg.clone() };
        assert!(bad.validate().unwrap_err().to_string().contains("--precision \"bf16\""));

        let run = |device: Device, cfg: &TrainConfig| {
            let dir = tempfile::tempdir().unwrap();
            train_on(device, cfg, &data, dir.path(), false, &mut Silent).unwrap()
        };
        let cpu = run(Device::Cpu, &cfg);
        for device in device_kinds() {
            let (fp32, tc) = (run(device, &cfg), run(device, &tf32));
            let drift = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            let vs_fp32 = drift(&tc.params, &fp32.params);
            let dloss = (tc.logs[0].loss - cpu.logs[0].loss).abs() / cpu.logs[0].loss.abs();
            super::note(&format!(
                "{device:?} tf32 epoch: loss {} vs cpu {} (rel {dloss:e}); max |Δparam| vs its fp32 run {vs_fp32:e}",
                tc.logs[0].loss, cpu.logs[0].loss
            ));
            assert!(dloss <= 3e-4, "{device:?}: tf32 loss {} vs cpu {}", tc.logs[0].loss, cpu.logs[0].loss);
            assert!(vs_fp32 > 0.0, "{device:?}: the tf32 run is the fp32 run");
        }
    }

    /// A non-finite loss stops device training where it stops the CPU's: the
    /// device files each step's loss and gradient flag itself (record_step)
    /// and the host reports the first bad step after the epoch; no
    /// checkpoint is written. lr 1e30 makes the second step's loss infinite
    /// on both, whatever the rounding.
    #[test]
    fn a_non_finite_loss_stops_device_training_at_the_cpus_step() {
        use iwtvae::error::Error;
        use iwtvae::train::{train_on, Silent, TrainConfig};
        let Some((data, cfg)) = small_run(3) else { return };
        let cfg = TrainConfig { lr: 1e30, schedule: "constant".into(), ..cfg };
        let stop = |device: Device| {
            let dir = tempfile::tempdir().unwrap();
            let err = train_on(device, &cfg, &data, dir.path(), false, &mut Silent).err();
            assert!(!dir.path().join("checkpoint.safetensors").exists(), "{device:?} wrote a checkpoint");
            match err {
                Some(Error::NonFinite { epoch, step, .. }) => (epoch, step),
                other => panic!("{device:?}: {other:?}"),
            }
        };
        let want = stop(Device::Cpu);
        assert_eq!(want, (1, 2), "the CPU's stop");
        for device in device_kinds() {
            assert_eq!(stop(device), want, "{device:?}");
        }
    }

    /// An epoch whose full batches replay one captured graph against the same
    /// epoch launched step by step. On the emulator both run the same
    /// launches in the same order on a deterministic machine, so they agree
    /// bit for bit: any difference is the capture or the replay. On a GPU the
    /// sampler's backward adds with shared-memory atomics in whatever order
    /// the warps arrive, so the two agree to rounding over 3 steps: 1e-4.
    #[test]
    fn graph_replay_matches_direct_launches() {
        use iwtvae::cuda::train::GpuEngine;
        use iwtvae::model::{init_params, Layout};
        use iwtvae::train::{Engine, EpochPlan, Silent};
        let Some((data, cfg)) = small_run(5) else { return };
        let layout = Layout::new(cfg.model_config(28, 28).unwrap());
        let params0 = init_params::<f32>(&layout, cfg.seed);
        let perm = iwtvae::rng::epoch_permutation(cfg.seed, 0, data.len());
        let plan = EpochPlan::new(cfg.seed, 0, 1.0, &perm);
        for device in device_kinds() {
            let mut runs = Vec::new();
            for graphs in [true, false] {
                let opt = Optimizer::new(OptimizerKind::Adadelta, layout.total);
                let gpu = Gpu::open(device).unwrap();
                let mut engine = GpuEngine::new(gpu, &layout, &cfg, &data, &params0, &opt).unwrap();
                engine.use_graphs(graphs);
                let (mut params, mut opt) = (params0.clone(), opt);
                let losses = engine.run_epoch(&plan, &mut params, &mut opt, &mut Silent).unwrap();
                assert_eq!(losses.len(), 3);
                runs.push((losses, params, opt));
            }
            let ((l1, p1, o1), (l2, p2, o2)) = (&runs[0], &runs[1]);
            if device == Device::Emulated {
                assert_eq!(l1, l2, "losses: graph vs direct");
                assert!(p1 == p2 && o1.s1 == o2.s1 && o1.s2 == o2.s2, "graph replay differs from direct launches");
            } else {
                let worst = p1.iter().zip(p2).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                super::note(&format!("graph vs direct on the GPU: max |Δparam| {worst:e}"));
                assert!(worst <= 1e-4, "graph vs direct: max |Δparam| {worst}");
            }
            assert_eq!(o1.steps, 3);
        }
    }

    /// The kernel benches' entry points (benches/kernels.rs) on a small
    /// model: every step op on its own, a graph-replayed step and the
    /// evaluator's kernels in each precision run without error, so a bench
    /// run on a GPU machine does not die on a host-side mistake.
    #[test]
    fn kernel_bench_entry_points_run() {
        use iwtvae::cuda::train::{GpuEngine, STEP_OPS};
        use iwtvae::eval::Precision;
        use iwtvae::model::{init_params, Layout};
        use iwtvae::train::{EpochPlan, TrainConfig};
        let Some(data) = mnist(iwtvae::data::Split::Train, 16) else {
            super::skip("MNIST not found (set IWTVAE_DATA or run from the repository root)");
            return;
        };
        let cfg = TrainConfig { z_dim: 6, u_dim: 4, hidden: 40, batch_size: 8, ..TrainConfig::seed_protocol() };
        let layout = Layout::new(cfg.model_config(28, 28).unwrap());
        let params = init_params::<f32>(&layout, 1);
        let items: Vec<u32> = (0..8).collect();
        let plan = EpochPlan::new(1, 0, 1e-3, &items);
        for device in device_kinds() {
            let opt = Optimizer::new(OptimizerKind::Adadelta, layout.total);
            let mut engine = GpuEngine::new(Gpu::open(device).unwrap(), &layout, &cfg, &data, &params, &opt).unwrap();
            engine.set_batch(&items).unwrap();
            for op in STEP_OPS {
                engine.time_op(op, &plan, 1).unwrap();
                assert!(engine.op_cost(op).bytes > 0, "{op:?}");
            }
            engine.time_graph_steps(&plan, 2).unwrap();
            // The bench's split-K sweep: each target brings its own scratch
            // (1024 needs more than the default's), and every target's
            // gradient is the same to rounding (2e-3 of each tensor's
            // largest, as in training_step_matches_cpu).
            let mut grads = Vec::new();
            for target in [0, iwtvae::cuda::linear::SPLIT_TARGET_BLOCKS, 1024] {
                engine.set_split_target(target).unwrap();
                engine.time_graph_steps(&plan, 1).unwrap();
                let mut fresh =
                    GpuEngine::new(Gpu::open(device).unwrap(), &layout, &cfg, &data, &params, &opt).unwrap();
                fresh.set_split_target(target).unwrap();
                fresh.single_step(&items, &plan).unwrap();
                grads.push(fresh.gradients().unwrap());
            }
            for e in &layout.entries {
                let r = e.offset..e.offset + e.len;
                let scale = grads[0][r.clone()].iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
                for g in &grads[1..] {
                    for i in r.clone() {
                        assert!((g[i] - grads[0][i]).abs() <= 2e-3 * scale, "{}[{}]", e.name, i - e.offset);
                    }
                }
            }
            // The evaluator's kernels on the model the bench times: the seed
            // protocol's, whose shared-memory needs are the largest.
            let seed_layout = Layout::new(TrainConfig::seed_protocol().model_config(28, 28).unwrap());
            let seed_params = init_params::<f32>(&seed_layout, 1);
            let net = iwtvae::network::Network::<f32>::new(seed_layout);
            let g = Gpu::open(device).unwrap();
            for precision in [Precision::Fp32, Precision::Tf32, Precision::Bf16] {
                let timings = g.time_eval_kernels(&net, &seed_params, 64, precision, 1).unwrap();
                assert_eq!(timings.len(), 2);
            }
        }
    }
}
