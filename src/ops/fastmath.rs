//! Branch-free f32 exp and ln (Cephes' polynomials) so that loops over them
//! vectorize; libm's expf/logf are opaque calls that dominated the profile.
//! Plain multiplies and adds only (no mul_add), so the result is the same
//! bit pattern with or without FMA hardware. Accuracy (tested below against
//! f64): ≤ 2 ulp for exp, ≤ 3 ulp for ln, subnormals and infinities included.
// The polynomial coefficients are Cephes' (expf.c, logf.c), as published.
#![allow(clippy::excessive_precision)]

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split so that n·LN2_HI is exact for |n| < 2^9.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

#[inline(always)]
fn pow2i(n: i32) -> f32 {
    f32::from_bits(((n + 127) as u32) << 23)
}

/// e^x. Overflows to +inf, underflows through the subnormals to 0, NaN → NaN.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    // max/min rather than clamp: NaN maps to a bound so the integer
    // conversion below stays defined; NaN is restored at the end.
    #[allow(clippy::manual_clamp)]
    let xc = x.max(-104.0).min(89.0);
    // Round to nearest with the 1.5·2^23 trick (no libm, no SSE4.1 needed).
    let magic = 12_582_912.0f32;
    let n = (xc * LOG2E + magic) - magic;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_150_0e-4f32;
    p = p * r + 1.398_199_950_7e-3;
    p = p * r + 8.333_451_907_3e-3;
    p = p * r + 4.166_579_589_4e-2;
    p = p * r + 1.666_666_545_9e-1;
    p = p * r + 5.000_000_120_1e-1;
    p = p * r * r + r + 1.0;
    // 2^n as two normal factors so results below 2^-126 become subnormal
    // instead of garbage, and above 2^128 become +inf.
    // `as` would saturate lane by lane (a scalar convert per element);
    // the unchecked convert is one vcvttps2dq for the whole vector.
    // SAFETY: xc ∈ [−104, 89], so n is an integer in [−151, 129].
    let ni: i32 = unsafe { n.to_int_unchecked() };
    let n1 = ni >> 1;
    let y = p * pow2i(n1) * pow2i(ni - n1);
    if x.is_nan() {
        x
    } else {
        y
    }
}

/// ln x. ln 0 = −inf, ln x<0 = NaN, ln inf = inf, subnormals exact to ~1 ulp.
#[inline(always)]
pub fn ln_f32(x: f32) -> f32 {
    let tiny = x < f32::MIN_POSITIVE;
    let xs = if tiny { x * 8_388_608.0 } else { x }; // 2^23
    let bits = xs.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 126 - if tiny { 23 } else { 0 };
    let mut m = f32::from_bits((bits & 0x807f_ffff) | 0x3f00_0000); // [0.5, 1)
    let small = m < std::f32::consts::FRAC_1_SQRT_2;
    if small {
        e -= 1;
    }
    m = if small { m + m - 1.0 } else { m - 1.0 };
    let z = m * m;
    let mut y = 7.037_683_629_2e-2f32;
    y = y * m - 1.151_461_031_0e-1;
    y = y * m + 1.167_699_874_0e-1;
    y = y * m - 1.242_014_084_6e-1;
    y = y * m + 1.424_932_278_7e-1;
    y = y * m - 1.666_805_766_5e-1;
    y = y * m + 2.000_071_476_5e-1;
    y = y * m - 2.499_999_399_3e-1;
    y = y * m + 3.333_333_117_4e-1;
    y = y * m * z;
    let ef = e as f32;
    y += ef * LN2_LO;
    y += -0.5 * z;
    let r = m + y + ef * LN2_HI;
    if x == 0.0 {
        f32::NEG_INFINITY
    } else if x.is_nan() || x < 0.0 {
        f32::NAN
    } else if x == f32::INFINITY {
        x
    } else {
        r
    }
}

/// (sin 2πu, cos 2πu) for u ∈ [0, 1), to ~1e-7 absolute. u is reduced by
/// quarter turns, which is exact for the 24-bit uniforms of `rng`, then
/// Cephes' sinf/cosf polynomials run on [−π/4, π/4].
#[inline(always)]
pub fn sincos_2pi(u: f32) -> (f32, f32) {
    let magic = 12_582_912.0f32;
    let q = (u * 4.0 + magic) - magic; // nearest quarter turn
    let t = u - q * 0.25; // [−1/8, 1/8], exact
    let x = t * std::f32::consts::TAU;
    let z = x * x;
    let s = ((-1.951_529_589_1e-4 * z + 8.332_160_873_6e-3) * z - 1.666_665_461_1e-1) * z * x + x;
    let c = ((2.443_315_711_809_948e-5 * z - 1.388_731_625_493_765e-3) * z + 4.166_664_568_298_827e-2) * z * z
        - 0.5 * z
        + 1.0;
    // Quarter turn q: (s, c), (c, −s), (−s, −c), (−c, s) for q mod 4 = 0..3,
    // as selects rather than a match so that loops over it vectorize.
    // The clamp keeps the unchecked convert (one vcvttps2dq per vector,
    // where `as` converts lane by lane) defined for any u, NaN included.
    // SAFETY: the clamped value is finite and within i32 (max/min, unlike
    // clamp, map NaN to a bound).
    #[allow(clippy::manual_clamp)]
    let q: i32 = unsafe { q.max(-4.0).min(8.0).to_int_unchecked() };
    let (a, b) = if q & 1 == 0 { (s, c) } else { (c, s) };
    let a = if q & 2 != 0 { -a } else { a };
    let b = if (q ^ (q >> 1)) & 1 != 0 { -b } else { b };
    (a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f64) -> f64 {
        let bf = b as f32;
        if a == bf {
            return 0.0;
        }
        let ulp = (f32::from_bits(bf.abs().to_bits() + 1) - bf.abs()) as f64;
        (a as f64 - b).abs() / ulp
    }

    #[test]
    fn exp_is_accurate_everywhere() {
        let mut worst = 0.0f64;
        let mut x = -103.9f32;
        while x < 88.7 {
            let want = (x as f64).exp();
            if want > 1.2e-38 {
                worst = worst.max(ulps(exp_f32(x), want));
            } else {
                // Subnormal results: absolute error below one subnormal step.
                assert!((exp_f32(x) as f64 - want).abs() <= 2.0 * 1.4e-45, "exp({x})");
            }
            x += 0.00731;
        }
        assert!(worst <= 2.0, "exp worst {worst} ulp");
        assert_eq!(exp_f32(100.0), f32::INFINITY);
        assert_eq!(exp_f32(-200.0), 0.0);
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(f32::NAN).is_nan());
    }

    #[test]
    fn sincos_is_accurate_on_uniforms() {
        let mut worst = 0.0f64;
        for i in 0..(1u32 << 24) {
            let u = i as f32 * (1.0 / 16_777_216.0);
            let (s, c) = sincos_2pi(u);
            let a = std::f64::consts::TAU * u as f64;
            worst = worst.max((s as f64 - a.sin()).abs()).max((c as f64 - a.cos()).abs());
        }
        assert!(worst < 3e-7, "sincos worst abs error {worst}");
    }

    #[test]
    fn ln_is_accurate_everywhere() {
        let mut worst = 0.0f64;
        for i in 0..200_000 {
            let x = f32::from_bits(1 + i * (0x7f7f_ffff / 200_000));
            worst = worst.max(ulps(ln_f32(x), (x as f64).ln()));
        }
        assert!(worst <= 3.0, "ln worst {worst} ulp");
        assert_eq!(ln_f32(0.0), f32::NEG_INFINITY);
        assert_eq!(ln_f32(1.0), 0.0);
        assert!(ln_f32(-1.0).is_nan());
        assert!(ln_f32(f32::NAN).is_nan());
        assert_eq!(ln_f32(f32::INFINITY), f32::INFINITY);
        assert!((ln_f32(1e-44) as f64 - (1e-44f32 as f64).ln()).abs() < 1e-5);
    }
}
