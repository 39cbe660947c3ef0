//! The model's backward on device buffers, for the GPU training engine:
//! linear layers (dW, db, dx), the ReLU mask and the latent heads. Each
//! method is one typed wrapper that checks sizes before its unsafe launches,
//! as in forward.rs.
use super::driver::DevBuf;
use super::forward::cfg1;
use super::shapes::{GEMM_THREADS, GEMM_TILE};
use super::Gpu;
use crate::error::Result;
use crate::model::LinearSlot;
use cudarc::driver::LaunchConfig;

impl Gpu {
    /// Backward of one linear layer: dW = dyᵀ·x and db = Σ dy into `grads`
    /// (overwritten: each parameter has one contribution per step), and
    /// dx = dy·W (+ dx when `accumulate_dx`) when `dx` is given.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn linear_backward(
        &self,
        x: &DevBuf<f32>,
        dy: &DevBuf<f32>,
        rows: usize,
        s: &LinearSlot,
        params: &DevBuf<f32>,
        grads: &mut DevBuf<f32>,
        dx: Option<&mut DevBuf<f32>>,
        accumulate_dx: bool,
    ) -> Result<()> {
        let (out, inp) = (s.out, s.inp);
        Self::check(
            "linear_backward",
            x.len() >= rows * inp
                && dy.len() >= rows * out
                && grads.len() >= s.b + out
                && params.len() >= s.b + out
                && dx.as_ref().is_none_or(|v| v.len() >= rows * inp),
            format!("x {} dy {} rows {rows} [{out}x{inp}]", x.len(), dy.len()),
        )?;
        let st = &self.device;
        // dW[out, inp] = dyᵀ[out, rows] · x[rows, inp]
        {
            let mut dw = grads.slice_mut(s.w_range());
            let (m, n, k, ldc, acc) = (out as i32, inp as i32, rows as i32, inp as i32, 0i32);
            let (rsa, csa, rsb, csb) = (1i64, out as i64, inp as i64, 1i64);
            let mut lb = st.launcher("gemm_strided");
            lb.arg(dy).arg(&rsa).arg(&csa).arg(x).arg(&rsb).arg(&csb).arg(&mut dw);
            lb.arg(&ldc).arg(&m).arg(&n).arg(&k).arg(&acc);
            // SAFETY: A = dyᵀ reads dy[r·out + o] for r < rows, o < out; B = x
            // reads x[r·inp + i]; C = dW [out, inp]; sizes checked above.
            unsafe { lb.launch(gemm_grid(out, inp)) }?;
        }
        {
            let mut db = grads.slice_mut(s.b_range());
            let (rows_i, cols_i, acc) = (rows as i32, out as i32, 0i32);
            let mut lb = st.launcher("col_sum");
            lb.arg(dy).arg(&mut db).arg(&rows_i).arg(&cols_i).arg(&acc);
            // SAFETY: dy holds rows·out values, db out.
            unsafe { lb.launch(cfg1(out, 128)) }?;
        }
        if let Some(dx) = dx {
            // dx[rows, inp] = dy[rows, out] · W[out, inp]
            let w = params.slice(s.w_range());
            let (m, n, k, ldc, acc) = (rows as i32, inp as i32, out as i32, inp as i32, accumulate_dx as i32);
            let (rsa, csa, rsb, csb) = (out as i64, 1i64, inp as i64, 1i64);
            let mut lb = st.launcher("gemm_strided");
            lb.arg(dy).arg(&rsa).arg(&csa).arg(&w).arg(&rsb).arg(&csb).arg(dx);
            lb.arg(&ldc).arg(&m).arg(&n).arg(&k).arg(&acc);
            // SAFETY: dy [rows, out], W [out, inp], dx [rows, inp]; sizes checked above.
            unsafe { lb.launch(gemm_grid(rows, inp)) }?;
        }
        Ok(())
    }

    pub(super) fn relu_mask(&self, y: &DevBuf<f32>, dy: &mut DevBuf<f32>, len: usize) -> Result<()> {
        Self::check("relu_mask", y.len() >= len && dy.len() >= len, format!("{} {} < {len}", y.len(), dy.len()))?;
        let n = len as i32;
        let mut lb = self.device.launcher("relu_mask");
        lb.arg(y).arg(dy).arg(&n);
        // SAFETY: y and dy hold ≥ len f32.
        unsafe { lb.launch(cfg1(len, 256)) }?;
        Ok(())
    }

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

fn gemm_grid(m: usize, n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (Gpu::blocks(n, GEMM_TILE), Gpu::blocks(m, GEMM_TILE), 1),
        block_dim: (GEMM_THREADS as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}
