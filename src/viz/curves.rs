//! Training curves from a run's log.jsonl (and its final NLL, when
//! evaluated), drawn with plotters into a PNG.
use super::Canvas;
use crate::error::{Error, Result};
use plotters::prelude::*;
use std::path::Path;

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSansMono.ttf");

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The bundled font is valid; a failure would only leave text unrendered.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Loss per epoch of one or more runs (name, [(epoch, loss)]), with optional
/// final NLL points (name, epoch, nll).
pub fn plot_curves(
    path: &Path,
    title: &str,
    series: &[(String, Vec<(f64, f64)>)],
    nll: &[(String, f64, f64)],
) -> Result<()> {
    register_font();
    let (w, h) = (900u32, 560u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    let err = |e: String| Error::Config(format!("{}: plotting: {e}", path.display()));
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let all: Vec<f64> =
            series.iter().flat_map(|(_, s)| s.iter().map(|p| p.1)).chain(nll.iter().map(|p| p.2)).collect();
        if all.is_empty() {
            return Err(err("no data".into()));
        }
        let max_epoch = series.iter().flat_map(|(_, s)| s.iter().map(|p| p.0)).fold(1.0, f64::max);
        // Skip the first epoch's large loss when choosing the y range.
        let tail: Vec<f64> =
            series.iter().flat_map(|(_, s)| s.iter().skip(1).map(|p| p.1)).chain(nll.iter().map(|p| p.2)).collect();
        let pick = if tail.is_empty() { &all } else { &tail };
        let lo = pick.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = pick.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let pad = ((hi - lo) * 0.08).max(0.5);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..max_epoch + 1.0, (lo - pad)..(hi + pad))
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("nats per image (lower is better)")
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        let palette = [
            BLUE,
            RED,
            GREEN,
            MAGENTA,
            CYAN,
            BLACK,
            RGBColor(230, 140, 0),
            RGBColor(120, 60, 160),
            RGBColor(0, 130, 130),
        ];
        for (i, (name, s)) in series.iter().enumerate() {
            let color = palette[i % palette.len()];
            chart
                .draw_series(LineSeries::new(s.iter().cloned(), color.stroke_width(2)))
                .map_err(|e| err(e.to_string()))?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        }
        // Paired with the series one to one: the same color as its line.
        let paired = nll.len() == series.len();
        for (i, (name, epoch, v)) in nll.iter().enumerate() {
            let color = palette[if paired { i } else { series.len() + i } % palette.len()];
            chart
                .draw_series(std::iter::once(Circle::new((*epoch, *v), 6, color.filled())))
                .map_err(|e| err(e.to_string()))?
                .label(name.clone())
                .legend(move |(x, y)| Circle::new((x + 9, y), 5, color.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Canvas { width: w as usize, height: h as usize, rgb: buf, clip: None }.save_png(path)
}

/// (epoch, loss) pairs from a log.jsonl.
pub fn read_log(path: &Path) -> Result<Vec<(f64, f64)>> {
    read_log_field(path, "loss")
}

/// (epoch, `field`) for every line of a run's log.jsonl that has a number
/// there (`test_nll` is on the monitored epochs only).
pub fn read_log_field(path: &Path, field: &str) -> Result<Vec<(f64, f64)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| Error::Dataset {
            path: path.to_path_buf(),
            problem: format!("line {}: not JSON ({e})", n + 1),
        })?;
        if let (Some(e), Some(l)) = (v["epoch"].as_f64(), v[field].as_f64()) {
            out.push((e, l));
        }
    }
    Ok(out)
}
