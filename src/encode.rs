//! Posterior codes of a dataset, for analysis outside iwtvae (a t-SNE of z,
//! a classifier on z, the poses in u): per image the posterior means and
//! log standard deviations of z and u, the warp θ that μu sets, the
//! rotation of that warp, and the label. `iwtvae encode` writes them as
//! safetensors (numpy / PyTorch) or CSV; `probe` reads rotated digits'
//! codes through the same `encode_with`.
use crate::data::{Binarize, Dataset};
use crate::error::{Error, Result};
use crate::model::checkpoint::{serialize_tensors, TensorBytes};
use crate::network::Network;
use crate::probe::warp_rotation_deg;
use crate::rng::{NoiseKey, Stream};
use rayon::prelude::*;
use std::collections::HashMap;
use std::fmt::Write;

/// Images encoded per rayon task.
const CHUNK: usize = 256;

/// The codes of n images, row i for image i.
#[derive(Clone, Debug, PartialEq)]
pub struct Codes {
    pub z_dim: usize,
    pub u_dim: usize,
    pub theta_dim: usize,
    /// [n, Z]
    pub mu_z: Vec<f32>,
    /// [n, Z], clamped as the model clamps it (SPEC §1).
    pub log_sigma_z: Vec<f32>,
    /// [n, U] (empty for transform none)
    pub mu_u: Vec<f32>,
    pub log_sigma_u: Vec<f32>,
    /// [n, T]: the warp's parameters at u = μu, as the decoder forms them
    /// (identity added; empty for transform none).
    pub theta: Vec<f32>,
    /// `[n]`: the rotation of that warp in degrees, counter-clockwise as
    /// displayed (`probe::warp_rotation_deg`; empty for transform none).
    pub warp_rotation_deg: Vec<f64>,
    /// `[n]`
    pub labels: Vec<u8>,
}

/// The binarization key evaluation uses, so that an image's code is the
/// code of the targets `eval` scored.
pub fn eval_key(seed: u64) -> NoiseKey {
    NoiseKey::new(seed, Stream::EvalBinarize, 0)
}

/// The codes of every image of `data` as evaluation sees it (`binarize`,
/// keyed by `seed` as `eval` keys it).
pub fn encode_dataset(
    net: &Network<f32>,
    params: &[f32],
    data: &Dataset,
    binarize: Binarize,
    seed: u64,
) -> Result<Codes> {
    let key = eval_key(seed);
    encode_with(
        net,
        params,
        data,
        || vec![0f32; data.pixels()],
        |uniforms, i, out| data.targets(i, binarize, key, uniforms, out),
    )
}

/// The codes of every image of `data`, its targets written by
/// `fill(state, index, out [D])`, with one `state()` per task (scratch, a
/// rotation). An image's code does not depend on the others: each row of
/// the encoder's GEMMs is summed in the same order whatever the rows
/// around it.
pub fn encode_with<S>(
    net: &Network<f32>,
    params: &[f32],
    data: &Dataset,
    state: impl Fn() -> S + Sync,
    fill: impl Fn(&mut S, usize, &mut [f32]) + Sync,
) -> Result<Codes> {
    let cfg = &net.layout.config;
    data.check_fits(cfg)?;
    let (d, t) = (data.pixels(), cfg.theta_dim());
    let parts: Vec<Codes> = (0..data.len().div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let range = c * CHUNK..((c + 1) * CHUNK).min(data.len());
            let n = range.len();
            let mut st = state();
            let mut x = vec![0f32; n * d];
            for (row, i) in x.chunks_exact_mut(d).zip(range.clone()) {
                fill(&mut st, i, row);
            }
            let post = net.posterior(params, &x, n);
            let theta = net.theta_of(params, &post.mu_u, n);
            let (mut xs, mut ys) = (vec![0f32; d], vec![0f32; d]);
            let turn = theta
                .chunks_exact(t.max(1))
                .map(|th| {
                    net.warp.grid_row(th, &mut xs, &mut ys);
                    warp_rotation_deg(&net.warp.base_x, &net.warp.base_y, &xs, &ys)
                })
                .collect();
            Codes {
                z_dim: cfg.z_dim,
                u_dim: cfg.u_dim,
                theta_dim: t,
                mu_z: post.mu_z,
                log_sigma_z: post.ls_z,
                mu_u: post.mu_u,
                log_sigma_u: post.ls_u,
                theta,
                warp_rotation_deg: turn,
                labels: data.labels[range].to_vec(),
            }
        })
        .collect();
    let mut parts = parts.into_iter();
    let mut all = parts.next().ok_or_else(|| Error::Config("no images to encode".into()))?;
    parts.for_each(|p| all.append(p));
    all.check_finite()?;
    Ok(all)
}

impl Codes {
    /// The next images' codes after these.
    fn append(&mut self, p: Codes) {
        self.mu_z.extend(p.mu_z);
        self.log_sigma_z.extend(p.log_sigma_z);
        self.mu_u.extend(p.mu_u);
        self.log_sigma_u.extend(p.log_sigma_u);
        self.theta.extend(p.theta);
        self.warp_rotation_deg.extend(p.warp_rotation_deg);
        self.labels.extend(p.labels);
    }

    pub fn images(&self) -> usize {
        self.labels.len()
    }

    /// A model that overflows gives codes no analysis should take as data.
    fn check_finite(&self) -> Result<()> {
        let blocks = [
            ("mu_z", &self.mu_z, self.z_dim),
            ("log_sigma_z", &self.log_sigma_z, self.z_dim),
            ("mu_u", &self.mu_u, self.u_dim),
            ("log_sigma_u", &self.log_sigma_u, self.u_dim),
            ("theta", &self.theta, self.theta_dim),
        ];
        for (name, v, width) in blocks {
            if let Some(at) = v.iter().position(|e| !e.is_finite()) {
                return Err(Error::Config(format!(
                    "the encoder gave a non-finite {name} (image {}, value {})",
                    at / width.max(1),
                    v[at]
                )));
            }
        }
        Ok(())
    }

    /// The codes as safetensors: F32 `mu_z`, `log_sigma_z` [n, Z], `mu_u`,
    /// `log_sigma_u` `[n, U]`, `theta` `[n, T]`, F64 `warp_rotation_deg` `[n]`
    /// (the u tensors, θ and the rotation only with a transform), U8
    /// `label` `[n]`; `metadata` goes to `__metadata__`.
    pub fn safetensors(&self, metadata: HashMap<String, String>) -> Vec<u8> {
        let n = self.images();
        let f32s = |v: &[f32]| v.iter().flat_map(|e| e.to_le_bytes()).collect::<Vec<u8>>();
        let mut tensors = vec![
            TensorBytes { name: "mu_z".into(), dtype: "F32", shape: vec![n, self.z_dim], bytes: f32s(&self.mu_z) },
            TensorBytes {
                name: "log_sigma_z".into(),
                dtype: "F32",
                shape: vec![n, self.z_dim],
                bytes: f32s(&self.log_sigma_z),
            },
            TensorBytes { name: "label".into(), dtype: "U8", shape: vec![n], bytes: self.labels.clone() },
        ];
        if self.theta_dim > 0 {
            let u = [("mu_u", &self.mu_u), ("log_sigma_u", &self.log_sigma_u)];
            for (name, v) in u {
                tensors.push(TensorBytes {
                    name: name.into(),
                    dtype: "F32",
                    shape: vec![n, self.u_dim],
                    bytes: f32s(v),
                });
            }
            tensors.push(TensorBytes {
                name: "theta".into(),
                dtype: "F32",
                shape: vec![n, self.theta_dim],
                bytes: f32s(&self.theta),
            });
            tensors.push(TensorBytes {
                name: "warp_rotation_deg".into(),
                dtype: "F64",
                shape: vec![n],
                bytes: self.warp_rotation_deg.iter().flat_map(|e| e.to_le_bytes()).collect(),
            });
        }
        serialize_tensors(tensors, metadata)
    }

    /// The codes as CSV, one row per image: index, label, mu_z_0…,
    /// log_sigma_z_0…, then with a transform mu_u_0…, log_sigma_u_0…,
    /// theta_0…, warp_rotation_deg. Floats print in their shortest form
    /// that reads back to the same bits.
    pub fn csv(&self) -> String {
        let mut blocks: Vec<(&str, &[f32], usize)> =
            vec![("mu_z", &self.mu_z, self.z_dim), ("log_sigma_z", &self.log_sigma_z, self.z_dim)];
        let warped = self.theta_dim > 0;
        if warped {
            blocks.push(("mu_u", &self.mu_u, self.u_dim));
            blocks.push(("log_sigma_u", &self.log_sigma_u, self.u_dim));
            blocks.push(("theta", &self.theta, self.theta_dim));
        }
        let mut out = String::from("index,label");
        for (name, _, width) in &blocks {
            (0..*width).for_each(|j| write!(out, ",{name}_{j}").expect("writing to a String"));
        }
        out.push_str(if warped { ",warp_rotation_deg\n" } else { "\n" });
        for (i, label) in self.labels.iter().enumerate() {
            write!(out, "{i},{label}").expect("writing to a String");
            for (_, v, width) in &blocks {
                v[i * width..(i + 1) * width].iter().for_each(|e| write!(out, ",{e}").expect("writing to a String"));
            }
            if warped {
                write!(out, ",{}", self.warp_rotation_deg[i]).expect("writing to a String");
            }
            out.push('\n');
        }
        out
    }
}
