//! The signal-to-noise ratio of each objective's gradient estimator at a
//! trained model, as Rainforth et al. 2018 ("Tighter variational bounds are
//! not necessarily better") measure it: for each parameter, |mean| / sd of
//! its minibatch gradient over independent noise draws, on one fixed
//! minibatch (the first N training images, binarized once). Their result:
//! IWAE's encoder SNR falls as 1/√k while its decoder's rises as √k; the
//! doubly reparameterized estimator (`iwae-dreg`) keeps the encoder's from
//! falling. Prints one JSON line per (objective, k).
//!
//!     cargo bench --bench gradient_snr -- CHECKPOINT
//!     IWTVAE_SNR_K=5,50,500 IWTVAE_SNR_DRAWS=200 IWTVAE_SNR_IMAGES=100 \
//!       IWTVAE_SNR_OBJECTIVES=iwae,iwae-dreg,elbo,elbo-stl cargo bench --bench gradient_snr -- CHECKPOINT
use iwtvae::data::{Binarize, Dataset, Split};
use iwtvae::model::checkpoint::load_checkpoint;
use iwtvae::network::Network;
use iwtvae::objective::{loss_and_grad, LatentKeys, Objective};
use iwtvae::ops::Par;
use iwtvae::rng::{NoiseKey, Stream};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Rows (images × k) per forward/backward call: bounds the workspace.
const ROWS_PER_CALL: usize = 2000;

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name).unwrap_or_else(|_| default.into()).split(',').map(|s| s.trim().to_string()).collect()
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The minibatch gradient (mean over `targets`' images) for one draw of
/// the latent noise, computed in chunks of images on all threads.
fn minibatch_gradient(
    net: &Network<f32>,
    params: &[f32],
    targets: &[f32],
    images: usize,
    k: usize,
    obj: Objective,
    keys: LatentKeys,
) -> Vec<f64> {
    let d = net.layout.config.pixels();
    let per_call = (ROWS_PER_CALL / k).clamp(1, images);
    let chunks: Vec<(usize, usize)> = (0..images).step_by(per_call).map(|s| (s, (s + per_call).min(images))).collect();
    chunks
        .par_iter()
        .map_init(
            || (net.workspace(per_call, k, true), vec![0f32; net.layout.total]),
            |(ws, g), &(start, end)| {
                let b = end - start;
                ws.x[..b * d].copy_from_slice(&targets[start * d..end * d]);
                let items: Vec<u32> = (start as u32..end as u32).collect();
                g.iter_mut().for_each(|v| *v = 0.0);
                loss_and_grad(net, params, Some(g), ws, &items, k, obj, keys, Par::Seq);
                // loss_and_grad averages over its b images; the minibatch over all.
                let share = b as f64 / images as f64;
                g.iter().map(|&v| v as f64 * share).collect::<Vec<f64>>()
            },
        )
        .reduce(
            || vec![0f64; net.layout.total],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        )
}

/// Mean and median of |mean| / sd over the coordinates in `which` whose
/// gradient varies at all (dead ReLU units' weights have none).
fn snr_summary(sum: &[f64], sum2: &[f64], draws: f64, which: impl Iterator<Item = usize>) -> (f64, f64, usize) {
    let mut snr: Vec<f64> = which
        .filter_map(|j| {
            let mean = sum[j] / draws;
            let var = (sum2[j] / draws - mean * mean).max(0.0) * draws / (draws - 1.0);
            (var > 1e-24).then(|| mean.abs() / var.sqrt())
        })
        .collect();
    snr.sort_by(f64::total_cmp);
    let n = snr.len();
    let mean = snr.iter().sum::<f64>() / n.max(1) as f64;
    (mean, if n > 0 { snr[n / 2] } else { f64::NAN }, n)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; nothing to list.
    }
    let Some(checkpoint) = args.first().map(PathBuf::from) else {
        eprintln!("usage: cargo bench --bench gradient_snr -- CHECKPOINT (a trained model's checkpoint.safetensors)");
        std::process::exit(2);
    };
    let loaded = load_checkpoint(&checkpoint).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let data_dir = std::env::var("IWTVAE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist"));
    let images = env_usize("IWTVAE_SNR_IMAGES", 100);
    let draws = env_usize("IWTVAE_SNR_DRAWS", 200).max(2);
    let data = Dataset::load(&data_dir, Split::Train, Some(images)).expect("the training images");
    let net = Network::<f32>::new(loaded.layout.clone());
    let d = net.layout.config.pixels();
    let mut targets = vec![0f32; images * d];
    let (bin_key, mut scratch) = (NoiseKey::new(1, Stream::TrainBinarize, 0), vec![0f32; d]);
    for i in 0..images {
        data.targets(i, Binarize::Dynamic, bin_key, &mut scratch, &mut targets[i * d..(i + 1) * d]);
    }
    let mask = net.layout.encoder_mask();
    for k in env_list("IWTVAE_SNR_K", "1,5,50,500").iter().map(|k| k.parse::<usize>().expect("IWTVAE_SNR_K")) {
        for name in env_list("IWTVAE_SNR_OBJECTIVES", "iwae,iwae-dreg") {
            let obj = Objective::parse(&name).expect("IWTVAE_SNR_OBJECTIVES");
            let t0 = Instant::now();
            let (mut sum, mut sum2) = (vec![0f64; net.layout.total], vec![0f64; net.layout.total]);
            for draw in 0..draws as u32 {
                // Epochs past any training run's, so no draw repeats one it saw.
                let epoch = 1_000_000 + draw;
                let keys = LatentKeys {
                    eps: NoiseKey::new(1, Stream::TrainEps, epoch),
                    eta: NoiseKey::new(1, Stream::TrainEta, epoch),
                };
                let g = minibatch_gradient(&net, &loaded.params, &targets, images, k, obj, keys);
                for (j, &v) in g.iter().enumerate() {
                    sum[j] += v;
                    sum2[j] += v * v;
                }
            }
            let n = draws as f64;
            let (enc_mean, enc_median, enc_n) = snr_summary(&sum, &sum2, n, (0..mask.len()).filter(|&j| mask[j]));
            let (dec_mean, dec_median, dec_n) = snr_summary(&sum, &sum2, n, (0..mask.len()).filter(|&j| !mask[j]));
            println!(
                "{}",
                serde_json::json!({
                    "checkpoint": checkpoint.display().to_string(),
                    "objective": name,
                    "k": k,
                    "images": images,
                    "draws": draws,
                    "encoder_snr_mean": enc_mean,
                    "encoder_snr_median": enc_median,
                    "encoder_coordinates": enc_n,
                    "decoder_snr_mean": dec_mean,
                    "decoder_snr_median": dec_median,
                    "decoder_coordinates": dec_n,
                    "seconds": t0.elapsed().as_secs_f64(),
                })
            );
        }
    }
}
