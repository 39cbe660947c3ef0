//! Graph capture on the emulated device (src/cuda/driver.rs) behaves as a
//! CUDA stream capture does for the code that uses it: a launch made while
//! capturing is recorded, not run, and runs at each replay with the
//! arguments it was captured with; anything a real capture would turn into a
//! graph node with other lifetimes (an allocation) or refuse (a copy from
//! host memory, a synchronizing read) is an error here, so the training
//! engine cannot come to rely on it without CI noticing. Memsets and device
//! copies, which a real capture would record, are refused too: the emulator
//! records launches only, and the engine's captured step needs no more.
use cudarc::driver::LaunchConfig;
use iwtvae::cuda::Device;
use iwtvae::rng::{NoiseKey, Stream};

const ROWS: usize = 6;
const DIMS: usize = 16;

fn launch_uniforms(
    device: &Device,
    out: &mut iwtvae::cuda::driver::DevBuf<f32>,
    items: &iwtvae::cuda::driver::DevBuf<u32>,
    key: NoiseKey,
) {
    let (k0, k1, hi) = key.words();
    let (rows, k, s0, dims) = (ROWS as i32, ROWS as i32, 0i32, DIMS as i32);
    let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    let mut l = device.launcher("philox_uniforms");
    l.arg(out).arg(items).arg(&rows).arg(&k).arg(&s0).arg(&dims).arg(&k0).arg(&k1).arg(&hi);
    // SAFETY: out holds ROWS × DIMS values and items one item (ROWS samples
    // of it, k = ROWS); the scalars are the kernel's i32 and u32 parameters.
    unsafe { l.launch(cfg) }.expect("launch");
}

#[test]
fn a_capture_records_launches_and_refuses_allocations_and_copies() {
    let device = Device::emulated().expect("emulator");
    let key = NoiseKey::new(11, Stream::EvalEps, 2);
    let items = device.htod(&[42u32]).unwrap();
    let mut out = device.alloc_zeros::<f32>(ROWS * DIMS).unwrap();
    let mut want = vec![0f32; ROWS * DIMS];
    for s in 0..ROWS {
        key.uniforms(42, s as u32, &mut want[s * DIMS..(s + 1) * DIMS]);
    }

    device.begin_capture().unwrap();
    launch_uniforms(&device, &mut out, &items, key);
    let refused = [
        ("alloc_zeros", device.alloc_zeros::<f32>(4).err()),
        ("htod", device.htod(&[1f32]).err()),
        ("memcpy_htod", device.memcpy_htod(&[0f32; 4], &mut out.slice_mut(0..4)).err()),
        ("memset_zeros", device.memset_zeros(&mut out).err()),
    ];
    let read_back = device.dtoh(&out).err();
    let graph = device.end_capture().unwrap();
    for (what, err) in refused.into_iter().chain([("dtoh", read_back)]) {
        let err = err.unwrap_or_else(|| panic!("{what} while capturing was accepted"));
        assert!(err.to_string().contains("while capturing a graph"), "{what}: {err}");
    }

    assert!(device.dtoh(&out).unwrap().iter().all(|&v| v == 0.0), "a captured launch ran before its replay");
    device.replay(&graph).unwrap();
    assert_eq!(device.dtoh(&out).unwrap(), want, "the replay runs the captured launch");
    device.memset_zeros(&mut out).unwrap();
    device.replay(&graph).unwrap();
    assert_eq!(device.dtoh(&out).unwrap(), want, "each replay runs it again");
}

/// A launch of a larger block than the kernels are built for
/// (kernels/launch_shapes.h, every kernel's `__launch_bounds__`) is an error
/// of the device layer, before either backend sees it: on a GPU it would be
/// an opaque CUDA_ERROR_INVALID_VALUE (or, without the bound, registers
/// short on some GPUs), so the message names the kernel and the limit.
#[test]
fn the_device_refuses_blocks_larger_than_the_kernels_are_built_for() {
    use iwtvae::cuda::shapes::MAX_THREADS;
    let device = Device::emulated().expect("emulator");
    let (mut theta, theta_id) = (device.htod(&[1f32; 8]).unwrap(), device.htod(&[1f32; 8]).unwrap());
    let (rows, t) = (1i32, 8i32);
    for (block, ok) in
        [((MAX_THREADS as u32, 1, 1), true), ((MAX_THREADS as u32 + 32, 1, 1), false), ((32, 16, 1), false)]
    {
        let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: block, shared_mem_bytes: 0 };
        let mut l = device.launcher("add_theta_id");
        l.arg(&mut theta).arg(&theta_id).arg(&rows).arg(&t);
        // SAFETY: θ holds rows·t f32 and θ_id t; both counts are the kernel's ints.
        let result = unsafe { l.launch(cfg) };
        match (ok, result) {
            (true, r) => r.expect("a block of MAX_THREADS"),
            (false, Ok(())) => panic!("a block of {block:?} was launched"),
            (false, Err(e)) => {
                assert!(e.to_string().contains("add_theta_id") && e.to_string().contains("launch_shapes.h"), "{e}")
            }
        }
    }
}

/// CUDA caps gridDim.y at 65,535 and the per-pixel wrappers put one sample
/// row per blockIdx.y: a larger batch is a shape error naming the op before
/// anything is copied, not a launch failure (the emulator would refuse the
/// launch too, with a message that names no op).
#[test]
fn row_per_block_wrappers_refuse_more_rows_than_cuda_grids_hold() {
    let gpu = iwtvae::cuda::Gpu::emulated().expect("emulator");
    let (h, w) = (2, 2);
    for (rows, ok) in [(65_535usize, true), (65_536, false)] {
        let c = vec![0.5f32; rows * h * w];
        let result = gpu.grid_sample_fwd(&c, &c, &c, h, w);
        match (ok, result) {
            (true, r) => assert_eq!(r.expect("65,535 rows").len(), c.len()),
            (false, Ok(_)) => panic!("{rows} rows were launched"),
            (false, Err(e)) => {
                let msg = e.to_string();
                assert!(msg.contains("grid_sample_fwd") && msg.contains("65535"), "{msg}")
            }
        }
    }
}

/// The seed protocol's captured training step (TPS 3×3, z 42, u 18, hidden
/// 256, IWAE k = 5, batch 100, Adadelta), launch by launch: on a GPU each
/// launch of a replayed graph still costs ~1–2 µs of its own, which at
/// batch 100 is a large part of a step. Fewer launches came from: the four
/// encoder heads as one GEMM (Layout::enc_heads), each ReLU mask in its dX
/// GEMM's store, the gradient check in the optimizer's pass, the batch's
/// items and the loss record on the device (no copies between replays),
/// and each split-K GEMM's sum in its own launch by the tiles' last blocks
/// (55 → 42). A change to this count is a change to the step's cost: say so.
#[test]
fn the_seed_training_step_is_42_launches() {
    use iwtvae::cuda::train::GpuEngine;
    use iwtvae::model::Layout;
    use iwtvae::optim::{Optimizer, OptimizerKind};
    use iwtvae::train::{EpochPlan, TrainConfig};
    // The launches depend on the shapes only: 200 blank 28×28 images.
    let data = iwtvae::data::Dataset { images: vec![0; 200 * 784], labels: vec![0; 200], height: 28, width: 28 };
    let cfg = TrainConfig::seed_protocol();
    let layout = Layout::new(cfg.model_config(28, 28).unwrap());
    let params = iwtvae::model::init_params::<f32>(&layout, 1);
    let opt = Optimizer::new(OptimizerKind::Adadelta, layout.total);
    let gpu = iwtvae::cuda::Gpu::emulated().expect("emulator");
    let mut engine = GpuEngine::new(gpu, &layout, &cfg, &data, &params, &opt).unwrap();
    let perm: Vec<u32> = (0..200).collect();
    let kernels = engine.captured_step_kernels(&EpochPlan::new(1, 0, 1.0, &perm)).unwrap().expect("emulated");
    let count = |name: &str| kernels.iter().filter(|&&k| k == name).count();
    assert_eq!((kernels.first(), kernels.last()), (Some(&"batch_items"), Some(&"record_step")), "{kernels:?}");
    assert_eq!(count("encoder_heads"), 1, "{kernels:?}");
    // Each split GEMM sums its partials in its own launch (gemm_splitk).
    assert_eq!((count("gemm_partial"), count("splitk_sum")), (0, 0), "{kernels:?}");
    assert_eq!(count("gemm_splitk"), 13, "{kernels:?}");
    assert_eq!(kernels.len(), 42, "{kernels:?}");
}
