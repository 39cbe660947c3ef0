//! The large-k evaluator on the GPU: for batches of images, targets and the
//! encoder once per image, then k samples in chunks through Philox noise →
//! reparameterisation → decoder fc1, fc2 → (fc3 + sigmoid + warp + bilinear
//! sampling + BCE, fused: the 784-wide decoder output stays in shared
//! memory) → streaming logsumexp. Mirrors crate::eval on the same noise keys,
//! so per-image estimates agree with the CPU path to f32 rounding.
use super::driver::{DevBuf, Device, Launch};
use super::forward::EncoderBufs;
use super::Gpu;
use crate::data::{Binarize, Dataset};
use crate::error::{Error, Result};
use crate::eval::{EvalOptions, EvalReport, ImageEstimate, Precision};
use crate::model::{LinearSlot, Transform};
use crate::network::Network;
use crate::rng::{NoiseKey, Stream};
use cudarc::driver::LaunchConfig;
use std::time::Instant;

/// Images per batch on the device.
const BATCH: usize = 128;
/// Samples per image per chunk: R = BATCH · CHUNK rows per launch.
const CHUNK: usize = 500;
// Rows per block and warps of the fused and tensor-core kernels come from
// kernels/launch_shapes.h. More rows per block means the weight is read
// from L2 fewer times (once per block): 32 rows × fp32 logits is what fits
// fc3 in shared memory. Kp is padded to a multiple of TC_K_GROUP, the k
// values whose weight fragments the tensor-core kernels load at once.
use super::shapes::{FUSED_SAMPLES, FUSED_WARPS, LT_ROWS, LT_WARPS, TC_K_GROUP, TC_ROWS, TC_WARPS};

/// One layer's weight [out, in] zero-padded to [Np, Kp] (Np a multiple of
/// 16, Kp of TC_K_GROUP)
/// for the tensor-core kernels: fp32 for TF32 (rounded in the fragments) or
/// bf16 bits (rounded to nearest even by `half`).
struct PaddedWeights {
    data: Padded,
    np: usize,
    kp: usize,
}

enum Padded {
    Tf32(DevBuf<f32>),
    Bf16(DevBuf<u16>),
}

impl PaddedWeights {
    fn new(gpu: &Gpu, w: &[f32], out: usize, inp: usize, bf16: bool) -> Result<Self> {
        let (np, kp) = (out.next_multiple_of(16), inp.next_multiple_of(TC_K_GROUP));
        let mut p = vec![0f32; np * kp];
        for o in 0..out {
            p[o * kp..o * kp + inp].copy_from_slice(&w[o * inp..(o + 1) * inp]);
        }
        let s = &gpu.device;
        let data = if bf16 {
            let bits: Vec<u16> = p.iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect();
            Padded::Bf16(s.htod(&bits)?)
        } else {
            Padded::Tf32(s.htod(&p)?)
        };
        Ok(PaddedWeights { data, np, kp })
    }

    fn bf16(&self) -> bool {
        matches!(self.data, Padded::Bf16(_))
    }

    /// Bytes per element of the staged activations (the kernels convert them
    /// to the weight's type).
    fn a_bytes(&self) -> usize {
        if self.bf16() {
            2
        } else {
            4
        }
    }

    /// Pushes the weight as one kernel argument.
    fn push_to(&self, lb: &mut Launch<'_>) {
        match &self.data {
            Padded::Tf32(w) => lb.arg(w),
            Padded::Bf16(w) => lb.arg(w),
        };
    }
}

/// The decoder's weights in the form the chosen precision's kernels read.
enum DecoderWeights {
    /// fp32 SIMT: fc1, fc2 from the flat parameters, fc3 transposed [Hd, D].
    Simt { w3t: DevBuf<f32> },
    /// Tensor cores: all three layers padded.
    Tensor { fc1: PaddedWeights, fc2: PaddedWeights, fc3: PaddedWeights },
}

struct DeviceModel {
    params: DevBuf<f32>,
    decoder: DecoderWeights,
    /// The warp basis by function, [nb, D] (`Warp::basis_by_function`).
    basis: DevBuf<f32>,
    theta_id: DevBuf<f32>,
}

impl DeviceModel {
    /// The padded fc1 and fc2 (tensor cores), or None (fp32).
    fn padded_hidden(&self) -> (Option<&PaddedWeights>, Option<&PaddedWeights>) {
        match &self.decoder {
            DecoderWeights::Simt { .. } => (None, None),
            DecoderWeights::Tensor { fc1, fc2, .. } => (Some(fc1), Some(fc2)),
        }
    }
}

/// Each image's streaming accumulators over its k samples
/// (kernels/logsumexp.cu lse_fold): the running max of log w, Σ exp(v − max),
/// Σ exp(2(v − max)) (for the effective sample size) and Σ v.
struct LseAccumulators {
    max: DevBuf<f32>,
    sum: DevBuf<f32>,
    sum2: DevBuf<f32>,
    mean: DevBuf<f32>,
}

impl LseAccumulators {
    /// Empty: max −∞, the sums 0.
    fn reset(&mut self, s: &Device) -> Result<()> {
        s.memcpy_htod(&vec![f32::NEG_INFINITY; self.max.len()], &mut self.max)?;
        s.memset_zeros(&mut self.sum)?;
        s.memset_zeros(&mut self.sum2)?;
        s.memset_zeros(&mut self.mean)
    }
}

impl Gpu {
    fn upload_model(&self, net: &Network<f32>, params: &[f32], precision: Precision) -> Result<DeviceModel> {
        let l = &net.layout;
        let (d, hd) = (l.config.pixels(), l.config.hidden);
        let decoder = if precision == Precision::Fp32 {
            let w3 = &params[l.dec_fc3.w_range()];
            let mut w3t = vec![0f32; d * hd];
            for j in 0..d {
                for k in 0..hd {
                    w3t[k * d + j] = w3[j * hd + k];
                }
            }
            DecoderWeights::Simt { w3t: self.device.htod(&w3t)? }
        } else {
            let bf16 = precision == Precision::Bf16;
            let pad = |s: &LinearSlot| PaddedWeights::new(self, &params[s.w_range()], s.out, s.inp, bf16);
            DecoderWeights::Tensor { fc1: pad(&l.dec_fc1)?, fc2: pad(&l.dec_fc2)?, fc3: pad(&l.dec_fc3)? }
        };
        let s = &self.device;
        // A transform-less model still gets one-element buffers: kernels take a pointer.
        let basis = if net.warp.nb > 0 { net.warp.basis_by_function() } else { &[0.0][..] };
        let theta_id = if net.theta_id.is_empty() { &[0.0][..] } else { &net.theta_id[..] };
        Ok(DeviceModel { params: s.htod(params)?, decoder, basis: s.htod(basis)?, theta_id: s.htod(theta_id)? })
    }

    /// NLL (k samples), k-sample ELBO, one-sample recon and recon_at_mean
    /// per image, all on the GPU; only the posterior means (for active
    /// units) and the per-image accumulators come back. Same noise keys as
    /// the CPU evaluator.
    pub fn evaluate(
        &self,
        net: &Network<f32>,
        params: &[f32],
        data: &Dataset,
        opts: &EvalOptions,
    ) -> Result<(EvalReport, Vec<ImageEstimate>)> {
        self.evaluate_reporting(net, params, data, opts, &|_| {})
    }

    /// [`Gpu::evaluate`], calling `done` after each batch of images.
    pub fn evaluate_reporting(
        &self,
        net: &Network<f32>,
        params: &[f32],
        data: &Dataset,
        opts: &EvalOptions,
        done: crate::eval::ImagesDone<'_>,
    ) -> Result<(EvalReport, Vec<ImageEstimate>)> {
        let cfg = net.layout.config;
        data.check_fits(&cfg)?;
        if data.is_empty() {
            return Err(Error::Config("evaluate: no images".into()));
        }
        opts.check()?;
        let t0 = Instant::now();
        let l = &net.layout;
        let (d, hd, zd, ud, t) = (cfg.pixels(), cfg.hidden, cfg.z_dim, cfg.u_dim, cfg.theta_dim());
        let nb = if cfg.transform == Transform::None { 0 } else { net.warp.nb };
        let model = self.upload_model(net, params, opts.precision)?;
        let (fc1, fc2) = model.padded_hidden();
        let s = &self.device;
        let n = data.len();
        let chunk = CHUNK.min(opts.k);
        let rows_cap = BATCH * chunk;
        let buf = |len: usize| s.alloc_zeros::<f32>(len.max(1));
        let images = s.htod(&data.images)?;
        let mut items = s.alloc_zeros::<u32>(BATCH)?;
        let mut x = buf(BATCH * d)?;
        let mut enc = EncoderBufs::new(self, l, BATCH)?;
        let mut gemm = buf(super::linear::scratch_len(l, rows_cap.max(BATCH), false, self.split_target))?;
        let (mut eps, mut eta, mut z, mut u) =
            (buf(rows_cap * zd)?, buf(rows_cap * ud)?, buf(rows_cap * zd)?, buf(rows_cap * ud)?);
        let (mut d1, mut d2, mut theta) = (buf(rows_cap * hd)?, buf(rows_cap * hd)?, buf(rows_cap * t)?);
        let (mut lw_latent, mut logpx, mut logw) = (buf(rows_cap)?, buf(rows_cap)?, buf(rows_cap)?);
        let (mut logits_at_mean, zeros, mut first_logpx) = (buf(BATCH * d)?, buf(BATCH)?, buf(BATCH)?);
        let (mut at_mean_logpx, mut at_mean_logw) = (buf(BATCH)?, buf(BATCH)?);
        let mut acc = LseAccumulators { max: buf(BATCH)?, sum: buf(BATCH)?, sum2: buf(BATCH)?, mean: buf(BATCH)? };
        // eval --bounds: per image and size, the open group's (max, sum) and
        // the closed groups' total, in f64 (kernels/logsumexp.cu bound_fold).
        let nbounds = opts.bounds.len();
        // opts.check() has each size dividing k, and the launches check that k fits i32.
        let sizes: Vec<i32> = opts.bounds.iter().map(|&size| i32::try_from(size).unwrap_or(i32::MAX)).collect();
        let bound_sizes = s.htod(if sizes.is_empty() { &[1][..] } else { &sizes })?;
        let mut bound_state = s.alloc_zeros::<f64>((BATCH * nbounds * 3).max(1))?;
        let keys = (NoiseKey::new(opts.seed, Stream::EvalEps, 0), NoiseKey::new(opts.seed, Stream::EvalEta, 0));
        let bin_key = NoiseKey::new(opts.seed, Stream::EvalBinarize, 0);
        // Dynamically binarized targets are exactly 0 or 1: the fused
        // epilogue then takes one logarithm per pixel (the same bits).
        let binary = opts.binarize == Binarize::Dynamic;
        let mut rows_out = Vec::with_capacity(n);
        let mut means_all = Vec::with_capacity(n);
        for start in (0..n).step_by(BATCH) {
            let b = BATCH.min(n - start);
            let idx: Vec<u32> = (start..start + b).map(|i| i as u32).collect();
            s.memcpy_htod(&idx, &mut items.slice_mut(0..b))?;
            self.targets(&images, &items, b, d, opts.binarize, bin_key, &mut x)?;
            self.encode(l, &model.params, &x, b, &mut enc, &mut gemm)?;
            // recon_at_mean: decode z = μz, u = μu, one row per image.
            self.linear(&enc.mu_z, &model.params, &l.dec_fc1, b, true, &mut d1, &mut gemm)?;
            self.linear(&d1, &model.params, &l.dec_fc2, b, true, &mut d2, &mut gemm)?;
            self.linear(&d2, &model.params, &l.dec_fc3, b, false, &mut logits_at_mean, &mut gemm)?;
            self.theta(l, &model.params, &enc.mu_u, b, &model.theta_id, &mut theta, &mut gemm)?;
            let (lpm, lwm) = (&mut at_mean_logpx, &mut at_mean_logw);
            self.decode_rows(l, nb, &mut logits_at_mean, &theta, &model.basis, &x, &zeros, b, 1, lpm, lwm)?;
            acc.reset(s)?;
            if nbounds > 0 {
                s.memset_zeros(&mut bound_state)?;
            }
            let mut s0 = 0;
            while s0 < opts.k {
                let kk = chunk.min(opts.k - s0);
                let r = b * kk;
                self.normals_into(keys.0, &items, b, kk, s0, zd, &mut eps)?;
                self.normals_into(keys.1, &items, b, kk, s0, ud, &mut eta)?;
                self.reparam(&enc, &eps, &eta, r, kk, (zd, ud), &mut z, &mut u, &mut lw_latent)?;
                self.decoder_layer(&z, &model, &l.dec_fc1, fc1, r, &mut d1, &mut gemm)?;
                self.decoder_layer(&d1, &model, &l.dec_fc2, fc2, r, &mut d2, &mut gemm)?;
                self.theta(l, &model.params, &u, r, &model.theta_id, &mut theta, &mut gemm)?;
                let ins = (&d2, &theta, &x, &lw_latent);
                self.nll_fc3(net, &model, ins, r, kk, binary, &mut logpx, &mut logw)?;
                // The first chunk's first sample of each image: the one-sample recon.
                let first = (&logpx, &mut first_logpx, s0 == 0);
                self.lse_fold(&logw, b, kk, &mut acc, first)?;
                if nbounds > 0 {
                    self.bound_fold(&logw, &bound_sizes, nbounds, b, kk, s0, &mut bound_state)?;
                }
                s0 += kk;
            }
            let down = |v: &DevBuf<f32>, len: usize| -> Result<Vec<f32>> {
                let mut h = vec![0f32; len];
                s.memcpy_dtoh(&v.slice(0..len), &mut h[..])?;
                Ok(h)
            };
            let (mx, sm, mn) = (down(&acc.max, b)?, down(&acc.sum, b)?, down(&acc.mean, b)?);
            let sm2 = down(&acc.sum2, b)?;
            let (recon, ram) = (down(&first_logpx, b)?, down(&at_mean_logpx, b)?);
            let (mu_z, mu_u) = (down(&enc.mu_z, b * zd)?, down(&enc.mu_u, b * ud)?);
            let mut bounds = vec![0f64; b * nbounds * 3];
            if nbounds > 0 {
                s.memcpy_dtoh(&bound_state.slice(0..b * nbounds * 3), &mut bounds[..])?;
            }
            s.synchronize()?;
            for i in 0..b {
                let kf = opts.k as f64;
                let lse = mx[i] as f64 + (sm[i] as f64).ln();
                rows_out.push(ImageEstimate {
                    index: start + i,
                    label: data.labels[start + i],
                    nll: -(lse - kf.ln()),
                    elbo: -(mn[i] as f64) / kf,
                    recon: -recon[i] as f64,
                    recon_at_mean: -ram[i] as f64,
                    // (Σw)²/Σw², both sums taken against the same max.
                    ess: (sm[i] as f64).powi(2) / sm2[i] as f64,
                    bounds: (0..nbounds)
                        .map(|j| -bounds[(i * nbounds + j) * 3 + 2] / (opts.k / opts.bounds[j]) as f64)
                        .collect(),
                });
                let mut m = mu_z[i * zd..(i + 1) * zd].to_vec();
                m.extend_from_slice(&mu_u[i * ud..(i + 1) * ud]);
                means_all.push(m);
            }
            done(b);
        }
        let seconds = t0.elapsed().as_secs_f64();
        let report = crate::eval::summarize(
            &rows_out,
            &means_all,
            zd,
            opts,
            seconds,
            format!("{} ({})", self.kind(), self.device_name()),
        );
        Ok((report, rows_out))
    }

    /// The evaluator's fused fc3 + sigmoid + warp + sampling + BCE
    /// (kernels/nll_fused.cu) over `rows` rows of `kk` samples per image.
    #[allow(clippy::too_many_arguments)]
    fn nll_fc3(
        &self,
        net: &Network<f32>,
        model: &DeviceModel,
        (d2, theta, x, lw_latent): (&DevBuf<f32>, &DevBuf<f32>, &DevBuf<f32>, &DevBuf<f32>),
        rows: usize,
        kk: usize,
        binary: bool,
        logpx: &mut DevBuf<f32>,
        logw: &mut DevBuf<f32>,
    ) -> Result<()> {
        let cfg = net.layout.config;
        let (d, hd) = (cfg.pixels(), cfg.hidden);
        let nb = if cfg.transform == Transform::None { 0 } else { net.warp.nb };
        Self::check(
            "nll_fc3_fused",
            kk > 0
                && d2.len() >= rows * hd
                && (nb == 0 || theta.len() >= rows * 2 * nb)
                && x.len() >= rows.div_ceil(kk) * d
                && [lw_latent.len(), logpx.len(), logw.len()].iter().all(|&v| v >= rows),
            format!("rows {rows} kk {kk}"),
        )?;
        let b3 = model.params.slice(net.layout.dec_fc3.b_range());
        let (r_i, kk_i, hd_i, d_i, h_i, w_i, nb_i) =
            (rows as i32, kk as i32, hd as i32, d as i32, cfg.height as i32, cfg.width as i32, nb as i32);
        let binary_i = binary as i32;
        let fc3 = match &model.decoder {
            DecoderWeights::Simt { w3t } => {
                // 16 samples' activations and canonical images in shared
                // memory: past the 48 KiB default, so the kernel opts in.
                let smem = FUSED_SAMPLES * (hd + d) * 4;
                let (kernel, lc) = self.f_opt_in("nll_fc3_fused", smem, rows, FUSED_SAMPLES, FUSED_WARPS)?;
                let mut lb = self.device.launcher(kernel);
                lb.arg(d2).arg(w3t).arg(&b3).arg(theta).arg(&model.basis).arg(x).arg(lw_latent);
                lb.arg(logpx).arg(logw).arg(&r_i).arg(&kk_i).arg(&hd_i).arg(&d_i).arg(&h_i).arg(&w_i).arg(&nb_i);
                lb.arg(&binary_i);
                // SAFETY: d2 [rows, Hd], W3t [Hd, D], b3 [D], θ [rows, 2nb],
                // basis [nb, D], x [rows / kk, D], the row vectors [rows]
                // (checked above); shared memory SAMPLES·(Hd + D) f32 as set
                // above; footprint() clamps every read.
                unsafe { lb.launch(lc) }?;
                return Ok(());
            }
            DecoderWeights::Tensor { fc3, .. } => fc3,
        };
        // Tensor cores: 32 samples per block, the [32, Dp] logits and the
        // staged [32, Hdp] inputs in shared memory (past the 48 KiB default,
        // so the kernel opts in to what it needs).
        let (dp, hdp) = (fc3.np, fc3.kp);
        let smem = TC_ROWS * dp * 4 + TC_ROWS * hdp * fc3.a_bytes();
        let name = if fc3.bf16() { "nll_fc3_bf16" } else { "nll_fc3_tf32" };
        let (kernel, lc) = self.f_opt_in(name, smem, rows, TC_ROWS, TC_WARPS)?;
        let (hdp_i, dp_i) = (hdp as i32, dp as i32);
        let mut lb = self.device.launcher(kernel);
        lb.arg(d2);
        fc3.push_to(&mut lb);
        lb.arg(&b3).arg(theta).arg(&model.basis).arg(x).arg(lw_latent).arg(logpx).arg(logw);
        lb.arg(&r_i).arg(&kk_i).arg(&hd_i).arg(&hdp_i).arg(&d_i).arg(&dp_i).arg(&h_i).arg(&w_i).arg(&nb_i);
        lb.arg(&binary_i);
        // SAFETY: as the fp32 kernel, with W3p [Dp, Hdp] (padded, uploaded by
        // upload_model) read whole in 16×16 fragments; rows past `rows` are
        // staged as zeros and never written; shared memory as computed above.
        unsafe { lb.launch(lc) }?;
        Ok(())
    }

    /// Kernel `name` and a launch of `warps` warps per `rows_per_block` rows with
    /// `smem` bytes of dynamic shared memory, which the kernel is opted in to
    /// (past the 48 KiB default; an error names the kernel when the GPU has
    /// less).
    fn f_opt_in(
        &self,
        name: &'static str,
        smem: usize,
        rows: usize,
        rows_per_block: usize,
        warps: usize,
    ) -> Result<(&'static str, LaunchConfig)> {
        self.device.opt_in_shared(name, smem)?;
        let lc = LaunchConfig {
            grid_dim: (Self::blocks(rows, rows_per_block), 1, 1),
            block_dim: (32 * warps as u32, 1, 1),
            shared_mem_bytes: smem as u32,
        };
        Ok((name, lc))
    }

    /// One ReLU layer of the decoder in the k-sample loop: fp32 SIMT
    /// (`padded` None), or tensor cores (64 rows per block) on the padded
    /// weight in its precision.
    #[allow(clippy::too_many_arguments)]
    fn decoder_layer(
        &self,
        x: &DevBuf<f32>,
        model: &DeviceModel,
        slot: &LinearSlot,
        padded: Option<&PaddedWeights>,
        rows: usize,
        y: &mut DevBuf<f32>,
        scratch: &mut DevBuf<f32>,
    ) -> Result<()> {
        let Some(padded) = padded else {
            return self.linear(x, &model.params, slot, rows, true, y, scratch);
        };
        Self::check(
            "linear_fwd_tc",
            x.len() >= rows * slot.inp && y.len() >= rows * slot.out,
            format!("x {} y {} rows {rows} [{}x{}]", x.len(), y.len(), slot.out, slot.inp),
        )?;
        let smem = LT_ROWS * padded.np * 4 + LT_ROWS * padded.kp * padded.a_bytes();
        let name = if padded.bf16() { "linear_fwd_bf16" } else { "linear_fwd_tf32" };
        let (kernel, lc) = self.f_opt_in(name, smem, rows, LT_ROWS, LT_WARPS)?;
        let b = model.params.slice(slot.b_range());
        let (m, n, k, np, kp, relu) =
            (rows as i32, slot.out as i32, slot.inp as i32, padded.np as i32, padded.kp as i32, 1i32);
        let mut lb = self.device.launcher(kernel);
        lb.arg(x);
        padded.push_to(&mut lb);
        lb.arg(&b).arg(y).arg(&m).arg(&n).arg(&k).arg(&np).arg(&kp).arg(&relu);
        // SAFETY: x holds rows·in and y rows·out f32 (checked), the padded
        // weight Np·Kp values, b out; rows past `rows` are staged as zeros and
        // never stored; shared memory as computed above.
        unsafe { lb.launch(lc) }?;
        Ok(())
    }

    /// Fold `kk` log-weights per image into the streaming logsumexp (max,
    /// Σ exp(v − max), Σ exp(2(v − max)), Σ v); with `first.2`, also copy
    /// each image's first log p(x|·) into `first.1`.
    fn lse_fold(
        &self,
        logw: &DevBuf<f32>,
        b: usize,
        kk: usize,
        acc: &mut LseAccumulators,
        (logpx, first, record): (&DevBuf<f32>, &mut DevBuf<f32>, bool),
    ) -> Result<()> {
        Self::check(
            "lse_fold",
            logw.len() >= b * kk
                && logpx.len() >= b * kk
                && [acc.max.len(), acc.sum.len(), acc.sum2.len(), acc.mean.len(), first.len()].iter().all(|&v| v >= b),
            format!("b {b} kk {kk}"),
        )?;
        let (b_i, kk_i, rec_i) = (b as i32, kk as i32, record as i32);
        let lc = LaunchConfig { grid_dim: (Self::blocks(b, 8), 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        let mut lb = self.device.launcher("lse_fold");
        lb.arg(logw).arg(&mut acc.max).arg(&mut acc.sum).arg(&mut acc.sum2).arg(&mut acc.mean);
        lb.arg(&b_i).arg(&kk_i).arg(logpx).arg(first).arg(&rec_i);
        // SAFETY: logw and logpx hold b·kk values, the accumulators and
        // `first` b each (checked); one warp per image.
        unsafe { lb.launch(lc) }?;
        Ok(())
    }

    /// Fold `kk` log-weights per image (samples `sample0..`) into the
    /// group accumulators of `eval --bounds`: `state` [b, nbounds, 3] f64,
    /// `sizes` [nbounds] i32.
    #[allow(clippy::too_many_arguments)]
    fn bound_fold(
        &self,
        logw: &DevBuf<f32>,
        sizes: &DevBuf<i32>,
        nbounds: usize,
        b: usize,
        kk: usize,
        sample0: usize,
        state: &mut DevBuf<f64>,
    ) -> Result<()> {
        Self::check(
            "bound_fold",
            logw.len() >= b * kk
                && sizes.len() >= nbounds
                && state.len() >= b * nbounds * 3
                && sample0 + kk <= i32::MAX as usize,
            format!("b {b} kk {kk} sample0 {sample0} bounds {nbounds}"),
        )?;
        let (b_i, nb_i, kk_i, s0_i) = (b as i32, nbounds as i32, kk as i32, sample0 as i32);
        let lc = super::forward::cfg1(b * nbounds, 128);
        let mut lb = self.device.launcher("bound_fold");
        lb.arg(logw).arg(sizes).arg(state).arg(&b_i).arg(&nb_i).arg(&kk_i).arg(&s0_i);
        // SAFETY: logw holds b·kk values, sizes nbounds, state b·nbounds·3
        // (checked); one thread per (image, bound), each its own 3 values.
        unsafe { lb.launch(lc) }?;
        Ok(())
    }

    /// Kernel benchmark support (benches/kernels.rs): the wall time of `reps`
    /// launches each of the k-sample loop's decoder fc2 and fused fc3 epilogue
    /// in `precision`, on `rows` rows of one image's worth of synthetic
    /// activations (values in [0, 1), θ at the identity); and their flops.
    pub fn time_eval_kernels(
        &self,
        net: &Network<f32>,
        params: &[f32],
        rows: usize,
        precision: Precision,
        reps: u32,
    ) -> Result<Vec<(&'static str, f64, u64)>> {
        let cfg = net.layout.config;
        let (d, hd, t) = (cfg.pixels(), cfg.hidden, cfg.theta_dim());
        let model = self.upload_model(net, params, precision)?;
        let (_, fc2_padded) = model.padded_hidden();
        let s = &self.device;
        let act: Vec<f32> = (0..rows * hd).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect();
        let d1 = s.htod(&act)?;
        let mut d2 = s.alloc_zeros::<f32>(rows * hd)?;
        let theta_rows: Vec<f32> = (0..rows).flat_map(|_| net.theta_id.iter().copied()).collect();
        let theta = s.htod(if t == 0 { &[0.0][..] } else { &theta_rows })?;
        let x = s.htod(&vec![1f32; d])?;
        let lw = s.alloc_zeros::<f32>(rows)?;
        let (mut logpx, mut logw) = (s.alloc_zeros::<f32>(rows)?, s.alloc_zeros::<f32>(rows)?);
        let time = |f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
            f()?;
            s.synchronize()?;
            let t0 = Instant::now();
            for _ in 0..reps {
                f()?;
            }
            s.synchronize()?;
            Ok(t0.elapsed().as_secs_f64() / reps as f64)
        };
        let l = &net.layout;
        let mut gemm = s.alloc_zeros::<f32>(super::linear::scratch_len(l, rows, false, self.split_target))?;
        let fc2 = time(&mut || self.decoder_layer(&d1, &model, &l.dec_fc2, fc2_padded, rows, &mut d2, &mut gemm))?;
        let fc3 =
            time(&mut || self.nll_fc3(net, &model, (&d1, &theta, &x, &lw), rows, rows, true, &mut logpx, &mut logw))?;
        let flops = |s: &LinearSlot| (2 * rows * s.out * s.inp) as u64;
        Ok(vec![("decoder fc2", fc2, flops(&l.dec_fc2)), ("fc3 + epilogue (fused)", fc3, flops(&l.dec_fc3))])
    }
}
