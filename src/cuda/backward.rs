//! The model's backward on device buffers, for the GPU training engine:
//! the latent heads (the linear layers' backward is in linear.rs). Each
//! method is one typed wrapper that checks sizes before its unsafe launches,
//! as in forward.rs.
use super::driver::DevBuf;
use super::forward::cfg1;
use super::Gpu;
use crate::error::Result;

impl Gpu {
    /// `ins` = [μ, log σ, raw log σ, latent, noise, d latent, coef_w,
    /// coef_dlat]; dμ and dlog σ [b, dim] go to columns `col..col + dim` and
    /// `col + dim..col + 2·dim` of the heads' gradient [b, 2Z + 2U]
    /// (Layout::enc_heads). `path`: the path derivative (iwae-dreg, elbo-stl).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn latent_bwd(
        &self,
        ins: [&DevBuf<f32>; 8],
        dheads: &mut DevBuf<f32>,
        (ld, col): (usize, usize),
        (b, k, dim): (usize, usize, usize),
        kl_scale: f32,
        tanh_mu: bool,
        path: bool,
    ) -> Result<()> {
        let [mu, ls, raw, lat, noise, dlat, coef_w, coef_dlat] = ins;
        Self::check(
            "latent_bwd",
            [mu.len(), ls.len(), raw.len()].iter().all(|&l| l >= b * dim)
                && [lat.len(), noise.len(), dlat.len()].iter().all(|&l| l >= b * k * dim)
                && coef_w.len() >= b * k
                && coef_dlat.len() >= b * k
                && col + 2 * dim <= ld
                && dheads.len() >= b * ld,
            format!("b {b} k {k} dim {dim} columns {col}.. of {ld}, dheads {}", dheads.len()),
        )?;
        let (b_i, k_i, dim_i, tanh_i, path_i, ld_i, col_i) =
            (b as i32, k as i32, dim as i32, tanh_mu as i32, path as i32, ld as i32, col as i32);
        let mut lb = self.device.launcher("latent_bwd");
        lb.arg(mu).arg(ls).arg(raw).arg(lat).arg(noise).arg(dlat).arg(coef_w).arg(coef_dlat).arg(dheads);
        lb.arg(&ld_i).arg(&col_i).arg(&b_i).arg(&k_i).arg(&dim_i).arg(&kl_scale).arg(&tanh_i).arg(&path_i);
        // SAFETY: per-image buffers hold b·dim, per-row buffers b·k·dim,
        // coef_w and coef_dlat b·k, dheads b rows of ld ≥ col + 2·dim (checked).
        unsafe { lb.launch(cfg1(b * dim, 128)) }?;
        Ok(())
    }
}
