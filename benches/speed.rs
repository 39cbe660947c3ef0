//! End-to-end speed on the CPU: one training epoch (TPS, z 42, u 18, IWAE
//! k = 5, batch 100, Adadelta, dynamic binarization, all 60,000 images) and
//! NLL with k = 5000 over the first N test images. Prints one JSON line.
//!
//!     cargo bench --bench speed                    # full epoch, 200 NLL images
//!     IWTVAE_BENCH_TRAIN=12000 IWTVAE_BENCH_NLL=50 IWTVAE_BENCH_SHARDS=4 cargo bench --bench speed
//!     IWTVAE_BENCH_NLL=0 cargo bench --bench speed   # the training epoch alone (NLL fields null)
//!     IWTVAE_BENCH_DEVICE=cuda IWTVAE_BENCH_NLL=10000 cargo bench --bench speed   # on a GPU
//!     IWTVAE_BENCH_DEVICE=cuda IWTVAE_BENCH_TRAIN_PRECISION=tf32 cargo bench --bench speed   # TF32 training
//!
//! benches/compare.sh runs this beside benches/pytorch/iwtvae_torch.py.
use iwtvae::data::{Binarize, Dataset, Split};
use iwtvae::device::select;
use iwtvae::eval::{evaluate_on, EvalOptions, DEFAULT_CHUNK};
use iwtvae::network::Network;
use iwtvae::train::{train_on, Silent, TrainConfig};
use std::path::Path;
use std::time::Instant;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; nothing to list.
    }
    let data_dir = std::env::var("IWTVAE_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist"));
    let device_spec = std::env::var("IWTVAE_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into());
    let device = select(&device_spec).expect("IWTVAE_BENCH_DEVICE").device;
    let n_train = env("IWTVAE_BENCH_TRAIN", 60_000);
    let n_nll = env("IWTVAE_BENCH_NLL", 200);
    // The GPU's training GEMMs: fp32, or tf32 (tensor cores).
    let train_precision = std::env::var("IWTVAE_BENCH_TRAIN_PRECISION").unwrap_or_else(|_| "fp32".into());
    let cfg = TrainConfig {
        epochs: 1,
        precision: train_precision.clone(),
        limit_train: Some(n_train),
        shards: env("IWTVAE_BENCH_SHARDS", rayon::current_num_threads()),
        ..TrainConfig::seed_protocol()
    };
    let train_set = Dataset::load(&data_dir, Split::Train, Some(n_train)).expect("bundled MNIST");
    let out = tempfile::tempdir().expect("temp dir");
    let t0 = Instant::now();
    let trained = train_on(device, &cfg, &train_set, out.path(), false, &mut Silent).expect("training");
    let train_s = t0.elapsed().as_secs_f64();
    // The loop's own timing excludes checkpoint writing.
    let epoch = &trained.logs[0];

    // IWTVAE_BENCH_NLL=0 times training alone.
    let report = (n_nll > 0).then(|| {
        let test = Dataset::load(&data_dir, Split::Test, Some(n_nll)).expect("bundled MNIST");
        let net = Network::<f32>::new(trained.layout.clone());
        // As the CLI: auto is the device's default (tf32 on a GPU, fp32 on the CPU).
        let precision = std::env::var("IWTVAE_BENCH_PRECISION").unwrap_or("auto".into());
        let precision = iwtvae::eval::Precision::parse_for(&precision, device).expect("IWTVAE_BENCH_PRECISION");
        let opts = EvalOptions {
            k: 5000,
            chunk: DEFAULT_CHUNK,
            binarize: Binarize::Dynamic,
            seed: 1,
            precision,
            bounds: Vec::new(),
        };
        evaluate_on(device, &net, &trained.params, &test, &opts).expect("evaluation").0
    });
    println!(
        "{}",
        serde_json::json!({
            "impl": format!("iwtvae-{}", device.name()),
            "device": report.as_ref().map_or(device.name().to_string(), |r| r.device.clone()),
            "threads": rayon::current_num_threads(),
            "shards": cfg.shards,
            "train_images": n_train,
            "train_precision": train_precision,
            "train_images_per_sec": epoch.images_per_sec,
            "train_epoch_seconds_with_checkpoint": train_s,
            "nll_images": n_nll,
            "nll_k5000_images_per_sec": report.as_ref().map(|r| r.images_per_sec),
            "nll_seconds": report.as_ref().map(|r| r.seconds),
            "precision": report.as_ref().map(|r| r.precision.clone()),
            "nll": report.as_ref().map(|r| r.nll),
        })
    );
}
