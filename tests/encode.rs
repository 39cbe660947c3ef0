//! `iwtvae encode`'s library half: the codes are the encoder's posterior of
//! the targets `eval` scores, an image's code does not depend on the images
//! encoded with it, and the files read back to the same bits.
use iwtvae::data::{Binarize, Dataset, Split};
use iwtvae::encode::{encode_dataset, eval_key};
use iwtvae::model::{init_params, Layout, ModelConfig, Transform};
use iwtvae::network::Network;
use safetensors::tensor::{Dtype, SafeTensors};
use std::collections::HashMap;

const MNIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist");

fn model(transform: Transform) -> (Network<f32>, Vec<f32>) {
    let u_dim = if transform == Transform::None { 0 } else { 4 };
    let cfg = ModelConfig { transform, z_dim: 6, u_dim, hidden: 32, tps_grid: 3, height: 28, width: 28 };
    let layout = Layout::new(cfg);
    let params = init_params::<f32>(&layout, 3);
    (Network::new(layout), params)
}

fn test_images(n: usize) -> Dataset {
    Dataset::load(std::path::Path::new(MNIST), Split::Test, Some(n)).expect("bundled MNIST")
}

#[test]
fn codes_are_the_posterior_of_evals_targets_one_image_at_a_time() {
    // 300 images: two rayon tasks of 256 and 44, so rows from either task
    // are compared with the same image encoded alone.
    let data = test_images(300);
    let d = data.pixels();
    for transform in [Transform::None, Transform::Affine, Transform::Tps] {
        let (net, params) = model(transform);
        let codes = encode_dataset(&net, &params, &data, Binarize::Dynamic, 5).unwrap();
        let (z, u, t) = (codes.z_dim, codes.u_dim, codes.theta_dim);
        assert_eq!((codes.images(), codes.labels.as_slice()), (300, &data.labels[..]));
        assert_eq!((codes.mu_z.len(), codes.mu_u.len(), codes.theta.len()), (300 * z, 300 * u, 300 * t));
        for i in [0, 1, 255, 256, 299] {
            let (mut x, mut scratch) = (vec![0f32; d], vec![0f32; d]);
            data.targets(i, Binarize::Dynamic, eval_key(5), &mut scratch, &mut x);
            let alone = net.posterior(&params, &x, 1);
            let what = format!("{transform:?} image {i}");
            assert_eq!(&codes.mu_z[i * z..(i + 1) * z], &alone.mu_z[..], "{what}: μz");
            assert_eq!(&codes.log_sigma_z[i * z..(i + 1) * z], &alone.ls_z[..], "{what}: log σz");
            assert_eq!(&codes.mu_u[i * u..(i + 1) * u], &alone.mu_u[..], "{what}: μu");
            assert_eq!(&codes.log_sigma_u[i * u..(i + 1) * u], &alone.ls_u[..], "{what}: log σu");
            assert_eq!(&codes.theta[i * t..(i + 1) * t], &net.theta_of(&params, &alone.mu_u, 1)[..], "{what}: θ");
        }
        // Another seed draws other binary targets, so other codes.
        let other = encode_dataset(&net, &params, &data, Binarize::Dynamic, 6).unwrap();
        assert_ne!(other.mu_z, codes.mu_z, "{transform:?}: the seed does not reach the binarization");
    }
}

#[test]
fn a_warp_at_its_identity_reads_as_no_rotation() {
    // u2theta zeroed (`train --theta-init identity`): θ is the identity for
    // every image, whose grid is the base grid, turned by 0°; with the
    // default init the warps differ from image to image.
    let data = test_images(20);
    for transform in [Transform::Affine, Transform::Tps] {
        let (net, mut params) = model(transform);
        let turned = encode_dataset(&net, &params, &data, Binarize::None, 1).unwrap();
        assert!(
            turned.warp_rotation_deg.iter().any(|a| a.abs() > 0.01),
            "{transform:?}: {:?}",
            turned.warp_rotation_deg
        );
        let s = net.layout.u2theta.as_ref().unwrap();
        params[s.w_range()].fill(0.0);
        params[s.b_range()].fill(0.0);
        let codes = encode_dataset(&net, &params, &data, Binarize::None, 1).unwrap();
        for (i, th) in codes.theta.chunks_exact(codes.theta_dim).enumerate() {
            assert_eq!(th, &net.theta_id[..], "{transform:?} image {i}");
        }
        // The TPS grid at its identity is the base grid up to the f32
        // rounding of its basis sums (~1e-7 of a coordinate): ~1e-8 degrees.
        assert!(codes.warp_rotation_deg.iter().all(|a| a.abs() < 1e-6), "{:?}", codes.warp_rotation_deg);
    }
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

#[test]
fn safetensors_and_csv_read_back_to_the_same_bits() {
    let data = test_images(40);
    for transform in [Transform::None, Transform::Tps] {
        let (net, params) = model(transform);
        let codes = encode_dataset(&net, &params, &data, Binarize::Dynamic, 1).unwrap();
        let meta = HashMap::from([("split".to_string(), "test".to_string())]);
        let bytes = codes.safetensors(meta.clone());
        assert_eq!(bytes, codes.safetensors(meta), "the same codes give the same bytes");
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let warped = transform != Transform::None;
        let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
        names.sort();
        let want: &[&str] = if warped {
            &["label", "log_sigma_u", "log_sigma_z", "mu_u", "mu_z", "theta", "warp_rotation_deg"]
        } else {
            &["label", "log_sigma_z", "mu_z"]
        };
        assert_eq!(names, want);
        let tensor = |name: &str, dtype: Dtype, shape: &[usize]| {
            let t = st.tensor(name).unwrap();
            assert_eq!((t.dtype(), t.shape()), (dtype, shape), "{name}");
            t.data().to_vec()
        };
        let (n, z, u, t) = (40, codes.z_dim, codes.u_dim, codes.theta_dim);
        assert_eq!(tensor("label", Dtype::U8, &[n]), codes.labels);
        assert_eq!(f32s(&tensor("mu_z", Dtype::F32, &[n, z])), codes.mu_z);
        assert_eq!(f32s(&tensor("log_sigma_z", Dtype::F32, &[n, z])), codes.log_sigma_z);
        if warped {
            assert_eq!(f32s(&tensor("mu_u", Dtype::F32, &[n, u])), codes.mu_u);
            assert_eq!(f32s(&tensor("log_sigma_u", Dtype::F32, &[n, u])), codes.log_sigma_u);
            assert_eq!(f32s(&tensor("theta", Dtype::F32, &[n, t])), codes.theta);
            let rot = tensor("warp_rotation_deg", Dtype::F64, &[n]);
            let rot: Vec<f64> = rot.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect();
            assert_eq!(rot, codes.warp_rotation_deg);
        }

        let csv = codes.csv();
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let width = 2 + 2 * z + if warped { 2 * u + t + 1 } else { 0 };
        assert_eq!(header.len(), width, "{header:?}");
        assert_eq!(&header[..3], &["index", "label", "mu_z_0"]);
        assert_eq!(*header.last().unwrap(), if warped { "warp_rotation_deg" } else { "log_sigma_z_5" });
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        assert_eq!(rows.len(), n);
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(row.len(), width);
            assert_eq!((row[0].parse::<usize>().unwrap(), row[1].parse::<u8>().unwrap()), (i, codes.labels[i]));
            let mu_z: Vec<f32> = row[2..2 + z].iter().map(|v| v.parse().unwrap()).collect();
            assert_eq!(mu_z, codes.mu_z[i * z..(i + 1) * z], "row {i}");
            if warped {
                let theta_at = 2 + 2 * z + 2 * u;
                let theta: Vec<f32> = row[theta_at..theta_at + t].iter().map(|v| v.parse().unwrap()).collect();
                assert_eq!(theta, codes.theta[i * t..(i + 1) * t], "row {i}");
                assert_eq!(row[width - 1].parse::<f64>().unwrap(), codes.warp_rotation_deg[i]);
            }
        }
    }
}

#[test]
fn an_overflowing_encoder_is_an_error_naming_the_code_and_image() {
    let data = test_images(10);
    let (net, mut params) = model(Transform::Affine);
    // The μu head's first bias NaN (μu is squashed, so ∞ would not do):
    // every image's μu is NaN; μz stays finite.
    params[net.layout.u_mu.unwrap().b] = f32::NAN;
    let err = encode_dataset(&net, &params, &data, Binarize::None, 1).unwrap_err().to_string();
    assert!(err.contains("non-finite mu_u") && err.contains("image 0"), "{err}");
}
