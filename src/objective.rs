//! Objectives and their gradients with respect to the per-sample terms
//! (SPEC §2). Losses are reported as −bound, in nats per image, so lower is
//! better and they compare directly with NLL.
//!
//! ```text
//! iwae     L = mean_b [ logsumexp_s log w_sb − ln k ]   ∂(−L)/∂log w_sb = −w̃_sb / B
//! elbo     L = mean_b mean_s log w_sb                    ∂(−L)/∂log w_sb = −1 / (B k)
//! elbo-kl  L = mean_b [ log p(x|z,u) − KL_z − KL_u ]     k = 1, analytic KL
//! ```
use crate::error::{Error, Result};
use crate::network::{DecodeMode, Workspace};
use crate::ops::logsumexp::{logsumexp, normalized_weights};
use crate::Real;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Objective {
    Iwae,
    Elbo,
    ElboKl,
}

impl Objective {
    pub fn name(self) -> &'static str {
        match self {
            Objective::Iwae => "iwae",
            Objective::Elbo => "elbo",
            Objective::ElboKl => "elbo-kl",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "iwae" => Ok(Objective::Iwae),
            "elbo" => Ok(Objective::Elbo),
            "elbo-kl" => Ok(Objective::ElboKl),
            o => Err(Error::Config(format!("--objective {o:?}: expected iwae, elbo or elbo-kl"))),
        }
    }
}

/// The loss (−L, mean over the b images) and, in ws.coef_px / ws.coef_w,
/// the coefficients the backward needs. `ws.kl[i]` is image i's analytic KL
/// (elbo-kl only). Returns (loss, kl_scale).
pub fn loss_and_coefficients<T: Real>(obj: Objective, ws: &mut Workspace<T>, b: usize, k: usize) -> (f64, T) {
    let Workspace { logpx, logw, coef_px, coef_w, lse_lw, lse_w, kl, .. } = ws;
    let inv_b = 1.0 / b as f64;
    let mut loss = 0.0;
    match obj {
        Objective::Iwae => {
            let (lw, wt) = (&mut lse_lw[..k], &mut lse_w[..k]);
            for i in 0..b {
                let rows = i * k..(i + 1) * k;
                for (l, &v) in lw.iter_mut().zip(&logw[rows.clone()]) {
                    *l = v.f64();
                }
                loss -= (logsumexp(lw) - (k as f64).ln()) * inv_b;
                normalized_weights(lw, wt);
                for ((cp, cw), &w) in coef_px[rows.clone()].iter_mut().zip(&mut coef_w[rows]).zip(wt.iter()) {
                    *cp = T::of(-w * inv_b);
                    *cw = *cp;
                }
            }
            (loss, T::zero())
        }
        Objective::Elbo => {
            let c = -inv_b / k as f64;
            for r in 0..b * k {
                loss += c * logw[r].f64();
                coef_px[r] = T::of(c);
                coef_w[r] = T::of(c);
            }
            (loss, T::zero())
        }
        Objective::ElboKl => {
            assert_eq!(k, 1, "elbo-kl uses a single sample");
            for (&lp, &kl) in logpx[..b].iter().zip(kl.iter()) {
                loss -= (lp.f64() - kl) * inv_b;
            }
            coef_px[..b].iter_mut().for_each(|c| *c = T::of(-inv_b));
            coef_w[..b].iter_mut().for_each(|c| *c = T::zero());
            (loss, T::of(inv_b))
        }
    }
}

/// Keys for the latent noise of one pass.
#[derive(Clone, Copy, Debug)]
pub struct LatentKeys {
    pub eps: crate::rng::NoiseKey,
    pub eta: crate::rng::NoiseKey,
}

/// One whole pass over a batch whose targets are already in ws.x[..b]:
/// forward, objective, and (when `grads` is given) backward, accumulating
/// into `grads`. Returns the loss (−bound, nats per image).
#[allow(clippy::too_many_arguments)]
pub fn loss_and_grad<'w, T: Real>(
    net: &crate::network::Network<T>,
    weights: impl Into<crate::network::Weights<'w, T>>,
    grads: Option<&mut [T]>,
    ws: &mut Workspace<T>,
    items: &[u32],
    k: usize,
    obj: Objective,
    keys: LatentKeys,
    par: crate::ops::Par,
) -> f64 {
    let b = items.len();
    assert!(b <= ws.batch_cap && k == ws.k, "workspace sized for {}×{}, got {b}×{k}", ws.batch_cap, ws.k);
    let weights = weights.into();
    net.encode(weights, ws, b, par);
    net.fill_noise(ws, items, k, 0, keys.eps, keys.eta);
    net.sample_latents(ws, b, k, false);
    let mode = if grads.is_some() { DecodeMode::Train } else { DecodeMode::Score };
    net.decode(weights, ws, b, k, mode, par);
    net.log_weights(ws, b, k);
    if obj == Objective::ElboKl {
        for i in 0..b {
            ws.kl[i] = net.kl(ws, i);
        }
    }
    let (loss, kl_scale) = loss_and_coefficients(obj, ws, b, k);
    if let Some(g) = grads {
        net.backward(weights.params, g, ws, b, k, kl_scale, par);
    }
    loss
}
