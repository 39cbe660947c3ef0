//! The one place that decides where work runs.
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
}

impl Device {
    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
        }
    }
}

/// Resolve `--device`: `cpu`, `auto`, or `cuda[:i]`. This build has no CUDA
/// backend yet, so `auto` is the CPU and `cuda` is a clear error.
pub fn select(spec: &str) -> Result<Device> {
    match spec {
        "cpu" | "auto" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            Err(Error::Device(format!("--device {s}: this build has no CUDA backend yet; use --device cpu or auto")))
        }
        s => Err(Error::Device(format!("--device {s:?}: expected auto, cpu or cuda[:i]"))),
    }
}
