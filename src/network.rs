//! The model's order of operations, written once over the ops, forward and
//! hand-written backward side by side.
//!
//! Shapes: B images, k samples each, N = B·k rows with row r = b·k + s, so an
//! image's samples are contiguous. D = H·W pixels, Hd hidden, Z, U latents,
//! T = θ size.
//!
//! ```text
//! encode   x[B,D] → h1,h2[B,Hd] → μz, log σz[B,Z], μu, log σu[B,U]
//! sample   z[N,Z] = μz + σz ε,  u[N,U] = μu + σu η
//! decode   z → d1,d2[N,Hd] → c = sigmoid(·)[N,D];  θ[N,T] = T·u + t + θ_id
//!          p = grid_sample(c, grid(θ)) [N,D];  log p(x|z,u)[N]
//! weights  log w[N] = log p(x|z,u) − ½|z|² − ½|u|² + ½|ε|² + Σ log σz + ½|η|² + Σ log σu
//! ```
use crate::model::{Layout, LinearSlot, Transform};
use crate::ops::fused::{decode_row, decode_row_train, RowGrid, RowTrain};
use crate::ops::grid::Warp;
use crate::ops::likelihood::is_binary;
use crate::ops::linear::{
    linear_backward_input, linear_backward_params, linear_forward, linear_forward_transposed, relu_backward, Activation,
};
use crate::ops::rows::{for_each_row, Par, RowsMut};
use crate::rng::NoiseKey;
use crate::Real;

/// What `Network::decode` computes besides log p(x|z,u).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeMode {
    /// Nothing else: each row's scratch is reused (evaluation).
    Score,
    /// Keep p and the grid of every row in ws.p, ws.gx, ws.gy (pictures).
    Keep,
    /// Also each row's backward with coef = 1 into ws.dc and ws.dtheta,
    /// while the row is in L1; `backward` scales them by the objective's
    /// coefficients (training).
    Train,
}

/// The parameters as the forward pass reads them: the flat vector (torch's
/// layout) and, optionally, every layer's weight transposed to `[in, out]`
/// at the same offsets (`transpose_weights`), which the forward GEMMs read
/// in place instead of packing `Wᵀ` on every call. The same bits either way.
#[derive(Clone, Copy)]
pub struct Weights<'a, T> {
    pub params: &'a [T],
    pub transposed: Option<&'a [T]>,
}

impl<'a, T> From<&'a [T]> for Weights<'a, T> {
    fn from(params: &'a [T]) -> Self {
        Weights { params, transposed: None }
    }
}

impl<'a, T> From<&'a Vec<T>> for Weights<'a, T> {
    fn from(params: &'a Vec<T>) -> Self {
        Weights { params, transposed: None }
    }
}

impl<T: Real> Weights<'_, T> {
    /// `y[n,out] = act(x[n,in] · Wᵀ + b)` for layer `s`.
    fn forward(&self, s: &LinearSlot, x: &[T], n: usize, act: Activation, y: &mut [T], par: Par) {
        let b = &self.params[s.b_range()];
        match self.transposed {
            Some(wt) => linear_forward_transposed(x, n, &wt[s.w_range()], b, s.out, s.inp, act, y, par),
            None => linear_forward(x, n, &self.params[s.w_range()], b, s.out, s.inp, act, y, par),
        }
    }
}

/// `transposed[s.w_range()] = Wᵀ` of every layer the forward runs (the
/// biases' ranges are left alone), the layers split across rayon's threads
/// by rayon::join (no allocation: this runs every training step).
pub fn transpose_weights<T: Real>(layout: &Layout, params: &[T], transposed: &mut [T]) {
    assert!(
        params.len() == layout.total && transposed.len() == layout.total,
        "transpose_weights: {} parameters",
        layout.total
    );
    const MAX: usize = 10;
    let mut slots = [LinearSlot { w: 0, b: 0, out: 0, inp: 0 }; MAX];
    let mut count = 0;
    for s in layout.forward_slots() {
        assert!(count < MAX && (count == 0 || slots[count - 1].w_range().end <= s.w), "forward slots in layout order");
        slots[count] = s;
        count += 1;
    }
    transpose_slots(&slots[..count], params, transposed, 0);
}

/// `buf` starts at parameter offset `start` and covers every slot's weight.
fn transpose_slots<T: Real>(slots: &[LinearSlot], params: &[T], buf: &mut [T], start: usize) {
    match slots {
        [] => {}
        [s] => {
            let at = s.w - start;
            T::transpose(&params[s.w_range()], s.out, s.inp, &mut buf[at..at + s.out * s.inp]);
        }
        _ => {
            // Halve by weights, not by layers: the two 784 × 256 layers
            // land on different threads.
            let total: usize = slots.iter().map(|s| s.out * s.inp).sum();
            let mut mid = 1;
            let mut below = slots[0].out * slots[0].inp;
            while mid < slots.len() - 1 && 2 * (below + slots[mid].out * slots[mid].inp) <= total {
                below += slots[mid].out * slots[mid].inp;
                mid += 1;
            }
            let (lo, hi) = buf.split_at_mut(slots[mid].w - start);
            rayon::join(
                || transpose_slots(&slots[..mid], params, lo, start),
                || transpose_slots(&slots[mid..], params, hi, slots[mid].w),
            );
        }
    }
}

/// log σ is clamped to this range (SPEC §1).
pub const LOG_SIGMA_CLAMP: f64 = 6.0;

pub struct Network<T> {
    pub layout: Layout,
    pub warp: Warp<T>,
    pub theta_id: Vec<T>,
}

/// Every intermediate of one forward/backward, allocated once for at most
/// `batch_cap` images × `k` samples.
#[derive(Default)]
pub struct Workspace<T> {
    pub batch_cap: usize,
    pub k: usize,
    pub x: Vec<T>,
    pub h1: Vec<T>,
    pub h2: Vec<T>,
    pub mu_z: Vec<T>,
    pub ls_z_raw: Vec<T>,
    pub ls_z: Vec<T>,
    pub mu_u_pre: Vec<T>,
    pub mu_u: Vec<T>,
    pub ls_u_raw: Vec<T>,
    pub ls_u: Vec<T>,
    pub eps: Vec<T>,
    pub eta: Vec<T>,
    pub z: Vec<T>,
    pub u: Vec<T>,
    pub theta: Vec<T>,
    pub d1: Vec<T>,
    pub d2: Vec<T>,
    /// Decoder logits, then the canonical image c (sigmoid in place).
    pub c: Vec<T>,
    pub p: Vec<T>,
    pub gx: Vec<T>,
    pub gy: Vec<T>,
    pub logpx: Vec<T>,
    pub logw: Vec<T>,
    pub coef_px: Vec<T>,
    pub coef_w: Vec<T>,
    /// The encoder's factor on the decoder's ∂/∂latent, per row (1 but for
    /// iwae-dreg: `objective::loss_and_coefficients`).
    pub coef_dlat: Vec<T>,
    pub dp: Vec<T>,
    pub dc: Vec<T>,
    pub dgx: Vec<T>,
    pub dgy: Vec<T>,
    pub dtheta: Vec<T>,
    pub du: Vec<T>,
    pub dz: Vec<T>,
    pub dd1: Vec<T>,
    pub dd2: Vec<T>,
    pub dmu_z: Vec<T>,
    pub dls_z: Vec<T>,
    pub dmu_u: Vec<T>,
    pub dls_u: Vec<T>,
    pub dh1: Vec<T>,
    pub dh2: Vec<T>,
    pub scratch_u32: Vec<f32>,
    /// Per image: are its targets all 0 or 1?
    pub binary: Vec<bool>,
    /// One row of p and grid, for decoding without storing.
    pub row_p: Vec<T>,
    pub row_gx: Vec<T>,
    pub row_gy: Vec<T>,
    pub row_terms: Vec<T>,
    pub row_dgx: Vec<T>,
    pub row_dgy: Vec<T>,
    /// Training's scatter plans (`[2·D]` pair starts and `[4·D]` additions per
    /// row, `ops::grid_sample::CornerPlan`):
    /// row 0 serves rows decoded one after another; rows decoded in parallel
    /// use their own.
    pub corner_idx: Vec<u32>,
    pub corner_add: Vec<T>,
    /// f64 scratch of the objective: `[k]` log-weights and weights, `[B]` KL.
    pub lse_lw: Vec<f64>,
    pub lse_w: Vec<f64>,
    pub kl: Vec<f64>,
    /// One image's σ = exp(log σ) while its samples are drawn, `[max(Z, U)]`.
    pub sigma: Vec<T>,
}

/// Disjoint (weight, bias) gradient slices of one layer. Its bias lies
/// after its weight, though not always next to it (the encoder heads'
/// biases follow all four heads' weights: Layout::enc_heads).
fn grad_slots<'a, T>(grads: &'a mut [T], s: &LinearSlot) -> (&'a mut [T], &'a mut [T]) {
    assert!(s.w_range().end <= s.b, "a layout puts each bias after its weight");
    let (below, from_bias) = grads.split_at_mut(s.b);
    (&mut below[s.w_range()], &mut from_bias[..s.out])
}

impl<T: Real> Network<T> {
    pub fn new(layout: Layout) -> Self {
        let warp = Warp::new(&layout.config);
        let theta_id = warp.theta_identity();
        Network { layout, warp, theta_id }
    }

    pub fn workspace(&self, batch_cap: usize, k: usize, with_backward: bool) -> Workspace<T> {
        let c = &self.layout.config;
        let (d, hd, z, u, t) = (c.pixels(), c.hidden, c.z_dim, c.u_dim, c.theta_dim());
        let (b, n) = (batch_cap, batch_cap * k);
        let v = |len: usize| vec![T::zero(); len];
        let g = |len: usize| if with_backward { vec![T::zero(); len] } else { Vec::new() };
        let has_t = c.transform != Transform::None;
        let tv = |len: usize| if has_t { vec![T::zero(); len] } else { Vec::new() };
        Workspace {
            batch_cap,
            k,
            x: v(b * d),
            h1: v(b * hd),
            h2: v(b * hd),
            mu_z: v(b * z),
            ls_z_raw: v(b * z),
            ls_z: v(b * z),
            mu_u_pre: v(b * u),
            mu_u: v(b * u),
            ls_u_raw: v(b * u),
            ls_u: v(b * u),
            eps: v(n * z),
            eta: v(n * u),
            z: v(n * z),
            u: v(n * u),
            theta: v(n * t),
            d1: v(n * hd),
            d2: v(n * hd),
            c: v(n * d),
            p: if with_backward { tv(n * d) } else { Vec::new() },
            gx: if with_backward { tv(n * d) } else { Vec::new() },
            gy: if with_backward { tv(n * d) } else { Vec::new() },
            logpx: v(n),
            logw: v(n),
            coef_px: v(n),
            coef_w: v(n),
            coef_dlat: v(n),
            dp: g(n * d),
            dc: g(n * d),
            dgx: g(n * d),
            dgy: g(n * d),
            dtheta: g(n * t),
            du: g(n * u),
            dz: g(n * z),
            dd1: g(n * hd),
            dd2: g(n * hd),
            dmu_z: g(b * z),
            dls_z: g(b * z),
            dmu_u: g(b * u),
            dls_u: g(b * u),
            dh1: g(b * hd),
            dh2: g(b * hd),
            scratch_u32: vec![0.0; d],
            binary: vec![false; b],
            row_p: v(d),
            row_gx: v(d),
            row_gy: v(d),
            row_terms: v(d),
            row_dgx: v(d),
            row_dgy: v(d),
            corner_idx: if with_backward && has_t { vec![0; n * 2 * d] } else { Vec::new() },
            corner_add: if with_backward { tv(n * 4 * d) } else { Vec::new() },
            lse_lw: vec![0.0; k],
            lse_w: vec![0.0; k],
            kl: vec![0.0; b],
            sigma: v(z.max(u)),
        }
    }

    /// Encoder: ws.x[..b] → μ and clamped log σ for z and u.
    pub fn encode<'w>(&self, weights: impl Into<Weights<'w, T>>, ws: &mut Workspace<T>, b: usize, par: Par) {
        let l = &self.layout;
        let weights = weights.into();
        let lin = |s: &LinearSlot, x: &[T], act, y: &mut [T]| weights.forward(s, x, b, act, y, par);
        lin(&l.enc_fc1, &ws.x, Activation::Relu, &mut ws.h1);
        lin(&l.enc_fc2, &ws.h1, Activation::Relu, &mut ws.h2);
        lin(&l.z_mu, &ws.h2, Activation::Identity, &mut ws.mu_z);
        lin(&l.z_logsigma, &ws.h2, Activation::Identity, &mut ws.ls_z_raw);
        let clamp = |raw: &[T], out: &mut [T]| {
            for (o, &r) in out.iter_mut().zip(raw) {
                *o = r.max(T::of(-LOG_SIGMA_CLAMP)).min(T::of(LOG_SIGMA_CLAMP));
            }
        };
        clamp(&ws.ls_z_raw, &mut ws.ls_z);
        if let (Some(mu), Some(ls)) = (&l.u_mu, &l.u_logsigma) {
            lin(mu, &ws.h2, Activation::Identity, &mut ws.mu_u_pre);
            for (o, &a) in ws.mu_u.iter_mut().zip(&ws.mu_u_pre) {
                *o = a.tanh();
            }
            lin(ls, &ws.h2, Activation::Identity, &mut ws.ls_u_raw);
            clamp(&ws.ls_u_raw, &mut ws.ls_u);
        }
    }

    /// ε, η for rows r = b·k + s: item = `items[b]`, sample = sample0 + s.
    pub fn fill_noise(
        &self,
        ws: &mut Workspace<T>,
        items: &[u32],
        k: usize,
        sample0: usize,
        eps_key: NoiseKey,
        eta_key: NoiseKey,
    ) {
        let (zd, ud) = (self.layout.config.z_dim, self.layout.config.u_dim);
        for (b, &item) in items.iter().enumerate() {
            for s in 0..k {
                let r = b * k + s;
                eps_key.normals(item, (sample0 + s) as u32, &mut ws.eps[r * zd..(r + 1) * zd]);
                if ud > 0 {
                    eta_key.normals(item, (sample0 + s) as u32, &mut ws.eta[r * ud..(r + 1) * ud]);
                }
            }
        }
    }

    /// z = μz + σz ε, u = μu + σu η (rows of image b use its posterior).
    /// With `at_mean`, the noise is ignored: z = μz, u = μu.
    pub fn sample_latents(&self, ws: &mut Workspace<T>, b: usize, k: usize, at_mean: bool) {
        let (zd, ud) = (self.layout.config.z_dim, self.layout.config.u_dim);
        // σ once per image, not per sample (k = 5000 made libm's expf 1.5%
        // of an evaluation); the same expression, so the same bits.
        let reparam = |mu: &[T], ls: &[T], noise: &[T], out: &mut [T], dim: usize, sigma: &mut Vec<T>| {
            sigma.resize(dim, T::zero());
            for i in 0..b {
                for (sg, &l) in sigma.iter_mut().zip(&ls[i * dim..(i + 1) * dim]) {
                    *sg = l.exp();
                }
                let mu = &mu[i * dim..(i + 1) * dim];
                for r in i * k..(i + 1) * k {
                    let row = &mut out[r * dim..(r + 1) * dim];
                    for (d, o) in row.iter_mut().enumerate() {
                        let n = if at_mean { T::zero() } else { noise[r * dim + d] };
                        *o = mu[d] + sigma[d] * n;
                    }
                }
            }
        };
        reparam(&ws.mu_z, &ws.ls_z, &ws.eps, &mut ws.z, zd, &mut ws.sigma);
        if ud > 0 {
            reparam(&ws.mu_u, &ws.ls_u, &ws.eta, &mut ws.u, ud, &mut ws.sigma);
        }
    }

    /// Decoder, transform and likelihood: ws.z, ws.u → ws.logpx[..n]; what
    /// else `mode` says (see `DecodeMode`).
    pub fn decode<'w>(
        &self,
        weights: impl Into<Weights<'w, T>>,
        ws: &mut Workspace<T>,
        b: usize,
        k: usize,
        mode: DecodeMode,
        par: Par,
    ) {
        let l = &self.layout;
        let n = b * k;
        let weights = weights.into();
        let lin = |s: &LinearSlot, x: &[T], act, y: &mut [T]| weights.forward(s, x, n, act, y, par);
        lin(&l.dec_fc1, &ws.z, Activation::Relu, &mut ws.d1);
        lin(&l.dec_fc2, &ws.d1, Activation::Relu, &mut ws.d2);
        lin(&l.dec_fc3, &ws.d2, Activation::Identity, &mut ws.c);
        self.decode_logits(weights, ws, b, k, mode, par);
    }

    /// `decode` after the decoder's three layers: ws.c (fc3's logits) and
    /// ws.u → ws.logpx[..n], for a caller that computed ws.c its own way
    /// (the CPU evaluator's bf16 layers).
    pub fn decode_logits<'w>(
        &self,
        weights: impl Into<Weights<'w, T>>,
        ws: &mut Workspace<T>,
        b: usize,
        k: usize,
        mode: DecodeMode,
        par: Par,
    ) {
        let l = &self.layout;
        let n = b * k;
        let d = l.config.pixels();
        let weights = weights.into();
        let lin = |s: &LinearSlot, x: &[T], act, y: &mut [T]| weights.forward(s, x, n, act, y, par);
        let t = l.config.theta_dim();
        if let Some(s) = &l.u2theta {
            lin(s, &ws.u, Activation::Identity, &mut ws.theta);
            for row in ws.theta[..n * t].chunks_exact_mut(t) {
                for (v, &id) in row.iter_mut().zip(&self.theta_id) {
                    *v += id;
                }
            }
        }
        let warp = &self.warp;
        let transform = l.config.transform;
        for i in 0..b {
            ws.binary[i] = is_binary(&ws.x[i * d..(i + 1) * d]);
        }
        let has_t = transform != Transform::None;
        // Each row's scratch (p, grid, per-pixel terms, and in training the
        // coordinate gradients) is either one row reused, so the rows run one
        // after another and the scratch stays in L1, or, when rows run in
        // parallel or p and the grid are kept, row r of the [N, D] buffers.
        let keep = mode == DecodeMode::Keep;
        let per_row = keep || (mode == DecodeMode::Train && par == Par::Rows);
        let row_par = if per_row { par } else { Par::Seq };
        // (per_row needs a workspace made with_backward: dp, p, gx, gy [N, D].)
        let (tr, pr, xr, yr) = if per_row {
            let terms = RowsMut::new(&mut ws.dp, d, n);
            if has_t {
                let (p, gx, gy) = (&mut ws.p, &mut ws.gx, &mut ws.gy);
                (terms, RowsMut::new(p, d, n), RowsMut::new(gx, d, n), RowsMut::new(gy, d, n))
            } else {
                let (p, gx, gy) = (&mut ws.row_p, &mut ws.row_gx, &mut ws.row_gy);
                (terms, RowsMut::new(p, d, 1), RowsMut::new(gx, d, 1), RowsMut::new(gy, d, 1))
            }
        } else {
            let (tm, p, gx, gy) = (&mut ws.row_terms, &mut ws.row_p, &mut ws.row_gx, &mut ws.row_gy);
            (RowsMut::new(tm, d, 1), RowsMut::new(p, d, 1), RowsMut::new(gx, d, 1), RowsMut::new(gy, d, 1))
        };
        let train = mode == DecodeMode::Train;
        let (dgx_r, dgy_r) = if !train {
            (RowsMut::new(&mut ws.row_dgx, d, 1), RowsMut::new(&mut ws.row_dgy, d, 1))
        } else if per_row {
            (RowsMut::new(&mut ws.dgx, d, n), RowsMut::new(&mut ws.dgy, d, n))
        } else {
            (RowsMut::new(&mut ws.row_dgx, d, 1), RowsMut::new(&mut ws.row_dgy, d, 1))
        };
        let (cidx_rows, cadd_rows) = if train && has_t {
            (RowsMut::new(&mut ws.corner_idx, 2 * d, n), RowsMut::new(&mut ws.corner_add, 4 * d, n))
        } else {
            (RowsMut::new(&mut ws.corner_idx[..0], 0, 0), RowsMut::new(&mut ws.corner_add[..0], 0, 0))
        };
        let dc_rows = if train { RowsMut::new(&mut ws.dc, d, n) } else { RowsMut::new(&mut ws.row_terms[..0], 0, 0) };
        let dth_rows =
            if train { RowsMut::new(&mut ws.dtheta, t, n) } else { RowsMut::new(&mut ws.row_terms[..0], 0, 0) };
        let (x, theta, binary) = (&ws.x, &ws.theta, &ws.binary);
        let c_rows = RowsMut::new(&mut ws.c, d, n);
        let logpx = RowsMut::new(&mut ws.logpx, 1, n);
        // Rows whose p and grid are their own when kept; the one scratch row otherwise.
        let grid_own = per_row && has_t;
        for_each_row(row_par, n, |r| {
            let s = if per_row { r } else { 0 };
            let sg = if grid_own { r } else { 0 };
            // SAFETY: for_each_row visits each row index exactly once; a
            // shared scratch row (index 0) is only used when row_par = Seq.
            let (c, grid) = unsafe {
                let terms = tr.row(s);
                if has_t {
                    (c_rows.row(r), RowGrid { terms, p: pr.row(sg), gx: xr.row(sg), gy: yr.row(sg) })
                } else {
                    (c_rows.row(r), RowGrid { terms, p: &mut [], gx: &mut [], gy: &mut [] })
                }
            };
            let xr_ = &x[(r / k) * d..(r / k + 1) * d];
            let th = if has_t { &theta[r * t..(r + 1) * t] } else { &[] };
            let lp = if train {
                let sd = if per_row { r } else { 0 };
                // SAFETY: as above.
                let out = unsafe {
                    if has_t {
                        RowTrain {
                            dgx: dgx_r.row(sd),
                            dgy: dgy_r.row(sd),
                            corner_idx: cidx_rows.row(sd),
                            corner_add: cadd_rows.row(sd),
                            da: dc_rows.row(r),
                            dtheta: dth_rows.row(r),
                        }
                    } else {
                        RowTrain {
                            dgx: &mut [],
                            dgy: &mut [],
                            corner_idx: &mut [],
                            corner_add: &mut [],
                            da: dc_rows.row(r),
                            dtheta: &mut [],
                        }
                    }
                };
                decode_row_train(warp, c, th, xr_, binary[r / k], grid, out)
            } else {
                decode_row(warp, c, th, xr_, binary[r / k], grid)
            };
            // SAFETY: as above.
            unsafe { logpx.row(r)[0] = lp };
        });
    }

    /// log `w[r]` from log p(x|z,u) and the latent terms.
    pub fn log_weights(&self, ws: &mut Workspace<T>, b: usize, k: usize) {
        let (zd, ud) = (self.layout.config.z_dim, self.layout.config.u_dim);
        let half = T::of(0.5);
        for r in 0..b * k {
            let i = r / k;
            let mut lw = ws.logpx[r];
            for dd in 0..zd {
                let (z, e) = (ws.z[r * zd + dd], ws.eps[r * zd + dd]);
                lw += half * (e * e - z * z) + ws.ls_z[i * zd + dd];
            }
            for dd in 0..ud {
                let (u, e) = (ws.u[r * ud + dd], ws.eta[r * ud + dd]);
                lw += half * (e * e - u * u) + ws.ls_u[i * ud + dd];
            }
            ws.logw[r] = lw;
        }
    }

    /// KL(q(z|x)‖N(0,I)) + KL(q(u|x)‖N(0,I)) of image i.
    pub fn kl(&self, ws: &Workspace<T>, i: usize) -> f64 {
        let term = |mu: &[T], ls: &[T], dim: usize| -> f64 {
            (0..dim)
                .map(|d| {
                    let (m, l) = (mu[i * dim + d].f64(), ls[i * dim + d].f64());
                    0.5 * ((2.0 * l).exp() + m * m - 1.0 - 2.0 * l)
                })
                .sum()
        };
        let c = &self.layout.config;
        term(&ws.mu_z, &ws.ls_z, c.z_dim) + term(&ws.mu_u, &ws.ls_u, c.u_dim)
    }

    /// Backward of the whole model into `grads` (accumulated; same layout as
    /// params), after `decode(.., DecodeMode::Train, ..)`. Needs `ws.coef_px[r]` = ∂Loss/∂log p(x|z_r,u_r), `ws.coef_w[r]` =
    /// ∂Loss/∂(explicit latent terms of log w_r), `ws.coef_dlat[r]` (the
    /// encoder's factor on the decoder's ∂/∂latent), and `kl_scale` =
    /// ∂Loss/∂KL_b (elbo-kl; 0 otherwise). With `path_derivative` the encoder
    /// sees log q(z; μ, σ) with μ and σ held fixed (iwae-dreg, elbo-stl).
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        params: &[T],
        grads: &mut [T],
        ws: &mut Workspace<T>,
        b: usize,
        k: usize,
        kl_scale: T,
        path_derivative: bool,
        par: Par,
    ) {
        let l = &self.layout;
        let cfg = &l.config;
        let n = b * k;
        let (d, t) = (cfg.pixels(), cfg.theta_dim());

        // Likelihood, grid sampling, grid and sigmoid: decode(Train) left each
        // row's backward for coef = 1 in dc [N, D] and dθ [N, T]; it is linear
        // in coef, so scaling by coef_px[r] gives ∂Loss/∂logits and ∂Loss/∂θ.
        for r in 0..n {
            let cr = ws.coef_px[r];
            ws.dc[r * d..(r + 1) * d].iter_mut().for_each(|v| *v *= cr);
            ws.dtheta[r * t..(r + 1) * t].iter_mut().for_each(|v| *v *= cr);
        }

        // Decoder GEMMs.
        let back = |s: &LinearSlot, grads: &mut [T], x: &[T], dy: &[T], rows: usize| {
            let (dw, db) = grad_slots(grads, s);
            linear_backward_params(x, dy, rows, s.out, s.inp, dw, db, par);
        };
        back(&l.dec_fc3, grads, &ws.d2, &ws.dc, n);
        linear_backward_input(&ws.dc, n, &params[l.dec_fc3.w_range()], d, cfg.hidden, &mut ws.dd2, false, par);
        relu_backward(&ws.d2[..n * cfg.hidden], &mut ws.dd2[..n * cfg.hidden]);
        back(&l.dec_fc2, grads, &ws.d1, &ws.dd2, n);
        linear_backward_input(
            &ws.dd2,
            n,
            &params[l.dec_fc2.w_range()],
            cfg.hidden,
            cfg.hidden,
            &mut ws.dd1,
            false,
            par,
        );
        relu_backward(&ws.d1[..n * cfg.hidden], &mut ws.dd1[..n * cfg.hidden]);
        back(&l.dec_fc1, grads, &ws.z, &ws.dd1, n);
        linear_backward_input(&ws.dd1, n, &params[l.dec_fc1.w_range()], cfg.hidden, cfg.z_dim, &mut ws.dz, false, par);
        if let Some(s) = &l.u2theta {
            back(s, grads, &ws.u, &ws.dtheta, n);
            linear_backward_input(&ws.dtheta, n, &params[s.w_range()], t, cfg.u_dim, &mut ws.du, false, par);
        }

        // Reparameterisation, prior and entropy terms, KL: per image. With
        // lat = μ + σ·noise and log w = log p(x|·) − ½lat² + ½noise² + log σ
        // (noise fixed), ∂log w/∂μ = ∂/∂lat and ∂log w/∂log σ = ∂/∂lat · σ·noise
        // + 1. The path derivative instead holds log q's μ and σ fixed:
        // ∂log q/∂lat = −noise/σ joins ∂/∂lat, and the explicit 1 (log q's
        // own ∂/∂log σ) goes: ∂/∂log σ = ∂/∂lat · σ·noise.
        let clamp = T::of(LOG_SIGMA_CLAMP);
        let coef_dlat = &ws.coef_dlat;
        let latent = |mu: &[T],
                      ls: &[T],
                      raw: &[T],
                      lat: &[T],
                      noise: &[T],
                      dlat: &[T],
                      dmu: &mut [T],
                      dls: &mut [T],
                      dim: usize,
                      coef_w: &[T]| {
            dmu[..b * dim].iter_mut().for_each(|v| *v = T::zero());
            dls[..b * dim].iter_mut().for_each(|v| *v = T::zero());
            for r in 0..n {
                let i = r / k;
                let (cw, cd) = (coef_w[r], coef_dlat[r]);
                let (dmu, dls, ls) =
                    (&mut dmu[i * dim..(i + 1) * dim], &mut dls[i * dim..(i + 1) * dim], &ls[i * dim..(i + 1) * dim]);
                let (dlat, lat, noise) =
                    (&dlat[r * dim..(r + 1) * dim], &lat[r * dim..(r + 1) * dim], &noise[r * dim..(r + 1) * dim]);
                for dd in 0..dim {
                    let sigma = ls[dd].exp_v();
                    if path_derivative {
                        let g = cd * dlat[dd] + cw * (noise[dd] / sigma - lat[dd]);
                        dmu[dd] += g;
                        dls[dd] += g * sigma * noise[dd];
                    } else {
                        let g = dlat[dd] - cw * lat[dd];
                        dmu[dd] += g;
                        dls[dd] += g * sigma * noise[dd] + cw;
                    }
                }
            }
            for j in 0..b * dim {
                if kl_scale != T::zero() {
                    dmu[j] += kl_scale * mu[j];
                    dls[j] += kl_scale * ((T::of(2.0) * ls[j]).exp() - T::one());
                }
                if raw[j] < -clamp || raw[j] > clamp {
                    dls[j] = T::zero();
                }
            }
        };
        latent(
            &ws.mu_z,
            &ws.ls_z,
            &ws.ls_z_raw,
            &ws.z,
            &ws.eps,
            &ws.dz,
            &mut ws.dmu_z,
            &mut ws.dls_z,
            cfg.z_dim,
            &ws.coef_w,
        );
        if cfg.u_dim > 0 {
            latent(
                &ws.mu_u,
                &ws.ls_u,
                &ws.ls_u_raw,
                &ws.u,
                &ws.eta,
                &ws.du,
                &mut ws.dmu_u,
                &mut ws.dls_u,
                cfg.u_dim,
                &ws.coef_w,
            );
            for (g, &m) in ws.dmu_u[..b * cfg.u_dim].iter_mut().zip(&ws.mu_u) {
                *g *= T::one() - m * m;
            }
        }

        // Encoder heads, then the trunk.
        let hd = cfg.hidden;
        let mut first = true;
        let u_heads =
            l.u_mu.as_ref().zip(Some(&ws.dmu_u)).into_iter().chain(l.u_logsigma.as_ref().zip(Some(&ws.dls_u)));
        let heads = [(&l.z_mu, &ws.dmu_z), (&l.z_logsigma, &ws.dls_z)].into_iter().chain(u_heads);
        for (s, dy) in heads {
            back(s, grads, &ws.h2, dy, b);
            linear_backward_input(dy, b, &params[s.w_range()], s.out, hd, &mut ws.dh2, !first, par);
            first = false;
        }
        relu_backward(&ws.h2[..b * hd], &mut ws.dh2[..b * hd]);
        back(&l.enc_fc2, grads, &ws.h1, &ws.dh2, b);
        linear_backward_input(&ws.dh2, b, &params[l.enc_fc2.w_range()], hd, hd, &mut ws.dh1, false, par);
        relu_backward(&ws.h1[..b * hd], &mut ws.dh1[..b * hd]);
        back(&l.enc_fc1, grads, &ws.x, &ws.dh1, b);
    }
}

/// Decoded images for given latents.
pub struct Decoded<T> {
    /// Canonical (upright) images c [n, D].
    pub canonical: Vec<T>,
    /// Transformed images p [n, D] (= c for transform none).
    pub transformed: Vec<T>,
    /// θ [n, T].
    pub theta: Vec<T>,
}

/// Posterior parameters of n images: μ and log σ of z [n, Z] and u [n, U].
pub struct Posterior<T> {
    pub mu_z: Vec<T>,
    pub ls_z: Vec<T>,
    pub mu_u: Vec<T>,
    pub ls_u: Vec<T>,
}

impl<T: Real> Network<T> {
    /// Encode targets x [n, D] (not a hot path: allocates).
    pub fn posterior(&self, params: &[T], x: &[T], n: usize) -> Posterior<T> {
        let c = &self.layout.config;
        let mut ws = self.workspace(n, 1, false);
        ws.x[..n * c.pixels()].copy_from_slice(&x[..n * c.pixels()]);
        self.encode(params, &mut ws, n, Par::Seq);
        Posterior {
            mu_z: ws.mu_z[..n * c.z_dim].to_vec(),
            ls_z: ws.ls_z[..n * c.z_dim].to_vec(),
            mu_u: ws.mu_u[..n * c.u_dim].to_vec(),
            ls_u: ws.ls_u[..n * c.u_dim].to_vec(),
        }
    }

    /// The warp parameters θ [n, T] of latents u [n, U], as `decode` forms
    /// them, without the decoder (empty for transform none).
    pub fn theta_of(&self, params: &[T], u: &[T], n: usize) -> Vec<T> {
        let t = self.layout.config.theta_dim();
        let Some(s) = &self.layout.u2theta else { return Vec::new() };
        let mut theta = vec![T::zero(); n * t];
        linear_forward(
            u,
            n,
            &params[s.w_range()],
            &params[s.b_range()],
            s.out,
            s.inp,
            Activation::Identity,
            &mut theta,
            Par::Seq,
        );
        for row in theta.chunks_exact_mut(t) {
            row.iter_mut().zip(&self.theta_id).for_each(|(v, &id)| *v += id);
        }
        theta
    }

    /// Decode latents z [n, Z], u [n, U] (not a hot path: allocates).
    pub fn decode_latents(&self, params: &[T], z: &[T], u: &[T], n: usize) -> Decoded<T> {
        let c = &self.layout.config;
        let (d, t) = (c.pixels(), c.theta_dim());
        let mut ws = self.workspace(n, 1, true);
        ws.z[..n * c.z_dim].copy_from_slice(&z[..n * c.z_dim]);
        ws.u[..n * c.u_dim].copy_from_slice(&u[..n * c.u_dim]);
        self.decode(params, &mut ws, n, 1, DecodeMode::Keep, Par::Seq);
        let canonical = ws.c[..n * d].to_vec();
        let transformed = if c.transform == Transform::None { canonical.clone() } else { ws.p[..n * d].to_vec() };
        Decoded { canonical, transformed, theta: ws.theta[..n * t].to_vec() }
    }
}
