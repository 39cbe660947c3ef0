//! Two models compared image by image: the per-image estimates that
//! `iwtvae eval --per-image` writes, for the same test images under the same
//! seed (so the same binarized images and, image by image, the same noise).
//! The difference of the means is the mean of the per-image differences, but
//! its standard error is that of the differences, which vary far less than
//! either model's estimates (the hard images are hard for both): a paired
//! comparison resolves differences that the two `nll_se` figures would hide.
use crate::error::{Error, Result};
use crate::eval::standard_error;
use std::collections::BTreeMap;
use std::path::Path;

/// The per-image columns that can be compared (all losses in nats, lower is better).
pub const METRICS: [&str; 4] = ["nll", "elbo", "recon", "recon_at_mean"];

/// One image's value of the compared column.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ImageValue {
    pub label: u8,
    pub value: f64,
}

/// An error unless `metric` is one of [`METRICS`] or a bound column
/// `nll_k<K>` (`eval --bounds`).
pub fn check_metric(metric: &str) -> Result<()> {
    let bound = metric.strip_prefix("nll_k").is_some_and(|k| k.parse::<usize>().is_ok_and(|k| k > 0));
    if METRICS.contains(&metric) || bound {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "--metric {metric:?}: expected one of {}, or nll_k<K> for a bound of `eval --bounds`",
            METRICS.join(", ")
        )))
    }
}

/// A per-image CSV's column `metric`, by image index.
pub fn read_per_image(path: &Path, metric: &str) -> Result<BTreeMap<usize, ImageValue>> {
    check_metric(metric)?;
    let bad = |problem: String| Error::Table { path: path.to_path_buf(), problem };
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut lines = text.lines().enumerate();
    let header: Vec<&str> = lines.next().map(|(_, h)| h.split(',').map(str::trim).collect()).unwrap_or_default();
    let column = |name: &str| header.iter().position(|h| *h == name);
    let (Some(i_index), Some(i_label), Some(i_value)) = (column("index"), column("label"), column(metric)) else {
        return Err(bad(format!(
            "not a per-image CSV of `iwtvae eval --per-image`: the header needs index, label and {metric}, found {:?}",
            header.join(",")
        )));
    };
    let mut rows = BTreeMap::new();
    for (n, line) in lines.filter(|(_, l)| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        let cell = |i: usize, what: &str| {
            cells.get(i).copied().ok_or_else(|| bad(format!("line {}: no {what} (fewer cells than the header)", n + 1)))
        };
        let parse_err = |what: &str, v: &str| bad(format!("line {}: {what} {v:?} is not a number", n + 1));
        let index: usize = cell(i_index, "index")?.parse().map_err(|_| parse_err("index", cells[i_index]))?;
        let label: u8 = cell(i_label, "label")?.parse().map_err(|_| parse_err("label", cells[i_label]))?;
        let value: f64 = cell(i_value, metric)?.parse().map_err(|_| parse_err(metric, cells[i_value]))?;
        if !value.is_finite() {
            return Err(bad(format!("line {}: {metric} of image {index} is {value}", n + 1)));
        }
        if rows.insert(index, ImageValue { label, value }).is_some() {
            return Err(bad(format!("line {}: image {index} appears twice", n + 1)));
        }
    }
    if rows.is_empty() {
        return Err(bad("no images".into()));
    }
    Ok(rows)
}

/// Mean, standard error and count of one group of differences.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct MeanSe {
    pub n: usize,
    pub mean: f64,
    /// Standard deviation / √n; None for one value.
    pub se: Option<f64>,
}

impl MeanSe {
    pub fn of(values: &[f64]) -> Self {
        let n = values.len();
        MeanSe { n, mean: values.iter().sum::<f64>() / n as f64, se: standard_error(values.iter().copied()) }
    }
}

/// The differences B − A on the images of one label.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct LabelDiff {
    pub label: u8,
    #[serde(flatten)]
    pub diff: MeanSe,
}

/// B against A on the same images; every difference is B − A (negative:
/// B's loss is lower, B is better).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Comparison {
    pub metric: String,
    pub images: usize,
    pub a: MeanSe,
    pub b: MeanSe,
    /// Per-image differences B − A: their mean and paired standard error.
    pub diff: MeanSe,
    /// The 95% interval of the mean difference (±1.96 paired SE; normal
    /// approximation, sound for the thousands of images of a test set).
    pub ci95: Option<(f64, f64)>,
    /// The standard error the difference would have if the two figures were
    /// independent, √(SE_a² + SE_b²): what comparing two `nll ± nll_se` gives.
    pub unpaired_se: Option<f64>,
    /// The share of images on which B's value is lower.
    pub b_lower: f64,
    /// The differences per label, in label order.
    pub per_label: Vec<LabelDiff>,
}

/// Compares B with A on the same images (the same indices with the same
/// labels: anything else is an error, as a paired comparison needs them).
pub fn compare(
    metric: &str,
    (a_path, a): (&Path, &BTreeMap<usize, ImageValue>),
    (b_path, b): (&Path, &BTreeMap<usize, ImageValue>),
) -> Result<Comparison> {
    if a.keys().ne(b.keys()) {
        let common = a.keys().filter(|i| b.contains_key(i)).count();
        return Err(Error::Config(format!(
            "{} has {} images and {} has {}, {common} of them in common: a paired comparison needs the same images \
             (evaluate both with the same --data, --split, --limit and --seed)",
            a_path.display(),
            a.len(),
            b_path.display(),
            b.len()
        )));
    }
    if let Some((i, va)) = a.iter().find(|(i, va)| b[i].label != va.label) {
        return Err(Error::Config(format!(
            "image {i} has label {} in {} but {} in {}: not the same images",
            va.label,
            a_path.display(),
            b[i].label,
            b_path.display()
        )));
    }
    let values = |m: &BTreeMap<usize, ImageValue>| m.values().map(|v| v.value).collect::<Vec<f64>>();
    let (va, vb) = (values(a), values(b));
    let d: Vec<f64> = vb.iter().zip(&va).map(|(y, x)| y - x).collect();
    let (sa, sb, sd) = (MeanSe::of(&va), MeanSe::of(&vb), MeanSe::of(&d));
    let mut by_label: BTreeMap<u8, Vec<f64>> = BTreeMap::new();
    for ((_, v), di) in a.iter().zip(&d) {
        by_label.entry(v.label).or_default().push(*di);
    }
    Ok(Comparison {
        metric: metric.to_string(),
        images: d.len(),
        a: sa,
        b: sb,
        diff: sd,
        ci95: sd.se.map(|se| (sd.mean - 1.96 * se, sd.mean + 1.96 * se)),
        unpaired_se: sa.se.zip(sb.se).map(|(x, y)| x.hypot(y)),
        b_lower: d.iter().filter(|&&v| v < 0.0).count() as f64 / d.len() as f64,
        per_label: by_label.into_iter().map(|(label, v)| LabelDiff { label, diff: MeanSe::of(&v) }).collect(),
    })
}
