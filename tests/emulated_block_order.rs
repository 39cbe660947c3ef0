//! A GPU runs a launch's blocks in any order, many at once; the emulator runs
//! them one after another. A kernel in which one block reads what another
//! block of the same launch writes (a race on a GPU) gives a different result
//! when the order turns around. This file, a process of its own because the
//! order is process-wide, runs every kernel of a TPS training epoch (CUDA
//! graphs included) and of the fused evaluator in each precision first to
//! last and last to first and asks for the same results.
//!
//! Bit for bit: the only adds whose order could follow the block order are
//! the sampler backward's atomics, and those stay inside one block's shared
//! memory.
mod emu;
use iwtvae::cuda::Gpu;
use iwtvae::data::{Binarize, Dataset, Split};
use iwtvae::device::Device;
use iwtvae::eval::{EvalOptions, Precision};
use iwtvae::network::Network;
use iwtvae::train::{train_on, Silent, TrainConfig};

fn mnist(split: Split, limit: usize) -> Dataset {
    emu::mnist(split, limit).expect("the bundled MNIST")
}

/// (the epoch's loss, the trained parameters, per precision each image's NLL)
fn train_and_evaluate() -> (f64, Vec<f32>, Vec<Vec<f64>>) {
    let train = mnist(Split::Train, 58);
    let cfg = TrainConfig {
        transform: "tps".into(),
        z_dim: 8,
        u_dim: 6,
        hidden: 32,
        k: 3,
        epochs: 1,
        batch_size: 24,
        limit_train: Some(58),
        seed: 7,
        ..TrainConfig::seed_protocol()
    };
    let out = tempfile::tempdir().unwrap();
    let trained = train_on(Device::Emulated, &cfg, &train, out.path(), false, &mut Silent).unwrap();
    let test = mnist(Split::Test, 12);
    let net = Network::<f32>::new(trained.layout.clone());
    let gpu = Gpu::emulated().unwrap();
    let nll = [Precision::Fp32, Precision::Tf32, Precision::Bf16]
        .into_iter()
        .map(|precision| {
            let opts =
                EvalOptions { k: 300, chunk: 100, binarize: Binarize::Dynamic, seed: 3, precision, bounds: Vec::new() };
            let (_, rows) = gpu.evaluate(&net, &trained.params, &test, &opts).unwrap();
            rows.iter().map(|r| r.nll).collect()
        })
        .collect();
    (trained.logs[0].loss, trained.params, nll)
}

#[test]
fn results_do_not_depend_on_the_order_of_blocks() {
    cuda_emu::set_reverse_block_order(false);
    let forward = train_and_evaluate();
    cuda_emu::set_reverse_block_order(true);
    let reversed = train_and_evaluate();
    cuda_emu::set_reverse_block_order(false);
    assert_eq!(forward.0.to_bits(), reversed.0.to_bits(), "epoch loss {} vs {}", forward.0, reversed.0);
    assert!(forward.1.iter().zip(&reversed.1).all(|(a, b)| a.to_bits() == b.to_bits()), "trained parameters differ");
    for (p, (a, b)) in ["fp32", "tf32", "bf16"].iter().zip(forward.2.iter().zip(&reversed.2)) {
        assert_eq!(a, b, "{p}: per-image NLL first to last vs last to first");
    }
}
