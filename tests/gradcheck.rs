//! f64 finite-difference checks: every op's backward, and the whole loss for
//! each transform × objective.
mod common;
use common::*;
use iwtvae::model::{Layout, ModelConfig, Transform};
use iwtvae::network::Network;
use iwtvae::objective::{loss_and_grad, LatentKeys, Objective};
use iwtvae::ops::grid::Warp;
use iwtvae::ops::grid_sample::{grid_sample_row, grid_sample_row_backward};
use iwtvae::ops::linear::{linear_backward_input, linear_backward_params, linear_forward, Activation};
use iwtvae::ops::Par;
use iwtvae::rng::{NoiseKey, Stream};

fn whole_loss(transform: Transform, obj: Objective) {
    let cfg = tiny_config(transform);
    let layout = Layout::new(cfg);
    let net = Network::<f64>::new(layout.clone());
    let (b, k) = (2usize, if obj == Objective::ElboKl { 1 } else { 3 });
    let items = [4u32, 9];
    let keys = LatentKeys { eps: NoiseKey::new(5, Stream::TrainEps, 1), eta: NoiseKey::new(5, Stream::TrainEta, 1) };
    let x = targets(b, cfg.pixels(), 1);
    let params = tiny_params(&layout, 11);
    let mut ws = net.workspace(b, k, true);
    ws.x[..x.len()].copy_from_slice(&x);
    let mut grads = vec![0.0; layout.total];
    loss_and_grad(&net, &params, Some(&mut grads), &mut ws, &items, k, obj, keys, Par::Seq);
    let mut ws2 = net.workspace(b, k, false);
    ws2.x[..x.len()].copy_from_slice(&x);
    check_gradient(&format!("{}/{}", transform.name(), obj.name()), &params, &grads, |p| {
        loss_and_grad(&net, p, None, &mut ws2, &items, k, obj, keys, Par::Seq)
    });
}

#[test]
fn whole_loss_none_iwae() {
    whole_loss(Transform::None, Objective::Iwae);
}
#[test]
fn whole_loss_none_elbo() {
    whole_loss(Transform::None, Objective::Elbo);
}
#[test]
fn whole_loss_none_elbo_kl() {
    whole_loss(Transform::None, Objective::ElboKl);
}
#[test]
fn whole_loss_affine_iwae() {
    whole_loss(Transform::Affine, Objective::Iwae);
}
#[test]
fn whole_loss_affine_elbo() {
    whole_loss(Transform::Affine, Objective::Elbo);
}
#[test]
fn whole_loss_affine_elbo_kl() {
    whole_loss(Transform::Affine, Objective::ElboKl);
}
#[test]
fn whole_loss_tps_iwae() {
    whole_loss(Transform::Tps, Objective::Iwae);
}
#[test]
fn whole_loss_tps_elbo() {
    whole_loss(Transform::Tps, Objective::Elbo);
}
#[test]
fn whole_loss_tps_elbo_kl() {
    whole_loss(Transform::Tps, Objective::ElboKl);
}

/// Linear layer: L = Σ y ⊙ r for a fixed r, checked w.r.t. x, W, b.
#[test]
fn linear_backward() {
    let (n, inp, out) = (4, 5, 3);
    let x: Vec<f64> = (0..n * inp).map(|i| (i as f64 * 0.7).sin()).collect();
    let w: Vec<f64> = (0..out * inp).map(|i| (i as f64 * 0.3).cos()).collect();
    let b: Vec<f64> = vec![0.1, -0.2, 0.3];
    let r: Vec<f64> = (0..n * out).map(|i| (i as f64 * 1.1).sin()).collect();
    let loss = |x: &[f64], w: &[f64], b: &[f64]| {
        let mut y = vec![0.0; n * out];
        linear_forward(x, n, w, b, out, inp, Activation::Identity, &mut y, Par::Seq);
        y.iter().zip(&r).map(|(a, b)| a * b).sum::<f64>()
    };
    let mut dx = vec![0.0; n * inp];
    let mut dw = vec![0.0; out * inp];
    let mut db = vec![0.0; out];
    linear_backward_input(&r, n, &w, out, inp, &mut dx, false, Par::Seq);
    linear_backward_params(&x, &r, n, out, inp, &mut dw, &mut db, Par::Rows);
    check_gradient("linear/x", &x, &dx, |v| loss(v, &w, &b));
    check_gradient("linear/w", &w, &dw, |v| loss(&x, v, &b));
    check_gradient("linear/b", &b, &db, |v| loss(&x, &w, v));
}

/// Grid sampling: L = Σ out ⊙ r w.r.t. the image and both coordinates,
/// including points clipped at the border.
#[test]
fn grid_sample_backward() {
    let (h, w) = (5usize, 6usize);
    let c: Vec<f64> = (0..h * w).map(|i| (i as f64 * 0.9).sin()).collect();
    let xs: Vec<f64> = vec![-0.83, 0.11, 0.57, 1.4, -1.7, 0.33, 0.91];
    let ys: Vec<f64> = vec![0.21, -0.66, 0.97, 0.12, -0.4, -2.0, 0.77];
    let r: Vec<f64> = (0..xs.len()).map(|i| 1.0 + i as f64).collect();
    let loss = |c: &[f64], xs: &[f64], ys: &[f64]| {
        let mut out = vec![0.0; xs.len()];
        grid_sample_row(c, h, w, xs, ys, &mut out);
        out.iter().zip(&r).map(|(a, b)| a * b).sum::<f64>()
    };
    let mut dc = vec![0.0; h * w];
    let mut dxs = vec![0.0; xs.len()];
    let mut dys = vec![0.0; xs.len()];
    grid_sample_row_backward(&c, h, w, &xs, &ys, &r, &mut dc, &mut dxs, &mut dys);
    check_gradient("grid_sample/c", &c, &dc, |v| loss(v, &xs, &ys));
    check_gradient("grid_sample/xs", &xs, &dxs, |v| loss(&c, v, &ys));
    check_gradient("grid_sample/ys", &ys, &dys, |v| loss(&c, &xs, v));
}

/// Grid generation: L = Σ xs ⊙ rx + ys ⊙ ry w.r.t. θ, for affine and tps.
#[test]
fn grid_generation_backward() {
    for transform in [Transform::Affine, Transform::Tps] {
        let cfg = tiny_config(transform);
        let warp = Warp::<f64>::new(&cfg);
        let d = cfg.pixels();
        let theta: Vec<f64> =
            warp.theta_identity().iter().enumerate().map(|(i, v)| v + 0.1 * (i as f64).sin()).collect();
        let rx: Vec<f64> = (0..d).map(|i| (i as f64 * 0.3).cos()).collect();
        let ry: Vec<f64> = (0..d).map(|i| (i as f64 * 0.5).sin()).collect();
        let loss = |th: &[f64]| {
            let (mut xs, mut ys) = (vec![0.0; d], vec![0.0; d]);
            warp.grid_row(th, &mut xs, &mut ys);
            (0..d).map(|p| xs[p] * rx[p] + ys[p] * ry[p]).sum::<f64>()
        };
        let mut dth = vec![0.0; theta.len()];
        warp.grid_row_backward(&rx, &ry, &mut dth);
        check_gradient(&format!("grid/{}", transform.name()), &theta, &dth, loss);
    }
    // The blocked per-row sums (16 lanes, basis rows in threes) against a
    // plain sum, on sizes that exercise full blocks, the pixel tail and a
    // basis padded to a multiple of three (g = 4: 16 functions).
    for (transform, h, w, g) in [(Transform::Affine, 28, 28, 3), (Transform::Tps, 28, 28, 3), (Transform::Tps, 7, 9, 4)]
    {
        let cfg = ModelConfig { height: h, width: w, tps_grid: g, ..tiny_config(transform) };
        let warp = Warp::<f64>::new(&cfg);
        let d = h * w;
        let rx: Vec<f64> = (0..d).map(|i| (i as f64 * 0.3).cos()).collect();
        let ry: Vec<f64> = (0..d).map(|i| (i as f64 * 0.5).sin()).collect();
        let nb = warp.nb;
        let mut dth = vec![0.0; 2 * nb];
        warp.grid_row_backward(&rx, &ry, &mut dth);
        for q in 0..nb {
            let want_x: f64 = (0..d).map(|p| warp.basis[p * nb + q] * rx[p]).sum();
            let want_y: f64 = (0..d).map(|p| warp.basis[p * nb + q] * ry[p]).sum();
            for (got, want) in [(dth[q], want_x), (dth[nb + q], want_y)] {
                assert!(
                    (got - want).abs() < 1e-12 * (1.0 + want.abs()),
                    "{} {h}x{w} g{g} q{q}: {got} vs {want}",
                    transform.name()
                );
            }
        }
    }
}
