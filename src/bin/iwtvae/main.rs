//! iwtvae: train and evaluate Importance Weighted Transformer VAEs.
//! The CLI parses flags, calls the library and prints; it holds no logic the
//! library lacks.
mod args;
mod compare;
mod inspect;
mod progress;
mod runs;

use anyhow::{Context, Result};
use args::{Common, CompareArgs, EncodeArgs, EvalArgs, ProbeArgs, ReproduceArgs, ShowArgs, TrainArgs};
use clap::{parser::ValueSource, CommandFactory, FromArgMatches, Parser};
use compare::run_compare;
use inspect::{run_encode, run_probe, run_show};
use iwtvae::train::{parse_binarize, TrainConfig};
use runs::{run_eval, run_reproduce, run_train};

#[derive(Parser)]
#[command(name = "iwtvae", version, about = "Importance Weighted Transformer VAEs on MNIST-format data", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Train a model (defaults: the seed's IW-TVAE-TPS protocol, then NLL with k = 5000 on the test set).
    Train(TrainArgs),
    /// Evaluate a checkpoint: NLL (importance sampled), ELBO, reconstruction, active units.
    Eval(EvalArgs),
    /// Train and evaluate the nine configurations of the seed's three tables; resumable.
    Reproduce(ReproduceArgs),
    /// Pictures of a model: reconstructions, prior samples, traversals, turned digits, the warp, training curves (PNG).
    Show(ShowArgs),
    /// Disentanglement in numbers: the digit label and the rotation angle read linearly from z and from u,
    /// and how far rotating a digit moves each.
    Probe(ProbeArgs),
    /// The posterior codes of a split (means and log σ of z and u, the warp θ at μu, its rotation, the label)
    /// as safetensors or CSV, for analysis elsewhere.
    Encode(EncodeArgs),
    /// Two models image by image: the mean difference of their per-image estimates (`eval --per-image`)
    /// with its paired standard error, overall and per label.
    Compare(CompareArgs),
}

pub(crate) fn init_threads(threads: Option<usize>) -> Result<()> {
    if let Some(t) = threads {
        rayon::ThreadPoolBuilder::new().num_threads(t).build_global().context("--threads: starting the thread pool")?;
    }
    Ok(())
}

pub(crate) fn setup(common: &Common) -> Result<iwtvae::device::Device> {
    init_threads(common.threads)?;
    let sel = iwtvae::device::select(&common.device)?;
    if let Some(note) = sel.note {
        eprintln!("{note} ({} threads)", rayon::current_num_threads());
    }
    Ok(sel.device)
}
/// The settings of the run a checkpoint belongs to (the config.json beside
/// it), where there is one: the defaults of --binarize and --data.
pub(crate) fn run_of(checkpoint: &std::path::Path) -> Option<TrainConfig> {
    let dir = checkpoint.parent().unwrap_or(std::path::Path::new(""));
    iwtvae::train::read_config(&iwtvae::train::RunPaths::new(dir).config).ok()
}

/// `--binarize` when given, else the run's own, else dynamic.
pub(crate) fn binarize_of_run(flag: &Option<String>, run: Option<&TrainConfig>) -> Result<iwtvae::data::Binarize> {
    Ok(match flag {
        Some(b) => parse_binarize(b)?,
        None => run.and_then(|c| c.binarize().ok()).unwrap_or(iwtvae::data::Binarize::Dynamic),
    })
}

/// Where `--data` points when it is not given.
pub(crate) const DEFAULT_DATA: &str = "data/mnist";

/// `--data` when given, else the run's own (a model of Fashion-MNIST is not
/// evaluated on MNIST by default), else data/mnist.
pub(crate) fn data_of_run(flag: &Option<std::path::PathBuf>, run: Option<&TrainConfig>) -> std::path::PathBuf {
    match flag {
        Some(d) => d.clone(),
        None => run.and_then(|c| c.data_dir.clone()).unwrap_or_else(|| DEFAULT_DATA.into()).into(),
    }
}
/// When the reader of stdout goes away (`iwtvae eval --json | head -c 1`),
/// stop as Unix tools do, by SIGPIPE, instead of panicking in `println!`:
/// Rust's runtime ignores SIGPIPE, which turns the write into an error.
#[cfg(unix)]
fn quiet_broken_pipe() {
    // SAFETY: first thing in main, before any other thread exists; SIG_DFL
    // is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() {
    #[cfg(unix)]
    quiet_broken_pipe();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Which flags the command line gave (not their defaults): `train --resume`
    // takes the others from the run.
    let given =
        |id: &str| matches.subcommand().is_some_and(|(_, m)| m.value_source(id) == Some(ValueSource::CommandLine));
    let result = iwtvae::ops::simd::simd_cap_from_env().map_err(anyhow::Error::msg).and_then(|_| match cli.command {
        Command::Train(a) => run_train(a, &given),
        Command::Eval(a) => run_eval(a, &given),
        Command::Reproduce(a) => run_reproduce(a),
        Command::Show(a) => run_show(a),
        Command::Probe(a) => run_probe(a),
        Command::Encode(a) => run_encode(a),
        Command::Compare(a) => run_compare(a),
    });
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `train --resume` compares the flags of `runs::RUN_SETTING_FLAGS` by
    /// clap id: every id must be one of train's arguments (an unknown id
    /// would read as "not given" in a release build), spelled as the flag
    /// says, and together they must name every setting of a run but the
    /// shard count (which follows --threads and stays with the run) and the
    /// data's directory and digest (checked by the digest, not by flag).
    #[test]
    fn run_setting_flags_are_trains_arguments_and_cover_its_settings() {
        let m = Cli::command().try_get_matches_from(["iwtvae", "train"]).unwrap();
        let (_, sub) = m.subcommand().unwrap();
        let train = Cli::command().find_subcommand("train").unwrap().clone();
        for (id, flag) in runs::RUN_SETTING_FLAGS {
            assert!(sub.try_get_raw(id).is_ok(), "{id} is not an argument of train");
            let arg = train.get_arguments().find(|a| a.get_id() == id).unwrap();
            assert_eq!(format!("--{}", arg.get_long().unwrap()), flag);
        }
        let every =
            TrainConfig { data_dir: Some("d".into()), data_digest: Some("h".into()), ..TrainConfig::seed_protocol() };
        let json = serde_json::to_value(every).unwrap();
        let mut settings: Vec<&str> = json.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        settings.retain(|k| !["shards", "data_dir", "data_digest"].contains(k));
        settings.sort();
        let mut ids: Vec<&str> = runs::RUN_SETTING_FLAGS.iter().map(|(id, _)| *id).collect();
        ids.sort();
        assert_eq!(ids, settings);
    }
}
