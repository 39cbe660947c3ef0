//! Which GEMM crate for our shapes? `gemm` (AVX-512 microkernels, rayon) vs
//! `matrixmultiply` (AVX2/FMA). The shapes are the model's hot ones:
//! decoder fc3 forward [N,256]·[256,784]ᵀ, its weight gradient [784,N]·[N,256],
//! and the encoder fc1 forward [B,784]·[784,256]ᵀ, plus the training shards'
//! three GEMMs of fc3 (N = 250). `iwtvae-sgemm` is the crate's own AVX-512
//! kernel (src/ops/sgemm.rs: matrixmultiply's bits, operands read in place),
//! which the layers use where B's rows are contiguous.
//! Run: `cargo bench --bench gemm_choice`.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn shapes() -> Vec<(&'static str, usize, usize, usize)> {
    vec![
        ("dec.fc3 fwd N=500", 500, 784, 256),
        ("dec.fc3 fwd N=1000 (eval chunk)", 1000, 784, 256),
        ("dec.fc3 dW N=500", 784, 256, 500),
        ("enc.fc1 fwd B=100", 100, 256, 784),
        // The training shards' shapes (two shards of a 100-image, k = 5 step).
        ("dec.fc3 fwd N=250", 250, 784, 256),
        ("dec.fc3 dx N=250", 250, 256, 784),
        ("dec.fc3 dW N=250", 784, 256, 250),
    ]
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("gemm_choice");
    for (name, m, n, k) in shapes() {
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.01).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.01).collect();
        let mut c_out = vec![0f32; m * n];
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        for threads in [1usize, 2] {
            group.bench_with_input(BenchmarkId::new(format!("gemm/{threads}t"), name), &(), |bch, _| {
                bch.iter(|| unsafe {
                    // SAFETY: a is [m,k], b is [k,n], c is [m,n], all row-major and in bounds.
                    gemm::gemm(
                        m,
                        n,
                        k,
                        c_out.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        a.as_ptr(),
                        1,
                        k as isize,
                        b.as_ptr(),
                        1,
                        n as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        if threads == 1 { gemm::Parallelism::None } else { gemm::Parallelism::Rayon(threads) },
                    )
                })
            });
        }
        // matrixmultiply, then the crate's own AVX-512 kernel (its bits, no
        // packing; src/ops/sgemm.rs) where this CPU has AVX-512: one signature.
        type Sgemm = unsafe fn(
            usize,
            usize,
            usize,
            f32,
            *const f32,
            isize,
            isize,
            *const f32,
            isize,
            isize,
            f32,
            *mut f32,
            isize,
            isize,
        );
        let kernels: [(&str, Sgemm); 2] = [
            ("matrixmultiply/1t", matrixmultiply::sgemm),
            ("iwtvae-sgemm/1t", iwtvae::ops::sgemm::sgemm_or_matrixmultiply),
        ];
        for (label, sgemm) in kernels {
            group.bench_with_input(BenchmarkId::new(label, name), &(), |bch, _| {
                bch.iter(|| unsafe {
                    // SAFETY: same shapes and strides as above.
                    sgemm(
                        m,
                        k,
                        n,
                        1.0,
                        a.as_ptr(),
                        k as isize,
                        1,
                        b.as_ptr(),
                        n as isize,
                        1,
                        0.0,
                        c_out.as_mut_ptr(),
                        n as isize,
                        1,
                    )
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = bench
}
criterion_main!(benches);
