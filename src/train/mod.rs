//! The training loop: epochs over a keyed permutation, one objective step per
//! batch, a JSONL line and an atomic checkpoint per epoch, and `resume`
//! that continues bit-identically (all noise is keyed by epoch and image;
//! parameters and optimizer state are saved exactly).
//!
//! config.rs: what determines a run; run_dir.rs: its log, optimizer state and
//! resume; cpu.rs: the CPU engine (the GPU's is crate::cuda::train).
mod config;
mod cpu;
mod run_dir;

pub use config::{parse_binarize, EvaluationSettings, TrainConfig};
pub use run_dir::{read_config, saved_config, EpochLog, RunPaths};

use crate::data::Dataset;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::eval::{evaluate_on, EvalOptions, Precision, DEFAULT_CHUNK};
use crate::fsutil::atomic_write;
use crate::model::checkpoint::save_checkpoint;
use crate::model::{init_params, Layout};
use crate::network::Network;
use crate::objective::LatentKeys;
use crate::optim::{Optimizer, OptimizerKind, Schedule};
use crate::rng::{epoch_permutation, NoiseKey, Stream};
use cpu::CpuEngine;
use run_dir::{append_log, load_resume, save_optim, truncate_log};
use std::path::Path;
use std::time::Instant;

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

/// Held-out figures during training: after every `every` epochs and after
/// the last, `eval`'s estimates with `k` samples over `data` (the test
/// split, binarized and keyed as `eval --seed` keys it), in that epoch's log
/// line. The training itself is untouched: the same steps, the same bits.
#[derive(Clone, Copy)]
pub struct TestMonitor<'a> {
    pub data: &'a Dataset,
    pub every: usize,
    pub k: usize,
}

impl TestMonitor<'_> {
    fn due(&self, epochs_done: usize, epochs: usize) -> bool {
        self.every > 0 && (epochs_done.is_multiple_of(self.every) || epochs_done == epochs)
    }
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
    train_monitored(device, cfg, data, None, out, resume, progress)
}

/// [`train_on`], with held-out figures in the log when `test` is given.
pub fn train_monitored(
    device: Device,
    cfg: &TrainConfig,
    data: &Dataset,
    test: Option<TestMonitor>,
    out: &Path,
    resume: bool,
    progress: &mut dyn Progress,
) -> Result<Trained> {
    cfg.validate()?;
    if let Some(m) = &test {
        if m.k == 0 {
            return Err(Error::Config("--test-k must be at least 1".into()));
        }
        m.data.check_fits(&cfg.model_config(data.height, data.width)?)?;
    }
    cfg.check_device(device)?; // before anything is written to --out
    let model = cfg.model_config(data.height, data.width)?;
    let layout = Layout::new(model);
    let obj = cfg.objective()?;
    let binarize = cfg.binarize()?;
    let schedule = Schedule::parse(&cfg.schedule)?;
    let paths = RunPaths::new(out);
    if resume && !paths.checkpoint.exists() {
        return Err(Error::Config(format!(
            "--resume: {} holds no run to continue ({} is missing)",
            out.display(),
            paths.checkpoint.display()
        )));
    }
    crate::fsutil::ensure_dir(out).map_err(|e| Error::Config(format!("--out: {e}")))?;
    let _claim = crate::fsutil::RunLock::acquire(out)?;

    let mut cfg = TrainConfig { data_digest: Some(data.digest()), ..cfg.clone() };
    let (mut params, mut opt, start) = if resume {
        let r = load_resume(&paths, &cfg, &layout)?;
        truncate_log(&paths.log, r.epochs_done)?;
        cfg.shards = r.shards;
        cfg.data_dir = cfg.data_dir.take().or(r.data_dir);
        (r.params, r.opt, r.epochs_done)
    } else {
        if paths.checkpoint.exists() {
            return Err(Error::Config(format!(
                "{} already holds a run ({} exists): pass --resume to continue it, or choose another --out",
                out.display(),
                paths.checkpoint.display()
            )));
        }
        // Leftovers of a run that never wrote a checkpoint.
        for stale in [&paths.log, &paths.optim, &paths.optim_prev] {
            let _ = std::fs::remove_file(stale);
        }
        let mut p = init_params::<f32>(&layout, cfg.seed);
        if let (Some(slot), "identity") = (&layout.u2theta, cfg.theta_init.as_str()) {
            p[slot.w_range()].fill(0.0);
            p[slot.b_range()].fill(0.0);
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
    // The monitor with its network (its TPS basis), made once per run.
    let monitor = test.map(|m| (m, Network::<f32>::new(layout.clone())));
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
        let step_losses = engine.run_epoch(&plan, &mut params, &mut opt, progress).map_err(|e| match e {
            // A GPU fault is sticky: the run cannot go on in this process.
            Error::Device(m) => Error::Device(format!(
                "{m} (in epoch {}; {})",
                epoch + 1,
                if epoch == 0 {
                    "no checkpoint was written yet".to_string()
                } else {
                    format!("the checkpoint of epoch {epoch} is kept: train --resume continues from it")
                }
            )),
            e => e,
        })?;
        let loss_sum: f64 =
            step_losses.iter().zip(perm.chunks(cfg.batch_size)).map(|(l, batch)| l * batch.len() as f64).sum();
        let seconds = t0.elapsed().as_secs_f64();
        let edge = (step_losses.len() / 10).clamp(1, 10);
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let mut line = EpochLog {
            epoch: epoch + 1,
            loss: loss_sum / n as f64,
            loss_start: mean(&step_losses[..edge]),
            loss_end: mean(&step_losses[step_losses.len() - edge..]),
            lr,
            seconds,
            images_per_sec: n as f64 / seconds,
            test_k: None,
            test_nll: None,
            test_elbo: None,
            test_seconds: None,
            test_active_units: None,
            test_active_units_z: None,
            test_active_units_u: None,
        };
        if let Some((m, net)) = monitor.as_ref().filter(|(m, _)| m.due(epoch + 1, cfg.epochs)) {
            let opts = EvalOptions {
                k: m.k,
                chunk: DEFAULT_CHUNK,
                binarize,
                seed: cfg.seed,
                precision: Precision::default_for(device),
                bounds: Vec::new(),
            };
            let (report, _) = evaluate_on(device, net, &params, m.data, &opts)?;
            line.test_k = Some(m.k);
            line.test_nll = Some(report.nll);
            line.test_elbo = Some(report.elbo);
            line.test_seconds = Some(report.seconds);
            line.test_active_units = Some(report.active_units);
            line.test_active_units_z = Some(report.active_units_z);
            line.test_active_units_u = Some(report.active_units_u);
        }
        append_log(&paths.log, &line)?;
        save_optim(&paths, &layout, &opt, epoch + 1, cfg)?;
        save_checkpoint(&paths.checkpoint, &layout, &params, &[("epoch", (epoch + 1).to_string())])?;
        progress.epoch_end(&line);
        logs.push(line);
        if progress.should_stop() {
            break;
        }
    }
    Ok(Trained { layout, params, logs })
}
