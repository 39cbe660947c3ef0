//! The device training path against the CPU spec: one whole step (fp32 and
//! TF32), epochs with CUDA graphs, a non-finite loss, graph replay against
//! direct launches, and the kernel benches' entry points.
#![allow(clippy::needless_range_loop)]
use super::{close, device_kinds, mnist};
use iwtvae::cuda::Gpu;
use iwtvae::device::Device;
use iwtvae::optim::{Optimizer, OptimizerKind};

/// One whole training step on the GPU against the CPU spec, from the same
/// parameters, optimizer state, batch and noise keys: the loss, the
/// gradient and the updated parameters and optimizer state. The GPU sums
/// in other orders (tiled GEMMs, warp reductions, shared-memory atomics
/// in the sampler's scatter) and contracts FMAs, so values agree to f32
/// rounding amplified by the depth of the network: 1e-4 relative on the
/// loss, and on every gradient 2e-3 of the largest gradient of its tensor
/// (the noise floor of a 500-row f32 sum of mixed-sign terms); Adadelta's
/// first step divides by √(0.1·g² + 1e-6), so the parameter updates
/// move by at most the gradients' error (see below).
///
/// With --precision tf32 the reference is the CPU with its GEMM operands
/// rounded to TF32 (`with_tf32_operands`), and the bounds are the same.
/// Against the plain fp32 CPU a TF32 step's gradients differ by up to
/// 10% of their norm at initialisation (TF32 moves each sample's
/// log p(x|z,u), a sum over 784 pixels, by a few 0.01 nats, which shifts
/// the IWAE weights; ReLU masks flip where a pre-activation is within
/// rounding of 0), while against the rounded CPU they agree to 4e-4:
/// the difference is TF32's, not the kernels'.
#[test]
fn training_step_matches_cpu() {
    use iwtvae::model::{init_params, Layout};
    use iwtvae::network::Network;
    use iwtvae::objective::{loss_and_grad, Objective};
    use iwtvae::ops::linear::with_tf32_operands;
    use iwtvae::train::{EpochPlan, TrainConfig};
    for device in device_kinds() {
        let Some(data) = mnist(iwtvae::data::Split::Train, 64) else {
            return;
        };
        for (transform, objective, k, binarize, precision) in [
            ("tps", "iwae", 5, "dynamic", "fp32"),
            ("affine", "elbo", 3, "dynamic", "fp32"),
            ("none", "elbo-kl", 1, "none", "fp32"),
            ("tps", "elbo-kl", 1, "none", "fp32"),
            ("tps", "iwae-dreg", 5, "dynamic", "fp32"),
            ("affine", "elbo-stl", 3, "dynamic", "fp32"),
            ("tps", "iwae", 5, "dynamic", "tf32"),
            ("affine", "elbo", 3, "dynamic", "tf32"),
            ("none", "elbo-kl", 1, "none", "tf32"),
        ] {
            let cfg = TrainConfig {
                precision: precision.into(),
                transform: transform.into(),
                z_dim: 10,
                u_dim: if transform == "none" { 0 } else { 6 },
                hidden: 48,
                objective: objective.into(),
                k,
                epochs: 1,
                batch_size: 24,
                schedule: "constant".into(),
                binarize: binarize.into(),
                limit_train: Some(64),
                seed: 11,
                ..TrainConfig::seed_protocol()
            };
            let layout = Layout::new(cfg.model_config(28, 28).unwrap());
            let params = init_params::<f32>(&layout, cfg.seed);
            let opt = Optimizer::new(OptimizerKind::Adadelta, layout.total);
            let items: Vec<u32> = (0..24u32).map(|i| (i * 37) % 64).collect();
            let plan = EpochPlan::new(cfg.seed, 2, 1.0, &items);
            // CPU: the spec.
            let net = Network::<f32>::new(layout.clone());
            let mut ws = net.workspace(items.len(), k, true);
            let d = data.pixels();
            let mut scratch = vec![0f32; d];
            for (b, &i) in items.iter().enumerate() {
                data.targets(
                    i as usize,
                    cfg.binarize().unwrap(),
                    plan.bin_key,
                    &mut scratch,
                    &mut ws.x[b * d..(b + 1) * d],
                );
            }
            let mut cpu_grads = vec![0f32; layout.total];
            let obj = Objective::parse(objective).unwrap();
            let mut step = || {
                loss_and_grad(
                    &net,
                    &params,
                    Some(&mut cpu_grads),
                    &mut ws,
                    &items,
                    k,
                    obj,
                    plan.keys,
                    iwtvae::ops::Par::Seq,
                )
            };
            // TF32 against the CPU with its GEMM operands rounded alike.
            let cpu_loss = if precision == "tf32" { with_tf32_operands(step) } else { step() };
            let mut cpu_params = params.clone();
            let mut cpu_opt = opt.clone();
            cpu_opt.step(&mut cpu_params, &cpu_grads, 1.0);
            // GPU.
            let mut engine =
                iwtvae::cuda::train::GpuEngine::new(Gpu::open(device).unwrap(), &layout, &cfg, &data, &params, &opt)
                    .unwrap();
            let gpu_loss = engine.single_step(&items, &plan).unwrap();
            let gpu_grads = engine.gradients().unwrap();
            let (mut gpu_params, mut gpu_opt) = (vec![0f32; layout.total], opt.clone());
            engine.state(&mut gpu_params, &mut gpu_opt).unwrap();
            let name = format!("{transform}/{objective}/{precision}");
            assert!(
                ((gpu_loss as f64) - cpu_loss).abs() <= 1e-4 * cpu_loss.abs(),
                "{name}: loss gpu {gpu_loss} cpu {cpu_loss}"
            );
            for e in &layout.entries {
                let r = e.offset..e.offset + e.len;
                let scale = cpu_grads[r.clone()].iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
                for i in r.clone() {
                    assert!(
                        (gpu_grads[i] - cpu_grads[i]).abs() <= 2e-3 * scale,
                        "{name}: grad {}[{}]: gpu {} cpu {} (scale {scale})",
                        e.name,
                        i - e.offset,
                        gpu_grads[i],
                        cpu_grads[i]
                    );
                    // Adadelta's first step is δ(g) = 1e-3·g/√(0.1g² + 1e-6): |δ'| ≤ 1 and
                    // |δ| < 3.2e-3, so |Δδ| ≤ min(|Δg|, 6.4e-3).
                    let ptol = (2e-3 * scale).min(6.4e-3) + 1e-7;
                    assert!(
                        (gpu_params[i] - cpu_params[i]).abs() <= ptol,
                        "{name}: param {}[{}]: gpu {} cpu {} (from {})",
                        e.name,
                        i - e.offset,
                        gpu_params[i],
                        cpu_params[i],
                        params[i]
                    );
                }
            }
            close(&format!("{name}: square_avg"), &gpu_opt.s1, &cpu_opt.s1, 2e-3);
        }
    }
}

/// Whole epochs through `train_on`: on the device the full batches
/// replay a CUDA graph captured per epoch and the short last batch runs
/// directly; on the CPU the spec. Same init, keys and order.
///
/// How close two trajectories stay depends on the transform. Without a
/// warp the training map is smooth almost everywhere, so rounding-level
/// differences stay rounding-level: 12 steps agree to 3e-5 (measured on
/// the emulator), bound 2e-4. A warp makes it discontinuous (a sampling
/// coordinate that crosses a pixel edge switches the bilinear slope;
/// the border clamp zeroes it), so differences can jump by a step's
/// size once a coordinate lands on the other side: 6 TPS steps on 130
/// images ended 2.4e-2 apart although every step's gradient, taken from
/// the same parameters, agreed to 5e-5 of its tensor's scale (as in
/// training_step_matches_cpu). So TPS runs 3 steps (8e-6 measured).
#[test]
fn training_epochs_with_graphs_match_cpu() {
    use iwtvae::device::Device;
    use iwtvae::train::{train_on, Silent, TrainConfig};
    for device in device_kinds() {
        for (transform, u_dim, images, epochs) in [("none", 0, 130, 2), ("tps", 6, 58, 1)] {
            let Some(data) = mnist(iwtvae::data::Split::Train, images) else {
                return;
            };
            let cfg = TrainConfig {
                transform: transform.into(),
                z_dim: 8,
                u_dim,
                hidden: 32,
                k: 3,
                epochs,
                batch_size: 24,
                limit_train: Some(images),
                seed: 7,
                ..TrainConfig::seed_protocol()
            };
            let (dc, dg) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let cpu = train_on(Device::Cpu, &cfg, &data, dc.path(), false, &mut Silent).unwrap();
            let dev = train_on(device, &cfg, &data, dg.path(), false, &mut Silent).unwrap();
            let name = format!("{} {transform}", device.name());
            for (c, g) in cpu.logs.iter().zip(&dev.logs) {
                assert!((c.loss - g.loss).abs() <= 1e-4 * c.loss.abs(), "{name}: loss cpu {} vs {}", c.loss, g.loss);
            }
            let worst = cpu.params.iter().zip(&dev.params).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            super::note(&format!("{name}: {epochs} epochs vs CPU: max |Δparam| {worst:e}"));
            assert!(worst <= 2e-4, "{name}: max |Δparam| {worst}");
            // The device run wrote a checkpoint the CPU can load and evaluate.
            let ck = iwtvae::model::checkpoint::load_checkpoint(&dg.path().join("checkpoint.safetensors")).unwrap();
            assert_eq!(ck.params, dev.params);
        }
    }
}

/// 58 training images in batches of 24 (two full, one short) for a
/// small TPS model with k = 3: the epoch-level tests' run.
fn small_run(seed: u64) -> Option<(iwtvae::data::Dataset, iwtvae::train::TrainConfig)> {
    let data = mnist(iwtvae::data::Split::Train, 58)?;
    let cfg = iwtvae::train::TrainConfig {
        z_dim: 8,
        u_dim: 6,
        hidden: 32,
        k: 3,
        batch_size: 24,
        limit_train: Some(58),
        seed,
        ..iwtvae::train::TrainConfig::seed_protocol()
    };
    Some((data, cfg))
}

/// `train --precision tf32` end to end: one epoch (3 steps, the full
/// batches replayed from a captured graph) on the tensor-core GEMMs. The
/// step itself is checked against the TF32-rounded CPU in
/// training_step_matches_cpu; here the run must reach those kernels (its
/// parameters differ from the fp32 run's: Adadelta's near-sign updates
/// pass TF32's gradient changes on to 1e-2, where fp32 runs agree to
/// 2e-4) and its epoch loss stay within 3e-4 of the CPU's fp32 one (TF32
/// moves it by ~2e-5). The CPU path refuses tf32 before writing
/// anything, and bf16 is not a training precision.
#[test]
fn a_tf32_training_run_reaches_the_tensor_cores_and_keeps_the_loss() {
    use iwtvae::train::{train_on, Silent, TrainConfig};
    let Some((data, cfg)) = small_run(9) else { return };
    let cfg = TrainConfig { epochs: 1, ..cfg };
    let tf32 = TrainConfig { precision: "tf32".into(), ..cfg.clone() };
    let dir = tempfile::tempdir().unwrap();
    let err = train_on(Device::Cpu, &tf32, &data, dir.path(), false, &mut Silent).err().unwrap();
    assert!(err.to_string().contains("--precision tf32"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the refused run wrote to --out");
    let bad = TrainConfig { precision: "bf16".into(), ..cfg.clone() };
    assert!(bad.validate().unwrap_err().to_string().contains("--precision \"bf16\""));

    let run = |device: Device, cfg: &TrainConfig| {
        let dir = tempfile::tempdir().unwrap();
        train_on(device, cfg, &data, dir.path(), false, &mut Silent).unwrap()
    };
    let cpu = run(Device::Cpu, &cfg);
    for device in device_kinds() {
        let (fp32, tc) = (run(device, &cfg), run(device, &tf32));
        let drift = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        let vs_fp32 = drift(&tc.params, &fp32.params);
        let dloss = (tc.logs[0].loss - cpu.logs[0].loss).abs() / cpu.logs[0].loss.abs();
        super::note(&format!(
            "{device:?} tf32 epoch: loss {} vs cpu {} (rel {dloss:e}); max |Δparam| vs its fp32 run {vs_fp32:e}",
            tc.logs[0].loss, cpu.logs[0].loss
        ));
        assert!(dloss <= 3e-4, "{device:?}: tf32 loss {} vs cpu {}", tc.logs[0].loss, cpu.logs[0].loss);
        assert!(vs_fp32 > 0.0, "{device:?}: the tf32 run is the fp32 run");
    }
}

/// A non-finite loss stops device training where it stops the CPU's: the
/// device files each step's loss and gradient flag itself (record_step)
/// and the host reports the first bad step after the epoch; no
/// checkpoint is written. lr 1e30 makes the second step's loss infinite
/// on both, whatever the rounding.
#[test]
fn a_non_finite_loss_stops_device_training_at_the_cpus_step() {
    use iwtvae::error::Error;
    use iwtvae::train::{train_on, Silent, TrainConfig};
    let Some((data, cfg)) = small_run(3) else { return };
    let cfg = TrainConfig { lr: 1e30, schedule: "constant".into(), ..cfg };
    let stop = |device: Device| {
        let dir = tempfile::tempdir().unwrap();
        let err = train_on(device, &cfg, &data, dir.path(), false, &mut Silent).err();
        assert!(!dir.path().join("checkpoint.safetensors").exists(), "{device:?} wrote a checkpoint");
        match err {
            Some(Error::NonFinite { epoch, step, .. }) => (epoch, step),
            other => panic!("{device:?}: {other:?}"),
        }
    };
    let want = stop(Device::Cpu);
    assert_eq!(want, (1, 2), "the CPU's stop");
    for device in device_kinds() {
        assert_eq!(stop(device), want, "{device:?}");
    }
}

/// An epoch whose full batches replay one captured graph against the same
/// epoch launched step by step. On the emulator both run the same
/// launches in the same order on a deterministic machine, so they agree
/// bit for bit: any difference is the capture or the replay. On a GPU the
/// sampler's backward adds with shared-memory atomics in whatever order
/// the warps arrive, so the two agree to rounding over 3 steps: 1e-4.
#[test]
fn graph_replay_matches_direct_launches() {
    use iwtvae::cuda::train::GpuEngine;
    use iwtvae::model::{init_params, Layout};
    use iwtvae::train::{Engine, EpochPlan, Silent};
    let Some((data, cfg)) = small_run(5) else { return };
    let layout = Layout::new(cfg.model_config(28, 28).unwrap());
    let params0 = init_params::<f32>(&layout, cfg.seed);
    let perm = iwtvae::rng::epoch_permutation(cfg.seed, 0, data.len());
    let plan = EpochPlan::new(cfg.seed, 0, 1.0, &perm);
    for device in device_kinds() {
        let mut runs = Vec::new();
        for graphs in [true, false] {
            let opt = Optimizer::new(OptimizerKind::Adadelta, layout.total);
            let gpu = Gpu::open(device).unwrap();
            let mut engine = GpuEngine::new(gpu, &layout, &cfg, &data, &params0, &opt).unwrap();
            engine.use_graphs(graphs);
            let (mut params, mut opt) = (params0.clone(), opt);
            let losses = engine.run_epoch(&plan, &mut params, &mut opt, &mut Silent).unwrap();
            assert_eq!(losses.len(), 3);
            runs.push((losses, params, opt));
        }
        let ((l1, p1, o1), (l2, p2, o2)) = (&runs[0], &runs[1]);
        if device == Device::Emulated {
            assert_eq!(l1, l2, "losses: graph vs direct");
            assert!(p1 == p2 && o1.s1 == o2.s1 && o1.s2 == o2.s2, "graph replay differs from direct launches");
        } else {
            let worst = p1.iter().zip(p2).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            super::note(&format!("graph vs direct on the GPU: max |Δparam| {worst:e}"));
            assert!(worst <= 1e-4, "graph vs direct: max |Δparam| {worst}");
        }
        assert_eq!(o1.steps, 3);
    }
}

/// The kernel benches' entry points (benches/kernels.rs) on a small
/// model: every step op on its own, a graph-replayed step and the
/// evaluator's kernels in each precision run without error, so a bench
/// run on a GPU machine does not die on a host-side mistake.
#[test]
fn kernel_bench_entry_points_run() {
    use iwtvae::cuda::train::{GpuEngine, STEP_OPS};
    use iwtvae::eval::Precision;
    use iwtvae::model::{init_params, Layout};
    use iwtvae::train::{EpochPlan, TrainConfig};
    let Some(data) = mnist(iwtvae::data::Split::Train, 16) else {
        return;
    };
    let cfg = TrainConfig { z_dim: 6, u_dim: 4, hidden: 40, batch_size: 8, ..TrainConfig::seed_protocol() };
    let layout = Layout::new(cfg.model_config(28, 28).unwrap());
    let params = init_params::<f32>(&layout, 1);
    let items: Vec<u32> = (0..8).collect();
    let plan = EpochPlan::new(1, 0, 1e-3, &items);
    for device in device_kinds() {
        let opt = Optimizer::new(OptimizerKind::Adadelta, layout.total);
        let mut engine = GpuEngine::new(Gpu::open(device).unwrap(), &layout, &cfg, &data, &params, &opt).unwrap();
        engine.set_batch(&items).unwrap();
        for op in STEP_OPS {
            engine.time_op(op, &plan, 1).unwrap();
            assert!(engine.op_cost(op).bytes > 0, "{op:?}");
        }
        engine.time_graph_steps(&plan, 2).unwrap();
        // The bench's split-K sweep: each target brings its own scratch
        // (1024 needs more than the default's), and every target's
        // gradient is the same to rounding (2e-3 of each tensor's
        // largest, as in training_step_matches_cpu).
        let mut grads = Vec::new();
        for target in [0, iwtvae::cuda::linear::SPLIT_TARGET_BLOCKS, 1024] {
            engine.set_split_target(target).unwrap();
            engine.time_graph_steps(&plan, 1).unwrap();
            let mut fresh = GpuEngine::new(Gpu::open(device).unwrap(), &layout, &cfg, &data, &params, &opt).unwrap();
            fresh.set_split_target(target).unwrap();
            fresh.single_step(&items, &plan).unwrap();
            grads.push(fresh.gradients().unwrap());
        }
        for e in &layout.entries {
            let r = e.offset..e.offset + e.len;
            let scale = grads[0][r.clone()].iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
            for g in &grads[1..] {
                for i in r.clone() {
                    assert!((g[i] - grads[0][i]).abs() <= 2e-3 * scale, "{}[{}]", e.name, i - e.offset);
                }
            }
        }
        // The evaluator's kernels on the model the bench times: the seed
        // protocol's, whose shared-memory needs are the largest.
        let seed_layout = Layout::new(TrainConfig::seed_protocol().model_config(28, 28).unwrap());
        let seed_params = init_params::<f32>(&seed_layout, 1);
        let net = iwtvae::network::Network::<f32>::new(seed_layout);
        let g = Gpu::open(device).unwrap();
        for precision in [Precision::Fp32, Precision::Tf32, Precision::Bf16] {
            let timings = g.time_eval_kernels(&net, &seed_params, 64, precision, 1).unwrap();
            assert_eq!(timings.len(), 2);
        }
    }
}
