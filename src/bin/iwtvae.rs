//! iwtvae: train and evaluate Importance Weighted Transformer VAEs.
//! The CLI parses flags, calls the library and prints; it holds no logic the
//! library lacks.
use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use iwtvae::data::{Dataset, Split};
use iwtvae::eval::{evaluate_on_reporting, per_image_csv, EvalOptions, DEFAULT_CHUNK};
use iwtvae::fsutil::atomic_write;
use iwtvae::model::checkpoint::load_checkpoint;
use iwtvae::network::Network;
use iwtvae::optim::OptimizerKind;
use iwtvae::train::{parse_binarize, train_on, EpochLog, Progress, TrainConfig};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(name = "iwtvae", version, about = "Importance Weighted Transformer VAEs on MNIST-format data", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model (defaults: the seed's IW-TVAE-TPS protocol, then NLL with k = 5000 on the test set).
    Train(TrainArgs),
    /// Evaluate a checkpoint: NLL (importance sampled), ELBO, reconstruction, active units.
    Eval(EvalArgs),
    /// Train and evaluate the nine configurations of the seed's three tables; resumable.
    Reproduce(ReproduceArgs),
    /// Pictures of a model: reconstructions, prior samples, traversals, the warp, training curves (PNG).
    Show(ShowArgs),
    /// Disentanglement in numbers: the digit label and the rotation angle read linearly from z and from u,
    /// and how far rotating a digit moves each.
    Probe(ProbeArgs),
}

#[derive(Args)]
struct ProbeArgs {
    /// A checkpoint; its run directory's config.json gives the default --binarize.
    #[arg(long)]
    checkpoint: PathBuf,
    #[arg(long, default_value = "data/mnist")]
    data: PathBuf,
    /// Rotation angles in degrees, counter-clockwise as displayed, comma-separated.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true, default_value = "-45,-30,-15,0,15,30,45")]
    angles: Vec<f64>,
    /// Fit the read-outs on the first N training images only.
    #[arg(long)]
    limit_train: Option<usize>,
    /// Test on the first N test images only.
    #[arg(long)]
    limit: Option<usize>,
    /// Targets encoded: dynamic or none (default: the run's, else dynamic).
    #[arg(long)]
    binarize: Option<String>,
    /// Keys the binarization of the images, as in eval.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ShowArgs {
    /// A checkpoint; its run directory's log.jsonl, eval.json and config.json are used when present.
    #[arg(long)]
    checkpoint: PathBuf,
    #[arg(long, default_value = "data/mnist")]
    data: PathBuf,
    /// Output directory (default: <checkpoint dir>/pictures).
    #[arg(long)]
    out: Option<PathBuf>,
    /// File name prefix, e.g. "tps-" gives tps-recon.png.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Targets shown and encoded: dynamic or none (default: the run's, else dynamic).
    #[arg(long)]
    binarize: Option<String>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Test digits in the reconstruction figure.
    #[arg(long, default_value_t = 24)]
    digits: usize,
    /// Pixel scale of the images.
    #[arg(long, default_value_t = 3)]
    scale: usize,
}

#[derive(Args)]
struct ReproduceArgs {
    /// Results directory: runs/<name>-seed<N>/ per configuration, seed-tables.{md,json}.
    #[arg(long, default_value = "results")]
    out: PathBuf,
    #[arg(long, default_value = "data/mnist")]
    data: PathBuf,
    #[arg(long, default_value = "auto")]
    device: String,
    /// Configurations trained at the same time (threads are split between them).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Worker threads in all (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 50)]
    epochs: usize,
    #[arg(long, default_value_t = 5000)]
    eval_k: usize,
    /// Only these runs (comma-separated names, e.g. tps-iwae5,vae-elbokl).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Use only the first N training and test images (a quick smoke run).
    #[arg(long)]
    limit: Option<usize>,
}

#[derive(Args, Clone)]
struct Common {
    /// Directory with train-/t10k- images and labels in IDX format (raw or .gz).
    #[arg(long, default_value = "data/mnist")]
    data: PathBuf,
    /// Where to run: auto, cpu, cuda[:i], or emulated (the CUDA kernels on
    /// the CPU emulator: slow, for checking the GPU path without a GPU).
    #[arg(long, default_value = "auto")]
    device: String,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Seed for initialisation, shuffling and all noise.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Targets: dynamic (fresh Bernoulli draw per use) or none (continuous byte/255).
    #[arg(long, default_value = "dynamic")]
    binarize: String,
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    common: Common,
    /// none (plain VAE), affine, or tps.
    #[arg(long, default_value = "tps")]
    transform: String,
    #[arg(long, default_value_t = 42)]
    z_dim: usize,
    /// Size of u (default 18; 0 for --transform none).
    #[arg(long)]
    u_dim: Option<usize>,
    #[arg(long, default_value_t = 256)]
    hidden: usize,
    /// TPS control points per side.
    #[arg(long, default_value_t = 3)]
    tps_grid: usize,
    /// iwae, elbo (k-sample), or elbo-kl (one sample, analytic KL).
    #[arg(long, default_value = "iwae")]
    objective: String,
    /// Importance samples per image (default 5; 1 for elbo-kl).
    #[arg(long)]
    k: Option<usize>,
    #[arg(long, default_value_t = 50)]
    epochs: usize,
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// adadelta (the seed) or adam (the IWAE paper).
    #[arg(long, default_value = "adadelta")]
    optimizer: String,
    /// poly (the seed), iwae (3^i epochs at lr·10^(−i/7)), or constant.
    #[arg(long, default_value = "poly")]
    schedule: String,
    /// Learning rate (default 1.0 for adadelta, 1e-3 for adam).
    #[arg(long)]
    lr: Option<f64>,
    /// Train on the first N training images only.
    #[arg(long)]
    limit_train: Option<usize>,
    /// Run directory: checkpoint, optimizer state, log.jsonl, eval.json.
    #[arg(long, default_value = "runs/iwtvae")]
    out: PathBuf,
    /// Importance samples for the final test-set NLL (0 skips it).
    #[arg(long, default_value_t = 5000)]
    eval_k: usize,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// u2theta's init: torch (PyTorch default, as the seed) or identity (zero weight and bias: warps start at the identity).
    #[arg(long, default_value = "torch")]
    theta_init: String,
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    common: Common,
    /// A checkpoint in the iwtvae safetensors format.
    #[arg(long)]
    checkpoint: PathBuf,
    /// test or train.
    #[arg(long, default_value = "test")]
    split: String,
    /// Importance samples per image.
    #[arg(long, default_value_t = 5000)]
    k: usize,
    /// Evaluate the first N images only.
    #[arg(long)]
    limit: Option<usize>,
    /// Samples per decoder pass (memory ∝ chunk × image size per thread).
    #[arg(long, default_value_t = DEFAULT_CHUNK)]
    chunk: usize,
    /// Arithmetic of the GPU evaluator's decoder layers: fp32, or tensor
    /// cores with tf32 or bf16 inputs (fp32 sums). auto: tf32 on a GPU (within
    /// 0.01 nats of fp32, see the README), fp32 on the CPU (its only one).
    #[arg(long, default_value = "auto")]
    precision: String,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// Write each image's estimates (CSV) to FILE.
    #[arg(long)]
    per_image: Option<PathBuf>,
}

fn init_threads(threads: Option<usize>) -> Result<()> {
    if let Some(t) = threads {
        anyhow::ensure!(t >= 1, "--threads must be at least 1");
        rayon::ThreadPoolBuilder::new().num_threads(t).build_global().context("--threads: starting the thread pool")?;
    }
    Ok(())
}

fn setup(common: &Common) -> Result<iwtvae::device::Device> {
    init_threads(common.threads)?;
    let sel = iwtvae::device::select(&common.device)?;
    if let Some(note) = sel.note {
        eprintln!("{note} ({} threads)", rayon::current_num_threads());
    }
    Ok(sel.device)
}

/// `evaluate_on` with a progress bar over the images (drawn only when
/// stderr is a terminal): k = 5000 over the test set is minutes on a CPU.
fn evaluate_with_bar(
    device: iwtvae::device::Device,
    net: &Network<f32>,
    params: &[f32],
    data: &Dataset,
    opts: &EvalOptions,
) -> iwtvae::Result<(iwtvae::eval::EvalReport, Vec<iwtvae::eval::ImageEstimate>)> {
    let bar = ProgressBar::new(data.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("eval k={prefix} [{bar:30}] {pos}/{len} images {msg} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(opts.k.to_string());
    let result = evaluate_on_reporting(device, net, params, data, opts, &|n| {
        bar.inc(n as u64);
        bar.set_message(format!("{:.0} img/s", bar.position() as f64 / bar.elapsed().as_secs_f64()));
    });
    bar.finish_and_clear();
    result
}

struct Bar {
    bar: Option<ProgressBar>,
    start: Instant,
    images: usize,
    quiet: bool,
}

impl Progress for Bar {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, steps: usize) {
        self.start = Instant::now();
        self.images = 0;
        let bar = ProgressBar::new(steps as u64);
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, epochs));
        self.bar = Some(bar);
    }
    fn step(&mut self, loss: f64, images: usize) {
        self.images += images;
        if let Some(b) = &self.bar {
            let rate = self.images as f64 / self.start.elapsed().as_secs_f64();
            b.set_message(format!("loss {loss:.3} {rate:.0} img/s"));
            b.inc(1);
        }
    }
    fn epoch_end(&mut self, log: &EpochLog) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if !self.quiet {
            eprintln!(
                "epoch {:>4}  loss {:.4}  lr {:.4}  {:.1} s  {:.0} img/s",
                log.epoch, log.loss, log.lr, log.seconds, log.images_per_sec
            );
        }
    }
}

fn print_report(r: &iwtvae::eval::EvalReport) {
    println!("images          {}", r.images);
    println!("k               {}", r.k);
    match r.nll_se {
        Some(se) => println!("nll             {:.4} ± {se:.4} (standard error over the images)", r.nll),
        None => println!("nll             {:.4}", r.nll),
    }
    println!("elbo (-ELBO)    {:.4}", r.elbo);
    println!("recon           {:.4}", r.recon);
    println!("recon_at_mean   {:.4}", r.recon_at_mean);
    println!("active units    {} (z {}, u {})", r.active_units, r.active_units_z, r.active_units_u);
    println!("seconds         {:.2} ({:.1} images/s on {}, {})", r.seconds, r.images_per_sec, r.device, r.precision);
}

fn run_train(a: TrainArgs) -> Result<()> {
    let device = setup(&a.common)?;
    let optimizer = OptimizerKind::parse(&a.optimizer)?;
    let objective = iwtvae::objective::Objective::parse(&a.objective)?;
    let cfg = TrainConfig {
        transform: a.transform.clone(),
        z_dim: a.z_dim,
        u_dim: a.u_dim.unwrap_or(if a.transform == "none" { 0 } else { 18 }),
        hidden: a.hidden,
        tps_grid: a.tps_grid,
        objective: a.objective.clone(),
        k: a.k.unwrap_or(if objective == iwtvae::objective::Objective::ElboKl { 1 } else { 5 }),
        epochs: a.epochs,
        batch_size: a.batch_size,
        optimizer: a.optimizer.clone(),
        schedule: a.schedule.clone(),
        lr: a.lr.unwrap_or(optimizer.default_lr()),
        binarize: a.common.binarize.clone(),
        limit_train: a.limit_train,
        seed: a.common.seed,
        shards: rayon::current_num_threads().min(a.batch_size).max(1),
        theta_init: a.theta_init.clone(),
    };
    cfg.validate()?;
    let data =
        Dataset::load(&a.common.data, Split::Train, a.limit_train).context("loading the training set (--data)")?;
    eprintln!(
        "training {} (z {}, u {}) with {} k={} on {} images of {}, {} epochs, out {}",
        cfg.transform,
        cfg.z_dim,
        cfg.u_dim,
        cfg.objective,
        cfg.k,
        data.len(),
        a.common.data.display(),
        cfg.epochs,
        a.out.display()
    );
    let mut bar = Bar { bar: None, start: Instant::now(), images: 0, quiet: false };
    let trained = train_on(device, &cfg, &data, &a.out, a.resume, &mut bar)?;
    if a.eval_k > 0 {
        let test = Dataset::load(&a.common.data, Split::Test, None).context("loading the test set (--data)")?;
        eprintln!("evaluating on {} test images with k = {} ...", test.len(), a.eval_k);
        let net = Network::<f32>::new(trained.layout.clone());
        let opts = EvalOptions {
            k: a.eval_k,
            chunk: DEFAULT_CHUNK,
            binarize: cfg.binarize()?,
            seed: a.common.seed,
            precision: iwtvae::eval::Precision::default_for(device),
        };
        let (report, _) = evaluate_with_bar(device, &net, &trained.params, &test, &opts)?;
        let path = a.out.join("eval.json");
        atomic_write(&path, serde_json::to_string_pretty(&report)?.as_bytes())?;
        print_report(&report);
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn run_eval(a: EvalArgs) -> Result<()> {
    let device = setup(&a.common)?;
    let split = match a.split.as_str() {
        "test" => Split::Test,
        "train" => Split::Train,
        o => anyhow::bail!("--split {o:?}: expected test or train"),
    };
    let binarize = parse_binarize(&a.common.binarize)?;
    anyhow::ensure!(a.k >= 1, "--k must be at least 1");
    anyhow::ensure!(a.chunk >= 1, "--chunk must be at least 1");
    let precision = iwtvae::eval::Precision::parse_for(&a.precision, device)?;
    if let Some(p) = &a.per_image {
        iwtvae::fsutil::prepare_output_file(p).context("--per-image")?;
    }
    let ck = load_checkpoint(&a.checkpoint).context("--checkpoint")?;
    let data = Dataset::load(&a.common.data, split, a.limit).context("loading --data")?;
    let net = Network::<f32>::new(ck.layout);
    let opts = EvalOptions { k: a.k, chunk: a.chunk, binarize, seed: a.common.seed, precision };
    let (report, rows) = evaluate_with_bar(device, &net, &ck.params, &data, &opts)?;
    if let Some(p) = &a.per_image {
        atomic_write(p, per_image_csv(&rows).as_bytes()).context("--per-image")?;
    }
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

struct ReproduceLines {
    start: Instant,
}

struct EpochLines {
    name: &'static str,
    epochs: usize,
}

impl Progress for EpochLines {
    fn epoch_start(&mut self, _: usize, epochs: usize, _: usize) {
        self.epochs = epochs;
    }
    fn step(&mut self, _: f64, _: usize) {}
    fn epoch_end(&mut self, log: &EpochLog) {
        eprintln!(
            "    {:<14} epoch {:>3}/{}  loss {:.3}  {:.1} s  {:.0} img/s",
            self.name, log.epoch, self.epochs, log.loss, log.seconds, log.images_per_sec
        );
    }
}

impl iwtvae::reproduce::ReproduceProgress for ReproduceLines {
    fn run_start(&self, index: usize, total: usize, spec: &iwtvae::reproduce::RunSpec, resumed: bool) {
        eprintln!(
            "[{}/{}] {} ({} {}, k {}, batch {}){} after {:.0} s",
            index + 1,
            total,
            spec.name,
            spec.model,
            spec.objective,
            spec.k,
            spec.batch_size,
            if resumed { ", resuming" } else { "" },
            self.start.elapsed().as_secs_f64()
        );
    }
    fn eval_start(&self, spec: &iwtvae::reproduce::RunSpec, images: usize, k: usize) {
        eprintln!("    {:<14} evaluating: NLL k = {k} over {images} test images", spec.name);
    }
    fn run_end(&self, index: usize, total: usize, r: &iwtvae::reproduce::RunResult) {
        eprintln!(
            "[{}/{}] {} done: NLL {:.2} (seed {:.2}), recon {:.2}; train {:.0} s, eval {:.0} s",
            index + 1,
            total,
            r.name,
            r.nll,
            r.seed_nll,
            r.recon,
            r.train_seconds,
            r.eval_seconds
        );
    }
    fn epochs(&self, spec: &iwtvae::reproduce::RunSpec) -> Box<dyn Progress + Send> {
        Box::new(EpochLines { name: spec.name, epochs: 0 })
    }
}

fn run_reproduce(a: ReproduceArgs) -> Result<()> {
    let selection = iwtvae::device::select(&a.device)?;
    if let Some(note) = &selection.note {
        eprintln!("{note}");
    }
    anyhow::ensure!(a.jobs >= 1, "--jobs must be at least 1");
    let threads = a.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    anyhow::ensure!(threads >= 1, "--threads must be at least 1");
    let opts = iwtvae::reproduce::ReproduceOptions {
        out: a.out.clone(),
        data: a.data.clone(),
        seed: a.seed,
        epochs: a.epochs,
        eval_k: a.eval_k,
        only: a.only.clone(),
        jobs: a.jobs,
        threads,
        machine: iwtvae::reproduce::machine_description(threads),
        limit: a.limit,
        device: selection.device,
    };
    eprintln!("reproducing the seed's tables into {} on {}", a.out.display(), opts.machine);
    let results = iwtvae::reproduce::reproduce(&opts, &ReproduceLines { start: Instant::now() })?;
    let suffix = if a.seed == 1 { String::new() } else { format!("-seed{}", a.seed) };
    eprintln!("{} runs; wrote {}/seed-tables{suffix}.md and .json", results.len(), a.out.display());
    Ok(())
}

fn run_show(a: ShowArgs) -> Result<()> {
    use iwtvae::viz::{curves, figures};
    anyhow::ensure!(a.digits >= 1 && a.scale >= 1, "--digits and --scale must be at least 1");
    let ck = load_checkpoint(&a.checkpoint).context("--checkpoint")?;
    let run_dir = a.checkpoint.parent().map(|p| p.to_path_buf()).unwrap_or_default();
    let binarize = binarize_of_run(&a.binarize, &run_dir)?;
    let out = a.out.clone().unwrap_or_else(|| run_dir.join("pictures"));
    let test = Dataset::load(&a.data, Split::Test, None).context("loading the test set (--data)")?;
    test.check_fits(&ck.layout.config).with_context(|| format!("--checkpoint {}", a.checkpoint.display()))?;
    iwtvae::fsutil::ensure_dir(&out).context("--out")?;
    let net = Network::<f32>::new(ck.layout);
    let file = |name: &str| out.join(format!("{}{name}", a.prefix));
    let mut written = Vec::new();

    let idx: Vec<usize> = (0..a.digits.min(test.len())).collect();
    let x = figures::targets(&test, &idx, binarize, a.seed);
    let groups = if idx.len() >= 12 { 3 } else { 1 };
    figures::reconstructions(&net, &ck.params, &x, idx.len(), groups, a.scale).save_png(&file("recon.png"))?;
    written.push(file("recon.png"));
    figures::prior_samples(&net, &ck.params, 48, 6, a.seed, a.scale).save_png(&file("samples.png"))?;
    written.push(file("samples.png"));
    figures::traversals(&net, &ck.params, &x, 6, 9, a.scale).save_png(&file("traversals.png"))?;
    written.push(file("traversals.png"));
    let angles = [-45.0, -30.0, -15.0, 0.0, 15.0, 30.0, 45.0];
    let turned: Vec<usize> = (0..4.min(test.len())).collect();
    figures::rotations(&net, &ck.params, &test, &turned, &angles, binarize, a.seed, a.scale)
        .save_png(&file("rotations.png"))?;
    written.push(file("rotations.png"));
    let few = idx.len().min(6);
    if let Some(c) = figures::warp_overlay(&net, &ck.params, &x, few, 8) {
        c.save_png(&file("warp.png"))?;
        written.push(file("warp.png"));
    }
    let log = run_dir.join("log.jsonl");
    if log.exists() {
        let series = vec![("training loss (-bound, train set)".to_string(), curves::read_log(&log)?)];
        let last = series[0].1.last().map(|p| p.0).unwrap_or(1.0);
        let nll: Vec<(String, f64, f64)> = std::fs::read_to_string(run_dir.join("eval.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| Some((format!("test NLL, k = {}", v["k"].as_u64()?), last, v["nll"].as_f64()?)))
            .into_iter()
            .collect();
        let title = format!("{} ({})", a.checkpoint.display(), net.layout.config.transform.name());
        curves::plot_curves(&file("curves.png"), &title, &series, &nll)?;
        written.push(file("curves.png"));
    }
    for w in written {
        eprintln!("wrote {}", w.display());
    }
    Ok(())
}

/// `--binarize` when given, else the run's own (its config.json), else dynamic.
fn binarize_of_run(flag: &Option<String>, run_dir: &std::path::Path) -> Result<iwtvae::data::Binarize> {
    Ok(match flag {
        Some(b) => parse_binarize(b)?,
        None => std::fs::read_to_string(run_dir.join("config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<TrainConfig>(&t).ok())
            .and_then(|c| c.binarize().ok())
            .unwrap_or(iwtvae::data::Binarize::Dynamic),
    })
}

fn run_probe(a: ProbeArgs) -> Result<()> {
    init_threads(a.threads)?;
    iwtvae::probe::check_angles(&a.angles).context("--angles")?;
    let ck = load_checkpoint(&a.checkpoint).context("--checkpoint")?;
    let run_dir = a.checkpoint.parent().map(|p| p.to_path_buf()).unwrap_or_default();
    let opts = iwtvae::probe::ProbeOptions {
        angles_deg: a.angles.clone(),
        binarize: binarize_of_run(&a.binarize, &run_dir)?,
        seed: a.seed,
    };
    let train = Dataset::load(&a.data, Split::Train, a.limit_train).context("loading the training set (--data)")?;
    let test = Dataset::load(&a.data, Split::Test, a.limit).context("loading the test set (--data)")?;
    let net = Network::<f32>::new(ck.layout);
    let r = iwtvae::probe::probe(&net, &ck.params, &train, &test, &opts)
        .with_context(|| format!("probing {}", a.checkpoint.display()))?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    let pct = |v: Option<f64>| v.map_or("      —".to_string(), |v| format!("{:6.2}%", 100.0 * v));
    let num = |v: Option<f64>| v.map_or("    —".to_string(), |v| format!("{v:5.3}"));
    println!(
        "{} model (z {}, u {}): read-outs fit on {} training digits, tested on {} test digits (binarize {}, seed {}), {:.1} s",
        r.transform, r.z_dim, r.u_dim, r.train_images, r.test_images, r.binarize, r.seed, r.seconds
    );
    println!("label: the digit read from the posterior mean by a linear discriminant (test accuracy);");
    println!("moved: how far the rotation moves each block's mean (0: not at all, 1: as far as another digit's code);");
    println!(
        "warp turn: the rotation of the warp that u sets, as the digit turns (the angle itself if u takes it all)."
    );
    println!("rotation  label from z   from u   from z,u   z moved   u moved   warp turn");
    for row in &r.rows {
        println!(
            "{:>7}°      {}  {}    {}     {}     {}   {}",
            row.angle_deg,
            pct(Some(row.accuracy_z)),
            pct(row.accuracy_u),
            pct(row.accuracy_zu),
            num(row.moved_z),
            num(row.moved_u),
            row.warp_turn_deg.map_or("      —".to_string(), |v| format!("{v:6.2}°"))
        );
    }
    if let Some(ar) = &r.angle_readout {
        println!(
            "rotation angle read by least squares from the posterior mean (R² on rotated test digits): z {}, u {}, z,u {}",
            num(Some(ar.r2_z)),
            num(ar.r2_u),
            num(ar.r2_zu)
        );
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let result = iwtvae::ops::simd::simd_cap_from_env().map_err(anyhow::Error::msg).and_then(|_| match cli.command {
        Command::Train(a) => run_train(a),
        Command::Eval(a) => run_eval(a),
        Command::Reproduce(a) => run_reproduce(a),
        Command::Show(a) => run_show(a),
        Command::Probe(a) => run_probe(a),
    });
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
