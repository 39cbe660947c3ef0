//! Pictures: image grids and warps drawn into an RGB canvas and written as
//! PNG, and training curves (plotters).
pub mod curves;
pub mod figures;
pub mod transfer;

use crate::error::{Error, Result};
use crate::fsutil::atomic_write;
use std::path::Path;

/// Space between images, the background, and the marks of u (blue) and z
/// (green) rows, the same in every figure.
const GAP: usize = 4;
const BG: [u8; 3] = [40, 40, 48];
const U_MARK: [u8; 3] = [70, 140, 255];
const Z_MARK: [u8; 3] = [90, 200, 90];

/// An RGB canvas, row-major, 3 bytes per pixel.
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
    /// Drawing (lines, dots) is limited to this rectangle [x0, x1) × [y0, y1).
    pub clip: Option<(i64, i64, i64, i64)>,
}

impl Canvas {
    pub fn new(width: usize, height: usize, background: [u8; 3]) -> Self {
        let mut rgb = Vec::with_capacity(width * height * 3);
        for _ in 0..width * height {
            rgb.extend_from_slice(&background);
        }
        Canvas { width, height, rgb, clip: None }
    }

    fn plot(&mut self, x: i64, y: i64, color: [u8; 3]) {
        if let Some((x0, y0, x1, y1)) = self.clip {
            if x < x0 || x >= x1 || y < y0 || y >= y1 {
                return;
            }
        }
        self.set(x, y, color);
    }

    pub fn set(&mut self, x: i64, y: i64, color: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let i = (y as usize * self.width + x as usize) * 3;
            self.rgb[i..i + 3].copy_from_slice(&color);
        }
    }

    /// A filled w×h rectangle with its top-left at (x0, y0).
    pub fn fill_rect(&mut self, x0: usize, y0: usize, w: usize, h: usize, color: [u8; 3]) {
        for y in y0..y0 + h {
            for x in x0..x0 + w {
                self.set(x as i64, y as i64, color);
            }
        }
    }

    /// A grayscale image in [0, 1] (1 = white ink on black, as MNIST), each
    /// pixel a scale×scale block, top-left at (x0, y0).
    pub fn image(&mut self, x0: usize, y0: usize, img: &[f32], h: usize, w: usize, scale: usize) {
        for i in 0..h * scale {
            for j in 0..w * scale {
                let v = img[(i / scale) * w + j / scale];
                let g = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
                self.set((x0 + j) as i64, (y0 + i) as i64, [g, g, g]);
            }
        }
    }

    pub fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), color: [u8; 3]) {
        let steps = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
        for s in 0..=steps {
            let t = s as f64 / steps as f64;
            self.plot((x0 + t * (x1 - x0)).round() as i64, (y0 + t * (y1 - y0)).round() as i64, color);
        }
    }

    pub fn dot(&mut self, (x, y): (f64, f64), radius: f64, color: [u8; 3]) {
        let r = radius.ceil() as i64;
        for dy in -r..=r {
            for dx in -r..=r {
                if ((dx * dx + dy * dy) as f64) <= radius * radius {
                    self.plot(x.round() as i64 + dx, y.round() as i64 + dy, color);
                }
            }
        }
    }

    pub fn save_png(&self, path: &Path) -> Result<()> {
        let mut bytes = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut bytes, self.width as u32, self.height as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut writer =
                enc.write_header().map_err(|e| Error::Config(format!("{}: PNG encoding: {e}", path.display())))?;
            writer
                .write_image_data(&self.rgb)
                .map_err(|e| Error::Config(format!("{}: PNG encoding: {e}", path.display())))?;
        }
        atomic_write(path, &bytes)
    }
}
