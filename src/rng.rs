//! Philox4x32-10 (Salmon et al., SC'11) and the project's noise keying.
//!
//! Every random number is a pure function of its coordinates, never of a
//! generator's position, so an image's estimate does not depend on batch size,
//! thread count, sharding, resume point or device:
//!
//! ```text
//! key     = [seed as u32, (seed >> 32) as u32]
//! counter = [dim / 4, sample, item, (stream << 24) | (epoch & 0xFF_FFFF)]
//! ```
//!
//! One Philox call yields 4 u32 → 4 uniforms (dims 4j..4j+3) or, by Box–Muller
//! on the pairs (w0,w1) and (w2,w3), 4 standard normals. `item` is the image's
//! index in the dataset (or the tensor's index for initialisation); `epoch`
//! stands in for the training step: an image is used once per epoch, so
//! (epoch, image) names a step's draw without depending on the batch size.
//! Evaluation streams use epoch 0. The CUDA path (kernels/common.cuh) computes
//! the same u32 words bit for bit.

use crate::ops::simd::simd_dispatch;

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

#[inline(always)]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = a as u64 * b as u64;
    ((p >> 32) as u32, p as u32)
}

/// The Philox4x32 bijection with 10 rounds.
#[inline]
pub fn philox4x32_10(mut ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut k0, mut k1) = (key[0], key[1]);
    for round in 0..10 {
        if round > 0 {
            k0 = k0.wrapping_add(W0);
            k1 = k1.wrapping_add(W1);
        }
        let (hi0, lo0) = mulhilo(M0, ctr[0]);
        let (hi1, lo1) = mulhilo(M1, ctr[2]);
        ctr = [hi1 ^ ctr[1] ^ k0, lo1, hi0 ^ ctr[3] ^ k1, lo0];
    }
    ctr
}

/// What a draw is for. Distinct streams never share a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Stream {
    Init = 1,
    Shuffle = 2,
    TrainBinarize = 3,
    TrainEps = 4,
    TrainEta = 5,
    EvalBinarize = 6,
    EvalEps = 7,
    EvalEta = 8,
    /// Prior samples and other draws for pictures.
    Show = 9,
}

/// Uniform in [0, 1) with 24 random bits: exactly representable in f32, so the
/// CPU and GPU agree bit for bit.
#[inline(always)]
pub fn uniform_from_u32(x: u32) -> f32 {
    (x >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// Box–Muller on two words, in f32 with the vectorizable ln and sincos of
/// `ops::fastmath` (libm's f64 versions cost a tenth of an NLL evaluation).
/// The first word maps to (0, 1] so ln never sees 0.
#[inline(always)]
pub fn normal_pair(a: u32, b: u32) -> (f32, f32) {
    use crate::ops::fastmath::{ln_f32, sincos_2pi};
    let u1 = ((a >> 8) + 1) as f32 * (1.0 / 16_777_216.0);
    let u2 = uniform_from_u32(b);
    let r = (-2.0 * ln_f32(u1)).sqrt();
    let (s, c) = sincos_2pi(u2);
    (r * c, r * s)
}

/// A keyed family of draws: (seed, stream, epoch) fixed, (item, sample, dim) free.
#[derive(Clone, Copy, Debug)]
pub struct NoiseKey {
    key: [u32; 2],
    hi: u32,
}

impl NoiseKey {
    pub fn new(seed: u64, stream: Stream, epoch: u32) -> Self {
        NoiseKey { key: [seed as u32, (seed >> 32) as u32], hi: ((stream as u32) << 24) | (epoch & 0x00FF_FFFF) }
    }

    /// The key words and the counter's high word, as the CUDA kernels take them.
    pub fn words(&self) -> (u32, u32, u32) {
        (self.key[0], self.key[1], self.hi)
    }

    #[inline(always)]
    pub fn block(&self, item: u32, sample: u32, block: u32) -> [u32; 4] {
        philox4x32_10([block, sample, item, self.hi], self.key)
    }

    /// `out[d]` = uniform for dims 0..out.len().
    pub fn uniforms(&self, item: u32, sample: u32, out: &mut [f32]) {
        uniforms_wide(self, item, sample, out)
    }

    /// `out[d]` = standard normal for dims 0..out.len().
    pub fn normals<T: crate::Real>(&self, item: u32, sample: u32, out: &mut [T]) {
        normals_wide(self, item, sample, out)
    }

    /// A uniform integer in [0, n) for position `i` (multiply-shift, bias < n/2³²).
    pub fn below(&self, i: u32, n: u32) -> u32 {
        let w = self.block(0, 0, i / 4)[(i % 4) as usize];
        ((w as u64 * n as u64) >> 32) as u32
    }
}

/// Blocks (Philox calls) per pass of the lane-wise functions below: every
/// step runs along lanes, so the 32×32→64 multiplies and Box–Muller
/// vectorize. Same words and same f32 arithmetic as the scalar
/// `philox4x32_10` + `normal_pair`, so the same bits.
const LANES: usize = 16;

/// Philox4x32-10 on the counters of blocks b0..b0+LANES of one (item, sample).
#[inline(always)]
#[allow(clippy::needless_range_loop)] // one index across four lane arrays is the point
fn philox_lanes(key: &NoiseKey, item: u32, sample: u32, b0: usize) -> [[u32; LANES]; 4] {
    let mut c: [[u32; LANES]; 4] =
        [std::array::from_fn(|l| (b0 + l) as u32), [sample; LANES], [item; LANES], [key.hi; LANES]];
    let (mut k0, mut k1) = (key.key[0], key.key[1]);
    for round in 0..10 {
        if round > 0 {
            k0 = k0.wrapping_add(W0);
            k1 = k1.wrapping_add(W1);
        }
        for l in 0..LANES {
            let (hi0, lo0) = mulhilo(M0, c[0][l]);
            let (hi1, lo1) = mulhilo(M1, c[2][l]);
            let (c1, c3) = (c[1][l], c[3][l]);
            c[0][l] = hi1 ^ c1 ^ k0;
            c[1][l] = lo1;
            c[2][l] = hi0 ^ c3 ^ k1;
            c[3][l] = lo0;
        }
    }
    c
}

/// Dimension 4·block + word of the output takes word `word` of block `block`.
#[inline(always)]
fn scatter_lanes<T: Copy>(vals: &[[T; LANES]; 4], b0: usize, out: &mut [T]) {
    for l in 0..LANES {
        for (w, v) in vals.iter().enumerate() {
            if let Some(o) = out.get_mut(4 * (b0 + l) + w) {
                *o = v[l];
            }
        }
    }
}

#[inline(always)]
fn uniforms_lanes(key: &NoiseKey, item: u32, sample: u32, out: &mut [f32]) {
    for b0 in (0..out.len().div_ceil(4)).step_by(LANES) {
        let c = philox_lanes(key, item, sample, b0);
        let u: [[f32; LANES]; 4] = std::array::from_fn(|w| std::array::from_fn(|l| uniform_from_u32(c[w][l])));
        scatter_lanes(&u, b0, out);
    }
}

#[inline(always)]
fn normals_lanes<T: crate::Real>(key: &NoiseKey, item: u32, sample: u32, out: &mut [T]) {
    for b0 in (0..out.len().div_ceil(4)).step_by(LANES) {
        let c = philox_lanes(key, item, sample, b0);
        // Box–Muller on the word pairs (0, 1) and (2, 3) of every lane, as
        // one flat loop of 2·LANES pairs.
        let first: [u32; 2 * LANES] = std::array::from_fn(|i| c[2 * (i / LANES)][i % LANES]);
        let second: [u32; 2 * LANES] = std::array::from_fn(|i| c[2 * (i / LANES) + 1][i % LANES]);
        let (mut na, mut nb) = ([0f32; 2 * LANES], [0f32; 2 * LANES]);
        for i in 0..2 * LANES {
            (na[i], nb[i]) = normal_pair(first[i], second[i]);
        }
        let n: [[T; LANES]; 4] = std::array::from_fn(|w| {
            let src = if w % 2 == 0 { &na } else { &nb };
            std::array::from_fn(|l| T::of(src[(w / 2) * LANES + l] as f64))
        });
        scatter_lanes(&n, b0, out);
    }
}

simd_dispatch!(fn uniforms_wide(key: &NoiseKey, item: u32, sample: u32, out: &mut [f32]) => uniforms_lanes);
simd_dispatch!(fn normals_wide<T: crate::Real>(key: &NoiseKey, item: u32, sample: u32, out: &mut [T]) => normals_lanes);

/// The order in which an epoch visits the training images (Fisher–Yates).
pub fn epoch_permutation(seed: u64, epoch: u32, n: usize) -> Vec<u32> {
    let key = NoiseKey::new(seed, Stream::Shuffle, epoch);
    let mut perm: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        let j = key.below(i as u32, i as u32 + 1) as usize;
        perm.swap(i, j);
    }
    perm
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors from Random123's kat_vectors (philox4x32_10).
    #[test]
    fn philox_known_answers() {
        assert_eq!(philox4x32_10([0, 0, 0, 0], [0, 0]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
        assert_eq!(philox4x32_10([u32::MAX; 4], [u32::MAX; 2]), [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
        assert_eq!(
            philox4x32_10([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0]),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    /// The lane-wise (vectorized) draws are the scalar Philox + Box–Muller, bit for bit.
    #[test]
    fn lanes_match_scalar_blocks() {
        let key = NoiseKey::new(0x1234_5678_9abc, Stream::TrainEps, 17);
        for len in [1, 3, 4, 42, 63, 64, 65, 784] {
            let (mut u, mut n) = (vec![0f32; len], vec![0f32; len]);
            key.uniforms(9, 4, &mut u);
            key.normals(9, 4, &mut n);
            for d in 0..len {
                let w = key.block(9, 4, (d / 4) as u32);
                assert_eq!(u[d].to_bits(), uniform_from_u32(w[d % 4]).to_bits(), "uniform {d} of {len}");
                let pair = if d % 4 < 2 { normal_pair(w[0], w[1]) } else { normal_pair(w[2], w[3]) };
                let want = if d % 2 == 0 { pair.0 } else { pair.1 };
                assert_eq!(n[d].to_bits(), want.to_bits(), "normal {d} of {len}");
            }
        }
    }

    #[test]
    fn normals_have_unit_moments() {
        let key = NoiseKey::new(7, Stream::EvalEps, 0);
        let mut v = vec![0f64; 200_000];
        key.normals(3, 0, &mut v);
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "var {var}");
    }

    #[test]
    fn draws_depend_only_on_coordinates() {
        let key = NoiseKey::new(1, Stream::TrainEps, 4);
        let mut a = vec![0f32; 10];
        let mut b = vec![0f32; 3];
        key.normals(5, 2, &mut a);
        key.normals(5, 2, &mut b);
        assert_eq!(&a[..3], &b[..]);
        let other = NoiseKey::new(1, Stream::TrainEta, 4);
        other.normals(5, 2, &mut b);
        assert_ne!(&a[..3], &b[..]);
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut p = epoch_permutation(3, 1, 1000);
        assert_ne!(p, (0..1000).collect::<Vec<_>>());
        p.sort();
        assert_eq!(p, (0..1000).collect::<Vec<_>>());
    }
}
