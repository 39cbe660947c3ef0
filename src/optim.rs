//! Optimizers over the flat parameter vector, with torch semantics, and the
//! learning-rate schedules of the seed and of the IWAE paper (SPEC §4).
use crate::error::{Error, Result};
use crate::ops::simd::simd_dispatch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerKind {
    Adadelta,
    Adam,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// lr_e = lr · (1 − e/E)^0.9 (the seed).
    Poly,
    /// 3^i epochs at lr · 10^(−i/7), i = 0…7 (Burda et al.; 3,280 epochs).
    Iwae,
    Constant,
}

impl OptimizerKind {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "adadelta" => Ok(Self::Adadelta),
            "adam" => Ok(Self::Adam),
            o => Err(Error::Config(format!("--optimizer {o:?}: expected adadelta or adam"))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Adadelta => "adadelta",
            Self::Adam => "adam",
        }
    }
    /// The lr the seed (adadelta) and the IWAE paper (adam) start from.
    pub fn default_lr(self) -> f64 {
        match self {
            Self::Adadelta => 1.0,
            Self::Adam => 1e-3,
        }
    }
}

impl Schedule {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "poly" => Ok(Self::Poly),
            "iwae" => Ok(Self::Iwae),
            "constant" => Ok(Self::Constant),
            o => Err(Error::Config(format!("--schedule {o:?}: expected poly, iwae or constant"))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Poly => "poly",
            Self::Iwae => "iwae",
            Self::Constant => "constant",
        }
    }

    /// Learning rate for 0-based epoch `e` of `total`.
    pub fn lr(self, base: f64, e: usize, total: usize) -> f64 {
        match self {
            Self::Constant => base,
            Self::Poly => base * (1.0 - e as f64 / total as f64).max(0.0).powf(0.9),
            Self::Iwae => {
                // Stage i covers epochs [Σ_{j<i} 3^j, Σ_{j≤i} 3^j).
                let mut start = 0usize;
                for i in 0..8u32 {
                    let len = 3usize.pow(i);
                    if e < start + len || i == 7 {
                        return base * 10f64.powf(-(i as f64) / 7.0);
                    }
                    start += len;
                }
                unreachable!("loop returns at i = 7")
            }
        }
    }
}

/// Optimizer state: two moment vectors of the parameters' length.
#[derive(Clone, Debug)]
pub struct Optimizer {
    pub kind: OptimizerKind,
    /// Adadelta: square_avg; Adam: exp_avg.
    pub s1: Vec<f32>,
    /// Adadelta: acc_delta; Adam: exp_avg_sq.
    pub s2: Vec<f32>,
    pub steps: u64,
}

impl Optimizer {
    pub fn new(kind: OptimizerKind, n: usize) -> Self {
        Optimizer { kind, s1: vec![0.0; n], s2: vec![0.0; n], steps: 0 }
    }

    /// One step of gradient *descent* on the loss with learning rate `lr`.
    /// Elementwise, so chunks run in parallel with identical results.
    pub fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32) {
        assert_eq!(params.len(), grads.len(), "Optimizer::step: parameters and gradients");
        self.step_with(params, lr, |start, g| {
            g.copy_from_slice(&grads[start..start + g.len()]);
            true
        });
    }

    /// `step` with each block of the gradient made on the fly by
    /// `gradient(start, g)`, which fills g with the gradient of
    /// params[start..start + g.len()] and says whether it is finite: the
    /// training engine sums its shards' gradients here, in L1, instead of
    /// into a whole gradient vector written and read back. The same bits as
    /// `step` on the same gradient. Returns whether every block was finite;
    /// the parameters are updated either way (a caller that stops on a
    /// non-finite gradient discards them).
    pub fn step_with(
        &mut self,
        params: &mut [f32],
        lr: f32,
        gradient: impl Fn(usize, &mut [f32]) -> bool + Sync,
    ) -> bool {
        use rayon::prelude::*;
        self.steps += 1;
        const CHUNK: usize = 1 << 14;
        const BLOCK: usize = 1 << 10;
        let kind = self.kind;
        let steps = self.steps;
        params
            .par_chunks_mut(CHUNK)
            .zip(self.s1.par_chunks_mut(CHUNK).zip(self.s2.par_chunks_mut(CHUNK)))
            .enumerate()
            .map(|(c, (p, (s1, s2)))| {
                let mut block = [0f32; BLOCK];
                let mut finite = true;
                for (b, ((p, s1), s2)) in
                    p.chunks_mut(BLOCK).zip(s1.chunks_mut(BLOCK)).zip(s2.chunks_mut(BLOCK)).enumerate()
                {
                    let g = &mut block[..p.len()];
                    finite &= gradient(c * CHUNK + b * BLOCK, g);
                    step_chunk_wide(kind, steps, p, g, s1, s2, lr);
                }
                finite
            })
            .reduce(|| true, |a, b| a & b)
    }
}

simd_dispatch!(
    // Wide clones of the elementwise step: its two square roots and division
    // per parameter are a few percent of a training step at SSE width.
    fn step_chunk_wide(
        kind: OptimizerKind,
        steps: u64,
        params: &mut [f32],
        grads: &[f32],
        s1: &mut [f32],
        s2: &mut [f32],
        lr: f32,
    ) => step_chunk
);

#[inline(always)]
fn step_chunk(
    kind: OptimizerKind,
    steps: u64,
    params: &mut [f32],
    grads: &[f32],
    s1: &mut [f32],
    s2: &mut [f32],
    lr: f32,
) {
    let n = params.len();
    let (grads, s1, s2) = (&grads[..n], &mut s1[..n], &mut s2[..n]);
    match kind {
        OptimizerKind::Adadelta => {
            // torch.optim.Adadelta: rho = 0.9, eps = 1e-6.
            let (rho, eps) = (0.9f32, 1e-6f32);
            for (((p, &g), sq), acc) in params.iter_mut().zip(grads).zip(s1.iter_mut()).zip(s2.iter_mut()) {
                *sq = *sq * rho + (1.0 - rho) * g * g;
                let delta = (*acc + eps).sqrt() / (*sq + eps).sqrt() * g;
                *acc = *acc * rho + (1.0 - rho) * delta * delta;
                *p -= lr * delta;
            }
        }
        OptimizerKind::Adam => {
            // torch.optim.Adam with the IWAE paper's eps = 1e-4.
            let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-4f32);
            let t = steps as i32;
            let bc1 = 1.0 - b1.powi(t);
            let bc2 = 1.0 - b2.powi(t);
            let step_size = lr / bc1;
            let bc2_sqrt = bc2.sqrt();
            for (((p, &g), m), v) in params.iter_mut().zip(grads).zip(s1.iter_mut()).zip(s2.iter_mut()) {
                *m = *m * b1 + (1.0 - b1) * g;
                *v = *v * b2 + (1.0 - b2) * g * g;
                let denom = v.sqrt() / bc2_sqrt + eps;
                *p -= step_size * *m / denom;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iwae_schedule_stages() {
        let s = Schedule::Iwae;
        assert_eq!(s.lr(1e-3, 0, 3280), 1e-3);
        assert_eq!(s.lr(1e-3, 1, 3280), 1e-3 * 10f64.powf(-1.0 / 7.0));
        assert_eq!(s.lr(1e-3, 3, 3280), 1e-3 * 10f64.powf(-1.0 / 7.0));
        assert_eq!(s.lr(1e-3, 4, 3280), 1e-3 * 10f64.powf(-2.0 / 7.0));
        assert_eq!(s.lr(1e-3, 3279, 3280), 1e-3 * 10f64.powf(-1.0));
    }

    #[test]
    fn poly_schedule_decays_to_zero() {
        assert_eq!(Schedule::Poly.lr(1.0, 0, 50), 1.0);
        assert!((Schedule::Poly.lr(1.0, 25, 50) - 0.5f64.powf(0.9)).abs() < 1e-12);
    }

    /// A gradient made block by block gives `step`'s bits on the whole
    /// vector, across the pass's block and chunk boundaries, and a block
    /// that reports itself non-finite is reported.
    #[test]
    fn blockwise_gradient_matches_the_whole_vector() {
        let n = (1 << 14) + 1500;
        let grads: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1013) as f32 * 1e-3 - 0.5).collect();
        for kind in [OptimizerKind::Adadelta, OptimizerKind::Adam] {
            let (mut whole, mut blocks) = (vec![0.25f32; n], vec![0.25f32; n]);
            let (mut a, mut b) = (Optimizer::new(kind, n), Optimizer::new(kind, n));
            for _ in 0..3 {
                a.step(&mut whole, &grads, 0.1);
                let finite = b.step_with(&mut blocks, 0.1, |start, g| {
                    g.copy_from_slice(&grads[start..start + g.len()]);
                    true
                });
                assert!(finite);
            }
            assert!(whole.iter().zip(&blocks).all(|(x, y)| x.to_bits() == y.to_bits()), "{kind:?}");
            assert!(a.s1 == b.s1 && a.s2 == b.s2 && a.steps == b.steps);
            let bad = b.step_with(&mut blocks, 0.1, |start, g| {
                g.fill(0.0);
                start != (1 << 14) + 1024
            });
            assert!(!bad, "the last block's report is lost");
        }
    }

    /// torch.optim.Adadelta's documented recurrence (rho = 0.9, eps = 1e-6, lr = 1),
    /// written out independently in f64.
    #[test]
    fn adadelta_matches_recurrence() {
        let mut p = vec![1.0f32, -2.0];
        let mut opt = Optimizer::new(OptimizerKind::Adadelta, 2);
        let gs = [[0.5f64, -1.0], [0.25, 2.0]];
        for g in gs {
            opt.step(&mut p, &[g[0] as f32, g[1] as f32], 1.0);
        }
        let mut want = [1.0f64, -2.0];
        for i in 0..2 {
            let (mut sq, mut acc) = (0.0f64, 0.0f64);
            for g in gs {
                sq = 0.9 * sq + 0.1 * g[i] * g[i];
                let d = ((acc + 1e-6).sqrt() / (sq + 1e-6).sqrt()) * g[i];
                acc = 0.9 * acc + 0.1 * d * d;
                want[i] -= d;
            }
        }
        for i in 0..2 {
            assert!((p[i] as f64 - want[i]).abs() < 1e-6, "{} vs {}", p[i], want[i]);
        }
    }
}
