//! Data: the IDX reader and dataset splits.
pub mod dataset;
pub mod idx;

pub use dataset::{Binarize, Dataset, Split};
