//! Checkpoints in the SPEC safetensors format: f32 tensors in torch's
//! nn.Linear layout under the SPEC names, with the model's configuration in
//! `__metadata__`. Files written by PyTorch's safetensors load too; when their
//! metadata lacks a field it is inferred from the tensor shapes.
use super::config::{ModelConfig, Transform};
use super::params::Layout;
use crate::error::{Error, Result};
use crate::fsutil::atomic_write;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;

fn err(path: &Path, problem: impl Into<String>) -> Error {
    Error::Checkpoint { path: path.to_path_buf(), problem: problem.into() }
}

/// The SPEC metadata for a configuration.
pub fn model_metadata(cfg: &ModelConfig) -> HashMap<String, String> {
    let mut m = HashMap::new();
    m.insert("format".into(), "iwtvae".into());
    m.insert("version".into(), "1".into());
    m.insert("transform".into(), cfg.transform.name().into());
    m.insert("z_dim".into(), cfg.z_dim.to_string());
    m.insert("u_dim".into(), cfg.u_dim.to_string());
    m.insert("hidden".into(), cfg.hidden.to_string());
    m.insert("tps_grid".into(), cfg.tps_grid.to_string());
    m.insert("height".into(), cfg.height.to_string());
    m.insert("width".into(), cfg.width.to_string());
    m
}

/// Serialise named f32 tensors taken from a flat vector, in the safetensors
/// format.
pub fn serialize_flat(layout: &Layout, flat: &[f32], metadata: HashMap<String, String>) -> Result<Vec<u8>> {
    let tensors = layout
        .entries
        .iter()
        .map(|e| TensorBytes {
            name: e.name.clone(),
            dtype: "F32",
            shape: e.shape.clone(),
            bytes: flat[e.offset..e.offset + e.len].iter().flat_map(|v| v.to_le_bytes()).collect(),
        })
        .collect();
    Ok(serialize_tensors(tensors, metadata))
}

/// One tensor to serialise: a safetensors dtype name ("F32", "F64", "U8")
/// and its little-endian bytes, row-major over `shape`.
pub struct TensorBytes {
    pub name: String,
    pub dtype: &'static str,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

/// The safetensors file of `tensors`. The header is written here (not by
/// the safetensors crate) so that its keys are sorted and the data follows
/// in the same order: the same tensors always give the same bytes.
pub fn serialize_tensors(mut tensors: Vec<TensorBytes>, metadata: HashMap<String, String>) -> Vec<u8> {
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let mut header = serde_json::Map::new();
    let meta: std::collections::BTreeMap<_, _> = metadata.into_iter().collect();
    header.insert("__metadata__".into(), serde_json::to_value(meta).expect("strings serialise"));
    let mut offset = 0usize;
    for t in &tensors {
        let end = offset + t.bytes.len();
        header.insert(
            t.name.clone(),
            serde_json::json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut head = serde_json::to_string(&serde_json::Value::Object(header)).expect("header serialises").into_bytes();
    // The format asks for an 8-byte aligned data section; pad with spaces.
    while !head.len().is_multiple_of(8) {
        head.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + head.len() + offset);
    out.extend_from_slice(&(head.len() as u64).to_le_bytes());
    out.extend_from_slice(&head);
    for t in &tensors {
        out.extend_from_slice(&t.bytes);
    }
    out
}

/// Write a model checkpoint atomically. `extra` adds metadata (epoch, ...).
pub fn save_checkpoint(path: &Path, layout: &Layout, params: &[f32], extra: &[(&str, String)]) -> Result<()> {
    let mut meta = model_metadata(&layout.config);
    for (k, v) in extra {
        meta.insert((*k).into(), v.clone());
    }
    let bytes = serialize_flat(layout, params, meta)?;
    atomic_write(path, &bytes)
}

pub struct LoadedCheckpoint {
    pub layout: Layout,
    pub params: Vec<f32>,
    pub metadata: HashMap<String, String>,
}

fn tensor_f32(path: &Path, name: &str, view: &TensorView) -> Result<Vec<f32>> {
    let d = view.data();
    match view.dtype() {
        Dtype::F32 => Ok(d.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4"))).collect()),
        Dtype::F64 => Ok(d.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8")) as f32).collect()),
        other => Err(err(path, format!("tensor {name} has dtype {other:?}; expected F32 (or F64)"))),
    }
}

/// Read the configuration: metadata where present, tensor shapes otherwise.
fn infer_config(path: &Path, st: &SafeTensors, meta: &HashMap<String, String>) -> Result<ModelConfig> {
    let shape = |name: &str| -> Result<Vec<usize>> {
        st.tensor(name).map(|t| t.shape().to_vec()).map_err(|_| err(path, format!("missing tensor {name}")))
    };
    let num = |key: &str, fallback: Option<usize>| -> Result<usize> {
        match meta.get(key) {
            Some(v) => v.parse().map_err(|_| err(path, format!("metadata {key}={v:?} is not an integer"))),
            None => fallback.ok_or_else(|| err(path, format!("metadata {key} missing and not inferable"))),
        }
    };
    if let Some(f) = meta.get("format") {
        if f != "iwtvae" {
            return Err(err(path, format!("metadata format={f:?}, expected \"iwtvae\"")));
        }
    }
    if let Some(v) = meta.get("version") {
        if v != "1" {
            return Err(err(path, format!("metadata version={v:?}; this build reads version 1")));
        }
    }
    let fc1 = shape("enc.fc1.weight")?;
    let zmu = shape("enc.z_mu.weight")?;
    if fc1.len() != 2 || zmu.len() != 2 {
        return Err(err(path, "enc.fc1.weight and enc.z_mu.weight must be 2-D"));
    }
    let has_u = st.tensor("enc.u_mu.weight").is_ok();
    let theta_rows = match st.tensor("u2theta.weight") {
        Ok(t) if t.shape().len() != 2 => return Err(err(path, "u2theta.weight must be 2-D")),
        Ok(t) => Some(t.shape()[0]),
        Err(_) => None,
    };
    let transform = match meta.get("transform") {
        Some(t) => Transform::parse(t).map_err(|e| err(path, format!("metadata transform: {e}")))?,
        None if !has_u => Transform::None,
        None if theta_rows == Some(6) => Transform::Affine,
        None => Transform::Tps,
    };
    let u_rows = match has_u {
        true => *shape("enc.u_mu.weight")?.first().ok_or_else(|| err(path, "enc.u_mu.weight must be 2-D"))?,
        false => 0,
    };
    let g_guess = theta_rows.map(|t| ((t / 2) as f64).sqrt().round() as usize).or(Some(3));
    let pixels = fc1[1];
    let side = (pixels as f64).sqrt().round() as usize;
    let square = (side * side == pixels).then_some(side);
    let cfg = ModelConfig {
        transform,
        z_dim: num("z_dim", Some(zmu[0]))?,
        u_dim: num("u_dim", Some(u_rows))?,
        hidden: num("hidden", Some(fc1[0]))?,
        tps_grid: num("tps_grid", g_guess)?,
        height: num("height", square)?,
        width: num("width", square)?,
    };
    // Metadata that disagrees with the tensors is refused here, before a
    // layout of the metadata's (possibly absurd) size is built.
    for (key, meta_value, tensor, rows) in [
        ("hidden", cfg.hidden, "enc.fc1.weight", fc1[0]),
        ("z_dim", cfg.z_dim, "enc.z_mu.weight", zmu[0]),
        ("u_dim", cfg.u_dim, "enc.u_mu.weight", u_rows),
    ] {
        if meta_value != rows {
            return Err(err(path, format!("metadata {key}={meta_value} but {tensor} has {rows} rows")));
        }
    }
    cfg.validate().map_err(|e| err(path, e.to_string()))?;
    if cfg.pixels() != pixels {
        return Err(err(
            path,
            format!("image size {}x{} does not match enc.fc1.weight's {pixels} inputs", cfg.height, cfg.width),
        ));
    }
    Ok(cfg)
}

/// Load a checkpoint; every tensor of the layout must be present with its shape.
pub fn load_checkpoint(path: &Path) -> Result<LoadedCheckpoint> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_checkpoint(path, &bytes)
}

/// Parse checkpoint bytes; `path` only names the file in errors.
pub fn parse_checkpoint(path: &Path, bytes: &[u8]) -> Result<LoadedCheckpoint> {
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| err(path, format!("not a safetensors file ({e})")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let st = SafeTensors::deserialize(bytes).map_err(|e| err(path, format!("not a safetensors file ({e})")))?;
    let cfg = infer_config(path, &st, &meta)?;
    let layout = Layout::new(cfg);
    let mut params = vec![0f32; layout.total];
    for e in &layout.entries {
        let view = st.tensor(&e.name).map_err(|_| err(path, format!("missing tensor {}", e.name)))?;
        if view.shape() != e.shape.as_slice() {
            return Err(err(path, format!("tensor {} has shape {:?}, expected {:?}", e.name, view.shape(), e.shape)));
        }
        let v = tensor_f32(path, &e.name, &view)?;
        // A NaN or infinite weight (a diverged run exported from elsewhere)
        // would otherwise surface minutes later as a NaN NLL, or not at all
        // where the sampler's clamping hides it.
        if let Some(first) = v.iter().position(|x| !x.is_finite()) {
            let bad = v[first..].iter().filter(|x| !x.is_finite()).count();
            return Err(err(
                path,
                format!(
                    "tensor {} holds {bad} non-finite values (the first at flat index {first}: {})",
                    e.name, v[first]
                ),
            ));
        }
        params[e.offset..e.offset + e.len].copy_from_slice(&v);
    }
    Ok(LoadedCheckpoint { layout, params, metadata: meta })
}
