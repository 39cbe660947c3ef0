//! Shared test helpers: tiny models and a finite-difference checker.
#![allow(dead_code)]
use iwtvae::model::{init_params, Layout, ModelConfig, Transform};

pub fn tiny_config(transform: Transform) -> ModelConfig {
    ModelConfig {
        transform,
        z_dim: 3,
        u_dim: if transform == Transform::None { 0 } else { 2 },
        hidden: 7,
        tps_grid: 3,
        // Not square, so height and width cannot be swapped unnoticed.
        height: 5,
        width: 6,
    }
}

/// Parameters from the default init, then scaled so that the warp moves
/// pixels by fractions of a pixel and nothing sits on a kink.
pub fn tiny_params(layout: &Layout, seed: u64) -> Vec<f64> {
    let mut p = init_params::<f64>(layout, seed);
    if let Some(s) = &layout.u2theta {
        for v in &mut p[s.w_range()] {
            *v *= 0.3;
        }
        for v in &mut p[s.b_range()] {
            *v *= 0.2;
        }
    }
    p
}

/// Continuous targets in (0, 1) with a seed-dependent pattern.
pub fn targets(b: usize, d: usize, seed: u64) -> Vec<f64> {
    (0..b * d).map(|i| 0.05 + 0.9 * (0.5 + 0.5 * ((i as f64 + seed as f64) * 1.37).sin())).collect()
}

/// Assert analytic ≈ central difference for every coordinate.
pub fn check_gradient(name: &str, x0: &[f64], analytic: &[f64], mut f: impl FnMut(&[f64]) -> f64) {
    let h = 1e-6;
    let mut x = x0.to_vec();
    let mut worst = (0.0f64, 0usize);
    for i in 0..x.len() {
        let orig = x[i];
        x[i] = orig + h;
        let fp = f(&x);
        x[i] = orig - h;
        let fm = f(&x);
        x[i] = orig;
        let fd = (fp - fm) / (2.0 * h);
        // Central differences in f64 with h = 1e-6 carry round-off of about
        // ε·|L|/h ≈ 1e-16·50/1e-6 = 5e-9 on these O(50) losses, so the
        // absolute floor is 1e-3 · 1e-5 = 1e-8; a real error is orders larger.
        let err = (fd - analytic[i]).abs() / (1e-3 + fd.abs().max(analytic[i].abs()));
        if err > worst.0 {
            worst = (err, i);
        }
        assert!(
            err < 1e-5,
            "{name}: coordinate {i}: analytic {} vs finite difference {fd} (rel err {err:e})",
            analytic[i]
        );
    }
    eprintln!("{name}: {} coordinates, worst relative error {:.2e} at {}", x.len(), worst.0, worst.1);
}
