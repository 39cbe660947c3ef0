//! # iwtvae
//!
//! Importance Weighted Transformer VAEs: a VAE whose latent space splits into
//! z (what is drawn) and u (where and how: an affine or thin-plate-spline
//! warp applied by a bilinear grid sampler to the decoder's upright image),
//! trained with the IWAE bound and evaluated by importance-sampled NLL.
//!
//! The CPU path in this crate is the executable specification: plain loops
//! over rows, generic over f32 (training) and f64 (gradient checks).
//!
//! The `iwtvae` command covers the usual work (train, eval, reproduce, show,
//! probe, encode, compare); the library is the same pieces. Train the seed's
//! IW-TVAE-TPS, here scaled down to a moment's work, then estimate its NLL:
//!
//! ```
//! use iwtvae::data::{Binarize, Dataset, Split};
//! use iwtvae::eval::{evaluate, EvalOptions, Precision};
//! use iwtvae::network::Network;
//! use iwtvae::train::{train, Silent, TrainConfig};
//!
//! # fn main() -> iwtvae::Result<()> {
//! let mnist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
//! let cfg = TrainConfig { hidden: 32, epochs: 1, limit_train: Some(300), ..TrainConfig::seed_protocol() };
//! let data = Dataset::load(&mnist, Split::Train, cfg.limit_train)?;
//! let run = tempfile::tempdir().expect("a temporary directory");
//! // Checkpoint, optimizer state, config.json and log.jsonl go to the run directory.
//! let trained = train(&cfg, &data, run.path(), false, &mut Silent)?;
//!
//! let test = Dataset::load(&mnist, Split::Test, Some(10))?;
//! let net = Network::<f32>::new(trained.layout);
//! // With the k = 100 bound, the bounds at k = 1 and 10 from the same samples.
//! let bounds = vec![1, 10];
//! let opts = EvalOptions { k: 100, chunk: 100, binarize: Binarize::Dynamic, seed: 1, precision: Precision::Fp32, bounds };
//! let (report, per_image) = evaluate(&net, &trained.params, &test, &opts)?;
//! assert_eq!(per_image.len(), 10);
//! assert!(report.nll > 0.0 && report.nll <= report.elbo); // the IWAE bound is the tighter
//! assert_eq!(report.bounds[0].nll, report.elbo); // L_1 is the ELBO
//! assert!(report.nll <= report.bounds[1].nll && report.bounds[1].nll <= report.elbo);
//! # Ok(())
//! # }
//! ```
pub mod compare;
pub mod cuda;
pub mod data;
pub mod device;
pub mod encode;
pub mod error;
pub mod eval;
pub mod fsutil;
pub mod model;
pub mod network;
pub mod objective;
pub mod ops;
pub mod optim;
pub mod probe;
pub mod real;
pub mod reproduce;
pub mod rng;
pub mod train;
pub mod viz;

pub use error::{Error, Result};
pub use real::Real;
