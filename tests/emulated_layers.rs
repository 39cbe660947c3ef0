//! The layer kernels (fully connected layers fp32/TF32/BF16, their
//! backward, the encoder heads and latent backward, the fused training row,
//! the fused evaluator epilogue) run on the CPU emulator (crates/cuda-emu)
//! against the CPU spec, in CI where there is no GPU. tests/gpu_parity.rs
//! repeats the comparison, and whole training steps, on a real GPU.
mod emu;
use emu::*;
use iwtvae::cuda::shapes::{
    COL_SUM_THREADS, FUSED_SAMPLES, FUSED_WARPS, LT_ROWS, LT_WARPS, ROW_THREADS, TC_K_GROUP, TC_ROWS, TC_WARPS,
};
use iwtvae::model::{ModelConfig, Transform};
use iwtvae::ops::fused::{decode_row, decode_row_backward, RowBackward, RowGrid};
use iwtvae::ops::grid::Warp;
use iwtvae::ops::linear::{linear_backward_input, linear_backward_params, linear_forward, relu_backward, Activation};
// cvt.rna.tf32.f32, as the tensor-core kernels round both operands.
use iwtvae::ops::linear::round_to_tf32 as tf32;
use iwtvae::ops::rows::Par;

/// A GEMM's error bound: fp32 sums of K products in different orders differ
/// by ≲ K·ε·Σ|a·b|; 1e-5·(1 + Σ|a·b|) holds that for K ≤ 800.
fn close_gemm(name: &str, got: &[f32], want: &[f32], scale: &[f32]) {
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        assert!((g - w).abs() <= 1e-5 * (1.0 + s), "{name}[{i}]: emulated kernel {g} vs cpu {w} (Σ|ab| {s})");
    }
}

/// Σ_k |a[r, k]·b[c, k]| for the bound above: a [m, k], b [n, k].
fn abs_products(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut s = vec![0f32; m * n];
    for r in 0..m {
        for c in 0..n {
            s[r * n + c] = (0..k).map(|q| (a[r * k + q] * b[c * k + q]).abs()).sum();
        }
    }
    s
}

fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; a.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = a[r * cols + c];
        }
    }
    t
}

/// Shapes that leave partial 64-row, 64-column and 16-deep tiles.
const M: usize = 70;
const N: usize = 90;
const K: usize = 37;

#[test]
fn linear_forward_matches_cpu() {
    let (x, w, b) = (values(M * K, 1, -1.0, 1.0), values(N * K, 2, -1.0, 1.0), values(N, 3, -1.0, 1.0));
    for relu in [false, true] {
        let mut want = vec![0f32; M * N];
        let act = if relu { Activation::Relu } else { Activation::Identity };
        linear_forward(&x, M, &w, &b, N, K, act, &mut want, Par::Seq);
        let (bx, bw, bb, y) = (input(&x), input(&w), input(&b), output(M * N));
        let args = [bx.arg(), bw.arg(), bb.arg(), y.arg(), i32_(M), i32_(N), i32_(K), Arg::I32(relu as i32)];
        run("linear_fwd", gemm_grid(M, N), &args);
        close_gemm("linear_fwd", &read(&y), &want, &abs_products(&x, &w, M, N, K));
    }
}

/// dX = dY·W and dW = dYᵀ·X through gemm_strided's strided views, db by
/// col_sum, the ReLU mask, each with the arguments src/cuda/linear.rs passes.
#[test]
fn linear_backward_matches_cpu() {
    let (x, w, dy) = (values(M * K, 1, -1.0, 1.0), values(N * K, 2, -1.0, 1.0), values(M * N, 4, -1.0, 1.0));
    let (mut bx, mut bw, mut bdy) = (input(&x), input(&w), input(&dy));

    // dx[M, K] = dy[M, N] · W[N, K], accumulated onto a previous dx.
    let dx0 = values(M * K, 5, -1.0, 1.0);
    let mut want_dx = dx0.clone();
    linear_backward_input(&dy, M, &w, N, K, &mut want_dx, true, Par::Seq);
    let mut dx = input(&dx0);
    gemm_strided("gemm_strided", (&mut bdy, (N, 1)), (&mut bw, (K, 1)), &mut dx, (M, K, N), true, None);
    let scale: Vec<f32> = abs_products(&dy, &transpose(&w, N, K), M, K, N).iter().map(|s| s + 1.0).collect();
    close_gemm("dx", &read(&dx), &want_dx, &scale);

    // dW[N, K] = dyᵀ[N, M] · x[M, K]; db[N] = Σ_rows dy.
    let (mut want_dw, mut want_db) = (vec![0f32; N * K], vec![0f32; N]);
    linear_backward_params(&x, &dy, M, N, K, &mut want_dw, &mut want_db, Par::Seq);
    let mut dw = output(N * K);
    gemm_strided("gemm_strided", (&mut bdy, (1, N)), (&mut bx, (K, 1)), &mut dw, (N, K, M), false, None);
    let scale = abs_products(&transpose(&dy, M, N), &transpose(&x, M, K), N, K, M);
    close_gemm("dW", &read(&dw), &want_dw, &scale);
    let db = output(N);
    let cfg = LaunchConfig::new((blocks(N, 32), 1, 1), (COL_SUM_THREADS as u32, 1, 1), 0);
    run("col_sum", cfg, &[bdy.arg(), db.arg(), i32_(M), i32_(N), Arg::I32(0)]);
    close("db", &read(&db), &want_db, 1e-5);
    // Accumulating onto what db holds, over more rows than warps × the unroll.
    let rows = 300;
    let g = values(rows * N, 8, -1.0, 1.0);
    let mut want = values(N, 9, -1.0, 1.0);
    for r in 0..rows {
        for c in 0..N {
            want[c] += g[r * N + c];
        }
    }
    let (bg, acc) = (input(&g), input(&values(N, 9, -1.0, 1.0)));
    run("col_sum", cfg, &[bg.arg(), acc.arg(), i32_(rows), i32_(N), Arg::I32(1)]);
    close("db accumulated", &read(&acc), &want, 1e-5);

    // dx through the ReLU below, h [M, K] (zeros, a NaN and a -0 among its
    // values): bit for bit the unmasked dx (accumulated, as above) with
    // relu_backward applied after, which is what the CPU does.
    let mut h: Vec<f32> = values(M * K, 6, -1.0, 1.0).iter().map(|v| v.max(0.0)).collect();
    (h[1], h[2]) = (f32::NAN, -0.0);
    let bh = input(&h);
    let mut want = read(&dx);
    let mut plain = input(&dx0);
    gemm_strided("gemm_strided", (&mut bdy, (N, 1)), (&mut bw, (K, 1)), &mut plain, (M, K, N), true, None);
    assert_eq!(bits(&read(&plain)), bits(&want), "the same launch twice");
    relu_backward(&h, &mut want);
    let mut masked = input(&dx0);
    gemm_strided("gemm_strided", (&mut bdy, (N, 1)), (&mut bw, (K, 1)), &mut masked, (M, K, N), true, Some(&bh));
    assert_eq!(bits(&read(&masked)), bits(&want), "dx ⊙ relu'(h)");
    assert!(want.iter().filter(|&&v| v == 0.0).count() > M * K / 4, "the mask zeroed too little to tell");
}

/// out[r, c] = Σ_k a[r, k]·b[c, k] (+ bias[c]) in f64, rounded once to f32:
/// a [m, k], b [n, k].
fn exact_products(a: &[f32], b: &[f32], bias: Option<&[f32]>, m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    for r in 0..m {
        for c in 0..n {
            let dot: f64 = (0..k).map(|q| a[r * k + q] as f64 * b[c * k + q] as f64).sum();
            out[r * n + c] = (dot + bias.map_or(0.0, |b| b[c] as f64)) as f32;
        }
    }
    out
}

/// The training step's GEMMs on the TF32 tensor cores (train --precision
/// tf32; src/cuda/linear.rs passes them the fp32 kernels' arguments):
/// each is the exact product of its operands rounded to TF32 (the products
/// of two 11-bit significands are exact, so only the fp32 sums differ from
/// it, within the fp32 kernels' bound), and lies outside that bound of the
/// unrounded product somewhere, so the rounding is real. Bias, the
/// accumulated dx and the ReLU mask are applied in fp32, unrounded.
#[test]
fn tf32_training_gemms_multiply_tf32_rounded_operands() {
    let (x, w, b) = (values(M * K, 1, -1.0, 1.0), values(N * K, 2, -1.0, 1.0), values(N, 3, -1.0, 1.0));
    let dy = values(M * N, 4, -1.0, 1.0);
    let round = |v: &[f32]| -> Vec<f32> { v.iter().map(|&e| tf32(e)).collect() };
    let check = |name: &str, got: &[f32], exact: &[f32], unrounded: &[f32], scale: &[f32]| {
        close_gemm(name, got, exact, scale);
        let outside = got.iter().zip(unrounded).zip(scale).filter(|((g, u), s)| (*g - *u).abs() > 1e-5 * (1.0 + *s));
        assert!(outside.count() > 0, "{name}: indistinguishable from the fp32 product");
    };

    // y [M, N] = act(x · Wᵀ + b).
    for relu in [false, true] {
        let act = |v: Vec<f32>| -> Vec<f32> { v.into_iter().map(|e| if relu { e.max(0.0) } else { e }).collect() };
        let exact = act(exact_products(&round(&x), &round(&w), Some(&b), M, N, K));
        let unrounded = act(exact_products(&x, &w, Some(&b), M, N, K));
        let (bx, bw, bb, y) = (input(&x), input(&w), input(&b), output(M * N));
        let args = [bx.arg(), bw.arg(), bb.arg(), y.arg(), i32_(M), i32_(N), i32_(K), Arg::I32(relu as i32)];
        run("linear_fwd_tile_tf32", gemm_grid(M, N), &args);
        let scale = abs_products(&round(&x), &round(&w), M, N, K);
        check(&format!("linear_fwd_tile_tf32 relu {relu}"), &read(&y), &exact, &unrounded, &scale);
    }

    // dx [M, K] = dy · W + dx0, through the ReLU output h below.
    let (mut bdy, mut bw, mut bx) = (input(&dy), input(&w), input(&x));
    let (wt, dx0) = (transpose(&w, N, K), values(M * K, 5, -1.0, 1.0));
    let h: Vec<f32> = values(M * K, 6, -1.0, 1.0).iter().map(|v| v.max(0.0)).collect();
    let through = |v: Vec<f32>| -> Vec<f32> {
        v.iter().zip(&dx0).zip(&h).map(|((p, d), &hv)| if hv > 0.0 { p + d } else { 0.0 }).collect()
    };
    let exact = through(exact_products(&round(&dy), &round(&wt), None, M, K, N));
    let unrounded = through(exact_products(&dy, &wt, None, M, K, N));
    let (mut dx, bh) = (input(&dx0), input(&h));
    gemm_strided("gemm_strided_tf32", (&mut bdy, (N, 1)), (&mut bw, (K, 1)), &mut dx, (M, K, N), true, Some(&bh));
    let scale: Vec<f32> = abs_products(&round(&dy), &round(&wt), M, K, N).iter().map(|s| s + 1.0).collect();
    check("gemm_strided_tf32 dx", &read(&dx), &exact, &unrounded, &scale);

    // dW [N, K] = dyᵀ · x: A a transposed view.
    let (dyt, xt) = (transpose(&dy, M, N), transpose(&x, M, K));
    let exact = exact_products(&round(&dyt), &round(&xt), None, N, K, M);
    let unrounded = exact_products(&dyt, &xt, None, N, K, M);
    let mut dw = output(N * K);
    gemm_strided("gemm_strided_tf32", (&mut bdy, (1, N)), (&mut bx, (K, 1)), &mut dw, (N, K, M), false, None);
    let scale = abs_products(&round(&dyt), &round(&xt), N, K, M);
    check("gemm_strided_tf32 dW", &read(&dw), &exact, &unrounded, &scale);
}

/// Split-K, bit for bit against its definition: slice z of gemm_partial is
/// gemm_strided on that slice of K (the same tile code on offset operands),
/// and splitk_sum adds the slices in order z = 0, 1, … before the epilogue:
/// bias and ReLU, or a store that may accumulate, through a leading
/// dimension wider than N whose extra columns it must leave alone. K = 150
/// in slices of 64 leaves a short last one (64, 64, 22). The TF32 partials
/// are likewise gemm_strided_tf32 on the slices.
#[test]
fn split_k_partials_are_slices_of_k_summed_in_order() {
    const KS: usize = 150;
    let (chunk, splits) = (64, 3);
    let (x, w, b) = (values(M * KS, 1, -1.0, 1.0), values(N * KS, 2, -1.0, 1.0), values(N, 3, -1.0, 1.0));
    let (bx, bw, bb) = (input(&x), input(&w), input(&b));
    let p = output(splits * M * N);
    let stride = |v: usize| Arg::I64(v as i64);
    // The forward as src/cuda/linear.rs launches it: A = x [M, K], B = Wᵀ.
    let args = [
        bx.arg(),
        stride(KS),
        stride(1),
        bw.arg(),
        stride(1),
        stride(KS),
        p.arg(),
        i32_(M),
        i32_(N),
        i32_(KS),
        i32_(chunk),
    ];
    let grid = gemm_grid(M, N);
    let split_grid = LaunchConfig::new((grid.grid_dim.0, grid.grid_dim.1, splits as u32), grid.block_dim, 0);
    // The TF32 pair (train --precision tf32) first; the fp32 partials stay in p.
    for (partial, strided) in [("gemm_partial_tf32", "gemm_strided_tf32"), ("gemm_partial", "gemm_strided")] {
        run(partial, split_grid, &args);
        let partials = read(&p);
        for z in 0..splits {
            let (k0, kn) = (z * chunk, chunk.min(KS - z * chunk));
            let cols = |a: &[f32], rows: usize| -> Vec<f32> {
                (0..rows).flat_map(|r| a[r * KS + k0..r * KS + k0 + kn].to_vec()).collect()
            };
            let (mut xs, mut ws, mut c) = (input(&cols(&x, M)), input(&cols(&w, N)), output(M * N));
            gemm_strided(strided, (&mut xs, (kn, 1)), (&mut ws, (1, kn)), &mut c, (M, N, kn), false, None);
            assert_eq!(bits(&read(&c)), bits(&partials[z * M * N..(z + 1) * M * N]), "{partial} slice {z}");
        }
    }
    let partials = read(&p);
    let in_order = |i: usize| (0..splits).fold(0f32, |v, z| v + partials[z * M * N + i]);

    for relu in [false, true] {
        let y = output(M * N);
        let args = [
            p.arg(),
            i32_(splits),
            i32_(M),
            i32_(N),
            bb.arg(),
            Arg::I32(1),
            Arg::I32(relu as i32),
            y.arg(),
            i32_(N),
            Arg::I32(0),
            p.arg(),
            Arg::I32(0),
        ];
        run("splitk_sum", cfg1(M * N, 256), &args);
        let want: Vec<f32> = (0..M * N)
            .map(|i| {
                let v = in_order(i) + b[i % N];
                if relu {
                    v.max(0.0)
                } else {
                    v
                }
            })
            .collect();
        assert_eq!(bits(&read(&y)), bits(&want), "layer epilogue, relu {relu}");
    }
    let ldc = N + 3;
    // The ReLU output below, laid out as C (its extra columns never read).
    let h: Vec<f32> = values(M * ldc, 8, -1.0, 1.0).iter().map(|v| v.max(0.0)).collect();
    let bh = input(&h);
    for (accumulate, masked) in [(false, false), (true, false), (false, true), (true, true)] {
        let c0 = values(M * ldc, 7, -1.0, 1.0);
        let c = input(&c0);
        let args = [
            p.arg(),
            i32_(splits),
            i32_(M),
            i32_(N),
            p.arg(),
            Arg::I32(0),
            Arg::I32(0),
            c.arg(),
            i32_(ldc),
            Arg::I32(accumulate as i32),
            if masked { bh.arg() } else { p.arg() },
            Arg::I32(masked as i32),
        ];
        run("splitk_sum", cfg1(M * N, 256), &args);
        let want: Vec<f32> = (0..M * ldc)
            .map(|j| {
                let (r, col) = (j / ldc, j % ldc);
                let v = match (col < N, accumulate) {
                    (false, _) => return c0[j],
                    (true, false) => in_order(r * N + col),
                    (true, true) => c0[j] + in_order(r * N + col),
                };
                if masked && h[j] <= 0.0 {
                    0.0
                } else {
                    v
                }
            })
            .collect();
        assert_eq!(bits(&read(&c)), bits(&want), "store epilogue, accumulate {accumulate}, masked {masked}");
    }
}

/// Split-K in one launch (gemm_splitk, the default): the tile's last block
/// to finish adds the partials, so C must be the same bits as gemm_partial +
/// splitk_sum for every epilogue, whichever block is last (both block
/// orders), with every ticket back at zero afterwards so that the next GEMM
/// (or replay) can use them; the second run below reuses them.
#[test]
fn split_k_in_one_launch_is_the_two_launch_sum_bit_for_bit() {
    const KS: usize = 150;
    let (chunk, splits) = (64, 3);
    let (tiles_x, tiles_y) = (N.div_ceil(64), M.div_ceil(64));
    let (x, w, b) = (values(M * KS, 11, -1.0, 1.0), values(N * KS, 12, -1.0, 1.0), values(N, 13, -1.0, 1.0));
    let (bx, bw, bb) = (input(&x), input(&w), input(&b));
    let ldc = N + 3;
    let h: Vec<f32> = values(M * ldc, 14, -1.0, 1.0).iter().map(|v| v.max(0.0)).collect();
    let bh = input(&h);
    let c0 = values(M * ldc, 15, -1.0, 1.0);
    let stride = |v: usize| Arg::I64(v as i64);
    let grid = gemm_grid(M, N);
    let split_grid = LaunchConfig::new((grid.grid_dim.0, grid.grid_dim.1, splits as u32), grid.block_dim, 0);
    let operands = [bx.arg(), stride(KS), stride(1), bw.arg(), stride(1), stride(KS)];
    // (has_bias, relu, accumulate, masked): the layer's forward, and the stores.
    let epilogues = [(1, 0, 0, 0), (1, 1, 0, 0), (0, 0, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1), (0, 0, 1, 1)];
    for (tf32, fused, partial) in
        [(false, "gemm_splitk", "gemm_partial"), (true, "gemm_splitk_tf32", "gemm_partial_tf32")]
    {
        for (has_bias, relu, accumulate, masked) in epilogues {
            let epilogue = |p: &Buffer<f32>, c: &Buffer<f32>| {
                [
                    if has_bias == 1 { bb.arg() } else { p.arg() },
                    Arg::I32(has_bias),
                    Arg::I32(relu),
                    c.arg(),
                    i32_(ldc),
                    Arg::I32(accumulate),
                    if masked == 1 { bh.arg() } else { p.arg() },
                    Arg::I32(masked),
                ]
            };
            let sizes = [i32_(M), i32_(N), i32_(KS), i32_(chunk)];
            // The two launches.
            let (p, want) = (output(splits * M * N), input(&c0));
            let args: Vec<Arg> = operands.iter().copied().chain([p.arg()]).chain(sizes).collect();
            run(partial, split_grid, &args);
            let head = [p.arg(), i32_(splits), i32_(M), i32_(N)];
            run("splitk_sum", cfg1(M * N, 256), &head.into_iter().chain(epilogue(&p, &want)).collect::<Vec<_>>());
            // One launch, twice with the same tickets, in either block order.
            let tickets = Buffer::from_slice(&vec![0u32; tiles_x * tiles_y]);
            for reverse in [false, true] {
                cuda_emu::set_reverse_block_order(reverse);
                let (p, c) = (output(splits * M * N), input(&c0));
                let args: Vec<Arg> = operands
                    .iter()
                    .copied()
                    .chain([p.arg(), tickets.arg()])
                    .chain(sizes)
                    .chain([i32_(splits)])
                    .chain(epilogue(&p, &c))
                    .collect();
                run(fused, split_grid, &args);
                cuda_emu::set_reverse_block_order(false);
                let what =
                    format!("{fused}, bias {has_bias} relu {relu} acc {accumulate} masked {masked}, reverse {reverse}");
                assert_eq!(bits(&read(&c)), bits(&read(&want)), "{what} (tf32 {tf32})");
                assert!(read(&tickets).iter().all(|&t| t == 0), "{what}: tickets left at {:?}", read(&tickets));
            }
        }
    }
}

fn bf16(v: f32) -> f32 {
    half::bf16::from_f32(v).to_f32()
}

/// Weight [out, inp] zero-padded to [Np, Kp], as src/cuda/eval.rs uploads it:
/// Np a multiple of 16, Kp of the TC_K_GROUP k values whose fragments the
/// kernels load at once.
fn padded(w: &[f32], out: usize, inp: usize) -> (Vec<f32>, usize, usize) {
    let (np, kp) = (out.next_multiple_of(16), inp.next_multiple_of(TC_K_GROUP));
    let mut p = vec![0f32; np * kp];
    for o in 0..out {
        p[o * kp..o * kp + inp].copy_from_slice(&w[o * inp..(o + 1) * inp]);
    }
    (p, np, kp)
}

/// Y = act(X·Wᵀ + b) from operands already rounded, summed in f64.
fn reference_linear(x: &[f32], w: &[f32], b: &[f32], m: usize, n: usize, k: usize, relu: bool) -> Vec<f32> {
    let mut y = vec![0f32; m * n];
    for r in 0..m {
        for c in 0..n {
            let s: f64 = (0..k).map(|q| x[r * k + q] as f64 * w[c * k + q] as f64).sum::<f64>() + b[c] as f64;
            y[r * n + c] = if relu { s.max(0.0) as f32 } else { s as f32 };
        }
    }
    y
}

/// The tensor-core layers compute exactly the products of the rounded
/// operands (TF32: 10-bit mantissas; BF16: 7) with fp32 sums: against the
/// f64 sums of the same rounded operands, 1e-5·(1 + Σ|ab|). k = 37 is one
/// group of fragment loads (64 k values), 150 is three, the last padded.
#[test]
fn tensor_core_linear_layers_round_only_their_operands() {
    for k in [37, 150] {
        tensor_core_linear_layer(70, 40, k);
    }
}

fn tensor_core_linear_layer(m: usize, n: usize, k: usize) {
    let (x, w, b) = (values(m * k, 1, -1.0, 1.0), values(n * k, 2, -1.0, 1.0), values(n, 3, -1.0, 1.0));
    let (wp, np, kp) = padded(&w, n, k);
    for (name, round) in [("linear_fwd_tf32", tf32 as fn(f32) -> f32), ("linear_fwd_bf16", bf16)] {
        let (xr, wr): (Vec<f32>, Vec<f32>) =
            (x.iter().map(|&v| round(v)).collect(), w.iter().map(|&v| round(v)).collect());
        let want = reference_linear(&xr, &wr, &b, m, n, k, true);
        let a_bytes = if name.ends_with("bf16") { 2 } else { 4 };
        let smem = LT_ROWS * np * 4 + LT_ROWS * kp * a_bytes;
        let block = (32 * LT_WARPS as u32, 1, 1);
        let cfg = LaunchConfig::new((blocks(m, LT_ROWS), 1, 1), block, smem as u32).opt_in_shared(smem as u32);
        let (bx, bb, y) = (input(&x), input(&b), output(m * n));
        let w_tf32 = input(&wp);
        let w_bf16 = input(&wp.iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect::<Vec<u16>>());
        let warg = if a_bytes == 2 { w_bf16.arg() } else { w_tf32.arg() };
        let args = [bx.arg(), warg, bb.arg(), y.arg(), i32_(m), i32_(n), i32_(k), i32_(np), i32_(kp), Arg::I32(1)];
        run(name, cfg, &args);
        close_gemm(name, &read(&y), &want, &abs_products(&xr, &wr, m, n, k));
    }
}

/// A tensor-core tile needs a 32-byte aligned pointer and a leading dimension
/// of a multiple of 16 bytes; a GPU faults or misreads otherwise, so the
/// emulator refuses both (the wrappers pad and own their weights, so this is
/// a test of the emulator's check, not of a wrapper).
#[test]
fn tensor_core_tiles_refuse_misaligned_memory() {
    let (m, n, k) = (16, 16, 16);
    let (wp, np, kp) = padded(&values(n * k, 2, -1.0, 1.0), n, k);
    let (x, b, y, w) = (input(&values(m * k, 1, -1.0, 1.0)), input(&vec![0f32; n]), output(m * n), input(&wp));
    let launch = |w_arg: Arg, kp: usize| {
        let smem = LT_ROWS * np * 4 + LT_ROWS * kp * 4;
        let cfg = LaunchConfig::new((1, 1, 1), (32 * LT_WARPS as u32, 1, 1), smem as u32).opt_in_shared(smem as u32);
        let args = [x.arg(), w_arg, b.arg(), y.arg(), i32_(m), i32_(n), i32_(k), i32_(np), i32_(kp), Arg::I32(0)];
        // SAFETY: both faults are caught before the first tile is read.
        unsafe { cuda_emu::launch("linear_fwd_tf32", cfg, &args) }
    };
    // SAFETY: one float into the weight's buffer, inside it.
    let shifted = Arg::Ptr(unsafe { w.ptr().cast::<f32>().add(1) }.cast());
    let err = launch(shifted, kp).expect_err("a weight pointer 4 bytes off");
    assert!(err.contains("load_matrix_sync") && err.contains("not 32-byte aligned"), "{err}");
    let err = launch(w.arg(), kp + 2).expect_err("a row stride of 8 bytes past a multiple of 16");
    assert!(err.contains("leading dimension") && err.contains("16 bytes"), "{err}");
    launch(w.arg(), kp).expect("the same launch, aligned");
}

/// The heads' one GEMM output [B, 2Z + 2U] split into the latent buffers:
/// μz as is, log σ clamped to ±6 for z and u (raw kept), μu = tanh
/// (src/network.rs encode); U = 0 (the plain VAE) touches nothing of u.
#[test]
fn encoder_heads_split_clamp_and_squash() {
    for (b, z, u) in [(7, 5, 3), (4, 6, 0)] {
        let h = 2 * z + 2 * u;
        let heads = values(b * h, 1, -9.0, 9.0);
        let col = |i: usize, c: usize| heads[i * h + c];
        let block = |c0: usize, dim: usize| -> Vec<f32> { (0..b * dim).map(|t| col(t / dim, c0 + t % dim)).collect() };
        let bh = input(&heads);
        // Poisoned outputs, but a zero for the buffers of an absent u.
        let outs: Vec<Buffer<f32>> =
            [z, z, z, u, u, u].iter().map(|&n| if n == 0 { zeros(1) } else { output(b * n) }).collect();
        let mut args = vec![bh.arg(), i32_(b), i32_(z), i32_(u)];
        args.extend(outs.iter().map(|o| o.arg()));
        run("encoder_heads", cfg1(b * h, 256), &args);
        let clamp = |v: Vec<f32>| v.iter().map(|x| x.clamp(-6.0, 6.0)).collect::<Vec<f32>>();
        assert_eq!(read(&outs[0]), block(0, z), "μz");
        assert_eq!(read(&outs[1]), block(z, z), "raw log σz");
        assert_eq!(read(&outs[2]), clamp(block(z, z)), "log σz");
        if u == 0 {
            assert!(outs[3..].iter().all(|o| read(o) == [0.0]), "U = 0 wrote to u");
            continue;
        }
        let tanh: Vec<f32> = block(2 * z, u).iter().map(|x| x.tanh()).collect();
        close("tanh", &read(&outs[3]), &tanh, 1e-6);
        assert_eq!(read(&outs[4]), block(2 * z + u, u), "raw log σu");
        assert_eq!(read(&outs[5]), clamp(block(2 * z + u, u)), "log σu");
    }
}

/// The latent part of src/network.rs backward, written out in f64 from the
/// same inputs, with and without the KL term and the tanh of μu, and the
/// path derivative (iwae-dreg, elbo-stl); raw log σ past the clamp gets no
/// gradient. Sums of k ≤ 5 terms: 1e-5.
#[test]
fn latent_backward_matches_the_network() {
    let (b, k, dim) = (4, 5, 6);
    let (mu, ls, raw) = (values(b * dim, 1, -0.9, 0.9), values(b * dim, 2, -2.0, 1.0), values(b * dim, 3, -8.0, 8.0));
    let (lat, noise, dlat) =
        (values(b * k * dim, 4, -2.0, 2.0), values(b * k * dim, 5, -2.0, 2.0), values(b * k * dim, 6, -1.0, 1.0));
    let (coef_w, coef_dlat) = (values(b * k, 7, -0.3, 0.0), values(b * k, 9, 0.0, 1.0));
    for (kl_scale, tanh_mu, path) in
        [(0.0f32, false, false), (0.25, true, false), (0.0, false, true), (0.0, true, true)]
    {
        let mut ins = [
            input(&mu),
            input(&ls),
            input(&raw),
            input(&lat),
            input(&noise),
            input(&dlat),
            input(&coef_w),
            input(&coef_dlat),
        ];
        // Into columns col.. of a heads' gradient of ld columns, as the
        // engine writes u's (after z's); the other columns stay as they were.
        let (ld, col) = (2 * dim + 5, 3);
        let before = values(b * ld, 8, -1.0, 1.0);
        let dheads = input(&before);
        let mut args: Vec<Arg> = ins.iter_mut().map(|x| x.arg()).collect();
        args.extend([dheads.arg(), i32_(ld), i32_(col), i32_(b), i32_(k), i32_(dim)]);
        args.extend([Arg::F32(kl_scale), Arg::I32(tanh_mu as i32), Arg::I32(path as i32)]);
        run("latent_bwd", cfg1(b * dim, 128), &args);
        let got = read(&dheads);
        let block = |c0: usize| -> Vec<f32> { (0..b * dim).map(|t| got[(t / dim) * ld + c0 + t % dim]).collect() };
        let (dmu, dls) = (block(col), block(col + dim));
        for (j, (&g, &w)) in got.iter().zip(&before).enumerate() {
            let c = j % ld;
            assert!((col..col + 2 * dim).contains(&c) || g.to_bits() == w.to_bits(), "column {c} was written");
        }
        let (mut want_mu, mut want_ls) = (vec![0f32; b * dim], vec![0f32; b * dim]);
        for t in 0..b * dim {
            let (i, d) = (t / dim, t % dim);
            let (mut gm, mut gl) = (0f64, 0f64);
            for s in 0..k {
                let r = i * k + s;
                let (cw, sigma, nz) = (coef_w[r] as f64, (ls[t] as f64).exp(), noise[r * dim + d] as f64);
                if path {
                    let g =
                        coef_dlat[r] as f64 * dlat[r * dim + d] as f64 + cw * (nz / sigma - lat[r * dim + d] as f64);
                    gm += g;
                    gl += g * sigma * nz;
                } else {
                    let g = dlat[r * dim + d] as f64 - cw * lat[r * dim + d] as f64;
                    gm += g;
                    gl += g * sigma * nz + cw;
                }
            }
            let kl = kl_scale as f64;
            gm += kl * mu[t] as f64;
            gl += kl * ((2.0 * ls[t] as f64).exp() - 1.0);
            if raw[t].abs() > 6.0 {
                gl = 0.0;
            }
            if tanh_mu {
                gm *= 1.0 - (mu[t] as f64).powi(2);
            }
            (want_mu[t], want_ls[t]) = (gm as f32, gl as f32);
        }
        close("dmu", &dmu, &want_mu, 1e-5);
        close("dlog_sigma", &dls, &want_ls, 1e-5);
    }
}

/// Binary targets for `images` images.
fn targets(images: usize, d: usize) -> Vec<f32> {
    values(images * d, 11, 0.0, 1.0).iter().map(|&u| if u < 0.3 { 1.0 } else { 0.0 }).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// One CPU forward row: (log p(x|z,u), c, p, gx, gy).
fn cpu_row(warp: &Warp<f32>, logits: &[f32], theta: &[f32], x: &[f32]) -> (f32, Vec<f32>, [Vec<f32>; 3]) {
    let d = logits.len();
    let mut c = logits.to_vec();
    let (mut terms, mut p, mut gx, mut gy) = (vec![0f32; d], vec![0f32; d], vec![0f32; d], vec![0f32; d]);
    let lp =
        decode_row(warp, &mut c, theta, x, false, RowGrid { terms: &mut terms, p: &mut p, gx: &mut gx, gy: &mut gy });
    (lp, c, [p, gx, gy])
}

/// The training row, forward and backward, per transform, against
/// src/ops/fused.rs: c exact up to expf (1e-6), log p(x|·) a block sum of
/// 784 terms in another order (2e-6 relative, ~1e-3 nats), ∂/∂logits with
/// the scatter's atomics in thread order (1e-5), ∂θ sums of 784 products
/// (1e-4 relative to their scale).
#[test]
fn decode_row_matches_the_fused_cpu_row() {
    let (images, k) = (3, 4);
    let rows = images * k;
    let d = 784;
    for transform in [Transform::None, Transform::Affine, Transform::Tps] {
        let warp = Warp::<f32>::new(&small_config(transform));
        let nb = warp.nb;
        let theta = if nb == 0 { vec![0f32] } else { thetas(&warp, rows) };
        let (logits, x) = (values(rows * d, 1, -6.0, 6.0), targets(images, d));
        let lw_latent = values(rows, 2, -20.0, 0.0);
        let basis = if nb == 0 { vec![0f32] } else { warp.basis_by_function().to_vec() };

        let (a, bt, bb, bx, bl) = (input(&logits), input(&theta), input(&basis), input(&x), input(&lw_latent));
        let (logpx, logw) = (output(rows), output(rows));
        let args = [
            a.arg(),
            bt.arg(),
            bb.arg(),
            bx.arg(),
            bl.arg(),
            logpx.arg(),
            logw.arg(),
            i32_(rows),
            i32_(k),
            i32_(d),
            i32_(28),
            i32_(28),
            i32_(nb),
        ];
        run(
            "decode_row_fwd",
            LaunchConfig::new((rows as u32, 1, 1), (ROW_THREADS as u32, 1, 1), ((d + 2 * nb + 8) * 4) as u32),
            &args,
        );
        let (c, logpx, logw) = (read(&a), read(&logpx), read(&logw));

        let coef = values(rows, 3, -0.5, 0.0);
        let (bc, bcoef, da, dtheta) = (input(&c), input(&coef), output(rows * d), output(rows * 2 * nb));
        let args = [
            bc.arg(),
            bt.arg(),
            bb.arg(),
            bx.arg(),
            bcoef.arg(),
            da.arg(),
            dtheta.arg(),
            i32_(rows),
            i32_(k),
            i32_(d),
            i32_(28),
            i32_(28),
            i32_(nb),
        ];
        run(
            "decode_row_bwd",
            LaunchConfig::new((rows as u32, 1, 1), (ROW_THREADS as u32, 1, 1), ((4 * d + 2 * nb) * 4) as u32),
            &args,
        );
        let (da, dtheta) = (read(&da), read(&dtheta));

        let name = transform.name();
        for r in 0..rows {
            let th = if nb == 0 { &[][..] } else { &theta[r * 2 * nb..(r + 1) * 2 * nb] };
            let xr = &x[(r / k) * d..(r / k + 1) * d];
            let (lp, want_c, [p, gx, gy]) = cpu_row(&warp, &logits[r * d..(r + 1) * d], th, xr);
            close(&format!("{name} c"), &c[r * d..(r + 1) * d], &want_c, 1e-6);
            close(&format!("{name} log p(x|z,u)"), &logpx[r..r + 1], &[lp], 2e-6);
            close(&format!("{name} log w"), &logw[r..r + 1], &[lp + lw_latent[r]], 2e-6);

            let (mut dp, mut dgx, mut dgy) = (vec![0f32; d], vec![0f32; d], vec![0f32; d]);
            let (mut want_da, mut want_dt) = (vec![0f32; d], vec![0f32; 2 * nb]);
            let rb = RowBackward {
                c: &want_c,
                p: &p,
                gx: &gx,
                gy: &gy,
                x: xr,
                coef: coef[r],
                dp: &mut dp,
                dgx: &mut dgx,
                dgy: &mut dgy,
                da: &mut want_da,
                dtheta: &mut want_dt,
            };
            decode_row_backward(&warp, rb);
            close(&format!("{name} dlogits"), &da[r * d..(r + 1) * d], &want_da, 1e-5);
            let scale = want_dt.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (q, (&g, &w)) in dtheta[r * 2 * nb..(r + 1) * 2 * nb].iter().zip(&want_dt).enumerate() {
                assert!((g - w).abs() <= 1e-4 * (1.0 + scale), "{name} dθ[{r}, {q}]: emulated kernel {g} vs cpu {w}");
            }
        }
    }
}

/// z = μ + σ·ε, u likewise, and the latent terms of log w (src/network.rs
/// sample_latents and log_weights) in f64 from the same inputs: 1e-5.
#[test]
fn reparam_latents_match_the_network() {
    let (images, kk, z, u) = (3, 7, 6, 4);
    let rows = images * kk;
    let (mu_z, ls_z, eps) =
        (values(images * z, 1, -1.0, 1.0), values(images * z, 2, -2.0, 0.5), values(rows * z, 3, -2.0, 2.0));
    let (mu_u, ls_u, eta) =
        (values(images * u, 4, -1.0, 1.0), values(images * u, 5, -2.0, 0.5), values(rows * u, 6, -2.0, 2.0));
    let mut ins = [input(&mu_z), input(&ls_z), input(&eps), input(&mu_u), input(&ls_u), input(&eta)];
    let (bz, bu, lw) = (output(rows * z), output(rows * u), output(rows));
    let mut args: Vec<Arg> = ins.iter_mut().map(|b| b.arg()).collect();
    args.extend([bz.arg(), bu.arg(), lw.arg(), i32_(rows), i32_(kk), i32_(z), i32_(u)]);
    run("reparam_latents", cfg1(rows, 128), &args);
    let (got_z, got_u, got_lw) = (read(&bz), read(&bu), read(&lw));
    for r in 0..rows {
        let i = r / kk;
        let mut want_lw = 0f64;
        for (mu, ls, noise, got, dim) in [(&mu_z, &ls_z, &eps, &got_z, z), (&mu_u, &ls_u, &eta, &got_u, u)] {
            for d in 0..dim {
                let (m, l, e) = (mu[i * dim + d] as f64, ls[i * dim + d] as f64, noise[r * dim + d] as f64);
                let v = m + l.exp() * e;
                close("latent", &got[r * dim + d..r * dim + d + 1], &[v as f32], 1e-6);
                want_lw += 0.5 * (e * e - v * v) + l;
            }
        }
        close("latent terms of log w", &got_lw[r..r + 1], &[want_lw as f32], 1e-5);
    }
}

#[test]
fn add_theta_id_adds_the_identity_to_every_row() {
    let (rows, t) = (9, 18);
    let (theta, id) = (values(rows * t, 1, -1.0, 1.0), values(t, 2, -1.0, 1.0));
    let (bt, bi) = (input(&theta), input(&id));
    run("add_theta_id", cfg1(rows * t, 256), &[bt.arg(), bi.arg(), i32_(rows), i32_(t)]);
    let want: Vec<f32> = theta.iter().enumerate().map(|(q, &v)| v + id[q % t]).collect();
    assert_eq!(read(&bt), want);
}

/// The evaluator's fused fc3 epilogue (logits, sigmoid, warp, sampling,
/// Bernoulli sum per sample), each precision, against the CPU's fc3 and
/// fused row on the same operands (rounded as the precision rounds them):
/// logits differ by the order of Hd fp32 sums (~1e-6) and log p(x|·) sums
/// 784 terms in another order, so 1e-5 relative (~5e-3 nats on ~−500).
/// 39 rows leave partial 16- and 32-sample blocks. The warps cover each
/// path of the kernel's θ: none, affine and TPS 3×3 (θ in registers) and TPS
/// 4×4 (nb = 16, read from memory). The targets are 0 or 1, so the
/// one-logarithm `binary` epilogue must give the same bits as the general one.
#[test]
fn fused_evaluator_epilogue_matches_the_cpu() {
    let (images, kk) = (3, 13);
    let rows = images * kk;
    let (d, hd) = (784, 40);
    for (transform, grid) in [(Transform::None, 3), (Transform::Affine, 3), (Transform::Tps, 3), (Transform::Tps, 4)] {
        let warp = Warp::<f32>::new(&ModelConfig { tps_grid: grid, ..small_config(transform) });
        let nb = warp.nb;
        let theta = if nb == 0 { vec![0f32] } else { thetas(&warp, rows) };
        let basis = if nb == 0 { vec![0f32] } else { warp.basis_by_function().to_vec() };
        let (d2, w3, b3) = (values(rows * hd, 1, 0.0, 1.0), values(d * hd, 2, -0.5, 0.5), values(d, 3, -1.0, 1.0));
        let (x, lw_latent) = (targets(images, d), values(rows, 4, -20.0, 0.0));
        for kernel in ["nll_fc3_fused", "nll_fc3_tf32", "nll_fc3_bf16"] {
            let round: fn(f32) -> f32 = match kernel {
                "nll_fc3_tf32" => tf32,
                "nll_fc3_bf16" => bf16,
                _ => |v| v,
            };
            let (d2r, w3r): (Vec<f32>, Vec<f32>) =
                (d2.iter().map(|&v| round(v)).collect(), w3.iter().map(|&v| round(v)).collect());
            let logits = if kernel == "nll_fc3_fused" {
                let mut y = vec![0f32; rows * d];
                linear_forward(&d2, rows, &w3, &b3, d, hd, Activation::Identity, &mut y, Par::Seq);
                y
            } else {
                reference_linear(&d2r, &w3r, &b3, rows, d, hd, false)
            };

            let mut ins = [input(&d2), input(&b3), input(&theta), input(&basis), input(&x), input(&lw_latent)];
            let [bd2, bb3, bt, bb, bx, bl] = &mut ins;
            let (logpx, logw) = (output(rows), output(rows));
            let (wp, dp, hdp) = padded(&w3, d, hd);
            let w3t = input(&transpose(&w3, d, hd));
            let w_tf32 = input(&wp);
            let w_bf16 = input(&wp.iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect::<Vec<u16>>());
            let mut args = vec![bd2.arg()];
            let (smem, per_block, warps) = match kernel {
                "nll_fc3_fused" => {
                    args.push(w3t.arg());
                    (FUSED_SAMPLES * (hd + d) * 4, FUSED_SAMPLES, FUSED_WARPS)
                }
                "nll_fc3_tf32" => {
                    args.push(w_tf32.arg());
                    (TC_ROWS * dp * 4 + TC_ROWS * hdp * 4, TC_ROWS, TC_WARPS)
                }
                _ => {
                    args.push(w_bf16.arg());
                    (TC_ROWS * dp * 4 + TC_ROWS * hdp * 2, TC_ROWS, TC_WARPS)
                }
            };
            args.extend([bb3.arg(), bt.arg(), bb.arg(), bx.arg(), bl.arg(), logpx.arg(), logw.arg()]);
            args.extend([i32_(rows), i32_(kk), i32_(hd)]);
            if kernel != "nll_fc3_fused" {
                args.push(i32_(hdp));
            }
            args.push(i32_(d));
            if kernel != "nll_fc3_fused" {
                args.push(i32_(dp));
            }
            args.extend([i32_(28), i32_(28), i32_(nb)]);
            let block = (32 * warps as u32, 1, 1);
            let cfg = LaunchConfig::new((blocks(rows, per_block), 1, 1), block, smem as u32).opt_in_shared(smem as u32);
            let mut runs = [false, true].map(|binary| {
                let mut args = args.clone();
                args.push(i32_(binary as usize));
                run(kernel, cfg, &args);
                (read(&logpx), read(&logw))
            });
            let (binary_logpx, binary_logw) = runs[1].clone();
            let (logpx, logw) = std::mem::take(&mut runs[0]);
            let what = format!("{kernel} {} g{grid}", transform.name());
            assert_eq!(bits(&binary_logpx), bits(&logpx), "{what}: binary epilogue log p(x|z,u)");
            assert_eq!(bits(&binary_logw), bits(&logw), "{what}: binary epilogue log w");
            for r in 0..rows {
                let th = if nb == 0 { &[][..] } else { &theta[r * 2 * nb..(r + 1) * 2 * nb] };
                let xr = &x[(r / kk) * d..(r / kk + 1) * d];
                let (lp, _, _) = cpu_row(&warp, &logits[r * d..(r + 1) * d], th, xr);
                let what = format!("{what} row {r}");
                close(&format!("{what} log p(x|z,u)"), &logpx[r..r + 1], &[lp], 1e-5);
                close(&format!("{what} log w"), &logw[r..r + 1], &[lp + lw_latent[r]], 1e-5);
            }
        }
    }
}
