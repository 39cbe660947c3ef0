//! Per-kernel GPU benchmarks (criterion) on the training step's shapes: TPS,
//! z 42, u 18, hidden 256, IWAE k = 5, batch 100. Each op of
//! `cuda::train::StepOp` is timed on its own (launches back to back, the
//! stream synchronized around the batch), with criterion's throughput set to
//! the op's minimum memory traffic; a summary then gives achieved GB/s and
//! TFLOP/s against the GPU's peak. Skips (and says so) without a GPU.
//!
//!     cargo bench --bench kernels          # or gpu-bundle/benches/kernels --bench
//!
//! Peaks are looked up by GPU name (H100 SXM 3.35 TB/s and 67 fp32 TFLOP/s,
//! H100 PCIe 2.0 and 51, H200 4.8 and 67); IWTVAE_PEAK_GBS and
//! IWTVAE_PEAK_TFLOPS override them.
use criterion::{criterion_group, criterion_main, Criterion};

#[cfg(iwtvae_cuda)]
mod gpu {
    use criterion::{Criterion, Throughput};
    use iwtvae::cuda::linear::{GemmMath, SPLIT_TARGET_BLOCKS};
    use iwtvae::cuda::train::{GpuEngine, StepOp, STEP_OPS};
    use iwtvae::data::{Dataset, Split};
    use iwtvae::eval::Precision;
    use iwtvae::model::{init_params, Layout};
    use iwtvae::optim::{Optimizer, OptimizerKind};
    use iwtvae::train::{EpochPlan, TrainConfig};

    fn peaks(name: &str) -> (Option<f64>, Option<f64>) {
        let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<f64>().ok());
        let (gbs, tflops) = if name.contains("H200") {
            (Some(4800.0), Some(67.0))
        } else if name.contains("H100") && name.contains("PCIe") {
            (Some(2000.0), Some(51.0))
        } else if name.contains("H100") {
            (Some(3350.0), Some(67.0))
        } else {
            (None, None)
        };
        (env("IWTVAE_PEAK_GBS").or(gbs), env("IWTVAE_PEAK_TFLOPS").or(tflops))
    }

    pub fn bench(c: &mut Criterion) {
        if iwtvae::device::cuda_device_count() == 0 {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED (kernels bench): no CUDA GPU on this machine");
            return;
        }
        let dir =
            std::env::var("IWTVAE_DATA").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist").into());
        let data =
            Dataset::load(std::path::Path::new(&dir), Split::Train, Some(1000)).expect("MNIST (set IWTVAE_DATA)");
        let cfg = TrainConfig {
            epochs: 1,
            schedule: "constant".into(),
            limit_train: Some(1000),
            ..TrainConfig::seed_protocol()
        };
        let layout = Layout::new(cfg.model_config(28, 28).expect("config"));
        let params = init_params::<f32>(&layout, 1);
        let opt = Optimizer::new(OptimizerKind::Adadelta, layout.total);
        let mut engine = GpuEngine::new(iwtvae::cuda::Gpu::new(0).expect("GPU"), &layout, &cfg, &data, &params, &opt)
            .expect("GPU engine");
        let items: Vec<u32> = (0..100).collect();
        engine.set_batch(&items).expect("batch");
        let plan = EpochPlan::new(1, 0, 1e-3, &items);
        // Every op once, in order, so each later one sees real inputs.
        for op in STEP_OPS {
            engine.time_op(op, &plan, 1).expect("warm-up");
        }
        let mut group = c.benchmark_group("kernels");
        for op in STEP_OPS {
            group.throughput(Throughput::Bytes(engine.op_cost(op).bytes));
            group.bench_function(format!("{op:?}"), |b| {
                b.iter_custom(|iters| engine.time_op(op, &plan, iters).expect("op"));
            });
        }
        group.throughput(Throughput::Elements(100));
        group.bench_function("whole step (CUDA graph, images)", |b| {
            b.iter_custom(|iters| engine.time_graph_steps(&plan, iters).expect("graph"));
        });
        group.finish();
        summary(&mut engine, &plan);
    }

    fn summary(engine: &mut GpuEngine, plan: &EpochPlan) {
        let name = engine.device_name();
        let (peak_gbs, peak_tflops) = peaks(&name);
        println!("\nper-kernel summary on {name} (peaks: {peak_gbs:?} GB/s, {peak_tflops:?} fp32 TFLOP/s)");
        println!("{:<18} {:>10} {:>10} {:>8} {:>10} {:>8}", "op", "µs", "GB/s", "%peak", "TFLOP/s", "%peak");
        let reps = 200;
        let pct = |v: f64, p: Option<f64>| p.map_or("-".to_string(), |p| format!("{:.1}", 100.0 * v / p));
        let mut total = 0.0;
        for op in STEP_OPS {
            let sec = engine.time_op(op, plan, reps).expect("op").as_secs_f64() / reps as f64;
            total += sec;
            let cost = engine.op_cost(op);
            let (gbs, tflops) = (cost.bytes as f64 / sec / 1e9, cost.flops as f64 / sec / 1e12);
            println!(
                "{:<18} {:>10.1} {:>10.1} {:>8} {:>10.3} {:>8}",
                format!("{op:?}"),
                sec * 1e6,
                gbs,
                pct(gbs, peak_gbs),
                tflops,
                pct(tflops, peak_tflops)
            );
        }
        let graph = engine.time_graph_steps(plan, reps).expect("graph").as_secs_f64() / reps as f64;
        println!(
            "sum of ops {:.1} µs; whole step as one CUDA graph {:.1} µs = {:.0} images/s",
            total * 1e6,
            graph * 1e6,
            100.0 / graph
        );
        // Split-K (src/cuda/linear.rs): the ops that run GEMMs and the whole
        // captured step at several block targets, 0 being one block per
        // output tile (IWTVAE_NO_SPLIT_K=1); the default is marked. Then
        // the same with the GEMMs on the TF32 tensor cores (train
        // --precision tf32).
        let gemm_ops = [StepOp::Encoder, StepOp::DecoderLayers, StepOp::DecoderBackward, StepOp::EncoderBackward];
        let targets = [0, 132, SPLIT_TARGET_BLOCKS, 512, 1024];
        for math in [GemmMath::Fp32, GemmMath::Tf32] {
            engine.set_gemm_math(math);
            print!("\n{:<32}", format!("split-K block target, {math:?} (µs)"));
            for t in targets {
                let mark = if t == SPLIT_TARGET_BLOCKS { "*" } else { "" };
                print!(" {:>9}", format!("{t}{mark}"));
            }
            println!();
            let mut rows = vec![Vec::new(); gemm_ops.len() + 2];
            for t in targets {
                engine.set_split_target(t).expect("split target");
                for (row, &op) in rows.iter_mut().zip(&gemm_ops) {
                    row.push(engine.time_op(op, plan, reps).expect("op").as_secs_f64() / reps as f64 * 1e6);
                }
                let graph = engine.time_graph_steps(plan, reps).expect("graph").as_secs_f64();
                rows[gemm_ops.len()].push(graph / reps as f64 * 1e6);
                // The same step with each split GEMM's sum in a launch of its
                // own (IWTVAE_SPLITK_TWO_PASS=1): what the one-launch sum saves.
                engine.set_splitk_two_pass(true);
                let graph = engine.time_graph_steps(plan, reps).expect("graph").as_secs_f64();
                rows[gemm_ops.len() + 1].push(graph / reps as f64 * 1e6);
                engine.set_splitk_two_pass(false);
            }
            let names = gemm_ops
                .iter()
                .map(|op| format!("{op:?}"))
                .chain(["whole step (graph)".to_string(), "  the same, sum as 2nd launch".to_string()]);
            for (name, row) in names.zip(&rows) {
                print!("{name:<32}");
                for v in row {
                    print!(" {v:>9.1}");
                }
                println!();
            }
        }
        engine.set_gemm_math(GemmMath::Fp32);
        engine.set_split_target(SPLIT_TARGET_BLOCKS).expect("split target");
        // The evaluator's two big kernels, per precision, on one launch's
        // worth of rows (128 images × 500 samples).
        let layout = iwtvae::model::Layout::new(TrainConfig::seed_protocol().model_config(28, 28).expect("config"));
        let params = iwtvae::model::init_params::<f32>(&layout, 1);
        let net = iwtvae::network::Network::<f32>::new(layout);
        let gpu = iwtvae::cuda::Gpu::new(0).expect("GPU");
        println!("\nevaluator kernels, 64,000 rows (TFLOP/s of the GEMM part; peak {peak_tflops:?} fp32 SIMT)");
        for precision in [Precision::Fp32, Precision::Tf32, Precision::Bf16] {
            let timings = gpu.time_eval_kernels(&net, &params, 64_000, precision, 20).expect("eval kernels");
            for (name, sec, flops) in timings {
                println!(
                    "{:<6} {:<24} {:>10.1} µs {:>10.1} TFLOP/s",
                    precision.name(),
                    name,
                    sec * 1e6,
                    flops as f64 / sec / 1e12
                );
            }
        }
    }
}

#[cfg(iwtvae_cuda)]
fn kernels(c: &mut Criterion) {
    gpu::bench(c);
}

#[cfg(not(iwtvae_cuda))]
fn kernels(_: &mut Criterion) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED (kernels bench): built without CUDA kernels");
}

criterion_group!(benches, kernels);
criterion_main!(benches);
