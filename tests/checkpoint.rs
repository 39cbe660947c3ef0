//! Checkpoints: round trip, import of a file written by PyTorch's
//! safetensors, and errors that name the missing or misshapen tensor.
mod common;
use common::tiny_config;
use iwtvae::data::{Binarize, Dataset, Split};
use iwtvae::eval::{evaluate, EvalOptions};
use iwtvae::model::checkpoint::{load_checkpoint, model_metadata, save_checkpoint, serialize_flat};
use iwtvae::model::{init_params, Layout, Transform};
use iwtvae::network::Network;
use std::path::Path;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/torch_affine_tiny.safetensors");
const MNIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist");

#[test]
fn round_trip_is_exact() {
    for t in [Transform::None, Transform::Affine, Transform::Tps] {
        let layout = Layout::new(tiny_config(t));
        let params = init_params::<f32>(&layout, 3);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        save_checkpoint(&path, &layout, &params, &[("epoch", "7".into())]).unwrap();
        let back = load_checkpoint(&path).unwrap();
        assert_eq!(back.layout.config, layout.config);
        assert_eq!(back.params, params);
        assert_eq!(back.metadata["epoch"], "7");
        assert_eq!(back.metadata["transform"], t.name());
    }
}

/// tests/fixtures/make_torch_fixture.py wrote the fixture with
/// `safetensors.torch.save_file` from an nn.Module state_dict and printed
/// recon_at_mean over the first 10 test images (continuous targets):
/// 539.26318359375. Our f32 forward must agree to f32 accuracy.
#[test]
fn loads_and_evaluates_a_pytorch_written_checkpoint() {
    let ck = load_checkpoint(Path::new(FIXTURE)).unwrap();
    assert_eq!(ck.layout.config.transform, Transform::Affine);
    assert_eq!((ck.layout.config.z_dim, ck.layout.config.u_dim, ck.layout.config.hidden), (4, 3, 16));
    let data = Dataset::load(Path::new(MNIST), Split::Test, Some(10)).unwrap();
    let net = Network::<f32>::new(ck.layout);
    let opts = EvalOptions { k: 10, chunk: 10, binarize: Binarize::None, seed: 1, precision: Default::default() };
    let (report, _) = evaluate(&net, &ck.params, &data, &opts).unwrap();
    assert!((report.recon_at_mean - 539.26318359375).abs() < 2e-3, "recon_at_mean {}", report.recon_at_mean);
}

#[test]
fn missing_or_misshapen_tensors_are_named() {
    let layout = Layout::new(tiny_config(Transform::Tps));
    let params = init_params::<f32>(&layout, 3);
    let dir = tempfile::tempdir().unwrap();

    // Drop one tensor.
    let mut without = layout.clone();
    without.entries.retain(|e| e.name != "dec.fc2.bias");
    let bytes = serialize_flat(&without, &params, model_metadata(&layout.config)).unwrap();
    let path = dir.path().join("missing.safetensors");
    std::fs::write(&path, bytes).unwrap();
    let err = load_checkpoint(&path).err().unwrap().to_string();
    assert!(err.contains("missing tensor dec.fc2.bias") && err.contains("missing.safetensors"), "{err}");

    // Declare a wrong shape for one tensor (same element count).
    let mut wrong = layout.clone();
    let e = wrong.entries.iter_mut().find(|e| e.name == "dec.fc1.weight").unwrap();
    e.shape = vec![e.shape[1], e.shape[0]];
    let bytes = serialize_flat(&wrong, &params, model_metadata(&layout.config)).unwrap();
    let path = dir.path().join("shape.safetensors");
    std::fs::write(&path, bytes).unwrap();
    let err = load_checkpoint(&path).err().unwrap().to_string();
    assert!(err.contains("dec.fc1.weight") && err.contains("shape"), "{err}");

    // Not a safetensors file at all.
    let path = dir.path().join("junk.safetensors");
    std::fs::write(&path, b"hello").unwrap();
    let err = load_checkpoint(&path).err().unwrap().to_string();
    assert!(err.contains("junk.safetensors") && err.contains("not a safetensors file"), "{err}");
}
