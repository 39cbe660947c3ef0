//! A split of an MNIST-format dataset held as bytes, and batch assembly with
//! continuous or dynamically binarized targets.
use super::idx::read_idx;
use crate::error::{Error, Result};
use crate::rng::NoiseKey;
use crate::Real;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    /// `--split test|train`.
    pub fn parse(s: &str) -> Result<Split> {
        match s {
            "test" => Ok(Split::Test),
            "train" => Ok(Split::Train),
            o => Err(Error::Config(format!("--split {o:?}: expected test or train"))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }

    fn stems(self) -> (&'static str, &'static str) {
        match self {
            Split::Train => ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
            Split::Test => ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
        }
    }
}

/// How pixel bytes become targets in [0, 1].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binarize {
    /// x = byte / 255.
    None,
    /// x ~ Bernoulli(byte / 255), a fresh draw each time an image is used.
    Dynamic,
}

impl Binarize {
    /// The `--binarize` value.
    pub fn name(self) -> &'static str {
        match self {
            Binarize::None => "none",
            Binarize::Dynamic => "dynamic",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Dataset {
    /// [n, height * width], row-major bytes.
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub height: usize,
    pub width: usize,
}

impl Dataset {
    /// Load a split from `dir`; `limit` keeps the first N images.
    pub fn load(dir: &Path, split: Split, limit: Option<usize>) -> Result<Self> {
        let (img_stem, lbl_stem) = split.stems();
        let images = read_idx(dir, img_stem, 3)?;
        let labels = read_idx(dir, lbl_stem, 1)?;
        let (n, height, width) = (images.dims[0], images.dims[1], images.dims[2]);
        if height < 2 || width < 2 {
            return Err(Error::Dataset {
                path: dir.join(img_stem),
                problem: format!("unexpected image size {height}x{width}: need at least 2x2"),
            });
        }
        if labels.dims[0] != n {
            return Err(Error::Dataset {
                path: dir.join(lbl_stem),
                problem: format!("image/label count mismatch: {n} images in {img_stem} but {} labels", labels.dims[0]),
            });
        }
        let mut ds = Dataset { images: images.data, labels: labels.data, height, width };
        if let Some(l) = limit {
            if l == 0 {
                return Err(Error::Config("the image limit (--limit, --limit-train) must be at least 1".into()));
            }
            let keep = l.min(n);
            ds.images.truncate(keep * height * width);
            ds.labels.truncate(keep);
        }
        Ok(ds)
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn pixels(&self) -> usize {
        self.height * self.width
    }

    /// Refuse a model drawn for another image size.
    pub fn check_fits(&self, cfg: &crate::model::ModelConfig) -> Result<()> {
        if (cfg.height, cfg.width) != (self.height, self.width) {
            return Err(Error::Config(format!(
                "the model expects {}x{} images but the data has {}x{}",
                cfg.height, cfg.width, self.height, self.width
            )));
        }
        Ok(())
    }

    /// A digest of the images and labels (after any limit), kept with a
    /// training run so that `--resume` on other data is refused:
    /// "fnv1a64:" and 16 hex digits of FNV-1a (64-bit) over the height and
    /// width (u64 little-endian), then the image bytes, then the label bytes.
    pub fn digest(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let dims = [(self.height as u64).to_le_bytes(), (self.width as u64).to_le_bytes()];
        for &b in dims.iter().flatten().chain(&self.images).chain(&self.labels) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("fnv1a64:{h:016x}")
    }

    pub fn image(&self, i: usize) -> &[u8] {
        let d = self.pixels();
        &self.images[i * d..(i + 1) * d]
    }

    /// Write the targets of image `index` into `out` (`[pixels]`). Binarized
    /// draws use sample 0 of `key`'s stream with the image index as the item.
    pub fn targets<T: Real>(
        &self,
        index: usize,
        binarize: Binarize,
        key: NoiseKey,
        scratch: &mut [f32],
        out: &mut [T],
    ) {
        let img = self.image(index);
        match binarize {
            Binarize::None => {
                for (o, &b) in out.iter_mut().zip(img) {
                    *o = T::of(b as f64 / 255.0);
                }
            }
            Binarize::Dynamic => bernoulli_targets(key, index, img.iter().map(|&b| b as f32 / 255.0), scratch, out),
        }
    }
}

/// Bernoulli(p) draws of image `index`'s grey levels `probs` into `out`,
/// from sample 0 of `key`'s stream with the index as the item: the draws
/// `Dataset::targets` makes, for grey levels that are not the stored bytes
/// (a turned image in `probe`).
#[inline]
pub fn bernoulli_targets<T: Real>(
    key: NoiseKey,
    index: usize,
    probs: impl Iterator<Item = f32>,
    uniforms: &mut [f32],
    out: &mut [T],
) {
    key.uniforms(index as u32, 0, uniforms);
    for ((o, p), &u) in out.iter_mut().zip(probs).zip(uniforms.iter()) {
        *o = if u < p { T::one() } else { T::zero() };
    }
}
