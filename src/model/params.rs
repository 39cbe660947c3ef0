//! Parameters as one flat vector with a named layout, so optimizers and
//! checkpoints see named tensors while the math sees contiguous slices.
use super::config::{ModelConfig, Transform};
use crate::rng::{NoiseKey, Stream};
use crate::Real;
use std::ops::Range;

/// One nn.Linear: weight [out, in] and bias [out], torch layout.
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
    pub dec_fc1: LinearSlot,
    pub dec_fc2: LinearSlot,
    pub dec_fc3: LinearSlot,
    pub u2theta: Option<LinearSlot>,
}

impl Layout {
    pub fn new(config: ModelConfig) -> Self {
        let mut entries = Vec::new();
        let mut total = 0usize;
        let mut linear = |name: &str, out: usize, inp: usize| {
            let w = total;
            entries.push(TensorEntry {
                name: format!("{name}.weight"),
                shape: vec![out, inp],
                offset: w,
                len: out * inp,
                fan_in: inp,
            });
            total += out * inp;
            let b = total;
            entries.push(TensorEntry {
                name: format!("{name}.bias"),
                shape: vec![out],
                offset: b,
                len: out,
                fan_in: inp,
            });
            total += out;
            LinearSlot { w, b, out, inp }
        };
        let (d, hd, z, u) = (config.pixels(), config.hidden, config.z_dim, config.u_dim);
        let has_u = config.transform != Transform::None;
        let enc_fc1 = linear("enc.fc1", hd, d);
        let enc_fc2 = linear("enc.fc2", hd, hd);
        let z_mu = linear("enc.z_mu", z, hd);
        let z_logsigma = linear("enc.z_logsigma", z, hd);
        let u_mu = has_u.then(|| linear("enc.u_mu", u, hd));
        let u_logsigma = has_u.then(|| linear("enc.u_logsigma", u, hd));
        let dec_fc1 = linear("dec.fc1", hd, z);
        let dec_fc2 = linear("dec.fc2", hd, hd);
        let dec_fc3 = linear("dec.fc3", d, hd);
        let u2theta = has_u.then(|| linear("u2theta", config.theta_dim(), u));
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
            dec_fc1,
            dec_fc2,
            dec_fc3,
            u2theta,
        }
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
