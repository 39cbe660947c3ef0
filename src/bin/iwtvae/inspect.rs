//! show (pictures), probe (the disentanglement in numbers) and encode (the
//! codes themselves, for analysis elsewhere).
use crate::args::{EncodeArgs, ModelInput, ProbeArgs, ShowArgs};
use crate::{binarize_of_run, data_of_run, init_threads, run_of};
use anyhow::{Context, Result};
use iwtvae::data::{Binarize, Dataset, Split};
use iwtvae::model::checkpoint::load_checkpoint;
use iwtvae::network::Network;
use std::time::Instant;

pub(crate) fn run_show(a: ShowArgs) -> Result<()> {
    use iwtvae::viz::{curves, figures, transfer};
    let ck = load_checkpoint(&a.checkpoint).context("--checkpoint")?;
    let run_dir = a.checkpoint.parent().map(|p| p.to_path_buf()).unwrap_or_default();
    let run = run_of(&a.checkpoint);
    let binarize = binarize_of_run(&a.binarize, run.as_ref())?;
    let out = a.out.clone().unwrap_or_else(|| run_dir.join("pictures"));
    let test = Dataset::load(&data_of_run(&a.data, run.as_ref()), Split::Test, None)
        .context("loading the test set (--data)")?;
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
    // Pose transfer: a digit of each class (rows) drawn in the poses of
    // the most different warps among the first 200 test digits (columns).
    let rows = transfer::one_per_label(&test.labels, 10);
    let candidates: Vec<usize> = (0..200.min(test.len())).collect();
    let xc = figures::targets(&test, &candidates, binarize, a.seed);
    let poses = transfer::distinct_poses(&net, &ck.params, &xc, candidates.len(), 8);
    let d = test.pixels();
    let xp: Vec<f32> = poses.iter().flat_map(|&p| xc[p * d..(p + 1) * d].iter().copied()).collect();
    let xr = figures::targets(&test, &rows, binarize, a.seed);
    if let Some(c) = transfer::pose_transfer(&net, &ck.params, &xr, rows.len(), &xp, poses.len(), a.scale) {
        c.save_png(&file("transfer.png"))?;
        written.push(file("transfer.png"));
    }
    let few = idx.len().min(6);
    if let Some(c) = figures::warp_overlay(&net, &ck.params, &x, few, 8) {
        c.save_png(&file("warp.png"))?;
        written.push(file("warp.png"));
    }
    let log = run_dir.join("log.jsonl");
    if log.exists() {
        let mut series = vec![("training loss (-bound, train set)".to_string(), curves::read_log(&log)?)];
        let test = curves::read_log_field(&log, "test_nll")?;
        if let (Some(k), false) = (curves::read_log_field(&log, "test_k")?.first(), test.is_empty()) {
            series.push((format!("test -bound, k = {} (test set)", k.1), test));
        }
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

/// The checkpoint's network and parameters, the targets' binarization
/// (`--binarize`, else the run's own) and the data directory (`--data`, else
/// the run's own).
fn open_model(input: &ModelInput) -> Result<(Network<f32>, Vec<f32>, Binarize, std::path::PathBuf)> {
    let ck = load_checkpoint(&input.checkpoint).context("--checkpoint")?;
    let run = run_of(&input.checkpoint);
    let binarize = binarize_of_run(&input.binarize, run.as_ref())?;
    Ok((Network::new(ck.layout), ck.params, binarize, data_of_run(&input.data, run.as_ref())))
}

pub(crate) fn run_probe(a: ProbeArgs) -> Result<()> {
    init_threads(a.input.threads)?;
    iwtvae::probe::check_angles(&a.angles).context("--angles")?;
    let (net, params, binarize, data_dir) = open_model(&a.input)?;
    let opts = iwtvae::probe::ProbeOptions { angles_deg: a.angles.clone(), binarize, seed: a.input.seed };
    let train = Dataset::load(&data_dir, Split::Train, a.limit_train).context("loading the training set (--data)")?;
    let test = Dataset::load(&data_dir, Split::Test, a.limit).context("loading the test set (--data)")?;
    let r = iwtvae::probe::probe(&net, &params, &train, &test, &opts)
        .with_context(|| format!("probing {}", a.input.checkpoint.display()))?;
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
    if let Some(row) = r.rows.iter().max_by(|a, b| a.angle_deg.abs().total_cmp(&b.angle_deg.abs())) {
        if let Some(by_class) = &row.warp_turn_by_class_deg {
            let list: Vec<String> = by_class
                .iter()
                .enumerate()
                .map(|(c, v)| if v.is_nan() { format!("{c}: —") } else { format!("{c}: {v:.1}°") })
                .collect();
            println!("warp turn per class at {}°: {}", row.angle_deg, list.join(", "));
        }
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

pub(crate) fn run_encode(a: EncodeArgs) -> Result<()> {
    let start = Instant::now();
    init_threads(a.input.threads)?;
    let split = Split::parse(&a.split)?;
    let ext = a.out.extension().and_then(|e| e.to_str()).unwrap_or("");
    let csv = match ext {
        "csv" => true,
        "safetensors" => false,
        _ => anyhow::bail!("--out {}: expected a file name ending in .safetensors or .csv", a.out.display()),
    };
    iwtvae::fsutil::prepare_output_file(&a.out).context("--out")?;
    let (net, params, binarize, data_dir) = open_model(&a.input)?;
    let data = Dataset::load(&data_dir, split, a.limit).context("loading --data")?;
    let codes = iwtvae::encode::encode_dataset(&net, &params, &data, binarize, a.input.seed)
        .with_context(|| format!("encoding with {}", a.input.checkpoint.display()))?;
    let bytes = if csv {
        codes.csv().into_bytes()
    } else {
        let cfg = &net.layout.config;
        let mut meta = iwtvae::model::checkpoint::model_metadata(cfg);
        meta.insert("format".into(), "iwtvae-codes".into());
        meta.insert("checkpoint".into(), a.input.checkpoint.display().to_string());
        meta.insert("data".into(), data_dir.display().to_string());
        meta.insert("split".into(), split.name().into());
        meta.insert("images".into(), codes.images().to_string());
        meta.insert("binarize".into(), binarize.name().into());
        meta.insert("seed".into(), a.input.seed.to_string());
        codes.safetensors(meta)
    };
    iwtvae::fsutil::atomic_write(&a.out, &bytes).context("--out")?;
    eprintln!(
        "wrote the codes of {} {} images (z {}, u {}, θ {}) to {} in {:.1} s",
        codes.images(),
        split.name(),
        codes.z_dim,
        codes.u_dim,
        codes.theta_dim,
        a.out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
