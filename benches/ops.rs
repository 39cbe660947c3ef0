//! Per-op CPU benchmarks on the model's shapes (criterion): the fused decoder
//! epilogue forward, backward, and training row (forward + backward in one)
//! for one chunk of 500 rows, and the decoder's largest linear layer (fp32,
//! and bf16 as `eval --precision bf16` runs it).
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use iwtvae::model::{ModelConfig, Transform};
use iwtvae::ops::fused::{decode_row, decode_row_backward, decode_row_train, RowBackward, RowGrid, RowTrain};
use iwtvae::ops::grid::Warp;
use iwtvae::ops::linear::{linear_forward, linear_forward_transposed, Activation};
use iwtvae::ops::linear_bf16::{has_avx512bf16, Bf16Linear};
use iwtvae::ops::Par;

const ROWS: usize = 500;
const D: usize = 784;

fn cfg(transform: Transform) -> ModelConfig {
    ModelConfig { transform, z_dim: 42, u_dim: 18, hidden: 256, tps_grid: 3, height: 28, width: 28 }
}

/// decode_row over ROWS rows of logits into `a`, keeping each row's p and
/// grid in row r of `kept` ([p, gx, gy], each [ROWS, D]).
fn forward_rows(
    warp: &Warp<f32>,
    a: &mut [f32],
    logits: &[f32],
    theta: &[f32],
    x: &[f32],
    kept: [&mut [f32]; 3],
    terms: &mut [f32],
) -> f32 {
    a.copy_from_slice(logits);
    let [p, gx, gy] = kept;
    let mut s = 0.0;
    let rows = a.chunks_exact_mut(D).zip(p.chunks_exact_mut(D)).zip(gx.chunks_exact_mut(D)).zip(gy.chunks_exact_mut(D));
    for (((c, p), gx), gy) in rows {
        s += decode_row(warp, c, theta, x, true, RowGrid { terms: &mut *terms, p, gx, gy });
    }
    s
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("ops");
    g.throughput(Throughput::Elements((ROWS * D) as u64));
    for transform in [Transform::None, Transform::Affine, Transform::Tps] {
        let warp = Warp::<f32>::new(&cfg(transform));
        let theta: Vec<f32> =
            warp.theta_identity().iter().enumerate().map(|(i, v)| v + 0.05 * (i as f32).sin()).collect();
        let x: Vec<f32> = (0..D).map(|j| (j % 3 == 0) as u8 as f32).collect();
        let logits: Vec<f32> = (0..ROWS * D).map(|i| ((i * 7919) % 200) as f32 * 0.05 - 5.0).collect();
        let mut a = logits.clone();
        let (mut p, mut gx, mut gy, mut t) =
            (vec![0f32; ROWS * D], vec![0f32; ROWS * D], vec![0f32; ROWS * D], vec![0f32; D]);
        g.bench_function(format!("decode_row fwd x{ROWS} {}", transform.name()), |b| {
            b.iter(|| forward_rows(&warp, &mut a, &logits, &theta, &x, [&mut p, &mut gx, &mut gy], &mut t))
        });
        let (mut dgx, mut dgy, mut da, mut dth) =
            (vec![0f32; D], vec![0f32; D], vec![0f32; D], vec![0f32; theta.len()]);
        let (mut cidx, mut cadd) = (vec![0u32; 2 * D], vec![0f32; 4 * D]);
        let none = transform == Transform::None;
        g.bench_function(format!("decode_row_train x{ROWS} {}", transform.name()), |b| {
            b.iter(|| {
                a.copy_from_slice(&logits);
                let mut s = 0.0;
                for r in 0..ROWS {
                    let (c, pp, xx, yy) = (&mut a[r * D..(r + 1) * D], &mut p[..D], &mut gx[..D], &mut gy[..D]);
                    let grid = RowGrid { terms: &mut t, p: pp, gx: xx, gy: yy };
                    let out = RowTrain {
                        dgx: if none { &mut [] } else { &mut dgx },
                        dgy: if none { &mut [] } else { &mut dgy },
                        corner_idx: if none { &mut [] } else { &mut cidx },
                        corner_add: if none { &mut [] } else { &mut cadd },
                        da: &mut da,
                        dtheta: if none { &mut [] } else { &mut dth },
                    };
                    s += decode_row_train(&warp, c, &theta, &x, true, grid, out);
                }
                s
            })
        });
        // decode_row_backward reads the forward's p and grid, row by row.
        forward_rows(&warp, &mut a, &logits, &theta, &x, [&mut p, &mut gx, &mut gy], &mut t);
        let (mut dp, mut dgx, mut dgy, mut da, mut dth) =
            (vec![0f32; D], vec![0f32; D], vec![0f32; D], vec![0f32; D], vec![0f32; theta.len()]);
        g.bench_function(format!("decode_row bwd x{ROWS} {}", transform.name()), |b| {
            b.iter(|| {
                for r in 0..ROWS {
                    let none = transform == Transform::None;
                    decode_row_backward(
                        &warp,
                        RowBackward {
                            c: &a[r * D..(r + 1) * D],
                            p: if none { &[] } else { &p[r * D..(r + 1) * D] },
                            gx: if none { &[] } else { &gx[r * D..(r + 1) * D] },
                            gy: if none { &[] } else { &gy[r * D..(r + 1) * D] },
                            x: &x,
                            coef: -0.01,
                            dp: &mut dp,
                            dgx: &mut dgx,
                            dgy: &mut dgy,
                            da: &mut da,
                            dtheta: &mut dth,
                        },
                    );
                }
            })
        });
    }
    let (inp, out) = (256usize, 784usize);
    let xin: Vec<f32> = (0..ROWS * inp).map(|i| (i as f32 * 0.01).sin()).collect();
    let w: Vec<f32> = (0..out * inp).map(|i| (i as f32 * 0.003).cos() * 0.05).collect();
    let bias = vec![0.1f32; out];
    let mut y = vec![0f32; ROWS * out];
    g.throughput(Throughput::Elements((2 * ROWS * inp * out) as u64));
    for par in [Par::Seq, Par::Rows] {
        g.bench_function(format!("dec.fc3 linear fwd x{ROWS} {par:?} (flop/s)"), |b| {
            b.iter(|| linear_forward(&xin, ROWS, &w, &bias, out, inp, Activation::Identity, &mut y, par))
        });
    }
    // The forward as training and evaluation run it: the weight transposed
    // once (per step or per evaluation), read in place by ops::sgemm.
    let mut wt = vec![0f32; out * inp];
    iwtvae::ops::sgemm::transpose(&w, out, inp, &mut wt);
    g.bench_function(format!("dec.fc3 linear fwd pre-transposed x{ROWS} Seq (flop/s)"), |b| {
        b.iter(|| linear_forward_transposed(&xin, ROWS, &wt, &bias, out, inp, Activation::Identity, &mut y, Par::Seq))
    });
    // The evaluator's bf16 layer (one thread, as each evaluation task runs
    // it): AVX512-BF16 where the CPU has it, else the portable loop.
    let bf16 = Bf16Linear::new(&w, &bias, out, inp);
    let mut scratch = Vec::new();
    let kernel = if has_avx512bf16() { "avx512bf16" } else { "portable" };
    g.bench_function(format!("dec.fc3 bf16 fwd x{ROWS} Seq {kernel} (flop/s)"), |b| {
        b.iter(|| bf16.forward(&xin, ROWS, Activation::Identity, &mut y, &mut scratch))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = bench
}
criterion_main!(benches);
