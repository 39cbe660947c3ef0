//! The linear layers on device buffers (kernels/linear.cu), forward and
//! backward, shared by the training engine and the evaluator, and when a
//! GEMM splits its K.
//!
//! A 64×64 output tile is one block, so the training step's GEMMs have
//! 2–104 blocks (the encoder's 100 rows; dX and dW, whose outputs are
//! 500×256 or 784×256) on a GPU with 132 SMs, and a block that sums K = 784
//! alone sets the GEMM's time. Split-K gives each of `splits` blocks per
//! tile a slice of K, writes the partial products to a scratch buffer and
//! adds them in a fixed order, so the result is deterministic and the same
//! on every GPU: the plan depends on the shape only. The sum is done by
//! each tile's last block to finish, in the same launch (`gemm_splitk`; a
//! ticket per tile says which block is last), or with
//! `IWTVAE_SPLITK_TWO_PASS=1` by a second launch (`gemm_partial`, then
//! `splitk_sum`): the same bits, one launch more per split GEMM.
//! `IWTVAE_NO_SPLIT_K=1` launches every GEMM unsplit (one block per tile),
//! for comparison; `Gpu::set_split_target` sets the block target.
//!
//! The scratch buffer: its first `split_target` words are the tickets (u32
//! counters, zero as allocated and back to zero after every GEMM; a split
//! GEMM has fewer tiles than the target), the partials follow.
use super::driver::{AsDevView, DevBuf, DevView, DevViewMut, IntoKernelArg};
use super::forward::cfg1;
use super::shapes::{COL_SUM_THREADS, GEMM_THREADS, GEMM_TILE};
use super::Gpu;
use crate::error::Result;
use crate::model::{Layout, LinearSlot};
use cudarc::driver::LaunchConfig;

/// Blocks a GEMM should launch (the default target): about two per SM of
/// an H100 (132 SMs), so an SM has a second block's warps to switch to
/// while one waits on memory. A reading of the shapes, not a measurement:
/// `benches/kernels.rs` times the step at several targets.
pub const SPLIT_TARGET_BLOCKS: usize = 256;
/// The fewest k values a split sums: four of the kernel's 16-deep steps, so
/// a block's arithmetic still outweighs writing its 64×64 partial.
pub const SPLIT_MIN_K: usize = 64;
/// k values per step of `tile_product` (kernels/linear.cu KSTEP): slices
/// start on a step.
const KSTEP: usize = 16;

/// The arithmetic of the GEMMs behind `Gpu::linear` and its backward (the
/// training step's; the evaluator picks its own by `--precision`): fp32
/// FMAs (the default, the CPU's arithmetic up to summation order), or TF32
/// tensor cores (inputs rounded to 10 mantissa bits, fp32 sums), as
/// PyTorch's `allow_tf32`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GemmMath {
    #[default]
    Fp32,
    Tf32,
}

/// How the K of C[M, N] = A[M, K] · B[K, N] is cut: `splits` slices of
/// `chunk` values (the last one shorter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitK {
    pub splits: usize,
    pub chunk: usize,
}

impl SplitK {
    pub fn unsplit(k: usize) -> Self {
        SplitK { splits: 1, chunk: k }
    }

    /// Enough slices to bring the GEMM to about `target` blocks, none
    /// shorter than SPLIT_MIN_K (a target of 0 never splits).
    pub fn plan(m: usize, n: usize, k: usize, target: usize) -> Self {
        let tiles = (m.div_ceil(GEMM_TILE) * n.div_ceil(GEMM_TILE)).max(1);
        let splits = target.div_ceil(tiles).min(k / SPLIT_MIN_K);
        if splits <= 1 {
            return Self::unsplit(k);
        }
        let chunk = k.div_ceil(splits).next_multiple_of(KSTEP);
        SplitK { splits: k.div_ceil(chunk), chunk }
    }

    /// Scratch floats the partials take (none unsplit).
    pub fn scratch(&self, m: usize, n: usize) -> usize {
        if self.splits > 1 {
            self.splits * m * n
        } else {
            0
        }
    }
}

/// The layout's linear layers as the GPU runs them (the heads as one).
fn slots(l: &Layout) -> impl Iterator<Item = &LinearSlot> {
    [Some(&l.enc_fc1), Some(&l.enc_fc2), Some(&l.enc_heads)]
        .into_iter()
        .chain([Some(&l.dec_fc1), Some(&l.dec_fc2), Some(&l.dec_fc3), l.u2theta.as_ref()])
        .flatten()
}

/// Scratch words for the split-K tickets and partials, at block target
/// `target`, of any linear layer of `l` run on up to `max_rows` rows: its
/// forward, and with `backward` its dW and dX. (Every row count: a plan's
/// scratch does not grow monotonically with it.) Allocate it zeroed.
pub fn scratch_len(l: &Layout, max_rows: usize, backward: bool, target: usize) -> usize {
    let mut most = 0;
    let plan = |m, n, k| SplitK::plan(m, n, k, target);
    for s in slots(l) {
        for r in 1..=max_rows {
            most = most.max(plan(r, s.out, s.inp).scratch(r, s.out));
            if backward {
                most = most.max(plan(s.out, s.inp, r).scratch(s.out, s.inp));
                most = most.max(plan(r, s.inp, s.out).scratch(r, s.inp));
            }
        }
    }
    if most == 0 {
        return 1;
    }
    most + target
}

/// One GEMM operand: a view and its (row, column) strides.
struct Operand<'a> {
    view: DevView<'a, f32>,
    rs: usize,
    cs: usize,
}

impl Operand<'_> {
    /// Whether every element of an [rows, cols] operand lies in the view.
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.view.len()
    }
}

fn gemm_grid(m: usize, n: usize, splits: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (Gpu::blocks(n, GEMM_TILE), Gpu::blocks(m, GEMM_TILE), splits as u32),
        block_dim: (GEMM_THREADS as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// What happens to the sum: a layer's bias and ReLU, or a store (adding to
/// what C holds when `accumulate`, then zero where `relu_of`, laid out as
/// C, is not positive).
enum Epilogue<'a> {
    Layer { bias: DevView<'a, f32>, relu: bool },
    Store { accumulate: bool, relu_of: Option<DevView<'a, f32>> },
}

/// Where a layer's backward puts dx = dy·W: into `buf` (added to what it
/// holds when `accumulate`), times relu'(h) when `relu_of` is the layer
/// below's ReLU output h [rows, inp], so that dx is the gradient at that
/// layer's pre-activation (no pass of its own over dx).
pub(super) struct InputGrad<'a> {
    pub buf: &'a mut DevBuf<f32>,
    pub accumulate: bool,
    pub relu_of: Option<&'a DevBuf<f32>>,
}

impl<'a> InputGrad<'a> {
    /// dx overwritten, through the ReLU that produced the layer's input.
    pub fn through_relu(buf: &'a mut DevBuf<f32>, h: &'a DevBuf<f32>) -> Self {
        InputGrad { buf, accumulate: false, relu_of: Some(h) }
    }

    /// dx overwritten (the input is a latent, not a ReLU's output).
    pub fn plain(buf: &'a mut DevBuf<f32>) -> Self {
        InputGrad { buf, accumulate: false, relu_of: None }
    }
}

impl Gpu {
    /// How this GPU's GEMM of that shape splits K (see the module comment).
    pub(super) fn gemm_plan(&self, m: usize, n: usize, k: usize) -> SplitK {
        SplitK::plan(m, n, k, self.split_target)
    }

    /// C[M, N] (leading dimension ldc) = epilogue(A[M, K] · B[K, N]).
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        a: Operand<'_>,
        b: Operand<'_>,
        mut c: DevViewMut<'_, f32>,
        ldc: usize,
        (m, n, k): (usize, usize, usize),
        epilogue: Epilogue<'_>,
        scratch: &mut DevBuf<f32>,
    ) -> Result<()> {
        let plan = self.gemm_plan(m, n, k);
        let tiles = m.div_ceil(GEMM_TILE) * n.div_ceil(GEMM_TILE);
        // The tickets ahead of the partials (see the module comment).
        let tickets = if plan.splits > 1 { self.split_target } else { 0 };
        let c_span = if m == 0 { 0 } else { (m - 1) * ldc + n };
        Self::check(
            "gemm",
            a.fits(m, k)
                && b.fits(k, n)
                && ldc >= n
                && c_span <= c.len()
                && scratch.len() >= tickets + plan.scratch(m, n)
                && (plan.splits == 1 || tiles <= tickets)
                && match &epilogue {
                    Epilogue::Layer { bias, .. } => bias.len() >= n,
                    Epilogue::Store { relu_of, .. } => relu_of.as_ref().is_none_or(|h| h.len() >= c_span),
                }
                && [m, n, k, ldc].iter().all(|&v| v < i32::MAX as usize),
            format!(
                "[{m}x{k}]·[{k}x{n}] into {} (ldc {ldc}); scratch {} of {} tickets ({tiles} tiles) + {} floats",
                c.len(),
                scratch.len(),
                tickets,
                plan.scratch(m, n)
            ),
        )?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        let (m_i, n_i, k_i, ldc_i) = (m as i32, n as i32, k as i32, ldc as i32);
        let (rsa, csa, rsb, csb) = (a.rs as i64, a.cs as i64, b.rs as i64, b.cs as i64);
        let st = &self.device;
        let tf32 = self.gemm_math == GemmMath::Tf32;
        if plan.splits == 1 {
            match epilogue {
                // The layer kernel reads X row-major and W [N, K] (B = Wᵀ).
                Epilogue::Layer { bias, relu } if a.cs == 1 && a.rs == k && b.rs == 1 && b.cs == k && ldc == n => {
                    let relu_i = relu as i32;
                    let name = if tf32 { "linear_fwd_tile_tf32" } else { "linear_fwd" };
                    let mut lb = st.launcher(name);
                    lb.arg(&a.view).arg(&b.view).arg(&bias).arg(&mut c).arg(&m_i).arg(&n_i).arg(&k_i).arg(&relu_i);
                    // SAFETY: X [M, K] and W [N, K] lie in their views, Y
                    // [M, N] in c, N values in bias (checked above); the
                    // kernel guards every index against M, N, K.
                    unsafe { lb.launch(gemm_grid(m, n, 1)) }?;
                    return Ok(());
                }
                Epilogue::Layer { .. } => {
                    return Err(crate::error::Error::Shape {
                        op: "gemm",
                        detail: "a layer's forward takes X row-major and W [N, K]".into(),
                    })
                }
                Epilogue::Store { accumulate, relu_of } => {
                    let (acc, masked) = (accumulate as i32, relu_of.is_some() as i32);
                    // Without a mask the kernel never reads relu_of; any valid pointer will do.
                    let mask = relu_of.as_ref().unwrap_or(&a.view).kernel_arg();
                    let name = if tf32 { "gemm_strided_tf32" } else { "gemm_strided" };
                    let mut lb = st.launcher(name);
                    lb.arg(&a.view).arg(&rsa).arg(&csa).arg(&b.view).arg(&rsb).arg(&csb).arg(&mut c);
                    lb.arg(&ldc_i).arg(&m_i).arg(&n_i).arg(&k_i).arg(&acc).arg(mask).arg(&masked);
                    // SAFETY: A [M, K] and B [K, N] under their strides lie in
                    // their views, C's M rows of ldc in c and, when masked, in
                    // relu_of (checked above).
                    unsafe { lb.launch(gemm_grid(m, n, 1)) }?;
                    return Ok(());
                }
            }
        }
        let (chunk_i, splits_i) = (plan.chunk as i32, plan.splits as i32);
        let ticket_arg = scratch.slice_mut(0..tickets).kernel_arg();
        let mut partials = scratch.slice_mut(tickets..scratch.len());
        // A pointer the kernel is told not to read (bias without has_bias,
        // relu_of without masked) is any valid one: the partials.
        let unread = (&mut partials).kernel_arg();
        let (bias, has_bias, relu, acc, mask, masked) = match &epilogue {
            Epilogue::Layer { bias, relu } => (bias.kernel_arg(), 1i32, *relu as i32, 0i32, unread, 0i32),
            Epilogue::Store { accumulate, relu_of } => {
                let mask = relu_of.as_ref().map_or(unread, |h| h.kernel_arg());
                (unread, 0, 0, *accumulate as i32, mask, relu_of.is_some() as i32)
            }
        };
        if !self.splitk_two_pass {
            let name = if tf32 { "gemm_splitk_tf32" } else { "gemm_splitk" };
            let mut lb = st.launcher(name);
            lb.arg(&a.view).arg(&rsa).arg(&csa).arg(&b.view).arg(&rsb).arg(&csb).arg(&mut partials).arg(ticket_arg);
            lb.arg(&m_i).arg(&n_i).arg(&k_i).arg(&chunk_i).arg(&splits_i).arg(bias).arg(&has_bias).arg(&relu);
            lb.arg(&mut c).arg(&ldc_i).arg(&acc).arg(mask).arg(&masked);
            // SAFETY: A [M, K] and B [K, N] under their strides lie in their
            // views; slice z reads k in [z·chunk, min(K, (z+1)·chunk)),
            // inside K since splits = ⌈K / chunk⌉, and writes P[z] [M, N]
            // inside the partials (splits·M·N floats); one ticket per tile,
            // tiles ≤ tickets, all zero (allocated so, and each GEMM's last
            // blocks put theirs back); C's M rows of ldc lie in c, bias
            // (read only when has_bias) holds N values and relu_of (read only
            // when masked) C's span (all checked above).
            unsafe { lb.launch(gemm_grid(m, n, plan.splits)) }?;
            return Ok(());
        }
        let name = if tf32 { "gemm_partial_tf32" } else { "gemm_partial" };
        let mut lb = st.launcher(name);
        lb.arg(&a.view).arg(&rsa).arg(&csa).arg(&b.view).arg(&rsb).arg(&csb).arg(&mut partials);
        lb.arg(&m_i).arg(&n_i).arg(&k_i).arg(&chunk_i);
        // SAFETY: as above for A, B and P.
        unsafe { lb.launch(gemm_grid(m, n, plan.splits)) }?;
        let mut lb = st.launcher("splitk_sum");
        lb.arg(&mut partials).arg(&splits_i).arg(&m_i).arg(&n_i).arg(bias);
        lb.arg(&has_bias).arg(&relu).arg(&mut c).arg(&ldc_i).arg(&acc).arg(mask).arg(&masked);
        // SAFETY: P holds splits·M·N floats, C M rows of ldc, bias (read
        // only when has_bias) N values, relu_of (read only when masked) C's
        // span (checked above).
        unsafe { lb.launch(cfg1(m * n, 256)) }?;
        Ok(())
    }

    /// y [rows, out] = act(x · Wᵀ + b) for one layer of the flat parameters.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn linear(
        &self,
        x: &DevBuf<f32>,
        params: &DevBuf<f32>,
        s: &LinearSlot,
        rows: usize,
        relu: bool,
        y: &mut DevBuf<f32>,
        scratch: &mut DevBuf<f32>,
    ) -> Result<()> {
        Self::check(
            "linear_fwd",
            x.len() >= rows * s.inp && y.len() >= rows * s.out && params.len() >= s.end(),
            format!("x {} y {} rows {rows} [{}x{}]", x.len(), y.len(), s.out, s.inp),
        )?;
        let (w, bias) = (params.slice(s.w_range()), params.slice(s.b_range()));
        let x = Operand { view: x.dev_view(), rs: s.inp, cs: 1 };
        // B = Wᵀ: B[k, c] = W[c, k].
        let wt = Operand { view: w, rs: 1, cs: s.inp };
        let y = y.slice_mut(0..rows * s.out);
        self.gemm(x, wt, y, s.out, (rows, s.out, s.inp), Epilogue::Layer { bias, relu }, scratch)
    }

    /// Backward of one linear layer: dW = dyᵀ·x and db = Σ dy into `grads`
    /// (overwritten: each parameter has one contribution per step), and
    /// dx = dy·W as `dx` says when it is given.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn linear_backward(
        &self,
        x: &DevBuf<f32>,
        dy: &DevBuf<f32>,
        rows: usize,
        s: &LinearSlot,
        params: &DevBuf<f32>,
        grads: &mut DevBuf<f32>,
        dx: Option<InputGrad<'_>>,
        scratch: &mut DevBuf<f32>,
    ) -> Result<()> {
        let (out, inp) = (s.out, s.inp);
        Self::check(
            "linear_backward",
            x.len() >= rows * inp
                && dy.len() >= rows * out
                && grads.len() >= s.end()
                && params.len() >= s.end()
                && dx
                    .as_ref()
                    .is_none_or(|v| v.buf.len() >= rows * inp && v.relu_of.is_none_or(|h| h.len() >= rows * inp)),
            format!("x {} dy {} rows {rows} [{out}x{inp}]", x.len(), dy.len()),
        )?;
        // dW[out, inp] = dyᵀ[out, rows] · x[rows, inp]
        let dy_t = Operand { view: dy.dev_view(), rs: 1, cs: out };
        let xs = Operand { view: x.dev_view(), rs: inp, cs: 1 };
        let dw = grads.slice_mut(s.w_range());
        let store = Epilogue::Store { accumulate: false, relu_of: None };
        self.gemm(dy_t, xs, dw, inp, (out, inp, rows), store, scratch)?;
        {
            let mut db = grads.slice_mut(s.b_range());
            let (rows_i, cols_i, acc) = (rows as i32, out as i32, 0i32);
            let mut lb = self.device.launcher("col_sum");
            lb.arg(dy).arg(&mut db).arg(&rows_i).arg(&cols_i).arg(&acc);
            let cfg = LaunchConfig {
                grid_dim: (Self::blocks(out, 32), 1, 1),
                block_dim: (COL_SUM_THREADS as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: dy holds rows·out values, db out; a block covers 32
            // columns and guards c < out.
            unsafe { lb.launch(cfg) }?;
        }
        if let Some(InputGrad { buf, accumulate, relu_of }) = dx {
            // dx[rows, inp] = dy[rows, out] · W[out, inp] (⊙ relu'(h))
            let dys = Operand { view: dy.dev_view(), rs: out, cs: 1 };
            let w = Operand { view: params.slice(s.w_range()), rs: inp, cs: 1 };
            let relu_of = relu_of.map(|h| h.slice(0..rows * inp));
            let dx = buf.slice_mut(0..rows * inp);
            self.gemm(dys, w, dx, inp, (rows, inp, out), Epilogue::Store { accumulate, relu_of }, scratch)?;
        }
        Ok(())
    }
}

/// The layer wrappers on host slices, for the parity tests: W [out, inp]
/// and b `[out]` in torch's layout.
impl Gpu {
    /// y [rows, out] = act(x · Wᵀ + b).
    pub fn linear_layer(&self, x: &[f32], w: &[f32], b: &[f32], rows: usize, relu: bool) -> Result<Vec<f32>> {
        let (slot, params) = Self::upload_layer(self, w, b, rows, x.len())?;
        let s = &self.device;
        let (x, mut y) = (s.htod(x)?, s.alloc_zeros::<f32>((rows * slot.out).max(1))?);
        let partials = self.gemm_plan(rows, slot.out, slot.inp).scratch(rows, slot.out);
        let mut scratch = s.alloc_zeros::<f32>(self.split_target + partials.max(1))?;
        self.linear(&x, &params, &slot, rows, relu, &mut y, &mut scratch)?;
        Ok(s.dtoh(&y)?[..rows * slot.out].to_vec())
    }

    /// (dW, db, dx) of a layer: dW = dyᵀ·x, db = Σ dy, dx = dy·W + dx0.
    pub fn linear_layer_backward(
        &self,
        x: &[f32],
        dy: &[f32],
        w: &[f32],
        b: &[f32],
        rows: usize,
        dx0: &[f32],
    ) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        let (slot, params) = Self::upload_layer(self, w, b, rows, x.len())?;
        let (out, inp) = (slot.out, slot.inp);
        Self::check("linear_layer_backward", dy.len() == rows * out && dx0.len() == rows * inp, String::new())?;
        let s = &self.device;
        let (x, dy, mut dx) = (s.htod(x)?, s.htod(dy)?, s.htod(dx0)?);
        let mut grads = s.alloc_zeros::<f32>(params.len())?;
        let most =
            self.gemm_plan(out, inp, rows).scratch(out, inp).max(self.gemm_plan(rows, inp, out).scratch(rows, inp));
        let mut scratch = s.alloc_zeros::<f32>(self.split_target + most.max(1))?;
        let dx_out = InputGrad { buf: &mut dx, accumulate: true, relu_of: None };
        self.linear_backward(&x, &dy, rows, &slot, &params, &mut grads, Some(dx_out), &mut scratch)?;
        let g = s.dtoh(&grads)?;
        Ok((g[slot.w_range()].to_vec(), g[slot.b_range()].to_vec(), s.dtoh(&dx)?))
    }

    fn upload_layer(&self, w: &[f32], b: &[f32], rows: usize, x_len: usize) -> Result<(LinearSlot, DevBuf<f32>)> {
        let (out, inp) = (b.len(), x_len / rows.max(1));
        Self::check(
            "linear_layer",
            rows > 0 && out > 0 && inp > 0 && x_len == rows * inp && w.len() == out * inp,
            format!("x {x_len} for {rows} rows, W {}, b {out}", w.len()),
        )?;
        let params: Vec<f32> = w.iter().chain(b).copied().collect();
        Ok((LinearSlot { w: 0, b: out * inp, out, inp }, self.device.htod(&params)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every k is in exactly one slice, slices start on a KSTEP boundary,
    /// and a split GEMM has no more blocks than it needs to pass the target.
    #[test]
    fn split_plans_cover_k_and_stop_at_the_target() {
        for m in [1, 50, 100, 500, 784, 5000] {
            for n in [1, 18, 42, 256, 784] {
                for k in [1, 18, 42, 63, 64, 100, 128, 256, 500, 784, 5000] {
                    let p = SplitK::plan(m, n, k, SPLIT_TARGET_BLOCKS);
                    assert!(p.splits >= 1 && p.chunk >= 1, "{m}x{n}x{k}: {p:?}");
                    assert!(p.splits * p.chunk >= k && (p.splits - 1) * p.chunk < k, "{m}x{n}x{k}: {p:?}");
                    if p.splits > 1 {
                        assert_eq!(p.chunk % KSTEP, 0, "{m}x{n}x{k}: {p:?}");
                        assert!(p.chunk >= SPLIT_MIN_K, "{m}x{n}x{k}: {p:?}");
                        let tiles = m.div_ceil(GEMM_TILE) * n.div_ceil(GEMM_TILE);
                        assert!(tiles * (p.splits - 1) < SPLIT_TARGET_BLOCKS, "{m}x{n}x{k}: {p:?}");
                    }
                }
            }
        }
    }

    /// The training step's shapes (batch 100, k = 5, hidden 256): the
    /// K-heavy GEMMs with few tiles split, the wide ones do not.
    #[test]
    fn the_training_step_splits_where_blocks_are_few() {
        assert_eq!(SplitK::plan(100, 256, 784, SPLIT_TARGET_BLOCKS), SplitK { splits: 10, chunk: 80 }); // encoder fc1
        assert_eq!(SplitK::plan(500, 256, 784, SPLIT_TARGET_BLOCKS), SplitK { splits: 7, chunk: 112 }); // decoder fc3 dX
        assert_eq!(SplitK::plan(784, 256, 500, SPLIT_TARGET_BLOCKS), SplitK { splits: 5, chunk: 112 }); // decoder fc3 dW
        assert_eq!(SplitK::plan(256, 784, 100, SPLIT_TARGET_BLOCKS), SplitK::unsplit(100)); // encoder fc1 dW: K too short
                                                                                            // the evaluator's rows
        assert_eq!(SplitK::plan(5000, 784, 256, SPLIT_TARGET_BLOCKS), SplitK::unsplit(256));
    }
}
