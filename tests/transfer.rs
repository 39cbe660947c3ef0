//! The pose-transfer picture (`iwtvae show`'s transfer.png): which digits
//! it picks, and that each cell is the decode of its row's z with its
//! column's u.
mod common;
use common::{targets, tiny_config};
use iwtvae::model::{init_params, Layout, Transform};
use iwtvae::network::Network;
use iwtvae::viz::transfer::{distinct_poses, one_per_label, pose_transfer, TransferLayout};

fn tiny(transform: Transform) -> (Network<f32>, Vec<f32>) {
    let layout = Layout::new(tiny_config(transform));
    let mut params = init_params::<f32>(&layout, 3);
    // The default init starts every warp at the identity (u's weights are
    // zero), so u would move nothing; give them values that move pixels
    // by about a pixel. And a random decoder draws a flat grey canonical
    // image, which no warp changes much: give it contrast.
    for (i, v) in params[layout.dec_fc3.b_range()].iter_mut().enumerate() {
        *v = 4.0 * (2.3 * i as f32).sin();
    }
    if let Some(s) = &layout.u2theta {
        for (i, v) in params[s.w_range()].iter_mut().enumerate() {
            *v = 0.3 * (1.7 * i as f32).sin();
        }
    }
    // So that different images get clearly different u.
    if let Some(s) = &layout.u_mu {
        params[s.w_range()].iter_mut().for_each(|v| *v *= 10.0);
    }
    (Network::new(layout), params)
}

fn images(n: usize, d: usize, seed: u64) -> Vec<f32> {
    targets(n, d, seed).into_iter().map(|v| v as f32).collect()
}

#[test]
fn one_digit_per_label_in_label_order() {
    let labels = [3, 1, 3, 0, 1, 7];
    assert_eq!(one_per_label(&labels, 10), vec![3, 1, 0, 5]);
    assert_eq!(one_per_label(&labels, 2), vec![3, 1]);
    assert!(one_per_label(&[], 10).is_empty());
}

/// RMS distance between the sampling grids of two warps.
fn grid_distance(net: &Network<f32>, a: &[f32], b: &[f32]) -> f64 {
    let d = net.layout.config.pixels();
    let grid = |theta: &[f32]| {
        let (mut gx, mut gy) = (vec![0f32; d], vec![0f32; d]);
        net.warp.grid_row(theta, &mut gx, &mut gy);
        gx.into_iter().chain(gy).collect::<Vec<f32>>()
    };
    let (ga, gb) = (grid(a), grid(b));
    (ga.iter().zip(&gb).map(|(p, q)| ((p - q) as f64).powi(2)).sum::<f64>() / d as f64).sqrt()
}

#[test]
fn poses_start_upright_and_then_spread_out() {
    for transform in [Transform::Affine, Transform::Tps] {
        let (net, params) = tiny(transform);
        let (d, t) = (net.layout.config.pixels(), net.layout.config.theta_dim());
        let m = 12;
        let x = images(m, d, 5);
        let picked = distinct_poses(&net, &params, &x, m, 4);
        assert_eq!(picked.len(), 4, "{transform:?}");
        let mut sorted = picked.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 4, "{transform:?}: a digit picked twice: {picked:?}");

        let post = net.posterior(&params, &x, m);
        let theta = net.theta_of(&params, &post.mu_u, m);
        let th = |i: usize| &theta[i * t..(i + 1) * t];
        let to_id: Vec<f64> = (0..m).map(|i| grid_distance(&net, th(i), &net.theta_id)).collect();
        assert!(to_id.iter().any(|&v| v > 0.05), "{transform:?}: the warps hardly differ: {to_id:?}");
        assert!(to_id.iter().all(|&v| v >= to_id[picked[0]]), "{transform:?}: the first is not the most upright");
        // The second is the warp farthest from the first.
        let from_first: Vec<f64> = (0..m).map(|i| grid_distance(&net, th(i), th(picked[0]))).collect();
        assert!(from_first.iter().all(|&v| v <= from_first[picked[1]]), "{transform:?}: {from_first:?} {picked:?}");
        // More than there are candidates: each candidate once.
        assert_eq!(distinct_poses(&net, &params, &x[..3 * d], 3, 8).len(), 3);
    }
    let (net, params) = tiny(Transform::None);
    let x = images(4, net.layout.config.pixels(), 5);
    assert!(distinct_poses(&net, &params, &x, 4, 2).is_empty());
}

#[test]
fn each_cell_draws_its_rows_digit_in_its_columns_pose() {
    let (net, params) = tiny(Transform::Tps);
    let cfg = net.layout.config;
    let (h, w, d) = (cfg.height, cfg.width, cfg.pixels());
    let (r, c, scale) = (3, 4, 2);
    let (rows, cols) = (images(r, d, 1), images(c, d, 2));
    let canvas = pose_transfer(&net, &params, &rows, r, &cols, c, scale).expect("a warp");
    let (rp, cp) = (net.posterior(&params, &rows, r), net.posterior(&params, &cols, c));
    let layout = TransferLayout { cw: w * scale, ch: h * scale };
    let gray_at = |x: usize, y: usize| {
        let i = (y * canvas.width + x) * 3;
        canvas.rgb[i]
    };
    let mut differs_from_swapped = false;
    for i in 0..r {
        for j in 0..c {
            let z = &rp.mu_z[i * cfg.z_dim..(i + 1) * cfg.z_dim];
            let u = &cp.mu_u[j * cfg.u_dim..(j + 1) * cfg.u_dim];
            let want = net.decode_latents(&params, z, u, 1).transformed;
            for (p, v) in want.iter().enumerate() {
                let g = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
                let (x, y) = (layout.cell_x(j) + (p % w) * scale, layout.cell_y(i) + (p / w) * scale);
                assert_eq!(gray_at(x, y), g, "cell ({i}, {j}), pixel {p}");
                assert_eq!(gray_at(x + scale - 1, y + scale - 1), g, "cell ({i}, {j}), pixel {p}");
            }
            // The picture would look the same if rows and columns were
            // mixed up only if u did nothing; make sure it does here.
            let swapped = net.decode_latents(&params, z, &rp.mu_u[i * cfg.u_dim..(i + 1) * cfg.u_dim], 1).transformed;
            let gap = swapped.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            differs_from_swapped |= gap > 0.1;
        }
    }
    assert!(differs_from_swapped, "u moves nothing in this model: the test cannot see a mix-up");
    assert_eq!((canvas.width, canvas.height), (layout.cell_x(c), layout.cell_y(r)));
    let (net, params) = tiny(Transform::None);
    assert!(pose_transfer(&net, &params, &images(1, d, 1), 1, &images(1, d, 2), 1, 1).is_none());
}
