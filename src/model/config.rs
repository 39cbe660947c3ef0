//! What a model is: transform, latent sizes, hidden width and image size.
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    /// The plain VAE: no u, p = c.
    None,
    /// θ is a 2×3 affine matrix.
    Affine,
    /// θ are the source positions of a g×g grid of control points.
    Tps,
}

impl Transform {
    pub fn name(self) -> &'static str {
        match self {
            Transform::None => "none",
            Transform::Affine => "affine",
            Transform::Tps => "tps",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Transform::None),
            "affine" => Ok(Transform::Affine),
            "tps" => Ok(Transform::Tps),
            other => Err(Error::Config(format!("--transform {other:?}: expected none, affine or tps"))),
        }
    }
}

/// Largest z, u or hidden width accepted.
pub const MAX_WIDTH: usize = 1 << 16;
/// Largest image side accepted.
pub const MAX_SIDE: usize = 1 << 12;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelConfig {
    pub transform: Transform,
    pub z_dim: usize,
    /// 0 when transform is none.
    pub u_dim: usize,
    pub hidden: usize,
    /// Control points per side (tps only).
    pub tps_grid: usize,
    pub height: usize,
    pub width: usize,
}

impl ModelConfig {
    pub fn pixels(&self) -> usize {
        self.height * self.width
    }

    /// Size of θ: 6 for affine, 2g² for tps, 0 for none.
    pub fn theta_dim(&self) -> usize {
        match self.transform {
            Transform::None => 0,
            Transform::Affine => 6,
            Transform::Tps => 2 * self.tps_grid * self.tps_grid,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.z_dim == 0 || self.hidden == 0 {
            return Err(Error::Config("--z-dim and --hidden must be at least 1".into()));
        }
        // Far past any MLP VAE, and small enough that every size computed
        // from them (hidden², pixels·hidden) fits a usize without overflow.
        for (flag, value, max) in [
            ("--z-dim", self.z_dim, MAX_WIDTH),
            ("--u-dim", self.u_dim, MAX_WIDTH),
            ("--hidden", self.hidden, MAX_WIDTH),
            ("image height", self.height, MAX_SIDE),
            ("image width", self.width, MAX_SIDE),
        ] {
            if value > max {
                return Err(Error::Config(format!("{flag} {value} exceeds the limit {max}")));
            }
        }
        if self.transform == Transform::None && self.u_dim != 0 {
            return Err(Error::Config(format!(
                "--u-dim {} given with --transform none: the plain VAE has no u (use --u-dim 0)",
                self.u_dim
            )));
        }
        if self.transform != Transform::None && self.u_dim == 0 {
            return Err(Error::Config(format!("--transform {} needs --u-dim of at least 1", self.transform.name())));
        }
        if self.transform == Transform::Tps && !(2..=16).contains(&self.tps_grid) {
            return Err(Error::Config(format!("--tps-grid {} out of range 2..=16", self.tps_grid)));
        }
        if self.height < 2 || self.width < 2 {
            return Err(Error::Config(format!("image size {}x{} too small", self.height, self.width)));
        }
        Ok(())
    }
}
