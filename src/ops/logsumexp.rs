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

/// The IWAE bound at a smaller k from the same samples: `size` consecutive
/// values form a group, and the estimate is the mean over the groups of
/// log mean_group exp(v), i.e. `(logsumexp(group) − ln size)`. Over k
/// log-weights in k/size disjoint groups this is an unbiased estimate of
/// E[log (1/size) Σ w] (Burda et al.'s L_size), tighter in variance than one
/// group alone; size = 1 gives the mean log-weight (the ELBO's estimate),
/// size = k the k-sample bound itself. Streams like [`Lse`]: a group folds as
/// its values arrive, whatever the chunks.
#[derive(Clone, Copy, Debug)]
pub struct GroupedLse {
    size: usize,
    open: Lse,
    filled: usize,
    /// Σ over closed groups of (logsumexp − ln size).
    total: f64,
    groups: usize,
}

impl GroupedLse {
    pub fn new(size: usize) -> Self {
        assert!(size > 0, "GroupedLse: a group holds at least one value");
        GroupedLse { size, open: Lse::default(), filled: 0, total: 0.0, groups: 0 }
    }

    pub fn push(&mut self, v: f64) {
        self.open.push(v);
        self.filled += 1;
        if self.filled == self.size {
            // ln 1 = 0 exactly, so size 1 sums the values themselves.
            self.total += self.open.value() - (self.size as f64).ln();
            self.groups += 1;
            self.open = Lse::default();
            self.filled = 0;
        }
    }

    /// The mean over the closed groups (NaN when none has closed); values
    /// of a group still open are not counted.
    pub fn value(&self) -> f64 {
        self.total / self.groups as f64
    }
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
    fn grouped_bounds_are_the_mean_of_disjoint_groups() {
        let v: Vec<f64> = (0..60).map(|i| -90.0 + (i as f64 * 1.37).sin() * 15.0).collect();
        for size in [1, 3, 4, 20, 60] {
            let mut g = GroupedLse::new(size);
            // Chunks that cut across groups change nothing.
            for chunk in v.chunks(7) {
                chunk.iter().for_each(|&x| g.push(x));
            }
            let direct = v.chunks(size).map(|c| logsumexp(c) - (size as f64).ln()).sum::<f64>() / (60 / size) as f64;
            assert!((g.value() - direct).abs() < 1e-12, "size {size}: {} vs {direct}", g.value());
        }
        // size 1 is the mean, size k the whole logsumexp − ln k, in the same
        // additions as a plain sum and a plain Lse, so the same bits.
        let (mut one, mut all) = (GroupedLse::new(1), GroupedLse::new(60));
        v.iter().for_each(|&x| {
            one.push(x);
            all.push(x)
        });
        assert_eq!(one.value(), v.iter().sum::<f64>() / 60.0);
        assert_eq!(all.value(), logsumexp(&v) - 60f64.ln());
        // A group with a NaN is NaN; one of −∞ only is −∞; an open group counts for nothing.
        let mut g = GroupedLse::new(2);
        [-1.0, f64::NEG_INFINITY].iter().for_each(|&x| g.push(x));
        assert!((g.value() - (-1.0 - 2f64.ln())).abs() < 1e-15);
        g.push(f64::NEG_INFINITY);
        g.push(f64::NEG_INFINITY);
        assert_eq!(g.value(), f64::NEG_INFINITY);
        let mut g = GroupedLse::new(2);
        [f64::NAN, 0.0, 5.0].iter().for_each(|&x| g.push(x));
        assert!(g.value().is_nan());
        assert!(GroupedLse::new(3).value().is_nan());
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
