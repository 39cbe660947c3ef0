//! `iwtvae reproduce`: the nine configurations behind the seed README's three
//! tables (SPEC §4), trained and evaluated with the seed's protocols, with our
//! figures written beside the seed's.
//!
//! Every run lives in `<out>/runs/<name>-seed<seed>/` (checkpoint, log,
//! eval.json); a run whose eval.json exists is not redone, one with a
//! checkpoint resumes, so an interrupted `reproduce` continues where it stopped.
use crate::data::{Binarize, Dataset, Split};
use crate::error::{Error, Result};
use crate::eval::{evaluate_on, EvalOptions, EvalReport, Precision, DEFAULT_CHUNK};
use crate::fsutil::atomic_write;
use crate::model::checkpoint::load_checkpoint;
use crate::network::Network;
use crate::train::{train_on, Progress, TrainConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

mod spread;
pub use spread::{seed_spread, write_spread, SeedSpread, Summary};

/// One configuration of the seed's tables and the figures the seed reports.
#[derive(Clone, Debug, Serialize)]
pub struct RunSpec {
    pub name: &'static str,
    /// "1-2" (continuous, elbo-kl) or "3" (binarized, k = 5).
    pub table: &'static str,
    pub model: &'static str,
    pub transform: &'static str,
    pub z_dim: usize,
    pub u_dim: usize,
    pub objective: &'static str,
    pub k: usize,
    pub batch_size: usize,
    pub binarize: &'static str,
    /// Seed README: table 1 (reconstruction), if this run is in it.
    pub seed_recon: Option<f64>,
    /// Seed README: table 2 or 3 (NLL, k = 5000).
    pub seed_nll: f64,
}

/// The nine runs (SPEC §4).
pub fn seed_runs() -> Vec<RunSpec> {
    let models = [("VAE", "none", 60, 0), ("TVAE-affine", "affine", 54, 6), ("TVAE-TPS", "tps", 42, 18)];
    let recon = [88.27, 83.63, 82.86];
    let nll_kl = [101.14, 99.18, 97.91];
    let nll_elbo5 = [98.30, 96.06, 94.00];
    let nll_iwae5 = [93.99, 92.75, 92.16];
    let mut runs = Vec::new();
    let names_kl = ["vae-elbokl", "affine-elbokl", "tps-elbokl"];
    let names_elbo = ["vae-elbo5", "affine-elbo5", "tps-elbo5"];
    let names_iwae = ["vae-iwae5", "affine-iwae5", "tps-iwae5"];
    for (i, &(model, transform, z, u)) in models.iter().enumerate() {
        runs.push(RunSpec {
            name: names_kl[i],
            table: "1-2",
            model,
            transform,
            z_dim: z,
            u_dim: u,
            objective: "elbo-kl",
            k: 1,
            batch_size: 128,
            binarize: "none",
            seed_recon: Some(recon[i]),
            seed_nll: nll_kl[i],
        });
    }
    for (objective, names, seed) in [("elbo", names_elbo, nll_elbo5), ("iwae", names_iwae, nll_iwae5)] {
        for (i, &(model, transform, z, u)) in models.iter().enumerate() {
            runs.push(RunSpec {
                name: names[i],
                table: "3",
                model,
                transform,
                z_dim: z,
                u_dim: u,
                objective,
                k: 5,
                batch_size: 100,
                binarize: "dynamic",
                seed_recon: None,
                seed_nll: seed[i],
            });
        }
    }
    runs
}

#[derive(Clone, Debug)]
pub struct ReproduceOptions {
    pub out: PathBuf,
    pub data: PathBuf,
    pub seed: u64,
    pub epochs: usize,
    pub eval_k: usize,
    /// Run only these names (all when empty).
    pub only: Vec<String>,
    /// Configurations trained at the same time.
    pub jobs: usize,
    /// Threads in all (split across jobs).
    pub threads: usize,
    pub machine: String,
    /// Use only the first N training and test images (a quick smoke run).
    pub limit: Option<usize>,
    /// Where training and evaluation run.
    pub device: crate::device::Device,
}

/// One finished run: what it was, what it gave, what it cost.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    pub name: String,
    pub table: String,
    pub model: String,
    pub objective: String,
    pub seed: u64,
    pub nll: f64,
    pub recon: f64,
    pub elbo: f64,
    pub recon_at_mean: f64,
    pub active_units: usize,
    pub seed_nll: f64,
    pub seed_recon: Option<f64>,
    pub final_train_loss: f64,
    pub train_seconds: f64,
    pub eval_seconds: f64,
    pub threads: usize,
    pub machine: String,
    pub command: String,
}

/// What the caller sees while `reproduce` runs.
pub trait ReproduceProgress: Send + Sync {
    fn run_start(&self, index: usize, total: usize, spec: &RunSpec, resumed: bool);
    fn run_end(&self, index: usize, total: usize, result: &RunResult);
    /// A run's training is done and its test-set evaluation (minutes on a
    /// CPU at k = 5000) begins.
    fn eval_start(&self, _spec: &RunSpec, _images: usize, _k: usize) {}
    /// A per-epoch progress sink for one run.
    fn epochs(&self, spec: &RunSpec) -> Box<dyn Progress + Send>;
}

fn run_dir(out: &Path, spec: &RunSpec, seed: u64) -> PathBuf {
    out.join("runs").join(format!("{}-seed{seed}", spec.name))
}

/// The `iwtvae train` command line equivalent to one run.
pub fn command_for(spec: &RunSpec, opts: &ReproduceOptions) -> String {
    format!(
        "iwtvae train --transform {} --z-dim {} --u-dim {} --objective {} --k {} --batch-size {} --binarize {} \
         --epochs {} --optimizer adadelta --schedule poly --lr 1 --seed {} --eval-k {}",
        spec.transform,
        spec.z_dim,
        spec.u_dim,
        spec.objective,
        spec.k,
        spec.batch_size,
        spec.binarize,
        opts.epochs,
        opts.seed,
        opts.eval_k
    )
}

fn one_run(
    spec: &RunSpec,
    opts: &ReproduceOptions,
    threads: usize,
    progress: &dyn ReproduceProgress,
    index: usize,
    total: usize,
) -> Result<RunResult> {
    let dir = run_dir(&opts.out, spec, opts.seed);
    let result_path = dir.join("result.json");
    if let Ok(text) = std::fs::read_to_string(&result_path) {
        if let Ok(r) = serde_json::from_str::<RunResult>(&text) {
            // A finished run of other settings (epochs, eval k) must not
            // stand in for this one in the tables.
            let wanted = command_for(spec, opts);
            if r.command != wanted {
                return Err(Error::Config(format!(
                    "{}: a finished run of other settings ({}), not {wanted}; use another --out, or the same \
                     --epochs and --eval-k",
                    result_path.display(),
                    r.command
                )));
            }
            progress.run_end(index, total, &r);
            return Ok(r);
        }
    }
    // The seed's protocol (Adadelta + poly, hidden 256, 3×3 TPS grid) with
    // this configuration's model, objective and data.
    let cfg = TrainConfig {
        transform: spec.transform.into(),
        z_dim: spec.z_dim,
        u_dim: spec.u_dim,
        objective: spec.objective.into(),
        k: spec.k,
        epochs: opts.epochs,
        batch_size: spec.batch_size,
        binarize: spec.binarize.into(),
        limit_train: opts.limit,
        seed: opts.seed,
        shards: threads.min(spec.batch_size).max(1),
        data_dir: Some(opts.data.display().to_string()),
        ..TrainConfig::seed_protocol()
    };
    let resume = dir.join("checkpoint.safetensors").exists();
    progress.run_start(index, total, spec, resume);
    let data = Dataset::load(&opts.data, Split::Train, opts.limit)?;
    let mut sink = progress.epochs(spec);
    let t0 = Instant::now();
    let trained = train_on(opts.device, &cfg, &data, &dir, resume, sink.as_mut())?;
    let mut train_seconds = t0.elapsed().as_secs_f64();
    // Time spent before an interruption is in the log.
    if resume {
        train_seconds = read_log_seconds(&dir.join("log.jsonl")).max(train_seconds);
    }
    let final_train_loss = read_last_loss(&dir.join("log.jsonl"));
    let test = Dataset::load(&opts.data, Split::Test, opts.limit)?;
    let binarize = if spec.binarize == "dynamic" { Binarize::Dynamic } else { Binarize::None };
    let ck = load_checkpoint(&dir.join("checkpoint.safetensors"))?;
    let net = Network::<f32>::new(trained.layout);
    let precision = Precision::default_for(opts.device);
    let eval_opts =
        EvalOptions { k: opts.eval_k, chunk: DEFAULT_CHUNK, binarize, seed: opts.seed, precision, bounds: Vec::new() };
    progress.eval_start(spec, test.len(), opts.eval_k);
    let (report, _): (EvalReport, _) = evaluate_on(opts.device, &net, &ck.params, &test, &eval_opts)?;
    atomic_write(&dir.join("eval.json"), serde_json::to_string_pretty(&report).expect("serialises").as_bytes())?;
    let result = RunResult {
        name: spec.name.into(),
        table: spec.table.into(),
        model: spec.model.into(),
        objective: spec.objective.into(),
        seed: opts.seed,
        nll: report.nll,
        recon: report.recon,
        elbo: report.elbo,
        recon_at_mean: report.recon_at_mean,
        active_units: report.active_units,
        seed_nll: spec.seed_nll,
        seed_recon: spec.seed_recon,
        final_train_loss,
        train_seconds,
        eval_seconds: report.seconds,
        threads,
        machine: opts.machine.clone(),
        command: command_for(spec, opts),
    };
    atomic_write(&result_path, serde_json::to_string_pretty(&result).expect("serialises").as_bytes())?;
    progress.run_end(index, total, &result);
    Ok(result)
}

fn read_log_seconds(path: &Path) -> f64 {
    std::fs::read_to_string(path)
        .map(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter_map(|v| v["seconds"].as_f64())
                .sum()
        })
        .unwrap_or(0.0)
}

fn read_last_loss(path: &Path) -> f64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.lines().last().and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok()))
        .and_then(|v| v["loss"].as_f64())
        .unwrap_or(f64::NAN)
}

/// Train and evaluate every selected configuration, then write the tables.
pub fn reproduce(opts: &ReproduceOptions, progress: &dyn ReproduceProgress) -> Result<Vec<RunResult>> {
    let all = seed_runs();
    for name in &opts.only {
        if !all.iter().any(|s| s.name == name) {
            let names: Vec<_> = all.iter().map(|s| s.name).collect();
            return Err(Error::Config(format!("--only {name:?}: not one of {}", names.join(", "))));
        }
    }
    let specs: Vec<RunSpec> =
        all.into_iter().filter(|s| opts.only.is_empty() || opts.only.iter().any(|n| n == s.name)).collect();
    let jobs = opts.jobs.clamp(1, specs.len().max(1));
    let threads = (opts.threads / jobs).max(1);
    let total = specs.len();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(vec![None; total]);
    let first_error = std::sync::Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                let pool = match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
                    Ok(p) => p,
                    Err(e) => {
                        *first_error.lock().expect("lock") = Some(Error::Config(format!("thread pool: {e}")));
                        return;
                    }
                };
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= total || first_error.lock().expect("lock").is_some() {
                        return;
                    }
                    match pool.install(|| one_run(&specs[i], opts, threads, progress, i, total)) {
                        Ok(r) => results.lock().expect("lock")[i] = Some(r),
                        Err(e) => {
                            first_error.lock().expect("lock").get_or_insert(e);
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().expect("lock") {
        return Err(e);
    }
    let results: Vec<RunResult> = results.into_inner().expect("lock").into_iter().flatten().collect();
    write_tables(&opts.out, &results, opts)?;
    Ok(results)
}

fn fmt_diff(ours: f64, seed: f64) -> String {
    format!("{:+.2}", ours - seed)
}

/// The rows of tables 1 and 2 (the same three continuous-MNIST models):
/// label, run name.
const TABLES_1_2: [(&str, &str); 3] = [
    ("VAE (z 60)", "vae-elbokl"),
    ("TVAE-affine (z 54, u 6)", "affine-elbokl"),
    ("TVAE-TPS (z 42, u 18)", "tps-elbokl"),
];

/// results/seed-tables.md and results/seed-tables.json from every result on
/// disk for this seed (not only the ones run now), and seed-spread.{md,json}
/// over every seed on disk.
pub fn write_tables(out: &Path, fresh: &[RunResult], opts: &ReproduceOptions) -> Result<()> {
    let mut results: Vec<RunResult> = Vec::new();
    for spec in seed_runs() {
        let path = run_dir(out, &spec, opts.seed).join("result.json");
        if let Some(r) = fresh.iter().find(|r| r.name == spec.name) {
            results.push(r.clone());
        } else if let Ok(t) = std::fs::read_to_string(&path) {
            if let Ok(r) = serde_json::from_str::<RunResult>(&t) {
                results.push(r);
            }
        }
    }
    let get = |name: &str| results.iter().find(|r| r.name == name);
    let mut md = String::new();
    md.push_str(&format!(
        "# The seed's tables, reproduced\n\nMNIST test set, {} epochs of Adadelta (lr 1, ρ 0.9, ε 1e-6) with the poly \
         schedule, hidden 256, NLL by importance sampling with k = {}. Losses in nats (lower is better); \
         \"Δ\" is ours minus the seed's. Seed {}; machine: {}.\n\nProduced by `iwtvae reproduce --seed {}`; each run's \
         exact command, wall time and thread count are in `seed-tables.json`.\n\n",
        opts.epochs, opts.eval_k, opts.seed, opts.machine, opts.seed
    ));
    let row = |label: &str, name: &str, recon: bool| -> String {
        match get(name) {
            Some(r) if recon => format!(
                "| {label} | {:.2} | {:.2} | {} |\n",
                r.recon,
                r.seed_recon.unwrap_or(f64::NAN),
                fmt_diff(r.recon, r.seed_recon.unwrap_or(f64::NAN))
            ),
            Some(r) => format!("| {label} | {:.2} | {:.2} | {} |\n", r.nll, r.seed_nll, fmt_diff(r.nll, r.seed_nll)),
            None => format!("| {label} | (not run) | | |\n"),
        }
    };
    md.push_str("## Table 1: reconstruction loss (continuous MNIST, batch 128, ELBO with analytic KL)\n\n");
    md.push_str("| model | ours | seed | Δ |\n|---|---|---|---|\n");
    for (label, name) in TABLES_1_2 {
        md.push_str(&row(label, name, true));
    }
    md.push_str("\n## Table 2: NLL (the same models)\n\n| model | ours | seed | Δ |\n|---|---|---|---|\n");
    for (label, name) in TABLES_1_2 {
        md.push_str(&row(label, name, false));
    }
    md.push_str("\n## Table 3: NLL (dynamically binarized MNIST, batch 100, k = 5 in training)\n\n");
    md.push_str("| model | objective | ours | seed | Δ |\n|---|---|---|---|---|\n");
    for (label, stem) in [("VAE", "vae"), ("TVAE-affine", "affine"), ("TVAE-TPS", "tps")] {
        for (obj, suffix) in [("ELBO (k = 5)", "elbo5"), ("IWAE (k = 5)", "iwae5")] {
            let name = format!("{stem}-{suffix}");
            match get(&name) {
                Some(r) => md.push_str(&format!(
                    "| {label} | {obj} | {:.2} | {:.2} | {} |\n",
                    r.nll,
                    r.seed_nll,
                    fmt_diff(r.nll, r.seed_nll)
                )),
                None => md.push_str(&format!("| {label} | {obj} | (not run) | | |\n")),
            }
        }
    }
    md.push_str("\n## Runs\n\n| run | train s | eval s | threads | final train loss | active units |\n|---|---|---|---|---|---|\n");
    for r in &results {
        md.push_str(&format!(
            "| {} | {:.0} | {:.0} | {} | {:.2} | {} |\n",
            r.name, r.train_seconds, r.eval_seconds, r.threads, r.final_train_loss, r.active_units
        ));
    }
    crate::fsutil::ensure_dir(out)?;
    plot_run_curves(out, opts.seed, &results)?;
    atomic_write(&out.join(format!("seed-tables{}.md", suffix(opts.seed))), md.as_bytes())?;
    let json = serde_json::json!({ "seed": opts.seed, "eval_k": opts.eval_k, "epochs": opts.epochs, "machine": opts.machine, "runs": results });
    atomic_write(
        &out.join(format!("seed-tables{}.json", suffix(opts.seed))),
        serde_json::to_string_pretty(&json).expect("serialises").as_bytes(),
    )?;
    write_spread(out, opts)?;
    Ok(())
}

/// Training curves of each table's runs (loss per epoch, final test NLL as
/// points): results/pictures/curves-table12.png and curves-table3.png.
fn plot_run_curves(out: &Path, seed: u64, results: &[RunResult]) -> Result<()> {
    let pictures = out.join("pictures");
    for (table, file, title) in [
        ("1-2", "curves-table12", "Tables 1-2: continuous MNIST, ELBO with analytic KL (train loss, test NLL)"),
        ("3", "curves-table3", "Table 3: binarized MNIST, k = 5 (train loss = -bound, test NLL k = 5000)"),
    ] {
        let mut series = Vec::new();
        let mut nll = Vec::new();
        for r in results.iter().filter(|r| r.table == table) {
            let spec = seed_runs().into_iter().find(|s| s.name == r.name);
            let Some(spec) = spec else { continue };
            let log = run_dir(out, &spec, seed).join("log.jsonl");
            if let Ok(points) = crate::viz::curves::read_log(&log) {
                let last = points.last().map(|p| p.0).unwrap_or(1.0);
                series.push((format!("{} train", r.name), points));
                nll.push((format!("{} test NLL", r.name), last, r.nll));
            }
        }
        if series.is_empty() {
            continue;
        }
        crate::fsutil::ensure_dir(&pictures)?;
        crate::viz::curves::plot_curves(&pictures.join(format!("{file}{}.png", suffix(seed))), title, &series, &nll)?;
    }
    Ok(())
}

/// Seed 1 writes seed-tables.md; other seeds add their number.
fn suffix(seed: u64) -> String {
    if seed == 1 {
        String::new()
    } else {
        format!("-seed{seed}")
    }
}

/// "AMD EPYC, 2 threads": the CPU's model name from /proc/cpuinfo.
pub fn machine_description(threads: usize) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    format!("{cpu} ({threads} threads, CPU)")
}
