//! The disentanglement probe's parts: rotation by the bilinear sampler, and
//! the closed-form read-outs (linear discriminant, least squares) against
//! answers known in closed form. The whole probe runs in tests/cli.rs.
use iwtvae::probe::{rotate, LeastSquares, LinearDiscriminant};
use iwtvae::rng::{NoiseKey, Stream};

fn normals(item: u32, n: usize) -> Vec<f64> {
    let mut v = vec![0f64; n];
    NoiseKey::new(7, Stream::Show, 0).normals(item, 0, &mut v);
    v
}

#[test]
fn a_quarter_turn_moves_each_pixel_where_the_hand_says() {
    // 5x5, centre (2, 2). A pixel up and to the right of the centre (row 1,
    // column 3) turned counter-clockwise by 90° as displayed lands up and to
    // the left (row 1, column 1); a clockwise turn takes it down and right.
    let mut img = vec![0f32; 25];
    img[5 + 3] = 1.0;
    let mut out = vec![0f32; 25];
    for (degrees, expect) in [(90.0, 5 + 1), (-90.0, 3 * 5 + 3), (180.0, 3 * 5 + 1), (0.0, 5 + 3)] {
        rotate(&img, 5, 5, degrees, &mut out);
        for (p, &v) in out.iter().enumerate() {
            // cos 90° is 6e-17, not 0: the sampling points miss pixel centres
            // by that much, so the bilinear weights are 1 - 1e-16 and 1e-16.
            let want = if p == expect { 1.0 } else { 0.0 };
            assert!((v - want).abs() < 1e-6, "{degrees}°: pixel {p} is {v}, want {want}");
        }
    }
}

#[test]
fn rotation_keeps_a_centred_disc_and_pads_with_the_border() {
    // A disc about the centre is unchanged by any rotation up to the
    // sampler's interpolation of its edge; corners come from border pixels.
    let (h, w) = (28, 28);
    let disc: Vec<f32> = (0..h * w)
        .map(|p| {
            let (dy, dx) = ((p / w) as f32 - 13.5, (p % w) as f32 - 13.5);
            if dx * dx + dy * dy < 64.0 {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    let mut out = vec![0f32; h * w];
    rotate(&disc, h, w, 37.0, &mut out);
    for p in 0..h * w {
        let (dy, dx) = ((p / w) as f32 - 13.5, (p % w) as f32 - 13.5);
        let r = (dx * dx + dy * dy).sqrt();
        if !(6.5..9.5).contains(&r) {
            assert_eq!(out[p], disc[p], "pixel {p} at radius {r}");
        }
    }
    // Points that fall outside the image read its nearest border pixel (as
    // the model's warp does), so a flat image stays flat to the corners.
    let flat = vec![0.5f32; h * w];
    rotate(&flat, h, w, 45.0, &mut out);
    assert!(out.iter().all(|&v| (v - 0.5).abs() < 1e-6), "{:?}", &out[..4]);
}

#[test]
fn the_discriminant_puts_the_boundary_between_two_equal_classes() {
    // One feature, classes at {-2, -1} and {1, 2}: equal priors and spread,
    // so the boundary is 0 and the weights are antisymmetric.
    let x = [-2.0, -1.0, 1.0, 2.0];
    let labels = [0u8, 0, 1, 1];
    let m = LinearDiscriminant::fit(&x, &labels, 1, 2).unwrap();
    assert_eq!(m.predict(&[-0.01]), 0);
    assert_eq!(m.predict(&[0.01]), 1);
    assert_eq!(m.predict(&[-50.0]), 0);
    assert_eq!(m.accuracy(&x, &labels).unwrap(), 1.0);
}

#[test]
fn the_discriminant_reaches_the_bayes_rate_and_ignores_a_constant_feature() {
    // Two Gaussian classes in 2-D with identity covariance, means (±1, 0):
    // the Bayes classifier errs with probability Φ(−1) = 0.1587. A third,
    // constant feature (a collapsed latent unit) must not break the solve.
    let n = 20_000;
    let (mut x, mut labels) = (Vec::new(), Vec::new());
    for i in 0..n {
        let e = normals(i as u32, 2);
        let class = (i % 2) as u8;
        x.extend_from_slice(&[e[0] + if class == 1 { 1.0 } else { -1.0 }, e[1], 3.0]);
        labels.push(class);
    }
    let half = n / 2 * 3;
    let m = LinearDiscriminant::fit(&x[..half], &labels[..n / 2], 3, 2).unwrap();
    let acc = m.accuracy(&x[half..], &labels[n / 2..]).unwrap();
    // Binomial spread of 10,000 test points: sd 0.0037; 1% is ~3 sd.
    assert!((acc - (1.0 - 0.1587)).abs() < 0.01, "accuracy {acc}");
}

#[test]
fn features_without_information_give_chance_accuracy() {
    let n = 20_000;
    let x: Vec<f64> = (0..n).flat_map(|i| normals(i as u32, 4)).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    let m = LinearDiscriminant::fit(&x[..4 * n / 2], &labels[..n / 2], 4, 10).unwrap();
    let acc = m.accuracy(&x[4 * n / 2..], &labels[n / 2..]).unwrap();
    // Chance is 0.1; sd over 10,000 test points 0.003.
    assert!((acc - 0.1).abs() < 0.015, "accuracy {acc}");
}

#[test]
fn least_squares_recovers_an_exact_linear_law() {
    let n = 500;
    let x: Vec<f64> = (0..n).flat_map(|i| normals(i as u32, 2)).collect();
    let y: Vec<f64> = x.chunks(2).map(|r| 2.0 * r[0] - 3.0 * r[1] + 1.0).collect();
    let fit = LeastSquares::fit(&x, &y, 2).unwrap();
    let (w, b) = fit.weights();
    // The relative ridge (1e-6 of the features' variance) shrinks the
    // weights by about that fraction.
    assert!((w[0] - 2.0).abs() < 1e-5 && (w[1] + 3.0).abs() < 1e-5 && (b - 1.0).abs() < 1e-5, "{w:?} {b}");
    assert!(fit.r_squared(&x, &y).unwrap() > 1.0 - 1e-9);
    let noise: Vec<f64> = normals(9999, n);
    assert!(fit.r_squared(&x, &noise).unwrap() < 0.05);
}

#[test]
fn readouts_refuse_mismatched_or_non_finite_rows() {
    assert!(LinearDiscriminant::fit(&[1.0, 2.0, 3.0], &[0, 1], 2, 2).is_err());
    assert!(LinearDiscriminant::fit(&[1.0, 2.0], &[0, 7], 1, 2).is_err());
    assert!(LinearDiscriminant::fit(&[1.0, f64::NAN], &[0, 1], 1, 2).is_err());
    assert!(LeastSquares::fit(&[], &[], 1).is_err());
    let mut eq = iwtvae::probe::NormalEquations::new(2);
    eq.add(&[1.0, 2.0], 1.0);
    eq.add(&[3.0, 1.0], 0.0);
    eq.add(&[1.0], 0.5);
    assert!(eq.solve().is_err(), "a row of the wrong length must spoil the fit, not be skipped");
}

#[test]
fn rotate_and_the_affine_warp_agree_on_what_a_turn_is() {
    // An affine θ whose linear part is the rotation matrix samples the same
    // points as `rotate` (square image: normalized and pixel coordinates
    // scale alike), and the warp's measured rotation is the angle.
    use iwtvae::model::{ModelConfig, Transform};
    use iwtvae::ops::grid::Warp;
    use iwtvae::ops::grid_sample::grid_sample_row;
    use iwtvae::probe::warp_rotation_deg;
    let cfg =
        ModelConfig { transform: Transform::Affine, z_dim: 2, u_dim: 6, hidden: 4, tps_grid: 3, height: 28, width: 28 };
    let warp = Warp::<f32>::new(&cfg);
    let img: Vec<f32> = (0..784).map(|i| ((i * 37 % 101) as f32) / 100.0).collect();
    let (mut xs, mut ys, mut by_warp, mut by_rotate) =
        (vec![0f32; 784], vec![0f32; 784], vec![0f32; 784], vec![0f32; 784]);
    for degrees in [-45.0f64, -10.0, 0.0, 20.0, 90.0] {
        let (s, c) = degrees.to_radians().sin_cos();
        let theta = [c, -s, 0.0, s, c, 0.0].map(|v| v as f32);
        warp.grid_row(&theta, &mut xs, &mut ys);
        grid_sample_row(&img, 28, 28, &xs, &ys, &mut by_warp);
        rotate(&img, 28, 28, degrees, &mut by_rotate);
        for p in 0..784 {
            // f32 coordinates formed in two orders: a few ulps of a pixel.
            assert!(
                (by_warp[p] - by_rotate[p]).abs() < 1e-4,
                "{degrees}°, pixel {p}: {} vs {}",
                by_warp[p],
                by_rotate[p]
            );
        }
        let turn = warp_rotation_deg(&warp.base_x, &warp.base_y, &xs, &ys);
        assert!((turn - degrees).abs() < 1e-4, "{degrees}° measured as {turn}°");
        // A translation and a uniform scale do not turn the warp.
        let zoomed = [1.3 * c, -1.3 * s, 0.2, 1.3 * s, 1.3 * c, -0.1].map(|v| v as f32);
        warp.grid_row(&zoomed, &mut xs, &mut ys);
        let turn = warp_rotation_deg(&warp.base_x, &warp.base_y, &xs, &ys);
        assert!((turn - degrees).abs() < 1e-4, "{degrees}° zoomed and shifted, measured as {turn}°");
    }
}
