//! The warp: identity θ reproduces the canonical image, the TPS grid at
//! identity is the base grid, and grid sampling agrees with hand-computed
//! values, including the border, out-of-range and non-finite coordinates.
mod common;
use common::tiny_config;
use iwtvae::model::{ModelConfig, Transform};
use iwtvae::ops::grid::Warp;
use iwtvae::ops::grid_sample::{grid_sample_row, grid_sample_row_backward};

#[test]
fn tps_grid_at_identity_is_the_base_grid() {
    for g in [2, 3, 4, 5] {
        let cfg = ModelConfig { tps_grid: g, height: 28, width: 28, ..tiny_config(Transform::Tps) };
        let warp = Warp::<f64>::new(&cfg);
        let (mut xs, mut ys) = (vec![0.0; 784], vec![0.0; 784]);
        warp.grid_row(&warp.theta_identity(), &mut xs, &mut ys);
        for p in 0..784 {
            assert!((xs[p] - warp.base_x[p]).abs() < 1e-12 && (ys[p] - warp.base_y[p]).abs() < 1e-12, "g={g} p={p}");
        }
    }
}

#[test]
fn identity_theta_reproduces_the_canonical_image() {
    for transform in [Transform::Affine, Transform::Tps] {
        let cfg = ModelConfig { height: 28, width: 28, ..tiny_config(transform) };
        let warp = Warp::<f32>::new(&cfg);
        let c: Vec<f32> = (0..784).map(|i| ((i * 37 % 101) as f32) / 100.0).collect();
        let (mut xs, mut ys, mut p) = (vec![0f32; 784], vec![0f32; 784], vec![0f32; 784]);
        warp.grid_row(&warp.theta_identity(), &mut xs, &mut ys);
        grid_sample_row(&c, 28, 28, &xs, &ys, &mut p);
        for j in 0..784 {
            // f32 TPS coordinates are within ~1e-6 of the pixel centres, so a
            // sample mixes in at most ~1e-5 of a neighbour.
            assert!((p[j] - c[j]).abs() < 1e-4, "{}: pixel {j}: {} vs {}", transform.name(), p[j], c[j]);
        }
    }
}

/// A 2×3 image [[0, 1, 2], [10, 20, 30]]: x_j = -1, 0, 1 and y_i = -1, 1.
#[test]
fn grid_sample_matches_hand_computed_values() {
    let c = [0.0f64, 1.0, 2.0, 10.0, 20.0, 30.0];
    let cases: &[(f64, f64, f64)] = &[
        (-1.0, -1.0, 0.0),              // top-left pixel centre
        (1.0, 1.0, 30.0),               // bottom-right
        (0.0, -1.0, 1.0),               // top-middle
        (-0.5, -1.0, 0.5),              // halfway between 0 and 1
        (0.5, 0.0, 0.5 * (1.5 + 25.0)), // centre of the right half: mean of rows
        (-3.0, -1.0, 0.0),              // left of the image: border
        (7.0, 5.0, 30.0),               // far outside: border corner
        (1.0, 0.0, 16.0),               // right edge, halfway down: (2 + 30) / 2
        (f64::INFINITY, 0.0, f64::NAN), // non-finite → NaN
        (0.0, f64::NAN, f64::NAN),
        (f64::NEG_INFINITY, f64::NEG_INFINITY, f64::NAN),
    ];
    let xs: Vec<f64> = cases.iter().map(|c| c.0).collect();
    let ys: Vec<f64> = cases.iter().map(|c| c.1).collect();
    let mut out = vec![0.0; cases.len()];
    grid_sample_row(&c, 2, 3, &xs, &ys, &mut out);
    for (i, &(x, y, want)) in cases.iter().enumerate() {
        if want.is_nan() {
            assert!(out[i].is_nan(), "({x}, {y}) gave {}", out[i]);
        } else {
            assert!((out[i] - want).abs() < 1e-12, "({x}, {y}): {} vs {want}", out[i]);
        }
    }
    // The backward reads and writes nothing for non-finite points and
    // reports NaN coordinate gradients; the finite points still flow.
    let mut dc = vec![0.0; 6];
    let (mut dxs, mut dys) = (vec![0.0; cases.len()], vec![0.0; cases.len()]);
    let ones = vec![1.0; cases.len()];
    grid_sample_row_backward(&c, 2, 3, &xs, &ys, &ones, &mut dc, &mut dxs, &mut dys);
    assert!((dc.iter().sum::<f64>() - 8.0).abs() < 1e-12, "8 finite points, weights sum to 1 each: {dc:?}");
    assert!(dxs[8].is_nan() && dys[9].is_nan() && dxs[10].is_nan());
    // Clipped coordinates get no coordinate gradient (torch's border rule).
    assert_eq!(dxs[5], 0.0);
    assert_eq!((dxs[6], dys[6]), (0.0, 0.0));
    // Inside: d/dx at (-0.5, -1) = (c[0,1] - c[0,0]) · (W-1)/2 = 1.
    assert!((dxs[3] - 1.0).abs() < 1e-12);
}
