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
use super::grid_sample::{grid_sample_row, grid_sample_row_backward};
use super::likelihood::{bernoulli_logp_grad, bernoulli_logp_row, bernoulli_logp_row_binary, sigmoid_inplace};
use super::simd::simd_dispatch;
use crate::model::Transform;
use crate::Real;

/// Per-row buffers of the transform (unused when the transform is none).
pub struct RowGrid<'a, T> {
    /// [D] scratch for the per-pixel log-likelihood terms.
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
    grid_sample_row(a, warp.height, warp.width, g.gx, g.gy, g.p);
    loglik(g.p, g.terms)
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
    /// Scratch [D] for ∂Loss/∂p.
    pub dp: &'a mut [T],
    pub dgx: &'a mut [T],
    pub dgy: &'a mut [T],
    /// Out: ∂Loss/∂logits [D].
    pub da: &'a mut [T],
    /// Out: ∂Loss/∂θ [T] (empty for transform none).
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
    /// Out: ∂log p(x|z,u)/∂logits [D] (the backward with coef = 1).
    pub da: &'a mut [T],
    /// Out: ∂log p(x|z,u)/∂θ [T] (empty for transform none).
    pub dtheta: &'a mut [T],
}

simd_dispatch!(
    /// Forward of one row and, while its data is in L1, its backward with
    /// coef = 1: the backward is linear in coef = ∂Loss/∂log p(x|z,u), which
    /// the objective knows only once every sample of the image is done, so
    /// the caller scales `da` and `dtheta` by it afterwards. `g.terms` doubles
    /// as the backward's ∂/∂p scratch. Returns log p(x|z,u).
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
    let RowGrid { terms, p, gx, gy } = g;
    let lp =
        forward_row(warp, a, theta, x, binary, RowGrid { terms: &mut *terms, p: &mut *p, gx: &mut *gx, gy: &mut *gy });
    backward_row(
        warp,
        RowBackward {
            c: a,
            p,
            gx,
            gy,
            x,
            coef: T::one(),
            dp: terms,
            dgx: out.dgx,
            dgy: out.dgy,
            da: out.da,
            dtheta: out.dtheta,
        },
    );
    lp
}

simd_dispatch!(
    /// Backward of `decode_row`.
    pub fn decode_row_backward<T: Real>(warp: &Warp<T>, r: RowBackward<T>) => backward_row
);
