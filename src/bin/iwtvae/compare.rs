//! `iwtvae compare`: two models' per-image estimates, paired.
use crate::args::CompareArgs;
use anyhow::{Context, Result};
use iwtvae::compare::{check_metric, compare, read_per_image, MeanSe};

/// " ± SE", or nothing for a single value.
fn se(m: &MeanSe) -> String {
    m.se.map_or(String::new(), |s| format!(" ± {s:.4}"))
}

/// A signed difference with its SE.
fn pm(m: &MeanSe) -> String {
    format!("{:+.4}{}", m.mean, se(m))
}

pub(crate) fn run_compare(a: CompareArgs) -> Result<()> {
    check_metric(&a.metric)?;
    let rows_a = read_per_image(&a.a, &a.metric).context("A")?;
    let rows_b = read_per_image(&a.b, &a.metric).context("B")?;
    let c = compare(&a.metric, (&a.a, &rows_a), (&a.b, &rows_b))?;
    if a.json {
        println!("{}", serde_json::to_string(&c)?);
        return Ok(());
    }
    println!("{} over {} images (nats, lower is better; differences are B − A)", c.metric, c.images);
    println!("  A  {:.4}{}  {}", c.a.mean, se(&c.a), a.a.display());
    println!("  B  {:.4}{}  {}", c.b.mean, se(&c.b), a.b.display());
    print!("  B − A  {} (paired SE)", pm(&c.diff));
    if let Some((lo, hi)) = c.ci95 {
        print!(", 95% interval [{lo:+.4}, {hi:+.4}]");
    }
    println!();
    if let Some(u) = c.unpaired_se {
        println!("  the two figures' own SEs alone would give ± {u:.4}");
    }
    println!("  B is lower on {:.1}% of the images", 100.0 * c.b_lower);
    let labels: Vec<String> = c.per_label.iter().map(|l| format!("{}: {}", l.label, pm(&l.diff))).collect();
    println!("  per label: {}", labels.join(", "));
    Ok(())
}
