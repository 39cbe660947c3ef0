//! The training loop: epochs over a keyed permutation, one objective step per
//! batch, a JSONL line and an atomic checkpoint per epoch, and `resume`
//! that continues bit-identically (all noise is keyed by epoch and image;
//! parameters and optimizer state are saved exactly).
use crate::data::{Binarize, Dataset};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::fsutil::atomic_write;
use crate::model::checkpoint::{load_checkpoint, save_checkpoint, serialize_flat};
use crate::model::{init_params, Layout, ModelConfig};
use crate::network::Network;
use crate::objective::{loss_and_grad, LatentKeys, Objective};
use crate::ops::simd::simd_dispatch;
use crate::ops::Par;
use crate::optim::{Optimizer, OptimizerKind, Schedule};
use crate::rng::{epoch_permutation, NoiseKey, Stream};
use rayon::prelude::*;
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Everything that determines a training run's result.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainConfig {
    pub transform: String,
    pub z_dim: usize,
    pub u_dim: usize,
    pub hidden: usize,
    pub tps_grid: usize,
    pub objective: String,
    pub k: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: String,
    pub schedule: String,
    pub lr: f64,
    pub binarize: String,
    pub limit_train: Option<usize>,
    pub seed: u64,
    /// Each batch is split into this many contiguous shards that run in
    /// parallel, one thread each, and whose gradients are summed in a fixed
    /// order. Set from --threads when a run starts and kept with the run, so
    /// results (and resume) do not depend on the thread count later.
    #[serde(default = "one")]
    pub shards: usize,
    /// "torch" (the default init for u2theta, as every layer) or "identity"
    /// (u2theta's weight and bias zero, so every warp starts at the identity;
    /// common practice for spatial transformers, not the seed's).
    #[serde(default = "torch_init")]
    pub theta_init: String,
}

fn torch_init() -> String {
    "torch".into()
}

fn one() -> usize {
    1
}

impl TrainConfig {
    /// The seed's IW-TVAE protocol (the CLI's defaults): TPS on a 3×3 grid,
    /// z 42, u 18, hidden 256, IWAE k = 5, batch 100, 50 epochs of Adadelta
    /// with the poly schedule, dynamic binarization, seed 1, one shard.
    pub fn seed_protocol() -> Self {
        TrainConfig {
            transform: "tps".into(),
            z_dim: 42,
            u_dim: 18,
            hidden: 256,
            tps_grid: 3,
            objective: "iwae".into(),
            k: 5,
            epochs: 50,
            batch_size: 100,
            optimizer: "adadelta".into(),
            schedule: "poly".into(),
            lr: 1.0,
            binarize: "dynamic".into(),
            limit_train: None,
            seed: 1,
            shards: 1,
            theta_init: "torch".into(),
        }
    }

    pub fn objective(&self) -> Result<Objective> {
        Objective::parse(&self.objective)
    }
    pub fn binarize(&self) -> Result<Binarize> {
        parse_binarize(&self.binarize)
    }
    pub fn model_config(&self, height: usize, width: usize) -> Result<ModelConfig> {
        let cfg = ModelConfig {
            transform: self.transform()?,
            z_dim: self.z_dim,
            u_dim: self.u_dim,
            hidden: self.hidden,
            tps_grid: self.tps_grid,
            height,
            width,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The `--transform` flag, parsed; the error names the flag.
    pub fn transform(&self) -> Result<crate::model::Transform> {
        crate::model::Transform::parse(&self.transform)
            .map_err(|_| Error::Config(format!("--transform {:?}: expected none, affine or tps", self.transform)))
    }

    pub fn validate(&self) -> Result<()> {
        // The image size comes with the data; the rest of the model is
        // checked now, before the data loads (2×2 is the smallest valid size).
        self.model_config(2, 2)?;
        let obj = self.objective()?;
        self.binarize()?;
        OptimizerKind::parse(&self.optimizer)?;
        Schedule::parse(&self.schedule)?;
        if self.k == 0 || self.batch_size == 0 || self.epochs == 0 || self.shards == 0 {
            return Err(Error::Config("--k, --batch-size, --epochs and the shard count must be at least 1".into()));
        }
        if obj == Objective::ElboKl && self.k != 1 {
            return Err(Error::Config(format!("--objective elbo-kl uses a single sample: got --k {}", self.k)));
        }
        if self.theta_init != "torch" && self.theta_init != "identity" {
            return Err(Error::Config(format!("--theta-init {:?}: expected torch or identity", self.theta_init)));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::Config(format!("--lr {} must be a positive number", self.lr)));
        }
        Ok(())
    }
}

pub fn parse_binarize(s: &str) -> Result<Binarize> {
    match s {
        "dynamic" => Ok(Binarize::Dynamic),
        "none" => Ok(Binarize::None),
        o => Err(Error::Config(format!("unknown --binarize {o:?} (expected dynamic or none)"))),
    }
}

/// One line of the JSONL log.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub loss: f64,
    /// Mean loss of the epoch's first and last tenth of steps (at most 10 each).
    pub loss_start: f64,
    pub loss_end: f64,
    pub lr: f64,
    pub seconds: f64,
    pub images_per_sec: f64,
}

pub struct RunPaths {
    pub checkpoint: PathBuf,
    pub optim: PathBuf,
    pub log: PathBuf,
    pub config: PathBuf,
}

impl RunPaths {
    pub fn new(out: &Path) -> Self {
        RunPaths {
            checkpoint: out.join("checkpoint.safetensors"),
            optim: out.join("optim.safetensors"),
            log: out.join("log.jsonl"),
            config: out.join("config.json"),
        }
    }
}

/// What a caller sees of progress (the CLI draws a bar from it).
pub trait Progress {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, steps: usize);
    fn step(&mut self, loss: f64, images: usize);
    fn epoch_end(&mut self, log: &EpochLog);
    /// Asked after each epoch's checkpoint is written: stop cleanly here?
    fn should_stop(&self) -> bool {
        false
    }
}

pub struct Silent;
impl Progress for Silent {
    fn epoch_start(&mut self, _: usize, _: usize, _: usize) {}
    fn step(&mut self, _: f64, _: usize) {}
    fn epoch_end(&mut self, _: &EpochLog) {}
}

/// Optimizer state and position, stored beside the checkpoint.
fn save_optim(path: &Path, layout: &Layout, opt: &Optimizer, epochs_done: usize, cfg: &TrainConfig) -> Result<()> {
    let mut meta = std::collections::HashMap::new();
    meta.insert("optimizer".to_string(), opt.kind.name().to_string());
    meta.insert("steps".to_string(), opt.steps.to_string());
    meta.insert("epochs_done".to_string(), epochs_done.to_string());
    meta.insert("train_config".to_string(), serde_json::to_string(cfg).expect("config serialises"));
    let mut flat = Vec::with_capacity(2 * layout.total);
    flat.extend_from_slice(&opt.s1);
    flat.extend_from_slice(&opt.s2);
    // Two copies of the layout under "s1." and "s2." prefixes.
    let mut two = layout.clone();
    let mut second: Vec<_> = layout.entries.clone();
    for e in &mut two.entries {
        e.name = format!("s1.{}", e.name);
    }
    for e in &mut second {
        e.name = format!("s2.{}", e.name);
        e.offset += layout.total;
    }
    two.entries.extend(second);
    let bytes = serialize_flat(&two, &flat, meta)?;
    atomic_write(path, &bytes)
}

struct Resumed {
    params: Vec<f32>,
    opt: Optimizer,
    epochs_done: usize,
    /// The run's own shard count (the requested one may differ when the
    /// thread count changed; the run's keeps results bit-identical).
    shards: usize,
}

fn load_resume(paths: &RunPaths, cfg: &TrainConfig, layout: &Layout) -> Result<Resumed> {
    let ck = load_checkpoint(&paths.checkpoint)?;
    if ck.layout.config != layout.config {
        return Err(Error::Checkpoint {
            path: paths.checkpoint.clone(),
            problem: format!("model {:?} differs from the requested {:?}", ck.layout.config, layout.config),
        });
    }
    let bytes = std::fs::read(&paths.optim).map_err(|e| Error::io(&paths.optim, e))?;
    let bad = |p: String| Error::Checkpoint { path: paths.optim.clone(), problem: p };
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let get = |k: &str| meta.get(k).cloned().ok_or_else(|| bad(format!("metadata {k} missing")));
    let saved: TrainConfig =
        serde_json::from_str(&get("train_config")?).map_err(|e| bad(format!("train_config: {e}")))?;
    if saved != (TrainConfig { shards: saved.shards, ..cfg.clone() }) {
        return Err(bad(format!(
            "the run in this directory was trained with different settings; resume needs the same flags.\n  saved:     {}\n  requested: {}",
            serde_json::to_string(&saved).unwrap_or_default(),
            serde_json::to_string(cfg).unwrap_or_default()
        )));
    }
    let epochs_done: usize = get("epochs_done")?.parse().map_err(|_| bad("epochs_done is not an integer".into()))?;
    let ck_epoch: Option<usize> = ck.metadata.get("epoch").and_then(|v| v.parse().ok());
    if ck_epoch != Some(epochs_done) {
        return Err(bad(format!(
            "optimizer state is for epoch {epochs_done} but the checkpoint is for epoch {ck_epoch:?}; the pair is inconsistent"
        )));
    }
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("{e}")))?;
    let kind = OptimizerKind::parse(&get("optimizer")?)?;
    let mut opt = Optimizer::new(kind, layout.total);
    opt.steps = get("steps")?.parse().map_err(|_| bad("steps is not an integer".into()))?;
    for e in &layout.entries {
        for (prefix, dst) in [("s1", &mut opt.s1), ("s2", &mut opt.s2)] {
            let name = format!("{prefix}.{}", e.name);
            let t = st.tensor(&name).map_err(|_| bad(format!("missing tensor {name}")))?;
            if t.data().len() != 4 * e.len {
                return Err(bad(format!("tensor {name} has the wrong size")));
            }
            for (d, c) in dst[e.offset..e.offset + e.len].iter_mut().zip(t.data().chunks_exact(4)) {
                *d = f32::from_le_bytes(c.try_into().expect("4 bytes"));
            }
        }
    }
    Ok(Resumed { params: ck.params, opt, epochs_done, shards: saved.shards })
}

/// Keep only the log lines of epochs already in the checkpoint.
fn truncate_log(path: &Path, epochs_done: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: String = text
        .lines()
        .filter(|l| serde_json::from_str::<EpochLog>(l).map(|e| e.epoch <= epochs_done).unwrap_or(false))
        .map(|l| format!("{l}\n"))
        .collect();
    atomic_write(path, kept.as_bytes())
}

fn append_log(path: &Path, line: &EpochLog) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io(path, e))?;
    writeln!(f, "{}", serde_json::to_string(line).expect("log serialises")).map_err(|e| Error::io(path, e))
}

/// One epoch's fixed inputs: its index, learning rate, image order and noise keys.
pub struct EpochPlan<'a> {
    pub epoch: usize,
    pub lr: f64,
    pub perm: &'a [u32],
    pub bin_key: NoiseKey,
    pub keys: LatentKeys,
}

impl<'a> EpochPlan<'a> {
    /// Epoch `epoch` of a run seeded `seed`: binarization and latent noise
    /// keyed by (seed, stream, epoch) as SPEC §3 says.
    pub fn new(seed: u64, epoch: usize, lr: f64, perm: &'a [u32]) -> Self {
        let e = epoch as u32;
        EpochPlan {
            epoch,
            lr,
            perm,
            bin_key: NoiseKey::new(seed, Stream::TrainBinarize, e),
            keys: LatentKeys {
                eps: NoiseKey::new(seed, Stream::TrainEps, e),
                eta: NoiseKey::new(seed, Stream::TrainEta, e),
            },
        }
    }
}

/// What runs an epoch's optimizer steps: the CPU shards below, or the GPU
/// (crate::cuda::train). The loop around it (logs, checkpoints, resume)
/// is shared. `params` and `opt` hold the state at the end of the epoch.
pub trait Engine {
    /// Runs one step per batch of `plan.perm` and returns each step's loss
    /// (mean over the batch's images); a non-finite loss or gradient is
    /// `Error::NonFinite` naming the epoch and step.
    fn run_epoch(
        &mut self,
        plan: &EpochPlan,
        params: &mut [f32],
        opt: &mut Optimizer,
        progress: &mut dyn Progress,
    ) -> Result<Vec<f64>>;
}

/// The CPU engine: each batch split into contiguous shards that run in
/// parallel (one thread each), their gradients combined in shard order.
struct CpuEngine<'a> {
    net: Network<f32>,
    shards: Vec<Shard>,
    grads: Vec<f32>,
    weights: Vec<f32>,
    data: &'a Dataset,
    obj: Objective,
    binarize: Binarize,
    k: usize,
    batch_size: usize,
}

impl<'a> CpuEngine<'a> {
    fn new(layout: &Layout, cfg: &TrainConfig, data: &'a Dataset, obj: Objective, binarize: Binarize) -> Self {
        let net = Network::<f32>::new(layout.clone());
        let shard_count = cfg.shards.min(cfg.batch_size);
        let shard_cap = cfg.batch_size.div_ceil(shard_count);
        let shards = (0..shard_count)
            .map(|_| Shard {
                ws: net.workspace(shard_cap, cfg.k, true),
                grads: vec![0f32; layout.total],
                items: Vec::with_capacity(shard_cap),
                loss: 0.0,
            })
            .collect();
        CpuEngine {
            net,
            shards,
            grads: vec![0f32; layout.total],
            weights: vec![0f32; shard_count],
            data,
            obj,
            binarize,
            k: cfg.k,
            batch_size: cfg.batch_size,
        }
    }
}

impl Engine for CpuEngine<'_> {
    fn run_epoch(
        &mut self,
        plan: &EpochPlan,
        params: &mut [f32],
        opt: &mut Optimizer,
        progress: &mut dyn Progress,
    ) -> Result<Vec<f64>> {
        let CpuEngine { net, shards, grads, weights, data, obj, binarize, k, batch_size } = self;
        let (data, obj, binarize, k) = (*data, *obj, *binarize, *k);
        let shard_count = shards.len();
        let mut step_losses = Vec::with_capacity(plan.perm.len().div_ceil(*batch_size));
        for (step, batch) in plan.perm.chunks(*batch_size).enumerate() {
            let per = batch.len().div_ceil(shard_count);
            let params_now: &[f32] = params;
            shards.par_iter_mut().enumerate().for_each(|(s, sh)| {
                let part = &batch[(s * per).min(batch.len())..((s + 1) * per).min(batch.len())];
                sh.items.clear();
                sh.items.extend_from_slice(part);
                sh.grads.iter_mut().for_each(|g| *g = 0.0);
                sh.loss = 0.0;
                if part.is_empty() {
                    return;
                }
                let d = data.pixels();
                for (b, &i) in part.iter().enumerate() {
                    data.targets(
                        i as usize,
                        binarize,
                        plan.bin_key,
                        &mut sh.ws.scratch_u32,
                        &mut sh.ws.x[b * d..(b + 1) * d],
                    );
                }
                sh.loss = loss_and_grad(
                    net,
                    params_now,
                    Some(&mut sh.grads),
                    &mut sh.ws,
                    &sh.items,
                    k,
                    obj,
                    plan.keys,
                    Par::Seq,
                );
            });
            // Each shard's loss is a mean over its images: weight by share.
            let total = batch.len() as f64;
            for (w, sh) in weights.iter_mut().zip(shards.iter()) {
                *w = (sh.items.len() as f64 / total) as f32;
            }
            let loss: f64 = shards.iter().map(|sh| sh.loss * sh.items.len() as f64 / total).sum();
            let grads_finite = combine_gradients(grads, shards, weights);
            if !loss.is_finite() || !grads_finite {
                return Err(Error::NonFinite { epoch: plan.epoch + 1, step: step + 1, loss });
            }
            opt.step(params, grads, plan.lr as f32);
            step_losses.push(loss);
            progress.step(loss, batch.len());
        }
        Ok(step_losses)
    }
}

/// One shard of a batch: its images, workspace and gradient.
struct Shard {
    ws: crate::network::Workspace<f32>,
    grads: Vec<f32>,
    items: Vec<u32>,
    loss: f64,
}

/// grads = Σ_s weight_s · shard_s.grads, summed in shard order (so the result
/// does not depend on how the elementwise work is split across threads).
/// Returns whether every combined gradient is finite.
fn combine_gradients(grads: &mut [f32], shards: &[Shard], weights: &[f32]) -> bool {
    const CHUNK: usize = 1 << 14;
    grads.par_chunks_mut(CHUNK).enumerate().all(|(c, g)| combine_chunk_wide(g, shards, c * CHUNK, weights))
}

simd_dispatch!(fn combine_chunk_wide(g: &mut [f32], shards: &[Shard], start: usize, weights: &[f32]) -> bool => combine_chunk);

#[inline(always)]
fn combine_chunk(g: &mut [f32], shards: &[Shard], start: usize, weights: &[f32]) -> bool {
    let range = start..start + g.len();
    for (v, &s) in g.iter_mut().zip(&shards[0].grads[range.clone()]) {
        *v = s * weights[0];
    }
    for (shard, &w) in shards.iter().zip(weights).skip(1) {
        for (v, &s) in g.iter_mut().zip(&shard.grads[range.clone()]) {
            *v += s * w;
        }
    }
    // Non-finite means an all-ones exponent. An integer OR over the bits
    // vectorizes (a short-circuiting any(), or a float reduction, does not).
    const EXPONENT: u32 = 0x7f80_0000;
    g.iter().fold(0u32, |acc, v| acc | u32::from(v.to_bits() & EXPONENT == EXPONENT)) == 0
}

/// The outcome of a training run.
pub struct Trained {
    pub layout: Layout,
    pub params: Vec<f32>,
    pub logs: Vec<EpochLog>,
}

/// Train on `data` into `out` on the CPU; with `resume`, continue the run found there.
pub fn train(
    cfg: &TrainConfig,
    data: &Dataset,
    out: &Path,
    resume: bool,
    progress: &mut dyn Progress,
) -> Result<Trained> {
    train_on(Device::Cpu, cfg, data, out, resume, progress)
}

/// `train` on a chosen device. The GPU runs the same steps on the same noise;
/// its sums differ from the CPU's in rounding (and its scatter-adds in
/// order), so a GPU run matches a CPU run to tolerance, not bit for bit.
pub fn train_on(
    device: Device,
    cfg: &TrainConfig,
    data: &Dataset,
    out: &Path,
    resume: bool,
    progress: &mut dyn Progress,
) -> Result<Trained> {
    cfg.validate()?;
    let model = cfg.model_config(data.height, data.width)?;
    let layout = Layout::new(model);
    let obj = cfg.objective()?;
    let binarize = cfg.binarize()?;
    let schedule = Schedule::parse(&cfg.schedule)?;
    let paths = RunPaths::new(out);
    if out.exists() && !out.is_dir() {
        return Err(Error::Config(format!("--out {}: exists and is not a directory", out.display())));
    }
    crate::fsutil::ensure_dir(out)?;

    let mut cfg = cfg.clone();
    let (mut params, mut opt, start) = if resume {
        let r = load_resume(&paths, &cfg, &layout)?;
        truncate_log(&paths.log, r.epochs_done)?;
        cfg.shards = r.shards;
        (r.params, r.opt, r.epochs_done)
    } else {
        if paths.checkpoint.exists() {
            return Err(Error::Config(format!(
                "{} already holds a run ({} exists): pass --resume to continue it, or choose another --out",
                out.display(),
                paths.checkpoint.display()
            )));
        }
        let _ = std::fs::remove_file(&paths.log);
        let mut p = init_params::<f32>(&layout, cfg.seed);
        if let (Some(slot), "identity") = (&layout.u2theta, cfg.theta_init.as_str()) {
            p[slot.w..slot.b + slot.out].iter_mut().for_each(|v| *v = 0.0);
        }
        (p, Optimizer::new(OptimizerKind::parse(&cfg.optimizer)?, layout.total), 0)
    };
    let cfg = &cfg;
    atomic_write(&paths.config, serde_json::to_string_pretty(cfg).expect("config serialises").as_bytes())?;

    let mut engine: Box<dyn Engine + '_> = match device {
        Device::Cpu => Box::new(CpuEngine::new(&layout, cfg, data, obj, binarize)),
        Device::Cuda(_) | Device::Emulated => {
            let gpu = crate::cuda::Gpu::open(device)?;
            Box::new(crate::cuda::train::GpuEngine::new(gpu, &layout, cfg, data, &params, &opt)?)
        }
    };
    let n = data.len();
    let steps = n.div_ceil(cfg.batch_size);
    let mut logs = Vec::new();
    for epoch in start..cfg.epochs {
        let t0 = Instant::now();
        let lr = schedule.lr(cfg.lr, epoch, cfg.epochs);
        let e32 = epoch as u32;
        let perm = epoch_permutation(cfg.seed, e32, n);
        let plan = EpochPlan::new(cfg.seed, epoch, lr, &perm);
        progress.epoch_start(epoch, cfg.epochs, steps);
        let step_losses = engine.run_epoch(&plan, &mut params, &mut opt, progress)?;
        let loss_sum: f64 =
            step_losses.iter().zip(perm.chunks(cfg.batch_size)).map(|(l, batch)| l * batch.len() as f64).sum();
        let seconds = t0.elapsed().as_secs_f64();
        let edge = (step_losses.len() / 10).clamp(1, 10);
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let line = EpochLog {
            epoch: epoch + 1,
            loss: loss_sum / n as f64,
            loss_start: mean(&step_losses[..edge]),
            loss_end: mean(&step_losses[step_losses.len() - edge..]),
            lr,
            seconds,
            images_per_sec: n as f64 / seconds,
        };
        append_log(&paths.log, &line)?;
        save_optim(&paths.optim, &layout, &opt, epoch + 1, cfg)?;
        save_checkpoint(&paths.checkpoint, &layout, &params, &[("epoch", (epoch + 1).to_string())])?;
        progress.epoch_end(&line);
        logs.push(line);
        if progress.should_stop() {
            break;
        }
    }
    Ok(Trained { layout, params, logs })
}
