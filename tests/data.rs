//! The IDX reader and the bundled dataset: md5 of the shipped files, and a
//! clear error naming the file for every malformed input.
use iwtvae::data::idx::{parse_idx, read_maybe_gz};
use iwtvae::data::{Binarize, Dataset, Split};
use iwtvae::rng::{NoiseKey, Stream};
use md5::{Digest, Md5};
use std::path::Path;

const MNIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist");

/// The md5 sums of the decompressed files as published with MNIST.
#[test]
fn bundled_mnist_has_the_published_md5() {
    for (name, want) in [
        ("train-images-idx3-ubyte.gz", "6bbc9ace898e44ae57da46a324031adb"),
        ("train-labels-idx1-ubyte.gz", "a25bea736e30d166cdddb491f175f624"),
        ("t10k-images-idx3-ubyte.gz", "2646ac647ad5339dbf082846283269ea"),
        ("t10k-labels-idx1-ubyte.gz", "27ae3e4e09519cfbb04c329615203637"),
    ] {
        let bytes = read_maybe_gz(&Path::new(MNIST).join(name)).unwrap();
        let got: String = Md5::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn loads_both_splits_with_limit() {
    let train = Dataset::load(Path::new(MNIST), Split::Train, None).unwrap();
    assert_eq!((train.len(), train.height, train.width), (60000, 28, 28));
    let test = Dataset::load(Path::new(MNIST), Split::Test, Some(37)).unwrap();
    assert_eq!(test.len(), 37);
    assert_eq!(test.labels[0], 7);
}

/// The digest a training run keeps of its images (resume refuses others) is
/// stable across versions: runs written by one must resume in the next.
/// Golden value from an independent implementation:
/// ```python
/// import gzip, struct
/// img = gzip.open('data/mnist/train-images-idx3-ubyte.gz').read()[16:16 + 100 * 784]
/// lab = gzip.open('data/mnist/train-labels-idx1-ubyte.gz').read()[8:8 + 100]
/// h = 0xcbf29ce484222325
/// for b in struct.pack('<QQ', 28, 28) + img + lab:
///     h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
/// print(f"fnv1a64:{h:016x}")  # fnv1a64:8513be0e575fdc89
/// ```
#[test]
fn the_training_data_digest_is_fnv1a_of_size_images_and_labels() {
    let train = Dataset::load(Path::new(MNIST), Split::Train, Some(100)).unwrap();
    assert_eq!(train.digest(), "fnv1a64:8513be0e575fdc89");
    let mut one_pixel = train.clone();
    one_pixel.images[4321] ^= 1;
    assert_ne!(one_pixel.digest(), train.digest());
    let mut one_label = train.clone();
    one_label.labels[7] = (one_label.labels[7] + 1) % 10;
    assert_ne!(one_label.digest(), train.digest());
}

/// Fashion-MNIST in the layout Debian's dataset-fashion-mnist installs
/// (gzipped IDX) loads through the same path. Absent in CI, so it skips loudly.
#[test]
fn fashion_mnist_loads_when_installed() {
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    if !dir.join("t10k-images-idx3-ubyte.gz").exists() {
        eprintln!("SKIPPED: {} not installed (apt install dataset-fashion-mnist)", dir.display());
        return;
    }
    let train = Dataset::load(dir, Split::Train, None).unwrap();
    let test = Dataset::load(dir, Split::Test, None).unwrap();
    assert_eq!((train.len(), train.height, train.width, test.len()), (60000, 28, 28, 10000));
    // Both splits open with an ankle boot (class 9); ten classes, 6,000 of
    // each in training.
    assert_eq!((train.labels[0], test.labels[0]), (9, 9));
    for class in 0..10u8 {
        assert_eq!(train.labels.iter().filter(|&&l| l == class).count(), 6000, "class {class}");
    }
}

fn header(magic: [u8; 4], dims: &[u32]) -> Vec<u8> {
    let mut v = magic.to_vec();
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v
}

fn expect_err(bytes: &[u8], ndim: usize, needle: &str) {
    let path = Path::new("/some/dir/t10k-images-idx3-ubyte");
    let err = parse_idx(path, bytes, ndim).unwrap_err().to_string();
    assert!(err.contains("t10k-images-idx3-ubyte"), "error does not name the file: {err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

#[test]
fn every_malformed_header_is_a_named_error() {
    expect_err(&[0, 0], 3, "truncated");
    expect_err(&header([1, 2, 8, 3], &[1, 2, 2]), 3, "wrong magic");
    expect_err(&header([0, 0, 0x0d, 3], &[1, 2, 2]), 3, "element type");
    expect_err(&header([0, 0, 8, 1], &[4]), 3, "dimensions, expected 3");
    expect_err(&header([0, 0, 8, 3], &[1, 2]), 3, "truncated header");
    let mut short = header([0, 0, 8, 3], &[2, 2, 2]);
    short.extend_from_slice(&[0; 7]);
    expect_err(&short, 3, "truncated");
    let mut long = header([0, 0, 8, 3], &[2, 2, 2]);
    long.extend_from_slice(&[0; 9]);
    expect_err(&long, 3, "unexpected size");
    let mut ok = header([0, 0, 8, 3], &[2, 2, 2]);
    ok.extend_from_slice(&[7; 8]);
    assert_eq!(parse_idx(Path::new("x"), &ok, 3).unwrap().dims, vec![2, 2, 2]);
}

fn write_dir(files: &[(&str, Vec<u8>)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    dir
}

fn images(n: u32, h: u32, w: u32) -> Vec<u8> {
    let mut v = header([0, 0, 8, 3], &[n, h, w]);
    v.extend(std::iter::repeat_n(128u8, (n * h * w) as usize));
    v
}

fn labels(n: u32) -> Vec<u8> {
    let mut v = header([0, 0, 8, 1], &[n]);
    v.extend(std::iter::repeat_n(3u8, n as usize));
    v
}

#[test]
fn dataset_level_errors_name_the_file() {
    let dir = write_dir(&[("t10k-images-idx3-ubyte", images(3, 4, 4))]);
    let err = Dataset::load(dir.path(), Split::Test, None).unwrap_err().to_string();
    assert!(err.contains("t10k-labels-idx1-ubyte") && err.contains("missing file"), "{err}");

    let dir = write_dir(&[("t10k-images-idx3-ubyte", images(3, 4, 4)), ("t10k-labels-idx1-ubyte", labels(2))]);
    let err = Dataset::load(dir.path(), Split::Test, None).unwrap_err().to_string();
    assert!(err.contains("t10k-labels-idx1-ubyte") && err.contains("count mismatch"), "{err}");

    let dir = write_dir(&[("t10k-images-idx3-ubyte", images(3, 1, 4)), ("t10k-labels-idx1-ubyte", labels(3))]);
    let err = Dataset::load(dir.path(), Split::Test, None).unwrap_err().to_string();
    assert!(err.contains("t10k-images-idx3-ubyte") && err.contains("unexpected image size"), "{err}");

    let dir =
        write_dir(&[("t10k-images-idx3-ubyte.gz", vec![0x1f, 0x8b, 1, 2, 3]), ("t10k-labels-idx1-ubyte", labels(3))]);
    let err = Dataset::load(dir.path(), Split::Test, None).unwrap_err().to_string();
    assert!(err.contains("t10k-images-idx3-ubyte.gz") && err.contains("corrupt gzip"), "{err}");

    let dir = write_dir(&[("t10k-images-idx3-ubyte", images(3, 4, 5)), ("t10k-labels-idx1-ubyte", labels(3))]);
    let ds = Dataset::load(dir.path(), Split::Test, None).unwrap();
    assert_eq!((ds.len(), ds.height, ds.width), (3, 4, 5));
}

/// Dynamic binarization: a Bernoulli(byte/255) draw that is a pure function
/// of (seed, epoch, image), with the right mean.
#[test]
fn dynamic_binarization_is_keyed_and_unbiased() {
    let dir = write_dir(&[("t10k-images-idx3-ubyte", images(1, 100, 100)), ("t10k-labels-idx1-ubyte", labels(1))]);
    let ds = Dataset::load(dir.path(), Split::Test, None).unwrap();
    let mut scratch = vec![0f32; ds.pixels()];
    let draw = |epoch: u32, scratch: &mut Vec<f32>| {
        let mut x = vec![0f32; ds.pixels()];
        ds.targets(0, Binarize::Dynamic, NoiseKey::new(9, Stream::TrainBinarize, epoch), scratch, &mut x);
        x
    };
    let a = draw(0, &mut scratch);
    assert_eq!(a, draw(0, &mut scratch));
    assert_ne!(a, draw(1, &mut scratch));
    assert!(a.iter().all(|&v| v == 0.0 || v == 1.0));
    let mean = a.iter().sum::<f32>() / a.len() as f32;
    assert!((mean - 128.0 / 255.0).abs() < 0.02, "mean {mean}");
    let mut cont = vec![0f32; ds.pixels()];
    ds.targets(0, Binarize::None, NoiseKey::new(9, Stream::TrainBinarize, 0), &mut scratch, &mut cont);
    assert!(cont.iter().all(|&v| v == 128.0 / 255.0));
}
