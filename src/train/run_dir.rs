//! A run's folder: the JSONL log, the optimizer state beside the checkpoint,
//! and reading both back for `--resume`.
use super::TrainConfig;
use crate::error::{Error, Result};
use crate::fsutil::atomic_write;
use crate::model::checkpoint::{load_checkpoint, serialize_flat};
use crate::model::Layout;
use crate::optim::{Optimizer, OptimizerKind};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

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
    /// With a test monitor (`train --test-every`), at the epoch's end: the
    /// test split's `eval` nll with `test_k` samples (for k > 1 the IWAE
    /// bound, loose by what k = 5000 would tighten), its −ELBO, and the
    /// seconds it took (not in `seconds`). Absent on other epochs; null
    /// (JSON has no NaN) where a figure is not finite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_k: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_nll: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_elbo: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_seconds: Option<f64>,
    /// The monitor's active units (as `eval`'s: z and u together, then
    /// each), so a log shows the epoch a unit collapses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_active_units: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_active_units_z: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_active_units_u: Option<usize>,
}

pub struct RunPaths {
    pub checkpoint: PathBuf,
    pub optim: PathBuf,
    /// The optimizer state of the epoch before `optim`'s (see save_optim).
    pub optim_prev: PathBuf,
    pub log: PathBuf,
    pub config: PathBuf,
}

impl RunPaths {
    pub fn new(out: &Path) -> Self {
        RunPaths {
            checkpoint: out.join("checkpoint.safetensors"),
            optim: out.join("optim.safetensors"),
            optim_prev: out.join("optim.prev.safetensors"),
            log: out.join("log.jsonl"),
            config: out.join("config.json"),
        }
    }
}

/// The settings of the run in `out`, for `--resume` without repeating its
/// flags: its config.json, or, where that is missing (a run that stopped
/// before writing it), the optimizer state's copy. None where `out` holds no
/// run (no checkpoint).
pub fn saved_config(out: &Path) -> Result<Option<TrainConfig>> {
    let paths = RunPaths::new(out);
    if !paths.checkpoint.exists() {
        return Ok(None);
    }
    if paths.config.exists() {
        return read_config(&paths.config).map(Some);
    }
    for path in [&paths.optim, &paths.optim_prev] {
        if let Ok(bytes) = std::fs::read(path) {
            return Ok(Some(optim_metadata(path, &bytes)?.1));
        }
    }
    Err(Error::io(&paths.config, std::io::ErrorKind::NotFound.into()))
}

/// A run's config.json.
pub fn read_config(path: &Path) -> Result<TrainConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Checkpoint { path: path.to_path_buf(), problem: format!("not a run's settings ({e})") })
}

/// An optimizer-state file's metadata, and the run settings it carries.
fn optim_metadata(path: &Path, bytes: &[u8]) -> Result<(HashMap<String, String>, TrainConfig)> {
    let bad = |p: String| Error::Checkpoint { path: path.to_path_buf(), problem: p };
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let text = meta.get("train_config").ok_or_else(|| bad("metadata train_config missing".into()))?;
    let cfg = serde_json::from_str(text).map_err(|e| bad(format!("train_config: {e}")))?;
    Ok((meta, cfg))
}

/// Optimizer state and position, stored beside the checkpoint. The state of
/// the epoch before stays, as `optim.prev`, until the next checkpoint is
/// written: a run killed between this write and the checkpoint's still holds
/// a state that matches its checkpoint, so `--resume` works at any instant.
pub(super) fn save_optim(
    paths: &RunPaths,
    layout: &Layout,
    opt: &Optimizer,
    epochs_done: usize,
    cfg: &TrainConfig,
) -> Result<()> {
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
    if paths.optim.exists() {
        std::fs::rename(&paths.optim, &paths.optim_prev).map_err(|e| Error::io(&paths.optim_prev, e))?;
    }
    atomic_write(&paths.optim, &bytes)
}

pub(super) struct Resumed {
    pub(super) params: Vec<f32>,
    pub(super) opt: Optimizer,
    pub(super) epochs_done: usize,
    /// The run's own shard count (the requested one may differ when the
    /// thread count changed; the run's keeps results bit-identical).
    pub(super) shards: usize,
    /// The run's `--data`, where it was recorded.
    pub(super) data_dir: Option<String>,
}

/// The checkpoint and the optimizer state of the same epoch: `optim`, or
/// `optim.prev` when the run stopped after the first was written and before
/// the checkpoint was.
pub(super) fn load_resume(paths: &RunPaths, cfg: &TrainConfig, layout: &Layout) -> Result<Resumed> {
    let ck = load_checkpoint(&paths.checkpoint)?;
    if ck.layout.config != layout.config {
        return Err(Error::Checkpoint {
            path: paths.checkpoint.clone(),
            problem: format!("model {:?} differs from the requested {:?}", ck.layout.config, layout.config),
        });
    }
    let ck_epoch: Option<usize> = ck.metadata.get("epoch").and_then(|v| v.parse().ok());
    let present: Vec<&PathBuf> = [&paths.optim, &paths.optim_prev].into_iter().filter(|p| p.exists()).collect();
    if present.is_empty() {
        return Err(Error::io(&paths.optim, std::io::ErrorKind::NotFound.into()));
    }
    let mut found = Vec::new();
    for path in present {
        let state = read_optim(path, cfg, layout)?;
        if Some(state.epochs_done) == ck_epoch {
            return Ok(Resumed {
                params: ck.params,
                opt: state.opt,
                epochs_done: state.epochs_done,
                shards: state.shards,
                data_dir: state.data_dir,
            });
        }
        found.push(format!("{} is for epoch {}", path.display(), state.epochs_done));
    }
    Err(Error::Checkpoint {
        path: paths.checkpoint.clone(),
        problem: format!("no optimizer state matches this checkpoint's epoch {ck_epoch:?}: {}", found.join(", ")),
    })
}

struct OptimState {
    opt: Optimizer,
    epochs_done: usize,
    shards: usize,
    data_dir: Option<String>,
}

/// One optimizer-state file, refused when its run had other settings.
fn read_optim(path: &Path, cfg: &TrainConfig, layout: &Layout) -> Result<OptimState> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |p: String| Error::Checkpoint { path: path.to_path_buf(), problem: p };
    let (meta, saved) = optim_metadata(path, &bytes)?;
    let get = |k: &str| meta.get(k).cloned().ok_or_else(|| bad(format!("metadata {k} missing")));
    // The shard count stays with the run; the data directory may be spelt
    // another way, so the data are compared by their digest below.
    let comparable = TrainConfig {
        shards: saved.shards,
        data_dir: saved.data_dir.clone(),
        data_digest: saved.data_digest.clone(),
        evaluation: saved.evaluation.clone(),
        ..cfg.clone()
    };
    if saved != comparable {
        return Err(bad(format!(
            "the run in this directory was trained with different settings; resume needs the same flags.\n  saved:     {}\n  requested: {}",
            serde_json::to_string(&saved).unwrap_or_default(),
            serde_json::to_string(cfg).unwrap_or_default()
        )));
    }
    if let (Some(was), Some(now)) = (&saved.data_digest, &cfg.data_digest) {
        if was != now {
            let hint =
                saved.data_dir.as_ref().map(|d| format!(" (it was started with --data {d})")).unwrap_or_default();
            return Err(Error::Config(format!(
                "--data: these training images (digest {now}) are not the ones the run in {} was trained on{hint}",
                path.parent().unwrap_or(path).display()
            )));
        }
    }
    let epochs_done: usize = get("epochs_done")?.parse().map_err(|_| bad("epochs_done is not an integer".into()))?;
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
    Ok(OptimState { opt, epochs_done, shards: saved.shards, data_dir: saved.data_dir })
}

/// Keep only the log lines of epochs already in the checkpoint.
pub(super) fn truncate_log(path: &Path, epochs_done: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: String = text
        .lines()
        .filter(|l| serde_json::from_str::<EpochLog>(l).map(|e| e.epoch <= epochs_done).unwrap_or(false))
        .map(|l| format!("{l}\n"))
        .collect();
    atomic_write(path, kept.as_bytes())
}

pub(super) fn append_log(path: &Path, line: &EpochLog) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io(path, e))?;
    writeln!(f, "{}", serde_json::to_string(line).expect("log serialises")).map_err(|e| Error::io(path, e))
}
