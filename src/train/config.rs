//! Everything that determines a training run, as flags and as the run's
//! config.json; checked before any work starts.
use crate::data::Binarize;
use crate::error::{Error, Result};
use crate::model::ModelConfig;
use crate::objective::Objective;
use crate::optim::{OptimizerKind, Schedule};
use serde::{Deserialize, Serialize};

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
    /// The arithmetic of the GPU's layer GEMMs: "fp32" (the default; the
    /// CPU's only arithmetic) or "tf32" (tensor cores, as PyTorch's
    /// allow_tf32; GPU only).
    #[serde(default = "fp32")]
    pub precision: String,
    /// The data directory the run was started with (`--data`), where the
    /// CLI knows it: `train --resume` reads it when `--data` is not given.
    /// Not compared on resume (a path may be spelt many ways); the digest is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    /// `Dataset::digest` of the training images, set when training starts; a
    /// resume on images with another digest is refused. Absent in runs from
    /// before it was kept, which resume unchecked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_digest: Option<String>,
    /// How the CLI evaluates the run (its final NLL, the per-epoch test
    /// bound), kept so that `train --resume` evaluates as the run was set up
    /// to. Changes no training bit, so it is not compared on resume. Absent
    /// in runs from before it was kept, and where the library is called
    /// directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<EvaluationSettings>,
}

/// `train --eval-k`, `--test-every`, `--test-k` and `--test-limit`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct EvaluationSettings {
    pub eval_k: usize,
    pub test_every: usize,
    pub test_k: Option<usize>,
    pub test_limit: Option<usize>,
}

fn fp32() -> String {
    "fp32".into()
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
            precision: "fp32".into(),
            data_dir: None,
            data_digest: None,
            evaluation: None,
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
        self.gemm_math()?;
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::Config(format!("--lr {} must be a positive number", self.lr)));
        }
        Ok(())
    }
}

impl TrainConfig {
    /// Whether `device` can train with these settings: the CPU's GEMMs are
    /// fp32 only.
    pub fn check_device(&self, device: crate::device::Device) -> Result<()> {
        if matches!(device, crate::device::Device::Cpu) && self.gemm_math()? != crate::cuda::linear::GemmMath::Fp32 {
            return Err(Error::Config(format!(
                "--precision {} trains on the GPU only (--device cuda); the CPU path is fp32",
                self.precision
            )));
        }
        Ok(())
    }

    /// `--precision`, parsed: the GEMM arithmetic of a GPU run.
    pub fn gemm_math(&self) -> Result<crate::cuda::linear::GemmMath> {
        use crate::cuda::linear::GemmMath;
        match self.precision.as_str() {
            "fp32" => Ok(GemmMath::Fp32),
            "tf32" => Ok(GemmMath::Tf32),
            o => Err(Error::Config(format!("--precision {o:?}: training runs in fp32 or tf32"))),
        }
    }
}

pub fn parse_binarize(s: &str) -> Result<Binarize> {
    match s {
        "dynamic" => Ok(Binarize::Dynamic),
        "none" => Ok(Binarize::None),
        o => Err(Error::Config(format!("--binarize {o:?}: expected dynamic or none"))),
    }
}
