//! The CUDA backend: kernels/*.cu on a GPU (compiled by build.rs into
//! fatbins when it found nvcc: `cfg(iwtvae_cuda)`; sm_80, sm_90 SASS and
//! compute_90 PTX, loaded once per context), or the same kernel sources on
//! the CPU emulator (crates/cuda-emu, the default `emulator` feature).
//! `driver` hides which; everything here is written once for both, so the
//! emulator runs this code in CI exactly as a GPU would.
//!
//! Every kernel has one typed wrapper that checks shapes before the unsafe
//! launch and passes explicit i32/u32/i64/f32 arguments (cudarc does not
//! check argument types; the emulator does). The wrappers in this file take
//! and return host slices: they are the units the parity tests compare with
//! the CPU spec; the device-resident pipeline (training engine, fused
//! evaluator) builds on the same kernels.
use crate::error::{Error, Result};
use crate::rng::NoiseKey;
use cudarc::driver::LaunchConfig;
pub use driver::Device;

/// (module, fatbin, kernels).
#[cfg(iwtvae_cuda)]
macro_rules! fatbin {
    ($name:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/", $name, ".fatbin"))
    };
}

/// CUDA's limit on gridDim.y (and z).
const MAX_GRID_Y: usize = 65_535;

#[cfg(iwtvae_cuda)]
const MODULES: driver::ModuleTable = &[
    ("philox", fatbin!("philox"), &["philox_uniforms", "philox_normals", "philox_targets"]),
    ("grid_sample", fatbin!("grid_sample"), &["grid_sample_fwd", "grid_sample_bwd"]),
    ("grid", fatbin!("grid"), &["grid_fwd"]),
    ("logsumexp", fatbin!("logsumexp"), &["iwae_weights", "lse_fold", "bound_fold", "objective_terms", "mean_into"]),
    ("optim", fatbin!("optim"), &["adadelta_step", "adam_step_dev", "count_step", "batch_items", "record_step"]),
    (
        "linear",
        fatbin!("linear"),
        &[
            "linear_fwd",
            "linear_fwd_tf32",
            "linear_fwd_bf16",
            "gemm_strided",
            "gemm_splitk",
            "gemm_partial",
            "splitk_sum",
            "col_sum",
            "linear_fwd_tile_tf32",
            "gemm_strided_tf32",
            "gemm_splitk_tf32",
            "gemm_partial_tf32",
        ],
    ),
    ("decode_row", fatbin!("decode_row"), &["decode_row_fwd", "decode_row_bwd"]),
    ("latent", fatbin!("latent"), &["encoder_heads", "latent_bwd"]),
    (
        "nll_fused",
        fatbin!("nll_fused"),
        &["nll_fc3_fused", "nll_fc3_tf32", "nll_fc3_bf16", "reparam_latents", "add_theta_id"],
    ),
];

mod backward;
pub mod driver;
mod eval;
mod forward;
pub mod linear;
pub mod shapes;
pub mod train;

/// The backend's kernels on one device: a GPU, or the kernel emulator.
pub struct Gpu {
    device: Device,
    /// The blocks a GEMM with few output tiles is split K to reach
    /// (linear.rs; 0: never split).
    split_target: usize,
    /// fp32 FMAs or TF32 tensor cores for those GEMMs (linear.rs).
    gemm_math: linear::GemmMath,
    /// A split GEMM's sum in a launch of its own (IWTVAE_SPLITK_TWO_PASS;
    /// linear.rs): the same bits, one launch more.
    splitk_two_pass: bool,
}

impl Gpu {
    /// Open GPU `ordinal`; an error (never a panic) when there is none or
    /// the build has no kernels.
    pub fn new(ordinal: usize) -> Result<Self> {
        #[cfg(iwtvae_cuda)]
        return Ok(Gpu::with(Device::cuda(ordinal, MODULES)?));
        #[cfg(not(iwtvae_cuda))]
        Err(Error::Device(format!("cuda:{ordinal}: this build has no CUDA kernels (nvcc was not found at build time)")))
    }

    /// The same kernels run by the CPU emulator (crates/cuda-emu).
    pub fn emulated() -> Result<Self> {
        Ok(Gpu::with(Device::emulated()?))
    }

    fn with(device: Device) -> Self {
        let split_target =
            if std::env::var_os("IWTVAE_NO_SPLIT_K").is_some() { 0 } else { linear::SPLIT_TARGET_BLOCKS };
        let splitk_two_pass = std::env::var_os("IWTVAE_SPLITK_TWO_PASS").is_some();
        Gpu { device, split_target, gemm_math: linear::GemmMath::Fp32, splitk_two_pass }
    }

    /// The blocks a GEMM with few output tiles is split K to reach (0:
    /// never split; linear::SPLIT_TARGET_BLOCKS unless IWTVAE_NO_SPLIT_K is
    /// set). Results differ by rounding only.
    pub fn set_split_target(&mut self, blocks: usize) {
        self.split_target = blocks;
    }

    pub fn split_target(&self) -> usize {
        self.split_target
    }

    /// A split GEMM's sum by the tiles' last blocks (false, the default) or
    /// by a second launch (true). The same bits either way.
    pub fn set_splitk_two_pass(&mut self, on: bool) {
        self.splitk_two_pass = on;
    }

    /// The arithmetic of the layers' GEMMs (`linear` and its backward):
    /// fp32 unless set.
    pub fn set_gemm_math(&mut self, math: linear::GemmMath) {
        self.gemm_math = math;
    }

    /// The GPU for `Device::Cuda(i)`, or the emulator for `Device::Emulated`.
    pub fn open(device: crate::device::Device) -> Result<Self> {
        match device {
            crate::device::Device::Cuda(i) => Self::new(i),
            crate::device::Device::Emulated => Self::emulated(),
            crate::device::Device::Cpu => Err(Error::Device("the CPU path does not run kernels".into())),
        }
    }

    pub fn device_name(&self) -> String {
        self.device.name()
    }

    /// "cuda" or "emulated".
    pub fn kind(&self) -> &'static str {
        self.device.kind()
    }

    fn blocks(n: usize, threads: usize) -> u32 {
        n.div_ceil(threads).max(1) as u32
    }

    /// One thread per pixel (256 per block) along x, one row per blockIdx.y;
    /// CUDA caps gridDim.y at 65,535, so more rows are a shape error here
    /// rather than a launch failure on the device.
    fn pixels_by_rows(op: &'static str, d: usize, rows: usize, shared_bytes: usize) -> Result<LaunchConfig> {
        Self::check(op, rows <= MAX_GRID_Y, format!("{rows} rows, at most {MAX_GRID_Y} per launch"))?;
        Ok(LaunchConfig {
            grid_dim: (Self::blocks(d, 256), rows as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: shared_bytes as u32,
        })
    }

    fn check(op: &'static str, ok: bool, detail: String) -> Result<()> {
        if ok {
            Ok(())
        } else {
            Err(Error::Shape { op, detail })
        }
    }

    /// `out[r, d]` for r = b·k + s: uniforms of (`items[b]`, sample0 + s, d).
    pub fn philox(
        &self,
        normals: bool,
        key: NoiseKey,
        items: &[u32],
        k: usize,
        sample0: usize,
        dims: usize,
    ) -> Result<Vec<f32>> {
        let rows = items.len() * k;
        Self::check(
            "philox",
            rows > 0 && dims > 0 && rows * dims < i32::MAX as usize,
            format!("{rows} rows × {dims}"),
        )?;
        let s = &self.device;
        let d_items = s.htod(items)?;
        let mut out = s.alloc_zeros::<f32>(rows * dims)?;
        let (k0, k1, hi) = key.words();
        let (rows_i, k_i, s0_i, dims_i) = (rows as i32, k as i32, sample0 as i32, dims as i32);
        let threads = 256;
        let cfg = LaunchConfig {
            grid_dim: (Self::blocks(rows * dims.div_ceil(4), threads), 1, 1),
            block_dim: (threads as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = s.launcher(if normals { "philox_normals" } else { "philox_uniforms" });
        b.arg(&mut out).arg(&d_items).arg(&rows_i).arg(&k_i).arg(&s0_i).arg(&dims_i).arg(&k0).arg(&k1).arg(&hi);
        // SAFETY: out holds rows·dims f32, items holds rows / k u32; the kernel
        // writes out[r·dims + d] for r < rows, d < dims and reads items[r / k].
        unsafe { b.launch(cfg) }?;
        s.dtoh(&out)
    }

    /// `out[r, p] = bilinear(c[r], xs[r, p], ys[r, p])` for rows of `[h·w]`.
    pub fn grid_sample_fwd(&self, c: &[f32], xs: &[f32], ys: &[f32], h: usize, w: usize) -> Result<Vec<f32>> {
        let d = h * w;
        Self::check(
            "grid_sample_fwd",
            h >= 2
                && w >= 2
                && !c.is_empty()
                && c.len().is_multiple_of(d)
                && xs.len() == c.len()
                && ys.len() == c.len(),
            format!("c {} xs {} ys {} for {h}x{w}", c.len(), xs.len(), ys.len()),
        )?;
        let rows = c.len() / d;
        let cfg = Self::pixels_by_rows("grid_sample_fwd", d, rows, 0)?;
        let s = &self.device;
        let (dc, dx, dy) = (s.htod(c)?, s.htod(xs)?, s.htod(ys)?);
        let mut out = s.alloc_zeros::<f32>(c.len())?;
        let (rows_i, h_i, w_i) = (rows as i32, h as i32, w as i32);
        let mut b = s.launcher("grid_sample_fwd");
        b.arg(&dc).arg(&dx).arg(&dy).arg(&mut out).arg(&rows_i).arg(&h_i).arg(&w_i);
        // SAFETY: every buffer holds rows·h·w f32; the kernel indexes row
        // blockIdx.y < rows and pixels < h·w, and footprint() clamps reads.
        unsafe { b.launch(cfg) }?;
        s.dtoh(&out)
    }

    /// Backward of `grid_sample_fwd`: (dc, dxs, dys).
    #[allow(clippy::type_complexity)]
    pub fn grid_sample_bwd(
        &self,
        c: &[f32],
        xs: &[f32],
        ys: &[f32],
        dout: &[f32],
        h: usize,
        w: usize,
    ) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        let d = h * w;
        Self::check(
            "grid_sample_bwd",
            h >= 2
                && w >= 2
                && !c.is_empty()
                && c.len().is_multiple_of(d)
                && [xs.len(), ys.len(), dout.len()].iter().all(|&l| l == c.len()),
            format!("c {} xs {} ys {} dout {} for {h}x{w}", c.len(), xs.len(), ys.len(), dout.len()),
        )?;
        let rows = c.len() / d;
        let cfg = Self::pixels_by_rows("grid_sample_bwd", d, rows, 0)?;
        let s = &self.device;
        let (dcin, dx, dy, dg) = (s.htod(c)?, s.htod(xs)?, s.htod(ys)?, s.htod(dout)?);
        let mut dc = s.alloc_zeros::<f32>(c.len())?;
        let mut dxs = s.alloc_zeros::<f32>(c.len())?;
        let mut dys = s.alloc_zeros::<f32>(c.len())?;
        let (rows_i, h_i, w_i) = (rows as i32, h as i32, w as i32);
        let mut b = s.launcher("grid_sample_bwd");
        b.arg(&dcin)
            .arg(&dx)
            .arg(&dy)
            .arg(&dg)
            .arg(&mut dc)
            .arg(&mut dxs)
            .arg(&mut dys)
            .arg(&rows_i)
            .arg(&h_i)
            .arg(&w_i);
        // SAFETY: as grid_sample_fwd; dc, dxs, dys hold rows·h·w f32.
        unsafe { b.launch(cfg) }?;
        Ok((s.dtoh(&dc)?, s.dtoh(&dxs)?, s.dtoh(&dys)?))
    }

    /// Grids for rows of θ [rows, 2·nb] against a basis [d, nb] (the CPU's
    /// `Warp::basis` layout; the kernel reads it by function, [nb, d]).
    pub fn grid_fwd(&self, basis: &[f32], theta: &[f32], d: usize, nb: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        Self::check(
            "grid_fwd",
            nb > 0 && basis.len() == d * nb && !theta.is_empty() && theta.len().is_multiple_of(2 * nb),
            format!("basis {} theta {} for d {d}, nb {nb}", basis.len(), theta.len()),
        )?;
        let rows = theta.len() / (2 * nb);
        let cfg = Self::pixels_by_rows("grid_fwd", d, rows, 2 * nb * 4)?;
        let s = &self.device;
        let by_function: Vec<f32> = (0..nb * d).map(|i| basis[(i % d) * nb + i / d]).collect();
        let (db, dt) = (s.htod(&by_function)?, s.htod(theta)?);
        let mut xs = s.alloc_zeros::<f32>(rows * d)?;
        let mut ys = s.alloc_zeros::<f32>(rows * d)?;
        let (rows_i, d_i, nb_i) = (rows as i32, d as i32, nb as i32);
        let mut b = s.launcher("grid_fwd");
        b.arg(&db).arg(&dt).arg(&mut xs).arg(&mut ys).arg(&rows_i).arg(&d_i).arg(&nb_i);
        // SAFETY: basis [nb, d], theta [rows, 2nb], xs/ys [rows, d]; shared
        // memory holds the row's 2nb θ values.
        unsafe { b.launch(cfg) }?;
        Ok((s.dtoh(&xs)?, s.dtoh(&ys)?))
    }

    /// Per image: logsumexp of its k log-weights and −w̃·scale (the IWAE coefficients).
    pub fn iwae_weights(&self, logw: &[f32], k: usize, scale: f32) -> Result<(Vec<f32>, Vec<f32>)> {
        Self::check(
            "iwae_weights",
            k > 0 && !logw.is_empty() && logw.len().is_multiple_of(k),
            format!("{} values, k {k}", logw.len()),
        )?;
        let images = logw.len() / k;
        let s = &self.device;
        let dl = s.htod(logw)?;
        let mut lse = s.alloc_zeros::<f32>(images)?;
        let mut coef = s.alloc_zeros::<f32>(logw.len())?;
        let (im_i, k_i) = (images as i32, k as i32);
        let warps_per_block = 8;
        let cfg = LaunchConfig {
            grid_dim: (Self::blocks(images, warps_per_block), 1, 1),
            block_dim: (32 * warps_per_block as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = s.launcher("iwae_weights");
        b.arg(&dl).arg(&mut lse).arg(&mut coef).arg(&im_i).arg(&k_i).arg(&scale);
        // SAFETY: logw and coef hold images·k f32, lse images f32; one warp per image.
        unsafe { b.launch(cfg) }?;
        Ok((s.dtoh(&lse)?, s.dtoh(&coef)?))
    }

    /// One Adadelta step (torch semantics) on host buffers; whether a
    /// gradient was not finite.
    pub fn adadelta_step(
        &self,
        params: &mut [f32],
        grads: &[f32],
        sq: &mut [f32],
        acc: &mut [f32],
        lr: f32,
    ) -> Result<bool> {
        let n = params.len();
        Self::check(
            "adadelta_step",
            grads.len() == n && sq.len() == n && acc.len() == n,
            format!("lengths {n}/{}/{}/{}", grads.len(), sq.len(), acc.len()),
        )?;
        let s = &self.device;
        let mut dp = s.htod(params)?;
        let dg = s.htod(grads)?;
        let mut dsq = s.htod(sq)?;
        let mut dacc = s.htod(acc)?;
        let n_i = n as i64;
        let cfg = LaunchConfig {
            grid_dim: (Self::blocks(n, 256).min(4096), 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut bad = s.alloc_zeros::<i32>(1)?;
        let mut b = s.launcher("adadelta_step");
        b.arg(&mut dp).arg(&dg).arg(&mut dsq).arg(&mut dacc).arg(&n_i).arg(&lr).arg(&mut bad);
        // SAFETY: all four buffers hold n f32, bad one i32; the kernel
        // grid-strides over n.
        unsafe { b.launch(cfg) }?;
        s.memcpy_dtoh(&dp, params)?;
        s.memcpy_dtoh(&dsq, sq)?;
        s.memcpy_dtoh(&dacc, acc)?;
        Ok(s.dtoh(&bad)?[0] != 0)
    }
}
