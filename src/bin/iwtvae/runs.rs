//! train, eval and reproduce.
use crate::args::{EvalArgs, ReproduceArgs, TrainArgs};
use crate::progress::{evaluate_with_bar, print_report, Bar, ReproduceLines};
use crate::{binarize_of_run, data_of_run, run_of, setup, DEFAULT_DATA};
use anyhow::{Context, Result};
use iwtvae::data::{Dataset, Split};
use iwtvae::device::Device;
use iwtvae::eval::{per_image_csv, EvalOptions, Precision, DEFAULT_CHUNK};
use iwtvae::fsutil::atomic_write;
use iwtvae::model::checkpoint::load_checkpoint;
use iwtvae::network::Network;
use iwtvae::optim::OptimizerKind;
use iwtvae::train::{train_monitored, EvaluationSettings, TestMonitor, TrainConfig};
use std::time::Instant;

/// `train`; `given(id)` says whether the command line set flag `id`.
pub(crate) fn run_train(a: TrainArgs, given: &dyn Fn(&str) -> bool) -> Result<()> {
    let device = setup(&a.common)?;
    let optimizer = OptimizerKind::parse(&a.optimizer)?;
    let objective = iwtvae::objective::Objective::parse(&a.objective)?;
    let flagged =
        EvaluationSettings { eval_k: a.eval_k, test_every: a.test_every, test_k: a.test_k, test_limit: a.test_limit };
    let flags = TrainConfig {
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
        precision: a.precision.clone(),
        data_dir: Some(a.common.data.clone().unwrap_or_else(|| DEFAULT_DATA.into()).display().to_string()),
        data_digest: None,
        evaluation: Some(flagged.clone()),
    };
    let mut cfg = if a.resume { settings_to_resume(flags, &a.out, given)? } else { flags };
    // A resumed run evaluates as it was set up to, flag by flag, unless the
    // command line says otherwise (these change no training bit).
    let ev = match cfg.evaluation.take() {
        Some(saved) if a.resume => EvaluationSettings {
            eval_k: if given("eval_k") { flagged.eval_k } else { saved.eval_k },
            test_every: if given("test_every") { flagged.test_every } else { saved.test_every },
            test_k: if given("test_k") { flagged.test_k } else { saved.test_k },
            test_limit: if given("test_limit") { flagged.test_limit } else { saved.test_limit },
        },
        _ => flagged,
    };
    cfg.evaluation = Some(ev.clone());
    // A resumed run reads its own data unless --data says otherwise (and the
    // library refuses images other than the run's).
    let data_dir = match (&a.common.data, &cfg.data_dir) {
        (Some(d), _) => d.clone(),
        (None, Some(run)) if a.resume => run.into(),
        (None, _) => DEFAULT_DATA.into(),
    };
    cfg.data_dir = Some(data_dir.display().to_string());
    cfg.validate()?;
    cfg.check_device(device)?;
    let data = Dataset::load(&data_dir, Split::Train, cfg.limit_train).context("loading the training set (--data)")?;
    eprintln!(
        "training {} (z {}, u {}) with {} k={} on {} images of {}, {} epochs, out {}",
        cfg.transform,
        cfg.z_dim,
        cfg.u_dim,
        cfg.objective,
        cfg.k,
        data.len(),
        data_dir.display(),
        cfg.epochs,
        a.out.display()
    );
    let load_test = |limit| Dataset::load(&data_dir, Split::Test, limit).context("loading the test set (--data)");
    let test = if ev.eval_k > 0 { Some(load_test(None)?) } else { None };
    let monitored = match (ev.test_every, ev.test_limit, &test) {
        (0, _, _) => None,
        (_, None, Some(all)) => Some(std::borrow::Cow::Borrowed(all)),
        (_, limit, _) => Some(std::borrow::Cow::Owned(load_test(limit)?)),
    };
    let monitor =
        monitored.as_deref().map(|data| TestMonitor { data, every: ev.test_every, k: ev.test_k.unwrap_or(cfg.k) });
    let mut bar = Bar { bar: None, start: Instant::now(), images: 0, quiet: false };
    let trained = train_monitored(device, &cfg, &data, monitor, &a.out, a.resume, &mut bar)?;
    if let (true, Some(test)) = (ev.eval_k > 0, &test) {
        eprintln!("evaluating on {} test images with k = {} ...", test.len(), ev.eval_k);
        let net = Network::<f32>::new(trained.layout.clone());
        let opts = EvalOptions {
            k: ev.eval_k,
            chunk: DEFAULT_CHUNK,
            binarize: cfg.binarize()?,
            seed: cfg.seed,
            precision: iwtvae::eval::Precision::default_for(device),
            bounds: Vec::new(),
        };
        let (report, _) = evaluate_with_bar(device, &net, &trained.params, test, &opts)?;
        let path = a.out.join("eval.json");
        atomic_write(&path, serde_json::to_string_pretty(&report)?.as_bytes())?;
        print_report(&report);
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The flags of `train` that make a run's settings (`TrainConfig`): clap's
/// id of each, and how the command line spells it.
pub(crate) const RUN_SETTING_FLAGS: [(&str, &str); 17] = [
    ("transform", "--transform"),
    ("z_dim", "--z-dim"),
    ("u_dim", "--u-dim"),
    ("hidden", "--hidden"),
    ("tps_grid", "--tps-grid"),
    ("objective", "--objective"),
    ("k", "--k"),
    ("epochs", "--epochs"),
    ("batch_size", "--batch-size"),
    ("optimizer", "--optimizer"),
    ("schedule", "--schedule"),
    ("lr", "--lr"),
    ("binarize", "--binarize"),
    ("limit_train", "--limit-train"),
    ("seed", "--seed"),
    ("theta_init", "--theta-init"),
    ("precision", "--precision"),
];

/// `train --resume`: the run's own settings (its config.json), so that its
/// flags need not be repeated; a flag given anyway must agree with them, and
/// one that does not is an error naming it (a resumed run continues as it
/// was set up, bit for bit).
fn settings_to_resume(flags: TrainConfig, out: &std::path::Path, given: &dyn Fn(&str) -> bool) -> Result<TrainConfig> {
    let Some(saved) = iwtvae::train::saved_config(out).context("--resume")? else {
        // No run there: the library's error says so.
        return Ok(flags);
    };
    let value = |c: &TrainConfig, id: &str| -> String {
        let json = serde_json::to_value(c).unwrap_or_default();
        json.get(id).map(|v| v.to_string().trim_matches('"').to_string()).unwrap_or_default()
    };
    let differing: Vec<String> = RUN_SETTING_FLAGS
        .iter()
        .filter(|(id, _)| given(id) && value(&flags, id) != value(&saved, id))
        .map(|(id, flag)| format!("{flag} {} (the run's: {})", value(&flags, id), value(&saved, id)))
        .collect();
    if !differing.is_empty() {
        anyhow::bail!(
            "--resume continues the run in {} with its own settings ({}), and these flags differ from them: {}. \
             Leave them out, or start a new run with another --out",
            out.display(),
            iwtvae::train::RunPaths::new(out).config.display(),
            differing.join(", ")
        );
    }
    Ok(saved)
}

pub(crate) fn run_eval(a: EvalArgs, given: &dyn Fn(&str) -> bool) -> Result<()> {
    let device = setup(&a.common)?;
    let split = Split::parse(&a.split)?;
    // A run trained on continuous targets is scored on them unless
    // --binarize says otherwise, as show, probe and encode do.
    let run = run_of(&a.checkpoint);
    let binarize = binarize_of_run(&given("binarize").then(|| a.common.binarize.clone()), run.as_ref())?;
    let precision = iwtvae::eval::Precision::parse_for(&a.precision, device)?;
    precision.check_device(device)?;
    if device == Device::Cpu && precision == Precision::Bf16 && !iwtvae::ops::linear_bf16::has_avx512bf16() {
        eprintln!(
            "note: no AVX512-BF16 here (the CPU lacks it, or IWTVAE_SIMD caps it), so --precision bf16 runs its portable loop, slower than fp32"
        );
    }
    let mut bounds = a.bounds.clone();
    bounds.sort_unstable();
    bounds.dedup();
    let opts = EvalOptions { k: a.k, chunk: a.chunk, binarize, seed: a.common.seed, precision, bounds };
    opts.check()?;
    if let Some(p) = &a.per_image {
        iwtvae::fsutil::prepare_output_file(p).context("--per-image")?;
    }
    let ck = load_checkpoint(&a.checkpoint).context("--checkpoint")?;
    let data_dir = data_of_run(&a.common.data, run.as_ref());
    let data = Dataset::load(&data_dir, split, a.limit).context("loading --data")?;
    let net = Network::<f32>::new(ck.layout);
    let (report, rows) = evaluate_with_bar(device, &net, &ck.params, &data, &opts)?;
    if let Some(p) = &a.per_image {
        atomic_write(p, per_image_csv(&rows, &opts.bounds).as_bytes()).context("--per-image")?;
    }
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

pub(crate) fn run_reproduce(a: ReproduceArgs) -> Result<()> {
    let selection = iwtvae::device::select(&a.device)?;
    if let Some(note) = &selection.note {
        eprintln!("{note}");
    }
    let threads = a.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let mut seeds = a.seed.clone();
    let mut seen = std::collections::HashSet::new();
    seeds.retain(|s| seen.insert(*s));
    let start = Instant::now();
    let mut spread_written = false;
    for (i, &seed) in seeds.iter().enumerate() {
        let opts = iwtvae::reproduce::ReproduceOptions {
            out: a.out.clone(),
            data: a.data.clone(),
            seed,
            epochs: a.epochs,
            eval_k: a.eval_k,
            only: a.only.clone(),
            jobs: a.jobs,
            threads,
            machine: iwtvae::reproduce::machine_description(threads),
            limit: a.limit,
            device: selection.device,
        };
        let of_seeds = if seeds.len() > 1 { format!(" (seed {} of {})", i + 1, seeds.len()) } else { String::new() };
        eprintln!(
            "reproducing the seed's tables into {} on {}, training seed {seed}{of_seeds}",
            a.out.display(),
            opts.machine
        );
        let results = iwtvae::reproduce::reproduce(&opts, &ReproduceLines { start })?;
        let suffix = if seed == 1 { String::new() } else { format!("-seed{seed}") };
        eprintln!("{} runs; wrote {}/seed-tables{suffix}.md and .json", results.len(), a.out.display());
        // write_tables writes the spread exactly when some run has two seeds.
        spread_written = iwtvae::reproduce::seed_spread(&a.out, &opts).iter().any(|s| s.seeds.len() > 1);
    }
    if spread_written {
        eprintln!("wrote {}/seed-spread.md and .json", a.out.display());
    }
    Ok(())
}
