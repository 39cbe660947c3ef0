//! # iwtvae
//!
//! Importance Weighted Transformer VAEs: a VAE whose latent space splits into
//! z (what is drawn) and u (where and how: an affine or thin-plate-spline
//! warp applied by a bilinear grid sampler to the decoder's upright image),
//! trained with the IWAE bound and evaluated by importance-sampled NLL.
//!
//! The CPU path in this crate is the executable specification: plain loops
//! over rows, generic over f32 (training) and f64 (gradient checks).
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
