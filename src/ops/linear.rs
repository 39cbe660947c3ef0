//! Fully connected layers in torch's nn.Linear layout (weight [out, in]):
//!
//! ```text
//! forward   y[n,out]  = act(x[n,in] · Wᵀ + b)
//! backward  dx[n,in]  = dy[n,out] · W            (dy already through act')
//!           dW[out,in] += dyᵀ · x,   db[out] += Σ_n dy
//! ```
//!
//! GEMMs go through matrixmultiply (see benches/gemm_choice.rs for why), or,
//! on AVX-512 where B's rows are contiguous, through ops::sgemm, which gives
//! matrixmultiply's bits without packing; split over output rows across
//! rayon threads when `Par::Rows`.
use super::rows::Par;
use crate::Real;
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Identity,
    Relu,
}

/// A strided read-only matrix view.
#[derive(Clone, Copy)]
pub struct Mat<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> Mat<'a, T> {
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> Self {
        Mat { data, rows, cols, rs: cols, cs: 1 }
    }
    /// The transpose of a row-major [rows, cols] buffer, as a [cols, rows] view.
    pub fn transposed(data: &'a [T], rows: usize, cols: usize) -> Self {
        Mat { data, rows: cols, cols: rows, rs: 1, cs: cols }
    }
    fn fits(&self) -> bool {
        self.rows == 0 || self.cols == 0 || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `C[m,n]` (row-major, leading dimension n) = A·B + beta·C.
pub fn gemm<T: Real>(a: Mat<T>, b: Mat<T>, beta: T, c: &mut [T], par: Par) {
    gemm_ld(a, b, beta, c, b.cols, par)
}

thread_local! {
    static TF32_OPERANDS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with every GEMM it starts on this thread rounding both operands
/// to TF32 first (through f32; round to nearest, ties away from zero, to 10
/// mantissa bits, as cvt.rna.tf32.f32), sums unchanged: the CPU spec of the
/// GPU's `--precision tf32` GEMMs (kernels/linear.cu tile_product_tf32),
/// which the GPU's TF32 training step is tested against. Not a training
/// mode of the CPU path, which is fp32; the rounding copies each operand.
pub fn with_tf32_operands<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            TF32_OPERANDS.with(|t| t.set(self.0));
        }
    }
    let _reset = Reset(TF32_OPERANDS.with(|t| t.replace(true)));
    f()
}

/// cvt.rna.tf32.f32 on a finite or non-finite f32 (NaN and ±∞ pass).
pub fn round_to_tf32(v: f32) -> f32 {
    let u = v.to_bits();
    if u & 0x7f80_0000 == 0x7f80_0000 {
        return v;
    }
    f32::from_bits((u + 0x1000) & 0xffff_e000)
}

/// `C[m,n]` (row-major, leading dimension ldc ≥ n) = A·B + beta·C.
pub fn gemm_ld<T: Real>(a: Mat<T>, b: Mat<T>, beta: T, c: &mut [T], ldc: usize, par: Par) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "gemm: inner dimensions {k} vs {}", b.rows);
    assert!(ldc >= n, "gemm: leading dimension {ldc} < {n}");
    assert!(a.fits() && b.fits() && (m == 0 || c.len() >= (m - 1) * ldc + n), "gemm: operand out of bounds");
    if m == 0 || n == 0 {
        return;
    }
    let (ra, rb): (Vec<T>, Vec<T>);
    let (a, b) = if TF32_OPERANDS.with(|t| t.get()) {
        let round = |v: &T| T::of(round_to_tf32(v.f64() as f32) as f64);
        (ra, rb) = (a.data.iter().map(round).collect(), b.data.iter().map(round).collect());
        (Mat { data: &ra[..], ..a }, Mat { data: &rb[..], ..b })
    } else {
        (a, b)
    };
    let run = |row0: usize, rows: usize, c_rows: &mut [T]| {
        // SAFETY: A, B and C fit their slices (asserted above); the sub-block
        // starts at row0 < m and spans `rows` rows, all inside A and C.
        unsafe {
            T::gemm_raw(
                rows,
                k,
                n,
                T::one(),
                a.data.as_ptr().add(row0 * a.rs),
                a.rs as isize,
                a.cs as isize,
                b.data.as_ptr(),
                b.rs as isize,
                b.cs as isize,
                beta,
                c_rows.as_mut_ptr(),
                ldc as isize,
                1,
            )
        }
    };
    let threads = rayon::current_num_threads();
    let span = (m - 1) * ldc + n;
    if par == Par::Seq || threads == 1 || m < 16 {
        run(0, m, &mut c[..span]);
        return;
    }
    // One block per thread, rounded to the microkernel height, so each
    // thread packs B once; a row's value does not depend on the split.
    let block = m.div_ceil(threads).next_multiple_of(8);
    c[..m * ldc].par_chunks_mut(block * ldc).enumerate().for_each(|(i, chunk)| {
        run(i * block, chunk.len().div_ceil(ldc), chunk);
    });
}

/// `y[n,out] = act(x[n,in] · Wᵀ + b)`.
#[allow(clippy::too_many_arguments)]
pub fn linear_forward<T: Real>(
    x: &[T],
    n: usize,
    w: &[T],
    b: &[T],
    out: usize,
    inp: usize,
    act: Activation,
    y: &mut [T],
    par: Par,
) {
    assert!(w.len() == out * inp, "linear_forward: weight [{out}, {inp}]");
    forward_with(x, n, Mat::transposed(w, out, inp), b, act, y, par)
}

/// `linear_forward` from the weight already transposed, `wt[in,out] = Wᵀ`
/// (`transpose_into`): the same bits, and the GEMM reads Wᵀ's rows where
/// they lie (ops::sgemm) instead of packing the strided transpose each call.
#[allow(clippy::too_many_arguments)]
pub fn linear_forward_transposed<T: Real>(
    x: &[T],
    n: usize,
    wt: &[T],
    b: &[T],
    out: usize,
    inp: usize,
    act: Activation,
    y: &mut [T],
    par: Par,
) {
    assert!(wt.len() == out * inp, "linear_forward_transposed: weight [{inp}, {out}]");
    forward_with(x, n, Mat::row_major(wt, inp, out), b, act, y, par)
}

fn forward_with<T: Real>(x: &[T], n: usize, wt: Mat<T>, b: &[T], act: Activation, y: &mut [T], par: Par) {
    let (inp, out) = (wt.rows, wt.cols);
    assert!(x.len() >= n * inp && b.len() == out && y.len() >= n * out, "linear forward: x [{n}, {inp}], b [{out}]");
    for row in y[..n * out].chunks_exact_mut(out) {
        row.copy_from_slice(b);
    }
    gemm(Mat::row_major(x, n, inp), wt, T::one(), y, par);
    if act == Activation::Relu {
        relu_inplace(&mut y[..n * out]);
    }
}

/// `wt[in,out] = Wᵀ` of nn.Linear's `w[out,in]`, in 16 × 16 blocks so that
/// both the reads and the writes run along cache lines.
pub fn transpose_into<T: Copy>(w: &[T], out: usize, inp: usize, wt: &mut [T]) {
    assert!(w.len() == out * inp && wt.len() == out * inp, "transpose_into: [{out}, {inp}]");
    const BLOCK: usize = 16;
    if out == 0 || inp == 0 {
        return;
    }
    for o0 in (0..out).step_by(BLOCK) {
        let o1 = (o0 + BLOCK).min(out);
        for (i, dst) in wt.chunks_exact_mut(out).enumerate() {
            // Column i of rows o0..o1: a strided walk, no index checks.
            let column = w[o0 * inp + i..].iter().step_by(inp);
            for (d, &v) in dst[o0..o1].iter_mut().zip(column) {
                *d = v;
            }
        }
    }
}

pub fn relu_inplace<T: Real>(v: &mut [T]) {
    for e in v {
        *e = e.max(T::zero());
    }
}

/// dy *= relu'(y), where y is the layer's relu output (y > 0 ⇔ pre-activation > 0).
pub fn relu_backward<T: Real>(y: &[T], dy: &mut [T]) {
    // An unconditional select, not a conditional store: it vectorizes, and a
    // ReLU's sign pattern is a coin flip the branch predictor cannot learn.
    for (g, &v) in dy.iter_mut().zip(y) {
        *g = if v > T::zero() { *g } else { T::zero() };
    }
}

/// `dx[n,in] = dy[n,out] · W` (+ dx when `accumulate`).
#[allow(clippy::too_many_arguments)]
pub fn linear_backward_input<T: Real>(
    dy: &[T],
    n: usize,
    w: &[T],
    out: usize,
    inp: usize,
    dx: &mut [T],
    accumulate: bool,
    par: Par,
) {
    let beta = if accumulate { T::one() } else { T::zero() };
    gemm(Mat::row_major(dy, n, out), Mat::row_major(w, out, inp), beta, dx, par);
}

/// `dW[out,in] += dyᵀ · x`,  `db[out] += Σ_n dy`.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward_params<T: Real>(
    x: &[T],
    dy: &[T],
    n: usize,
    out: usize,
    inp: usize,
    dw: &mut [T],
    db: &mut [T],
    par: Par,
) {
    gemm(Mat::transposed(dy, n, out), Mat::row_major(x, n, inp), T::one(), dw, par);
    for row in dy[..n * out].chunks_exact(out) {
        for (acc, &g) in db.iter_mut().zip(row) {
            *acc += g;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn row_split_gemm_matches_naive_and_sequential() {
        let (m, k, n) = (53, 17, 29);
        let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.11).cos()).collect();
        let want = naive(&a, &b, m, k, n);
        for par in [Par::Seq, Par::Rows] {
            let mut c = vec![0.0; m * n];
            gemm(Mat::row_major(&a, m, k), Mat::row_major(&b, k, n), 0.0, &mut c, par);
            for (x, y) in c.iter().zip(&want) {
                assert!((x - y).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn tf32_operands_round_to_nearest_ties_away_within_the_scope_only() {
        // 1 + 2⁻¹¹ is a tie between 1 and 1 + 2⁻¹⁰: away from zero. 1 + 2⁻¹² rounds down.
        let tie = 1.0 + 2f32.powi(-11);
        assert_eq!(round_to_tf32(tie), 1.0 + 2f32.powi(-10));
        assert_eq!(round_to_tf32(-tie), -(1.0 + 2f32.powi(-10)));
        assert_eq!(round_to_tf32(1.0 + 2f32.powi(-12)), 1.0);
        assert!(round_to_tf32(f32::NAN).is_nan() && round_to_tf32(f32::INFINITY) == f32::INFINITY);
        let (a, b) = ([tie], [1.0f32]);
        let product = || {
            let mut c = [0f32];
            gemm(Mat::row_major(&a, 1, 1), Mat::row_major(&b, 1, 1), 0.0, &mut c, Par::Seq);
            c[0]
        };
        assert_eq!(product(), tie);
        assert_eq!(with_tf32_operands(product), 1.0 + 2f32.powi(-10));
        assert_eq!(product(), tie, "the rounding outlives its scope");
    }

    #[test]
    fn linear_forward_matches_definition() {
        let (n, inp, out) = (3, 4, 2);
        let x: Vec<f64> = (0..n * inp).map(|i| i as f64 - 5.0).collect();
        let w: Vec<f64> = (0..out * inp).map(|i| 0.1 * i as f64).collect();
        let b = vec![0.5, -10.0];
        let mut y = vec![0.0; n * out];
        linear_forward(&x, n, &w, &b, out, inp, Activation::Relu, &mut y, Par::Seq);
        for r in 0..n {
            for o in 0..out {
                let v: f64 = b[o] + (0..inp).map(|i| x[r * inp + i] * w[o * inp + i]).sum::<f64>();
                assert_eq!(y[r * out + o], v.max(0.0));
            }
        }
    }

    #[test]
    fn transposed_weights_give_the_forward_the_same_bits() {
        // Shapes across the 16 × 16 transpose blocks and the GEMM's 64-wide
        // panels and 256-long k blocks; relu and identity.
        for &(n, inp, out) in &[(1, 1, 1), (7, 17, 33), (50, 300, 70), (13, 784, 256)] {
            let x: Vec<f32> = (0..n * inp).map(|i| (i as f32 * 0.37).sin()).collect();
            let w: Vec<f32> = (0..out * inp).map(|i| (i as f32 * 0.11).cos() * 0.1).collect();
            let b: Vec<f32> = (0..out).map(|i| i as f32 * 0.01 - 0.2).collect();
            let mut wt = vec![f32::NAN; out * inp];
            transpose_into(&w, out, inp, &mut wt);
            for o in 0..out {
                for i in 0..inp {
                    assert_eq!(wt[i * out + o].to_bits(), w[o * inp + i].to_bits());
                }
            }
            for act in [Activation::Identity, Activation::Relu] {
                let (mut y, mut yt) = (vec![0f32; n * out], vec![0f32; n * out]);
                linear_forward(&x, n, &w, &b, out, inp, act, &mut y, Par::Seq);
                linear_forward_transposed(&x, n, &wt, &b, out, inp, act, &mut yt, Par::Rows);
                assert!(y.iter().zip(&yt).all(|(a, b)| a.to_bits() == b.to_bits()), "{n}×{inp}→{out}");
            }
        }
    }
}
