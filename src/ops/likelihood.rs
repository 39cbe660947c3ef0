//! Sigmoid and the Bernoulli log-likelihood, with torch's BCE conventions:
//!
//! ```text
//! log p(x|p) = Σ_j x_j·max(ln p_j, −100) + (1 − x_j)·max(ln(1 − p_j), −100)
//! ∂/∂p_j     = (x_j − p_j) / max(p_j (1 − p_j), 1e-12)
//! ```
use crate::Real;

#[inline(always)]
pub fn sigmoid<T: Real>(a: T) -> T {
    T::one() / (T::one() + (-a).exp())
}

#[inline(always)]
fn clamped_ln<T: Real>(v: T) -> T {
    v.ln().max(T::of(-100.0))
}

/// One pixel's log-likelihood term.
#[inline(always)]
pub fn bernoulli_logp<T: Real>(x: T, p: T) -> T {
    x * clamped_ln(p) + (T::one() - x) * clamped_ln(T::one() - p)
}

/// ∂ log p(x|p) / ∂p for one pixel.
#[inline(always)]
pub fn bernoulli_logp_grad<T: Real>(x: T, p: T) -> T {
    (x - p) / (p * (T::one() - p)).max(T::of(1e-12))
}

/// Σ_j log p(x_j | p_j) over a row.
pub fn bernoulli_logp_row<T: Real>(x: &[T], p: &[T]) -> T {
    x.iter().zip(p).map(|(&x, &p)| bernoulli_logp(x, p)).sum()
}

/// c = sigmoid(a), in place over a row.
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

    #[test]
    fn sigmoid_saturates_without_nan() {
        assert_eq!(sigmoid(-1000.0f32), 0.0);
        assert_eq!(sigmoid(1000.0f32), 1.0);
        assert_eq!(bernoulli_logp(1.0f32, sigmoid(-1000.0f32)), -100.0);
    }
}
