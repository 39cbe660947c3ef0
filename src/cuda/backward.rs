//! The model's backward on device buffers, for the GPU training engine:
//! the latent heads (the linear layers' backward is in linear.rs). Each
//! method is one typed wrapper that checks sizes before its unsafe launches,
//! as in forward.rs.
use super::driver::DevBuf;
use super::forward::cfg1;
use super::Gpu;
use crate::error::Result;

impl Gpu {
    /// `ins` = [μ, log σ, raw log σ, latent, noise, d latent, coef_w].
    pub(super) fn latent_bwd(
        &self,
        ins: [&DevBuf<f32>; 7],
        dmu: &mut DevBuf<f32>,
        dls: &mut DevBuf<f32>,
        (b, k, dim): (usize, usize, usize),
        kl_scale: f32,
        tanh_mu: bool,
    ) -> Result<()> {
        let [mu, ls, raw, lat, noise, dlat, coef_w] = ins;
        Self::check(
            "latent_bwd",
            [mu.len(), ls.len(), raw.len(), dmu.len(), dls.len()].iter().all(|&l| l >= b * dim)
                && [lat.len(), noise.len(), dlat.len()].iter().all(|&l| l >= b * k * dim)
                && coef_w.len() >= b * k,
            format!("b {b} k {k} dim {dim}"),
        )?;
        let (b_i, k_i, dim_i, tanh_i) = (b as i32, k as i32, dim as i32, tanh_mu as i32);
        let mut lb = self.device.launcher("latent_bwd");
        lb.arg(mu).arg(ls).arg(raw).arg(lat).arg(noise).arg(dlat).arg(coef_w).arg(dmu).arg(dls);
        lb.arg(&b_i).arg(&k_i).arg(&dim_i).arg(&kl_scale).arg(&tanh_i);
        // SAFETY: per-image buffers hold b·dim, per-row buffers b·k·dim, coef_w b·k (checked).
        unsafe { lb.launch(cfg1(b * dim, 128)) }?;
        Ok(())
    }
}
