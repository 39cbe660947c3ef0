//! The figures that show the disentanglement: reconstructions through the
//! canonical image, prior samples, latent traversals, and the warp drawn
//! over the canonical and transformed images.
use super::{Canvas, BG, GAP, U_MARK, Z_MARK};
use crate::data::{Binarize, Dataset};
use crate::model::Transform;
use crate::network::Network;
use crate::rng::{NoiseKey, Stream};

/// Targets of the given test images as the model saw them in evaluation.
pub fn targets(data: &Dataset, indices: &[usize], binarize: Binarize, seed: u64) -> Vec<f32> {
    let d = data.pixels();
    let key = NoiseKey::new(seed, Stream::EvalBinarize, 0);
    let mut scratch = vec![0f32; d];
    let mut x = vec![0f32; indices.len() * d];
    for (r, &i) in indices.iter().enumerate() {
        data.targets(i, binarize, key, &mut scratch, &mut x[r * d..(r + 1) * d]);
    }
    x
}

/// Rows of (input | canonical | transformed) at the posterior mean, in
/// `groups` side-by-side blocks.
pub fn reconstructions(net: &Network<f32>, params: &[f32], x: &[f32], n: usize, groups: usize, scale: usize) -> Canvas {
    let cfg = &net.layout.config;
    let (h, w, d) = (cfg.height, cfg.width, cfg.pixels());
    let post = net.posterior(params, x, n);
    let dec = net.decode_latents(params, &post.mu_z, &post.mu_u, n);
    let rows = n.div_ceil(groups);
    let (cw, ch) = (w * scale, h * scale);
    let block_w = 3 * cw + 2 * GAP;
    let mut canvas = Canvas::new(groups * block_w + (groups + 1) * 3 * GAP, rows * (ch + GAP) + GAP, BG);
    for i in 0..n {
        let (g, r) = (i / rows, i % rows);
        let x0 = 3 * GAP + g * (block_w + 3 * GAP);
        let y0 = GAP + r * (ch + GAP);
        canvas.image(x0, y0, &x[i * d..(i + 1) * d], h, w, scale);
        canvas.image(x0 + cw + GAP, y0, &dec.canonical[i * d..(i + 1) * d], h, w, scale);
        canvas.image(x0 + 2 * (cw + GAP), y0, &dec.transformed[i * d..(i + 1) * d], h, w, scale);
    }
    canvas
}

/// z, u ~ N(0, I): canonical and transformed side by side, `cols` pairs a row.
pub fn prior_samples(net: &Network<f32>, params: &[f32], n: usize, cols: usize, seed: u64, scale: usize) -> Canvas {
    let cfg = &net.layout.config;
    let (h, w, d) = (cfg.height, cfg.width, cfg.pixels());
    let key = NoiseKey::new(seed, Stream::Show, 0);
    let mut z = vec![0f32; n * cfg.z_dim];
    let mut u = vec![0f32; n * cfg.u_dim];
    for i in 0..n {
        key.normals(i as u32, 0, &mut z[i * cfg.z_dim..(i + 1) * cfg.z_dim]);
        key.normals(i as u32, 1, &mut u[i * cfg.u_dim..(i + 1) * cfg.u_dim]);
    }
    let dec = net.decode_latents(params, &z, &u, n);
    let rows = n.div_ceil(cols);
    let (cw, ch) = (w * scale, h * scale);
    let pair_w = 2 * cw + GAP / 2;
    let mut canvas = Canvas::new(cols * (pair_w + 2 * GAP) + GAP, rows * (ch + GAP) + GAP, BG);
    for i in 0..n {
        let (r, c) = (i / cols, i % cols);
        let x0 = GAP + c * (pair_w + 2 * GAP);
        let y0 = GAP + r * (ch + GAP);
        canvas.image(x0, y0, &dec.canonical[i * d..(i + 1) * d], h, w, scale);
        canvas.image(x0 + cw + GAP / 2, y0, &dec.transformed[i * d..(i + 1) * d], h, w, scale);
    }
    canvas
}

/// Each test digit of `indices` turned by each of `angles_deg` (columns,
/// as `iwtvae probe` turns them), in a block of rows: the turned input,
/// the canonical image and the transformed reconstruction at the posterior
/// mean (input and reconstruction only for transform none). Where z holds
/// what the digit is and u the pose, the canonical row stays upright.
#[allow(clippy::too_many_arguments)]
pub fn rotations(
    net: &Network<f32>,
    params: &[f32],
    data: &Dataset,
    indices: &[usize],
    angles_deg: &[f64],
    binarize: Binarize,
    seed: u64,
    scale: usize,
) -> Canvas {
    use crate::probe::Turn;
    let cfg = &net.layout.config;
    let (h, w, d) = (cfg.height, cfg.width, cfg.pixels());
    let key = NoiseKey::new(seed, Stream::EvalBinarize, 0);
    let n = indices.len() * angles_deg.len();
    let mut x = vec![0f32; n * d];
    for (a, &deg) in angles_deg.iter().enumerate() {
        let mut turn = Turn::new(data.height, data.width, deg);
        for (r, &i) in indices.iter().enumerate() {
            let j = r * angles_deg.len() + a;
            turn.targets(data, i, binarize, key, &mut x[j * d..(j + 1) * d]);
        }
    }
    let post = net.posterior(params, &x, n);
    let dec = net.decode_latents(params, &post.mu_z, &post.mu_u, n);
    let shown: Vec<&[f32]> = if cfg.transform == Transform::None {
        vec![&x, &dec.transformed]
    } else {
        vec![&x, &dec.canonical, &dec.transformed]
    };
    let (cw, ch) = (w * scale, h * scale);
    let block_h = shown.len() * (ch + GAP) + 2 * GAP;
    let mut canvas = Canvas::new(angles_deg.len() * (cw + GAP) + GAP, indices.len() * block_h + GAP, BG);
    for r in 0..indices.len() {
        for (row, images) in shown.iter().enumerate() {
            let y0 = GAP + r * block_h + row * (ch + GAP);
            for a in 0..angles_deg.len() {
                let j = r * angles_deg.len() + a;
                canvas.image(GAP + a * (cw + GAP), y0, &images[j * d..(j + 1) * d], h, w, scale);
            }
        }
    }
    canvas
}

/// For every u dimension and the `z_dims` z dimensions that change the
/// image most, a row of decodes (transformed images) as that coordinate
/// sweeps μ ± 3 (prior σ) with the rest at the posterior mean of the first
/// image of `x`. Rows are ordered by effect, the mean |p(+3) − p(−3)| over
/// pixels, largest first; a blue mark starts u rows, a green one z rows.
pub fn traversals(net: &Network<f32>, params: &[f32], x: &[f32], z_dims: usize, steps: usize, scale: usize) -> Canvas {
    let cfg = &net.layout.config;
    let (h, w, d) = (cfg.height, cfg.width, cfg.pixels());
    let post = net.posterior(params, x, 1);
    // Sweep every dimension, then keep and order the rows by effect.
    let all: Vec<(bool, usize)> =
        (0..cfg.u_dim).map(|dd| (true, dd)).chain((0..cfg.z_dim).map(|dd| (false, dd))).collect();
    let n = all.len() * steps;
    let mut z = vec![0f32; n * cfg.z_dim];
    let mut u = vec![0f32; n * cfg.u_dim];
    for (r, &(is_u, dd)) in all.iter().enumerate() {
        for s in 0..steps {
            let i = r * steps + s;
            z[i * cfg.z_dim..(i + 1) * cfg.z_dim].copy_from_slice(&post.mu_z[..cfg.z_dim]);
            u[i * cfg.u_dim..(i + 1) * cfg.u_dim].copy_from_slice(&post.mu_u[..cfg.u_dim]);
            let t = -3.0 + 6.0 * s as f32 / (steps - 1).max(1) as f32;
            if is_u {
                u[i * cfg.u_dim + dd] += t;
            } else {
                z[i * cfg.z_dim + dd] += t;
            }
        }
    }
    let dec = net.decode_latents(params, &z, &u, n);
    let effect = |r: usize| -> f64 {
        let (a, b) = (r * steps, r * steps + steps - 1);
        let (pa, pb) = (&dec.transformed[a * d..(a + 1) * d], &dec.transformed[b * d..(b + 1) * d]);
        pa.iter().zip(pb).map(|(x, y)| (x - y).abs() as f64).sum::<f64>() / d as f64
    };
    let mut u_rows: Vec<(usize, f64)> = (0..cfg.u_dim).map(|r| (r, effect(r))).collect();
    let mut z_rows: Vec<(usize, f64)> = (cfg.u_dim..all.len()).map(|r| (r, effect(r))).collect();
    u_rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    z_rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    let rows: Vec<usize> = u_rows.iter().map(|p| p.0).chain(z_rows.iter().take(z_dims).map(|p| p.0)).collect();
    let (cw, ch) = (w * scale, h * scale);
    let mark = 6;
    let mut canvas = Canvas::new(mark + GAP + steps * (cw + GAP) + GAP, rows.len() * (ch + GAP) + GAP, BG);
    for (y, &r) in rows.iter().enumerate() {
        let y0 = GAP + y * (ch + GAP);
        let is_u = all[r].0;
        canvas.fill_rect(GAP / 2, y0, mark, ch, if is_u { U_MARK } else { Z_MARK });
        for s in 0..steps {
            let i = r * steps + s;
            canvas.image(mark + GAP + s * (cw + GAP), y0, &dec.transformed[i * d..(i + 1) * d], h, w, scale);
        }
    }
    canvas
}

/// The warp of each image: left, the canonical image with the deformed grid
/// (where every 4th output row and column samples from) and, for TPS, the
/// control points' source positions (red); right, the transformed
/// reconstruction with the regular control grid (red) or output frame.
pub fn warp_overlay(net: &Network<f32>, params: &[f32], x: &[f32], n: usize, scale: usize) -> Option<Canvas> {
    let cfg = &net.layout.config;
    if cfg.transform == Transform::None {
        return None;
    }
    let (h, w, d) = (cfg.height, cfg.width, cfg.pixels());
    let post = net.posterior(params, x, n);
    let dec = net.decode_latents(params, &post.mu_z, &post.mu_u, n);
    let t = cfg.theta_dim();
    let (cw, ch) = (w * scale, h * scale);
    let mut canvas = Canvas::new(2 * cw + 4 * GAP + GAP, n * (ch + GAP) + GAP, BG);
    let to_px = |x0: usize, y0: usize, (xs, ys): (f32, f32)| -> (f64, f64) {
        let px = (xs as f64 + 1.0) / 2.0 * (w - 1) as f64;
        let py = (ys as f64 + 1.0) / 2.0 * (h - 1) as f64;
        (x0 as f64 + (px + 0.5) * scale as f64, y0 as f64 + (py + 0.5) * scale as f64)
    };
    let (mut gx, mut gy) = (vec![0f32; d], vec![0f32; d]);
    for i in 0..n {
        let y0 = GAP + i * (ch + GAP);
        let (lx, rx) = (GAP, 2 * GAP + cw + 2 * GAP);
        canvas.image(lx, y0, &dec.canonical[i * d..(i + 1) * d], h, w, scale);
        canvas.image(rx, y0, &dec.transformed[i * d..(i + 1) * d], h, w, scale);
        let theta = &dec.theta[i * t..(i + 1) * t];
        net.warp.grid_row(theta, &mut gx, &mut gy);
        let panel = |x0: usize| Some((x0 as i64, y0 as i64, (x0 + cw) as i64, (y0 + ch) as i64));
        canvas.clip = panel(lx);
        let grid_color = [255, 200, 0];
        for r in (0..h).step_by(4).chain([h - 1]) {
            for c in 0..w - 1 {
                let a = to_px(lx, y0, (gx[r * w + c], gy[r * w + c]));
                let b = to_px(lx, y0, (gx[r * w + c + 1], gy[r * w + c + 1]));
                canvas.line(a, b, grid_color);
            }
        }
        for c in (0..w).step_by(4).chain([w - 1]) {
            for r in 0..h - 1 {
                let a = to_px(lx, y0, (gx[r * w + c], gy[r * w + c]));
                let b = to_px(lx, y0, (gx[(r + 1) * w + c], gy[(r + 1) * w + c]));
                canvas.line(a, b, grid_color);
            }
        }
        if cfg.transform == Transform::Tps {
            let g2 = net.warp.g2;
            let id = &net.theta_id;
            for k in 0..g2 {
                canvas.clip = panel(lx);
                canvas.dot(to_px(lx, y0, (theta[k], theta[g2 + k])), 2.5, [255, 60, 60]);
                canvas.clip = panel(rx);
                canvas.dot(to_px(rx, y0, (id[k], id[g2 + k])), 2.5, [255, 60, 60]);
            }
        }
        canvas.clip = None;
    }
    Some(canvas)
}
