//! The large-k evaluator on the GPU: for batches of images, k samples in
//! chunks through Philox noise → reparameterisation → decoder fc1, fc2 →
//! (fc3 + sigmoid + warp + bilinear sampling + BCE, fused) → streaming
//! logsumexp. The encoder, recon_at_mean and active units stay on the CPU
//! (one pass per image; cheap). Mirrors crate::eval on the same noise keys,
//! so per-image estimates agree with the CPU path to f32 rounding.
use super::{dev, Gpu};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::eval::{EvalOptions, EvalReport, ImageEstimate};
use crate::model::{LinearSlot, Transform};
use crate::network::Network;
use crate::ops::likelihood::bernoulli_logp;
use crate::rng::{NoiseKey, Stream};
use cudarc::driver::{CudaSlice, CudaView, LaunchConfig, PushKernelArg};
use std::time::Instant;

/// Images per batch on the device.
const BATCH: usize = 64;
/// Samples per image per chunk: R = BATCH · CHUNK rows per launch.
const CHUNK: usize = 500;
/// Must match SAMPLES in kernels/nll_fused.cu.
const FUSED_SAMPLES: usize = 8;

struct DeviceModel {
    params: CudaSlice<f32>,
    w3t: CudaSlice<f32>,
    basis: CudaSlice<f32>,
    theta_id: CudaSlice<f32>,
}

impl Gpu {
    pub(super) fn linear(
        &self,
        x: &CudaSlice<f32>,
        params: &CudaSlice<f32>,
        s: &LinearSlot,
        rows: usize,
        relu: bool,
        y: &mut CudaSlice<f32>,
    ) -> Result<()> {
        Self::check(
            "linear_fwd",
            x.len() >= rows * s.inp && y.len() >= rows * s.out && params.len() >= s.b + s.out,
            format!("x {} y {} rows {rows} [{}x{}]", x.len(), y.len(), s.out, s.inp),
        )?;
        let (w, b): (CudaView<f32>, CudaView<f32>) = (params.slice(s.w_range()), params.slice(s.b_range()));
        let (m, n, k, act) = (rows as i32, s.out as i32, s.inp as i32, relu as i32);
        let cfg = LaunchConfig {
            grid_dim: (Self::blocks(s.out, 64), Self::blocks(rows, 64), 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut l = self.stream.launch_builder(self.f("linear_fwd"));
        l.arg(x).arg(&w).arg(&b).arg(y).arg(&m).arg(&n).arg(&k).arg(&act);
        // SAFETY: x holds rows·in, w out·in, b out, y rows·out f32 (checked
        // above); the kernel guards every index against M, N, K.
        unsafe { l.launch(cfg) }.map_err(dev)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn normals_into(
        &self,
        key: NoiseKey,
        items: &CudaSlice<u32>,
        images: usize,
        k: usize,
        sample0: usize,
        dims: usize,
        out: &mut CudaSlice<f32>,
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
        let mut l = self.stream.launch_builder(self.f("philox_normals"));
        l.arg(out).arg(items).arg(&rows_i).arg(&k_i).arg(&s0_i).arg(&dims_i).arg(&k0).arg(&k1).arg(&hi);
        // SAFETY: out holds rows·dims f32, items ≥ rows / k u32 (checked above).
        unsafe { l.launch(cfg) }.map_err(dev)?;
        Ok(())
    }

    fn upload_model(&self, net: &Network<f32>, params: &[f32]) -> Result<DeviceModel> {
        let l = &net.layout;
        let (d, hd) = (l.config.pixels(), l.config.hidden);
        let w3 = &params[l.dec_fc3.w_range()];
        let mut w3t = vec![0f32; d * hd];
        for j in 0..d {
            for k in 0..hd {
                w3t[k * d + j] = w3[j * hd + k];
            }
        }
        let s = &self.stream;
        let basis = if net.warp.nb > 0 { net.warp.basis.clone() } else { vec![0.0] };
        let theta_id = if net.theta_id.is_empty() { vec![0.0] } else { net.theta_id.clone() };
        Ok(DeviceModel {
            params: s.clone_htod(params).map_err(dev)?,
            w3t: s.clone_htod(&w3t).map_err(dev)?,
            basis: s.clone_htod(&basis).map_err(dev)?,
            theta_id: s.clone_htod(&theta_id).map_err(dev)?,
        })
    }

    /// NLL (k samples), k-sample ELBO and one-sample recon per image on the
    /// GPU; recon_at_mean and active units on the CPU. Same keys as the CPU.
    pub fn evaluate(
        &self,
        net: &Network<f32>,
        params: &[f32],
        data: &Dataset,
        opts: &EvalOptions,
    ) -> Result<(EvalReport, Vec<ImageEstimate>)> {
        let cfg = net.layout.config;
        if (cfg.height, cfg.width) != (data.height, data.width) || data.is_empty() || opts.k == 0 {
            return Err(Error::Config("evaluate: empty data, k = 0, or image size mismatch".into()));
        }
        let t0 = Instant::now();
        let (d, hd, zd, ud, t) = (cfg.pixels(), cfg.hidden, cfg.z_dim, cfg.u_dim, cfg.theta_dim());
        let nb = net.warp.nb;
        let smem = (FUSED_SAMPLES * (hd + d) * 4) as u32;
        Self::check(
            "nll_fc3_fused",
            smem <= 48 * 1024,
            format!("{smem} bytes of shared memory for hidden {hd}, {d} pixels"),
        )?;
        let model = self.upload_model(net, params)?;
        let s = self.stream.clone();
        let n = data.len();
        let chunk = CHUNK.min(opts.k);
        let rows_cap = BATCH * chunk;
        let buf = |len: usize| s.alloc_zeros::<f32>(len.max(1)).map_err(dev);
        let (mut eps, mut eta, mut z, mut u) =
            (buf(rows_cap * zd)?, buf(rows_cap * ud)?, buf(rows_cap * zd)?, buf(rows_cap * ud)?);
        let (mut d1, mut d2, mut theta) = (buf(rows_cap * hd)?, buf(rows_cap * hd)?, buf(rows_cap * t.max(1))?);
        let (mut lw_latent, mut logpx, mut logw) = (buf(rows_cap)?, buf(rows_cap)?, buf(rows_cap)?);
        let keys = (NoiseKey::new(opts.seed, Stream::EvalEps, 0), NoiseKey::new(opts.seed, Stream::EvalEta, 0));
        let bin_key = NoiseKey::new(opts.seed, Stream::EvalBinarize, 0);
        let mut rows_out = Vec::with_capacity(n);
        let mut means_all = Vec::with_capacity(n);
        let mut scratch = vec![0f32; d];
        for start in (0..n).step_by(BATCH) {
            let b = BATCH.min(n - start);
            let mut x = vec![0f32; b * d];
            for i in 0..b {
                data.targets(start + i, opts.binarize, bin_key, &mut scratch, &mut x[i * d..(i + 1) * d]);
            }
            let post = net.posterior(params, &x, b);
            let at_mean = net.decode_latents(params, &post.mu_z, &post.mu_u, b);
            let items: Vec<u32> = (start..start + b).map(|i| i as u32).collect();
            let d_items = s.clone_htod(&items).map_err(dev)?;
            let d_x = s.clone_htod(&x).map_err(dev)?;
            let up = |v: &[f32]| s.clone_htod(if v.is_empty() { &[0.0][..] } else { v }).map_err(dev);
            let (mu_z, ls_z, mu_u, ls_u) = (up(&post.mu_z)?, up(&post.ls_z)?, up(&post.mu_u)?, up(&post.ls_u)?);
            let mut acc_max = s.clone_htod(&vec![f32::NEG_INFINITY; b]).map_err(dev)?;
            let mut acc_sum = s.alloc_zeros::<f32>(b).map_err(dev)?;
            let mut acc_mean = s.alloc_zeros::<f32>(b).map_err(dev)?;
            let mut recon = vec![0f32; b];
            let mut s0 = 0;
            while s0 < opts.k {
                let kk = chunk.min(opts.k - s0);
                let r = b * kk;
                self.normals_into(keys.0, &d_items, b, kk, s0, zd, &mut eps)?;
                self.normals_into(keys.1, &d_items, b, kk, s0, ud, &mut eta)?;
                let (r_i, kk_i, z_i, u_i) = (r as i32, kk as i32, zd as i32, ud as i32);
                let cfg1 = LaunchConfig {
                    grid_dim: (Self::blocks(r, 128), 1, 1),
                    block_dim: (128, 1, 1),
                    shared_mem_bytes: 0,
                };
                let mut l = s.launch_builder(self.f("reparam_latents"));
                l.arg(&mu_z)
                    .arg(&ls_z)
                    .arg(&eps)
                    .arg(&mu_u)
                    .arg(&ls_u)
                    .arg(&eta)
                    .arg(&mut z)
                    .arg(&mut u)
                    .arg(&mut lw_latent);
                l.arg(&r_i).arg(&kk_i).arg(&z_i).arg(&u_i);
                // SAFETY: μ, log σ hold b·Z (b·U) values, ε, z hold ≥ r·Z, η, u ≥ r·U,
                // lw_latent ≥ r; row r reads image r / kk < b.
                unsafe { l.launch(cfg1) }.map_err(dev)?;
                self.linear(&z, &model.params, &net.layout.dec_fc1, r, true, &mut d1)?;
                self.linear(&d1, &model.params, &net.layout.dec_fc2, r, true, &mut d2)?;
                if let Some(slot) = &net.layout.u2theta {
                    self.linear(&u, &model.params, slot, r, false, &mut theta)?;
                    let (t_i, r_i) = (t as i32, r as i32);
                    let cfg2 = LaunchConfig {
                        grid_dim: (Self::blocks(r * t, 256), 1, 1),
                        block_dim: (256, 1, 1),
                        shared_mem_bytes: 0,
                    };
                    let mut l = s.launch_builder(self.f("add_theta_id"));
                    l.arg(&mut theta).arg(&model.theta_id).arg(&r_i).arg(&t_i);
                    // SAFETY: theta holds r·T values, theta_id T.
                    unsafe { l.launch(cfg2) }.map_err(dev)?;
                }
                let b3 = model.params.slice(net.layout.dec_fc3.b_range());
                let (hd_i, d_i, h_i, w_i, nb_i) = (
                    hd as i32,
                    d as i32,
                    cfg.height as i32,
                    cfg.width as i32,
                    if cfg.transform == Transform::None { 0 } else { nb as i32 },
                );
                let cfg3 = LaunchConfig {
                    grid_dim: (Self::blocks(r, FUSED_SAMPLES), 1, 1),
                    block_dim: (32 * FUSED_SAMPLES as u32, 1, 1),
                    shared_mem_bytes: smem,
                };
                let mut l = s.launch_builder(self.f("nll_fc3_fused"));
                l.arg(&d2)
                    .arg(&model.w3t)
                    .arg(&b3)
                    .arg(&theta)
                    .arg(&model.basis)
                    .arg(&d_x)
                    .arg(&lw_latent)
                    .arg(&mut logpx)
                    .arg(&mut logw);
                l.arg(&r_i).arg(&kk_i).arg(&hd_i).arg(&d_i).arg(&h_i).arg(&w_i).arg(&nb_i);
                // SAFETY: d2 [r, Hd], W3t [Hd, D], b3 [D], θ [r, 2nb], basis [D, nb],
                // x [b, D], lw_latent/logpx/logw [r]; shared memory holds
                // SAMPLES·(Hd + D) f32 (checked ≤ 48 KiB); footprint() clamps reads.
                unsafe { l.launch(cfg3) }.map_err(dev)?;
                let (b_i, kk_i2) = (b as i32, kk as i32);
                let cfg4 =
                    LaunchConfig { grid_dim: (Self::blocks(b, 8), 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
                let mut l = s.launch_builder(self.f("lse_fold"));
                l.arg(&logw).arg(&mut acc_max).arg(&mut acc_sum).arg(&mut acc_mean).arg(&b_i).arg(&kk_i2);
                // SAFETY: logw holds b·kk values; the accumulators b each; one warp per image.
                unsafe { l.launch(cfg4) }.map_err(dev)?;
                if s0 == 0 {
                    let lp = s.clone_dtoh(&logpx).map_err(dev)?;
                    for i in 0..b {
                        recon[i] = -lp[i * kk];
                    }
                }
                s0 += kk;
            }
            let (mx, sm, mn) = (
                s.clone_dtoh(&acc_max).map_err(dev)?,
                s.clone_dtoh(&acc_sum).map_err(dev)?,
                s.clone_dtoh(&acc_mean).map_err(dev)?,
            );
            for i in 0..b {
                let kf = opts.k as f64;
                let lse = mx[i] as f64 + (sm[i] as f64).ln();
                let xr = &x[i * d..(i + 1) * d];
                let pr = &at_mean.transformed[i * d..(i + 1) * d];
                let ram: f64 = -xr.iter().zip(pr).map(|(&a, &p)| bernoulli_logp(a, p) as f64).sum::<f64>();
                rows_out.push(ImageEstimate {
                    index: start + i,
                    label: data.labels[start + i],
                    nll: -(lse - kf.ln()),
                    elbo: -(mn[i] as f64) / kf,
                    recon: recon[i] as f64,
                    recon_at_mean: ram,
                });
                let mut m = post.mu_z[i * zd..(i + 1) * zd].to_vec();
                m.extend_from_slice(&post.mu_u[i * ud..(i + 1) * ud]);
                means_all.push(m);
            }
        }
        let seconds = t0.elapsed().as_secs_f64();
        let report =
            crate::eval::summarize(&rows_out, &means_all, zd, opts, seconds, format!("cuda ({})", self.device_name()));
        Ok((report, rows_out))
    }
}
