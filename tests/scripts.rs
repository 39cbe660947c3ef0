//! The scripts a GPU session depends on, checked where there is no GPU: a
//! syntax error in the bundle's runner or a report script that misreads its
//! inputs would otherwise surface only in a device session, at the cost of
//! its limited time. Shell scripts are parsed (`bash -n`, the runner taken
//! out of scripts/gpu-bundle.sh, which writes it); the Python report scripts
//! run on inputs in the formats `iwtvae eval` and the speed benches write.
//! The estimator study's commands (scripts/estimator-study.sh, dry run) are
//! checked against the committed runs' settings. Skips loudly when bash or
//! python3 is missing.
use std::path::Path;
use std::process::{Command, Output};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn have(tool: &str) -> bool {
    let found = Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("SKIPPED (scripts): no {tool} on this machine");
    }
    found
}

fn run(cmd: &mut Command) -> Output {
    cmd.current_dir(ROOT).output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The runner that scripts/gpu-bundle.sh writes (its `<<'RUN'` here-document).
fn bundle_runner() -> String {
    let script = std::fs::read_to_string(Path::new(ROOT).join("scripts/gpu-bundle.sh")).expect("gpu-bundle.sh");
    let start = script.find("<<'RUN'\n").expect("the runner's here-document") + "<<'RUN'\n".len();
    let end = start + script[start..].find("\nRUN\n").expect("the end of the runner's here-document");
    script[start..end].to_string()
}

#[test]
fn shell_scripts_parse() {
    if !have("bash") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let runner = dir.path().join("run.sh");
    std::fs::write(&runner, bundle_runner()).expect("writing the runner");
    let scripts = [
        ".ci/run",
        "scripts/gpu-bundle.sh",
        "scripts/install-cuda.sh",
        "scripts/emu-asan.sh",
        "scripts/fake-gpu.sh",
        "scripts/estimator-study.sh",
        "scripts/probe-all.sh",
        "scripts/sass.sh",
        "benches/compare.sh",
    ];
    for path in scripts.iter().map(|s| Path::new(ROOT).join(s)).chain([runner]) {
        let o = run(Command::new("bash").arg("-n").arg(&path));
        assert!(o.status.success(), "{}: {}", path.display(), text(&o));
    }
}

/// `scripts/estimator-study.sh` reruns the README's DReG study: its dry run
/// trains each committed results/dreg run with the settings in that run's
/// config.json (model sizes, objective, seed), evaluates on the shared
/// noise, and compares the pair, without touching anything.
#[test]
fn estimator_study_reruns_the_committed_runs() {
    if !have("bash") {
        return;
    }
    let work = tempfile::tempdir().expect("temp dir");
    let o = run(Command::new("bash")
        .arg("scripts/estimator-study.sh")
        .args(["--models", "vae,affine,tps", "--seeds", "2", "--work"])
        .arg(work.path())
        .env("DRY_RUN", "1"));
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let trains: Vec<&str> = out.lines().filter(|l| l.contains(" train ")).collect();
    assert_eq!(trains.len(), 6, "an IWAE and a DReG run per model:\n{out}");
    for model in ["vae", "affine", "tps"] {
        let dir = format!("results/dreg/{model}-iwaedreg5-seed2");
        let line = trains.iter().find(|l| l.ends_with(&format!("--out {dir}"))).expect("the DReG run's command");
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(Path::new(ROOT).join(&dir).join("config.json")).unwrap())
                .unwrap();
        let flag = |name: &str| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let at = words.iter().position(|w| *w == name).unwrap_or_else(|| panic!("{name} in {line}"));
            words[at + 1].to_string()
        };
        let transform = cfg["transform"].as_str().unwrap();
        assert_eq!(flag("--transform"), transform, "{line}");
        assert_eq!(flag("--z-dim"), cfg["z_dim"].to_string(), "{line}");
        assert_eq!(flag("--u-dim"), cfg["u_dim"].to_string(), "{line}");
        assert_eq!(flag("--objective"), cfg["objective"].as_str().unwrap(), "{line}");
        assert_eq!(flag("--seed"), cfg["seed"].to_string(), "{line}");
        // The rest is the protocol's default, as in the committed run.
        assert_eq!(
            (cfg["k"].as_u64(), cfg["epochs"].as_u64(), cfg["batch_size"].as_u64()),
            (Some(5), Some(50), Some(100))
        );
        let iwae = trains.iter().find(|l| l.contains(&format!("{model}-iwae5-seed2"))).expect("the IWAE run");
        assert_eq!(
            iwae.replace("--objective iwae ", "").split(" --out ").next(),
            line.replace("--objective iwae-dreg ", "").split(" --out ").next(),
            "the pair differs only in the objective"
        );
        assert!(out.contains(&format!(
            "compare {}/{model}-iwae-2.csv {}/{model}-dreg-2.csv",
            work.path().display(),
            work.path().display()
        )));
    }
    assert_eq!(out.lines().filter(|l| l.contains(" eval ") && l.contains("--per-image")).count(), 6);
    assert!(std::fs::read_dir(work.path()).unwrap().next().is_none(), "a dry run writes nothing");
}

/// Every command of the runner that runs our binaries or the PyTorch bench
/// (through its "${torch_bench[@]}" command line) is under the step time
/// limit `t` (a program, not a shell function: `timeout` cannot run one), so one hang costs one step of a device
/// session, not the rest of it.
#[test]
fn every_runner_command_is_time_limited() {
    let runner = bundle_runner().replace("\\\n", " ");
    let mut checked = 0;
    for line in runner.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        let launches =
            (line.contains("\"$here/") && !line.starts_with("ck=")) || line.contains("\"${torch_bench[@]}\"");
        if launches {
            checked += 1;
            assert!(
                line.starts_with("t \"") || line.contains(" t \"") || line.contains("(t \""),
                "a runner command without the step time limit: {line}"
            );
        }
    }
    assert!(checked >= 6, "found only {checked} commands in the runner: has its form changed?");
}

fn per_image_csv(dir: &Path, name: &str, shift: f64) -> String {
    let mut csv = String::from("index,label,nll,elbo,recon,recon_at_mean\n");
    for i in 0..4 {
        let nll = 90.0 + i as f64 + shift;
        csv.push_str(&format!("{i},{},{nll},{},{},{}\n", i % 10, nll + 5.0, nll - 10.0, nll - 12.0));
    }
    let path = dir.join(name);
    std::fs::write(&path, csv).expect("writing a CSV");
    path.display().to_string()
}

fn eval_report(dir: &Path, precision: &str, seconds: f64) -> String {
    let report = serde_json::json!({
        "nll": 91.5, "nll_se": 0.5, "elbo": 96.5, "recon": 80.0, "recon_at_mean": 78.0, "active_units": 40,
        "active_units_z": 30, "active_units_u": 10, "images": 4, "k": 5000, "seconds": seconds,
        "images_per_sec": 4.0 / seconds, "device": "cuda (test)", "precision": precision, "binarize": "dynamic", "seed": 1
    });
    let path = dir.join(format!("full-{precision}.json"));
    std::fs::write(&path, report.to_string()).expect("writing a report");
    path.display().to_string()
}

/// precision.py names the fastest precision within 0.01 nats of the CPU:
/// here bf16 is fastest but 0.02 off, so tf32.
#[test]
fn precision_report_picks_the_fastest_within_tolerance() {
    if !have("python3") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let csvs = [
        per_image_csv(d, "cpu.csv", 0.0),
        per_image_csv(d, "gpu-fp32.csv", 0.0001),
        per_image_csv(d, "gpu-tf32.csv", -0.004),
        per_image_csv(d, "gpu-bf16.csv", 0.02),
    ];
    let timings = [eval_report(d, "fp32", 0.9), eval_report(d, "tf32", 0.4), eval_report(d, "bf16", 0.3)];
    let o = run(Command::new("python3").arg("benches/precision.py").args(&csvs).arg("--timing").args(&timings));
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("OUTSIDE") && out.contains("should be tf32"), "{out}");

    // A missing precision is reported, and the verdict says it is incomplete.
    let o =
        run(Command::new("python3").arg("benches/precision.py").args(&csvs[..3]).arg(d.join("gpu-bf16-missing.csv")));
    assert!(!o.status.success() && text(&o).contains("incomplete"), "{}", text(&o));
}

/// ratios.py reads the JSON lines of benches/speed.rs and of the PyTorch
/// runs (eager, compiled), takes PyTorch's best run for each figure, and
/// leaves out a run that printed no result rather than failing.
#[test]
fn speed_ratios_take_pytorchs_best_run() {
    if !have("python3") {
        return;
    }
    let ours = serde_json::json!({
        "impl": "iwtvae-cuda", "device": "cuda (test)", "train_images_per_sec": 500000.0,
        "nll_k5000_images_per_sec": 25000.0, "nll_seconds": 0.4, "nll_images": 10000
    });
    let eager = serde_json::json!({
        "impl": "pytorch", "mode": "eager", "train_images_per_sec": 20000.0, "nll_k5000_images_per_sec": 1000.0
    });
    let compiled = serde_json::json!({
        "impl": "pytorch", "mode": "compiled", "train_images_per_sec": 25000.0, "nll_k5000_images_per_sec": 800.0
    });
    let o = run(Command::new("python3").arg("benches/pytorch/ratios.py").args([
        ours.to_string(),
        eager.to_string(),
        "TIMEOUT after 300 s".to_string(),
        compiled.to_string(),
    ]));
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("pytorch (compiled)") && out.contains("20.00x"), "{out}");
    assert!(out.contains("pytorch (eager)") && out.contains("25.00x"), "{out}");
    assert!(out.contains("left out") && out.contains("0.400 s"), "{out}");
    let o = run(Command::new("python3").arg("benches/pytorch/ratios.py").args([ours.to_string(), String::new()]));
    assert!(!o.status.success() && text(&o).contains("no PyTorch result"), "{}", text(&o));
    // --nll-only (compare.sh's bf16 runs): the NLL line alone, each side's
    // precision named.
    let mut ours_bf16 = ours.clone();
    ours_bf16["precision"] = "bf16".into();
    let mut eager_bf16 = eager.clone();
    eager_bf16["nll_precision"] = "bf16".into();
    let o = run(Command::new("python3").arg("benches/pytorch/ratios.py").args([
        "--nll-only".to_string(),
        ours_bf16.to_string(),
        eager_bf16.to_string(),
    ]));
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("NLL k=5000 (bf16 vs bf16)") && out.contains("25.00x"), "{out}");
    assert!(!out.contains("training epoch"), "{out}");
}
