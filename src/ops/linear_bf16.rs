//! Fully connected layers in bf16 for the CPU evaluator (`eval --precision
//! bf16`, the decoder's three layers): both operands rounded to bf16 (to
//! nearest, ties to even), products exact, sums in fp32, in the order of the
//! x86 instruction VDPBF16PS, which CPUs with AVX512-BF16 run at twice the
//! multiply-adds per cycle of fp32 FMA:
//!
//! ```text
//! acc = 0
//! for each input pair (2j, 2j+1), j = 0, 1, …:          (odd input count: a zero pads it)
//!     acc = ftz(fma(x[2j+1], W[o,2j+1], acc))
//!     acc = ftz(fma(x[2j],   W[o,2j],   acc))
//! y[n,o] = act(acc + b[o])                                (b stays fp32)
//! ```
//!
//! A bf16 subnormal operand reads as zero and a subnormal sum flushes to
//! (signed) zero, as the instruction does. `forward_portable` is that loop,
//! the spec, on any CPU; `forward_avx512bf16` is the same arithmetic 16
//! outputs per instruction, bit for bit (the tests below check both against
//! each other and the spec against an f64 sum of the rounded operands).
//! The GPU's `--precision bf16` rounds the same operands to bf16 and sums
//! in fp32 in the tensor cores' order, so the two agree to fp32 rounding.
use super::linear::Activation;
use super::simd::simd_dispatch;

/// Outputs per panel: one 512-bit register of fp32 sums.
pub const LANES: usize = 16;

/// f32 → bf16 bits, to nearest, ties to even; a NaN stays a (quiet) NaN.
/// The same bits as `half::bf16::from_f32` (a test checks), written without
/// branches so that packing a row vectorizes.
#[inline(always)]
pub fn bf16_bits(v: f32) -> u16 {
    let x = v.to_bits();
    let rounded = (x.wrapping_add(0x7fff + ((x >> 16) & 1)) >> 16) as u16;
    let quiet_nan = ((x >> 16) | 0x0040) as u16;
    if v.is_nan() {
        quiet_nan
    } else {
        rounded
    }
}

/// bf16 bits → f32 as VDPBF16PS reads them: a subnormal is a signed zero.
fn bf16_operand(bits: u16) -> f32 {
    let v = (bits as u32) << 16;
    if v & 0x7f80_0000 == 0 {
        f32::from_bits(v & 0x8000_0000)
    } else {
        f32::from_bits(v)
    }
}

/// Flush to zero, as VDPBF16PS does each sum.
fn ftz(v: f32) -> f32 {
    if v.is_subnormal() {
        f32::from_bits(v.to_bits() & 0x8000_0000)
    } else {
        v
    }
}

simd_dispatch!(
    /// x[0..inp] as bf16 pairs: pair j holds x[2j] (low half) and x[2j+1]
    /// (a zero pads an odd count).
    fn pack_pairs(x: &[f32], pairs: &mut [u32]) => pack_pairs_body
);

#[inline(always)]
fn pack_pairs_body(x: &[f32], pairs: &mut [u32]) {
    let whole = x.len() / 2;
    for (p, v) in pairs[..whole].iter_mut().zip(x.chunks_exact(2)) {
        *p = bf16_bits(v[0]) as u32 | (bf16_bits(v[1]) as u32) << 16;
    }
    if let (Some(p), Some(&v)) = (pairs.get_mut(whole), x.get(2 * whole)) {
        *p = bf16_bits(v) as u32;
    }
}

/// One layer's weights packed for VDPBF16PS, and its fp32 bias.
pub struct Bf16Linear {
    pub out: usize,
    pub inp: usize,
    /// Input pairs, ⌈inp / 2⌉.
    pairs: usize,
    /// Panels of `LANES` outputs, ⌈out / 16⌉ (the last zero-padded).
    panels: usize,
    /// W [out, in] as [panel][pair][lane]: lane l of panel p is output
    /// 16p + l, so one pair of one panel is one 512-bit load.
    w: Vec<u32>,
    bias: Vec<f32>,
}

impl Bf16Linear {
    /// From nn.Linear's weight `[out, in]` and bias `[out]`.
    pub fn new(w: &[f32], b: &[f32], out: usize, inp: usize) -> Self {
        assert!(w.len() == out * inp && b.len() == out, "Bf16Linear: weight [{out}, {inp}] and bias [{out}]");
        let (pairs, panels) = (inp.div_ceil(2), out.div_ceil(LANES));
        let mut packed = vec![0u32; panels * pairs * LANES];
        let mut row = vec![0u32; pairs];
        for o in 0..out {
            pack_pairs(&w[o * inp..(o + 1) * inp], &mut row);
            let (p, l) = (o / LANES, o % LANES);
            for (j, &v) in row.iter().enumerate() {
                packed[(p * pairs + j) * LANES + l] = v;
            }
        }
        Bf16Linear { out, inp, pairs, panels, w: packed, bias: b.to_vec() }
    }

    /// `y[n,out] = act(x[n,in] · Wᵀ + b)` in bf16 × bf16 → fp32 (the module
    /// doc's order). `scratch` holds x's bf16 pairs; it grows once.
    pub fn forward(&self, x: &[f32], n: usize, act: Activation, y: &mut [f32], scratch: &mut Vec<u32>) {
        let (inp, pairs) = (self.inp, self.pairs);
        assert!(
            x.len() >= n * inp && y.len() >= n * self.out,
            "Bf16Linear::forward: x [{n}, {inp}], y [{n}, {}]",
            self.out
        );
        if scratch.len() < n * pairs {
            scratch.resize(n * pairs, 0);
        }
        // a: [n, pairs]
        let a = &mut scratch[..n * pairs];
        for (r, row) in a.chunks_exact_mut(pairs.max(1)).enumerate().take(n) {
            pack_pairs(&x[r * inp..(r + 1) * inp], row);
        }
        if has_avx512bf16() {
            // SAFETY: the CPU has AVX-512F and AVX512-BF16 (checked above);
            // a is [n, pairs], y holds n rows of `out`, self.w is
            // [panels][pairs][16] (asserted and built by `new`).
            unsafe { avx512bf16::forward(self, a, n, act, y) }
        } else {
            forward_portable(self, a, n, act, y);
        }
    }
}

/// Whether `forward` runs on AVX512-BF16 (detected, and not capped by
/// `IWTVAE_SIMD` below avx512).
pub fn has_avx512bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| {
            super::simd::simd() == super::simd::Simd::Avx512 && std::is_x86_feature_detected!("avx512bf16")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

fn activate(v: f32, act: Activation) -> f32 {
    match act {
        Activation::Identity => v,
        // f32::max(NaN, 0) = 0, as the fp32 layers' relu_inplace.
        Activation::Relu => v.max(0.0),
    }
}

simd_dispatch!(
    /// The spec: the module doc's loop, on any CPU, over x's bf16 pairs a
    /// [n, pairs]; compiled with FMA where the CPU has it (mul_add is one
    /// fused rounding either way, so every clone gives the same bits).
    pub fn forward_portable(layer: &Bf16Linear, a: &[u32], n: usize, act: Activation, y: &mut [f32]) => spec_rows_body
);

#[inline(always)]
fn spec_rows_body(layer: &Bf16Linear, a: &[u32], n: usize, act: Activation, y: &mut [f32]) {
    let (pairs, out) = (layer.pairs, layer.out);
    let mut acc = [0f32; LANES];
    for r in 0..n {
        for p in 0..layer.panels {
            acc.fill(0.0);
            for j in 0..pairs {
                let x = a[r * pairs + j];
                let (x0, x1) = (bf16_operand(x as u16), bf16_operand((x >> 16) as u16));
                let w = &layer.w[(p * pairs + j) * LANES..][..LANES];
                for (s, &wl) in acc.iter_mut().zip(w) {
                    let (w0, w1) = (bf16_operand(wl as u16), bf16_operand((wl >> 16) as u16));
                    *s = ftz(x1.mul_add(w1, *s));
                    *s = ftz(x0.mul_add(w0, *s));
                }
            }
            for (l, &s) in acc.iter().enumerate().take(out.saturating_sub(p * LANES)) {
                let o = p * LANES + l;
                y[r * out + o] = activate(s + layer.bias[o], act);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512bf16 {
    use super::{Activation, Bf16Linear, LANES};
    use std::arch::x86_64::*;

    /// Rows per register tile; with `PANELS` panels, 24 accumulators of the
    /// 32 zmm registers, leaving room for the panels' weights.
    const ROWS: usize = 6;
    /// Panels (16 outputs each) per register tile.
    const PANELS: usize = 4;

    /// # Safety
    /// The CPU has AVX-512F and AVX512-BF16; a is [n, layer.pairs]; y holds
    /// n rows of layer.out.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn forward(layer: &Bf16Linear, a: &[u32], n: usize, act: Activation, y: &mut [f32]) {
        debug_assert!(a.len() >= n * layer.pairs && y.len() >= n * layer.out);
        // Panels outer, rows inner: a group of PANELS panels' weights
        // (pairs × 256 B: 32 KiB for 256 inputs) stays in L1 while every
        // row streams past it.
        let mut p = 0;
        while p < layer.panels {
            match layer.panels - p {
                1 => rows::<1>(layer, a, n, p, act, y),
                2 => rows::<2>(layer, a, n, p, act, y),
                3 => rows::<3>(layer, a, n, p, act, y),
                _ => rows::<PANELS>(layer, a, n, p, act, y),
            }
            p += PANELS;
        }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn rows<const NP: usize>(
        layer: &Bf16Linear,
        a: &[u32],
        n: usize,
        p0: usize,
        act: Activation,
        y: &mut [f32],
    ) {
        let mut r = 0;
        while r + ROWS <= n {
            tile::<ROWS, NP>(layer, a, r, p0, act, y);
            r += ROWS;
        }
        while r < n {
            tile::<1, NP>(layer, a, r, p0, act, y);
            r += 1;
        }
    }

    /// Rows r0..r0+NR, panels p0..p0+NP: NR × NP accumulators over all pairs.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn tile<const NR: usize, const NP: usize>(
        layer: &Bf16Linear,
        a: &[u32],
        r0: usize,
        p0: usize,
        act: Activation,
        y: &mut [f32],
    ) {
        let (pairs, out) = (layer.pairs, layer.out);
        let mut acc = [[_mm512_setzero_ps(); NP]; NR];
        let w = layer.w.as_ptr();
        let x = a.as_ptr().add(r0 * pairs);
        for j in 0..pairs {
            let mut wv = [_mm512_setzero_si512(); NP];
            for (q, v) in wv.iter_mut().enumerate() {
                // SAFETY (all loads): panel p0 + q < panels, pair j < pairs,
                // so the 16 lanes lie inside w ([panels][pairs][16]); row
                // r0 + i < n and pair j < pairs lie inside a ([n][pairs]).
                *v = _mm512_loadu_si512(w.add(((p0 + q) * pairs + j) * LANES) as *const _);
            }
            for (i, acc_row) in acc.iter_mut().enumerate() {
                let xv: __m512bh = std::mem::transmute(_mm512_set1_epi32(*x.add(i * pairs + j) as i32));
                for (s, &v) in acc_row.iter_mut().zip(&wv) {
                    *s = _mm512_dpbf16_ps(*s, xv, std::mem::transmute::<__m512i, __m512bh>(v));
                }
            }
        }
        let zero = _mm512_setzero_ps();
        for (i, acc_row) in acc.iter().enumerate() {
            for (q, &s) in acc_row.iter().enumerate() {
                let o = (p0 + q) * LANES;
                let valid = out - o; // ≥ 1: panel p0 + q holds output o
                let mask: __mmask16 = if valid >= LANES { 0xffff } else { (1u16 << valid) - 1 };
                let b = _mm512_maskz_loadu_ps(mask, layer.bias.as_ptr().add(o));
                let mut v = _mm512_add_ps(s, b);
                if act == Activation::Relu {
                    // max(v, 0) returns its second operand for a NaN v: 0,
                    // as f32::max(NaN, 0) in the spec.
                    v = _mm512_max_ps(v, zero);
                }
                _mm512_mask_storeu_ps(y.as_mut_ptr().add((r0 + i) * out + o), mask, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64: the tests' operands, reproducible without a crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn uniform(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
    }

    fn layer(rng: &mut Rng, out: usize, inp: usize) -> (Vec<f32>, Vec<f32>) {
        let w = (0..out * inp).map(|_| rng.uniform() * 0.2).collect();
        let b = (0..out).map(|_| rng.uniform() * 0.1).collect();
        (w, b)
    }

    #[test]
    fn the_spec_is_the_f64_sum_of_bf16_rounded_operands_to_fp32_rounding() {
        let mut rng = Rng(7);
        let (n, out, inp) = (5, 37, 43);
        let (w, b) = layer(&mut rng, out, inp);
        let x: Vec<f32> = (0..n * inp).map(|_| rng.uniform()).collect();
        let l = Bf16Linear::new(&w, &b, out, inp);
        let mut a = vec![0u32; n * inp.div_ceil(2)];
        for r in 0..n {
            pack_pairs(&x[r * inp..(r + 1) * inp], &mut a[r * inp.div_ceil(2)..(r + 1) * inp.div_ceil(2)]);
        }
        let mut y = vec![f32::NAN; n * out];
        forward_portable(&l, &a, n, Activation::Identity, &mut y);
        let r16 = |v: f32| bf16_operand(bf16_bits(v)) as f64;
        for r in 0..n {
            for o in 0..out {
                let (mut exact, mut magnitude) = (b[o] as f64, b[o].abs() as f64);
                for i in 0..inp {
                    exact += r16(x[r * inp + i]) * r16(w[o * inp + i]);
                    magnitude += (r16(x[r * inp + i]) * r16(w[o * inp + i])).abs();
                }
                // One fp32 rounding per fma (inp of them, one more for the
                // zero that pads an odd count) and one for the bias, each of
                // a sum bounded by `magnitude`; the products are exact
                // (8-bit × 8-bit significands).
                let bound = (inp + 2) as f64 * f32::EPSILON as f64 * 0.5 * magnitude;
                let got = y[r * out + o] as f64;
                assert!((got - exact).abs() <= bound, "y[{r},{o}] = {got}, exact {exact}, bound {bound}");
            }
        }
        // And it is not fp32 arithmetic on the unrounded operands.
        let fp32: f64 = (0..inp).map(|i| x[i] as f64 * w[i] as f64).sum::<f64>() + b[0] as f64;
        assert!((y[0] as f64 - fp32).abs() > 1e-6, "bf16 rounding left no trace: {} vs {fp32}", y[0]);
    }

    #[test]
    fn bf16_bits_rounds_as_half_does() {
        let mut rng = Rng(3);
        let special = [0.0, -0.0, 1.0, f32::MAX, f32::MIN_POSITIVE, 1e-40, -1e-45, f32::INFINITY, f32::NEG_INFINITY];
        let ties = [f32::from_bits(0x3f80_8000), f32::from_bits(0x3f81_8000), f32::from_bits(0x7f7f_ffff)];
        let nans = [f32::NAN, -f32::NAN, f32::from_bits(0x7f80_0001), f32::from_bits(0xffc1_2345)];
        let random = (0..100_000).map(|_| f32::from_bits(rng.next() as u32));
        for v in special.into_iter().chain(ties).chain(nans).chain(random) {
            let want = half::bf16::from_f32(v).to_bits();
            assert_eq!(bf16_bits(v), want, "{v:e} ({:#010x})", v.to_bits());
        }
    }

    #[test]
    fn the_spec_reads_bf16_subnormals_as_zero_and_flushes_subnormal_sums() {
        // W = [[2^-128 as bf16 (subnormal), 1], [2^-63, 2^-63]], x = [1, 2^-64].
        let sub = bf16_operand(0x0040);
        assert_eq!(sub.to_bits(), 0, "a bf16 subnormal reads as +0");
        assert_eq!(bf16_operand(0x8040).to_bits(), 0x8000_0000, "and keeps its sign");
        let t63 = 2f32.powi(-63);
        let t64 = 2f32.powi(-64);
        let w = [f32::from_bits(0x0040_0000), 1.0, t63, t63];
        let l = Bf16Linear::new(&w, &[0.0, 0.0], 2, 2);
        let mut y = vec![0f32; 2];
        l.forward(&[1.0, t64], 1, Activation::Identity, &mut y, &mut Vec::new());
        // Row 0: 2^-64 · 1 = 2^-64, then + 1 · subnormal (read as 0).
        assert_eq!(y[0], t64);
        // Row 1: 2^-64 · 2^-63 = 2^-127 (subnormal: flushed), then
        // + 1 · 2^-63 = 2^-63.
        assert_eq!(y[1], t63);
    }

    /// Every tile shape (6-row tiles and single rows; 4, 3, 2 and 1 panels;
    /// a partial last panel) and an odd input count, with ReLU: the
    /// AVX512-BF16 kernel gives the spec's bits.
    #[test]
    fn the_avx512bf16_kernel_gives_the_specs_bits() {
        if !has_avx512bf16() {
            eprintln!(
                "SKIPPED: this CPU has no AVX512-BF16 (or IWTVAE_SIMD caps it); only the portable spec runs here"
            );
            return;
        }
        let mut rng = Rng(11);
        for (n, out, inp) in [(13, 784, 256), (7, 256, 42), (1, 70, 5), (6, 48, 18), (12, 33, 256), (250, 256, 256)] {
            let (w, b) = layer(&mut rng, out, inp);
            let mut x: Vec<f32> = (0..n * inp).map(|_| rng.uniform()).collect();
            x[0] = f32::from_bits(0x0000_1234); // f32 subnormal: rounds to a bf16 subnormal
            let l = Bf16Linear::new(&w, &b, out, inp);
            for act in [Activation::Identity, Activation::Relu] {
                let mut fast = vec![f32::NAN; n * out];
                let mut scratch = Vec::new();
                l.forward(&x, n, act, &mut fast, &mut scratch);
                let mut spec = vec![f32::NAN; n * out];
                forward_portable(&l, &scratch[..n * inp.div_ceil(2)], n, act, &mut spec);
                for (i, (f, s)) in fast.iter().zip(&spec).enumerate() {
                    assert_eq!(
                        f.to_bits(),
                        s.to_bits(),
                        "[{n}, {out}, {inp}] {act:?} y[{}, {}]: {f} vs {s}",
                        i / out,
                        i % out
                    );
                }
            }
        }
    }
}
