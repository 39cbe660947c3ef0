//! The model's forward on device buffers, shared by the GPU training engine
//! and the GPU evaluator: targets, encoder, reparameterisation, decoder
//! layers, θ, and the fused row epilogue. Each method is one typed wrapper
//! that checks sizes before its unsafe launches.
use super::driver::DevBuf;
use super::shapes::ROW_THREADS;
use super::Gpu;
use crate::data::Binarize;
use crate::error::Result;
use crate::model::Layout;
use crate::rng::NoiseKey;
use cudarc::driver::LaunchConfig;

pub(super) fn cfg1(n: usize, threads: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (Gpu::blocks(n, threads as usize), 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
}

/// The encoder's outputs for up to `cap` images (u buffers hold ≥ 1 value
/// when U = 0, so every buffer is a valid kernel argument).
pub(super) struct EncoderBufs {
    pub h1: DevBuf<f32>,
    pub h2: DevBuf<f32>,
    /// The heads' GEMM output [cap, 2Z + 2U] (Layout::enc_heads).
    pub heads: DevBuf<f32>,
    pub mu_z: DevBuf<f32>,
    pub ls_z_raw: DevBuf<f32>,
    pub ls_z: DevBuf<f32>,
    pub mu_u: DevBuf<f32>,
    pub ls_u_raw: DevBuf<f32>,
    pub ls_u: DevBuf<f32>,
}

impl EncoderBufs {
    pub fn new(gpu: &Gpu, layout: &Layout, cap: usize) -> Result<Self> {
        let c = &layout.config;
        let f = |len: usize| gpu.device.alloc_zeros::<f32>(len.max(1));
        let (hd, z, u) = (c.hidden, c.z_dim, c.u_dim);
        Ok(EncoderBufs {
            h1: f(cap * hd)?,
            h2: f(cap * hd)?,
            heads: f(cap * layout.enc_heads.out)?,
            mu_z: f(cap * z)?,
            ls_z_raw: f(cap * z)?,
            ls_z: f(cap * z)?,
            mu_u: f(cap * u)?,
            ls_u_raw: f(cap * u)?,
            ls_u: f(cap * u)?,
        })
    }
}

impl Gpu {
    /// x [b, D] of the images `items[..b]` from the split's bytes [n, D]:
    /// byte/255, or dynamically binarized with `key` (as Dataset::targets).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn targets(
        &self,
        images: &DevBuf<u8>,
        items: &DevBuf<u32>,
        b: usize,
        d: usize,
        binarize: Binarize,
        key: NoiseKey,
        x: &mut DevBuf<f32>,
    ) -> Result<()> {
        Self::check(
            "philox_targets",
            items.len() >= b && x.len() >= b * d && images.len().is_multiple_of(d),
            format!("b {b} d {d} items {} x {}", items.len(), x.len()),
        )?;
        let (k0, k1, hi) = key.words();
        let (b_i, d_i, bin_i) = (b as i32, d as i32, (binarize == Binarize::Dynamic) as i32);
        let mut lb = self.device.launcher("philox_targets");
        lb.arg(images).arg(items).arg(x).arg(&b_i).arg(&d_i).arg(&bin_i).arg(&k0).arg(&k1).arg(&hi);
        // SAFETY: x holds ≥ b·D f32 and items ≥ b (checked); every item indexes
        // an image of `images` (callers pass indices into the same split).
        unsafe { lb.launch(cfg1(b * d, 256)) }?;
        Ok(())
    }

    /// Encoder of `b` images: x → h1, h2 → μz, log σz (clamped), μu (tanh),
    /// log σu, the four heads as one GEMM.
    pub(super) fn encode(
        &self,
        l: &Layout,
        params: &DevBuf<f32>,
        x: &DevBuf<f32>,
        b: usize,
        e: &mut EncoderBufs,
        scratch: &mut DevBuf<f32>,
    ) -> Result<()> {
        let (z, u) = (l.config.z_dim, l.config.u_dim);
        let u_used = if l.u_mu.is_some() { u } else { 0 };
        Self::check(
            "encoder_heads",
            l.enc_heads.out == 2 * z + 2 * u_used
                && [e.mu_z.len(), e.ls_z_raw.len(), e.ls_z.len()].iter().all(|&v| v >= b * z)
                && [e.mu_u.len(), e.ls_u_raw.len(), e.ls_u.len()].iter().all(|&v| v >= b * u_used),
            format!("b {b} Z {z} U {u_used} heads {}", l.enc_heads.out),
        )?;
        self.linear(x, params, &l.enc_fc1, b, true, &mut e.h1, scratch)?;
        self.linear(&e.h1, params, &l.enc_fc2, b, true, &mut e.h2, scratch)?;
        self.linear(&e.h2, params, &l.enc_heads, b, false, &mut e.heads, scratch)?;
        let (b_i, z_i, u_i) = (b as i32, z as i32, u_used as i32);
        let mut lb = self.device.launcher("encoder_heads");
        lb.arg(&e.heads).arg(&b_i).arg(&z_i).arg(&u_i);
        lb.arg(&mut e.mu_z).arg(&mut e.ls_z_raw).arg(&mut e.ls_z);
        lb.arg(&mut e.mu_u).arg(&mut e.ls_u_raw).arg(&mut e.ls_u);
        // SAFETY: heads holds b·(2Z + 2U) values (checked by linear), the z
        // buffers b·Z and the u buffers b·U (checked above; nothing of u is
        // touched when U = 0).
        unsafe { lb.launch(cfg1(b * l.enc_heads.out, 256)) }?;
        Ok(())
    }

    /// z = μz + σz ε, u = μu + σu η and the latent terms of log w for
    /// `rows` = images · k rows (row r belongs to image r / k).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn reparam(
        &self,
        e: &EncoderBufs,
        eps: &DevBuf<f32>,
        eta: &DevBuf<f32>,
        rows: usize,
        k: usize,
        (zd, ud): (usize, usize),
        z: &mut DevBuf<f32>,
        u: &mut DevBuf<f32>,
        lw_latent: &mut DevBuf<f32>,
    ) -> Result<()> {
        let images = rows.div_ceil(k.max(1));
        Self::check(
            "reparam_latents",
            k > 0
                && e.mu_z.len() >= images * zd
                && eps.len() >= rows * zd
                && z.len() >= rows * zd
                && e.mu_u.len() >= images * ud
                && eta.len() >= rows * ud
                && u.len() >= rows * ud
                && lw_latent.len() >= rows,
            format!("rows {rows} k {k} Z {zd} U {ud}"),
        )?;
        let (r_i, k_i, z_i, u_i) = (rows as i32, k as i32, zd as i32, ud as i32);
        let mut lb = self.device.launcher("reparam_latents");
        lb.arg(&e.mu_z).arg(&e.ls_z).arg(eps).arg(&e.mu_u).arg(&e.ls_u).arg(eta);
        lb.arg(z).arg(u).arg(lw_latent).arg(&r_i).arg(&k_i).arg(&z_i).arg(&u_i);
        // SAFETY: sizes checked above; row r reads image r / k < images.
        unsafe { lb.launch(cfg1(rows, 128)) }?;
        Ok(())
    }

    /// θ [rows, T] = u · Tᵀ + t + θ_id (nothing for transform none).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn theta(
        &self,
        l: &Layout,
        params: &DevBuf<f32>,
        u: &DevBuf<f32>,
        rows: usize,
        theta_id: &DevBuf<f32>,
        theta: &mut DevBuf<f32>,
        scratch: &mut DevBuf<f32>,
    ) -> Result<()> {
        let Some(slot) = &l.u2theta else { return Ok(()) };
        let t = slot.out;
        Self::check("add_theta_id", theta_id.len() >= t, format!("θ_id {} < {t}", theta_id.len()))?;
        self.linear(u, params, slot, rows, false, theta, scratch)?;
        let (r_i, t_i) = (rows as i32, t as i32);
        let mut lb = self.device.launcher("add_theta_id");
        lb.arg(theta).arg(theta_id).arg(&r_i).arg(&t_i);
        // SAFETY: theta holds rows·T values (checked by linear), theta_id T.
        unsafe { lb.launch(cfg1(rows * t, 256)) }?;
        Ok(())
    }

    /// The fused row epilogue of training (kernels/decode_row.cu): logits
    /// [rows, D] become c; log p(x|z,u) and log w per row. `basis` is the
    /// warp basis by function, [nb, D] (`Warp::basis_by_function`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn decode_rows(
        &self,
        l: &Layout,
        nb: usize,
        logits: &mut DevBuf<f32>,
        theta: &DevBuf<f32>,
        basis: &DevBuf<f32>,
        x: &DevBuf<f32>,
        lw_latent: &DevBuf<f32>,
        rows: usize,
        k: usize,
        logpx: &mut DevBuf<f32>,
        logw: &mut DevBuf<f32>,
    ) -> Result<()> {
        let c = &l.config;
        let d = c.pixels();
        Self::check(
            "decode_row_fwd",
            k > 0
                && logits.len() >= rows * d
                && (nb == 0 || (theta.len() >= rows * 2 * nb && basis.len() >= d * nb))
                && x.len() >= rows.div_ceil(k) * d
                && [lw_latent.len(), logpx.len(), logw.len()].iter().all(|&v| v >= rows),
            format!("rows {rows} k {k} D {d} nb {nb}"),
        )?;
        let (r_i, k_i, d_i, h_i, w_i, nb_i) =
            (rows as i32, k as i32, d as i32, c.height as i32, c.width as i32, nb as i32);
        let smem = ((d + 2 * nb + 8) * 4) as u32;
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (ROW_THREADS as u32, 1, 1),
            shared_mem_bytes: smem,
        };
        let mut lb = self.device.launcher("decode_row_fwd");
        lb.arg(logits).arg(theta).arg(basis).arg(x).arg(lw_latent).arg(logpx).arg(logw);
        lb.arg(&r_i).arg(&k_i).arg(&d_i).arg(&h_i).arg(&w_i).arg(&nb_i);
        // SAFETY: sizes checked above; one block per row; shared memory holds
        // D + 2nb + 8 f32; footprint() keeps every read inside the row.
        unsafe { lb.launch(cfg) }?;
        Ok(())
    }

    /// Standard normals of (items[i], sample0 + s, dim) into rows i·k + s.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn normals_into(
        &self,
        key: NoiseKey,
        items: &DevBuf<u32>,
        images: usize,
        k: usize,
        sample0: usize,
        dims: usize,
        out: &mut DevBuf<f32>,
    ) -> Result<()> {
        let rows = images * k;
        Self::check("philox_normals", items.len() >= images && out.len() >= rows * dims, format!("{rows}×{dims}"))?;
        if dims == 0 {
            return Ok(());
        }
        let (k0, k1, hi) = key.words();
        let (rows_i, k_i, s0_i, dims_i) = (rows as i32, k as i32, sample0 as i32, dims as i32);
        let cfg = LaunchConfig {
            grid_dim: (Self::blocks(rows * dims.div_ceil(4), 256), 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut l = self.device.launcher("philox_normals");
        l.arg(out).arg(items).arg(&rows_i).arg(&k_i).arg(&s0_i).arg(&dims_i).arg(&k0).arg(&k1).arg(&hi);
        // SAFETY: out holds rows·dims f32, items ≥ rows / k u32 (checked above).
        unsafe { l.launch(cfg) }?;
        Ok(())
    }
}
