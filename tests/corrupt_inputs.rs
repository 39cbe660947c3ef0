//! Damaged input files give errors, never panics or absurd allocations.
//!
//! Each case starts from a valid file and damages it, seeded so that a
//! failure names a reproducible case: structured edits to the safetensors
//! header (shapes, dtypes, offsets, metadata values) and random byte flips and
//! truncations, for checkpoints and for IDX files.
mod common;
use common::tiny_config;
use iwtvae::data::idx::parse_idx;
use iwtvae::model::checkpoint::{model_metadata, parse_checkpoint, serialize_flat};
use iwtvae::model::{init_params, Layout, Transform};
use serde_json::{json, Value};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// splitmix64: enough randomness to pick edits, with no dependency.
struct Picks(u64);
impl Picks {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn split_safetensors(bytes: &[u8]) -> (Value, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header, bytes[8 + n..].to_vec())
}

fn join_safetensors(header: &Value, data: &[u8]) -> Vec<u8> {
    let head = serde_json::to_vec(header).unwrap();
    let mut out = (head.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&head);
    out.extend_from_slice(data);
    out
}

fn valid_checkpoint(t: Transform) -> Vec<u8> {
    let layout = Layout::new(tiny_config(t));
    let params = init_params::<f32>(&layout, 5);
    serialize_flat(&layout, &params, model_metadata(&layout.config)).unwrap()
}

/// Loading must return (Ok or a checkpoint error); a panic fails the case.
fn loads_without_panic(case: &str, bytes: &[u8]) {
    let path = Path::new("damaged.safetensors");
    match catch_unwind(AssertUnwindSafe(|| parse_checkpoint(path, bytes))) {
        Ok(Ok(ck)) => assert_eq!(ck.params.len(), ck.layout.total, "{case}"),
        Ok(Err(e)) => {
            assert!(e.to_string().contains("damaged.safetensors"), "{case}: error does not name the file: {e}")
        }
        Err(_) => panic!("{case}: parse_checkpoint panicked"),
    }
}

const ODD_NUMBERS: [&str; 9] =
    ["", "-1", "0", "1", "abc", "4000000000", "99999999999999999999", "18446744073709551615", "1e3"];

#[test]
fn damaged_checkpoint_headers_are_errors() {
    for t in [Transform::None, Transform::Affine, Transform::Tps] {
        let (header, data) = split_safetensors(&valid_checkpoint(t));
        let names: Vec<String> = header.as_object().unwrap().keys().filter(|k| *k != "__metadata__").cloned().collect();
        let shapes =
            [json!([]), json!([0]), json!([0, 0]), json!([1u64 << 40, 1u64 << 40]), json!([3, 4, 5]), json!([1])];
        for name in &names {
            for shape in &shapes {
                let mut h = header.clone();
                h[name]["shape"] = shape.clone();
                loads_without_panic(&format!("{t:?} {name} shape {shape}"), &join_safetensors(&h, &data));
            }
            for dtype in ["F16", "BF16", "F64", "I64", "U8", "BOOL"] {
                let mut h = header.clone();
                h[name]["dtype"] = json!(dtype);
                loads_without_panic(&format!("{t:?} {name} dtype {dtype}"), &join_safetensors(&h, &data));
            }
            for offsets in [json!([0, 0]), json!([8, 4]), json!([0, u64::MAX]), json!([0, 1u64 << 40])] {
                let mut h = header.clone();
                h[name]["data_offsets"] = offsets.clone();
                loads_without_panic(&format!("{t:?} {name} offsets {offsets}"), &join_safetensors(&h, &data));
            }
            let mut h = header.clone();
            h.as_object_mut().unwrap().remove(name);
            loads_without_panic(&format!("{t:?} without {name}"), &join_safetensors(&h, &data));
        }
        let keys: Vec<String> = header["__metadata__"].as_object().unwrap().keys().cloned().collect();
        for key in &keys {
            for value in ODD_NUMBERS {
                let mut h = header.clone();
                h["__metadata__"][key] = json!(value);
                loads_without_panic(&format!("{t:?} metadata {key}={value:?}"), &join_safetensors(&h, &data));
            }
            let mut h = header.clone();
            h["__metadata__"].as_object_mut().unwrap().remove(key);
            loads_without_panic(&format!("{t:?} metadata without {key}"), &join_safetensors(&h, &data));
        }
        let mut h = header.clone();
        h.as_object_mut().unwrap().remove("__metadata__");
        loads_without_panic(&format!("{t:?} without metadata"), &join_safetensors(&h, &data));
    }
}

#[test]
fn metadata_that_contradicts_the_tensors_is_named() {
    let (header, data) = split_safetensors(&valid_checkpoint(Transform::Tps));
    let mut h = header.clone();
    // An absurd width must be refused by reading the file, not by trying to
    // allocate a model of that width.
    h["__metadata__"]["hidden"] = json!("4000000000");
    let err = parse_checkpoint(Path::new("big.safetensors"), &join_safetensors(&h, &data)).err().unwrap().to_string();
    assert!(err.contains("big.safetensors") && err.contains("hidden"), "{err}");
}

#[test]
fn flipped_and_truncated_checkpoint_bytes_are_errors() {
    let mut picks = Picks(0x5eed);
    for t in [Transform::None, Transform::Affine, Transform::Tps] {
        let valid = valid_checkpoint(t);
        let head_end = 8 + u64::from_le_bytes(valid[..8].try_into().unwrap()) as usize;
        for case in 0..400 {
            let mut bytes = valid.clone();
            // Mostly damage the header, where the structure lives.
            for _ in 0..1 + picks.below(4) {
                let at = if picks.below(4) == 0 { picks.below(bytes.len()) } else { picks.below(head_end) };
                bytes[at] = picks.next() as u8;
            }
            if picks.below(3) == 0 {
                bytes.truncate(picks.below(bytes.len()));
            }
            loads_without_panic(&format!("{t:?} random case {case}"), &bytes);
        }
    }
}

#[test]
fn flipped_and_truncated_idx_bytes_are_errors() {
    let mut valid = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4];
    valid.extend((0..24).map(|i| i as u8));
    let mut picks = Picks(0x1d8);
    for case in 0..2000 {
        let mut bytes = valid.clone();
        for _ in 0..1 + picks.below(3) {
            let at = picks.below(16);
            bytes[at] = picks.next() as u8;
        }
        if picks.below(3) == 0 {
            bytes.truncate(picks.below(bytes.len()));
        }
        let path = Path::new("damaged-idx3-ubyte");
        match catch_unwind(|| parse_idx(path, &bytes, 3)) {
            Ok(Ok(a)) => assert_eq!(a.data.len(), a.dims.iter().product::<usize>(), "case {case}"),
            Ok(Err(e)) => assert!(e.to_string().contains("damaged-idx3-ubyte"), "case {case}: {e}"),
            Err(_) => panic!("case {case}: parse_idx panicked on {bytes:?}"),
        }
    }
}

#[test]
fn non_finite_weights_are_refused_by_name() {
    let layout = Layout::new(tiny_config(Transform::Tps));
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut params = init_params::<f32>(&layout, 5);
        let entry = layout.entries.iter().find(|e| e.name == "dec.fc2.bias").unwrap();
        params[entry.offset + 2] = bad;
        let bytes = serialize_flat(&layout, &params, model_metadata(&layout.config)).unwrap();
        let err = parse_checkpoint(Path::new("diverged.safetensors"), &bytes).err().expect("refused").to_string();
        assert!(
            err.contains("diverged.safetensors") && err.contains("dec.fc2.bias") && err.contains("1 non-finite"),
            "{bad}: {err}"
        );
        assert!(err.contains("flat index 2"), "{err}");
    }
}
