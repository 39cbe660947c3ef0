//! fp32 GEMM on AVX-512 with matrixmultiply's arithmetic, bit for bit, for
//! the shapes where packing, not multiplying, was the cost left to save.
//!
//! matrixmultiply packs both operands into panels on every call (9–12% of a
//! training epoch). Our layers' B operands are row-major with contiguous
//! rows (the weight itself in `dx = dy · W`, the activations in `dW += dyᵀ ·
//! x`, and a pre-transposed weight in the forward), so a register tile can
//! read B's rows and broadcast A's elements where they lie, with no copy.
//!
//! The order of operations is matrixmultiply's, so every result has the same
//! bits as before (the tests below compare element for element, edges,
//! k > 256, NaN and signed zeros included):
//!
//! ```text
//! for each block of KC = 256 along k (matrixmultiply's S_KC), in order:
//!     acc = 0;  acc = fma(a[i,k], b[k,j], acc) for k in the block, in order
//!     c[i,j] = acc              (first block, beta = 0)
//!     c[i,j] = acc + c[i,j]     (otherwise; beta = 1)
//! ```
//!
//! Only alpha = 1 and beta ∈ {0, 1}, the two our layers use, take this path;
//! `sgemm` says when it declines and the caller falls back to matrixmultiply.

/// matrixmultiply's k-block (its `S_KC` default): each block's sum starts
/// from zero and is added to C, which fixes the order of additions.
pub const KC: usize = 256;
/// Rows and 16-lane column vectors per register tile: 6 × 4 accumulators
/// of the 32 zmm registers, four B loads and six broadcasts per 24 FMAs.
const MR: usize = 6;
const NV: usize = 4;

/// matrixmultiply::sgemm's signature and results: this module's kernel where
/// it applies (B's and C's columns contiguous, alpha = 1), matrixmultiply
/// otherwise.
///
/// # Safety
/// As matrixmultiply::sgemm: every addressed element of A, B and C lies in
/// its allocation and C overlaps neither.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_or_matrixmultiply(
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
    // SAFETY: forwarded from the caller's contract; sgemm reads B's rows as
    // contiguous only when csb = 1 and writes C's when csc = 1.
    unsafe {
        if !(alpha == 1.0 && csb == 1 && csc == 1 && sgemm(m, k, n, a, rsa, csa, b, rsb, beta, c, rsc)) {
            matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
        }
    }
}

/// `C[m,n] (row stride rsc) = A·B + beta·C` with A element (i, k) at
/// `a[i·rsa + k·csa]` and B row k at `b[k·rsb ..]` (contiguous columns), on
/// AVX-512. Returns false, touching nothing, when it does not apply (no
/// AVX-512, or beta not 0 or 1): the caller then runs matrixmultiply.
///
/// # Safety
/// Every element of A [m, k], B [k, n] and C [m, n] addressed by these
/// strides lies in its allocation, and C does not overlap A or B.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    beta: f32,
    c: *mut f32,
    rsc: isize,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if super::simd::simd() == super::simd::Simd::Avx512 && (beta == 0.0 || beta == 1.0) && m > 0 && n > 0 && k > 0 {
            let accumulate = beta == 1.0;
            // SAFETY: the CPU has AVX-512 (simd() checked); the caller
            // vouches for the strides.
            unsafe { avx512::sgemm(m, k, n, a, rsa, csa, b, rsb, accumulate, c, rsc) };
            return true;
        }
    }
    let _ = (m, k, n, a, rsa, csa, b, rsb, beta, c, rsc);
    false
}

/// `wt[in,out] = Wᵀ` of `w[out,in]`, as `ops::linear::transpose_into`
/// (the spec, which runs without AVX-512 and on the edges): on AVX-512 each
/// 16 × 16 tile goes through registers, 16 loads and 16 stores along rows.
pub fn transpose(w: &[f32], out: usize, inp: usize, wt: &mut [f32]) {
    assert!(w.len() == out * inp && wt.len() == out * inp, "transpose: [{out}, {inp}]");
    #[cfg(target_arch = "x86_64")]
    if super::simd::simd() == super::simd::Simd::Avx512 {
        // SAFETY: the CPU has AVX-512 (simd() checked); both buffers hold
        // out × inp elements (asserted).
        unsafe { avx512::transpose(w, out, inp, wt) };
        return;
    }
    super::linear::transpose_into(w, out, inp, wt)
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{KC, MR, NV};
    use std::arch::x86_64::*;

    /// See `super::transpose`. Each tile goes through four butterfly
    /// stages: at distance d = 8, 4, 2, 1, rows j and j + d (j without bit
    /// d) trade blocks of d lanes (one vpermt2ps per result row).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transpose(w: &[f32], out: usize, inp: usize, wt: &mut [f32]) {
        const T: usize = 16;
        let (full_o, full_i) = (out / T * T, inp / T * T);
        // Lane indices of a stage's two results: lane x of the first takes
        // block-start + x of a (or of b, + 16), the second the next block.
        let stage_index = |d: usize, second: usize| {
            let mut lanes = [0i32; T];
            for (x, lane) in lanes.iter_mut().enumerate() {
                let (pair, within) = (x / (2 * d), x % (2 * d));
                let start = pair * 2 * d + second * d;
                *lane = (start + within % d + if within >= d { T } else { 0 }) as i32;
            }
            // SAFETY: 16 i32 lanes from a 16-element array.
            unsafe { _mm512_loadu_si512(lanes.as_ptr().cast()) }
        };
        let stages = [8, 4, 2, 1].map(|d| (d, stage_index(d, 0), stage_index(d, 1)));
        for o0 in (0..full_o).step_by(T) {
            for i0 in (0..full_i).step_by(T) {
                let mut r = [_mm512_setzero_ps(); T];
                for (j, r) in r.iter_mut().enumerate() {
                    // SAFETY: row o0 + j < out, columns i0..i0 + 16 ≤ inp.
                    *r = unsafe { _mm512_loadu_ps(w.as_ptr().add((o0 + j) * inp + i0)) };
                }
                for &(d, first, second) in &stages {
                    for j in (0..T).filter(|j| j & d == 0) {
                        let (a, b) = (r[j], r[j + d]);
                        r[j] = _mm512_permutex2var_ps(a, first, b);
                        r[j + d] = _mm512_permutex2var_ps(a, second, b);
                    }
                }
                for (j, &r) in r.iter().enumerate() {
                    // SAFETY: row i0 + j < inp of wt, columns o0..o0 + 16 ≤ out.
                    unsafe { _mm512_storeu_ps(wt.as_mut_ptr().add((i0 + j) * out + o0), r) };
                }
            }
        }
        // The edges: rows past the last whole tile, then columns.
        for o in 0..out {
            let from = if o < full_o { full_i } else { 0 };
            for i in from..inp {
                wt[i * out + o] = w[o * inp + i];
            }
        }
    }

    /// See `super::sgemm`: k blocks outermost (their order is the order of
    /// additions into C), then 64-column panels of B, whose [kc, 64] block
    /// (64 KB) stays in L2 while the 6-row tiles of A walk down it.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn sgemm(
        m: usize,
        k: usize,
        n: usize,
        a: *const f32,
        rsa: isize,
        csa: isize,
        b: *const f32,
        rsb: isize,
        accumulate: bool,
        c: *mut f32,
        rsc: isize,
    ) {
        let width = 16 * NV;
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            // Blocks after the first add to C, as matrixmultiply's beta = 1.
            let accumulate = accumulate || k0 > 0;
            // SAFETY (all offsets below): inside A, B and C by the caller's
            // contract, since i0 < m, j0 < n and k0 + kc ≤ k.
            let (a, b) = unsafe { (a.offset(k0 as isize * csa), b.offset(k0 as isize * rsb)) };
            for j0 in (0..n).step_by(width) {
                let cols = width.min(n - j0);
                let vectors = cols.div_ceil(16);
                // Lanes of the last vector that hold columns.
                let last = (1u32 << (cols - 16 * (vectors - 1))) - 1;
                let last = last as u16;
                for i0 in (0..m).step_by(MR) {
                    let rows = MR.min(m - i0);
                    // SAFETY: see above.
                    let (ai, bj, cij) =
                        unsafe { (a.offset(i0 as isize * rsa), b.add(j0), c.offset(i0 as isize * rsc).add(j0)) };
                    let run = match rows {
                        1 => tile_of::<1>,
                        2 => tile_of::<2>,
                        3 => tile_of::<3>,
                        4 => tile_of::<4>,
                        5 => tile_of::<5>,
                        _ => tile_of::<MR>,
                    };
                    let tile = Tile { kc, a: ai, rsa, csa, b: bj, rsb, c: cij, rsc, last, accumulate };
                    // SAFETY: the tile's rows × `cols` columns of C, its rows
                    // of A and its columns of B over kc steps of k all lie
                    // inside the operands (caller's contract); `last` masks
                    // the columns past n.
                    unsafe { run(vectors, tile) };
                }
            }
        }
    }

    /// One register tile's operands: A's rows from `a` (element (r, k) at
    /// `a[r·rsa + k·csa]`), B's rows from `b` (row k at `b[k·rsb]`), C's
    /// rows from `c`, over kc steps of k; `last` masks the final vector's
    /// lanes (loads of B beyond column n read nothing, stores write nothing).
    #[derive(Clone, Copy)]
    struct Tile {
        kc: usize,
        a: *const f32,
        rsa: isize,
        csa: isize,
        b: *const f32,
        rsb: isize,
        c: *mut f32,
        rsc: isize,
        last: u16,
        accumulate: bool,
    }

    /// `tile::<R, vectors>`.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile_of<const R: usize>(vectors: usize, t: Tile) {
        // SAFETY: forwarded.
        unsafe {
            match vectors {
                1 => tile::<R, 1>(t),
                2 => tile::<R, 2>(t),
                3 => tile::<R, 3>(t),
                _ => tile::<R, NV>(t),
            }
        }
    }

    /// One R × 16V tile of C: `C = acc` or `C = acc + C`.
    #[inline(always)]
    unsafe fn tile<const R: usize, const V: usize>(t: Tile) {
        let Tile { kc, a, rsa, csa, b, rsb, c, rsc, last, accumulate } = t;
        let mask = |v: usize| if v + 1 == V { last } else { u16::MAX };
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        let mut a_k = a;
        let mut b_k = b;
        for _ in 0..kc {
            let mut bv = [_mm512_setzero_ps(); V];
            for (v, bv) in bv.iter_mut().enumerate() {
                // SAFETY: row k of B holds the unmasked columns.
                *bv = unsafe { _mm512_maskz_loadu_ps(mask(v), b_k.add(16 * v)) };
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                // SAFETY: row i0 + r < m of A at column k.
                let av = _mm512_set1_ps(unsafe { *a_k.offset(r as isize * rsa) });
                for (acc, &bv) in acc.iter_mut().zip(&bv) {
                    *acc = _mm512_fmadd_ps(av, bv, *acc);
                }
            }
            a_k = a_k.wrapping_offset(csa);
            b_k = b_k.wrapping_offset(rsb);
        }
        for (r, acc) in acc.iter().enumerate() {
            for (v, &sum) in acc.iter().enumerate() {
                // SAFETY: row i0 + r of C, unmasked columns only.
                unsafe {
                    let p = c.offset(r as isize * rsc).add(16 * v);
                    let out = if accumulate { _mm512_add_ps(sum, _mm512_maskz_loadu_ps(mask(v), p)) } else { sum };
                    _mm512_mask_storeu_ps(p, mask(v), out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic fill with values of every magnitude and sign, exact
    /// cancellations (±0 sums) and, when asked, non-finite entries.
    fn fill(len: usize, seed: u64, specials: bool) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let v = ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2f32.powi((s % 9) as i32 - 4);
                match (specials, i % 97) {
                    (true, 3) => f32::NAN,
                    (true, 5) => f32::INFINITY,
                    (_, 7) => -0.0,
                    (_, 11) => 0.0,
                    _ => v,
                }
            })
            .collect()
    }

    fn same(x: f32, y: f32) -> bool {
        x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
    }

    /// One product both ways; A row-major or transposed (csa ≠ 1), C with
    /// a row stride wider than n.
    fn check(m: usize, k: usize, n: usize, a_transposed: bool, beta: f32, specials: bool) {
        if crate::ops::simd::simd() != crate::ops::simd::Simd::Avx512 {
            eprintln!("SKIPPED: sgemm vs matrixmultiply needs AVX-512, which this CPU lacks");
            return;
        }
        let ldc = n + 3;
        let a = fill(m * k, (m * 1000 + k) as u64, specials);
        let b = fill(k * n, (k * 1000 + n) as u64, specials);
        let c0 = fill(m * ldc, 7, specials);
        let (rsa, csa) = if a_transposed { (1, m as isize) } else { (k as isize, 1) };
        let (mut ours, mut theirs) = (c0.clone(), c0.clone());
        // SAFETY: a is [m,k] under (rsa, csa), b [k,n] row-major, c [m,ldc].
        unsafe {
            assert!(sgemm(
                m,
                k,
                n,
                a.as_ptr(),
                rsa,
                csa,
                b.as_ptr(),
                n as isize,
                beta,
                ours.as_mut_ptr(),
                ldc as isize
            ));
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                a.as_ptr(),
                rsa,
                csa,
                b.as_ptr(),
                n as isize,
                1,
                beta,
                theirs.as_mut_ptr(),
                ldc as isize,
                1,
            );
        }
        for (i, (&x, &y)) in ours.iter().zip(&theirs).enumerate() {
            assert!(same(x, y), "m {m} k {k} n {n} at [{}, {}]: {x:e} vs matrixmultiply {y:e}", i / ldc, i % ldc);
        }
    }

    #[test]
    fn matches_matrixmultiply_bit_for_bit_on_edges_and_k_blocks() {
        for &m in &[1, 5, 6, 7, 13, 50] {
            for &n in &[1, 15, 16, 17, 63, 64, 65, 130] {
                for &k in &[1, 2, 60, 255, 256, 257, 600] {
                    for beta in [0.0, 1.0] {
                        check(m, k, n, false, beta, false);
                        check(m, k, n, true, beta, false);
                    }
                }
            }
        }
    }

    #[test]
    fn matches_matrixmultiply_on_the_models_shapes() {
        // decoder fc3 forward (pre-transposed W), dx, dW; encoder fc1.
        for (m, k, n, t) in
            [(250, 256, 784, false), (250, 784, 256, false), (784, 250, 256, true), (50, 784, 256, false)]
        {
            check(m, k, n, t, 1.0, false);
            check(m, k, n, t, 0.0, false);
        }
    }

    #[test]
    fn non_finite_and_signed_zeros_propagate_as_matrixmultiplys() {
        for &(m, k, n) in &[(7, 300, 70), (13, 17, 33)] {
            check(m, k, n, false, 1.0, true);
            check(m, k, n, true, 0.0, true);
        }
    }

    #[test]
    fn register_transpose_matches_the_spec() {
        for &(out, inp) in &[(1, 1), (16, 16), (17, 33), (32, 48), (784, 256), (256, 784), (18, 18), (5, 40)] {
            let w = fill(out * inp, (out * 31 + inp) as u64, true);
            let (mut ours, mut spec) = (vec![1f32; out * inp], vec![2f32; out * inp]);
            transpose(&w, out, inp, &mut ours);
            crate::ops::linear::transpose_into(&w, out, inp, &mut spec);
            assert!(ours.iter().zip(&spec).all(|(a, b)| a.to_bits() == b.to_bits()), "[{out}, {inp}]");
        }
    }

    #[test]
    fn declines_what_it_does_not_compute() {
        let (a, b, mut c) = ([1f32; 4], [1f32; 4], [0f32; 4]);
        // SAFETY: 2×2 operands in 4-element buffers.
        let taken = unsafe { sgemm(2, 2, 2, a.as_ptr(), 2, 1, b.as_ptr(), 2, 0.5, c.as_mut_ptr(), 2) };
        assert!(!taken && c == [0.0; 4], "beta 0.5 is matrixmultiply's to compute");
    }
}
