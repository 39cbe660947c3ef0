//! The elementwise and per-row kernels (noise, grids, bilinear sampling,
//! importance weighting, objectives, optimizers) run on the CPU emulator
//! (crates/cuda-emu) against the CPU spec. This is the kernels' logic,
//! tested in CI where there is no GPU; tests/gpu_parity.rs repeats the
//! comparison on a real GPU. Tolerances say why they are what they are; the
//! emulator evaluates expf/logf/sqrtf with the host's libm.
mod emu;
use emu::*;
use iwtvae::model::Transform;
use iwtvae::ops::grid::Warp;
use iwtvae::ops::grid_sample::{grid_sample_row, grid_sample_row_backward};
use iwtvae::ops::logsumexp::{logsumexp, normalized_weights, GroupedLse};
use iwtvae::optim::{Optimizer, OptimizerKind};
use iwtvae::rng::{NoiseKey, Stream};

/// SPEC §3: the uniforms are the CPU's, bit for bit.
#[test]
fn philox_uniforms_are_bit_identical() {
    let key = NoiseKey::new(0xDEAD_BEEF_1234, Stream::EvalEps, 3);
    let items = [0u32, 7, 123_456];
    let (k, s0, dims) = (3, 11, 37);
    let rows = items.len() * k;
    let (out, it) = (output(rows * dims), input(&items));
    let (k0, k1, hi) = key.words();
    let args =
        [out.arg(), it.arg(), i32_(rows), i32_(k), i32_(s0), i32_(dims), Arg::U32(k0), Arg::U32(k1), Arg::U32(hi)];
    run("philox_uniforms", cfg1(rows * dims.div_ceil(4), 256), &args);
    let mut want = vec![0f32; rows * dims];
    for (b, &item) in items.iter().enumerate() {
        for s in 0..k {
            let r = b * k + s;
            key.uniforms(item, (s0 + s) as u32, &mut want[r * dims..(r + 1) * dims]);
        }
    }
    assert_eq!(read(&out), want);
}

/// Normals go through each side's ln/sin/cos (the CPU's own ≤ 3-ulp
/// versions, the host libm here): |n| ≤ 6 agrees to ~5e-6.
#[test]
fn philox_normals_agree() {
    let key = NoiseKey::new(5, Stream::TrainEps, 9);
    let items = [2u32, 3];
    let (k, dims) = (4, 42);
    let (out, it) = (output(2 * k * dims), input(&items));
    let (k0, k1, hi) = key.words();
    let args = [out.arg(), it.arg(), i32_(8), i32_(k), i32_(0), i32_(dims), Arg::U32(k0), Arg::U32(k1), Arg::U32(hi)];
    run("philox_normals", cfg1(8 * dims.div_ceil(4), 256), &args);
    let mut want = vec![0f32; 2 * k * dims];
    for (b, &item) in items.iter().enumerate() {
        for s in 0..k {
            let r = b * k + s;
            key.normals(item, s as u32, &mut want[r * dims..(r + 1) * dims]);
        }
    }
    close("normals", &read(&out), &want, 1e-5);
}

/// Training targets: byte/255, or the dynamic binarization of
/// Dataset::targets (the same uniforms, so the same bits).
#[test]
fn philox_targets_match_the_dataset() {
    let data = iwtvae::data::Dataset::load(std::path::Path::new("data/mnist"), iwtvae::data::Split::Train, Some(64))
        .expect("the bundled MNIST");
    let d = data.pixels();
    let bytes: Vec<u8> = (0..data.len()).flat_map(|i| data.image(i).to_vec()).collect();
    let items = [5u32, 0, 63, 17];
    let key = NoiseKey::new(77, Stream::TrainBinarize, 2);
    for binarize in [iwtvae::data::Binarize::None, iwtvae::data::Binarize::Dynamic] {
        let (img, it, x) = (input(&bytes), input(&items), output(items.len() * d));
        let (k0, k1, hi) = key.words();
        let bin = Arg::I32((binarize == iwtvae::data::Binarize::Dynamic) as i32);
        let args =
            [img.arg(), it.arg(), x.arg(), i32_(items.len()), i32_(d), bin, Arg::U32(k0), Arg::U32(k1), Arg::U32(hi)];
        run("philox_targets", cfg1(items.len() * d, 256), &args);
        let mut want = vec![0f32; items.len() * d];
        let mut scratch = vec![0f32; d];
        for (b, &item) in items.iter().enumerate() {
            data.targets(item as usize, binarize, key, &mut scratch, &mut want[b * d..(b + 1) * d]);
        }
        assert_eq!(read(&x), want, "{binarize:?}");
    }
}

/// Coordinates that reach every border case: inside, outside both ways,
/// exactly on the edge, NaN and ∞.
fn sample_inputs(rows: usize, h: usize, w: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let d = h * w;
    let c = values(rows * d, 1, 0.0, 1.0);
    let mut xs: Vec<f32> = (0..rows * d).map(|i| ((i as f32) * 0.37).sin() * 1.3).collect();
    let mut ys: Vec<f32> = (0..rows * d).map(|i| ((i as f32) * 0.11).cos() * 1.2).collect();
    xs[5] = f32::NAN;
    ys[9] = f32::INFINITY;
    xs[11] = f32::NEG_INFINITY;
    xs[d + 3] = 1.0;
    ys[d + 4] = -1.0;
    (c, xs, ys)
}

/// Four products and three sums per pixel in the CPU's order: the emulator
/// does not contract FMAs, so 1e-6 covers libm-free arithmetic differences
/// of operand order only.
#[test]
fn grid_sample_forward_matches_cpu() {
    let (rows, h, w) = (3, 5, 6);
    let d = h * w;
    let (c, xs, ys) = sample_inputs(rows, h, w);
    let (dc, dx, dy, out) = (input(&c), input(&xs), input(&ys), output(c.len()));
    let args = [dc.arg(), dx.arg(), dy.arg(), out.arg(), i32_(rows), i32_(h), i32_(w)];
    run("grid_sample_fwd", pixels_by_rows(d, rows, 0), &args);
    let mut want = vec![0f32; c.len()];
    for r in 0..rows {
        let s = r * d..(r + 1) * d;
        grid_sample_row(&c[s.clone()], h, w, &xs[s.clone()], &ys[s.clone()], &mut want[s]);
    }
    close("grid_sample_fwd", &read(&out), &want, 1e-6);
}

/// dc sums up to 4·D contributions per source pixel in another order
/// (atomics here in thread order, the CPU's even/odd scatter): 1e-5.
#[test]
fn grid_sample_backward_matches_cpu() {
    let (rows, h, w) = (2, 28, 28);
    let d = h * w;
    let (c, xs, ys) = sample_inputs(rows, h, w);
    let dout = values(c.len(), 2, -1.0, 1.0);
    let (bc, bx, by, bg) = (input(&c), input(&xs), input(&ys), input(&dout));
    let (dc, dxs, dys) = (zeros(c.len()), output(c.len()), output(c.len()));
    let args = [bc.arg(), bx.arg(), by.arg(), bg.arg(), dc.arg(), dxs.arg(), dys.arg(), i32_(rows), i32_(h), i32_(w)];
    run("grid_sample_bwd", pixels_by_rows(d, rows, 0), &args);
    let (mut wdc, mut wdx, mut wdy) = (vec![0f32; c.len()], vec![0f32; c.len()], vec![0f32; c.len()]);
    for r in 0..rows {
        let s = r * d..(r + 1) * d;
        let (dcr, dxr, dyr) = (&mut wdc[s.clone()], &mut wdx[s.clone()], &mut wdy[s.clone()]);
        grid_sample_row_backward(&c[s.clone()], h, w, &xs[s.clone()], &ys[s.clone()], &dout[s], dcr, dxr, dyr);
    }
    close("dc", &read(&dc), &wdc, 1e-5);
    close("dxs", &read(&dxs), &wdx, 1e-6);
    close("dys", &read(&dys), &wdy, 1e-6);
}

/// Sums of nb ≤ 9 products in the CPU's order: 1e-6.
#[test]
fn grid_generation_matches_cpu() {
    for transform in [Transform::Affine, Transform::Tps] {
        let warp = Warp::<f32>::new(&small_config(transform));
        let (rows, d, nb) = (5, 784, warp.nb);
        let theta = thetas(&warp, rows);
        let (b, t, xs, ys) = (input(warp.basis_by_function()), input(&theta), output(rows * d), output(rows * d));
        let args = [b.arg(), t.arg(), xs.arg(), ys.arg(), i32_(rows), i32_(d), i32_(nb)];
        run("grid_fwd", pixels_by_rows(d, rows, 2 * nb * 4), &args);
        let (xs, ys) = (read(&xs), read(&ys));
        for r in 0..rows {
            let (mut wx, mut wy) = (vec![0f32; d], vec![0f32; d]);
            warp.grid_row(&theta[r * 2 * nb..(r + 1) * 2 * nb], &mut wx, &mut wy);
            close("grid xs", &xs[r * d..(r + 1) * d], &wx, 1e-6);
            close("grid ys", &ys[r * d..(r + 1) * d], &wy, 1e-6);
        }
    }
}

/// f32 with lane-strided partial sums against f64 over k ≤ 5000 terms:
/// 1e-5 relative. Rows that are all −∞ give −∞ and NaN coefficients.
#[test]
fn iwae_weights_match_cpu() {
    for k in [1usize, 5, 37, 5000] {
        let images = 3;
        let mut logw: Vec<f32> = (0..images * k).map(|i| -90.0 + 15.0 * ((i as f32) * 0.31).sin()).collect();
        logw[2 * k..].iter_mut().for_each(|v| *v = f32::NEG_INFINITY);
        let (lw, lse, coef) = (input(&logw), output(images), output(images * k));
        let args = [lw.arg(), lse.arg(), coef.arg(), i32_(images), i32_(k), Arg::F32(0.5)];
        run("iwae_weights", LaunchConfig::new((blocks(images, 8), 1, 1), (256, 1, 1), 0), &args);
        let (lse, coef) = (read(&lse), read(&coef));
        for b in 0..2 {
            let v: Vec<f64> = logw[b * k..(b + 1) * k].iter().map(|&x| x as f64).collect();
            let want = logsumexp(&v);
            assert!((lse[b] as f64 - want).abs() < 1e-5 * want.abs(), "k {k}: {} vs {want}", lse[b]);
            let mut wt = vec![0f64; k];
            normalized_weights(&v, &mut wt);
            let want: Vec<f32> = wt.iter().map(|w| (-w * 0.5) as f32).collect();
            close("coef", &coef[b * k..(b + 1) * k], &want, 1e-5);
        }
        assert_eq!(lse[2], f32::NEG_INFINITY);
        assert!(coef[2 * k..].iter().all(|c| c.is_nan()));
    }
}

/// The streaming logsumexp over chunks equals the logsumexp of all the
/// log-weights (f32 accumulators vs f64: 1e-6 relative), the effective
/// sample size from its two sums is (Σw)²/Σw² (1e-5 relative: a square of
/// f32 sums), the mean of log w is their sum, and the first chunk's first
/// log p(x|·) is recorded.
#[test]
fn lse_fold_streams_to_the_full_logsumexp() {
    let (images, kk, chunks) = (9, 70, 4);
    // A spread of 8 nats keeps dozens of samples in the effective size.
    let all: Vec<Vec<f32>> = (0..chunks).map(|c| values(images * kk, 10 + c as u32, -98.0, -90.0)).collect();
    let logpx = values(images * kk, 99, -120.0, -60.0);
    let (m, s, mean) = (input(&vec![f32::NEG_INFINITY; images]), zeros(images), zeros(images));
    let s2 = zeros(images);
    let (first, lpx) = (output(images), input(&logpx));
    for (c, chunk) in all.iter().enumerate() {
        let lw = input(chunk);
        let args = [
            lw.arg(),
            m.arg(),
            s.arg(),
            s2.arg(),
            mean.arg(),
            i32_(images),
            i32_(kk),
            lpx.arg(),
            first.arg(),
            Arg::I32((c == 0) as i32),
        ];
        run("lse_fold", LaunchConfig::new((blocks(images, 8), 1, 1), (256, 1, 1), 0), &args);
    }
    let (m, s, s2, mean, first) = (read(&m), read(&s), read(&s2), read(&mean), read(&first));
    for b in 0..images {
        let v: Vec<f64> = all.iter().flat_map(|c| c[b * kk..(b + 1) * kk].iter().map(|&x| x as f64)).collect();
        let want = logsumexp(&v);
        let got = m[b] as f64 + (s[b] as f64).ln();
        assert!((got - want).abs() < 1e-6 * want.abs(), "image {b}: {got} vs {want}");
        let w: Vec<f64> = v.iter().map(|x| (x - want).exp()).collect();
        let ess = w.iter().sum::<f64>().powi(2) / w.iter().map(|x| x * x).sum::<f64>();
        let got_ess = (s[b] as f64).powi(2) / s2[b] as f64;
        assert!((got_ess - ess).abs() < 1e-5 * ess && ess > 10.0, "image {b}: ess {got_ess} vs {ess}");
        let total: f64 = v.iter().sum();
        assert!((mean[b] as f64 - total).abs() < 1e-5 * total.abs(), "image {b}: sum {} vs {total}", mean[b]);
        assert_eq!(first[b], logpx[b * kk]);
    }
}

/// `eval --bounds`: the grouped bounds fold chunk by chunk, groups spanning
/// chunks, as GroupedLse does. Both sides work in f64 from the same f32
/// log-weights; only exp/log differ (the host's libm here, CUDA's ≤ 1-ulp
/// double functions on a GPU), so 1e-12 relative. Image 1 holds a NaN in
/// its second group of 4 (that group is NaN, so the bound is too) and image 2
/// two whole groups of 4 at −∞ (the bound is −∞, a loss of +∞).
#[test]
fn bound_fold_matches_the_grouped_logsumexp() {
    let (images, kk, chunks) = (3, 45, 4);
    let sizes = [1i32, 4, 12, 36, 180];
    let mut all: Vec<Vec<f32>> = (0..chunks).map(|c| values(images * kk, 40 + c as u32, -130.0, -80.0)).collect();
    all[0][kk + 5] = f32::NAN;
    for v in &mut all[1][2 * kk..2 * kk + 12] {
        *v = f32::NEG_INFINITY; // image 2, samples 45..57: two whole groups of 4 (48..56)
    }
    let nb = sizes.len();
    let (sz, state) = (input(&sizes), input(&vec![0f64; images * nb * 3]));
    for (c, chunk) in all.iter().enumerate() {
        let lw = input(chunk);
        let args = [lw.arg(), sz.arg(), state.arg(), i32_(images), i32_(nb), i32_(kk), i32_(c * kk)];
        run("bound_fold", cfg1(images * nb, 128), &args);
    }
    let state = read(&state);
    for b in 0..images {
        for (j, &size) in sizes.iter().enumerate() {
            let mut want = GroupedLse::new(size as usize);
            all.iter().flat_map(|c| &c[b * kk..(b + 1) * kk]).for_each(|&x| want.push(x as f64));
            let want = want.value();
            let got = state[(b * nb + j) * 3 + 2] / (chunks * kk / size as usize) as f64;
            let ok = if want.is_finite() {
                (got - want).abs() <= 1e-12 * want.abs()
            } else {
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan())
            };
            assert!(ok, "image {b}, groups of {size}: {got} vs {want}");
        }
    }
    assert!(state[(nb + 1) * 3 + 2].is_nan(), "image 1's NaN reaches its groups of 4");
    assert_eq!(state[(2 * nb + 1) * 3 + 2], f64::NEG_INFINITY, "image 2's groups of −∞");
}

/// src/objective.rs in f64 from the same inputs: iwae (logsumexp and the
/// normalized weights), elbo (the mean) and elbo-kl (analytic KL); f32 sums
/// of ≤ 32 lane partials: 1e-5 relative.
#[test]
fn objective_terms_match_the_objectives() {
    let (images, z, u) = (5, 6, 4);
    // dreg: iwae-dreg (mode 0 with dreg = 1); mode 1 ignores it (elbo-stl).
    for (mode, k, dreg) in [(0, 7, 0), (1, 7, 0), (2, 1, 0), (0, 7, 1), (1, 7, 1)] {
        let n = images * k;
        let logw = values(n, 1, -120.0, -80.0);
        let logpx = values(n, 2, -110.0, -70.0);
        let (mu_z, ls_z) = (values(images * z, 3, -1.0, 1.0), values(images * z, 4, -2.0, 0.5));
        let (mu_u, ls_u) = (values(images * u, 5, -1.0, 1.0), values(images * u, 6, -2.0, 0.5));
        let mut ins = [input(&logw), input(&logpx), input(&mu_z), input(&ls_z), input(&mu_u), input(&ls_u)];
        let (loss, cpx, cw, cd) = (output(images), output(n), output(n), output(n));
        let mut args: Vec<Arg> = ins.iter_mut().map(|b| b.arg()).collect();
        args.extend([loss.arg(), cpx.arg(), cw.arg(), cd.arg(), i32_(images), i32_(k), i32_(z), i32_(u)]);
        args.extend([Arg::I32(mode), Arg::I32(dreg)]);
        run("objective_terms", cfg1(32 * images, 256), &args);
        let (loss, cpx, cw, cd) = (read(&loss), read(&cpx), read(&cw), read(&cd));
        let inv_b = 1.0 / images as f64;
        for b in 0..images {
            let v: Vec<f64> = logw[b * k..(b + 1) * k].iter().map(|&x| x as f64).collect();
            let mut want_dlat = vec![1.0; k];
            let (want_loss, want_px, want_w): (f64, Vec<f64>, Vec<f64>) = match mode {
                0 => {
                    let mut wt = vec![0f64; k];
                    normalized_weights(&v, &mut wt);
                    let c: Vec<f64> = wt.iter().map(|w| -w * inv_b).collect();
                    let cw = if dreg == 1 {
                        want_dlat = wt.clone();
                        wt.iter().map(|w| -w * w * inv_b).collect()
                    } else {
                        c.clone()
                    };
                    (-(logsumexp(&v) - (k as f64).ln()), c, cw)
                }
                1 => (-v.iter().sum::<f64>() / k as f64, vec![-inv_b / k as f64; k], vec![-inv_b / k as f64; k]),
                _ => {
                    let kl: f64 = (0..z)
                        .map(|d| (mu_z[b * z + d] as f64, ls_z[b * z + d] as f64))
                        .chain((0..u).map(|d| (mu_u[b * u + d] as f64, ls_u[b * u + d] as f64)))
                        .map(|(m, l)| 0.5 * ((2.0 * l).exp() + m * m - 1.0 - 2.0 * l))
                        .sum();
                    (-(logpx[b] as f64 - kl), vec![-inv_b], vec![0.0])
                }
            };
            let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
            close(&format!("mode {mode} loss"), &loss[b..b + 1], &[want_loss as f32], 1e-5);
            close(&format!("mode {mode} coef_px"), &cpx[b * k..(b + 1) * k], &f(&want_px), 1e-5);
            close(&format!("mode {mode} coef_w"), &cw[b * k..(b + 1) * k], &f(&want_w), 1e-5);
            close(&format!("mode {mode} dreg {dreg} coef_dlat"), &cd[b * k..(b + 1) * k], &f(&want_dlat), 1e-5);
        }
    }
}

/// The batch loss: the mean of the images' losses over one warp.
#[test]
fn mean_into_is_the_mean() {
    for n in [1usize, 31, 100] {
        let v = values(n, 7, 80.0, 120.0);
        let (bv, out) = (input(&v), output(1));
        run("mean_into", cfg1(32, 32), &[bv.arg(), out.arg(), i32_(n)]);
        let want = v.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        close("mean", &read(&out), &[want as f32], 1e-6);
    }
}

fn optimizer_inputs(n: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    (values(n, 1, -1.0, 1.0), values(n, 2, -1.0, 1.0), values(n, 3, 0.0, 0.1), values(n, 4, 0.0, 0.01))
}

fn optimizer_grid(n: usize) -> LaunchConfig {
    LaunchConfig::new((blocks(n, 256).min(4096), 1, 1), (256, 1, 1), 0)
}

/// The CPU's expression order; sqrtf and division correctly rounded on both
/// sides: 1e-6. n is past one grid-stride pass (4096 blocks of 256).
#[test]
fn adadelta_matches_cpu() {
    let n = 4096 * 256 + 1000;
    let (p0, g, s1, s2) = optimizer_inputs(n);
    let mut opt = Optimizer::new(OptimizerKind::Adadelta, n);
    opt.s1.copy_from_slice(&s1);
    opt.s2.copy_from_slice(&s2);
    let mut want = p0.clone();
    opt.step(&mut want, &g, 0.7);
    let (p, bg, bs1, bs2) = (input(&p0), input(&g), input(&s1), input(&s2));
    let bad = Buffer::from_slice(&[0i32]);
    let args = [p.arg(), bg.arg(), bs1.arg(), bs2.arg(), Arg::I64(n as i64), Arg::F32(0.7), bad.arg()];
    run("adadelta_step", optimizer_grid(n), &args);
    close("params", &read(&p), &want, 1e-6);
    close("square_avg", &read(&bs1), &opt.s1, 1e-6);
    close("acc_delta", &read(&bs2), &opt.s2, 1e-6);
    assert_eq!(read(&bad), [0], "finite gradients flagged");
}

/// Three Adam steps with the step count kept on the device (count_step, then
/// adam_step_dev, as the captured training graph runs them): the device's
/// powf vs the CPU's powi differ by an ulp, so 1e-6.
#[test]
fn adam_matches_cpu() {
    let n = 5000;
    let (p0, g, _, _) = optimizer_inputs(n);
    let mut opt = Optimizer::new(OptimizerKind::Adam, n);
    let mut want = p0.clone();
    let (p, bg, m, v) = (input(&p0), input(&g), zeros(n), zeros(n));
    let (t, bad) = (Buffer::from_slice(&[0i64]), Buffer::from_slice(&[0i32]));
    for _ in 0..3 {
        opt.step(&mut want, &g, 1e-3);
        run("count_step", cfg1(1, 1), &[t.arg()]);
        let args = [p.arg(), bg.arg(), m.arg(), v.arg(), Arg::I64(n as i64), Arg::F32(1e-3), t.arg(), bad.arg()];
        run("adam_step_dev", optimizer_grid(n), &args);
    }
    assert_eq!(read(&t), [3]);
    close("params", &read(&p), &want, 1e-6);
    close("exp_avg", &read(&m), &opt.s1, 1e-6);
    close("exp_avg_sq", &read(&v), &opt.s2, 1e-6);
    assert_eq!(read(&bad), [0], "finite gradients flagged");
}

/// The training loop's gradient check, made by each optimizer step as it
/// reads the gradient: set exactly when a value is not finite, wherever it
/// lies (the last of 3000, past the first grid-stride pass of 4 blocks).
#[test]
fn optimizer_steps_flag_nan_and_infinity() {
    let n = 3000;
    for kernel in ["adadelta_step", "adam_step_dev"] {
        for bad_value in [None, Some(f32::NAN), Some(f32::INFINITY), Some(f32::NEG_INFINITY)] {
            let mut g = values(n, 1, -1.0, 1.0);
            if let Some(v) = bad_value {
                g[n - 1] = v;
            }
            let (p, bg, s1, s2) = (zeros(n), input(&g), zeros(n), zeros(n));
            let (t, flag) = (Buffer::from_slice(&[1i64]), Buffer::from_slice(&[0i32]));
            let mut args = vec![p.arg(), bg.arg(), s1.arg(), s2.arg(), Arg::I64(n as i64), Arg::F32(1e-3)];
            if kernel == "adam_step_dev" {
                args.push(t.arg());
            }
            args.push(flag.arg());
            run(kernel, LaunchConfig::new((4, 1, 1), (256, 1, 1), 0), &args);
            assert_eq!(read(&flag), [bad_value.is_some() as i32], "{kernel} {bad_value:?}");
        }
    }
}

/// The epoch's bookkeeping on the device (src/cuda/train.rs run_epoch):
/// 10 images in batches of 4 are 3 steps, the last of 2; each step's batch
/// comes from the permutation at the counter, record_step files the loss
/// and flag under that step and moves the counter on, which wraps after the
/// epoch's last step (as the kernel benches' replays do).
#[test]
fn batch_items_and_record_step_walk_the_epoch() {
    let perm: Vec<u32> = vec![7, 3, 9, 0, 5, 1, 8, 2, 6, 4];
    let (stride, steps) = (4usize, 3usize);
    let bperm = input(&perm);
    let counter = Buffer::from_slice(&[0i32]);
    let items = Buffer::from_slice(&[u32::MAX; 4]);
    let (loss_hist, bad_hist) = (output(steps), Buffer::from_slice(&[-1i32; 3]));
    let mut want_hist = vec![0f32; steps];
    for (step, count) in [(0, 4), (1, 4), (2, 2), (0, 4)] {
        let args = [bperm.arg(), Arg::I64(10), counter.arg(), i32_(steps), i32_(stride), i32_(count), items.arg()];
        run("batch_items", cfg1(count, 256), &args);
        assert_eq!(read(&items)[..count], perm[step * stride..step * stride + count], "step {step}");
        let (loss, bad) = (input(&[step as f32 + 0.5]), Buffer::from_slice(&[(step == 1) as i32]));
        let args = [loss.arg(), bad.arg(), loss_hist.arg(), bad_hist.arg(), counter.arg(), i32_(steps)];
        run("record_step", cfg1(1, 32), &args);
        want_hist[step] = step as f32 + 0.5;
        assert_eq!(read(&counter), [step as i32 + 1], "the counter after step {step}");
    }
    assert_eq!(read(&loss_hist), want_hist);
    assert_eq!(read(&bad_hist), [0, 1, 0]);
}

/// The emulator checks what cudarc cannot: a launch whose arguments do not
/// match the kernel's parameter types (here an i32 count where the kernel
/// takes a long long), that asks for more shared memory than it opted into,
/// or for a larger block than the kernel was compiled for, is refused with
/// the kernel's name.
#[test]
fn the_emulator_refuses_mistyped_and_oversized_launches() {
    let (p, g, s1, s2) = (zeros(10), zeros(10), zeros(10), zeros(10));
    let bad = Buffer::from_slice(&[0i32]);
    let args = [p.arg(), g.arg(), s1.arg(), s2.arg(), Arg::I32(10), Arg::F32(0.1), bad.arg()];
    // SAFETY: the launch is refused before anything runs.
    let err = unsafe { cuda_emu::launch("adadelta_step", cfg1(10, 256), &args) }.unwrap_err();
    assert!(err.contains("adadelta_step") && err.contains("argument kinds"), "{err}");

    let warp = Warp::<f32>::new(&small_config(Transform::Tps));
    let (b, t, xs, ys) = (input(warp.basis_by_function()), input(&thetas(&warp, 1)), output(784), output(784));
    let args = [b.arg(), t.arg(), xs.arg(), ys.arg(), i32_(1), i32_(784), i32_(warp.nb)];
    // SAFETY: as above.
    let err = unsafe { cuda_emu::launch("grid_fwd", pixels_by_rows(784, 1, 64 * 1024), &args) }.unwrap_err();
    assert!(err.contains("grid_fwd") && err.contains("shared memory"), "{err}");

    // Every kernel is compiled for blocks of at most 256 threads
    // (__launch_bounds__): more is refused, as on a GPU, where the
    // registers it was given would not suffice.
    // add_theta_id(θ, θ_id, R, T): θ[t] += θ_id[t % T] for t < R·T.
    let (theta, theta_id) = (input(&[1f32; 8]), input(&[1f32; 8]));
    let args = [theta.arg(), theta_id.arg(), i32_(1), i32_(8)];
    // SAFETY: refused before anything runs.
    let err = unsafe { cuda_emu::launch("add_theta_id", cfg1(8, 512), &args) }.unwrap_err();
    assert!(err.contains("add_theta_id") && err.contains("__launch_bounds__ (256)"), "{err}");
    run("add_theta_id", cfg1(8, 256), &args);
}

/// The emulator's own checks, which every other test relies on: a write
/// past a buffer's end is reported right after the launch, naming the
/// argument; a pointer into no live buffer is refused before it runs.
#[test]
fn emulator_reports_out_of_bounds_writes_and_stray_pointers() {
    // add_theta_id(θ, θ_id, R, T) writes θ[t] += θ_id[t % T] for t < R·T;
    // adding 1 changes the guard bytes' value.
    let (theta, theta_id) = (input(&[1f32; 8]), input(&[1f32; 8]));
    let short = input(&[1f32; 6]);
    if cuda_emu::address_sanitized() {
        eprintln!("SKIPPED the guard-zone check: under AddressSanitizer the overrun stops the process instead");
    } else {
        // R·T = 8 into a θ of 6.
        // SAFETY: the overrun lands in the buffer's guard zone (256 bytes).
        let err =
            unsafe { cuda_emu::launch("add_theta_id", cfg1(8, 256), &[short.arg(), theta_id.arg(), i32_(1), i32_(8)]) }
                .expect_err("a write past the end of argument 0");
        assert!(err.contains("argument 0") && err.contains("past the end"), "{err}");
    }
    let stray = [0f32; 8];
    let stray_args = [theta.arg(), Arg::Ptr(stray.as_ptr() as *mut _), i32_(1), i32_(8)];
    // SAFETY: refused before the kernel runs.
    let err = unsafe { cuda_emu::launch("add_theta_id", cfg1(8, 256), &stray_args) }
        .expect_err("a pointer that is not a buffer's");
    assert!(err.contains("argument 1") && err.contains("no live buffer"), "{err}");
    // In bounds, the same launch is fine.
    run("add_theta_id", cfg1(8, 256), &[theta.arg(), theta_id.arg(), i32_(1), i32_(8)]);
}

/// Under scripts/emu-asan.sh, an out-of-bounds *read* (which the guard-zone
/// check cannot see) stops the process with AddressSanitizer's report. The
/// test reruns itself as a child that makes the bad launch.
#[test]
fn address_sanitizer_stops_out_of_bounds_reads() {
    const CHILD: &str = "IWTVAE_EMU_ASAN_CHILD";
    if !cuda_emu::address_sanitized() {
        eprintln!("SKIPPED: the kernels were not built under AddressSanitizer (scripts/emu-asan.sh runs this)");
        return;
    }
    if std::env::var_os(CHILD).is_some() {
        // add_theta_id(θ, θ_id, R, T) reads θ_id[t % T]: T = 8 from a buffer of 6.
        let (theta, short) = (input(&[1f32; 8]), input(&[1f32; 6]));
        // SAFETY: the overread lands in the guard zone, which ASan reports.
        let _ =
            unsafe { cuda_emu::launch("add_theta_id", cfg1(8, 256), &[theta.arg(), short.arg(), i32_(1), i32_(8)]) };
        return;
    }
    let me = std::env::current_exe().unwrap();
    let out = std::process::Command::new(me)
        .args(["--exact", "address_sanitizer_stops_out_of_bounds_reads", "--nocapture"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the overread went unnoticed: {err}");
    assert!(
        err.contains("AddressSanitizer") && err.contains("READ of size 4") && err.contains("add_theta_id"),
        "{err}"
    );
}
