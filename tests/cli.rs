//! The CLI end to end on a small subset, and its handling of bad input.
use std::path::Path;
use std::process::Command;

const MNIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist");

fn iwtvae(args: &[&str]) -> std::process::Output {
    iwtvae_with(args, &[])
}

fn iwtvae_with(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_iwtvae")).args(args).envs(env.iter().copied()).output().expect("runs")
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A reader of stdout that leaves early ends the run quietly (SIGPIPE, as
/// Unix tools do), not with a panic: Rust ignores SIGPIPE by default, so
/// println! would panic on the broken pipe.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("a.csv");
    std::fs::write(&csv, "index,label,nll\n0,7,1\n1,3,2\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_iwtvae"))
        .args(["compare", csv.to_str().unwrap(), csv.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    // Closed before the child can have written (it has not parsed its
    // flags yet); had it written first, it exits 0, which passes too.
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert_ne!(o.status.code(), Some(101), "panicked: {}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
}

#[test]
fn train_one_epoch_then_eval_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = iwtvae(&[
        "train",
        "--data",
        MNIST,
        "--limit-train",
        "1000",
        "--epochs",
        "1",
        "--eval-k",
        "0",
        "--threads",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "train failed: {}", stderr(&o));
    let log = std::fs::read_to_string(out.join("log.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    let (start, end) = (line["loss_start"].as_f64().unwrap(), line["loss_end"].as_f64().unwrap());
    assert!(end < start - 20.0, "the loss did not fall: first steps {start}, last steps {end}");
    // By default each epoch ends with the test split's bound at the training k.
    let test_nll = line["test_nll"].as_f64().expect("test_nll in the log");
    assert_eq!(line["test_k"], 5);
    assert!(test_nll > 50.0 && test_nll <= line["test_elbo"].as_f64().unwrap(), "{line}");

    let per_image = dir.path().join("per_image.csv");
    let o = iwtvae(&[
        "eval",
        "--data",
        MNIST,
        "--checkpoint",
        out.join("checkpoint.safetensors").to_str().unwrap(),
        "--k",
        "100",
        "--limit",
        "50",
        "--bounds",
        "10,1,5,10",
        "--json",
        "--per-image",
        per_image.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "eval failed: {}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is one JSON object");
    for key in ["nll", "elbo", "recon", "recon_at_mean", "active_units", "images", "k", "seconds", "device", "ess_mean"]
    {
        assert!(report.get(key).is_some(), "missing key {key} in {report}");
    }
    assert_eq!(report["images"], 50);
    assert_eq!(report["k"], 100);
    let nll = report["nll"].as_f64().unwrap();
    // Over the evaluated images' spread: positive, and far below the NLL.
    let se = report["nll_se"].as_f64().unwrap();
    assert!(se > 0.0 && se < 0.1 * nll, "{report}");
    assert!(nll <= report["elbo"].as_f64().unwrap() + 1e-9 && nll > 50.0 && nll < 300.0, "{report}");
    // --bounds, sorted and once each: L_1 is the ELBO, L_10 between.
    let bounds = report["bounds"].as_array().expect("bounds in the report");
    let ks: Vec<_> = bounds.iter().map(|b| b["k"].as_u64().unwrap()).collect();
    assert_eq!(ks, [1, 5, 10], "{report}");
    assert_eq!(bounds[0]["nll"], report["elbo"]);
    let l10 = bounds[2]["nll"].as_f64().unwrap();
    assert!(nll <= l10 && l10 <= bounds[1]["nll"].as_f64().unwrap() && bounds[2]["nll_se"].is_f64(), "{report}");
    let csv = std::fs::read_to_string(&per_image).unwrap();
    assert_eq!(csv.lines().count(), 51);
    assert!(csv.starts_with("index,label,nll,elbo,recon,recon_at_mean,ess,nll_k1,nll_k5,nll_k10\n"), "{csv}");
    let pi = per_image.to_str().unwrap();
    let o = iwtvae(&["compare", pi, pi, "--metric", "nll_k10", "--json"]);
    assert!(o.status.success(), "compare --metric nll_k10: {}", stderr(&o));
    let same: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(same["diff"]["mean"], 0.0, "{same}");
    let ck = out.join("checkpoint.safetensors");
    let o = iwtvae(&["eval", "--checkpoint", ck.to_str().unwrap(), "--k", "100", "--bounds", "30", "--per-image", pi]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--bounds 30: each size must divide --k 100"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&per_image).unwrap(), csv, "a refused eval left --per-image alone");
    // The run directory stands for its checkpoint; a directory without one is
    // refused by the flag's name.
    let by_dir =
        ["eval", "--data", MNIST, "--checkpoint", out.to_str().unwrap(), "--k", "100", "--limit", "50", "--json"];
    let o = iwtvae(&by_dir);
    assert!(o.status.success(), "eval of the run directory failed: {}", stderr(&o));
    let again: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(again["nll"], report["nll"]);
    let o = iwtvae(&["eval", "--checkpoint", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--checkpoint") && stderr(&o).contains("without a checkpoint.safetensors"),
        "{}",
        stderr(&o)
    );

    // --precision bf16 on the CPU: AVX512-BF16 where the CPU has it, and
    // with IWTVAE_SIMD=avx2 the portable loop, the same bits; near fp32.
    let ck = out.join("checkpoint.safetensors");
    let bf16_eval = |simd: &str, name: &str| {
        let file = dir.path().join(name);
        let args = ["eval", "--data", MNIST, "--checkpoint", ck.to_str().unwrap(), "--k", "100", "--limit", "50"];
        let more = ["--precision", "bf16", "--per-image", file.to_str().unwrap()];
        let o = iwtvae_with(&[&args[..], &more[..]].concat(), &[("IWTVAE_SIMD", simd)]);
        assert!(o.status.success(), "eval --precision bf16 (IWTVAE_SIMD={simd}) failed: {}", stderr(&o));
        (std::fs::read_to_string(file).unwrap(), stderr(&o))
    };
    let (fast, fast_err) = bf16_eval("avx512", "bf16.csv");
    let (portable, portable_err) = bf16_eval("avx2", "bf16-portable.csv");
    assert!(portable_err.contains("runs its portable loop"), "{portable_err}");
    if iwtvae::ops::linear_bf16::has_avx512bf16() {
        assert!(!fast_err.contains("portable loop"), "{fast_err}");
    } else {
        eprintln!("SKIPPED (in part): no AVX512-BF16 here, so both bf16 runs took the portable loop");
    }
    assert_eq!(fast, portable, "AVX512-BF16 and the portable loop disagree");
    let nlls = |csv: &str| -> Vec<f64> {
        csv.lines().skip(1).map(|l| l.split(',').nth(2).unwrap().parse().unwrap()).collect()
    };
    let (a, b) = (nlls(&csv), nlls(&fast));
    let mean_diff = a.iter().zip(&b).map(|(x, y)| y - x).sum::<f64>() / a.len() as f64;
    let max_diff = a.iter().zip(&b).map(|(x, y)| (y - x).abs()).fold(0.0, f64::max);
    eprintln!("bf16 vs fp32 on the same noise: mean {mean_diff:+.5}, max |diff| {max_diff:.5} nats");
    // bf16 keeps 8 significand bits of the decoder's inputs and weights; on
    // the same noise a trained model's NLL moves by thousandths of a nat
    // (README), single images by up to ~0.1.
    assert!(mean_diff.abs() < 0.02 && max_diff < 0.3, "bf16 vs fp32: mean {mean_diff}, max {max_diff}");
    assert!(max_diff > 0.0, "bf16 left every estimate unchanged: is it in use?");

    // The same model with k = 10 against k = 100, paired: the first 10
    // samples of each image are the same draws (noise is keyed by image and
    // sample), and the bound tightens with k, so B − A > 0 on average; the
    // paired SE is far below what the two figures' own SEs give.
    let per_image_k10 = dir.path().join("per_image_k10.csv");
    let ck = out.join("checkpoint.safetensors");
    let (ck, a, b) = (ck.to_str().unwrap(), per_image.to_str().unwrap(), per_image_k10.to_str().unwrap());
    let o = iwtvae(&["eval", "--data", MNIST, "--checkpoint", ck, "--k", "10", "--limit", "50", "--per-image", b]);
    assert!(o.status.success(), "eval failed: {}", stderr(&o));
    let o = iwtvae(&["compare", a, b, "--json"]);
    assert!(o.status.success(), "compare failed: {}", stderr(&o));
    let c: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is one JSON object");
    let (diff, paired, unpaired) =
        (c["diff"]["mean"].as_f64().unwrap(), c["diff"]["se"].as_f64().unwrap(), c["unpaired_se"].as_f64().unwrap());
    assert!(c["images"] == 50 && diff > 0.0 && paired < 0.2 * unpaired, "{c}");
    assert!(c["per_label"].as_array().is_some_and(|l| !l.is_empty()), "{c}");
    let o = iwtvae(&["compare", a, b]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("paired SE"), "{}", String::from_utf8_lossy(&o.stdout));

    // Pictures of the same model.
    let pics = dir.path().join("pics");
    let o = iwtvae(&[
        "show",
        "--data",
        MNIST,
        "--checkpoint",
        out.join("checkpoint.safetensors").to_str().unwrap(),
        "--out",
        pics.to_str().unwrap(),
        "--digits",
        "6",
    ]);
    assert!(o.status.success(), "show failed: {}", stderr(&o));
    for name in
        ["recon.png", "samples.png", "traversals.png", "rotations.png", "transfer.png", "warp.png", "curves.png"]
    {
        let bytes = std::fs::read(pics.join(name)).unwrap_or_else(|_| panic!("{name} missing"));
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{name} is not a PNG");
        let (w, h) = (
            u32::from_be_bytes(bytes[16..20].try_into().unwrap()),
            u32::from_be_bytes(bytes[20..24].try_into().unwrap()),
        );
        assert!(w >= 84 && h >= 84, "{name}: {w}x{h}");
    }

    // The disentanglement probe of the same model.
    let ck = out.join("checkpoint.safetensors");
    let probe = |angles: &str| {
        iwtvae(&[
            "probe",
            "--data",
            MNIST,
            "--checkpoint",
            ck.to_str().unwrap(),
            "--limit-train",
            "1000",
            "--limit",
            "300",
            "--angles",
            angles,
            "--json",
        ])
    };
    let o = probe("-30,0,30,360");
    assert!(o.status.success(), "probe failed: {}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is one JSON object");
    assert_eq!((r["train_images"].as_u64(), r["test_images"].as_u64()), (Some(1000), Some(300)), "{r}");
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    let field = |i: usize, k: &str| rows[i][k].as_f64().unwrap_or_else(|| panic!("{k} of row {i} in {r}"));
    // Labels line up with their codes: after one epoch the upright digits'
    // z already names the digit far above chance (0.1).
    assert!(field(1, "accuracy_z") > 0.5, "{r}");
    assert_eq!((field(1, "moved_z"), field(1, "moved_u")), (0.0, 0.0));
    // A full turn resamples the grey image at its own pixels and binarizes
    // it with the upright image's uniforms, so the codes hardly move; a
    // fresh draw would move them by a sizeable fraction of their spread.
    assert!(field(3, "moved_z") < 1e-3 && field(3, "moved_u") < 1e-3, "{r}");
    assert!(field(0, "moved_z") > 0.01 && field(2, "moved_u") > 0.01, "{r}");
    assert!(r["angle_readout"]["r2_u"].as_f64().is_some(), "{r}");
    assert!(field(3, "warp_turn_deg").abs() < 1e-3 && field(1, "warp_turn_deg") == 0.0, "{r}");
    let o = probe("0,400");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--angles") && stderr(&o).contains("400"), "{}", stderr(&o));

    // The codes of the same model: safetensors with the run's metadata,
    // and the same numbers as CSV.
    let (st, csv) = (dir.path().join("codes.safetensors"), dir.path().join("codes.csv"));
    for file in [&st, &csv] {
        let args = ["encode", "--data", MNIST, "--checkpoint", ck.to_str().unwrap(), "--limit", "30", "--out"];
        let o = iwtvae(&[&args[..], &[file.to_str().unwrap()]].concat());
        assert!(o.status.success(), "encode failed: {}", stderr(&o));
        assert!(stderr(&o).contains("wrote the codes of 30 test images (z 42, u 18, θ 18)"), "{}", stderr(&o));
    }
    let bytes = std::fs::read(&st).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert_eq!(
        (meta["format"].as_str(), meta["split"].as_str(), meta["images"].as_str()),
        ("iwtvae-codes", "test", "30")
    );
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("mu_z").unwrap().shape(), &[30, 42]);
    assert_eq!(st.tensor("theta").unwrap().shape(), &[30, 18]);
    let first_mu_z = f32::from_le_bytes(st.tensor("mu_z").unwrap().data()[..4].try_into().unwrap());
    let csv = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(csv.lines().count(), 31);
    assert_eq!(csv.lines().nth(1).unwrap().split(',').nth(2).unwrap().parse::<f32>().unwrap(), first_mu_z);
}

#[test]
fn reproduce_writes_tables_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "reproduce",
        "--data",
        MNIST,
        "--out",
        dir.path().to_str().unwrap(),
        "--epochs",
        "1",
        "--eval-k",
        "3",
        "--limit",
        "300",
        "--only",
        "vae-elbokl,tps-iwae5",
    ];
    let o = iwtvae(&args);
    assert!(o.status.success(), "reproduce failed: {}", stderr(&o));
    assert!(stderr(&o).contains("tps-iwae5      evaluating: NLL k = 3 over 300 test images"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("seed-spread"), "one seed: {}", stderr(&o));
    let md = std::fs::read_to_string(dir.path().join("seed-tables.md")).unwrap();
    assert!(md.contains("| VAE (z 60) |") && md.contains("88.27") && md.contains("92.16"), "{md}");
    // Tables 1 and 2 miss two models each, table 3 five of its six runs.
    assert_eq!(md.matches("(not run)").count(), 2 + 2 + 5, "{md}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("seed-tables.json")).unwrap()).unwrap();
    assert_eq!(json["runs"].as_array().unwrap().len(), 2);
    assert!(json["runs"][0]["command"].as_str().unwrap().starts_with("iwtvae train --transform none --z-dim 60"));
    // A plain VAE has no u: the probe's u figures are null, not zero.
    let vae = dir.path().join("runs/vae-elbokl-seed1/checkpoint.safetensors");
    let o = iwtvae(&["probe", "--data", MNIST, "--checkpoint", vae.to_str().unwrap(), "--limit", "100", "--json"]);
    assert!(o.status.success(), "probe failed: {}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for key in ["accuracy_u", "accuracy_zu", "moved_u", "warp_turn_deg"] {
        assert!(r["rows"][0][key].is_null(), "{key} in {r}");
    }
    assert!(r["rows"][0]["accuracy_z"].as_f64().is_some() && r["angle_readout"]["r2_u"].is_null(), "{r}");
    // A second call finds both results on disk and redoes nothing.
    let o = iwtvae(&args);
    assert!(o.status.success());
    assert!(!stderr(&o).contains("epoch") && !stderr(&o).contains("evaluating"), "{}", stderr(&o));
    assert!(!dir.path().join("seed-spread.md").exists(), "one seed has no spread");
    // A second seed of one run adds the spread over seeds, from the results on
    // disk (seed 1's run is found done, not redone); a smoke run with other
    // settings in the same folder is not counted.
    let mut seed2 = args.to_vec();
    let last = seed2.len() - 1;
    seed2[last] = "vae-elbokl";
    seed2.extend(["--seed", "1,2"]);
    let o = iwtvae(&seed2);
    assert!(o.status.success(), "reproduce --seed 1,2 failed: {}", stderr(&o));
    assert!(stderr(&o).contains("training seed 2 (seed 2 of 2)"), "{}", stderr(&o));
    assert!(stderr(&o).contains("seed-spread.md and .json"), "{}", stderr(&o));
    assert_eq!(stderr(&o).matches("vae-elbokl     epoch   1/1").count(), 1, "only seed 2 trains: {}", stderr(&o));
    assert!(dir.path().join("seed-tables-seed2.md").exists());
    let mut other_protocol = seed2.clone();
    other_protocol[seed2.iter().position(|a| *a == "--eval-k").unwrap() + 1] = "2";
    let last = other_protocol.len() - 1;
    other_protocol[last] = "3";
    assert!(iwtvae(&other_protocol).status.success());
    // Seed 1 under that other protocol would find seed 1's finished eval-k 3
    // run: a clear error, not a silently reused figure.
    other_protocol[last] = "1";
    let o = iwtvae(&other_protocol);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("vae-elbokl-seed1") && stderr(&o).contains("--eval-k 3"), "{}", stderr(&o));
    let nll = |seed: u32| -> f64 {
        let path = dir.path().join(format!("runs/vae-elbokl-seed{seed}/result.json"));
        let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        r["nll"].as_f64().unwrap()
    };
    let (a, b) = (nll(1), nll(2));
    assert_ne!(a, b, "two seeds, two trainings");
    let spread: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("seed-spread.json")).unwrap()).unwrap();
    // The eval-k 2 run wrote its own spread file over seeds 1 and 3 only if
    // it counted the eval-k 3 results, which it must not: its own seed 3 has
    // no partner, so the file on disk is still the eval-k 3 one.
    assert_eq!(spread["eval_k"], 3, "{spread}");
    assert_eq!(spread["seeds"], serde_json::json!([1, 2]), "{spread}");
    let vae = &spread["runs"][0];
    assert_eq!(vae["name"], "vae-elbokl");
    assert_eq!(vae["nll"], serde_json::json!([a, b]));
    let mean = vae["nll_summary"]["mean"].as_f64().unwrap();
    let sd = vae["nll_summary"]["sd"].as_f64().unwrap();
    assert!((mean - (a + b) / 2.0).abs() < 1e-9 && (sd - (a - b).abs() / 2f64.sqrt()).abs() < 1e-9, "{vae}");
    assert!(vae["recon"].as_array().unwrap().len() == 2 && vae["seed_recon"] == 88.27, "{vae}");
    // tps-iwae5 has seed 1 only: listed with an undefined sd, no recon.
    let tps = &spread["runs"][1];
    assert!(tps["name"] == "tps-iwae5" && tps["nll_summary"]["sd"].is_null() && tps["recon"].is_null(), "{tps}");
    let md = std::fs::read_to_string(dir.path().join("seed-spread.md")).unwrap();
    assert!(md.contains("| run | seed 1 | seed 2 | mean | sd | range | seed README |"), "{md}");
    assert!(md.contains(&format!("| vae-elbokl | {a:.2} | {b:.2} | {:.2} |", (a + b) / 2.0)), "{md}");
    assert_eq!(vae["active_units"].as_array().unwrap().len(), 2, "{vae}");
    assert!(md.contains("## Active units") && md.contains("| tps-iwae5 | "), "{md}");
    let o = iwtvae(&["reproduce", "--only", "spiral", "--out", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("spiral"), "{}", stderr(&o));
}

#[test]
fn bad_input_is_a_clear_error_and_keeps_existing_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let o = iwtvae(&[
        "train",
        "--data",
        missing.to_str().unwrap(),
        "--epochs",
        "1",
        "--out",
        dir.path().join("r").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("train-images-idx3-ubyte") && e.contains("missing file") && !e.contains("panicked"), "{e}");

    let o = iwtvae(&["train", "--transform", "spiral"]);
    assert_eq!(o.status.code(), Some(1));
    // Checked before the banner, so nothing claims a "spiral" run started.
    assert!(stderr(&o).contains("--transform \"spiral\": expected"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("training spiral"), "{}", stderr(&o));
    for (flag, value) in
        [("--optimizer", "sgd"), ("--schedule", "cosine"), ("--objective", "vi"), ("--binarize", "maybe")]
    {
        let o = iwtvae(&["train", flag, value]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains(&format!("{flag} \"{value}\": expected")), "{}", stderr(&o));
    }

    // A width that would overflow the parameter count is refused up front.
    let o = iwtvae(&["train", "--hidden", "100000"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--hidden 100000 exceeds the limit"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("training tps"), "{}", stderr(&o));

    // A model for 5x6 images is refused on 28x28 digits, before --out exists.
    let cfg = iwtvae::model::ModelConfig {
        transform: iwtvae::model::Transform::Affine,
        z_dim: 3,
        u_dim: 2,
        hidden: 7,
        tps_grid: 3,
        height: 5,
        width: 6,
    };
    let layout = iwtvae::model::Layout::new(cfg);
    let small = dir.path().join("small.safetensors");
    let params = iwtvae::model::init_params::<f32>(&layout, 1);
    iwtvae::model::checkpoint::save_checkpoint(&small, &layout, &params, &[]).unwrap();
    let pictures = dir.path().join("pictures");
    let eval = ["eval", "--checkpoint", small.to_str().unwrap()];
    let show = ["show", "--checkpoint", small.to_str().unwrap(), "--out", pictures.to_str().unwrap()];
    let codes = dir.path().join("codes.safetensors");
    std::fs::write(&codes, "earlier codes").unwrap();
    let encode = ["encode", "--checkpoint", small.to_str().unwrap(), "--out", codes.to_str().unwrap()];
    for args in [&eval[..], &show[..], &encode[..]] {
        let o = iwtvae(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(stderr(&o).contains("expects 5x6 images but the data has 28x28"), "{args:?}: {}", stderr(&o));
    }
    assert!(!pictures.exists());
    assert_eq!(std::fs::read_to_string(&codes).unwrap(), "earlier codes");
    // encode's format comes from --out's extension, checked before any work.
    let npy = dir.path().join("codes.npy");
    let o = iwtvae(&["encode", "--checkpoint", "nowhere.safetensors", "--out", npy.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--out") && stderr(&o).contains(".safetensors or .csv"), "{}", stderr(&o));
    assert!(!npy.exists());

    // An unwritable --per-image is found before the evaluation, not after it.
    let o = iwtvae(&["eval", "--checkpoint", small.to_str().unwrap(), "--per-image", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--per-image") && stderr(&o).contains("is a directory"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("expects 5x6"), "checked after the evaluation began: {}", stderr(&o));

    let o = iwtvae(&["train", "--objective", "elbo-kl", "--k", "5"]);
    assert!(stderr(&o).contains("elbo-kl uses a single sample"), "{}", stderr(&o));

    let o = iwtvae(&["eval", "--checkpoint", "/nonexistent.safetensors"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("/nonexistent.safetensors"), "{}", stderr(&o));
    // The OS error appears once, not once per link of the cause chain.
    assert_eq!(stderr(&o).matches("os error 2").count(), 1, "{}", stderr(&o));

    // --out naming a file is refused, and the file is left as it was.
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, b"keep me").unwrap();
    let o =
        iwtvae(&["train", "--data", MNIST, "--limit-train", "100", "--epochs", "1", "--out", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("exists and is not a directory"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");

    // Without a usable GPU, asking for one is an error that says so (with one,
    // these would run; the GPU tests cover that).
    if iwtvae::device::cuda_device_count() == 0 {
        let o = iwtvae(&["eval", "--device", "cuda", "--checkpoint", "x"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("--device cuda"), "{}", stderr(&o));
        let o = iwtvae(&["train", "--device", "cuda:1", "--out", dir.path().join("g").to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("--device cuda:1") && !stderr(&o).contains("panicked"), "{}", stderr(&o));
    }

    let ck = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/torch_affine_tiny.safetensors");
    let o = iwtvae(&["eval", "--device", "cpu", "--precision", "tf32", "--checkpoint", ck, "--data", MNIST]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--precision tf32 is the GPU's tensor-core format"), "{}", stderr(&o));
    let o = iwtvae(&["eval", "--precision", "fp64", "--checkpoint", ck, "--data", MNIST]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--precision \"fp64\""), "{}", stderr(&o));
    // Training's TF32 is the GPU's; the CPU refuses it before --out exists.
    let tf32_out = dir.path().join("tf32");
    let o = iwtvae(&["train", "--device", "cpu", "--precision", "tf32", "--out", tf32_out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--precision tf32 trains on the GPU only"), "{}", stderr(&o));
    assert!(!tf32_out.exists() && !stderr(&o).contains("training tps"), "{}", stderr(&o));
    let o = iwtvae(&["train", "--precision", "bf16"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--precision \"bf16\": training runs in fp32 or tf32"), "{}", stderr(&o));

    // A run directory that already holds a checkpoint is not overwritten.
    let run = dir.path().join("kept");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("checkpoint.safetensors"), b"precious").unwrap();
    let o =
        iwtvae(&["train", "--data", MNIST, "--limit-train", "100", "--epochs", "1", "--out", run.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--resume"), "{}", stderr(&o));
    assert_eq!(std::fs::read(run.join("checkpoint.safetensors")).unwrap(), b"precious");
    assert!(Path::new(&run).join("checkpoint.safetensors").exists());

    // A run directory another process is training into is refused, and its
    // files are left alone (the claim is held here, as that process would).
    let busy = dir.path().join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("log.jsonl"), b"the other run's log\n").unwrap();
    let claim = iwtvae::fsutil::RunLock::acquire(&busy).unwrap();
    let o =
        iwtvae(&["train", "--data", MNIST, "--limit-train", "100", "--epochs", "1", "--out", busy.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("in use by another iwtvae process"), "{}", stderr(&o));
    assert_eq!(std::fs::read(busy.join("log.jsonl")).unwrap(), b"the other run's log\n");
    drop(claim);

    // --resume where there is no run says so, and makes no directory.
    let empty = dir.path().join("never-trained");
    let o = iwtvae(&["train", "--data", MNIST, "--limit-train", "100", "--resume", "--out", empty.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--resume") && stderr(&o).contains("holds no run to continue"), "{}", stderr(&o));
    assert!(!empty.exists());

    // A count of 0 is refused by the flag's name before anything runs; a
    // negative --lr reaches the check that explains it (not "unexpected
    // argument '-1'").
    for (args, flag) in [
        (&["train", "--k", "0"][..], "--k <K>"),
        (&["train", "--limit-train", "0"][..], "--limit-train"),
        (&["train", "--test-k", "0"][..], "--test-k"),
        (&["encode", "--checkpoint", "x", "--out", "c.csv", "--limit", "0"][..], "--limit"),
        (&["eval", "--checkpoint", "x", "--chunk", "0"][..], "--chunk"),
        (&["reproduce", "--jobs", "0"][..], "--jobs"),
        (&["show", "--checkpoint", "x", "--scale", "0"][..], "--scale"),
    ] {
        let o = iwtvae(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).contains(flag) && stderr(&o).contains("must be at least 1"), "{args:?}: {}", stderr(&o));
    }
    let o = iwtvae(&["train", "--lr", "-1", "--out", dir.path().join("neg").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--lr -1 must be a positive number"), "{}", stderr(&o));
}

/// `--device emulated` runs the CUDA path (engine, graphs, fused evaluator)
/// with its kernels on the CPU emulator and agrees with `--device cpu`: the
/// same epoch's loss to 1e-4 relative, and the same checkpoint's NLL to 1e-3
/// nats in fp32 (the kernels sum in other orders, so not bit for bit).
/// `train` of a small TPS model (hidden 32, z 6, u 4) for one epoch on the
/// first 48 MNIST images in batches of 24, without the final NLL, into
/// `out`, with `flags` added.
fn small_run<'a>(flags: &[&'a str], out: &'a std::path::Path) -> Vec<&'a str> {
    let mut args = vec!["train", "--data", MNIST, "--hidden", "32", "--z-dim", "6", "--u-dim", "4"];
    args.extend(["--limit-train", "48", "--batch-size", "24", "--epochs", "1", "--eval-k", "0"]);
    args.extend(flags);
    args.extend(["--out", out.to_str().unwrap()]);
    args
}

#[test]
fn emulated_device_trains_and_evaluates_like_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let (mut losses, mut test_nlls) = (Vec::new(), Vec::new());
    for (device, precision) in [("cpu", "fp32"), ("emulated", "fp32"), ("emulated", "tf32")] {
        let out = dir.path().join(format!("{device}-{precision}"));
        let flags = ["--device", device, "--precision", precision, "--k", "2", "--test-limit", "12"];
        let o = iwtvae(&small_run(&flags, &out));
        assert!(o.status.success(), "{device} train failed: {}", stderr(&o));
        if device == "emulated" {
            assert!(stderr(&o).contains("CPU emulator"), "says where it runs: {}", stderr(&o));
        }
        let log = std::fs::read_to_string(out.join("log.jsonl")).unwrap();
        let line: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
        losses.push(line["loss"].as_f64().unwrap());
        test_nlls.push(line["test_nll"].as_f64().unwrap());
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["precision"], precision, "the run records its precision");
    }
    assert!((losses[0] - losses[1]).abs() <= 1e-4 * losses[0].abs(), "epoch loss cpu vs emulated: {losses:?}");
    // TF32 GEMMs move an epoch's loss by ~2e-5 relative (gpu_parity's training tests).
    assert!((losses[0] - losses[2]).abs() <= 3e-4 * losses[0].abs(), "epoch loss cpu vs emulated tf32: {losses:?}");
    assert_ne!(losses[1], losses[2], "--precision tf32 trained as fp32");
    // The monitor's bound on 12 test images, by the CPU evaluator and by the
    // GPU's (TF32 decoder inputs by default on a GPU, so on the emulator),
    // of models as far apart as their losses (TF32 training: ~3e-4 relative).
    for (i, t) in test_nlls.iter().enumerate() {
        assert!((t - test_nlls[0]).abs() < 1e-3 * test_nlls[0], "test nll cpu vs emulated run {i}: {test_nlls:?}");
    }
    // The CPU run's monitor is `eval` of its model on the first 12 test images.
    let ck = dir.path().join("cpu-fp32/checkpoint.safetensors");
    let args = ["eval", "--data", MNIST, "--checkpoint", ck.to_str().unwrap(), "--k", "2", "--limit", "12", "--json"];
    let o = iwtvae(&args);
    assert!(o.status.success(), "eval failed: {}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(report["nll"].as_f64(), Some(test_nlls[0]), "the monitor is not eval --k 2 --limit 12");
    let mut nll = Vec::new();
    // `--precision auto` (the default) is fp32 on the CPU and tf32 on a GPU,
    // for which the emulator stands in.
    for (device, precision, default) in
        [("cpu", "auto", "fp32"), ("emulated", "fp32", "fp32"), ("emulated", "auto", "tf32")]
    {
        let o = iwtvae(&[
            "eval",
            "--data",
            MNIST,
            "--device",
            device,
            "--precision",
            precision,
            "--checkpoint",
            ck.to_str().unwrap(),
            "--k",
            "20",
            "--limit",
            "10",
            "--json",
        ]);
        assert!(o.status.success(), "{device} eval failed: {}", stderr(&o));
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
        assert!(report["device"].as_str().unwrap().starts_with(device), "{report}");
        assert_eq!(report["precision"], default, "{device} --precision {precision}");
        nll.push(report["nll"].as_f64().unwrap());
    }
    assert!((nll[0] - nll[1]).abs() < 1e-3, "NLL cpu {} vs emulated {}", nll[0], nll[1]);
    // TF32 inputs move this small model's NLL by ~1e-3 (gpu_parity bounds it per image).
    assert!((nll[0] - nll[2]).abs() < 2e-2, "NLL cpu {} vs emulated tf32 {}", nll[0], nll[2]);
}

/// `--objective iwae-dreg` from the command line, on the CPU and on the
/// CUDA path (the emulator): the run records its objective, both devices
/// agree (as above, 1e-4 relative), and it trains differently from plain
/// iwae from the same seed (the encoder's first update differs, so the
/// second batch's loss does).
#[test]
fn path_derivative_objectives_train_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let mut losses = Vec::new();
    for (device, objective) in [("cpu", "iwae-dreg"), ("emulated", "iwae-dreg"), ("cpu", "iwae")] {
        let out = dir.path().join(format!("{device}-{objective}"));
        let flags = ["--device", device, "--objective", objective, "--k", "3", "--test-every", "0"];
        let o = iwtvae(&small_run(&flags, &out));
        assert!(o.status.success(), "{device} {objective} failed: {}", stderr(&o));
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["objective"], objective);
        let log = std::fs::read_to_string(out.join("log.jsonl")).unwrap();
        let line: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
        losses.push(line["loss"].as_f64().unwrap());
    }
    assert!((losses[0] - losses[1]).abs() <= 1e-4 * losses[0].abs(), "iwae-dreg cpu vs emulated: {losses:?}");
    assert_ne!(losses[0], losses[2], "iwae-dreg trained as iwae: {losses:?}");
    // The bound's variant is a setting of the run: a resume may not change it.
    let out = dir.path().join("cpu-iwae-dreg");
    let o = iwtvae(&["train", "--resume", "--out", out.to_str().unwrap(), "--epochs", "2", "--objective", "iwae"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("--objective"), "{}", stderr(&o));
}

/// `reproduce` on the CUDA path (the emulator standing in for a GPU) gives
/// the CPU's table: the same keyed noise, so the figures differ only by
/// summation order in training (1e-4 relative, as above) and by the GPU's
/// default TF32 evaluation (≲ 1e-2 nats on this small model, as above).
#[test]
fn reproduce_on_the_emulated_device_matches_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let mut tables = Vec::new();
    for device in ["cpu", "emulated"] {
        let out = dir.path().join(device);
        let o = iwtvae(&[
            "reproduce",
            "--device",
            device,
            "--data",
            MNIST,
            "--out",
            out.to_str().unwrap(),
            "--limit",
            "100",
            "--epochs",
            "1",
            "--eval-k",
            "4",
            "--only",
            "vae-elbokl,tps-iwae5",
        ]);
        assert!(o.status.success(), "{device} reproduce failed: {}", stderr(&o));
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("seed-tables.json")).unwrap()).unwrap();
        let eval: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("runs/tps-iwae5-seed1/eval.json")).unwrap())
                .unwrap();
        assert!(eval["device"].as_str().unwrap().starts_with(device), "{eval}");
        tables.push(json["runs"].as_array().unwrap().clone());
    }
    assert_eq!(tables[0].len(), 2);
    for (cpu, emulated) in tables[0].iter().zip(&tables[1]) {
        let figure = |r: &serde_json::Value, key: &str| r[key].as_f64().unwrap();
        let name = &cpu["name"];
        assert_eq!(name, &emulated["name"]);
        let (a, b) = (figure(cpu, "final_train_loss"), figure(emulated, "final_train_loss"));
        assert!((a - b).abs() <= 1e-4 * a.abs(), "{name} training loss: cpu {a} vs emulated {b}");
        for key in ["nll", "recon"] {
            let (a, b) = (figure(cpu, key), figure(emulated, key));
            assert!((a - b).abs() < 2e-2, "{name} {key}: cpu {a} vs emulated {b}");
        }
    }
}

/// `train --resume --out DIR` needs none of the run's flags: it takes them
/// from the run (its config.json) and ends with the checkpoint bytes of the
/// uninterrupted run; a flag given anyway must agree, and one that does not
/// is refused by name before anything in DIR changes.
/// Training progress that stops the run after its first epoch, as a killed
/// run would be (its checkpoint written, the rest not run).
struct StopAfterFirst(bool);

impl iwtvae::train::Progress for StopAfterFirst {
    fn epoch_start(&mut self, _: usize, _: usize, _: usize) {}
    fn step(&mut self, _: f64, _: usize) {}
    fn epoch_end(&mut self, _: &iwtvae::train::EpochLog) {
        self.0 = true;
    }
    fn should_stop(&self) -> bool {
        self.0
    }
}

#[test]
fn resume_takes_the_runs_own_settings() {
    use iwtvae::data::{Dataset, Split};
    use iwtvae::train::{train, TrainConfig};
    let flags = [
        "--transform",
        "affine",
        "--z-dim",
        "3",
        "--u-dim",
        "2",
        "--hidden",
        "16",
        "--epochs",
        "2",
        "--lr",
        "0.7",
        "--limit-train",
        "200",
        "--seed",
        "3",
        "--threads",
        "2",
        "--data",
        MNIST,
        "--eval-k",
        "0",
    ];
    let dir = tempfile::tempdir().unwrap();
    let (whole, cut) = (dir.path().join("whole"), dir.path().join("cut"));
    let o = iwtvae(&[&["train", "--out", whole.to_str().unwrap()][..], &flags].concat());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // The same run stopped after its first epoch, as a killed one would be.
    let cfg: TrainConfig = serde_json::from_slice(&std::fs::read(whole.join("config.json")).unwrap()).unwrap();
    let data = Dataset::load(Path::new(MNIST), Split::Train, cfg.limit_train).unwrap();
    let first = train(&cfg, &data, &cut, false, &mut StopAfterFirst(false)).unwrap();
    assert_eq!(first.logs.len(), 1);

    let before = std::fs::read(cut.join("checkpoint.safetensors")).unwrap();
    for (flag, value) in [("--epochs", "3"), ("--transform", "tps"), ("--seed", "1"), ("--lr", "1.5")] {
        let o = iwtvae(&["train", "--resume", "--out", cut.to_str().unwrap(), "--data", MNIST, flag, value]);
        assert_eq!(o.status.code(), Some(1), "{flag}: {}", stderr(&o));
        assert!(stderr(&o).contains(&format!("{flag} {value} (the run's: ")), "{flag}: {}", stderr(&o));
        assert_eq!(std::fs::read(cut.join("checkpoint.safetensors")).unwrap(), before, "{flag} changed the run");
    }
    // Other training images under the same names (MNIST's test split) are
    // refused by their digest, naming the run's --data.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    for (from, to) in [
        ("t10k-images-idx3-ubyte.gz", "train-images-idx3-ubyte.gz"),
        ("t10k-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    ] {
        std::fs::copy(Path::new(MNIST).join(from), other.join(to)).unwrap();
        std::fs::copy(Path::new(MNIST).join(from), other.join(from)).unwrap();
    }
    let o = iwtvae(&["train", "--resume", "--out", cut.to_str().unwrap(), "--data", other.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("--data: these training images") && stderr(&o).contains(MNIST), "{}", stderr(&o));
    assert_eq!(std::fs::read(cut.join("checkpoint.safetensors")).unwrap(), before, "other data changed the run");

    // Flags that agree with the run are accepted; the rest, --data included,
    // come from it, here from the optimizer state's copy, as config.json is gone.
    std::fs::remove_file(cut.join("config.json")).unwrap();
    let o = iwtvae(&["train", "--resume", "--out", cut.to_str().unwrap(), "--transform", "affine", "--eval-k", "0"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("training affine (z 3, u 2)"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(cut.join("checkpoint.safetensors")).unwrap(),
        std::fs::read(whole.join("checkpoint.safetensors")).unwrap(),
        "the resumed run's checkpoint differs from the uninterrupted one's"
    );
    // eval of the run reads the run's --data by default: from a directory
    // where the default data/mnist does not exist, it still finds the images.
    let o = Command::new(env!("CARGO_BIN_EXE_iwtvae"))
        .args(["eval", "--checkpoint", cut.to_str().unwrap(), "--k", "2", "--limit", "3", "--json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = Command::new(env!("CARGO_BIN_EXE_iwtvae"))
        .args(["eval", "--checkpoint", "cut/checkpoint.safetensors", "--k", "2", "--data", "data/mnist"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("data/mnist") && stderr(&o).contains("missing file"), "{}", stderr(&o));
}

/// `train --resume` evaluates as the run was set up to (its `--eval-k`,
/// `--test-every`, `--test-k`, `--test-limit`, kept in config.json), unless the
/// command line says otherwise: a run started without the final NLL or the
/// per-epoch test bound does not gain them on resume.
#[test]
fn resume_keeps_the_runs_evaluation_settings() {
    use iwtvae::data::{Dataset, Split};
    use iwtvae::train::{train, TrainConfig};
    let dir = tempfile::tempdir().unwrap();
    let (whole, cut) = (dir.path().join("whole"), dir.path().join("cut"));
    let args = ["--data", MNIST, "--limit-train", "100", "--epochs", "2", "--hidden", "16", "--threads", "2"];
    let quiet = ["--eval-k", "0", "--test-every", "0"];
    let o = iwtvae(&[&["train", "--out", whole.to_str().unwrap()][..], &args, &quiet].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let cfg: TrainConfig = serde_json::from_slice(&std::fs::read(whole.join("config.json")).unwrap()).unwrap();
    let ev = cfg.evaluation.clone().expect("config.json keeps the evaluation settings");
    assert_eq!((ev.eval_k, ev.test_every, ev.test_k, ev.test_limit), (0, 0, None, None));

    // The same run stopped after its first epoch, then resumed without flags.
    let data = Dataset::load(Path::new(MNIST), Split::Train, cfg.limit_train).unwrap();
    train(&cfg, &data, &cut, false, &mut StopAfterFirst(false)).unwrap();
    let o = iwtvae(&["train", "--resume", "--out", cut.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("evaluating on"), "the final NLL came back on resume: {}", stderr(&o));
    assert!(!cut.join("eval.json").exists());
    let log = std::fs::read_to_string(cut.join("log.jsonl")).unwrap();
    assert!(!log.contains("test_nll"), "the per-epoch test bound came back on resume: {log}");
    assert_eq!(
        std::fs::read(cut.join("checkpoint.safetensors")).unwrap(),
        std::fs::read(whole.join("checkpoint.safetensors")).unwrap()
    );

    // A flag given on resume wins, and is kept for the next resume.
    let o = iwtvae(&["train", "--resume", "--out", cut.to_str().unwrap(), "--eval-k", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("with k = 2"), "{}", stderr(&o));
    let kept: TrainConfig = serde_json::from_slice(&std::fs::read(cut.join("config.json")).unwrap()).unwrap();
    assert_eq!(kept.evaluation.map(|e| (e.eval_k, e.test_every)), Some((2, 0)));
}

/// eval scores a run on the targets it was trained on unless --binarize says
/// otherwise: a model of continuous images is not silently scored on
/// binarized ones.
#[test]
fn eval_takes_the_runs_binarize_unless_given() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("grey");
    let args =
        ["train", "--data", MNIST, "--limit-train", "100", "--epochs", "1", "--eval-k", "0", "--binarize", "none"];
    let o = iwtvae(&[&args[..], &["--hidden", "16", "--out", run.to_str().unwrap()]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let eval = |extra: &[&str]| {
        let base = ["eval", "--checkpoint", run.to_str().unwrap(), "--k", "2", "--limit", "5", "--json"];
        let o = iwtvae(&[&base[..], extra].concat());
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (v["binarize"].as_str().unwrap().to_string(), v["recon"].as_f64().unwrap())
    };
    let (run_default, recon_grey) = eval(&[]);
    let (given, recon_binary) = eval(&["--binarize", "dynamic"]);
    assert_eq!((run_default.as_str(), given.as_str()), ("none", "dynamic"));
    assert_ne!(recon_grey, recon_binary, "the two targets score alike");
}
