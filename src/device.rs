//! The one place that decides where work runs.
//!
//! A build carries CUDA kernels when build.rs found nvcc (`cfg(iwtvae_cuda)`);
//! the driver is loaded dynamically at run time, so one binary runs on
//! machines with and without a GPU. cudarc panics when libcuda is missing,
//! so every use is preceded by a probe that cannot panic.
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(usize),
    /// The CUDA backend with its kernels run by the CPU emulator
    /// (crates/cuda-emu): slow, for checking the GPU path without a GPU.
    Emulated,
}

impl Device {
    pub fn name(self) -> String {
        match self {
            Device::Cpu => "cpu".into(),
            Device::Cuda(i) => format!("cuda:{i}"),
            Device::Emulated => "emulated".into(),
        }
    }
}

/// Whether this build carries the CUDA kernels.
pub const CUDA_KERNELS: bool = cfg!(iwtvae_cuda);

/// How many CUDA devices the driver reports; 0 without a driver (never panics).
pub fn cuda_device_count() -> usize {
    // SAFETY: only tries to dlopen libcuda / nvcuda; nothing is called yet.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return 0;
    }
    std::panic::catch_unwind(|| cudarc::driver::CudaContext::device_count().unwrap_or(0)).unwrap_or(0).max(0) as usize
}

/// The outcome of `--device`: where to run, and a line to tell the user.
pub struct Selection {
    pub device: Device,
    pub note: Option<String>,
}

/// Resolve `--device` (`cpu`, `auto`, `cuda[:i]`, or `emulated`).
pub fn select(spec: &str) -> Result<Selection> {
    let cuda_index = |s: &str| -> Result<usize> {
        match s.strip_prefix("cuda") {
            Some("") => Ok(0),
            Some(rest) => rest
                .strip_prefix(':')
                .and_then(|i| i.parse().ok())
                .ok_or_else(|| Error::Device(format!("--device {s:?}: expected cuda or cuda:<index>"))),
            None => Err(Error::Device(format!("--device {s:?}: expected auto, cpu, cuda[:i] or emulated"))),
        }
    };
    match spec {
        "cpu" => Ok(Selection { device: Device::Cpu, note: None }),
        "emulated" => {
            crate::cuda::Gpu::emulated()?;
            let note = "running the CUDA kernels in the CPU emulator (slow: for checking the GPU path without a GPU)";
            Ok(Selection { device: Device::Emulated, note: Some(note.into()) })
        }
        "auto" => {
            let gpus = if CUDA_KERNELS { cuda_device_count() } else { 0 };
            let why = if !CUDA_KERNELS {
                "this build has no CUDA kernels (nvcc was not found at build time)".to_string()
            } else if gpus == 0 {
                "no CUDA GPU found".to_string()
            } else {
                match try_open(0) {
                    Ok(()) => return Ok(Selection { device: Device::Cuda(0), note: None }),
                    Err(e) => format!("{e} (--device cuda would stop here)"),
                }
            };
            Ok(Selection { device: Device::Cpu, note: Some(format!("running on the CPU: {why}")) })
        }
        s => {
            let i = cuda_index(s)?;
            if !CUDA_KERNELS {
                return Err(Error::Device(format!(
                    "--device {s}: this build has no CUDA kernels (nvcc was not found at build time; run scripts/install-cuda.sh and rebuild)"
                )));
            }
            let n = cuda_device_count();
            if i >= n {
                return Err(Error::Device(format!("--device {s}: no usable CUDA GPU at index {i} ({n} found)")));
            }
            try_open(i).map_err(|e| Error::Device(format!("--device {s}: {e}")))?;
            Ok(Selection { device: Device::Cuda(i), note: None })
        }
    }
}

/// Opens GPU `i` (context, stream, every kernel module) and lets it go, so
/// that a GPU the driver lists but cannot run our kernels on (a driver older
/// than the PTX, a busy exclusive-mode GPU, a driver library without a
/// function cudarc expects, on which cudarc panics) is found here, before
/// any work, with the reason.
fn try_open(i: usize) -> Result<()> {
    match std::panic::catch_unwind(|| crate::cuda::Gpu::new(i)) {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Error::Device(format!("GPU {i} could not be opened: {e}"))),
        Err(_) => {
            Err(Error::Device(format!("GPU {i} could not be opened: the CUDA driver library failed (cudarc panicked)")))
        }
    }
}
