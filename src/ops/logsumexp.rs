//! Log-sum-exp and importance weights, in f64 (k = 5000 log-weights near
//! −100 lose nothing to f64 accumulation, and this is not the hot path).
//!
//! `Lse` streams: chunks of log-weights fold into (max, Σ exp(v − max)), so
//! NLL with k = 5000 never holds more than one chunk per image.

#[derive(Clone, Copy, Debug)]
pub struct Lse {
    max: f64,
    sum: f64,
    nan: bool,
}

impl Default for Lse {
    fn default() -> Self {
        Lse { max: f64::NEG_INFINITY, sum: 0.0, nan: false }
    }
}

impl Lse {
    pub fn push(&mut self, v: f64) {
        if v.is_nan() {
            self.nan = true;
        } else if v == f64::INFINITY {
            self.max = f64::INFINITY;
        } else if self.max == f64::INFINITY || v == f64::NEG_INFINITY {
        } else if v > self.max {
            self.sum = self.sum * (self.max - v).exp() + 1.0;
            self.max = v;
        } else {
            self.sum += (v - self.max).exp();
        }
    }

    pub fn extend(&mut self, vs: impl IntoIterator<Item = f64>) {
        for v in vs {
            self.push(v);
        }
    }

    /// log Σ exp(v); −inf when empty or all −inf, +inf when any is +inf, NaN on NaN.
    pub fn value(&self) -> f64 {
        if self.nan {
            f64::NAN
        } else if self.max.is_infinite() {
            self.max
        } else {
            self.max + self.sum.ln()
        }
    }
}

pub fn logsumexp(v: &[f64]) -> f64 {
    let mut acc = Lse::default();
    acc.extend(v.iter().copied());
    acc.value()
}

/// w̃_s = exp(v_s − logsumexp(v)), written to `out`.
pub fn normalized_weights(v: &[f64], out: &mut [f64]) {
    let lse = logsumexp(v);
    for (o, &x) in out.iter_mut().zip(v) {
        *o = if lse.is_finite() { (x - lse).exp() } else { f64::NAN };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_infinities_and_huge_values() {
        assert_eq!(logsumexp(&[]), f64::NEG_INFINITY);
        assert_eq!(logsumexp(&[f64::NEG_INFINITY, f64::NEG_INFINITY]), f64::NEG_INFINITY);
        assert!((logsumexp(&[f64::NEG_INFINITY, 0.0]) - 0.0).abs() < 1e-15);
        assert!((logsumexp(&[1000.0, 1000.0]) - (1000.0 + 2f64.ln())).abs() < 1e-12);
        assert!((logsumexp(&[-1000.0, -1000.0]) - (-1000.0 + 2f64.ln())).abs() < 1e-12);
        assert_eq!(logsumexp(&[f64::INFINITY, 3.0]), f64::INFINITY);
        assert!(logsumexp(&[f64::NAN, 3.0]).is_nan());
        // 1e308 + ln 2 is still finite; the naive sum of exps would overflow.
        assert!(logsumexp(&[1e308, 1e308]).is_finite());
    }

    #[test]
    fn streaming_equals_direct() {
        let v: Vec<f64> = (0..5000).map(|i| -100.0 + (i as f64 * 0.731).sin() * 20.0).collect();
        let direct = {
            let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
        };
        let mut acc = Lse::default();
        for chunk in v.chunks(333) {
            acc.extend(chunk.iter().copied());
        }
        assert!((acc.value() - direct).abs() < 1e-10);
    }

    #[test]
    fn weights_sum_to_one() {
        let v = [-3.0, -1.0, f64::NEG_INFINITY, -2.0];
        let mut w = [0.0; 4];
        normalized_weights(&v, &mut w);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        assert_eq!(w[2], 0.0);
    }
}
