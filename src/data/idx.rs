//! The IDX format (LeCun's MNIST files), raw or gzipped.
//!
//! Layout: `00 00 <type> <ndim>`, then ndim big-endian u32 sizes, then the
//! data in row-major order. Only unsigned bytes (type 0x08) occur in MNIST and
//! Fashion-MNIST, and only those are accepted.
use crate::error::{Error, Result};
use std::io::Read;
use std::path::Path;

/// A decoded IDX array of unsigned bytes.
#[derive(Debug, Clone)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

fn bad(path: &Path, problem: impl Into<String>) -> Error {
    Error::Idx { path: path.to_path_buf(), problem: problem.into() }
}

/// Read a whole file, inflating it when it starts with the gzip magic.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| bad(path, format!("corrupt gzip stream ({e})")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parse IDX bytes; `path` only names the file in errors.
pub fn parse_idx(path: &Path, bytes: &[u8], expected_ndim: usize) -> Result<IdxArray> {
    if bytes.len() < 4 {
        return Err(bad(path, format!("truncated: {} bytes, too short for the 4-byte magic", bytes.len())));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad(
            path,
            format!(
                "wrong magic {:02x} {:02x} {:02x} {:02x} (expected 00 00 08 0{expected_ndim})",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
        ));
    }
    if bytes[2] != 0x08 {
        return Err(bad(path, format!("element type 0x{:02x} is not unsigned byte (0x08)", bytes[2])));
    }
    let ndim = bytes[3] as usize;
    if ndim != expected_ndim {
        return Err(bad(path, format!("has {ndim} dimensions, expected {expected_ndim}")));
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(bad(path, format!("truncated header: {} bytes, need {header}", bytes.len())));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|d| u32::from_be_bytes(bytes[4 + 4 * d..8 + 4 * d].try_into().expect("4 bytes")) as usize)
        .collect();
    let count = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let count = count.ok_or_else(|| bad(path, format!("dimensions {dims:?} overflow")))?;
    let have = bytes.len() - header;
    if have < count {
        return Err(bad(path, format!("truncated: header promises {dims:?} = {count} bytes of data, file has {have}")));
    }
    if have > count {
        return Err(bad(
            path,
            format!("unexpected size: header promises {dims:?} = {count} bytes of data, file has {have}"),
        ));
    }
    Ok(IdxArray { dims, data: bytes[header..].to_vec() })
}

/// Read `<dir>/<stem>` or `<dir>/<stem>.gz`.
pub fn read_idx(dir: &Path, stem: &str, expected_ndim: usize) -> Result<IdxArray> {
    let raw = dir.join(stem);
    let gz = dir.join(format!("{stem}.gz"));
    let path = if raw.is_file() {
        raw
    } else if gz.is_file() {
        gz
    } else {
        return Err(Error::Dataset {
            path: raw,
            problem: format!("missing file (neither it nor {} exists)", gz.display()),
        });
    };
    let bytes = read_maybe_gz(&path)?;
    parse_idx(&path, &bytes, expected_ndim)
}
