//! The scalar type of the CPU path. Training runs in f32; the same generic code
//! runs in f64 so that every backward can be checked by finite differences.
use num_traits::Float;
use std::fmt::Debug;
use std::iter::Sum;
use std::ops::{AddAssign, MulAssign, SubAssign};

pub trait Real: Float + Debug + Default + Send + Sync + Sum + AddAssign + SubAssign + MulAssign + 'static {
    fn of(x: f64) -> Self;
    fn f64(self) -> f64;
    /// e^x; f32 uses the vectorizable polynomial in ops::fastmath.
    fn exp_v(self) -> Self;
    /// ln x; f32 uses the vectorizable polynomial in ops::fastmath.
    fn ln_v(self) -> Self;
    /// Truncation of a finite, non-negative value (a pixel index).
    fn to_index(self) -> usize;
    /// Truncation toward zero to i32 (cvttps2dq; vectorizes, unlike usize).
    fn trunc_i32(self) -> i32;
    /// `trunc_i32` without the saturation and NaN handling of `as`.
    ///
    /// # Safety
    /// `self` must be finite and within i32's range.
    unsafe fn trunc_i32_unchecked(self) -> i32;
    fn from_i32(v: i32) -> Self;
    /// `wt[in,out] = Wᵀ` of `w[out,in]` (ops::linear::transpose_into; f32
    /// transposes 16 × 16 tiles in registers on AVX-512).
    fn transpose(w: &[Self], out: usize, inp: usize, wt: &mut [Self]);
    /// `C[m,n] = alpha·A[m,k]·B[k,n] + beta·C` with arbitrary strides (matrixmultiply's
    /// arithmetic; f32 through ops::sgemm where it applies).
    ///
    /// # Safety
    /// Every strided index of A, B and C must lie inside its allocation.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );
}

/// The two impls differ only in the type, the GEMM entry point and the transpose.
macro_rules! impl_real {
    ($t:ty, $gemm:path, $transpose:path) => {
        impl Real for $t {
            fn transpose(w: &[$t], out: usize, inp: usize, wt: &mut [$t]) {
                $transpose(w, out, inp, wt)
            }
            #[inline(always)]
            fn of(x: f64) -> Self {
                x as $t
            }
            #[inline(always)]
            fn f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn to_index(self) -> usize {
                self as usize
            }
            #[inline(always)]
            fn trunc_i32(self) -> i32 {
                self as i32
            }
            #[inline(always)]
            fn from_i32(v: i32) -> Self {
                v as $t
            }
            #[inline(always)]
            unsafe fn trunc_i32_unchecked(self) -> i32 {
                // SAFETY: forwarded from the caller's contract.
                unsafe { self.to_int_unchecked() }
            }
            #[inline(always)]
            fn exp_v(self) -> Self {
                FastMath::fast_exp(self)
            }
            #[inline(always)]
            fn ln_v(self) -> Self {
                FastMath::fast_ln(self)
            }
            unsafe fn gemm_raw(
                m: usize,
                k: usize,
                n: usize,
                alpha: $t,
                a: *const $t,
                rsa: isize,
                csa: isize,
                b: *const $t,
                rsb: isize,
                csb: isize,
                beta: $t,
                c: *mut $t,
                rsc: isize,
                csc: isize,
            ) {
                // SAFETY: forwarded from the caller's contract.
                unsafe { $gemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) }
            }
        }
    };
}

// f32 uses the vectorizable polynomials of ops::fastmath; f64 (the gradient
// checks) uses libm.
trait FastMath {
    fn fast_exp(self) -> Self;
    fn fast_ln(self) -> Self;
}

impl FastMath for f32 {
    #[inline(always)]
    fn fast_exp(self) -> Self {
        crate::ops::fastmath::exp_f32(self)
    }
    #[inline(always)]
    fn fast_ln(self) -> Self {
        crate::ops::fastmath::ln_f32(self)
    }
}

impl FastMath for f64 {
    #[inline(always)]
    fn fast_exp(self) -> Self {
        self.exp()
    }
    #[inline(always)]
    fn fast_ln(self) -> Self {
        self.ln()
    }
}

impl_real!(f32, crate::ops::sgemm::sgemm_or_matrixmultiply, crate::ops::sgemm::transpose);
impl_real!(f64, matrixmultiply::dgemm, crate::ops::linear::transpose_into);
