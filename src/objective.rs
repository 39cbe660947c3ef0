//! Objectives and their gradients with respect to the per-sample terms
//! (SPEC §2). Losses are reported as −bound, in nats per image, so lower is
//! better and they compare directly with NLL.
//!
//! ```text
//! iwae     L = mean_b [ logsumexp_s log w_sb − ln k ]   ∂(−L)/∂log w_sb = −w̃_sb / B
//! elbo     L = mean_b mean_s log w_sb                    ∂(−L)/∂log w_sb = −1 / (B k)
//! elbo-kl  L = mean_b [ log p(x|z,u) − KL_z − KL_u ]     k = 1, analytic KL
//! ```
//!
//! `iwae-dreg` and `elbo-stl` have iwae's and elbo's bound, loss and decoder
//! gradient, and a lower-variance estimator of the same expected encoder
//! gradient: the path derivative, which holds q's parameters fixed in log q
//! (its score term has expectation zero), so the encoder learns only through
//! z = μ + σε, with weights w̃² for the IWAE bound (DReG: Tucker, Lawson, Gu
//! and Maddison 2019, "Doubly reparameterized gradient estimators for Monte
//! Carlo objectives") and 1/k for the ELBO (STL: Roeder, Wu and Duvenaud
//! 2017, "Sticking the landing"). Rainforth et al. 2018 ("Tighter variational
//! bounds are not necessarily better") show the plain IWAE encoder gradient's
//! signal-to-noise ratio falling as 1/√k; DReG's does not.
use crate::error::{Error, Result};
use crate::network::{DecodeMode, Workspace};
use crate::ops::logsumexp::{logsumexp, normalized_weights};
use crate::Real;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Objective {
    Iwae,
    Elbo,
    ElboKl,
    /// iwae with the doubly reparameterized encoder gradient.
    IwaeDreg,
    /// elbo with the sticking-the-landing (path derivative) encoder gradient.
    ElboStl,
}

impl Objective {
    pub fn name(self) -> &'static str {
        match self {
            Objective::Iwae => "iwae",
            Objective::Elbo => "elbo",
            Objective::ElboKl => "elbo-kl",
            Objective::IwaeDreg => "iwae-dreg",
            Objective::ElboStl => "elbo-stl",
        }
    }

    /// The bound this objective trains (and reports as its loss): iwae-dreg
    /// is iwae's, elbo-stl elbo's.
    pub fn bound(self) -> Objective {
        match self {
            Objective::IwaeDreg => Objective::Iwae,
            Objective::ElboStl => Objective::Elbo,
            o => o,
        }
    }

    /// Does the encoder's gradient take the path derivative only (log q's
    /// parameters held fixed)?
    pub fn path_derivative(self) -> bool {
        matches!(self, Objective::IwaeDreg | Objective::ElboStl)
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "iwae" => Ok(Objective::Iwae),
            "elbo" => Ok(Objective::Elbo),
            "elbo-kl" => Ok(Objective::ElboKl),
            "iwae-dreg" => Ok(Objective::IwaeDreg),
            "elbo-stl" => Ok(Objective::ElboStl),
            o => Err(Error::Config(format!("--objective {o:?}: expected iwae, elbo, elbo-kl, iwae-dreg or elbo-stl"))),
        }
    }
}

/// The loss (−L, mean over the b images) and, in the workspace, the
/// coefficients the backward needs: `coef_px[r]` = ∂Loss/∂log p(x|z_r,u_r)
/// (the decoder's), `coef_w[r]` the encoder's coefficient on sample r's
/// latent terms and `coef_dlat[r]` its factor on the decoder's ∂/∂latent
/// (1, or w̃_r for iwae-dreg, whose encoder weights are w̃² = w̃ · coef_px
/// up to −B). `ws.kl[i]` is image i's analytic KL (elbo-kl only). Returns
/// (loss, kl_scale).
pub fn loss_and_coefficients<T: Real>(obj: Objective, ws: &mut Workspace<T>, b: usize, k: usize) -> (f64, T) {
    let Workspace { logpx, logw, coef_px, coef_w, coef_dlat, lse_lw, lse_w, kl, .. } = ws;
    let inv_b = 1.0 / b as f64;
    let mut loss = 0.0;
    coef_dlat[..b * k].iter_mut().for_each(|c| *c = T::one());
    match obj {
        Objective::Iwae | Objective::IwaeDreg => {
            let dreg = obj == Objective::IwaeDreg;
            let (lw, wt) = (&mut lse_lw[..k], &mut lse_w[..k]);
            for i in 0..b {
                let rows = i * k..(i + 1) * k;
                for (l, &v) in lw.iter_mut().zip(&logw[rows.clone()]) {
                    *l = v.f64();
                }
                loss -= (logsumexp(lw) - (k as f64).ln()) * inv_b;
                normalized_weights(lw, wt);
                for (r, &w) in rows.zip(wt.iter()) {
                    coef_px[r] = T::of(-w * inv_b);
                    coef_w[r] = if dreg { T::of(-w * w * inv_b) } else { coef_px[r] };
                    if dreg {
                        coef_dlat[r] = T::of(w);
                    }
                }
            }
            (loss, T::zero())
        }
        Objective::Elbo | Objective::ElboStl => {
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
        net.backward(weights.params, g, ws, b, k, kl_scale, obj.path_derivative(), par);
    }
    loss
}
