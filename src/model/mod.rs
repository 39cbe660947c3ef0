//! The model's definition: configuration, parameter layout and checkpoints.
pub mod checkpoint;
pub mod config;
pub mod params;

pub use config::{ModelConfig, Transform};
pub use params::{init_params, Layout, LinearSlot};
