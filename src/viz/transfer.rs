//! Pose transfer: the what of one digit drawn in the where-and-how of
//! another. Each cell decodes z (the posterior mean) of its row's digit
//! with u of its column's digit, so when the latent space is split as the
//! model intends, a row keeps its digit and a column keeps its pose.
use super::{Canvas, BG, GAP, U_MARK, Z_MARK};
use crate::model::Transform;
use crate::network::Network;

/// The first index of each label 0, 1, … in `labels` (in label order; a
/// label that never occurs is skipped), at most `n` of them.
pub fn one_per_label(labels: &[u8], n: usize) -> Vec<usize> {
    let mut first: Vec<Option<usize>> = vec![None; 256];
    for (i, &l) in labels.iter().enumerate() {
        first[l as usize].get_or_insert(i);
    }
    first.into_iter().flatten().take(n).collect()
}

/// `n` of the digits `x` [m, D] whose warps differ most: the first is the
/// one whose warp is closest to the identity (an upright reference), each
/// next one the farthest (in RMS sampling-grid displacement) from all those
/// already taken. Returns indices into `x`'s rows; empty for transform none.
pub fn distinct_poses(net: &Network<f32>, params: &[f32], x: &[f32], m: usize, n: usize) -> Vec<usize> {
    let cfg = &net.layout.config;
    if cfg.transform == Transform::None || m == 0 {
        return Vec::new();
    }
    let (d, t) = (cfg.pixels(), cfg.theta_dim());
    let post = net.posterior(params, x, m);
    let theta = net.theta_of(params, &post.mu_u, m);
    // grids: [m, 2·D], x coordinates then y.
    let mut grids = vec![0f32; m * 2 * d];
    for (i, g) in grids.chunks_exact_mut(2 * d).enumerate() {
        let (gx, gy) = g.split_at_mut(d);
        net.warp.grid_row(&theta[i * t..(i + 1) * t], gx, gy);
    }
    let mut identity = vec![0f32; 2 * d];
    {
        let (gx, gy) = identity.split_at_mut(d);
        net.warp.grid_row(&net.theta_id, gx, gy);
    }
    let dist = |a: &[f32], b: &[f32]| -> f64 {
        (a.iter().zip(b).map(|(p, q)| ((p - q) as f64).powi(2)).sum::<f64>() / d as f64).sqrt()
    };
    let grid = |i: usize| &grids[i * 2 * d..(i + 1) * 2 * d];
    let first = (0..m).min_by(|&a, &b| dist(grid(a), &identity).total_cmp(&dist(grid(b), &identity)));
    let mut taken: Vec<usize> = first.into_iter().collect();
    // nearest[i]: distance from digit i to the closest one taken so far.
    let mut nearest: Vec<f64> = (0..m).map(|i| dist(grid(i), grid(taken[0]))).collect();
    while taken.len() < n.min(m) {
        let next = (0..m)
            .filter(|i| !taken.contains(i))
            .max_by(|&a, &b| nearest[a].total_cmp(&nearest[b]))
            .expect("fewer taken than candidates");
        taken.push(next);
        for (i, v) in nearest.iter_mut().enumerate() {
            *v = v.min(dist(grid(i), grid(next)));
        }
    }
    taken
}

/// Rows: the digits of `rows` [r, D] (input, then its canonical image);
/// columns: the digits of `cols` [c, D] (inputs along the top); cell (i, j):
/// the transformed decode of z from row i and u from column j, both at
/// their posterior means. None for transform none (there is no u).
pub fn pose_transfer(
    net: &Network<f32>,
    params: &[f32],
    rows: &[f32],
    r: usize,
    cols: &[f32],
    c: usize,
    scale: usize,
) -> Option<Canvas> {
    let cfg = &net.layout.config;
    if cfg.transform == Transform::None {
        return None;
    }
    let (h, w, d) = (cfg.height, cfg.width, cfg.pixels());
    let (zd, ud) = (cfg.z_dim, cfg.u_dim);
    let row_post = net.posterior(params, rows, r);
    let col_post = net.posterior(params, cols, c);
    let row_dec = net.decode_latents(params, &row_post.mu_z, &row_post.mu_u, r);
    // latents of the cells: [r·c, Z] and [r·c, U], row-major over (i, j).
    let mut z = Vec::with_capacity(r * c * zd);
    let mut u = Vec::with_capacity(r * c * ud);
    for i in 0..r {
        for j in 0..c {
            z.extend_from_slice(&row_post.mu_z[i * zd..(i + 1) * zd]);
            u.extend_from_slice(&col_post.mu_u[j * ud..(j + 1) * ud]);
        }
    }
    let cells = net.decode_latents(params, &z, &u, r * c);
    let (cw, ch) = (w * scale, h * scale);
    let layout = TransferLayout { cw, ch };
    let mut canvas = Canvas::new(layout.cell_x(c), layout.cell_y(r), BG);
    for j in 0..c {
        canvas.image(layout.cell_x(j), GAP, &cols[j * d..(j + 1) * d], h, w, scale);
        canvas.fill_rect(layout.cell_x(j), GAP + ch + 1, cw, 3, U_MARK);
    }
    for i in 0..r {
        let y0 = layout.cell_y(i);
        canvas.image(GAP, y0, &rows[i * d..(i + 1) * d], h, w, scale);
        canvas.image(2 * GAP + cw, y0, &row_dec.canonical[i * d..(i + 1) * d], h, w, scale);
        canvas.fill_rect(2 * GAP + 2 * cw + 1, y0, 3, ch, Z_MARK);
        for j in 0..c {
            let k = i * c + j;
            canvas.image(layout.cell_x(j), y0, &cells.transformed[k * d..(k + 1) * d], h, w, scale);
        }
    }
    Some(canvas)
}

/// Where things go: two columns (input, canonical) and a gap on the left,
/// one row of inputs and a gap on top, then the cells.
pub struct TransferLayout {
    pub cw: usize,
    pub ch: usize,
}

impl TransferLayout {
    /// Left edge of cell column j.
    pub fn cell_x(&self, j: usize) -> usize {
        3 * GAP + 2 * self.cw + 3 * GAP + j * (self.cw + GAP)
    }

    /// Top edge of cell row i.
    pub fn cell_y(&self, i: usize) -> usize {
        GAP + self.ch + 3 * GAP + i * (self.ch + GAP)
    }
}
