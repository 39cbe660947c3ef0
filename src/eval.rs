//! Evaluation: importance-sampled NLL (k = 5000 by default), the k-sample
//! ELBO, a one-sample reconstruction, the reconstruction at the posterior
//! mean, active units, and on request the bound at smaller k from the same
//! samples (`EvalOptions::bounds`).
//!
//! Each image's encoder runs once, its k samples go through the decoder in
//! chunks whose log-weights fold into a streaming logsumexp, so memory is
//! one chunk per thread whatever k is, and an image's estimate depends on
//! nothing but its index, the seed and the checkpoint (not the batch size,
//! the thread count or the other images). With large k an image is a task;
//! with small k a task takes as many images as one chunk holds, so the
//! GEMMs have rows enough to be efficient.
use crate::data::{Binarize, Dataset};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::network::{transpose_weights, DecodeMode, Network, Weights, Workspace};
use crate::objective::LatentKeys;
use crate::ops::linear::Activation;
use crate::ops::linear_bf16::Bf16Linear;
use crate::ops::logsumexp::{GroupedLse, Lse};
use crate::ops::Par;
use crate::rng::{NoiseKey, Stream};
use rayon::prelude::*;
use serde::Serialize;
use std::sync::Mutex;
use std::time::Instant;

/// Samples per decoder pass. An image's estimate has the same bits for any
/// chunk. While matrixmultiply packed the decoder's weights on every GEMM,
/// 1000 against 250 was 2.7% faster at k = 5000 and 7% at k = 5 (2-core
/// EPYC, alternating runs), for ~9 MB more memory; since ops::sgemm reads
/// the pre-transposed weights in place the two run alike (k = 5000 on 100
/// images: 85.0–85.6 against 85.9–87.7 images/s), and past 1000 the chunk's
/// [chunk, D] buffers outgrow the caches (2500 was slower).
pub const DEFAULT_CHUNK: usize = 1000;

#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub k: usize,
    pub chunk: usize,
    pub binarize: Binarize,
    pub seed: u64,
    /// Arithmetic of the decoder's layers (fc1, fc2, fc3) in the k-sample
    /// loop: fp32 or bf16 on the CPU, any of the three on a GPU.
    pub precision: Precision,
    /// Also estimate the IWAE bound at these smaller sample counts from the
    /// same k samples (`eval --bounds`): each size K must divide k, and the
    /// k log-weights split into k/K consecutive groups of K whose
    /// log-mean-exps are averaged ([`GroupedLse`]). Empty: none.
    pub bounds: Vec<usize>,
}

impl EvalOptions {
    /// An error unless k, the chunk and every bound size are usable.
    pub fn check(&self) -> Result<()> {
        if self.k == 0 || self.chunk == 0 {
            return Err(Error::Config("--k and the chunk size must be at least 1".into()));
        }
        if let Some(&bad) = self.bounds.iter().find(|&&size| size == 0 || !self.k.is_multiple_of(size)) {
            return Err(Error::Config(format!(
                "--bounds {bad}: each size must divide --k {} (the k samples split into k/K disjoint groups of K)",
                self.k
            )));
        }
        Ok(())
    }
}

/// The IWAE bound with `k` samples as a loss (−L_k, nats, lower is better),
/// estimated from the evaluation's samples in disjoint groups of k
/// (`EvalOptions::bounds`); at the evaluation's own k it is `nll`, at 1 the
/// ELBO's estimate.
#[derive(Clone, Debug, Serialize)]
pub struct BoundEstimate {
    pub k: usize,
    pub nll: f64,
    /// The standard error over the images, as `EvalReport::nll_se`.
    pub nll_se: Option<f64>,
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
    /// The effective sample size of the k importance weights, (Σw)²/Σw²,
    /// between 1 (one sample carries the estimate) and k (all weigh alike);
    /// NaN when every log-weight is −∞.
    pub ess: f64,
    /// −L_K for each size K of `EvalOptions::bounds`, in its order.
    pub bounds: Vec<f64>,
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
    /// The importance weights' effective sample size (`ImageEstimate::ess`),
    /// its mean and its smallest over the images: how many of the k samples
    /// the NLL's estimate rests on.
    pub ess_mean: f64,
    pub ess_min: f64,
    pub images: usize,
    pub k: usize,
    pub seconds: f64,
    pub images_per_sec: f64,
    pub device: String,
    /// The decoder layers' arithmetic (see `Precision`).
    pub precision: String,
    pub binarize: String,
    pub seed: u64,
    /// The bounds at the sizes `EvalOptions::bounds` asked for (none: the
    /// key is left out).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bounds: Vec<BoundEstimate>,
}

/// What a thread keeps between its groups of images: the workspace and the
/// scratch of `image_group`, made once, so a group allocates nothing.
struct GroupScratch {
    ws: Workspace<f32>,
    bf16: Vec<u32>,
    items: Vec<u32>,
    lse: Vec<Lse>,
    /// Per image, the logsumexp of 2·log w (for the effective sample size).
    lse2: Vec<Lse>,
    /// [g, bounds] accumulators of `EvalOptions::bounds`.
    grouped: Vec<GroupedLse>,
}

/// Estimates for a group of images into `rows` and their posterior means
/// into `means` ([g, Z + U], for active units). A group shares its GEMMs:
/// its encoder runs over all its images at once and, when k is small, one
/// decoder pass takes every image's k samples; with one image the k samples
/// go in chunks. Each row of a GEMM is summed in the same order whatever the
/// rows beside it, so an image's estimates are the same bits in any group
/// (`tests/determinism.rs`).
#[allow(clippy::too_many_arguments)]
fn image_group(
    net: &Network<f32>,
    params: Weights<f32>,
    data: &Dataset,
    indices: &[usize],
    opts: &EvalOptions,
    bf16: Option<&Bf16Decoder>,
    scratch: &mut GroupScratch,
    rows: &mut [ImageEstimate],
    means: &mut [f32],
) {
    let cfg = &net.layout.config;
    let (d, g) = (data.pixels(), indices.len());
    let (zd, ud) = (cfg.z_dim, cfg.u_dim);
    let GroupScratch { ws, bf16: bf16_scratch, items, lse, lse2, grouped } = scratch;
    // Samples per image in one decoder pass: the whole k for a group of
    // several images (group_size keeps g·k within the workspace's rows).
    let per_pass = (ws.batch_cap * ws.k / g).min(opts.k);
    debug_assert!(g == 1 || per_pass == opts.k, "a group of {g} images with k = {} split into passes", opts.k);
    let bin_key = NoiseKey::new(opts.seed, Stream::EvalBinarize, 0);
    let keys = LatentKeys {
        eps: NoiseKey::new(opts.seed, Stream::EvalEps, 0),
        eta: NoiseKey::new(opts.seed, Stream::EvalEta, 0),
    };
    for (j, &index) in indices.iter().enumerate() {
        data.targets(index, opts.binarize, bin_key, &mut ws.scratch_u32, &mut ws.x[j * d..(j + 1) * d]);
    }
    net.encode(params, ws, g, Par::Seq);
    for (j, m) in means.chunks_exact_mut(zd + ud).enumerate() {
        m[..zd].copy_from_slice(&ws.mu_z[j * zd..(j + 1) * zd]);
        m[zd..].copy_from_slice(&ws.mu_u[j * ud..(j + 1) * ud]);
    }
    net.sample_latents(ws, g, 1, true);
    net.decode(params, ws, g, 1, DecodeMode::Score, Par::Seq);
    for ((row, &index), &lp) in rows.iter_mut().zip(indices).zip(&ws.logpx[..g]) {
        *row = ImageEstimate {
            index,
            label: data.labels[index],
            nll: f64::NAN,
            elbo: 0.0, // Σ log w until the end
            recon: f64::NAN,
            recon_at_mean: -(lp as f64),
            ess: f64::NAN,
            bounds: Vec::new(),
        };
    }

    items.clear();
    items.extend(indices.iter().map(|&i| i as u32));
    lse.clear();
    lse.resize(g, Lse::default());
    lse2.clear();
    lse2.resize(g, Lse::default());
    let nb = opts.bounds.len();
    grouped.clear();
    grouped.extend((0..g).flat_map(|_| opts.bounds.iter().map(|&size| GroupedLse::new(size))));
    let mut s0 = 0;
    while s0 < opts.k {
        let kk = per_pass.min(opts.k - s0);
        net.fill_noise(ws, items, kk, s0, keys.eps, keys.eta);
        net.sample_latents(ws, g, kk, false);
        match bf16 {
            Some(layers) => {
                layers.forward(ws, g * kk, bf16_scratch);
                net.decode_logits(params, ws, g, kk, DecodeMode::Score, Par::Seq);
            }
            None => net.decode(params, ws, g, kk, DecodeMode::Score, Par::Seq),
        }
        net.log_weights(ws, g, kk);
        for (j, ((row, lse), lse2)) in rows.iter_mut().zip(lse.iter_mut()).zip(lse2.iter_mut()).enumerate() {
            if s0 == 0 {
                row.recon = -(ws.logpx[j * kk] as f64);
            }
            let grouped = &mut grouped[j * nb..(j + 1) * nb];
            for &v in &ws.logw[j * kk..(j + 1) * kk] {
                lse.push(v as f64);
                lse2.push(2.0 * v as f64);
                row.elbo += v as f64;
                grouped.iter_mut().for_each(|b| b.push(v as f64));
            }
        }
        s0 += kk;
    }
    let k = opts.k as f64;
    for (j, ((row, lse), lse2)) in rows.iter_mut().zip(lse.iter()).zip(lse2.iter()).enumerate() {
        row.nll = -(lse.value() - k.ln());
        row.ess = (2.0 * lse.value() - lse2.value()).exp();
        row.elbo = -row.elbo / k;
        row.bounds = grouped[j * nb..(j + 1) * nb].iter().map(|b| -b.value()).collect();
    }
}

/// Images per task: one when an image's k samples fill the chunk (large-k
/// NLL), else as many as the chunk holds whole, but no fewer than four
/// groups per thread so that every thread has work.
fn group_size(images: usize, k: usize, chunk: usize) -> usize {
    let per_thread = images.div_ceil(4 * rayon::current_num_threads());
    (chunk / k).clamp(1, per_thread.max(1))
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
    opts.check()?;
    opts.precision.check_device(Device::Cpu)?;
    data.check_fits(&net.layout.config)?;
    let t0 = Instant::now();
    let chunk = opts.chunk.min(opts.k);
    let group = group_size(indices.len(), opts.k, opts.chunk);
    let bf16 = (opts.precision == Precision::Bf16).then(|| Bf16Decoder::new(net, params));
    let mut transposed = vec![0f32; params.len()];
    transpose_weights(&net.layout, params, &mut transposed);
    let weights = Weights { params, transposed: Some(&transposed) };
    // Each thread keeps one GroupScratch for the whole evaluation, made on
    // its first group, and the results go straight into `rows` and `means`
    // (allocated here): nothing is allocated per group. (With map_init's
    // scratch per split and a result vector per image, glibc's arena for a
    // worker fragmented between matrixmultiply's 800 KB packing buffers and
    // mapped a fresh heap for each: --k 5 --chunk 5 ran 40% slower on
    // 87 page faults an image.)
    let dims = net.layout.config.z_dim + net.layout.config.u_dim;
    let placeholder = ImageEstimate {
        index: 0,
        label: 0,
        nll: 0.0,
        elbo: 0.0,
        recon: 0.0,
        recon_at_mean: 0.0,
        ess: 0.0,
        bounds: Vec::new(),
    };
    let mut rows = vec![placeholder; indices.len()];
    let mut means = vec![0f32; indices.len() * dims];
    let slots: Vec<Mutex<Option<GroupScratch>>> = (0..rayon::current_num_threads()).map(|_| Mutex::new(None)).collect();
    rows.par_chunks_mut(group)
        .zip(means.par_chunks_mut(group * dims.max(1)))
        .zip(indices.par_chunks(group))
        .with_max_len(1)
        .for_each(|((rows, means), images)| {
            let slot = &slots[rayon::current_thread_index().unwrap_or(0) % slots.len()];
            // Only this thread takes this slot, so the lock is never
            // contended; a panic elsewhere leaves it usable.
            let mut guard = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let scratch = guard.get_or_insert_with(|| GroupScratch {
                ws: net.workspace(group, chunk, false),
                bf16: Vec::new(),
                items: Vec::with_capacity(group),
                lse: Vec::with_capacity(group),
                lse2: Vec::with_capacity(group),
                grouped: Vec::with_capacity(group * opts.bounds.len()),
            });
            image_group(net, weights, data, images, opts, bf16.as_ref(), scratch, rows, means);
            done(images.len());
        });
    let seconds = t0.elapsed().as_secs_f64();
    let means: Vec<Vec<f32>> = means.chunks(dims.max(1)).map(|m| m[..dims].to_vec()).collect();
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
        ess_mean: mean(&|e| e.ess),
        ess_min: rows.iter().map(|e| e.ess).fold(f64::INFINITY, f64::min),
        images: rows.len(),
        k: opts.k,
        seconds,
        images_per_sec: n / seconds,
        device,
        precision: opts.precision.name().into(),
        binarize: opts.binarize.name().into(),
        seed: opts.seed,
        bounds: opts
            .bounds
            .iter()
            .enumerate()
            .map(|(j, &k)| BoundEstimate {
                k,
                nll: mean(&|e| e.bounds[j]),
                nll_se: standard_error(rows.iter().map(|e| e.bounds[j])),
            })
            .collect(),
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

/// CSV of per-image estimates; with bounds (`EvalOptions::bounds`, their
/// sizes in `bounds`), a column `nll_k<K>` for each.
pub fn per_image_csv(rows: &[ImageEstimate], bounds: &[usize]) -> String {
    let mut s = String::from("index,label,nll,elbo,recon,recon_at_mean,ess");
    bounds.iter().for_each(|k| s.push_str(&format!(",nll_k{k}")));
    s.push('\n');
    for r in rows {
        s.push_str(&format!(
            "{},{},{:.6},{:.6},{:.6},{:.6},{:.3}",
            r.index, r.label, r.nll, r.elbo, r.recon, r.recon_at_mean, r.ess
        ));
        r.bounds.iter().for_each(|b| s.push_str(&format!(",{b:.6}")));
        s.push('\n');
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
