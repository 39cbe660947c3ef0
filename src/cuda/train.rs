//! Training on the GPU: the order of operations of `Network::{encode, decode,
//! backward}` and `objective::loss_and_coefficients`, written over the
//! kernels, with every buffer resident on the device. The dataset's bytes
//! are uploaded once; a step reads only its batch's item indices.
//!
//! A full batch is captured once per epoch as a CUDA graph (the epoch fixes
//! the noise keys and the learning rate) and replayed every step, so batch
//! 100 is not bound by ~40 kernel launches per step; a smaller last batch
//! runs the same launches directly. Step losses go to a device array read
//! back every few steps for the progress bar and in full at the epoch's end.
use super::driver::DevBuf;
use super::driver::Graph;
use super::forward::{cfg1, EncoderBufs};
use super::linear::{self, InputGrad};
use super::shapes::ROW_THREADS;
use super::Gpu;
use crate::data::{Binarize, Dataset};
use crate::error::{Error, Result};
use crate::model::{Layout, LinearSlot, Transform};
use crate::network::Network;
use crate::objective::Objective;
use crate::optim::{Optimizer, OptimizerKind};
use crate::rng::NoiseKey;
use crate::train::{Engine, EpochPlan, Progress, TrainConfig};
use cudarc::driver::LaunchConfig;

/// Steps between progress read-backs (each one waits for the GPU).
const PROGRESS_EVERY: usize = 25;

/// Model dimensions as the kernels take them.
#[derive(Clone, Copy)]
struct Dims {
    d: usize,
    hd: usize,
    z: usize,
    u: usize,
    t: usize,
    nb: usize,
    h: usize,
    w: usize,
    k: usize,
}

/// Every device buffer of one step, sized for the full batch.
struct Buffers {
    images: DevBuf<u8>,
    items: DevBuf<u32>,
    x: DevBuf<f32>,
    enc: EncoderBufs,
    eps: DevBuf<f32>,
    eta: DevBuf<f32>,
    z: DevBuf<f32>,
    u: DevBuf<f32>,
    lw_latent: DevBuf<f32>,
    theta: DevBuf<f32>,
    d1: DevBuf<f32>,
    d2: DevBuf<f32>,
    /// Decoder logits, then c (sigmoid in place).
    c: DevBuf<f32>,
    logpx: DevBuf<f32>,
    logw: DevBuf<f32>,
    img_loss: DevBuf<f32>,
    coef_px: DevBuf<f32>,
    coef_w: DevBuf<f32>,
    coef_dlat: DevBuf<f32>,
    dc: DevBuf<f32>,
    dtheta: DevBuf<f32>,
    dd1: DevBuf<f32>,
    dd2: DevBuf<f32>,
    dz: DevBuf<f32>,
    du: DevBuf<f32>,
    /// The heads' gradient [b, 2Z + 2U] = [dμz | dlog σz | dμu | dlog σu].
    dheads: DevBuf<f32>,
    dh1: DevBuf<f32>,
    dh2: DevBuf<f32>,
    /// The warp basis by function, [nb, D] (`Warp::basis_by_function`).
    basis: DevBuf<f32>,
    theta_id: DevBuf<f32>,
    params: DevBuf<f32>,
    grads: DevBuf<f32>,
    /// Split-K partials of the step's GEMMs (linear.rs).
    gemm: DevBuf<f32>,
    s1: DevBuf<f32>,
    s2: DevBuf<f32>,
    /// Adam's step count (read by adam_step_dev).
    opt_steps: DevBuf<i64>,
    /// The step's loss, and 1 when a gradient was not finite.
    loss: DevBuf<f32>,
    bad: DevBuf<i32>,
    /// Per step of the epoch: loss and the non-finite flag.
    loss_hist: DevBuf<f32>,
    bad_hist: DevBuf<i32>,
    /// The epoch's permutation of the training images, and the step of the
    /// epoch that the next `batch_items` reads (`record_step` advances it).
    perm: DevBuf<u32>,
    step: DevBuf<i32>,
}

/// The ops of one training step, in order; each is one unit of the kernel
/// benches (benches/kernels.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepOp {
    /// Philox binarization of the batch's images.
    Targets,
    /// Encoder: two ReLU layers and the heads (tiled GEMM + bias/ReLU epilogue).
    Encoder,
    /// ε, η (Philox + Box–Muller) and the reparameterisation.
    Latents,
    /// Decoder fc1, fc2, fc3 and u2theta (+ θ_id).
    DecoderLayers,
    /// Sigmoid, grid, bilinear sampling and BCE per row.
    DecodeRowFwd,
    /// logsumexp importance weights (or the ELBO's) and the loss.
    Objective,
    /// The row epilogue's backward to ∂logits and ∂θ.
    DecodeRowBwd,
    /// Decoder and u2theta weight, bias and input gradients.
    DecoderBackward,
    /// Reparameterisation, prior, entropy and KL backward.
    LatentBackward,
    /// Encoder heads and trunk backward.
    EncoderBackward,
    /// Gradient check and the optimizer step.
    Optimizer,
}

pub const STEP_OPS: [StepOp; 11] = [
    StepOp::Targets,
    StepOp::Encoder,
    StepOp::Latents,
    StepOp::DecoderLayers,
    StepOp::DecodeRowFwd,
    StepOp::Objective,
    StepOp::DecodeRowBwd,
    StepOp::DecoderBackward,
    StepOp::LatentBackward,
    StepOp::EncoderBackward,
    StepOp::Optimizer,
];

/// The GPU engine of `train::train_on`.
pub struct GpuEngine {
    gpu: Gpu,
    layout: Layout,
    dims: Dims,
    obj: Objective,
    binarize: Binarize,
    opt_kind: OptimizerKind,
    batch_size: usize,
    /// Replay full batches from a captured graph (IWTVAE_NO_CUDA_GRAPHS=1
    /// turns it off: same results, for telling a graph problem from a
    /// kernel problem).
    graphs: bool,
    /// Images in the permutation of the current epoch (`begin_epoch`).
    perm_len: usize,
    buf: Buffers,
}

impl GpuEngine {
    pub fn new(
        mut gpu: Gpu,
        layout: &Layout,
        cfg: &TrainConfig,
        data: &Dataset,
        params: &[f32],
        opt: &Optimizer,
    ) -> Result<Self> {
        let mc = layout.config;
        let net = Network::<f32>::new(layout.clone());
        let nb = if mc.transform == Transform::None { 0 } else { net.warp.nb };
        let dims = Dims {
            d: mc.pixels(),
            hd: mc.hidden,
            z: mc.z_dim,
            u: mc.u_dim,
            t: mc.theta_dim(),
            nb,
            h: mc.height,
            w: mc.width,
            k: cfg.k,
        };
        let smem = (4 * dims.d + 2 * nb) * 4;
        Gpu::check(
            "decode_row_bwd",
            smem <= 48 * 1024 && dims.t == 2 * nb,
            format!("{smem} bytes of shared memory for {} pixels, θ {} vs basis {nb}", dims.d, dims.t),
        )?;
        gpu.set_gemm_math(cfg.gemm_math()?);
        let s = &gpu.device;
        let (b, n) = (cfg.batch_size, cfg.batch_size * cfg.k);
        let f = |len: usize| s.alloc_zeros::<f32>(len.max(1));
        let steps = data.len().div_ceil(cfg.batch_size);
        let up = |v: &[f32]| s.htod(if v.is_empty() { &[0.0][..] } else { v });
        let (d, hd, z, u, t) = (dims.d, dims.hd, dims.z, dims.u, dims.t);
        let buf = Buffers {
            images: s.htod(&data.images)?,
            items: s.alloc_zeros::<u32>(b)?,
            x: f(b * d)?,
            enc: EncoderBufs::new(&gpu, layout, b)?,
            eps: f(n * z)?,
            eta: f(n * u)?,
            z: f(n * z)?,
            u: f(n * u)?,
            lw_latent: f(n)?,
            theta: f(n * t)?,
            d1: f(n * hd)?,
            d2: f(n * hd)?,
            c: f(n * d)?,
            logpx: f(n)?,
            logw: f(n)?,
            img_loss: f(b)?,
            coef_px: f(n)?,
            coef_w: f(n)?,
            coef_dlat: f(n)?,
            dc: f(n * d)?,
            dtheta: f(n * t)?,
            dd1: f(n * hd)?,
            dd2: f(n * hd)?,
            dz: f(n * z)?,
            du: f(n * u)?,
            dheads: f(b * layout.enc_heads.out)?,
            dh1: f(b * hd)?,
            dh2: f(b * hd)?,
            basis: up(if nb > 0 { net.warp.basis_by_function() } else { &[] })?,
            theta_id: up(&net.theta_id)?,
            params: s.htod(params)?,
            grads: f(layout.total)?,
            gemm: f(linear::scratch_len(layout, n, true, gpu.split_target()))?,
            s1: s.htod(&opt.s1)?,
            s2: s.htod(&opt.s2)?,
            opt_steps: s.htod(&[opt.steps as i64])?,
            loss: f(1)?,
            bad: s.alloc_zeros::<i32>(1)?,
            loss_hist: f(steps)?,
            bad_hist: s.alloc_zeros::<i32>(steps.max(1))?,
            perm: s.alloc_zeros::<u32>(data.len().max(1))?,
            step: s.alloc_zeros::<i32>(1)?,
        };
        Ok(GpuEngine {
            gpu,
            layout: layout.clone(),
            dims,
            obj: cfg.objective()?,
            binarize: cfg.binarize()?,
            opt_kind: OptimizerKind::parse(&cfg.optimizer)?,
            batch_size: cfg.batch_size,
            graphs: std::env::var_os("IWTVAE_NO_CUDA_GRAPHS").is_none(),
            perm_len: data.len(),
            buf,
        })
    }

    pub fn device_name(&self) -> String {
        self.gpu.device_name()
    }

    /// One whole step on `b` images already in `buf.items`: every launch of
    /// forward, objective, backward and optimizer, in stream order.
    fn step(&mut self, b: usize, keys: (NoiseKey, NoiseKey, NoiseKey), lr: f32) -> Result<()> {
        for op in STEP_OPS {
            self.run_op(op, b, keys, lr)?;
        }
        Ok(())
    }

    /// The launches of one op of the step.
    fn run_op(&mut self, op: StepOp, b: usize, plan_keys: (NoiseKey, NoiseKey, NoiseKey), lr: f32) -> Result<()> {
        let (bin_key, eps_key, eta_key) = plan_keys;
        let Dims { d, z, u, nb, h, w, k, .. } = self.dims;
        let n = b * k;
        let l = &self.layout;
        let g = &self.gpu;
        let s = &g.device;
        let bf = &mut self.buf;
        let (n_i, k_i, d_i, h_i, w_i, nb_i) = (n as i32, k as i32, d as i32, h as i32, w as i32, nb as i32);
        match op {
            StepOp::Targets => g.targets(&bf.images, &bf.items, b, d, self.binarize, bin_key, &mut bf.x)?,
            StepOp::Encoder => g.encode(l, &bf.params, &bf.x, b, &mut bf.enc, &mut bf.gemm)?,
            StepOp::Latents => {
                g.normals_into(eps_key, &bf.items, b, k, 0, z, &mut bf.eps)?;
                g.normals_into(eta_key, &bf.items, b, k, 0, u, &mut bf.eta)?;
                g.reparam(&bf.enc, &bf.eps, &bf.eta, n, k, (z, u), &mut bf.z, &mut bf.u, &mut bf.lw_latent)?;
            }
            StepOp::DecoderLayers => {
                g.linear(&bf.z, &bf.params, &l.dec_fc1, n, true, &mut bf.d1, &mut bf.gemm)?;
                g.linear(&bf.d1, &bf.params, &l.dec_fc2, n, true, &mut bf.d2, &mut bf.gemm)?;
                g.linear(&bf.d2, &bf.params, &l.dec_fc3, n, false, &mut bf.c, &mut bf.gemm)?;
                g.theta(l, &bf.params, &bf.u, n, &bf.theta_id, &mut bf.theta, &mut bf.gemm)?;
            }
            StepOp::DecodeRowFwd => {
                let (c, lpx, lw) = (&mut bf.c, &mut bf.logpx, &mut bf.logw);
                g.decode_rows(l, nb, c, &bf.theta, &bf.basis, &bf.x, &bf.lw_latent, n, k, lpx, lw)?;
            }
            StepOp::Objective => {
                {
                    let mode: i32 = match self.obj.bound() {
                        Objective::Iwae => 0,
                        Objective::Elbo => 1,
                        _ => 2,
                    };
                    let dreg = (self.obj == Objective::IwaeDreg) as i32;
                    let (b_i, z_i, u_i) = (b as i32, z as i32, u as i32);
                    let mut lb = s.launcher("objective_terms");
                    lb.arg(&bf.logw)
                        .arg(&bf.logpx)
                        .arg(&bf.enc.mu_z)
                        .arg(&bf.enc.ls_z)
                        .arg(&bf.enc.mu_u)
                        .arg(&bf.enc.ls_u);
                    lb.arg(&mut bf.img_loss).arg(&mut bf.coef_px).arg(&mut bf.coef_w).arg(&mut bf.coef_dlat);
                    lb.arg(&b_i).arg(&k_i).arg(&z_i).arg(&u_i).arg(&mode).arg(&dreg);
                    // SAFETY: logw, logpx, coefs hold n = b·k values, img_loss b, the
                    // posteriors b·Z and b·U; one warp per image.
                    unsafe { lb.launch(cfg1(32 * b, 256)) }?;
                    let mut lb = s.launcher("mean_into");
                    lb.arg(&bf.img_loss).arg(&mut bf.loss).arg(&b_i);
                    // SAFETY: img_loss holds b values, loss 1; one warp.
                    unsafe { lb.launch(cfg1(32, 32)) }?;
                }
            }
            StepOp::DecodeRowBwd => {
                {
                    let smem = ((4 * d + 2 * nb) * 4) as u32;
                    let cfg = LaunchConfig {
                        grid_dim: (n as u32, 1, 1),
                        block_dim: (ROW_THREADS as u32, 1, 1),
                        shared_mem_bytes: smem,
                    };
                    let mut lb = s.launcher("decode_row_bwd");
                    lb.arg(&bf.c).arg(&bf.theta).arg(&bf.basis).arg(&bf.x).arg(&bf.coef_px);
                    lb.arg(&mut bf.dc).arg(&mut bf.dtheta).arg(&n_i).arg(&k_i).arg(&d_i).arg(&h_i).arg(&w_i).arg(&nb_i);
                    // SAFETY: as decode_row_fwd; dc [n, D], dθ [n, 2nb]; shared memory
                    // 4D + 2nb f32 (checked ≤ 48 KiB in new()).
                    unsafe { lb.launch(cfg) }?;
                }
            }
            StepOp::DecoderBackward => {
                // Each dx goes through the ReLU of the layer below (dd2 is the
                // gradient at fc2's pre-activation, dd1 at fc1's).
                let p = &bf.params;
                let dd2 = InputGrad::through_relu(&mut bf.dd2, &bf.d2);
                g.linear_backward(&bf.d2, &bf.dc, n, &l.dec_fc3, p, &mut bf.grads, Some(dd2), &mut bf.gemm)?;
                let dd1 = InputGrad::through_relu(&mut bf.dd1, &bf.d1);
                g.linear_backward(&bf.d1, &bf.dd2, n, &l.dec_fc2, p, &mut bf.grads, Some(dd1), &mut bf.gemm)?;
                let dz = InputGrad::plain(&mut bf.dz);
                g.linear_backward(&bf.z, &bf.dd1, n, &l.dec_fc1, p, &mut bf.grads, Some(dz), &mut bf.gemm)?;
                if let Some(slot) = &l.u2theta {
                    let du = InputGrad::plain(&mut bf.du);
                    g.linear_backward(&bf.u, &bf.dtheta, n, slot, p, &mut bf.grads, Some(du), &mut bf.gemm)?;
                }
            }
            StepOp::LatentBackward => {
                let kl_scale = if self.obj == Objective::ElboKl { 1.0 / b as f32 } else { 0.0 };
                let ld = l.enc_heads.out;
                let path = self.obj.path_derivative();
                g.latent_bwd(
                    [&bf.enc.mu_z, &bf.enc.ls_z, &bf.enc.ls_z_raw, &bf.z, &bf.eps, &bf.dz, &bf.coef_w, &bf.coef_dlat],
                    &mut bf.dheads,
                    (ld, 0),
                    (b, k, z),
                    kl_scale,
                    false,
                    path,
                )?;
                if l.u_mu.is_some() {
                    g.latent_bwd(
                        [
                            &bf.enc.mu_u,
                            &bf.enc.ls_u,
                            &bf.enc.ls_u_raw,
                            &bf.u,
                            &bf.eta,
                            &bf.du,
                            &bf.coef_w,
                            &bf.coef_dlat,
                        ],
                        &mut bf.dheads,
                        (ld, 2 * z),
                        (b, k, u),
                        kl_scale,
                        true,
                        path,
                    )?;
                }
            }
            StepOp::EncoderBackward => {
                let (p, x) = (&bf.params, &bf.x);
                let dh2 = InputGrad::through_relu(&mut bf.dh2, &bf.enc.h2);
                g.linear_backward(&bf.enc.h2, &bf.dheads, b, &l.enc_heads, p, &mut bf.grads, Some(dh2), &mut bf.gemm)?;
                let dh1 = InputGrad::through_relu(&mut bf.dh1, &bf.enc.h1);
                g.linear_backward(&bf.enc.h1, &bf.dh2, b, &l.enc_fc2, p, &mut bf.grads, Some(dh1), &mut bf.gemm)?;
                g.linear_backward(x, &bf.dh1, b, &l.enc_fc1, p, &mut bf.grads, None, &mut bf.gemm)?;
            }
            StepOp::Optimizer => {
                let total = l.total as i64;
                let grid = LaunchConfig {
                    grid_dim: (Gpu::blocks(l.total, 256).min(2048), 1, 1),
                    block_dim: (256, 1, 1),
                    shared_mem_bytes: 0,
                };
                match self.opt_kind {
                    OptimizerKind::Adadelta => {
                        let mut lb = s.launcher("adadelta_step");
                        lb.arg(&mut bf.params).arg(&bf.grads).arg(&mut bf.s1).arg(&mut bf.s2).arg(&total).arg(&lr);
                        lb.arg(&mut bf.bad);
                        // SAFETY: the four vectors hold total f32, bad one i32; grid-stride loop.
                        unsafe { lb.launch(grid) }?;
                    }
                    OptimizerKind::Adam => {
                        let mut lb = s.launcher("count_step");
                        lb.arg(&mut bf.opt_steps);
                        // SAFETY: opt_steps holds one i64.
                        unsafe { lb.launch(cfg1(1, 1)) }?;
                        let mut lb = s.launcher("adam_step_dev");
                        lb.arg(&mut bf.params).arg(&bf.grads).arg(&mut bf.s1).arg(&mut bf.s2).arg(&total).arg(&lr);
                        lb.arg(&bf.opt_steps).arg(&mut bf.bad);
                        // SAFETY: as adadelta_step; opt_steps holds one i64.
                        unsafe { lb.launch(grid) }?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Steps in an epoch: batches of the permutation (the last may be short).
    fn epoch_steps(&self) -> usize {
        self.perm_len.div_ceil(self.batch_size).max(1)
    }

    /// Uploads the epoch's permutation and starts the step counter (and
    /// the non-finite flag, which stays set once a step sets it: the first
    /// flagged step is the one reported).
    fn begin_epoch(&mut self, perm: &[u32]) -> Result<()> {
        Gpu::check(
            "batch_items",
            !perm.is_empty() && perm.len() <= self.buf.perm.len(),
            format!("a permutation of {} images for a training set of {}", perm.len(), self.buf.perm.len()),
        )?;
        self.perm_len = perm.len();
        let s = &self.gpu.device;
        s.memcpy_htod(perm, &mut self.buf.perm.slice_mut(0..perm.len()))?;
        s.memset_zeros(&mut self.buf.step)?;
        s.memset_zeros(&mut self.buf.bad)?;
        s.memset_zeros(&mut self.buf.bad_hist)
    }

    /// One step of the epoch, `b` images: its batch from the permutation
    /// at the step counter, the step, and its loss and flag recorded.
    fn epoch_step(&mut self, b: usize, keys: (NoiseKey, NoiseKey, NoiseKey), lr: f32) -> Result<()> {
        let steps = self.epoch_steps();
        let bf = &mut self.buf;
        Gpu::check(
            "batch_items",
            b <= self.batch_size && bf.items.len() >= b && bf.loss_hist.len() >= steps && bf.bad_hist.len() >= steps,
            format!("{b} images of a batch of {}, {steps} steps", self.batch_size),
        )?;
        let (n_perm, steps_i, stride_i, b_i) = (self.perm_len as i64, steps as i32, self.batch_size as i32, b as i32);
        let s = &self.gpu.device;
        let mut lb = s.launcher("batch_items");
        lb.arg(&bf.perm).arg(&n_perm).arg(&bf.step).arg(&steps_i).arg(&stride_i).arg(&b_i).arg(&mut bf.items);
        // SAFETY: items holds ≥ b u32 (checked); perm is read below n_perm.
        unsafe { lb.launch(cfg1(b, 256)) }?;
        self.step(b, keys, lr)?;
        let bf = &mut self.buf;
        let mut lb = self.gpu.device.launcher("record_step");
        lb.arg(&bf.loss).arg(&bf.bad).arg(&mut bf.loss_hist).arg(&mut bf.bad_hist).arg(&mut bf.step).arg(&steps_i);
        // SAFETY: the histories hold ≥ steps values (checked) and the kernel
        // writes at the counter mod steps; loss, bad and step hold one each.
        unsafe { lb.launch(cfg1(1, 32)) }?;
        Ok(())
    }

    /// Captures one full-batch step of the epoch as a graph.
    fn capture(&mut self, keys: (NoiseKey, NoiseKey, NoiseKey), lr: f32) -> Result<Graph> {
        self.gpu.device.begin_capture()?;
        let launched = self.epoch_step(self.batch_size, keys, lr);
        // End the capture whatever happened, so the stream is usable again.
        let graph = self.gpu.device.end_capture();
        launched?;
        graph
    }

    /// Parameters and optimizer state back to the host.
    fn download(&self, params: &mut [f32], opt: &mut Optimizer) -> Result<()> {
        let s = &self.gpu.device;
        s.memcpy_dtoh(&self.buf.params, params)?;
        s.memcpy_dtoh(&self.buf.s1, &mut opt.s1[..])?;
        s.memcpy_dtoh(&self.buf.s2, &mut opt.s2[..])?;
        s.synchronize()
    }

    /// One step run directly (no graph), for tests: the batch `items`.
    pub fn single_step(&mut self, items: &[u32], plan: &EpochPlan) -> Result<f32> {
        Gpu::check("train step", !items.is_empty() && items.len() <= self.batch_size, format!("{}", items.len()))?;
        self.gpu.device.memcpy_htod(items, &mut self.buf.items.slice_mut(0..items.len()))?;
        self.step(items.len(), (plan.bin_key, plan.keys.eps, plan.keys.eta), plan.lr as f32)?;
        let loss = self.gpu.device.dtoh(&self.buf.loss)?;
        Ok(loss[0])
    }

    /// Whether `run_epoch` replays full batches from a captured graph.
    pub fn use_graphs(&mut self, on: bool) {
        self.graphs = on;
    }

    /// The block target of the step's split-K GEMMs (linear.rs; 0: never
    /// split), with a scratch buffer to match. A graph captured before a
    /// change is stale: capture again.
    pub fn set_split_target(&mut self, blocks: usize) -> Result<()> {
        let n = self.batch_size * self.dims.k;
        self.gpu.set_split_target(blocks);
        let len = linear::scratch_len(&self.layout, n, true, blocks);
        self.buf.gemm = self.gpu.device.alloc_zeros::<f32>(len)?;
        Ok(())
    }

    /// A split GEMM's sum by a second launch (true) instead of the tiles'
    /// last blocks (linear.rs): the same bits, one launch more per split
    /// GEMM. A graph captured before a change is stale.
    pub fn set_splitk_two_pass(&mut self, on: bool) {
        self.gpu.set_splitk_two_pass(on);
    }

    /// The arithmetic of the step's layer GEMMs (`--precision`; fp32 or
    /// TF32 tensor cores). A graph captured before a change is stale.
    pub fn set_gemm_math(&mut self, math: linear::GemmMath) {
        self.gpu.set_gemm_math(math);
    }

    /// The last step's gradient (for tests).
    pub fn gradients(&self) -> Result<Vec<f32>> {
        self.gpu.device.dtoh(&self.buf.grads)
    }

    /// Parameters and optimizer state now (for tests and checkpoints).
    pub fn state(&self, params: &mut [f32], opt: &mut Optimizer) -> Result<()> {
        self.download(params, opt)
    }
}

/// Work of one op for a full batch: the minimum bytes it must move through
/// device memory (inputs read once, outputs written once) and its floating-
/// point operations, for achieved-bandwidth and -throughput figures.
#[derive(Clone, Copy, Debug)]
pub struct OpCost {
    pub bytes: u64,
    pub flops: u64,
}

/// Kernel benchmarks (benches/kernels.rs) drive single ops through these.
impl GpuEngine {
    /// Upload a full batch of item indices for `time_op`.
    pub fn set_batch(&mut self, items: &[u32]) -> Result<()> {
        Gpu::check("set_batch", items.len() == self.batch_size, format!("{} items", items.len()))?;
        self.gpu.device.memcpy_htod(items, &mut self.buf.items)
    }

    /// Wall time of `reps` launches of `op` on the current batch (synchronized).
    pub fn time_op(&mut self, op: StepOp, plan: &EpochPlan, reps: u64) -> Result<std::time::Duration> {
        let keys = (plan.bin_key, plan.keys.eps, plan.keys.eta);
        self.gpu.device.synchronize()?;
        let t0 = std::time::Instant::now();
        for _ in 0..reps {
            self.run_op(op, self.batch_size, keys, plan.lr as f32)?;
        }
        self.gpu.device.synchronize()?;
        Ok(t0.elapsed())
    }

    /// The kernels of one captured full-batch step of `plan`'s epoch, in
    /// order (on the emulator; None on a GPU): what a replay launches.
    pub fn captured_step_kernels(&mut self, plan: &EpochPlan) -> Result<Option<Vec<&'static str>>> {
        self.begin_epoch(plan.perm)?;
        let graph = self.capture((plan.bin_key, plan.keys.eps, plan.keys.eta), plan.lr as f32)?;
        Ok(graph.kernels())
    }

    /// Wall time of `reps` whole steps replayed from one captured graph, as
    /// `run_epoch` replays them (steps cycle through the epoch).
    pub fn time_graph_steps(&mut self, plan: &EpochPlan, reps: u64) -> Result<std::time::Duration> {
        self.begin_epoch(plan.perm)?;
        let graph = self.capture((plan.bin_key, plan.keys.eps, plan.keys.eta), plan.lr as f32)?;
        self.gpu.device.upload(&graph)?;
        self.gpu.device.synchronize()?;
        let t0 = std::time::Instant::now();
        for _ in 0..reps {
            self.gpu.device.replay(&graph)?;
        }
        self.gpu.device.synchronize()?;
        Ok(t0.elapsed())
    }

    pub fn op_cost(&self, op: StepOp) -> OpCost {
        let Dims { d, hd, z, u, t, nb, k, .. } = self.dims;
        let (b, n) = (self.batch_size, self.batch_size * k);
        let l = &self.layout;
        let size = |s: &LinearSlot| s.out * s.inp + s.out;
        let enc = size(&l.enc_fc1) + size(&l.enc_fc2) + 2 * size(&l.z_mu) + l.u_mu.map_or(0, |s| 2 * size(&s));
        let dec = size(&l.dec_fc1) + size(&l.dec_fc2) + size(&l.dec_fc3) + l.u2theta.map_or(0, |s| size(&s));
        let heads = 2 * z + 2 * u;
        let enc_flops = 2 * b * (d * hd + hd * hd + hd * heads);
        let dec_flops = 2 * n * (z * hd + hd * hd + hd * d + u * t);
        let (bytes, flops) = match op {
            StepOp::Targets => (b * d + 4 * b * d, 0),
            StepOp::Encoder => (4 * (b * d + enc + 2 * b * hd + 2 * b * heads), enc_flops),
            StepOp::Latents => (4 * (2 * b * (z + u) + 3 * n * (z + u) + n), 8 * n * (z + u)),
            StepOp::DecoderLayers => (4 * (dec + n * (z + u) + 2 * n * hd + 2 * n * hd + n * d + n * t), dec_flops),
            StepOp::DecodeRowFwd => (4 * (2 * n * d + b * d + n * t + 2 * n), n * d * (4 * nb + 20)),
            StepOp::Objective => (4 * (3 * n + b), 10 * n),
            StepOp::DecodeRowBwd => (4 * (2 * n * d + b * d + 2 * n * t + n), n * d * (4 * nb + 30)),
            StepOp::DecoderBackward => {
                (4 * (2 * dec + n * (d + 4 * hd + z + 2 * u + 2 * t)), 2 * dec_flops - 2 * n * z * hd)
            }
            StepOp::LatentBackward => (4 * (3 * n * (z + u) + 5 * b * (z + u)), 8 * n * (z + u)),
            StepOp::EncoderBackward => (4 * (2 * enc + b * (d + 4 * hd + 2 * heads)), 2 * enc_flops - 2 * b * d * hd),
            StepOp::Optimizer => (4 * 8 * l.total, 12 * l.total),
        };
        OpCost { bytes: bytes as u64, flops: flops as u64 }
    }
}

impl Engine for GpuEngine {
    fn run_epoch(
        &mut self,
        plan: &EpochPlan,
        params: &mut [f32],
        opt: &mut Optimizer,
        progress: &mut dyn Progress,
    ) -> Result<Vec<f64>> {
        let keys = (plan.bin_key, plan.keys.eps, plan.keys.eta);
        let lr = plan.lr as f32;
        let batches: Vec<&[u32]> = plan.perm.chunks(self.batch_size).collect();
        let full = batches.iter().any(|b| b.len() == self.batch_size);
        self.begin_epoch(plan.perm)?;
        let graph = if self.graphs && full { Some(self.capture(keys, lr)?) } else { None };
        let mut last_loss = f64::NAN;
        // Each step takes its batch from the permutation on the device and
        // records its own loss: the host only launches.
        for (step, batch) in batches.iter().enumerate() {
            match &graph {
                Some(gr) if batch.len() == self.batch_size => self.gpu.device.replay(gr)?,
                _ => self.epoch_step(batch.len(), keys, lr)?,
            }
            let s = &self.gpu.device;
            if step % PROGRESS_EVERY == 0 || step + 1 == batches.len() {
                let mut v = [0f32];
                s.memcpy_dtoh(&self.buf.loss_hist.slice(step..step + 1), &mut v[..])?;
                last_loss = v[0] as f64;
            }
            progress.step(last_loss, batch.len());
        }
        let s = &self.gpu.device;
        let losses = s.dtoh(&self.buf.loss_hist)?;
        let bad = s.dtoh(&self.buf.bad_hist)?;
        for step in 0..batches.len() {
            if !losses[step].is_finite() || bad[step] != 0 {
                return Err(Error::NonFinite { epoch: plan.epoch + 1, step: step + 1, loss: losses[step] as f64 });
            }
        }
        opt.steps += batches.len() as u64;
        self.download(params, opt)?;
        Ok(losses[..batches.len()].iter().map(|&l| l as f64).collect())
    }
}
