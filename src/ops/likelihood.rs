//! Sigmoid and the Bernoulli log-likelihood, with torch's BCE conventions:
//!
//! ```text
//! log p(x|p) = Σ_j x_j·max(ln p_j, −100) + (1 − x_j)·max(ln(1 − p_j), −100)
//! ∂/∂p_j     = (x_j − p_j) / max(p_j (1 − p_j), 1e-12)
//! ```
//! Row sums use 8 lane-wise partial sums in a fixed order: deterministic,
//! and vectorizable (a single running sum would pin the loop to scalar).
use crate::Real;

/// sigmoid(a), stable for both signs: for a < 0 it is e^a / (1 + e^a), so
/// probabilities far below 2^-126 stay subnormal instead of becoming 0.
#[inline(always)]
pub fn sigmoid<T: Real>(a: T) -> T {
    let e = (-a.abs()).exp_v();
    let s = T::one() / (T::one() + e);
    if a >= T::zero() {
        s
    } else {
        e * s
    }
}

#[inline(always)]
fn clamped_ln<T: Real>(v: T) -> T {
    v.ln_v().max(T::of(-100.0))
}

/// One pixel's log-likelihood term.
#[inline(always)]
pub fn bernoulli_logp<T: Real>(x: T, p: T) -> T {
    x * clamped_ln(p) + (T::one() - x) * clamped_ln(T::one() - p)
}

/// `bernoulli_logp` for a target known to be 0 or 1: x ln p + (1−x) ln(1−p)
/// is then ln(x ? p : 1 − p), one logarithm instead of two, bit-identical.
#[inline(always)]
pub fn bernoulli_logp_binary<T: Real>(x: T, p: T) -> T {
    clamped_ln(if x > T::of(0.5) { p } else { T::one() - p })
}

/// ∂ log p(x|p) / ∂p for one pixel.
#[inline(always)]
pub fn bernoulli_logp_grad<T: Real>(x: T, p: T) -> T {
    (x - p) / (p * (T::one() - p)).max(T::of(1e-12))
}

/// Σ_j f(j) with 8 partial sums (j mod 8), combined pairwise, then the tail.
#[inline(always)]
pub fn lane_sum<T: Real>(n: usize, f: impl Fn(usize) -> T) -> T {
    let mut acc = [T::zero(); 8];
    let full = n / 8 * 8;
    let mut j = 0;
    while j < full {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += f(j + l);
        }
        j += 8;
    }
    let mut tail = T::zero();
    for j in full..n {
        tail += f(j);
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// Σ_j log p(x_j | p_j) over a row. `terms` (`[D]` scratch) receives the
/// per-pixel terms first: that loop has no cross-iteration dependency and
/// vectorizes; the lane-wise sum then runs over plain numbers.
#[inline(always)]
pub fn bernoulli_logp_row<T: Real>(x: &[T], p: &[T], terms: &mut [T]) -> T {
    let n = x.len();
    let (p, terms) = (&p[..n], &mut terms[..n]);
    for j in 0..n {
        terms[j] = bernoulli_logp(x[j], p[j]);
    }
    lane_sum(n, |j| terms[j])
}

/// The same for targets known to be 0 or 1 (`bernoulli_logp_binary`).
#[inline(always)]
pub fn bernoulli_logp_row_binary<T: Real>(x: &[T], p: &[T], terms: &mut [T]) -> T {
    let n = x.len();
    let (p, terms) = (&p[..n], &mut terms[..n]);
    for j in 0..n {
        terms[j] = bernoulli_logp_binary(x[j], p[j]);
    }
    lane_sum(n, |j| terms[j])
}

/// True when every target is exactly 0 or 1.
pub fn is_binary<T: Real>(x: &[T]) -> bool {
    x.iter().all(|&v| v == T::zero() || v == T::one())
}

/// c = sigmoid(a), in place over a row.
#[inline(always)]
pub fn sigmoid_inplace<T: Real>(v: &mut [T]) {
    for e in v {
        *e = sigmoid(*e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden values from torch:
    /// ```python
    /// p = torch.tensor([0.3, 0.9, 1e-50, 1.0], dtype=torch.float64)
    /// x = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    /// -F.binary_cross_entropy(p, x, reduction='none')
    /// # tensor([-1.2040, -2.3026, -100.0000, -100.0000])
    /// ```
    #[test]
    fn matches_torch_bce_with_log_clamp() {
        let p = [0.3f64, 0.9, 1e-50, 1.0];
        let x = [1.0f64, 0.0, 1.0, 0.0];
        let want = [0.3f64.ln(), 0.1f64.ln(), -100.0, -100.0];
        for i in 0..4 {
            assert!((bernoulli_logp(x[i], p[i]) - want[i]).abs() < 1e-12, "{i}");
        }
    }

    #[test]
    fn gradient_matches_finite_difference() {
        for (x, p) in [(1.0f64, 0.3), (0.0, 0.7), (0.4, 0.5)] {
            let h = 1e-6;
            let fd = (bernoulli_logp(x, p + h) - bernoulli_logp(x, p - h)) / (2.0 * h);
            assert!((fd - bernoulli_logp_grad(x, p)).abs() < 1e-7);
        }
    }

    /// torch.sigmoid(torch.tensor(-90.0)).log() = -90.0 (subnormal p);
    /// a naive 1/(1+exp(90)) gives 0 and a clamped −100.
    #[test]
    fn sigmoid_keeps_subnormal_probabilities() {
        let p = sigmoid(-90.0f32);
        assert!(p > 0.0 && p < f32::MIN_POSITIVE);
        assert!((bernoulli_logp(1.0f32, p) + 90.0).abs() < 0.01);
        assert_eq!(sigmoid(-1000.0f32), 0.0);
        assert_eq!(sigmoid(1000.0f32), 1.0);
        assert_eq!(bernoulli_logp(1.0f32, sigmoid(-1000.0f32)), -100.0);
    }

    #[test]
    fn binary_row_equals_general_row() {
        let x: Vec<f32> = (0..37).map(|i| (i % 3 == 0) as u8 as f32).collect();
        let p: Vec<f32> = (0..37).map(|i| sigmoid((i as f32 - 18.0) * 0.7)).collect();
        let mut t = vec![0.0; 37];
        assert_eq!(bernoulli_logp_row(&x, &p, &mut t.clone()), bernoulli_logp_row_binary(&x, &p, &mut t));
    }
}
