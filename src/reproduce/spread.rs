//! `seed-spread.{md,json}`: each configuration's figures over every training
//! seed on disk, so a reader can tell a difference from the seed's README (or
//! between two models) from run-to-run noise. One seed's table cannot: a
//! rerun with another seed, or with the same seed and differently rounded
//! sums, moves some figures by more than the gaps the tables are about.
//!
//! Written by every `reproduce` once some configuration has results for two
//! or more seeds under `<out>/runs/`; only results whose command matches this
//! call's protocol (epochs, eval k) are counted, so a quick smoke run in the
//! same folder cannot leak into the spread.
use super::{command_for, run_dir, seed_runs, ReproduceOptions, RunResult, RunSpec};
use crate::error::Result;
use crate::fsutil::atomic_write;
use serde::Serialize;
use std::path::Path;

/// Mean, sample standard deviation (n − 1; NaN for one value) and range.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub mean: f64,
    pub sd: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(values: &[f64]) -> Summary {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let sd = if values.len() < 2 {
            f64::NAN
        } else {
            (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0)).sqrt()
        };
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Summary { mean, sd, min, max }
    }
}

/// One configuration over its seeds.
#[derive(Clone, Debug, Serialize)]
pub struct SeedSpread {
    pub name: String,
    pub table: String,
    pub model: String,
    pub objective: String,
    pub seeds: Vec<u64>,
    /// NLL (k = eval_k) per seed, in `seeds` order.
    pub nll: Vec<f64>,
    pub nll_summary: Summary,
    pub seed_nll: f64,
    /// Table 1's reconstruction loss per seed (elbo-kl runs only).
    pub recon: Option<Vec<f64>>,
    pub recon_summary: Option<Summary>,
    pub seed_recon: Option<f64>,
    /// Active units per seed: the ELBO objectives' posterior collapse varies
    /// by seed, and with it the figures.
    pub active_units: Vec<usize>,
}

/// Seeds with a finished result for `spec` under the same protocol as `opts`.
fn results_over_seeds(out: &Path, spec: &RunSpec, opts: &ReproduceOptions) -> Vec<RunResult> {
    let Ok(entries) = std::fs::read_dir(out.join("runs")) else { return Vec::new() };
    let prefix = format!("{}-seed", spec.name);
    let mut seeds: Vec<u64> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_prefix(&prefix)).and_then(|s| s.parse().ok()))
        .collect();
    seeds.sort_unstable();
    seeds
        .into_iter()
        .filter_map(|seed| {
            let text = std::fs::read_to_string(run_dir(out, spec, seed).join("result.json")).ok()?;
            let r: RunResult = serde_json::from_str(&text).ok()?;
            let protocol = ReproduceOptions { seed, ..opts.clone() };
            (r.seed == seed && r.command == command_for(spec, &protocol)).then_some(r)
        })
        .collect()
}

/// Every configuration with at least one result, in the tables' order.
pub fn seed_spread(out: &Path, opts: &ReproduceOptions) -> Vec<SeedSpread> {
    seed_runs()
        .iter()
        .filter_map(|spec| {
            let results = results_over_seeds(out, spec, opts);
            if results.is_empty() {
                return None;
            }
            let nll: Vec<f64> = results.iter().map(|r| r.nll).collect();
            let recon = spec.seed_recon.map(|_| results.iter().map(|r| r.recon).collect::<Vec<f64>>());
            Some(SeedSpread {
                name: spec.name.into(),
                table: spec.table.into(),
                model: spec.model.into(),
                objective: spec.objective.into(),
                seeds: results.iter().map(|r| r.seed).collect(),
                nll_summary: Summary::of(&nll),
                nll,
                seed_nll: spec.seed_nll,
                recon_summary: recon.as_deref().map(Summary::of),
                recon,
                seed_recon: spec.seed_recon,
                active_units: results.iter().map(|r| r.active_units).collect(),
            })
        })
        .collect()
}

fn cell(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}")
    } else {
        "—".into()
    }
}

/// One table: a row per configuration, a column per seed seen anywhere.
fn table_md(rows: &[(&SeedSpread, &[f64], Summary, f64)], all_seeds: &[u64]) -> String {
    let mut md = String::from("| run |");
    for s in all_seeds {
        md.push_str(&format!(" seed {s} |"));
    }
    md.push_str(" mean | sd | range | seed README | mean − seed README |\n|---|");
    md.push_str(&"---|".repeat(all_seeds.len() + 5));
    md.push('\n');
    for (spread, values, summary, theirs) in rows {
        md.push_str(&format!("| {} |", spread.name));
        for s in all_seeds {
            let v = spread.seeds.iter().position(|x| x == s).map(|i| values[i]).unwrap_or(f64::NAN);
            md.push_str(&format!(" {} |", cell(v)));
        }
        md.push_str(&format!(
            " {} | {} | {} | {:.2} | {:+.2} |\n",
            cell(summary.mean),
            cell(summary.sd),
            cell(summary.max - summary.min),
            theirs,
            summary.mean - theirs
        ));
    }
    md
}

/// seed-spread.md and seed-spread.json, when some configuration has two or
/// more seeds; returns whether they were written.
pub fn write_spread(out: &Path, opts: &ReproduceOptions) -> Result<bool> {
    let spread = seed_spread(out, opts);
    if spread.iter().all(|s| s.seeds.len() < 2) {
        return Ok(false);
    }
    let mut all_seeds: Vec<u64> = spread.iter().flat_map(|s| s.seeds.iter().copied()).collect();
    all_seeds.sort_unstable();
    all_seeds.dedup();
    let mut md = format!(
        "# The seed's tables over {} training seeds\n\nEach configuration of `seed-tables.md`, trained and evaluated \
         once per seed (`iwtvae reproduce --seed N`; the seed sets initialisation, shuffling, binarization and every \
         ε, and the evaluation's noise), {} epochs, NLL with k = {}. Losses in nats. sd: the sample standard \
         deviation over the seeds; range: max − min. A difference between two models, or from the seed README's \
         single figure, smaller than these is not resolved by one seed.\n\nWritten by `iwtvae reproduce` from every \
         result on disk; each seed's commands, wall times and machine are in its `seed-tables*.json`.\n\n",
        all_seeds.len(),
        opts.epochs,
        opts.eval_k
    );
    let nll_rows: Vec<_> = spread.iter().map(|s| (s, s.nll.as_slice(), s.nll_summary, s.seed_nll)).collect();
    md.push_str("## NLL (tables 2 and 3)\n\n");
    md.push_str(&table_md(&nll_rows, &all_seeds));
    let recon_rows: Vec<_> =
        spread.iter().filter_map(|s| Some((s, s.recon.as_deref()?, s.recon_summary?, s.seed_recon?))).collect();
    if !recon_rows.is_empty() {
        md.push_str("\n## Reconstruction loss (table 1)\n\n");
        md.push_str(&table_md(&recon_rows, &all_seeds));
    }
    md.push_str("\n## Active units (z and u together: a dimension whose posterior mean varies over the test images with variance > 0.01, as Burda et al.)\n\n| run |");
    for s in &all_seeds {
        md.push_str(&format!(" seed {s} |"));
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(all_seeds.len()));
    md.push('\n');
    for spread in &spread {
        md.push_str(&format!("| {} |", spread.name));
        for s in &all_seeds {
            match spread.seeds.iter().position(|x| x == s) {
                Some(i) => md.push_str(&format!(" {} |", spread.active_units[i])),
                None => md.push_str(" — |"),
            }
        }
        md.push('\n');
    }
    atomic_write(&out.join("seed-spread.md"), md.as_bytes())?;
    let json = serde_json::json!({ "epochs": opts.epochs, "eval_k": opts.eval_k, "seeds": all_seeds, "runs": spread });
    atomic_write(&out.join("seed-spread.json"), serde_json::to_string_pretty(&json).expect("serialises").as_bytes())?;
    Ok(true)
}
