//! Reproducibility: resume continues bit-identically, an image's estimate
//! depends only on its index (not the batch or the thread count), and a
//! non-finite loss stops training with a message naming epoch and step.
mod common;
use common::*;
use iwtvae::data::{Binarize, Dataset, Split};
use iwtvae::eval::{evaluate, EvalOptions};
use iwtvae::model::{Layout, Transform};
use iwtvae::network::{transpose_weights, Network, Weights};
use iwtvae::objective::{loss_and_grad, LatentKeys, Objective};
use iwtvae::ops::Par;
use iwtvae::rng::{NoiseKey, Stream};
use iwtvae::train::{train, EpochLog, Progress, Silent, TrainConfig};
use std::path::Path;

const MNIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist");

fn small_config() -> TrainConfig {
    TrainConfig {
        z_dim: 8,
        u_dim: 6,
        hidden: 32,
        k: 3,
        epochs: 3,
        batch_size: 50,
        limit_train: Some(300),
        seed: 4,
        shards: 2,
        ..TrainConfig::seed_protocol()
    }
}

struct StopAfter(usize, usize);
impl Progress for StopAfter {
    fn epoch_start(&mut self, _: usize, _: usize, _: usize) {}
    fn step(&mut self, _: f64, _: usize) {}
    fn epoch_end(&mut self, _: &EpochLog) {
        self.1 += 1;
    }
    fn should_stop(&self) -> bool {
        self.1 >= self.0
    }
}

#[test]
fn resume_is_bit_identical_to_an_uninterrupted_run() {
    let cfg = small_config();
    let data = Dataset::load(Path::new(MNIST), Split::Train, cfg.limit_train).unwrap();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let whole = train(&cfg, &data, a.path(), false, &mut Silent).unwrap();
    let first = train(&cfg, &data, b.path(), false, &mut StopAfter(1, 0)).unwrap();
    assert_eq!(first.logs.len(), 1);
    // Resume with another thread count: the run keeps its own shard count.
    let rest = train(&TrainConfig { shards: 1, ..cfg.clone() }, &data, b.path(), true, &mut Silent).unwrap();
    assert_eq!(rest.logs.len(), 2);
    assert_eq!(whole.params, rest.params, "parameters differ after resume");
    for (x, y) in whole.logs[1..].iter().zip(&rest.logs) {
        assert_eq!(x.loss.to_bits(), y.loss.to_bits(), "epoch {} loss differs", x.epoch);
    }
    let ca = std::fs::read(a.path().join("checkpoint.safetensors")).unwrap();
    let cb = std::fs::read(b.path().join("checkpoint.safetensors")).unwrap();
    assert_eq!(ca, cb, "checkpoint files differ");
    let log = std::fs::read_to_string(b.path().join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 3, "log after resume:\n{log}");
    // Starting over in a directory that holds a run is refused.
    let err = train(&cfg, &data, b.path(), false, &mut Silent).err().unwrap().to_string();
    assert!(err.contains("--resume"), "{err}");
    // Resuming with different settings is refused, naming both.
    let other = TrainConfig { lr: 0.5, ..cfg };
    let err = train(&other, &data, b.path(), true, &mut Silent).err().unwrap().to_string();
    assert!(err.contains("different settings"), "{err}");
}

/// The test monitor reads the model and changes nothing: the same
/// parameters as an unmonitored run, the held-out figures on the due
/// epochs only (every 2 of 3: epochs 2 and 3, the last), and the last one
/// what `eval` says of the final model with the same k and seed; a resumed
/// run logs the same lines.
#[test]
fn the_test_monitor_logs_evals_figures_and_changes_no_training_bit() {
    use iwtvae::device::Device;
    use iwtvae::train::{train_monitored, TestMonitor};
    let cfg = small_config();
    let data = Dataset::load(Path::new(MNIST), Split::Train, cfg.limit_train).unwrap();
    let test = Dataset::load(Path::new(MNIST), Split::Test, Some(40)).unwrap();
    let monitor = TestMonitor { data: &test, every: 2, k: 4 };
    let (plain, watched, resumed) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = train(&cfg, &data, plain.path(), false, &mut Silent).unwrap();
    let b = train_monitored(Device::Cpu, &cfg, &data, Some(monitor), watched.path(), false, &mut Silent).unwrap();
    assert_eq!(a.params, b.params, "monitoring changed the training");
    let due: Vec<(usize, Option<usize>)> = b.logs.iter().map(|l| (l.epoch, l.test_k)).collect();
    assert_eq!(due, [(1, None), (2, Some(4)), (3, Some(4))]);
    assert!(a.logs.iter().all(|l| l.test_nll.is_none()));

    let net = Network::<f32>::new(b.layout.clone());
    let opts = EvalOptions {
        k: 4,
        chunk: 250,
        binarize: Binarize::Dynamic,
        seed: cfg.seed,
        precision: Default::default(),
        bounds: Vec::new(),
    };
    let (report, _) = evaluate(&net, &b.params, &test, &opts).unwrap();
    let last = &b.logs[2];
    assert_eq!((last.test_nll, last.test_elbo), (Some(report.nll), Some(report.elbo)));
    assert!(last.test_seconds.is_some_and(|s| s >= 0.0));
    let units = (last.test_active_units, last.test_active_units_z, last.test_active_units_u);
    let want = (report.active_units, report.active_units_z, report.active_units_u);
    assert_eq!(units, (Some(want.0), Some(want.1), Some(want.2)));
    assert!(b.logs[0].test_active_units.is_none(), "no monitor, no units on epoch 1");

    train_monitored(Device::Cpu, &cfg, &data, Some(monitor), resumed.path(), false, &mut StopAfter(2, 0)).unwrap();
    train_monitored(Device::Cpu, &cfg, &data, Some(monitor), resumed.path(), true, &mut Silent).unwrap();
    let numbers = |dir: &Path| -> Vec<(Option<u64>, Option<u64>)> {
        std::fs::read_to_string(dir.join("log.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<EpochLog>(l).unwrap())
            .map(|l| (l.test_nll.map(f64::to_bits), l.test_elbo.map(f64::to_bits)))
            .collect()
    };
    assert_eq!(numbers(resumed.path()), numbers(watched.path()));
}

/// A run killed after an epoch's optimizer state was written but before its
/// checkpoint was resumes from the pair that matches (the state kept as
/// optim.prev) and still ends bit-identical to an uninterrupted run.
#[test]
fn resume_works_when_killed_between_the_optimizer_and_checkpoint_writes() {
    let cfg = small_config();
    let data = Dataset::load(Path::new(MNIST), Split::Train, cfg.limit_train).unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let whole = train(&cfg, &data, a.path(), false, &mut Silent).unwrap();
    train(&cfg, &data, b.path(), false, &mut StopAfter(1, 0)).unwrap();
    let epoch1 = std::fs::read(b.path().join("checkpoint.safetensors")).unwrap();
    train(&cfg, &data, b.path(), true, &mut StopAfter(1, 0)).unwrap();
    // The kill: epoch 2's optimizer state is on disk, its checkpoint is not.
    std::fs::write(b.path().join("checkpoint.safetensors"), &epoch1).unwrap();
    let rest = train(&cfg, &data, b.path(), true, &mut Silent).unwrap();
    assert_eq!(rest.logs.len(), 2, "resumed after epoch 1");
    assert_eq!(whole.params, rest.params, "parameters differ after resume");
    let log = std::fs::read_to_string(b.path().join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 3, "log after resume:\n{log}");

    // With neither optimizer state matching, the error names what is there.
    std::fs::write(b.path().join("checkpoint.safetensors"), &epoch1).unwrap();
    let err = train(&cfg, &data, b.path(), true, &mut Silent).err().unwrap().to_string();
    assert!(err.contains("no optimizer state matches") && err.contains("epoch 3"), "{err}");
}

/// Image 5's log-weights are bit-identical whether it is alone or one of 37.
#[test]
fn an_images_estimate_does_not_depend_on_the_batch() {
    let cfg = tiny_config(Transform::Tps);
    let layout = Layout::new(cfg);
    let net = Network::<f32>::new(layout.clone());
    let params: Vec<f32> = tiny_params(&layout, 2).iter().map(|&v| v as f32).collect();
    let d = cfg.pixels();
    let x = targets(37, d, 3);
    let keys = LatentKeys { eps: NoiseKey::new(1, Stream::EvalEps, 0), eta: NoiseKey::new(1, Stream::EvalEta, 0) };
    let k = 4;
    let items: Vec<u32> = (0..37).collect();
    let mut big = net.workspace(37, k, false);
    for (dst, &v) in big.x.iter_mut().zip(&x) {
        *dst = v as f32;
    }
    // Forward only (Par::Seq without store), as evaluation runs it.
    net.encode(&params, &mut big, 37, Par::Seq);
    net.fill_noise(&mut big, &items, k, 0, keys.eps, keys.eta);
    net.sample_latents(&mut big, 37, k, false);
    net.decode(&params, &mut big, 37, k, iwtvae::network::DecodeMode::Score, Par::Seq);
    net.log_weights(&mut big, 37, k);
    let mut one = net.workspace(1, k, true);
    for (dst, &v) in one.x.iter_mut().zip(&x[5 * d..6 * d]) {
        *dst = v as f32;
    }
    loss_and_grad(&net, &params, None, &mut one, &[5], k, Objective::Iwae, keys, Par::Rows);
    assert_eq!(&big.logw[5 * k..6 * k], &one.logw[..k]);
}

/// Per-image NLL: 37 images evaluated together on 2 threads equal each
/// image evaluated alone on 1 thread, bit for bit.
#[test]
fn per_image_nll_is_independent_of_batch_and_threads() {
    let layout = Layout::new(iwtvae::model::ModelConfig { height: 28, width: 28, ..tiny_config(Transform::Affine) });
    let params: Vec<f32> = tiny_params(&layout, 8).iter().map(|&v| v as f32).collect();
    let net = Network::<f32>::new(layout);
    let all = Dataset::load(Path::new(MNIST), Split::Test, Some(37)).unwrap();
    let opts = EvalOptions {
        k: 100,
        chunk: 30,
        binarize: Binarize::Dynamic,
        seed: 2,
        precision: Default::default(),
        bounds: Vec::new(),
    };
    let two = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let (_, together) = two.install(|| evaluate(&net, &params, &all, &opts)).unwrap();
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    for i in [0usize, 17, 36] {
        // Keep the image's dataset index: binarization and noise are keyed by it.
        let alone = one.install(|| evaluate_at(&net, &params, &all, i, &opts));
        assert_eq!(together[i].nll.to_bits(), alone.to_bits(), "image {i}");
    }
}

/// Small k: a task takes as many images as a chunk holds (chunk / k, at
/// most ⌈images / (4 · threads)⌉), so the same 37 images go alone (chunk
/// 5), in groups of 2, 3 and 5 on 2 threads (chunk 10, 15, 250; the last
/// group shorter), and of 10 on 1 thread; every figure of every image is
/// the same bits, and so is the report.
#[test]
fn small_k_groups_of_images_give_each_image_its_own_bits() {
    let layout = Layout::new(iwtvae::model::ModelConfig { height: 28, width: 28, ..tiny_config(Transform::Tps) });
    let params: Vec<f32> = tiny_params(&layout, 6).iter().map(|&v| v as f32).collect();
    let net = Network::<f32>::new(layout);
    let all = Dataset::load(Path::new(MNIST), Split::Test, Some(37)).unwrap();
    let opts = |chunk| EvalOptions {
        k: 5,
        chunk,
        binarize: Binarize::Dynamic,
        seed: 4,
        precision: Default::default(),
        bounds: Vec::new(),
    };
    let bits = |r: &iwtvae::eval::ImageEstimate| {
        (r.index, r.nll.to_bits(), r.elbo.to_bits(), r.recon.to_bits(), r.recon_at_mean.to_bits())
    };
    let two = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let (report, alone) = two.install(|| evaluate(&net, &params, &all, &opts(5))).unwrap();
    for chunk in [10, 15, 250] {
        let (grouped_report, grouped) = two.install(|| evaluate(&net, &params, &all, &opts(chunk))).unwrap();
        for (a, b) in alone.iter().zip(&grouped) {
            assert_eq!(bits(a), bits(b), "chunk {chunk}, image {}", a.index);
        }
        assert_eq!(report.nll.to_bits(), grouped_report.nll.to_bits(), "chunk {chunk}");
        assert_eq!(report.active_units, grouped_report.active_units, "chunk {chunk}");
    }
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let (_, single) = one.install(|| evaluate(&net, &params, &all, &opts(250))).unwrap();
    assert!(alone.iter().zip(&single).all(|(a, b)| bits(a) == bits(b)), "one thread, one group of 37");
}

/// The progress callback hears of every image once, on the CPU (from the
/// worker threads) and on the GPU path (per batch; the emulator here), and
/// listening changes no estimate.
#[test]
fn eval_progress_counts_every_image_once() {
    use iwtvae::device::Device;
    use iwtvae::eval::{evaluate_on, evaluate_on_reporting};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let layout = Layout::new(iwtvae::model::ModelConfig { height: 28, width: 28, ..tiny_config(Transform::Tps) });
    let params: Vec<f32> = tiny_params(&layout, 4).iter().map(|&v| v as f32).collect();
    let net = Network::<f32>::new(layout);
    let data = Dataset::load(Path::new(MNIST), Split::Test, Some(9)).unwrap();
    let opts = EvalOptions {
        k: 20,
        chunk: 7,
        binarize: Binarize::Dynamic,
        seed: 3,
        precision: Default::default(),
        bounds: Vec::new(),
    };
    for device in [Device::Cpu, Device::Emulated] {
        let (count, calls) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let (_, heard) = evaluate_on_reporting(device, &net, &params, &data, &opts, &|n| {
            count.fetch_add(n, Ordering::Relaxed);
            calls.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
        assert_eq!(count.into_inner(), data.len(), "{device:?}: images reported");
        assert!(calls.into_inner() >= 1, "{device:?}");
        let (_, quiet) = evaluate_on(device, &net, &params, &data, &opts).unwrap();
        let bits = |rows: &[iwtvae::eval::ImageEstimate]| rows.iter().map(|r| r.nll.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&heard), bits(&quiet), "{device:?}: listening changed an estimate");
    }
}

/// Evaluate only image `i` of `data`.
fn evaluate_at(net: &Network<f32>, params: &[f32], data: &Dataset, i: usize, opts: &EvalOptions) -> f64 {
    let (_, rows) = iwtvae::eval::evaluate_indices(net, params, data, &[i], opts).unwrap();
    rows[0].nll
}

#[test]
fn a_non_finite_loss_stops_training_with_epoch_and_step() {
    let cfg = TrainConfig { lr: 1e30, schedule: "constant".into(), ..small_config() };
    let data = Dataset::load(Path::new(MNIST), Split::Train, cfg.limit_train).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = train(&cfg, &data, dir.path(), false, &mut Silent).err().unwrap();
    let msg = err.to_string();
    assert!(msg.contains("non-finite loss") && msg.contains("epoch 1, step"), "{msg}");
    assert!(!dir.path().join("checkpoint.safetensors").exists());
}

/// The training pass gives the same loss and gradient whether its rows run
/// one after another through one scratch row (the shards' way) or in
/// parallel through per-row buffers, for every transform: GEMMs split by
/// output rows sum each value in the same order, and each row's fused work
/// is the same code on the same data. The same holds with the forward
/// reading pre-transposed weights (`network::Weights`), as training does.
#[test]
fn training_pass_is_the_same_sequential_parallel_and_pre_transposed() {
    for transform in [Transform::None, Transform::Affine, Transform::Tps] {
        let cfg = tiny_config(transform);
        let layout = Layout::new(cfg);
        let net = Network::<f32>::new(layout.clone());
        let params: Vec<f32> = tiny_params(&layout, 3).iter().map(|&v| v as f32).collect();
        let (b, k) = (7, 4);
        let x: Vec<f32> = targets(b, cfg.pixels(), 2).iter().map(|&v| v as f32).collect();
        let items: Vec<u32> = (0..b as u32).map(|i| 3 * i + 1).collect();
        let keys =
            LatentKeys { eps: NoiseKey::new(9, Stream::TrainEps, 1), eta: NoiseKey::new(9, Stream::TrainEta, 1) };
        // The training engine's forward reads pre-transposed weights; the
        // plain parameters must give the same bits.
        let mut transposed = vec![f32::NAN; layout.total];
        transpose_weights(&layout, &params, &mut transposed);
        let run = |par: Par, pre_transposed: bool| {
            let mut ws = net.workspace(b, k, true);
            ws.x[..x.len()].copy_from_slice(&x);
            let mut g = vec![0f32; layout.total];
            let weights = Weights { params: &params, transposed: pre_transposed.then_some(&transposed[..]) };
            let loss = loss_and_grad(&net, weights, Some(&mut g), &mut ws, &items, k, Objective::Iwae, keys, par);
            (loss, g)
        };
        let seq = run(Par::Seq, false);
        for (other, what) in [(run(Par::Rows, false), "rows in parallel"), (run(Par::Seq, true), "pre-transposed")] {
            assert_eq!(seq.0.to_bits(), other.0.to_bits(), "{}, {what}: loss", transform.name());
            let same = seq.1.iter().zip(&other.1).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{}, {what}: gradient", transform.name());
        }
    }
}

/// The AVX-512, AVX2 and baseline clones of the hot loops compute the same
/// bits: one TPS IWAE epoch on 300 images and a k = 50 evaluation, run by
/// the CLI at each level (`IWTVAE_SIMD`), give byte-identical checkpoints and
/// per-image estimates. On a CPU without AVX-512 the higher levels fall back
/// and the comparison covers fewer clones.
#[test]
fn every_simd_level_computes_the_same_bits() {
    let mnist = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist");
    let dir = tempfile::tempdir().unwrap();
    let run = |level: &str| -> (Vec<u8>, String) {
        let out = dir.path().join(level);
        let cli = |args: &[&str]| {
            let o = std::process::Command::new(env!("CARGO_BIN_EXE_iwtvae"))
                .args(args)
                .env("IWTVAE_SIMD", level)
                .output()
                .expect("runs");
            assert!(o.status.success(), "{level}: {}", String::from_utf8_lossy(&o.stderr));
        };
        let out_s = out.to_str().unwrap();
        cli(&[
            "train",
            "--data",
            mnist,
            "--limit-train",
            "300",
            "--epochs",
            "1",
            "--eval-k",
            "0",
            "--threads",
            "2",
            "--out",
            out_s,
        ]);
        let ckpt = out.join("checkpoint.safetensors");
        let per_image = out.join("per_image.csv");
        cli(&[
            "eval",
            "--data",
            mnist,
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--k",
            "50",
            "--limit",
            "20",
            "--per-image",
            per_image.to_str().unwrap(),
        ]);
        (std::fs::read(ckpt).unwrap(), std::fs::read_to_string(per_image).unwrap())
    };
    let (ckpt, estimates) = run("avx512");
    for level in ["avx2", "baseline"] {
        let (c, e) = run(level);
        assert!(c == ckpt, "{level}: the trained checkpoint differs from avx512's");
        assert_eq!(e, estimates, "{level}: per-image estimates differ from avx512's");
    }
}

#[test]
fn an_unknown_simd_level_is_a_named_error() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_iwtvae"))
        .args(["eval", "--checkpoint", "none.safetensors"])
        .env("IWTVAE_SIMD", "sse9")
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("IWTVAE_SIMD=sse9") && !err.contains("panicked"), "{err}");
}
