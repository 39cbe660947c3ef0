//! Parameters as one flat vector with a named layout, so optimizers and
//! checkpoints see named tensors while the math sees contiguous slices.
use super::config::{ModelConfig, Transform};
use crate::rng::{NoiseKey, Stream};
use crate::Real;
use std::ops::Range;

/// One nn.Linear: weight `[out, in]` and bias `[out]`, torch layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearSlot {
    pub w: usize,
    pub b: usize,
    pub out: usize,
    pub inp: usize,
}

impl LinearSlot {
    pub fn w_range(&self) -> Range<usize> {
        self.w..self.w + self.out * self.inp
    }
    pub fn b_range(&self) -> Range<usize> {
        self.b..self.b + self.out
    }
    /// One past the layer's last parameter (its bias lies after its weight,
    /// not always right after: Layout::enc_heads).
    pub fn end(&self) -> usize {
        self.w_range().end.max(self.b_range().end)
    }
}

#[derive(Clone, Debug)]
pub struct TensorEntry {
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
    pub len: usize,
    /// fan_in of the layer it belongs to (for the PyTorch default init).
    pub fan_in: usize,
}

/// Where every tensor lives in the flat vector.
#[derive(Clone, Debug)]
pub struct Layout {
    pub config: ModelConfig,
    pub entries: Vec<TensorEntry>,
    pub total: usize,
    pub enc_fc1: LinearSlot,
    pub enc_fc2: LinearSlot,
    pub z_mu: LinearSlot,
    pub z_logsigma: LinearSlot,
    pub u_mu: Option<LinearSlot>,
    pub u_logsigma: Option<LinearSlot>,
    /// The four heads above (two for transform none) as one layer of
    /// 2Z + 2U outputs [μz | log σz | μu | log σu]: their weights lie
    /// together, then their biases, so the GPU computes them (and their
    /// backward) as one GEMM each.
    pub enc_heads: LinearSlot,
    pub dec_fc1: LinearSlot,
    pub dec_fc2: LinearSlot,
    pub dec_fc3: LinearSlot,
    pub u2theta: Option<LinearSlot>,
}

impl Layout {
    /// For each parameter, is it the encoder's (trunk and heads)? The path
    /// derivatives (`iwae-dreg`, `elbo-stl`) change only these gradients.
    pub fn encoder_mask(&self) -> Vec<bool> {
        let mut mask = vec![false; self.total];
        for s in [&self.enc_fc1, &self.enc_fc2, &self.enc_heads] {
            mask[s.w_range()].iter_mut().for_each(|m| *m = true);
            mask[s.b_range()].iter_mut().for_each(|m| *m = true);
        }
        mask
    }

    pub fn new(config: ModelConfig) -> Self {
        let mut entries = Vec::new();
        let mut total = 0usize;
        // Layers whose weights lie together, then their biases: one layer
        // (w, b, out, inp) per (name, out). Entries keep the order
        // name.weight, name.bias, layer by layer, whatever the offsets: an
        // entry's index keys its initial values (init_params).
        let mut layers = |specs: &[(&str, usize)], inp: usize| -> Vec<LinearSlot> {
            let outs: usize = specs.iter().map(|s| s.1).sum();
            let (mut w, mut b) = (total, total + outs * inp);
            total += outs * (inp + 1);
            let mut slots = Vec::new();
            for &(name, out) in specs {
                let weight = TensorEntry {
                    name: format!("{name}.weight"),
                    shape: vec![out, inp],
                    offset: w,
                    len: out * inp,
                    fan_in: inp,
                };
                let bias =
                    TensorEntry { name: format!("{name}.bias"), shape: vec![out], offset: b, len: out, fan_in: inp };
                entries.extend([weight, bias]);
                slots.push(LinearSlot { w, b, out, inp });
                (w, b) = (w + out * inp, b + out);
            }
            slots
        };
        let (d, hd, z, u) = (config.pixels(), config.hidden, config.z_dim, config.u_dim);
        let has_u = config.transform != Transform::None;
        let enc_fc1 = layers(&[("enc.fc1", hd)], d)[0];
        let enc_fc2 = layers(&[("enc.fc2", hd)], hd)[0];
        let mut head_specs = vec![("enc.z_mu", z), ("enc.z_logsigma", z)];
        if has_u {
            head_specs.extend([("enc.u_mu", u), ("enc.u_logsigma", u)]);
        }
        let heads = layers(&head_specs, hd);
        let (z_mu, z_logsigma) = (heads[0], heads[1]);
        let (u_mu, u_logsigma) = (heads.get(2).copied(), heads.get(3).copied());
        let enc_heads = LinearSlot { w: heads[0].w, b: heads[0].b, out: head_specs.iter().map(|s| s.1).sum(), inp: hd };
        let dec_fc1 = layers(&[("dec.fc1", hd)], z)[0];
        let dec_fc2 = layers(&[("dec.fc2", hd)], hd)[0];
        let dec_fc3 = layers(&[("dec.fc3", d)], hd)[0];
        let u2theta = has_u.then(|| layers(&[("u2theta", config.theta_dim())], u)[0]);
        Layout {
            config,
            entries,
            total,
            enc_fc1,
            enc_fc2,
            z_mu,
            z_logsigma,
            u_mu,
            u_logsigma,
            enc_heads,
            dec_fc1,
            dec_fc2,
            dec_fc3,
            u2theta,
        }
    }

    /// Every layer that a forward pass runs on the CPU, each once (the
    /// encoder's heads one by one, not `enc_heads`).
    /// In layout order.
    pub fn forward_slots(&self) -> impl Iterator<Item = LinearSlot> + '_ {
        [self.enc_fc1, self.enc_fc2, self.z_mu, self.z_logsigma]
            .into_iter()
            .chain(self.u_mu)
            .chain(self.u_logsigma)
            .chain([self.dec_fc1, self.dec_fc2, self.dec_fc3])
            .chain(self.u2theta)
    }

    pub fn entry(&self, name: &str) -> Option<&TensorEntry> {
        self.entries.iter().find(|e| e.name == name)
    }
}

/// PyTorch's nn.Linear default: weight and bias ~ U(−1/√fan_in, 1/√fan_in),
/// drawn from the Init stream keyed by (tensor index, element).
pub fn init_params<T: Real>(layout: &Layout, seed: u64) -> Vec<T> {
    let mut p = vec![T::zero(); layout.total];
    let key = NoiseKey::new(seed, Stream::Init, 0);
    let mut u = Vec::new();
    for (t, e) in layout.entries.iter().enumerate() {
        let bound = 1.0 / (e.fan_in as f64).sqrt();
        u.resize(e.len, 0f32);
        key.uniforms(t as u32, 0, &mut u);
        for (dst, &v) in p[e.offset..e.offset + e.len].iter_mut().zip(&u) {
            *dst = T::of((2.0 * v as f64 - 1.0) * bound);
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(transform: Transform) -> ModelConfig {
        let u_dim = if transform == Transform::None { 0 } else { 5 };
        ModelConfig { transform, z_dim: 4, u_dim, hidden: 7, tps_grid: 3, height: 5, width: 6 }
    }

    /// Every parameter belongs to exactly one tensor, and each slot's
    /// ranges are its entries'.
    #[test]
    fn entries_tile_the_flat_vector() {
        for t in [Transform::None, Transform::Affine, Transform::Tps] {
            let l = Layout::new(config(t));
            let mut spans: Vec<(usize, usize)> = l.entries.iter().map(|e| (e.offset, e.len)).collect();
            spans.sort();
            let end = spans.iter().try_fold(0, |at, &(offset, len)| (offset == at).then_some(at + len));
            assert_eq!(end, Some(l.total), "{t:?}: {spans:?}");
            for (name, slot) in [("enc.z_mu", l.z_mu), ("enc.fc2", l.enc_fc2), ("dec.fc3", l.dec_fc3)] {
                assert_eq!(l.entry(&format!("{name}.weight")).unwrap().offset, slot.w);
                assert_eq!(l.entry(&format!("{name}.bias")).unwrap().offset, slot.b);
            }
        }
    }

    /// The encoder heads are one [2Z + 2U, hidden] weight and one bias in
    /// the order μz, log σz, μu, log σu, while the entries keep the
    /// PyTorch module order (which keys the initial values).
    #[test]
    fn encoder_heads_lie_together_in_module_order() {
        for t in [Transform::None, Transform::Affine, Transform::Tps] {
            let l = Layout::new(config(t));
            let (z, u, hd) = (4, l.config.u_dim, 7);
            let mut heads = vec![l.z_mu, l.z_logsigma];
            heads.extend(l.u_mu.iter().chain(&l.u_logsigma));
            let h = l.enc_heads;
            assert_eq!((h.out, h.inp), (2 * z + 2 * u, hd), "{t:?}");
            assert_eq!((h.w, h.b), (heads[0].w, h.w + h.out * hd), "{t:?}");
            let (mut row, mut w) = (0, h.w);
            for s in &heads {
                assert_eq!((s.w, s.b, s.inp), (w, h.b + row, hd), "{t:?}");
                (row, w) = (row + s.out, w + s.out * hd);
            }
            assert_eq!(row, h.out);
            let names: Vec<&str> = l.entries.iter().map(|e| e.name.as_str()).collect();
            let at = |n: &str| names.iter().position(|&m| m == n).unwrap();
            assert!(at("enc.fc2.bias") < at("enc.z_mu.weight") && at("enc.z_mu.bias") < at("enc.z_logsigma.weight"));
            assert_eq!(at("enc.z_mu.weight") + 1, at("enc.z_mu.bias"));
        }
    }
}
