//! Closed-form linear read-outs of latent codes: Fisher's linear discriminant
//! (Gaussian classes sharing one covariance) for the digit label, and ridge
//! least squares for a continuous quantity (the rotation angle). Closed form
//! so that a probe's figure depends on the codes alone, not on where an
//! optimizer stopped; f64 throughout (d ≤ a few hundred, so the d×d solves
//! cost nothing next to encoding the images).
use crate::error::{Error, Result};

/// Relative ridge added to a covariance's diagonal: keeps the solve defined
/// when a latent unit has collapsed (its posterior mean constant over the
/// data, a zero row and column), without moving a well-conditioned fit.
const RIDGE: f64 = 1e-6;

/// Fisher's linear discriminant over `classes` labels: class means μ_c,
/// one pooled within-class covariance Σ, priors π_c from the label counts;
/// a row x goes to argmax_c xᵀΣ⁻¹μ_c − ½ μ_cᵀΣ⁻¹μ_c + ln π_c.
pub struct LinearDiscriminant {
    d: usize,
    /// Σ⁻¹μ_c, [classes, d].
    weights: Vec<f64>,
    /// −½ μ_cᵀΣ⁻¹μ_c + ln π_c, [classes]; −∞ for a class absent in training.
    offsets: Vec<f64>,
}

impl LinearDiscriminant {
    /// Fit on rows x `[n, d]` with labels `[n]` in 0..classes.
    pub fn fit(x: &[f64], labels: &[u8], d: usize, classes: usize) -> Result<Self> {
        let n = labels.len();
        check_rows("LinearDiscriminant::fit", x, n, d)?;
        if let Some(&l) = labels.iter().find(|&&l| l as usize >= classes) {
            return Err(shape("LinearDiscriminant::fit", format!("label {l} with {classes} classes")));
        }
        // means: [classes, d]
        let mut count = vec![0usize; classes];
        let mut means = vec![0f64; classes * d];
        for (row, &l) in x.chunks_exact(d).zip(labels) {
            count[l as usize] += 1;
            for (m, v) in means[l as usize * d..(l as usize + 1) * d].iter_mut().zip(row) {
                *m += v;
            }
        }
        for (c, &k) in count.iter().enumerate() {
            means[c * d..(c + 1) * d].iter_mut().for_each(|m| *m /= k.max(1) as f64);
        }
        // pooled within-class covariance: [d, d]
        let mut cov = vec![0f64; d * d];
        let mut centred = vec![0f64; d];
        for (row, &l) in x.chunks_exact(d).zip(labels) {
            for ((c, v), m) in centred.iter_mut().zip(row).zip(&means[l as usize * d..]) {
                *c = v - m;
            }
            for i in 0..d {
                for j in 0..=i {
                    cov[i * d + j] += centred[i] * centred[j];
                }
            }
        }
        let dof = n.saturating_sub(count.iter().filter(|&&k| k > 0).count()).max(1) as f64;
        symmetrize_scaled(&mut cov, d, 1.0 / dof);
        // Σ⁻¹μ_c for every class at once: solve Σ W = [μ_0 … μ_C-1] (d × classes).
        let mut rhs = vec![0f64; d * classes];
        for c in 0..classes {
            for i in 0..d {
                rhs[i * classes + c] = means[c * d + i];
            }
        }
        cholesky_solve(&mut cov, d, &mut rhs, classes)?;
        let mut weights = vec![0f64; classes * d];
        let mut offsets = vec![f64::NEG_INFINITY; classes];
        for c in 0..classes {
            for i in 0..d {
                weights[c * d + i] = rhs[i * classes + c];
            }
            if count[c] > 0 {
                let quad: f64 = (0..d).map(|i| means[c * d + i] * weights[c * d + i]).sum();
                offsets[c] = -0.5 * quad + (count[c] as f64 / n as f64).ln();
            }
        }
        Ok(LinearDiscriminant { d, weights, offsets })
    }

    /// The most probable class of one row `[d]`.
    pub fn predict(&self, row: &[f64]) -> usize {
        let mut best = (0, f64::NEG_INFINITY);
        for (c, (w, b)) in self.weights.chunks_exact(self.d.max(1)).zip(&self.offsets).enumerate() {
            let score = b + w.iter().zip(row).map(|(w, v)| w * v).sum::<f64>();
            if score > best.1 {
                best = (c, score);
            }
        }
        best.0
    }

    /// Fraction of rows x [n, d] whose predicted class is their label.
    pub fn accuracy(&self, x: &[f64], labels: &[u8]) -> Result<f64> {
        check_rows("LinearDiscriminant::accuracy", x, labels.len(), self.d)?;
        let right = x.chunks_exact(self.d.max(1)).zip(labels).filter(|(r, &l)| self.predict(r) == l as usize).count();
        Ok(right as f64 / labels.len().max(1) as f64)
    }
}

/// y ≈ wᵀx + b by least squares (ridge `RIDGE` relative to the features'
/// variance), on centred features so the intercept is not penalized.
pub struct LeastSquares {
    weights: Vec<f64>,
    intercept: f64,
}

/// The sums least squares needs, taken one row at a time, so that a fit over
/// many rows (every training digit at every angle) holds no [n, d] matrix.
pub struct NormalEquations {
    d: usize,
    n: usize,
    finite: bool,
    /// Σx [d], Σxxᵀ (lower triangle) [d, d], Σxy [d], Σy.
    sum_x: Vec<f64>,
    sum_xx: Vec<f64>,
    sum_xy: Vec<f64>,
    sum_y: f64,
}

impl NormalEquations {
    pub fn new(d: usize) -> Self {
        NormalEquations {
            d,
            n: 0,
            finite: true,
            sum_x: vec![0.0; d],
            sum_xx: vec![0.0; d * d],
            sum_xy: vec![0.0; d],
            sum_y: 0.0,
        }
    }

    /// One row `[d]` and its target (rows of another length are refused by `solve`).
    pub fn add(&mut self, row: &[f64], y: f64) {
        let d = self.d;
        if row.len() != d {
            self.finite = false;
            return;
        }
        self.n += 1;
        self.finite &= y.is_finite() && row.iter().all(|v| v.is_finite());
        self.sum_y += y;
        for i in 0..d {
            self.sum_x[i] += row[i];
            self.sum_xy[i] += row[i] * y;
            for j in 0..=i {
                self.sum_xx[i * d + j] += row[i] * row[j];
            }
        }
    }

    /// The fit: centred normal equations XcᵀXc w = Xcᵀyc, from the sums
    /// (XcᵀXc = Σxxᵀ − n·x̄x̄ᵀ), then b = ȳ − wᵀx̄.
    pub fn solve(&self) -> Result<LeastSquares> {
        let (d, n) = (self.d, self.n);
        if n == 0 || d == 0 || !self.finite {
            return Err(shape(
                "NormalEquations::solve",
                format!("{n} rows of {d} features, all finite and of that length: {}", self.finite),
            ));
        }
        let nf = n as f64;
        let x_mean: Vec<f64> = self.sum_x.iter().map(|s| s / nf).collect();
        let y_mean = self.sum_y / nf;
        let mut xtx = vec![0f64; d * d];
        for i in 0..d {
            for j in 0..=i {
                xtx[i * d + j] = self.sum_xx[i * d + j] - nf * x_mean[i] * x_mean[j];
            }
        }
        let mut xty: Vec<f64> = (0..d).map(|i| self.sum_xy[i] - nf * x_mean[i] * y_mean).collect();
        symmetrize_scaled(&mut xtx, d, 1.0);
        cholesky_solve(&mut xtx, d, &mut xty, 1)?;
        let intercept = y_mean - xty.iter().zip(&x_mean).map(|(w, m)| w * m).sum::<f64>();
        Ok(LeastSquares { weights: xty, intercept })
    }
}

impl LeastSquares {
    /// Fit on rows x `[n, d]` with targets y `[n]`.
    pub fn fit(x: &[f64], y: &[f64], d: usize) -> Result<Self> {
        check_rows("LeastSquares::fit", x, y.len(), d)?;
        let mut eq = NormalEquations::new(d);
        x.chunks_exact(d).zip(y).for_each(|(row, &t)| eq.add(row, t));
        eq.solve()
    }

    pub fn predict(&self, row: &[f64]) -> f64 {
        self.intercept + self.weights.iter().zip(row).map(|(w, v)| w * v).sum::<f64>()
    }

    pub fn weights(&self) -> (&[f64], f64) {
        (&self.weights, self.intercept)
    }

    /// 1 − Σ(y − ŷ)² / Σ(y − ȳ)² on rows x [n, d]: the fraction of y's
    /// variance the read-out explains (≤ 1; below 0 when worse than ȳ).
    pub fn r_squared(&self, x: &[f64], y: &[f64]) -> Result<f64> {
        let d = self.weights.len();
        check_rows("LeastSquares::r_squared", x, y.len(), d)?;
        let mean = y.iter().sum::<f64>() / y.len().max(1) as f64;
        let (mut residual, mut total) = (0f64, 0f64);
        for (row, &t) in x.chunks_exact(d.max(1)).zip(y) {
            residual += (t - self.predict(row)).powi(2);
            total += (t - mean).powi(2);
        }
        Ok(if total > 0.0 { 1.0 - residual / total } else { 0.0 })
    }
}

fn shape(op: &'static str, detail: String) -> Error {
    Error::Shape { op, detail }
}

fn check_rows(op: &'static str, x: &[f64], n: usize, d: usize) -> Result<()> {
    if n == 0 || d == 0 || x.len() != n * d {
        return Err(shape(op, format!("{} values for {n} rows of {d} features", x.len())));
    }
    if x.iter().any(|v| !v.is_finite()) {
        return Err(shape(op, "a non-finite feature".into()));
    }
    Ok(())
}

/// Mirror a lower triangle [d, d] to the upper one, scale it, and add the
/// relative ridge to the diagonal.
fn symmetrize_scaled(a: &mut [f64], d: usize, scale: f64) {
    for i in 0..d {
        for j in 0..=i {
            a[i * d + j] *= scale;
            a[j * d + i] = a[i * d + j];
        }
    }
    let mean_diag = (0..d).map(|i| a[i * d + i]).sum::<f64>() / d as f64;
    let ridge = RIDGE * mean_diag + f64::MIN_POSITIVE;
    (0..d).for_each(|i| a[i * d + i] += ridge);
}

/// Solve A X = B in place (B [d, m] becomes X) for symmetric positive
/// definite A [d, d] (overwritten by its Cholesky factor).
fn cholesky_solve(a: &mut [f64], d: usize, b: &mut [f64], m: usize) -> Result<()> {
    for j in 0..d {
        let pivot = a[j * d + j] - (0..j).map(|k| a[j * d + k] * a[j * d + k]).sum::<f64>();
        if pivot.is_nan() || pivot <= 0.0 {
            return Err(shape("cholesky_solve", format!("the {d}x{d} system is not positive definite (column {j})")));
        }
        let l_jj = pivot.sqrt();
        a[j * d + j] = l_jj;
        for i in j + 1..d {
            let s = a[i * d + j] - (0..j).map(|k| a[i * d + k] * a[j * d + k]).sum::<f64>();
            a[i * d + j] = s / l_jj;
        }
    }
    for c in 0..m {
        // L y = b, then Lᵀ x = y.
        for i in 0..d {
            let s = b[i * m + c] - (0..i).map(|k| a[i * d + k] * b[k * m + c]).sum::<f64>();
            b[i * m + c] = s / a[i * d + i];
        }
        for i in (0..d).rev() {
            let s = b[i * m + c] - (i + 1..d).map(|k| a[k * d + i] * b[k * m + c]).sum::<f64>();
            b[i * m + c] = s / a[i * d + i];
        }
    }
    Ok(())
}
