//! Evaluation: importance-sampled NLL (k = 5000 by default), the k-sample
//! ELBO, a one-sample reconstruction, the reconstruction at the posterior
//! mean, and active units.
//!
//! Each image is one task: its encoder runs once (M = 1), its k samples go
//! through the decoder in chunks whose log-weights fold into a streaming
//! logsumexp, so memory is one chunk per thread whatever k is, and an image's
//! estimate depends on nothing but its index, the seed and the checkpoint
//! (not the batch size, the thread count or the other images).
use crate::data::{Binarize, Dataset};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::network::{DecodeMode, Network, Workspace};
use crate::objective::LatentKeys;
use crate::ops::linear::Activation;
use crate::ops::linear_bf16::Bf16Linear;
use crate::ops::logsumexp::Lse;
use crate::ops::Par;
use crate::rng::{NoiseKey, Stream};
use rayon::prelude::*;
use serde::Serialize;
use std::time::Instant;

/// Samples per decoder pass: big enough for efficient GEMMs, small enough
/// that a chunk's [chunk, D] buffers stay in L2.
pub const DEFAULT_CHUNK: usize = 250;

#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub k: usize,
    pub chunk: usize,
    pub binarize: Binarize,
    pub seed: u64,
    /// Arithmetic of the decoder's layers (fc1, fc2, fc3) in the k-sample
    /// loop: fp32 or bf16 on the CPU, any of the three on a GPU.
    pub precision: Precision,
}

/// How the evaluator computes the decoder's layers in its k-sample loop:
/// fp32, or with inputs rounded to TF32 (10-bit mantissa; GPU tensor cores
/// only) or BF16 (8-bit; GPU tensor cores, or on the CPU
/// `ops::linear_bf16`, AVX512-BF16 where the CPU has it), fp32 sums. The
/// encoder, u → θ and recon at the mean stay fp32. `Default` (what library
/// callers get) is fp32, exact on every device; the CLI's `--precision auto`
/// is [`Precision::default_for`] the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Fp32,
    Tf32,
    Bf16,
}

/// The GPU evaluator's default: the fastest precision whose NLL stays within
/// 0.01 nats of the CPU's fp32 on the same noise. Measured on the emulator,
/// which rounds the tensor cores' inputs as the hardware does (k = 5000, the
/// first 50 test images, the seed-1 TVAE-TPS and TVAE-affine IWAE k = 5
/// models): TF32 moves the NLL by +0.0009 and −0.0002 nats (per image at most
/// 0.013); BF16 by −0.0036 and +0.0010, but each image by up to 0.125.
/// Over all 10,000 test images the CPU's bf16 (the same rounding; it agrees
/// with the emulated GPU's to 1e-5 nats per image) moves them by +0.0015 and
/// −0.0011. TF32 carries the decoder's ~28 TFLOP at k = 5000 over the test
/// set on tensor cores; whether BF16 is faster still in these kernels is a
/// GPU timing that gpu-bundle/run.sh makes (and benches/precision.py turns
/// into a verdict).
pub const GPU_DEFAULT_PRECISION: Precision = Precision::Tf32;

impl Precision {
    /// `--precision`: fp32, tf32, bf16, or auto ([`Precision::default_for`]).
    pub fn parse_for(s: &str, device: Device) -> Result<Self> {
        match s {
            "auto" => Ok(Self::default_for(device)),
            "fp32" => Ok(Self::Fp32),
            "tf32" => Ok(Self::Tf32),
            "bf16" => Ok(Self::Bf16),
            o => Err(Error::Config(format!("--precision {o:?}: expected auto, fp32, tf32 or bf16"))),
        }
    }

    /// fp32 on the CPU (the executable spec; bf16 is opt-in there, see
    /// README "Speed (CPU)"); [`GPU_DEFAULT_PRECISION`] on a GPU and on the
    /// emulator, which stands in for one.
    pub fn default_for(device: Device) -> Self {
        match device {
            Device::Cpu => Self::Fp32,
            Device::Cuda(_) | Device::Emulated => GPU_DEFAULT_PRECISION,
        }
    }

    /// Whether `device` evaluates in this precision: TF32 is a GPU
    /// tensor-core format; every other pair does.
    pub fn check_device(self, device: Device) -> Result<()> {
        if self == Self::Tf32 && device == Device::Cpu {
            return Err(Error::Config(
                "--precision tf32 is the GPU's tensor-core format (--device cuda); the CPU evaluates in fp32 or bf16"
                    .into(),
            ));
        }
        Ok(())
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Fp32 => "fp32",
            Self::Tf32 => "tf32",
            Self::Bf16 => "bf16",
        }
    }
}

/// One image's estimates (nats; losses, lower is better).
#[derive(Clone, Debug, Serialize)]
pub struct ImageEstimate {
    pub index: usize,
    pub label: u8,
    /// −(logsumexp_s log w_s − ln k).
    pub nll: f64,
    /// −mean_s log w_s.
    pub elbo: f64,
    /// BCE of the first sample's reconstruction.
    pub recon: f64,
    /// BCE at z = μz, u = μu.
    pub recon_at_mean: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub nll: f64,
    /// The standard error of `nll` over the images (their sample standard
    /// deviation / √n): how far another draw of as many test images could
    /// move it. Null for one image.
    pub nll_se: Option<f64>,
    /// The k-sample ELBO as a loss (−ELBO ≥ NLL), nats.
    pub elbo: f64,
    pub recon: f64,
    pub recon_at_mean: f64,
    pub active_units: usize,
    pub active_units_z: usize,
    pub active_units_u: usize,
    pub images: usize,
    pub k: usize,
    pub seconds: f64,
    pub images_per_sec: f64,
    pub device: String,
    /// The decoder layers' arithmetic (see `Precision`).
    pub precision: String,
    pub binarize: String,
    pub seed: u64,
}

/// Estimates for one image, plus its posterior means (for active units).
fn one_image(
    net: &Network<f32>,
    params: &[f32],
    data: &Dataset,
    index: usize,
    opts: &EvalOptions,
    ws: &mut Workspace<f32>,
    mut bf16: Option<(&Bf16Decoder, &mut Vec<u32>)>,
) -> (ImageEstimate, Vec<f32>) {
    let cfg = &net.layout.config;
    let d = data.pixels();
    let bin_key = NoiseKey::new(opts.seed, Stream::EvalBinarize, 0);
    let keys = LatentKeys {
        eps: NoiseKey::new(opts.seed, Stream::EvalEps, 0),
        eta: NoiseKey::new(opts.seed, Stream::EvalEta, 0),
    };
    data.targets(index, opts.binarize, bin_key, &mut ws.scratch_u32, &mut ws.x[..d]);
    net.encode(params, ws, 1, Par::Seq);
    let mut means: Vec<f32> = ws.mu_z[..cfg.z_dim].to_vec();
    means.extend_from_slice(&ws.mu_u[..cfg.u_dim]);

    net.sample_latents(ws, 1, 1, true);
    net.decode(params, ws, 1, 1, DecodeMode::Score, Par::Seq);
    let recon_at_mean = -(ws.logpx[0] as f64);

    let mut lse = Lse::default();
    let mut sum = 0.0f64;
    let mut recon = f64::NAN;
    let mut s0 = 0;
    while s0 < opts.k {
        let kk = opts.chunk.min(opts.k - s0);
        net.fill_noise(ws, &[index as u32], kk, s0, keys.eps, keys.eta);
        net.sample_latents(ws, 1, kk, false);
        match bf16.as_mut() {
            Some((layers, scratch)) => {
                layers.forward(ws, kk, scratch);
                net.decode_logits(params, ws, 1, kk, DecodeMode::Score, Par::Seq);
            }
            None => net.decode(params, ws, 1, kk, DecodeMode::Score, Par::Seq),
        }
        net.log_weights(ws, 1, kk);
        if s0 == 0 {
            recon = -(ws.logpx[0] as f64);
        }
        for &v in &ws.logw[..kk] {
            lse.push(v as f64);
            sum += v as f64;
        }
        s0 += kk;
    }
    let k = opts.k as f64;
    let est = ImageEstimate {
        index,
        label: data.labels[index],
        nll: -(lse.value() - k.ln()),
        elbo: -sum / k,
        recon,
        recon_at_mean,
    };
    (est, means)
}

/// The decoder's three layers in bf16 (`ops::linear_bf16`), packed once per
/// evaluation: z → d1 → d2 → c, as `Network::decode` computes them in fp32.
pub struct Bf16Decoder {
    fc1: Bf16Linear,
    fc2: Bf16Linear,
    fc3: Bf16Linear,
}

impl Bf16Decoder {
    pub fn new(net: &Network<f32>, params: &[f32]) -> Self {
        let l = &net.layout;
        let pack =
            |s: &crate::model::LinearSlot| Bf16Linear::new(&params[s.w_range()], &params[s.b_range()], s.out, s.inp);
        Bf16Decoder { fc1: pack(&l.dec_fc1), fc2: pack(&l.dec_fc2), fc3: pack(&l.dec_fc3) }
    }

    /// ws.z [n, Z] → ws.c [n, D] (logits); `scratch` holds each layer's
    /// bf16 inputs.
    pub fn forward(&self, ws: &mut Workspace<f32>, n: usize, scratch: &mut Vec<u32>) {
        self.fc1.forward(&ws.z, n, Activation::Relu, &mut ws.d1, scratch);
        self.fc2.forward(&ws.d1, n, Activation::Relu, &mut ws.d2, scratch);
        self.fc3.forward(&ws.d2, n, Activation::Identity, &mut ws.c, scratch);
    }
}

/// Evaluate every image of `data`.
pub fn evaluate(
    net: &Network<f32>,
    params: &[f32],
    data: &Dataset,
    opts: &EvalOptions,
) -> Result<(EvalReport, Vec<ImageEstimate>)> {
    let all: Vec<usize> = (0..data.len()).collect();
    evaluate_indices(net, params, data, &all, opts)
}

/// Told how many more images are done, from any thread, as the evaluation
/// goes (the CLI's progress bar).
pub type ImagesDone<'a> = &'a (dyn Fn(usize) + Sync);

/// Evaluate the images of `data` at `indices` (each keyed by its index).
pub fn evaluate_indices(
    net: &Network<f32>,
    params: &[f32],
    data: &Dataset,
    indices: &[usize],
    opts: &EvalOptions,
) -> Result<(EvalReport, Vec<ImageEstimate>)> {
    evaluate_indices_reporting(net, params, data, indices, opts, &|_| {})
}

/// [`evaluate_indices`], calling `done` as images finish.
pub fn evaluate_indices_reporting(
    net: &Network<f32>,
    params: &[f32],
    data: &Dataset,
    indices: &[usize],
    opts: &EvalOptions,
    done: ImagesDone<'_>,
) -> Result<(EvalReport, Vec<ImageEstimate>)> {
    if let Some(&bad) = indices.iter().find(|&&i| i >= data.len()) {
        return Err(Error::Config(format!("image index {bad} out of range (the data has {} images)", data.len())));
    }
    if indices.is_empty() {
        return Err(Error::Config("no images to evaluate".into()));
    }
    if opts.k == 0 || opts.chunk == 0 {
        return Err(Error::Config("--k and the chunk size must be at least 1".into()));
    }
    opts.precision.check_device(Device::Cpu)?;
    data.check_fits(&net.layout.config)?;
    let t0 = Instant::now();
    let chunk = opts.chunk.min(opts.k);
    let bf16 = (opts.precision == Precision::Bf16).then(|| Bf16Decoder::new(net, params));
    let results: Vec<(ImageEstimate, Vec<f32>)> = indices
        .par_iter()
        .copied()
        .with_max_len(1)
        .map_init(
            || (net.workspace(1, chunk, false), Vec::new()),
            |(ws, scratch), i| {
                let estimate = one_image(net, params, data, i, opts, ws, bf16.as_ref().map(|l| (l, scratch)));
                done(1);
                estimate
            },
        )
        .collect();
    let seconds = t0.elapsed().as_secs_f64();
    let (rows, means): (Vec<ImageEstimate>, Vec<Vec<f32>>) = results.into_iter().unzip();
    let report = summarize(&rows, &means, net.layout.config.z_dim, opts, seconds, "cpu".into());
    Ok((report, rows))
}

/// The report over per-image estimates and posterior means ([Z + U] per
/// image), the same for every device. Active units (Burda et al.): a
/// dimension is active when the variance over the data of its mean > 0.01.
pub fn summarize(
    rows: &[ImageEstimate],
    means: &[Vec<f32>],
    z_dim: usize,
    opts: &EvalOptions,
    seconds: f64,
    device: String,
) -> EvalReport {
    let n = rows.len() as f64;
    let mean = |f: &dyn Fn(&ImageEstimate) -> f64| rows.iter().map(f).sum::<f64>() / n;
    let dims = means.first().map_or(0, |m| m.len());
    let active: Vec<bool> = (0..dims)
        .map(|dd| {
            let m = means.iter().map(|mu| mu[dd] as f64).sum::<f64>() / n;
            means.iter().map(|mu| (mu[dd] as f64 - m).powi(2)).sum::<f64>() / n > 0.01
        })
        .collect();
    let active_z = active[..z_dim.min(dims)].iter().filter(|&&a| a).count();
    let active_u = active[z_dim.min(dims)..].iter().filter(|&&a| a).count();
    EvalReport {
        nll: mean(&|e| e.nll),
        nll_se: standard_error(rows.iter().map(|e| e.nll)),
        elbo: mean(&|e| e.elbo),
        recon: mean(&|e| e.recon),
        recon_at_mean: mean(&|e| e.recon_at_mean),
        active_units: active_z + active_u,
        active_units_z: active_z,
        active_units_u: active_u,
        images: rows.len(),
        k: opts.k,
        seconds,
        images_per_sec: n / seconds,
        device,
        precision: opts.precision.name().into(),
        binarize: opts.binarize.name().into(),
        seed: opts.seed,
    }
}

/// The standard error of the mean of `values`, None for fewer than two.
pub fn standard_error(values: impl ExactSizeIterator<Item = f64> + Clone) -> Option<f64> {
    let n = values.len();
    if n < 2 {
        return None;
    }
    let mean = values.clone().sum::<f64>() / n as f64;
    let var = values.map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    Some((var / n as f64).sqrt())
}

/// CSV of per-image estimates.
pub fn per_image_csv(rows: &[ImageEstimate]) -> String {
    let mut s = String::from("index,label,nll,elbo,recon,recon_at_mean\n");
    for r in rows {
        s.push_str(&format!(
            "{},{},{:.6},{:.6},{:.6},{:.6}\n",
            r.index, r.label, r.nll, r.elbo, r.recon, r.recon_at_mean
        ));
    }
    s
}

/// `evaluate` on a chosen device (the GPU evaluator is crate::cuda's).
pub fn evaluate_on(
    device: Device,
    net: &Network<f32>,
    params: &[f32],
    data: &Dataset,
    opts: &EvalOptions,
) -> Result<(EvalReport, Vec<ImageEstimate>)> {
    evaluate_on_reporting(device, net, params, data, opts, &|_| {})
}

/// [`evaluate_on`], calling `done` as images finish.
pub fn evaluate_on_reporting(
    device: Device,
    net: &Network<f32>,
    params: &[f32],
    data: &Dataset,
    opts: &EvalOptions,
    done: ImagesDone<'_>,
) -> Result<(EvalReport, Vec<ImageEstimate>)> {
    match device {
        Device::Cpu => {
            let all: Vec<usize> = (0..data.len()).collect();
            evaluate_indices_reporting(net, params, data, &all, opts, done)
        }
        Device::Cuda(_) | Device::Emulated => {
            crate::cuda::Gpu::open(device)?.evaluate_reporting(net, params, data, opts, done)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::standard_error;

    #[test]
    fn standard_error_of_the_mean() {
        // numpy: np.std([1, 2, 3, 4], ddof=1) / np.sqrt(4) = 0.6454972243679028
        let se = standard_error([1.0, 2.0, 3.0, 4.0].into_iter()).unwrap();
        assert!((se - 0.645_497_224_367_902_8).abs() < 1e-15, "{se}");
        assert_eq!(standard_error([7.0].into_iter()), None);
        assert_eq!(standard_error([5.0, 5.0, 5.0].into_iter()), Some(0.0));
    }
}
