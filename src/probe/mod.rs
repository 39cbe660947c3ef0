//! Disentanglement, measured. A TVAE should keep what a digit is in z and
//! where and how it is drawn in u. `probe` puts numbers on both halves:
//!
//! * **label from the code**: a linear discriminant fit on the posterior
//!   means of upright training digits, tested on test digits rotated by each
//!   angle, reading z, u, or both. If z holds the identity, z alone keeps
//!   the accuracy as the digit turns; u should say little about the label.
//! * **how far rotation moves each block**: mean ‖μ(rotated) − μ(upright)‖²
//!   over the test digits divided by 2·(total variance of μ over the upright
//!   test digits): 0 when the block ignores the rotation, 1 when the rotated
//!   digit's code is as far from the upright one as another digit's is.
//! * **angle from the code**: least squares from the posterior mean to the
//!   applied angle (taken in [−180°, 180°)), fit on rotated training digits,
//!   R² on rotated test ones.
//!
//! Rotations turn the grey image about its centre with the model's own
//! bilinear sampler (border padding); dynamically binarized targets then use
//! the same uniforms as the upright image, so the rotation is the only
//! difference.
mod readout;

pub use readout::{LeastSquares, LinearDiscriminant, NormalEquations};

use crate::data::dataset::bernoulli_targets;
use crate::data::{Binarize, Dataset};
use crate::encode::encode_with;
use crate::error::{Error, Result};
use crate::network::Network;
use crate::ops::grid_sample::grid_sample_row;
use crate::rng::NoiseKey;
use serde::Serialize;
use std::borrow::Cow;
use std::time::Instant;

const CLASSES: usize = 10;

#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// Rotation angles in degrees, counter-clockwise as displayed.
    pub angles_deg: Vec<f64>,
    pub binarize: Binarize,
    /// Keys the binarization (as evaluation does).
    pub seed: u64,
}

impl ProbeOptions {
    /// Evaluation's binarization key: upright targets are eval's own.
    pub fn key(&self) -> NoiseKey {
        crate::encode::eval_key(self.seed)
    }
}

/// One rotation angle's figures; `None` for u when the model has no u.
#[derive(Clone, Debug, Serialize)]
pub struct AngleRow {
    pub angle_deg: f64,
    pub accuracy_z: f64,
    pub accuracy_u: Option<f64>,
    pub accuracy_zu: Option<f64>,
    /// `None` when the block's posterior mean does not vary over the data.
    pub moved_z: Option<f64>,
    pub moved_u: Option<f64>,
    /// Mean over the test digits of how far the warp set by μu turns when
    /// the digit does (degrees, see `warp_rotation_deg`): the rotation
    /// angle itself when u takes the whole rotation, 0 when z does.
    pub warp_turn_deg: Option<f64>,
    /// The same per class of the label, `[10]` (NaN for a class absent from
    /// the test digits): how much of the turn the warp takes differs by digit.
    pub warp_turn_by_class_deg: Option<Vec<f64>>,
}

/// R² of the rotation angle read linearly from each block.
#[derive(Clone, Debug, Serialize)]
pub struct AngleReadout {
    pub r2_z: f64,
    pub r2_u: Option<f64>,
    pub r2_zu: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProbeReport {
    pub transform: &'static str,
    pub z_dim: usize,
    pub u_dim: usize,
    pub train_images: usize,
    pub test_images: usize,
    pub binarize: &'static str,
    pub seed: u64,
    pub rows: Vec<AngleRow>,
    /// `None` with fewer than two distinct angles.
    pub angle_readout: Option<AngleReadout>,
    pub seconds: f64,
}

/// Refuse an empty list or an angle that is not finite or beyond ±360°.
pub fn check_angles(angles_deg: &[f64]) -> Result<()> {
    if let Some(a) = angles_deg.iter().find(|a| !a.is_finite() || a.abs() > 360.0) {
        return Err(Error::Config(format!("rotation angle {a}: expected a finite angle within ±360 degrees")));
    }
    if angles_deg.is_empty() {
        return Err(Error::Config("no rotation angles".into()));
    }
    Ok(())
}

/// The angle in [−180°, 180°): what the read-out predicts, so that 360° and
/// 0°, the same image, are one target.
fn wrapped(degrees: f64) -> f64 {
    (degrees + 180.0).rem_euclid(360.0) - 180.0
}

/// Posterior means of n images, [n, Z] and [n, U], and the rotation of
/// the warp they set, [n] degrees (empty for transform none).
struct Codes {
    z: Vec<f64>,
    u: Vec<f64>,
    turn: Vec<f64>,
}

impl Codes {
    /// [n, Z + U]: z then u per row.
    fn joined(&self, z_dim: usize, u_dim: usize) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.z.len() + self.u.len());
        for (z, u) in self.z.chunks_exact(z_dim).zip(self.u.chunks_exact(u_dim.max(1))) {
            out.extend_from_slice(z);
            out.extend_from_slice(&u[..u_dim]);
        }
        out
    }
}

pub fn probe(
    net: &Network<f32>,
    params: &[f32],
    train: &Dataset,
    test: &Dataset,
    opts: &ProbeOptions,
) -> Result<ProbeReport> {
    let start = Instant::now();
    let cfg = &net.layout.config;
    train.check_fits(cfg)?;
    test.check_fits(cfg)?;
    check_angles(&opts.angles_deg)?;
    let (zd, ud) = (cfg.z_dim, cfg.u_dim);
    let encode = |data: &Dataset, angle: f64| encode_rotated(net, params, data, angle, opts);
    let blocks: Vec<Block> = if ud > 0 { vec![Block::Z, Block::U, Block::Both] } else { vec![Block::Z] };

    let train_codes = encode(train, 0.0)?;
    let label_readouts = blocks
        .iter()
        .map(|b| LinearDiscriminant::fit(&b.rows(&train_codes, zd, ud), &train.labels, b.width(zd, ud), CLASSES))
        .collect::<Result<Vec<_>>>()?;
    let upright = encode(test, 0.0)?;
    let spread_z = total_variance(&upright.z, zd);
    let spread_u = (ud > 0).then(|| total_variance(&upright.u, ud));

    let mut rows = Vec::with_capacity(opts.angles_deg.len());
    let mut test_turned = Vec::new();
    for &angle in &opts.angles_deg {
        let codes = if angle == 0.0 { None } else { Some(encode(test, angle)?) };
        let c = codes.as_ref().unwrap_or(&upright);
        let accuracy = |i: usize| -> Result<Option<f64>> {
            label_readouts.get(i).map(|m| m.accuracy(&blocks[i].rows(c, zd, ud), &test.labels)).transpose()
        };
        let (warp_turn_deg, warp_turn_by_class_deg) = warp_turns(&upright.turn, &c.turn, &test.labels);
        rows.push(AngleRow {
            angle_deg: angle,
            accuracy_z: accuracy(0)?.unwrap_or(0.0),
            accuracy_u: accuracy(1)?,
            accuracy_zu: accuracy(2)?,
            moved_z: moved(&upright.z, &c.z, zd, spread_z),
            moved_u: spread_u.and_then(|s| moved(&upright.u, &c.u, ud, s)),
            warp_turn_deg,
            warp_turn_by_class_deg,
        });
        test_turned.push((angle, codes));
    }

    let mut distinct: Vec<f64> = opts.angles_deg.iter().map(|&a| wrapped(a)).collect();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    let angle_readout = if distinct.len() < 2 {
        None
    } else {
        // Fit on every training digit at every angle, one angle's codes at a time.
        let mut equations: Vec<NormalEquations> =
            blocks.iter().map(|b| NormalEquations::new(b.width(zd, ud))).collect();
        for &angle in &opts.angles_deg {
            let turned = if angle == 0.0 { None } else { Some(encode(train, angle)?) };
            let c = turned.as_ref().unwrap_or(&train_codes);
            for (eq, b) in equations.iter_mut().zip(&blocks) {
                let w = b.width(zd, ud);
                b.rows(c, zd, ud).chunks_exact(w).for_each(|row| eq.add(row, wrapped(angle)));
            }
        }
        let mut r2 = Vec::new();
        for (eq, b) in equations.iter().zip(&blocks) {
            let (mut x, mut y) = (Vec::new(), Vec::new());
            for (angle, codes) in &test_turned {
                let rows = b.rows(codes.as_ref().unwrap_or(&upright), zd, ud);
                y.extend(std::iter::repeat_n(wrapped(*angle), rows.len() / b.width(zd, ud)));
                x.extend_from_slice(&rows);
            }
            r2.push(eq.solve()?.r_squared(&x, &y)?);
        }
        Some(AngleReadout { r2_z: r2[0], r2_u: r2.get(1).copied(), r2_zu: r2.get(2).copied() })
    };

    Ok(ProbeReport {
        transform: cfg.transform.name(),
        z_dim: zd,
        u_dim: ud,
        train_images: train.len(),
        test_images: test.len(),
        binarize: opts.binarize.name(),
        seed: opts.seed,
        rows,
        angle_readout,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// How far the warp turned between the upright and the turned digits'
/// codes (per-image rotations [n] in degrees): the mean, and the mean per
/// class (NaN for a class with no digit). `None` without a warp.
fn warp_turns(upright: &[f64], turned: &[f64], labels: &[u8]) -> (Option<f64>, Option<Vec<f64>>) {
    if upright.is_empty() {
        return (None, None);
    }
    let (mut sum, mut count) = ([0f64; CLASSES], [0usize; CLASSES]);
    let mut total = 0.0;
    for ((a, b), &l) in upright.iter().zip(turned).zip(labels) {
        let turn = wrapped(b - a);
        total += turn;
        if (l as usize) < CLASSES {
            sum[l as usize] += turn;
            count[l as usize] += 1;
        }
    }
    let by_class = sum.iter().zip(count).map(|(s, n)| if n > 0 { s / n as f64 } else { f64::NAN }).collect();
    (Some(total / upright.len() as f64), Some(by_class))
}

#[derive(Clone, Copy)]
enum Block {
    Z,
    U,
    Both,
}

impl Block {
    fn width(self, zd: usize, ud: usize) -> usize {
        match self {
            Block::Z => zd,
            Block::U => ud,
            Block::Both => zd + ud,
        }
    }

    /// The block's rows [n, width]: borrowed for z and u, joined for both.
    fn rows(self, c: &Codes, zd: usize, ud: usize) -> Cow<'_, [f64]> {
        match self {
            Block::Z => Cow::Borrowed(&c.z),
            Block::U => Cow::Borrowed(&c.u),
            Block::Both => Cow::Owned(c.joined(zd, ud)),
        }
    }
}

/// Σ_d Var_i x[i, d] over rows x [n, d].
fn total_variance(x: &[f64], d: usize) -> f64 {
    let n = (x.len() / d) as f64;
    let mut mean = vec![0f64; d];
    x.chunks_exact(d).for_each(|r| mean.iter_mut().zip(r).for_each(|(m, v)| *m += v / n));
    x.chunks_exact(d).map(|r| r.iter().zip(&mean).map(|(v, m)| (v - m).powi(2)).sum::<f64>()).sum::<f64>() / n
}

/// Mean ‖after − before‖² per row, over 2·spread (see the module doc).
fn moved(before: &[f64], after: &[f64], d: usize, spread: f64) -> Option<f64> {
    if spread <= 0.0 || before.is_empty() {
        return None;
    }
    let n = (before.len() / d) as f64;
    let sq: f64 = before.iter().zip(after).map(|(a, b)| (a - b).powi(2)).sum();
    Some(sq / n / (2.0 * spread))
}

/// The rotation (degrees, counter-clockwise as displayed) that best maps
/// the base grid onto the warp's sampling grid xs, ys [H·W] (least squares
/// about the centroids, Procrustes): for an affine θ with linear part A it
/// is atan2(A₁₀ − A₀₁, A₀₀ + A₁₁).
pub fn warp_rotation_deg(base_x: &[f32], base_y: &[f32], xs: &[f32], ys: &[f32]) -> f64 {
    let mean = |v: &[f32]| v.iter().map(|&a| a as f64).sum::<f64>() / v.len().max(1) as f64;
    let (bx0, by0, x0, y0) = (mean(base_x), mean(base_y), mean(xs), mean(ys));
    let (mut cross, mut dot) = (0f64, 0f64);
    for p in 0..base_x.len() {
        let (bx, by) = (base_x[p] as f64 - bx0, base_y[p] as f64 - by0);
        let (x, y) = (xs[p] as f64 - x0, ys[p] as f64 - y0);
        // With y pointing down, sampling positions turned by +α (this
        // sign) show the image turned by α counter-clockwise, as `rotate`.
        cross += bx * y - by * x;
        dot += bx * x + by * y;
    }
    cross.atan2(dot).to_degrees()
}

/// Rotate a grey image [h, w] by `degrees` (counter-clockwise as displayed,
/// y pointing down) about its centre into `out` [h, w]: output pixel (i, j)
/// samples the input at the centre plus R(−angle)·((j, i) − centre), with
/// the bilinear sampler's border padding.
pub fn rotate(img: &[f32], h: usize, w: usize, degrees: f64, out: &mut [f32]) {
    Turn::new(h, w, degrees).image(img, out);
}

/// One rotation applied to many images: its sampling grid is computed once,
/// and the buffers to turn and binarize an image are reused.
pub struct Turn {
    degrees: f64,
    h: usize,
    w: usize,
    /// grid: xs, ys [h·w], normalized coordinates (align_corners = true).
    xs: Vec<f32>,
    ys: Vec<f32>,
    grey: Vec<f32>,
    turned: Vec<f32>,
    uniforms: Vec<f32>,
}

impl Turn {
    pub fn new(h: usize, w: usize, degrees: f64) -> Self {
        let (s, c) = degrees.to_radians().sin_cos();
        let (cx, cy) = ((w - 1) as f64 / 2.0, (h - 1) as f64 / 2.0);
        let (mut xs, mut ys) = (vec![0f32; h * w], vec![0f32; h * w]);
        for i in 0..h {
            for j in 0..w {
                let (dx, dy) = (j as f64 - cx, i as f64 - cy);
                let (sx, sy) = (cx + c * dx - s * dy, cy + s * dx + c * dy);
                // pixel → normalized coordinates, align_corners = true
                xs[i * w + j] = (2.0 * sx / (w - 1) as f64 - 1.0) as f32;
                ys[i * w + j] = (2.0 * sy / (h - 1) as f64 - 1.0) as f32;
            }
        }
        let zeros = vec![0f32; h * w];
        Turn { degrees, h, w, xs, ys, grey: zeros.clone(), turned: zeros.clone(), uniforms: zeros }
    }

    /// The grey image `img` [h, w] turned into `out` [h, w].
    pub fn image(&self, img: &[f32], out: &mut [f32]) {
        let (h, w) = (self.h, self.w);
        assert!(img.len() == h * w && out.len() == h * w, "rotate: image and output must be {h}x{w}");
        grid_sample_row(img, h, w, &self.xs, &self.ys, out);
    }

    /// The targets of image `index` of `data` turned into `out` `[pixels]`:
    /// the grey image turned, then, binarized, drawn with the upright
    /// image's uniforms (`Dataset::targets`'s key and item), so that the
    /// turn is the only difference. At 0° exactly the upright targets, not
    /// resampled.
    pub fn targets(&mut self, data: &Dataset, index: usize, binarize: Binarize, key: NoiseKey, out: &mut [f32]) {
        if self.degrees == 0.0 {
            data.targets(index, binarize, key, &mut self.uniforms, out);
            return;
        }
        self.grey.iter_mut().zip(data.image(index)).for_each(|(g, &b)| *g = b as f32 / 255.0);
        let mut turned = std::mem::take(&mut self.turned);
        self.image(&self.grey, &mut turned);
        match binarize {
            Binarize::None => out.copy_from_slice(&turned),
            Binarize::Dynamic => bernoulli_targets(key, index, turned.iter().copied(), &mut self.uniforms, out),
        }
        self.turned = turned;
    }
}

/// Posterior means of every image of `data` rotated by `degrees` (0: the
/// images as evaluation sees them, no resampling).
fn encode_rotated(
    net: &Network<f32>,
    params: &[f32],
    data: &Dataset,
    degrees: f64,
    opts: &ProbeOptions,
) -> Result<Codes> {
    let key = opts.key();
    let codes = encode_with(
        net,
        params,
        data,
        || Turn::new(data.height, data.width, degrees),
        |turn, i, out| turn.targets(data, i, opts.binarize, key, out),
    )
    .map_err(|e| Error::Config(format!("{e} (rotation {degrees}°)")))?;
    let wide = |v: &[f32]| v.iter().map(|&e| e as f64).collect();
    Ok(Codes { z: wide(&codes.mu_z), u: wide(&codes.mu_u), turn: codes.warp_rotation_deg })
}
