//! Sampling-grid generation: θ → source coordinates for every output pixel.
//!
//! Output pixel (i, j) sits at x_j = −1 + 2j/(W−1), y_i = −1 + 2i/(H−1)
//! (align_corners = true).
//! - affine: (xs, ys) = θ·(x, y, 1), θ 2×3 row-major, identity (1,0,0, 0,1,0).
//! - tps:    xs = M·Qx, ys = M·Qy with θ = (Qx[g²], Qy[g²]), identity (PX, PY);
//!   g² FMAs per coordinate on the fly, M from `tps::tps_matrix`.
use super::tps::{control_points, tps_matrix};
use crate::model::{ModelConfig, Transform};
use crate::Real;

#[derive(Clone, Debug)]
pub struct Warp<T> {
    pub transform: Transform,
    pub height: usize,
    pub width: usize,
    /// Base grid: [H·W] each.
    pub base_x: Vec<T>,
    pub base_y: Vec<T>,
    /// TPS only: [H·W, g²].
    pub tps_m: Vec<T>,
    pub g2: usize,
}

impl<T: Real> Warp<T> {
    pub fn new(cfg: &ModelConfig) -> Self {
        let (h, w) = (cfg.height, cfg.width);
        let mut bx = Vec::with_capacity(h * w);
        let mut by = Vec::with_capacity(h * w);
        for i in 0..h {
            for j in 0..w {
                bx.push(-1.0 + 2.0 * j as f64 / (w - 1) as f64);
                by.push(-1.0 + 2.0 * i as f64 / (h - 1) as f64);
            }
        }
        let (tps_m, g2) = if cfg.transform == Transform::Tps {
            let m = tps_matrix(cfg.tps_grid, &bx, &by);
            (m.into_iter().map(T::of).collect(), cfg.tps_grid * cfg.tps_grid)
        } else {
            (Vec::new(), 0)
        };
        Warp {
            transform: cfg.transform,
            height: h,
            width: w,
            base_x: bx.into_iter().map(T::of).collect(),
            base_y: by.into_iter().map(T::of).collect(),
            tps_m,
            g2,
        }
    }

    /// θ_id, added to T·u + t.
    pub fn theta_identity(&self) -> Vec<T> {
        match self.transform {
            Transform::None => Vec::new(),
            Transform::Affine => [1.0, 0.0, 0.0, 0.0, 1.0, 0.0].into_iter().map(T::of).collect(),
            Transform::Tps => {
                let g = (self.g2 as f64).sqrt().round() as usize;
                let (px, py) = control_points(g);
                px.into_iter().chain(py).map(T::of).collect()
            }
        }
    }

    /// Source coordinate of pixel `p` under θ.
    #[inline(always)]
    pub fn coord(&self, theta: &[T], p: usize) -> (T, T) {
        match self.transform {
            Transform::None => (self.base_x[p], self.base_y[p]),
            Transform::Affine => {
                let (x, y) = (self.base_x[p], self.base_y[p]);
                (theta[0] * x + theta[1] * y + theta[2], theta[3] * x + theta[4] * y + theta[5])
            }
            Transform::Tps => {
                let m = &self.tps_m[p * self.g2..(p + 1) * self.g2];
                let (qx, qy) = theta.split_at(self.g2);
                let mut xs = T::zero();
                let mut ys = T::zero();
                for n in 0..self.g2 {
                    xs += m[n] * qx[n];
                    ys += m[n] * qy[n];
                }
                (xs, ys)
            }
        }
    }

    /// grid: xs[H·W], ys[H·W] for one θ.
    pub fn grid_row(&self, theta: &[T], xs: &mut [T], ys: &mut [T]) {
        for p in 0..xs.len() {
            (xs[p], ys[p]) = self.coord(theta, p);
        }
    }

    /// dθ (overwritten) from dxs, dys of one row.
    pub fn grid_row_backward(&self, dxs: &[T], dys: &[T], dtheta: &mut [T]) {
        dtheta.iter_mut().for_each(|v| *v = T::zero());
        match self.transform {
            Transform::None => {}
            Transform::Affine => {
                for p in 0..dxs.len() {
                    let (x, y) = (self.base_x[p], self.base_y[p]);
                    dtheta[0] += dxs[p] * x;
                    dtheta[1] += dxs[p] * y;
                    dtheta[2] += dxs[p];
                    dtheta[3] += dys[p] * x;
                    dtheta[4] += dys[p] * y;
                    dtheta[5] += dys[p];
                }
            }
            Transform::Tps => {
                let (dqx, dqy) = dtheta.split_at_mut(self.g2);
                for p in 0..dxs.len() {
                    let m = &self.tps_m[p * self.g2..(p + 1) * self.g2];
                    for n in 0..self.g2 {
                        dqx[n] += m[n] * dxs[p];
                        dqy[n] += m[n] * dys[p];
                    }
                }
            }
        }
    }
}
