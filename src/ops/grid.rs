//! Sampling-grid generation: θ → source coordinates for every output pixel.
//!
//! Output pixel (i, j) sits at x_j = −1 + 2j/(W−1), y_i = −1 + 2i/(H−1)
//! (align_corners = true).
//! - affine: (xs, ys) = θ·(x, y, 1), θ 2×3 row-major, identity (1,0,0, 0,1,0).
//! - tps:    xs = M·Qx, ys = M·Qy with θ = (`Qx[g²]`, `Qy[g²]`), identity (PX, PY);
//!   g² multiply-adds per coordinate on the fly, M from `tps::tps_matrix`,
//!   stored transposed ([g², H·W]) so both directions run along pixels.
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
    /// TPS only: Mᵀ, [g², H·W].
    pub tps_mt: Vec<T>,
    /// The warp is linear in θ through a fixed basis B [H·W, nb]:
    /// xs = B·θ[..nb], ys = B·θ[nb..]. B = M for tps, (x, y, 1) for affine.
    pub basis: Vec<T>,
    pub nb: usize,
    /// The basis transposed, [nb rounded up to BLOCK, H·W], zero-padded:
    /// the layout of the per-row dθ (`grid_row_backward`).
    basis_t: Vec<T>,
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
        let (tps_mt, g2) = if cfg.transform == Transform::Tps {
            let g2 = cfg.tps_grid * cfg.tps_grid;
            let m = tps_matrix(cfg.tps_grid, &bx, &by);
            let mut mt = vec![T::zero(); m.len()];
            for p in 0..h * w {
                for n in 0..g2 {
                    mt[n * h * w + p] = T::of(m[p * g2 + n]);
                }
            }
            (mt, g2)
        } else {
            (Vec::new(), 0)
        };
        let d = h * w;
        let (basis, nb): (Vec<T>, usize) = match cfg.transform {
            Transform::None => (Vec::new(), 0),
            Transform::Affine => ((0..d).flat_map(|p| [bx[p], by[p], 1.0]).map(T::of).collect(), 3),
            Transform::Tps => ((0..d * g2).map(|i| tps_mt[(i % g2) * d + i / g2]).collect(), g2),
        };
        let mut basis_t = vec![T::zero(); nb.next_multiple_of(BLOCK) * d];
        for p in 0..d {
            for q in 0..nb {
                basis_t[q * d + p] = basis[p * nb + q];
            }
        }
        Warp {
            transform: cfg.transform,
            height: h,
            width: w,
            base_x: bx.into_iter().map(T::of).collect(),
            base_y: by.into_iter().map(T::of).collect(),
            tps_mt,
            g2,
            basis,
            nb,
            basis_t,
        }
    }

    /// The basis stored by function, Bt [nb, H·W] (B transposed): the layout
    /// of the CUDA kernels, whose neighbouring threads take neighbouring
    /// pixels.
    pub fn basis_by_function(&self) -> &[T] {
        &self.basis_t[..self.nb * self.base_x.len()]
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

    /// grid: xs[H·W], ys[H·W] for one θ.
    #[inline(always)]
    pub fn grid_row(&self, theta: &[T], xs: &mut [T], ys: &mut [T]) {
        let d = self.base_x.len();
        let (xs, ys) = (&mut xs[..d], &mut ys[..d]);
        match self.transform {
            Transform::None => {
                xs.copy_from_slice(&self.base_x);
                ys.copy_from_slice(&self.base_y);
            }
            Transform::Affine => {
                let (bx, by) = (&self.base_x[..d], &self.base_y[..d]);
                for p in 0..d {
                    xs[p] = theta[0] * bx[p] + theta[1] * by[p] + theta[2];
                    ys[p] = theta[3] * bx[p] + theta[4] * by[p] + theta[5];
                }
            }
            Transform::Tps => {
                // xs[p] = Σ_n M[p,n]·Qx[n] summed in n order, LANES pixels at a
                // time so the partial sums stay in registers across n.
                let (qx, qy) = theta.split_at(self.g2);
                let full = d / LANES * LANES;
                for j in (0..full).step_by(LANES) {
                    let (mut ax, mut ay) = ([T::zero(); LANES], [T::zero(); LANES]);
                    for n in 0..self.g2 {
                        let m = &self.tps_mt[n * d + j..n * d + j + LANES];
                        for l in 0..LANES {
                            ax[l] += m[l] * qx[n];
                            ay[l] += m[l] * qy[n];
                        }
                    }
                    xs[j..j + LANES].copy_from_slice(&ax);
                    ys[j..j + LANES].copy_from_slice(&ay);
                }
                for p in full..d {
                    let (mut sx, mut sy) = (T::zero(), T::zero());
                    for n in 0..self.g2 {
                        sx += self.tps_mt[n * d + p] * qx[n];
                        sy += self.tps_mt[n * d + p] * qy[n];
                    }
                    xs[p] = sx;
                    ys[p] = sy;
                }
            }
        }
    }

    /// dθ (overwritten) from dxs, dys of one row: `dθ[q] = Σ_p B[p,q]·dxs[p]`,
    /// `dθ[nb+q] = Σ_p B[p,q]·dys[p]`. Basis rows go in blocks of BLOCK with
    /// LANES partial sums each, so all 2·BLOCK accumulators stay in
    /// registers and each block is one pass over the (L1-resident) row.
    #[inline(always)]
    pub fn grid_row_backward(&self, dxs: &[T], dys: &[T], dtheta: &mut [T]) {
        let (d, nb) = (self.base_x.len(), self.nb);
        let (dxs, dys) = (&dxs[..d], &dys[..d]);
        let full = d / LANES * LANES;
        for q0 in (0..nb).step_by(BLOCK) {
            let rows: [&[T]; BLOCK] = std::array::from_fn(|i| &self.basis_t[(q0 + i) * d..(q0 + i + 1) * d]);
            let mut ax = [[T::zero(); LANES]; BLOCK];
            let mut ay = [[T::zero(); LANES]; BLOCK];
            for j in (0..full).step_by(LANES) {
                let (gx, gy) = (&dxs[j..j + LANES], &dys[j..j + LANES]);
                for q in 0..BLOCK {
                    let m = &rows[q][j..j + LANES];
                    for l in 0..LANES {
                        ax[q][l] += m[l] * gx[l];
                        ay[q][l] += m[l] * gy[l];
                    }
                }
            }
            for q in 0..BLOCK.min(nb - q0) {
                let (mut tx, mut ty) = (T::zero(), T::zero());
                for p in full..d {
                    tx += rows[q][p] * dxs[p];
                    ty += rows[q][p] * dys[p];
                }
                dtheta[q0 + q] = tree_sum(&ax[q]) + tx;
                dtheta[nb + q0 + q] = tree_sum(&ay[q]) + ty;
            }
        }
    }
}

/// Basis rows per pass and partial sums per row of `grid_row_backward`.
const BLOCK: usize = 3;
const LANES: usize = 16;

/// Pairwise sum of the LANES partial sums.
#[inline(always)]
fn tree_sum<T: Real>(v: &[T; LANES]) -> T {
    let mut s = *v;
    let mut width = LANES / 2;
    while width > 0 {
        for l in 0..width {
            let upper = s[l + width];
            s[l] += upper;
        }
        width /= 2;
    }
    s[0]
}
