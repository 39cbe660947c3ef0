//! `iwtvae compare`'s library half (src/compare.rs): the paired statistics
//! against values worked out by hand, and every malformed input a clear
//! error naming the file and the line.
use iwtvae::compare::{compare, read_per_image};
use std::path::{Path, PathBuf};

const HEADER: &str = "index,label,nll,elbo,recon,recon_at_mean\n";

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

fn rows(dir: &Path, name: &str, nll: &[(usize, u8, f64)]) -> PathBuf {
    let body: String = nll.iter().map(|(i, l, v)| format!("{i},{l},{v},0,0,0\n")).collect();
    write(dir, name, &format!("{HEADER}{body}"))
}

#[test]
fn paired_statistics_match_hand_computed_values() {
    let dir = tempfile::tempdir().unwrap();
    // Rows in another order in B: images are matched by index, not by line.
    let a = rows(dir.path(), "a.csv", &[(0, 1, 90.0), (1, 1, 100.0), (2, 3, 80.0), (3, 3, 70.0)]);
    let b = rows(dir.path(), "b.csv", &[(3, 3, 69.0), (1, 1, 99.0), (0, 1, 89.0), (2, 3, 81.0)]);
    let (ra, rb) = (read_per_image(&a, "nll").unwrap(), read_per_image(&b, "nll").unwrap());
    let c = compare("nll", (&a, &ra), (&b, &rb)).unwrap();
    // d = B − A by index: −1, −1, +1, −1. Mean −0.5; sample variance
    // (3·0.25 + 2.25)/3 = 1, so SE = √(1/4) = 0.5.
    assert_eq!(c.images, 4);
    assert!((c.diff.mean + 0.5).abs() < 1e-12 && (c.diff.se.unwrap() - 0.5).abs() < 1e-12, "{c:?}");
    let (lo, hi) = c.ci95.unwrap();
    assert!((lo + 0.5 + 0.98).abs() < 1e-12 && (hi + 0.5 - 0.98).abs() < 1e-12, "{c:?}");
    assert_eq!(c.b_lower, 0.75);
    // A: 90, 100, 80, 70: mean 85, variance (25 + 225 + 25 + 225)/3 = 500/3.
    assert!((c.a.mean - 85.0).abs() < 1e-12 && (c.a.se.unwrap() - (500.0f64 / 3.0 / 4.0).sqrt()).abs() < 1e-12);
    // B: 89, 99, 81, 69: mean 84.5, variance (20.25 + 210.25 + 12.25 + 240.25)/3 = 161.
    let want_unpaired = (500.0f64 / 12.0 + 161.0 / 4.0).sqrt();
    assert!((c.unpaired_se.unwrap() - want_unpaired).abs() < 1e-12, "{c:?}");
    // Label 1: d = −1, −1 (SE 0); label 3: +1, −1 (mean 0, SE 1).
    let by_label: Vec<(u8, usize, f64, Option<f64>)> =
        c.per_label.iter().map(|l| (l.label, l.diff.n, l.diff.mean, l.diff.se)).collect();
    assert_eq!(by_label, vec![(1, 2, -1.0, Some(0.0)), (3, 2, 0.0, Some(1.0))]);
}

#[test]
fn other_columns_are_compared_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.csv", "label,recon,index\n4,10.5,0\n4,11.5,1\n");
    let b = write(dir.path(), "b.csv", "index,label,recon\n0,4,10.0\n1,4,11.0\n");
    let (ra, rb) = (read_per_image(&a, "recon").unwrap(), read_per_image(&b, "recon").unwrap());
    let c = compare("recon", (&a, &ra), (&b, &rb)).unwrap();
    assert_eq!((c.diff.mean, c.diff.se, c.b_lower), (-0.5, Some(0.0), 1.0));
    assert!(read_per_image(&a, "nll").is_err(), "a CSV without the column is an error");
}

#[test]
fn malformed_files_name_the_file_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases = [
        ("header.csv", "a,b,c\n1,2,3\n".to_string(), "the header needs index, label and nll"),
        ("number.csv", format!("{HEADER}0,1,90.5,0,0,0\n1,1,abc,0,0,0\n"), "line 3: nll \"abc\" is not a number"),
        ("short.csv", format!("{HEADER}0,1\n"), "line 2: no nll"),
        ("twice.csv", format!("{HEADER}0,1,90,0,0,0\n0,1,91,0,0,0\n"), "line 3: image 0 appears twice"),
        ("nan.csv", format!("{HEADER}0,1,NaN,0,0,0\n"), "line 2: nll of image 0 is NaN"),
        ("label.csv", format!("{HEADER}0,300,90,0,0,0\n"), "line 2: label \"300\" is not a number"),
        ("empty.csv", HEADER.to_string(), "no images"),
    ];
    for (name, body, want) in cases {
        let path = write(d, name, &body);
        let err = read_per_image(&path, "nll").expect_err(name).to_string();
        assert!(err.contains(name) && err.contains(want), "{name}: {err}");
    }
    let err = read_per_image(&d.join("missing.csv"), "nll").unwrap_err().to_string();
    assert!(err.contains("missing.csv"), "{err}");
    let err = read_per_image(&d.join("header.csv"), "loss").unwrap_err().to_string();
    assert!(err.contains("--metric") && err.contains("recon_at_mean"), "{err}");
}

#[test]
fn different_images_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = rows(d, "a.csv", &[(0, 1, 90.0), (1, 2, 91.0)]);
    let fewer = rows(d, "fewer.csv", &[(0, 1, 90.0)]);
    let shifted = rows(d, "shifted.csv", &[(1, 2, 90.0), (2, 1, 91.0)]);
    let relabelled = rows(d, "relabelled.csv", &[(0, 1, 90.0), (1, 5, 91.0)]);
    let ra = read_per_image(&a, "nll").unwrap();
    for (path, want) in [(&fewer, "1 of them in common"), (&shifted, "1 of them in common"), (&relabelled, "label")] {
        let rb = read_per_image(path, "nll").unwrap();
        let err = compare("nll", (&a, &ra), (path, &rb)).unwrap_err().to_string();
        assert!(err.contains(want) && err.contains("a.csv"), "{}: {err}", path.display());
    }
}
