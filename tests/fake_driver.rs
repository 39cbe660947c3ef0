//! The real CUDA path, cudarc included, without a GPU: the CLI started with
//! the stand-in `libcuda.so` of crates/cuda-emu (`src/fake_driver.cpp`) on
//! `LD_LIBRARY_PATH`, which serves cudarc's driver calls and runs each
//! kernel on the emulator. `--device emulated` reaches the same kernels
//! through the device layer's emulator backend, which skips cudarc; so these
//! tests cover what it cannot: the driver's dynamic loading and probe,
//! module loading of the embedded fatbins, function lookup, dynamic
//! shared-memory opt-ins, cuLaunchKernel's argument marshalling, copies,
//! stream capture and graph replay. Both backends run the same kernels in
//! the same order, so they must agree bit for bit.
#![cfg(feature = "emulator")]
use std::path::Path;
use std::process::{Command, Output};

const MNIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist");

/// The fake driver's folder, or None (and a loud skip) when this build
/// cannot run the test.
fn fake_driver(test: &str) -> Option<&'static Path> {
    if !iwtvae::device::CUDA_KERNELS {
        eprintln!("SKIPPED {test}: this build has no CUDA kernels (nvcc was not found at build time)");
        return None;
    }
    let dir = cuda_emu::fake_driver_dir();
    if dir.is_none() {
        eprintln!("SKIPPED {test}: the fake libcuda.so was not built (see cuda-emu's build warning)");
    }
    dir
}

fn iwtvae(args: &[&str], driver: Option<&Path>, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iwtvae"));
    cmd.args(args).envs(env.iter().copied());
    if let Some(dir) = driver {
        let path = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
        cmd.env("LD_LIBRARY_PATH", format!("{}:{path}", dir.display()));
    }
    cmd.output().expect("runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: Output, what: &str) -> Output {
    assert!(o.status.success(), "{what} failed: {}", stderr(&o));
    o
}

/// The fake's counts line (IWTVAE_FAKE_CUDA_TRACE): direct launches,
/// captured, graph launches, kernels replayed, allocations.
fn counts(o: &Output) -> [u64; 5] {
    let err = stderr(o);
    let line = err.lines().rfind(|l| l.starts_with("fake libcuda: ")).unwrap_or_else(|| panic!("no counts in {err}"));
    let numbers: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    numbers.try_into().unwrap_or_else(|_| panic!("five counts in {line:?}"))
}

/// `train` of the small TPS run both training tests use: 250 images, so
/// each epoch has two full batches of 100 (replayed from a captured graph)
/// and a short one of 50 (launched directly); two epochs, no evaluation.
fn small_tps_run<'a>(device: &'a str, run: &'a Path) -> Vec<&'a str> {
    let mut args = vec!["train", "--data", MNIST, "--transform", "tps", "--limit-train", "250", "--epochs", "2"];
    args.extend(["--hidden", "40", "--eval-k", "0", "--test-every", "0", "--device", device]);
    args.extend(["--out", run.to_str().expect("a UTF-8 temp path")]);
    args
}

/// A small model to evaluate: one epoch on the CPU, on `images` training
/// images, `hidden` units wide.
fn cpu_model(run: &Path, images: &str, hidden: &str) {
    let mut args = vec!["train", "--data", MNIST, "--limit-train", images, "--epochs", "1", "--hidden", hidden];
    args.extend(["--eval-k", "0", "--test-every", "0", "--out", run.to_str().expect("a UTF-8 temp path")]);
    ok(iwtvae(&args, None, &[]), "cpu train");
}

fn run_dir_checkpoint(run: &Path) -> Vec<u8> {
    std::fs::read(run.join("checkpoint.safetensors")).expect("a checkpoint")
}

#[test]
fn evaluation_through_cudarc_matches_the_emulated_backend() {
    let Some(driver) = fake_driver("evaluation_through_cudarc_matches_the_emulated_backend") else { return };
    let dir = tempfile::tempdir().unwrap();
    // A small TPS model: train one short epoch on the CPU.
    let run = dir.path().join("run");
    cpu_model(&run, "200", "48");
    for precision in ["fp32", "tf32", "bf16"] {
        let csv = |device: &str| dir.path().join(format!("{device}-{precision}.csv"));
        let eval = |device: &str, driver: Option<&Path>| {
            let out = csv(device);
            ok(
                iwtvae(
                    &[
                        "eval",
                        "--checkpoint",
                        run.to_str().unwrap(),
                        "--device",
                        device,
                        "--precision",
                        precision,
                        "--k",
                        "40",
                        "--bounds",
                        "1,8,40",
                        "--limit",
                        "3",
                        "--per-image",
                        out.to_str().unwrap(),
                    ],
                    driver,
                    &[("IWTVAE_FAKE_CUDA_TRACE", "1")],
                ),
                &format!("eval --device {device} --precision {precision}"),
            )
        };
        let o = eval("cuda", Some(driver));
        assert!(stderr(&o).contains("fake libcuda"), "not run through the fake driver: {}", stderr(&o));
        let [direct, captured, ..] = counts(&o);
        assert!(direct > 0 && captured == 0, "evaluation launches directly: {direct} {captured}");
        eval("emulated", None);
        let (a, b) = (std::fs::read_to_string(csv("cuda")).unwrap(), std::fs::read_to_string(csv("emulated")).unwrap());
        assert_eq!(a, b, "{precision}: cudarc + fake driver vs the emulated backend, per image");
        assert!(a.starts_with("index,label,nll,elbo,recon,recon_at_mean,ess,nll_k1,nll_k8,nll_k40\n"), "{a}");
    }
}

#[test]
fn training_through_cudarc_graphs_matches_the_emulated_backend() {
    let Some(driver) = fake_driver("training_through_cudarc_graphs_matches_the_emulated_backend") else { return };
    let dir = tempfile::tempdir().unwrap();
    let train = |device: &str, driver: Option<&Path>| {
        let run = dir.path().join(device);
        let o = ok(
            iwtvae(&small_tps_run(device, &run), driver, &[("IWTVAE_FAKE_CUDA_TRACE", "1")]),
            &format!("train --device {device}"),
        );
        (run, o)
    };
    let (cuda_run, o) = train("cuda", Some(driver));
    let [direct, captured, graph_launches, replayed, allocations] = counts(&o);
    // One graph a full batch's step, captured once per epoch.
    assert_eq!(graph_launches, 4, "two full steps in each of two epochs replay a graph");
    assert!(captured > 0 && replayed == 2 * captured, "each epoch's capture replays twice: {captured} {replayed}");
    assert!(direct > 0 && allocations > 0);
    let (emulated_run, _) = train("emulated", None);
    assert_eq!(
        run_dir_checkpoint(&cuda_run),
        run_dir_checkpoint(&emulated_run),
        "cudarc + fake driver vs the emulated backend: checkpoint bytes"
    );
    let losses = |run: &Path| -> Vec<String> {
        std::fs::read_to_string(run.join("log.jsonl"))
            .unwrap()
            .lines()
            .map(|l| l.split(",\"seconds\"").next().unwrap().to_string())
            .collect()
    };
    assert_eq!(losses(&cuda_run), losses(&emulated_run));
}

#[test]
fn device_selection_with_and_without_a_gpu() {
    let Some(driver) = fake_driver("device_selection_with_and_without_a_gpu") else { return };
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("model.safetensors");
    // An untrained model is enough to be evaluated.
    let run = dir.path().join("run");
    cpu_model(&run, "100", "16");
    std::fs::copy(run.join("checkpoint.safetensors"), &ckpt).unwrap();
    let eval = |device: &str, gpus: &str| {
        iwtvae(
            &["eval", "--checkpoint", ckpt.to_str().unwrap(), "--device", device, "--k", "4", "--limit", "2", "--json"],
            Some(driver),
            &[("IWTVAE_FAKE_CUDA_DEVICES", gpus)],
        )
    };
    let o = ok(eval("auto", "1"), "eval --device auto with a GPU");
    let json = String::from_utf8_lossy(&o.stdout);
    assert!(json.contains("\"device\":\"cuda"), "auto picks the GPU: {json}");
    assert!(!stderr(&o).contains("running on the CPU"), "{}", stderr(&o));

    let o = ok(eval("auto", "0"), "eval --device auto without a GPU");
    assert!(stderr(&o).contains("running on the CPU: no CUDA GPU found"), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"device\":\"cpu"));

    let o = eval("cuda", "0");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("no usable CUDA GPU at index 0 (0 found)"), "{}", stderr(&o));
    let o = eval("cuda:1", "1");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("index 1 (1 found)"), "{}", stderr(&o));
}

/// A GPU fault in the middle of a run (an illegal address, which is sticky:
/// the process cannot use the GPU again) stops training with an error that
/// names the kernel and the epoch, keeps the last epoch's checkpoint and
/// optimizer state, and `train --resume` then ends with the uninterrupted
/// run's checkpoint bytes.
#[test]
fn a_gpu_fault_keeps_the_last_checkpoint_and_resume_completes_the_run() {
    let Some(driver) = fake_driver("a_gpu_fault_keeps_the_last_checkpoint_and_resume_completes_the_run") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let train = |run: &Path, env: &[(&str, &str)]| iwtvae(&small_tps_run("cuda", run), Some(driver), env);

    let whole = dir.path().join("whole");
    ok(train(&whole, &[]), "the uninterrupted run");

    // An epoch of 250 images runs 126 kernels (42 direct, 84 replayed), so
    // the 140th is in the second epoch's first replayed step.
    let faulty = dir.path().join("faulty");
    let o = train(&faulty, &[("IWTVAE_FAKE_CUDA_FAIL_AT", "140")]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("an illegal memory access was encountered"), "{err}");
    assert!(err.contains("in epoch 2; the checkpoint of epoch 1 is kept"), "{err}");
    let log = std::fs::read_to_string(faulty.join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 1, "one epoch logged: {log}");

    ok(
        iwtvae(
            &["train", "--resume", "--out", faulty.to_str().unwrap(), "--eval-k", "0", "--test-every", "0"],
            Some(driver),
            &[("IWTVAE_FAKE_CUDA_DEVICES", "1")],
        ),
        "train --resume after the fault",
    );
    assert_eq!(run_dir_checkpoint(&faulty), run_dir_checkpoint(&whole), "resumed vs uninterrupted checkpoint");
}

/// Running out of GPU memory is an error that says so and how much was
/// asked for, not a panic.
#[test]
fn gpu_out_of_memory_is_a_clear_error() {
    let Some(driver) = fake_driver("gpu_out_of_memory_is_a_clear_error") else { return };
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let o = iwtvae(
        &[
            "train",
            "--data",
            MNIST,
            "--limit-train",
            "100",
            "--epochs",
            "1",
            "--eval-k",
            "0",
            "--device",
            "cuda",
            "--out",
            run.to_str().unwrap(),
        ],
        Some(driver),
        &[("IWTVAE_FAKE_CUDA_MEMORY", "3000000")],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("MiB on the GPU") && err.contains("out of memory"), "{err}");
}
