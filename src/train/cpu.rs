//! The CPU engine: a batch's images in contiguous shards, one thread each,
//! their gradients combined in shard order so results do not depend on the
//! thread count.
use super::{Engine, EpochPlan, Progress, TrainConfig};
use crate::data::{Binarize, Dataset};
use crate::error::{Error, Result};
use crate::model::Layout;
use crate::network::{transpose_weights, Network, Weights};
use crate::objective::{loss_and_grad, Objective};
use crate::ops::simd::simd_dispatch;
use crate::ops::Par;
use crate::optim::Optimizer;
use rayon::prelude::*;

/// The CPU engine: each batch split into contiguous shards that run in
/// parallel (one thread each), their gradients combined in shard order.
pub(super) struct CpuEngine<'a> {
    net: Network<f32>,
    shards: Vec<Shard>,
    /// Every layer's weight transposed, made afresh at the start of each step and
    /// shared by the shards' forward GEMMs (`network::Weights`).
    transposed: Vec<f32>,
    /// Each shard's share of the batch, the weight of its gradient.
    shares: Vec<f32>,
    data: &'a Dataset,
    obj: Objective,
    binarize: Binarize,
    k: usize,
    batch_size: usize,
}

impl<'a> CpuEngine<'a> {
    pub(super) fn new(
        layout: &Layout,
        cfg: &TrainConfig,
        data: &'a Dataset,
        obj: Objective,
        binarize: Binarize,
    ) -> Self {
        let net = Network::<f32>::new(layout.clone());
        let shard_count = cfg.shards.min(cfg.batch_size);
        let shard_cap = cfg.batch_size.div_ceil(shard_count);
        let shards = (0..shard_count)
            .map(|_| Shard {
                ws: net.workspace(shard_cap, cfg.k, true),
                grads: vec![0f32; layout.total],
                items: Vec::with_capacity(shard_cap),
                loss: 0.0,
            })
            .collect();
        CpuEngine {
            net,
            shards,
            transposed: vec![0f32; layout.total],
            shares: vec![0f32; shard_count],
            data,
            obj,
            binarize,
            k: cfg.k,
            batch_size: cfg.batch_size,
        }
    }
}

impl Engine for CpuEngine<'_> {
    fn run_epoch(
        &mut self,
        plan: &EpochPlan,
        params: &mut [f32],
        opt: &mut Optimizer,
        progress: &mut dyn Progress,
    ) -> Result<Vec<f64>> {
        let CpuEngine { net, shards, transposed, shares, data, obj, binarize, k, batch_size } = self;
        let (data, obj, binarize, k) = (*data, *obj, *binarize, *k);
        let shard_count = shards.len();
        let mut step_losses = Vec::with_capacity(plan.perm.len().div_ceil(*batch_size));
        for (step, batch) in plan.perm.chunks(*batch_size).enumerate() {
            let per = batch.len().div_ceil(shard_count);
            transpose_weights(&net.layout, params, transposed);
            let params_now = Weights { params, transposed: Some(transposed) };
            shards.par_iter_mut().enumerate().for_each(|(s, sh)| {
                let part = &batch[(s * per).min(batch.len())..((s + 1) * per).min(batch.len())];
                sh.items.clear();
                sh.items.extend_from_slice(part);
                sh.grads.iter_mut().for_each(|g| *g = 0.0);
                sh.loss = 0.0;
                if part.is_empty() {
                    return;
                }
                let d = data.pixels();
                for (b, &i) in part.iter().enumerate() {
                    data.targets(
                        i as usize,
                        binarize,
                        plan.bin_key,
                        &mut sh.ws.scratch_u32,
                        &mut sh.ws.x[b * d..(b + 1) * d],
                    );
                }
                sh.loss = loss_and_grad(
                    net,
                    params_now,
                    Some(&mut sh.grads),
                    &mut sh.ws,
                    &sh.items,
                    k,
                    obj,
                    plan.keys,
                    Par::Seq,
                );
            });
            // Each shard's loss is a mean over its images: weight by share.
            let total = batch.len() as f64;
            for (w, sh) in shares.iter_mut().zip(shards.iter()) {
                *w = (sh.items.len() as f64 / total) as f32;
            }
            let loss: f64 = shards.iter().map(|sh| sh.loss * sh.items.len() as f64 / total).sum();
            if !loss.is_finite() {
                return Err(Error::NonFinite { epoch: plan.epoch + 1, step: step + 1, loss });
            }
            // The shards' gradients are summed block by block inside the
            // optimizer's pass; a non-finite one stops training, and these
            // parameters are dropped with the error (the last checkpoint stays).
            let shards = &*shards;
            let shares = &*shares;
            let grads_finite =
                opt.step_with(params, plan.lr as f32, |start, g| combine_chunk_wide(g, shards, start, shares));
            if !grads_finite {
                return Err(Error::NonFinite { epoch: plan.epoch + 1, step: step + 1, loss });
            }
            step_losses.push(loss);
            progress.step(loss, batch.len());
        }
        Ok(step_losses)
    }
}

/// One shard of a batch: its images, workspace and gradient.
struct Shard {
    ws: crate::network::Workspace<f32>,
    grads: Vec<f32>,
    items: Vec<u32>,
    loss: f64,
}

simd_dispatch!(
    /// g = Σ_s weight_s · shard_s.grads[start..start + g.len()], summed in
    /// shard order (so the result does not depend on how the elementwise work
    /// is split across threads), for the optimizer's pass
    /// (`Optimizer::step_with`). Returns whether every element is finite.
    fn combine_chunk_wide(g: &mut [f32], shards: &[Shard], start: usize, shares: &[f32]) -> bool => combine_chunk
);

#[inline(always)]
fn combine_chunk(g: &mut [f32], shards: &[Shard], start: usize, shares: &[f32]) -> bool {
    let range = start..start + g.len();
    for (v, &s) in g.iter_mut().zip(&shards[0].grads[range.clone()]) {
        *v = s * shares[0];
    }
    for (shard, &w) in shards.iter().zip(shares).skip(1) {
        for (v, &s) in g.iter_mut().zip(&shard.grads[range.clone()]) {
            *v += s * w;
        }
    }
    // Non-finite means an all-ones exponent. An integer OR over the bits
    // vectorizes (a short-circuiting any(), or a float reduction, does not).
    const EXPONENT: u32 = 0x7f80_0000;
    g.iter().fold(0u32, |acc, v| acc | u32::from(v.to_bits() & EXPONENT == EXPONENT)) == 0
}
