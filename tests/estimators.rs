//! What `eval` reports beside the NLL about its importance samples: the
//! IWAE bound at smaller k, estimated from the same k samples in disjoint
//! groups (`--bounds`, Burda et al.'s L_K for each K dividing k), and the
//! weights' effective sample size.
mod common;
use common::*;
use iwtvae::data::{Binarize, Dataset, Split};
use iwtvae::eval::{evaluate, EvalOptions, ImageEstimate};
use iwtvae::model::{Layout, ModelConfig, Transform};
use iwtvae::network::{DecodeMode, Network};
use iwtvae::ops::logsumexp::logsumexp;
use iwtvae::ops::Par;
use iwtvae::rng::{NoiseKey, Stream};
use std::path::Path;

const MNIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist");

fn model(transform: Transform, seed: u64) -> (Network<f32>, Vec<f32>) {
    let layout = Layout::new(ModelConfig { height: 28, width: 28, ..tiny_config(transform) });
    let params = tiny_params(&layout, seed).iter().map(|&v| v as f32).collect();
    (Network::new(layout), params)
}

fn options(k: usize, chunk: usize, bounds: &[usize]) -> EvalOptions {
    EvalOptions {
        k,
        chunk,
        binarize: Binarize::Dynamic,
        seed: 7,
        precision: Default::default(),
        bounds: bounds.to_vec(),
    }
}

/// Image `index`'s k log-weights, all k samples in one decoder pass through
/// the network's steps, keyed as `evaluate` keys them.
fn log_weights(net: &Network<f32>, params: &[f32], data: &Dataset, index: usize, opts: &EvalOptions) -> Vec<f64> {
    let d = data.pixels();
    let mut ws = net.workspace(1, opts.k, false);
    let bin_key = NoiseKey::new(opts.seed, Stream::EvalBinarize, 0);
    data.targets(index, opts.binarize, bin_key, &mut ws.scratch_u32, &mut ws.x[..d]);
    net.encode(params, &mut ws, 1, Par::Seq);
    let (eps, eta) = (NoiseKey::new(opts.seed, Stream::EvalEps, 0), NoiseKey::new(opts.seed, Stream::EvalEta, 0));
    net.fill_noise(&mut ws, &[index as u32], opts.k, 0, eps, eta);
    net.sample_latents(&mut ws, 1, opts.k, false);
    net.decode(params, &mut ws, 1, opts.k, DecodeMode::Score, Par::Seq);
    net.log_weights(&mut ws, 1, opts.k);
    ws.logw[..opts.k].iter().map(|&v| v as f64).collect()
}

/// Each image's bound at K is the mean over its k/K disjoint groups of
/// (logsumexp − ln K), computed here from its log-weights by slicing. An
/// image's log-weights have the same bits in any pass size, and both sides
/// add the same f64 values in the same order, so the bits agree; K = 1 is
/// the ELBO's estimate and K = k the NLL, to the bit. The chunk of 7 makes
/// groups span decoder passes.
#[test]
fn bounds_are_the_grouped_bounds_of_each_images_log_weights() {
    let (net, params) = model(Transform::Tps, 3);
    let data = Dataset::load(Path::new(MNIST), Split::Test, Some(6)).unwrap();
    let sizes = [1, 4, 15, 20, 60];
    let opts = options(60, 7, &sizes);
    let (report, rows) = evaluate(&net, &params, &data, &opts).unwrap();
    for row in &rows {
        let v = log_weights(&net, &params, &data, row.index, &opts);
        for (j, &size) in sizes.iter().enumerate() {
            let groups = v.chunks(size).map(|g| logsumexp(g) - (size as f64).ln());
            let want = -(groups.sum::<f64>() / (60 / size) as f64);
            assert_eq!(
                row.bounds[j].to_bits(),
                want.to_bits(),
                "image {}, K = {size}: {} vs {want}",
                row.index,
                row.bounds[j]
            );
        }
        assert_eq!(row.bounds[0].to_bits(), row.elbo.to_bits(), "K = 1 is the ELBO");
        assert_eq!(row.bounds[4].to_bits(), row.nll.to_bits(), "K = k is the NLL");
    }
    let mean = |j: usize| rows.iter().map(|r| r.bounds[j]).sum::<f64>() / rows.len() as f64;
    for (j, b) in report.bounds.iter().enumerate() {
        assert_eq!((b.k, b.nll), (sizes[j], mean(j)));
        assert_eq!(b.nll_se, iwtvae::eval::standard_error(rows.iter().map(|r| r.bounds[j])));
    }
    assert_eq!(report.bounds[0].nll, report.elbo);
    assert_eq!(report.bounds[4].nll, report.nll);
}

/// The effective sample size (Σw)²/Σw² of each image's k weights, against
/// its log-weights computed directly (exp(2·lse(v) − lse(2v)) there, the
/// weights' sums here: 1e-9 relative); it lies in [1, k], and the report
/// gives its mean and minimum.
#[test]
fn effective_sample_size_of_each_images_weights() {
    let (net, params) = model(Transform::Affine, 2);
    let data = Dataset::load(Path::new(MNIST), Split::Test, Some(5)).unwrap();
    let opts = options(200, 64, &[]);
    let (report, rows) = evaluate(&net, &params, &data, &opts).unwrap();
    for row in &rows {
        let v = log_weights(&net, &params, &data, row.index, &opts);
        let top = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = v.iter().map(|x| (x - top).exp()).collect();
        let want = w.iter().sum::<f64>().powi(2) / w.iter().map(|x| x * x).sum::<f64>();
        assert!((row.ess - want).abs() < 1e-9 * want, "image {}: {} vs {want}", row.index, row.ess);
        assert!((1.0..=200.0).contains(&row.ess), "image {}: {}", row.index, row.ess);
    }
    let mean = rows.iter().map(|r| r.ess).sum::<f64>() / rows.len() as f64;
    assert!((report.ess_mean - mean).abs() < 1e-12 * mean);
    assert_eq!(report.ess_min, rows.iter().map(|r| r.ess).fold(f64::INFINITY, f64::min));
}

/// When K divides K', each group of K' is a union of groups of K, and the
/// log of a mean of means is at least the mean of their logs (the log is
/// concave): the estimates themselves, not only their expectations, tighten
/// along a chain of divisors, image by image.
#[test]
fn bounds_tighten_along_divisors_image_by_image() {
    let (net, params) = model(Transform::Affine, 5);
    let data = Dataset::load(Path::new(MNIST), Split::Test, Some(8)).unwrap();
    let sizes = [1, 2, 6, 30, 90, 180];
    let (_, rows) = evaluate(&net, &params, &data, &options(180, 50, &sizes)).unwrap();
    for row in &rows {
        for j in 1..sizes.len() {
            // A loss: lower is tighter; 1e-9 absorbs the sums' rounding.
            assert!(row.bounds[j] <= row.bounds[j - 1] + 1e-9, "image {}: {:?}", row.index, row.bounds);
        }
        assert!(row.bounds[0] - row.bounds[5] > 0.0, "image {}: no gap between K = 1 and K = 180", row.index);
    }
}

/// The bounds keep the evaluator's guarantee: an image's figures depend on
/// its index, not on the chunk, the thread count or the images grouped
/// with it (small k groups images into one decoder pass).
#[test]
fn bounds_do_not_depend_on_chunk_threads_or_grouping() {
    let (net, params) = model(Transform::Tps, 9);
    let data = Dataset::load(Path::new(MNIST), Split::Test, Some(23)).unwrap();
    let bits = |rows: &[ImageEstimate]| {
        rows.iter().map(|r| r.bounds.iter().map(|b| b.to_bits()).collect()).collect::<Vec<Vec<u64>>>()
    };
    let sizes = [1, 2, 3, 6];
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let two = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let (_, alone) = one.install(|| evaluate(&net, &params, &data, &options(6, 4, &sizes))).unwrap();
    for chunk in [5, 6, 30, 250] {
        let (_, other) = two.install(|| evaluate(&net, &params, &data, &options(6, chunk, &sizes))).unwrap();
        assert_eq!(bits(&alone), bits(&other), "chunk {chunk}");
    }
}

/// A size that does not divide k (or 0) is refused by name, before any
/// work; no sizes at all leaves the report's bounds empty.
#[test]
fn a_bound_that_does_not_divide_k_is_refused() {
    let (net, params) = model(Transform::None, 1);
    let data = Dataset::load(Path::new(MNIST), Split::Test, Some(2)).unwrap();
    for bad in [7, 0, 120] {
        let e = evaluate(&net, &params, &data, &options(60, 60, &[1, bad])).expect_err("refused").to_string();
        assert!(e.contains(&format!("--bounds {bad}")) && e.contains("divide --k 60"), "{e}");
    }
    let (report, rows) = evaluate(&net, &params, &data, &options(60, 60, &[])).unwrap();
    assert!(report.bounds.is_empty() && rows.iter().all(|r| r.bounds.is_empty()));
    assert!(!serde_json::to_string(&report).unwrap().contains("bounds"), "no bounds asked, no key");
}
