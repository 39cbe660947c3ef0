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
    /// C[m,n] = alpha·A[m,k]·B[k,n] + beta·C with arbitrary strides (matrixmultiply).
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

impl Real for f32 {
    #[inline(always)]
    fn of(x: f64) -> Self {
        x as f32
    }
    #[inline(always)]
    fn f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn exp_v(self) -> Self {
        crate::ops::fastmath::exp_f32(self)
    }
    #[inline(always)]
    fn ln_v(self) -> Self {
        crate::ops::fastmath::ln_f32(self)
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
        v as f32
    }
    #[inline(always)]
    unsafe fn trunc_i32_unchecked(self) -> i32 {
        // SAFETY: forwarded from the caller's contract.
        unsafe { self.to_int_unchecked() }
    }
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: f32,
        a: *const f32,
        rsa: isize,
        csa: isize,
        b: *const f32,
        rsb: isize,
        csb: isize,
        beta: f32,
        c: *mut f32,
        rsc: isize,
        csc: isize,
    ) {
        // SAFETY: forwarded from the caller's contract.
        unsafe { matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) }
    }
}

impl Real for f64 {
    #[inline(always)]
    fn of(x: f64) -> Self {
        x
    }
    #[inline(always)]
    fn f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn exp_v(self) -> Self {
        self.exp()
    }
    #[inline(always)]
    fn ln_v(self) -> Self {
        self.ln()
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
        v as f64
    }
    #[inline(always)]
    unsafe fn trunc_i32_unchecked(self) -> i32 {
        // SAFETY: forwarded from the caller's contract.
        unsafe { self.to_int_unchecked() }
    }
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: f64,
        a: *const f64,
        rsa: isize,
        csa: isize,
        b: *const f64,
        rsb: isize,
        csb: isize,
        beta: f64,
        c: *mut f64,
        rsc: isize,
        csc: isize,
    ) {
        // SAFETY: forwarded from the caller's contract.
        unsafe { matrixmultiply::dgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) }
    }
}
