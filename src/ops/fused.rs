//! The decoder's per-row epilogue, fused: logits → c = sigmoid → grid(θ) →
//! p = grid_sample(c) → log p(x|z,u), and its backward back to ∂/∂logits and
//! ∂/∂θ. One row is one sample; each pass runs along the row's pixels so it
//! vectorizes. The CUDA counterpart is kernels/nll_fused.cu.
//!
//! On x86-64 an AVX-512 or AVX2 clone of each row function is picked at run
//! time (the crate builds for baseline x86-64; `IWTVAE_NO_AVX512=1` caps it
//! at AVX2). Rust never contracts a·b+c into an FMA, so every clone computes
//! the same bits.
use super::grid::Warp;
use super::grid_sample::{
    bilinear, clamped_footprint, corner_slopes, corner_values, grid_sample_row_backward, sample_point, CornerPlan,
    Geometry,
};
use super::likelihood::{
    bernoulli_logp, bernoulli_logp_binary, bernoulli_logp_grad, bernoulli_logp_row, bernoulli_logp_row_binary,
    lane_sum, sigmoid_inplace,
};
use super::simd::simd_dispatch;
use crate::model::Transform;
use crate::Real;

/// Per-row buffers of the transform (unused when the transform is none).
pub struct RowGrid<'a, T> {
    /// `[D]` scratch for the per-pixel log-likelihood terms.
    pub terms: &'a mut [T],
    pub p: &'a mut [T],
    pub gx: &'a mut [T],
    pub gy: &'a mut [T],
}

#[inline(always)]
fn forward_row<T: Real>(warp: &Warp<T>, a: &mut [T], theta: &[T], x: &[T], binary: bool, g: RowGrid<T>) -> T {
    sigmoid_inplace(a);
    let loglik =
        |p: &[T], t: &mut [T]| if binary { bernoulli_logp_row_binary(x, p, t) } else { bernoulli_logp_row(x, p, t) };
    if warp.transform == Transform::None {
        return loglik(a, g.terms);
    }
    warp.grid_row(theta, g.gx, g.gy);
    if binary {
        sample_and_score::<T, true>(warp, a, g.gx, g.gy, x, g.p, g.terms)
    } else {
        sample_and_score::<T, false>(warp, a, g.gx, g.gy, x, g.p, g.terms)
    }
}

/// p = bilinear(c) at (xs, ys) exactly as `grid_sample_row` computes it, and
/// its log-likelihood term, in one pass over the row's pixels (the term
/// while p is in a register). Returns Σ terms as `bernoulli_logp_row`.
#[inline(always)]
fn sample_and_score<T: Real, const BINARY: bool>(
    warp: &Warp<T>,
    c: &[T],
    xs: &[T],
    ys: &[T],
    x: &[T],
    p: &mut [T],
    terms: &mut [T],
) -> T {
    let d = c.len();
    assert!(d == warp.height * warp.width);
    let (xs, ys, x, p, terms) = (&xs[..d], &ys[..d], &x[..d], &mut p[..d], &mut terms[..d]);
    let geo = Geometry::new(warp.height, warp.width);
    for j in 0..d {
        // SAFETY: c.len() == h·w, asserted above.
        p[j] = unsafe { sample_point(&geo, c, xs[j], ys[j]) };
        terms[j] = if BINARY { bernoulli_logp_binary(x[j], p[j]) } else { bernoulli_logp(x[j], p[j]) };
    }
    lane_sum(d, |j| terms[j])
}

simd_dispatch!(
    /// Forward of one row: `a` holds the logits and becomes c; returns log p(x|z,u).
    pub fn decode_row<T: Real>(warp: &Warp<T>, a: &mut [T], theta: &[T], x: &[T], binary: bool, g: RowGrid<T>) -> T
        => forward_row
);

/// Inputs of one row's backward (from the forward) and its outputs.
pub struct RowBackward<'a, T> {
    pub c: &'a [T],
    pub p: &'a [T],
    pub gx: &'a [T],
    pub gy: &'a [T],
    pub x: &'a [T],
    /// ∂Loss/∂log p(x|z,u) of this row.
    pub coef: T,
    /// Scratch `[D]` for ∂Loss/∂p.
    pub dp: &'a mut [T],
    pub dgx: &'a mut [T],
    pub dgy: &'a mut [T],
    /// Out: ∂Loss/∂logits `[D]`.
    pub da: &'a mut [T],
    /// Out: ∂Loss/∂θ `[T]` (empty for transform none).
    pub dtheta: &'a mut [T],
}

#[inline(always)]
fn backward_row<T: Real>(warp: &Warp<T>, r: RowBackward<T>) {
    let d = r.c.len();
    if warp.transform == Transform::None {
        for j in 0..d {
            r.da[j] = r.coef * bernoulli_logp_grad(r.x[j], r.c[j]);
        }
    } else {
        for j in 0..d {
            r.dp[j] = r.coef * bernoulli_logp_grad(r.x[j], r.p[j]);
        }
        r.da.iter_mut().for_each(|v| *v = T::zero());
        grid_sample_row_backward(r.c, warp.height, warp.width, r.gx, r.gy, r.dp, r.da, r.dgx, r.dgy);
        warp.grid_row_backward(r.dgx, r.dgy, r.dtheta);
    }
    for j in 0..d {
        r.da[j] *= r.c[j] * (T::one() - r.c[j]);
    }
}

/// Scratch and outputs of `decode_row_train`'s backward part.
pub struct RowTrain<'a, T> {
    pub dgx: &'a mut [T],
    pub dgy: &'a mut [T],
    /// Scratch `[2·D]` and `[4·D]`: the bilinear backward's scatter plan.
    pub corner_idx: &'a mut [u32],
    pub corner_add: &'a mut [T],
    /// Out: ∂log p(x|z,u)/∂logits `[D]` (the backward with coef = 1).
    pub da: &'a mut [T],
    /// Out: ∂log p(x|z,u)/∂θ `[T]` (empty for transform none).
    pub dtheta: &'a mut [T],
}

simd_dispatch!(
    /// Forward of one row and its backward with coef = 1: the backward is
    /// linear in coef = ∂Loss/∂log p(x|z,u), which the objective knows only
    /// once every sample of the image is done, so the caller scales `da` and
    /// `dtheta` by it afterwards. The same values as `decode_row` followed by
    /// `decode_row_backward`, up to the rounding of the scatter's order, in
    /// fewer passes: one pass samples p and differentiates it while the four
    /// corners are in registers (`sample_and_differentiate`), so the
    /// backward gathers nothing again. `g.p` is unused. Returns log p(x|z,u).
    pub fn decode_row_train<T: Real>(
        warp: &Warp<T>,
        a: &mut [T],
        theta: &[T],
        x: &[T],
        binary: bool,
        g: RowGrid<T>,
        out: RowTrain<T>,
    ) -> T => train_row
);

#[inline(always)]
fn train_row<T: Real>(
    warp: &Warp<T>,
    a: &mut [T],
    theta: &[T],
    x: &[T],
    binary: bool,
    g: RowGrid<T>,
    out: RowTrain<T>,
) -> T {
    let RowGrid { terms, p: _, gx, gy } = g;
    let RowTrain { dgx, dgy, corner_idx, corner_add, da, dtheta } = out;
    sigmoid_inplace(a);
    let c = &*a;
    let d = c.len();
    let lp = if warp.transform == Transform::None {
        let lp = if binary { bernoulli_logp_row_binary(x, c, terms) } else { bernoulli_logp_row(x, c, terms) };
        for j in 0..d {
            da[j] = bernoulli_logp_grad(x[j], c[j]);
        }
        lp
    } else {
        warp.grid_row(theta, gx, gy);
        let mut plan = CornerPlan { idx: corner_idx, add: corner_add };
        let lp = if binary {
            sample_and_differentiate::<T, true>(warp, c, gx, gy, x, terms, dgx, dgy, &mut plan)
        } else {
            sample_and_differentiate::<T, false>(warp, c, gx, gy, x, terms, dgx, dgy, &mut plan)
        };
        da.iter_mut().for_each(|v| *v = T::zero());
        plan.scatter(d, da);
        warp.grid_row_backward(dgx, dgy, dtheta);
        lp
    };
    for j in 0..d {
        da[j] *= c[j] * (T::one() - c[j]);
    }
    lp
}

/// One pass over a row's pixels: p = bilinear(c) at (xs, ys) exactly as
/// `grid_sample_row` computes it, its log-likelihood term, ∂/∂p (coef = 1),
/// ∂/∂(xs, ys) as `grid_sample_row_backward` computes them, and the scatter
/// plan of ∂/∂c. Returns Σ terms (`lane_sum`, as `bernoulli_logp_row`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn sample_and_differentiate<T: Real, const BINARY: bool>(
    warp: &Warp<T>,
    c: &[T],
    xs: &[T],
    ys: &[T],
    x: &[T],
    terms: &mut [T],
    dxs: &mut [T],
    dys: &mut [T],
    plan: &mut CornerPlan<T>,
) -> T {
    let d = c.len();
    assert!(d == warp.height * warp.width && plan.idx.len() >= 2 * d && plan.add.len() >= 4 * d);
    let (xs, ys, x, terms, dxs, dys) = (&xs[..d], &ys[..d], &x[..d], &mut terms[..d], &mut dxs[..d], &mut dys[..d]);
    let geo = Geometry::new(warp.height, warp.width);
    for j in 0..d {
        let (i, tx, ty, dix, diy, finite) = clamped_footprint(&geo, xs[j], ys[j]);
        // SAFETY: clamped_footprint's indices lie in [0, h·w) on every path
        // (NaN included) and c.len() == h·w.
        let corners = unsafe { corner_values(c, &i) };
        let p = if finite { bilinear(corners, tx, ty) } else { T::nan() };
        terms[j] = if BINARY { bernoulli_logp_binary(x[j], p) } else { bernoulli_logp(x[j], p) };
        let g = bernoulli_logp_grad(x[j], p);
        let (gix, giy) = corner_slopes(corners, tx, ty);
        dxs[j] = if finite { g * gix * dix } else { T::nan() };
        dys[j] = if finite { g * giy * diy } else { T::nan() };
        plan.set(d, j, i, tx, ty, if finite { g } else { T::zero() });
    }
    lane_sum(d, |j| terms[j])
}

simd_dispatch!(
    /// Backward of `decode_row`.
    pub fn decode_row_backward<T: Real>(warp: &Warp<T>, r: RowBackward<T>) => backward_row
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;
    use crate::ops::grid_sample::grid_sample_row;

    /// The fused training row equals the forward followed by the backward with
    /// coef = 1, value for value: the same log-likelihood bits, and gradients
    /// that differ only by the scatter's order of additions (a few ulps).
    #[test]
    fn train_row_matches_forward_then_backward() {
        for transform in [Transform::None, Transform::Affine, Transform::Tps] {
            for binary in [true, false] {
                let cfg = ModelConfig { transform, z_dim: 2, u_dim: 2, hidden: 4, tps_grid: 3, height: 9, width: 7 };
                let warp = Warp::<f32>::new(&cfg);
                let d = 63;
                // A warp that zooms, shears and pushes part of the grid off the
                // image, so corners collide and the border clamps.
                let theta: Vec<f32> =
                    warp.theta_identity().iter().enumerate().map(|(i, v)| 1.3 * v + 0.2 * (i as f32).sin()).collect();
                let x: Vec<f32> = (0..d)
                    .map(|j| if binary { (j % 3 == 0) as u8 as f32 } else { (j as f32 * 0.37).sin().abs() })
                    .collect();
                let logits: Vec<f32> = (0..d).map(|j| ((j * 7919) % 97) as f32 * 0.1 - 4.8).collect();
                let z = |n: usize| vec![0f32; n];
                let t = theta.len();

                let mut c = logits.clone();
                let (mut terms, mut p, mut gx, mut gy) = (z(d), z(d), z(d), z(d));
                let lp = decode_row(
                    &warp,
                    &mut c,
                    &theta,
                    &x,
                    binary,
                    RowGrid { terms: &mut terms, p: &mut p, gx: &mut gx, gy: &mut gy },
                );
                if transform != Transform::None {
                    // The forward's one pass samples and scores as the two
                    // separate ops do, bit for bit.
                    let mut q = z(d);
                    grid_sample_row(&c, 9, 7, &gx, &gy, &mut q);
                    assert_eq!(
                        p.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        q.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "{transform:?}: p"
                    );
                    let row = if binary {
                        bernoulli_logp_row_binary(&x, &q, &mut z(d))
                    } else {
                        bernoulli_logp_row(&x, &q, &mut z(d))
                    };
                    assert_eq!(lp.to_bits(), row.to_bits(), "{transform:?}: log-likelihood of p");
                }
                let (mut dp, mut dgx, mut dgy, mut da, mut dth) = (z(d), z(d), z(d), z(d), z(t));
                decode_row_backward(
                    &warp,
                    RowBackward {
                        c: &c,
                        p: &p,
                        gx: &gx,
                        gy: &gy,
                        x: &x,
                        coef: 1.0,
                        dp: &mut dp,
                        dgx: &mut dgx,
                        dgy: &mut dgy,
                        da: &mut da,
                        dtheta: &mut dth,
                    },
                );

                let mut c2 = logits.clone();
                let (mut terms2, mut p2, mut gx2, mut gy2) = (z(d), z(d), z(d), z(d));
                let (mut dgx2, mut dgy2, mut da2, mut dth2) = (z(d), z(d), z(d), z(t));
                let (mut idx, mut add) = (vec![0u32; 2 * d], z(4 * d));
                let lp2 = decode_row_train(
                    &warp,
                    &mut c2,
                    &theta,
                    &x,
                    binary,
                    RowGrid { terms: &mut terms2, p: &mut p2, gx: &mut gx2, gy: &mut gy2 },
                    RowTrain {
                        dgx: &mut dgx2,
                        dgy: &mut dgy2,
                        corner_idx: &mut idx,
                        corner_add: &mut add,
                        da: &mut da2,
                        dtheta: &mut dth2,
                    },
                );
                let what = format!("{transform:?} binary={binary}");
                assert_eq!(lp.to_bits(), lp2.to_bits(), "{what}: log-likelihood");
                assert_eq!(c, c2, "{what}: canonical image");
                if transform != Transform::None {
                    assert_eq!(dgx, dgx2, "{what}: ∂/∂xs");
                    assert_eq!(dgy, dgy2, "{what}: ∂/∂ys");
                }
                // Reordered f32 sums of a handful of terms: a few ulps of the
                // largest term, relative to the row's gradient scale.
                let scale = da.iter().chain(&dth).fold(0f32, |m, v| m.max(v.abs()));
                for (name, a, b) in [("∂/∂logits", &da, &da2), ("∂/∂θ", &dth, &dth2)] {
                    for (j, (u, v)) in a.iter().zip(b.iter()).enumerate() {
                        assert!((u - v).abs() <= 1e-5 * scale, "{what}: {name}[{j}] {u} vs {v}");
                    }
                }
            }
        }
    }
}
