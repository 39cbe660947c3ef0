//! The kernels one op at a time against the CPU spec: Philox noise, grid
//! generation and sampling, the IWAE weights, the optimizer, the linear
//! layers (fp32 and TF32, split or not) and the evaluators.
#![allow(clippy::needless_range_loop)]
use super::{close, device_kinds, devices, mnist};
use iwtvae::cuda::Gpu;
use iwtvae::model::{ModelConfig, Transform};
use iwtvae::ops::grid::Warp;
use iwtvae::ops::grid_sample::{grid_sample_row, grid_sample_row_backward};
use iwtvae::ops::logsumexp::{logsumexp, normalized_weights};
use iwtvae::optim::{Optimizer, OptimizerKind};
use iwtvae::rng::{NoiseKey, Stream};

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
                // Groups of 100 span the chunks of 250.
                bounds: vec![1, 7, 100, 700],
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
                // The bounds fold the same log-weights in f64 on both sides.
                for (j, (x, y)) in a.bounds.iter().zip(&b.bounds).enumerate() {
                    assert!((x - y).abs() < 2e-3, "{}: bound {}: gpu {x} cpu {y}", transform.name(), opts.bounds[j]);
                }
                assert_eq!(a.bounds.len(), opts.bounds.len());
                // The effective sample size: f32 sums on the device, f64 on the CPU.
                assert!((a.ess - b.ess).abs() < 1e-3 * b.ess, "{}: ess gpu {} cpu {}", transform.name(), a.ess, b.ess);
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
                GemmMath::Tf32 => (iwtvae::ops::linear::round_to_tf32, 2f64.powi(-23)),
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

/// The precision tests' model and options: an untrained small model whose
/// hidden 40 and 28×28 are not multiples of 16, so the tensor-core tiles'
/// padding is exercised; k = 600 in chunks of 250; fp32.
fn precision_case(
    transform: iwtvae::model::Transform,
) -> (iwtvae::network::Network<f32>, Vec<f32>, iwtvae::eval::EvalOptions) {
    let layout = iwtvae::model::Layout::new(super::emu::small_config(transform));
    let params = iwtvae::model::init_params::<f32>(&layout, 5);
    let opts = iwtvae::eval::EvalOptions {
        k: 600,
        chunk: 250,
        binarize: iwtvae::data::Binarize::Dynamic,
        seed: 4,
        precision: iwtvae::eval::Precision::Fp32,
        bounds: Vec::new(),
    };
    (iwtvae::network::Network::<f32>::new(layout), params, opts)
}

/// Mean and largest |ΔNLL| between two evaluations of the same images.
fn nll_gaps(a: &[iwtvae::eval::ImageEstimate], b: &[iwtvae::eval::ImageEstimate]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    let gaps: Vec<f64> = a.iter().zip(b).map(|(x, y)| (x.nll - y.nll).abs()).collect();
    (gaps.iter().sum::<f64>() / gaps.len() as f64, gaps.iter().fold(0f64, |m, &v| m.max(v)))
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
            return;
        };
        for transform in [Transform::None, Transform::Tps] {
            let (net, params, mut opts) = precision_case(transform);
            let (_, cpu) = iwtvae::eval::evaluate(&net, &params, &data, &opts).unwrap();
            for (precision, bound) in [(Precision::Tf32, 0.05), (Precision::Bf16, 0.5)] {
                opts.precision = precision;
                let (report, rows) = g.evaluate(&net, &params, &data, &opts).unwrap();
                assert_eq!(report.precision, precision.name());
                let (mean, worst) = nll_gaps(&rows, &cpu);
                super::note(&format!(
                    "{} {} {}: mean |ΔNLL| {mean:.5}, max {worst:.5} nats vs CPU fp32",
                    g.kind(),
                    transform.name(),
                    precision.name()
                ));
                assert!(worst < bound, "{} {}: max |ΔNLL| {worst} ≥ {bound}", transform.name(), precision.name());
                for (a, b) in rows.iter().zip(&cpu) {
                    assert!((a.recon_at_mean - b.recon_at_mean).abs() < 2e-3, "recon_at_mean is fp32 in every mode");
                }
            }
        }
    }
}

/// The GPU's bf16 evaluator against the CPU's (`ops::linear_bf16`): the
/// same operands rounded to bf16, fp32 sums in another order (tensor-core
/// fragments vs VDPBF16PS's), so a hidden activation that lands near a
/// bf16 rounding boundary can round the other way on the other device.
/// Measured on the emulator (TPS): mean |ΔNLL| 4e-5, max 1.1e-4 nats, vs
/// 0.02 mean from the CPU's fp32. Bound 0.02: the tensor cores' own
/// accumulation (not IEEE step by step) may add to the emulator's.
#[test]
fn bf16_evaluator_matches_the_cpus_bf16() {
    use iwtvae::eval::Precision;
    use iwtvae::model::Transform;
    for g in devices() {
        let Some(data) = mnist(iwtvae::data::Split::Test, 24) else {
            return;
        };
        for transform in [Transform::None, Transform::Tps] {
            let (net, params, mut opts) = precision_case(transform);
            let (_, cpu_fp32) = iwtvae::eval::evaluate(&net, &params, &data, &opts).unwrap();
            opts.precision = Precision::Bf16;
            let (cpu_report, cpu) = iwtvae::eval::evaluate(&net, &params, &data, &opts).unwrap();
            assert_eq!(cpu_report.precision, "bf16");
            let (_, gpu) = g.evaluate(&net, &params, &data, &opts).unwrap();
            let (mean, worst) = nll_gaps(&gpu, &cpu);
            let (mean_fp32, _) = nll_gaps(&gpu, &cpu_fp32);
            super::note(&format!(
                "{} {} bf16: mean |ΔNLL| {mean:.6}, max {worst:.6} nats vs CPU bf16 ({mean_fp32:.6} vs CPU fp32)",
                g.kind(),
                transform.name(),
            ));
            assert!(worst < 0.02, "{}: max |ΔNLL| {worst} vs the CPU's bf16", transform.name());
            assert!(
                mean < 0.5 * mean_fp32,
                "{}: no closer to CPU bf16 ({mean}) than to fp32 ({mean_fp32})",
                transform.name()
            );
        }
    }
}
