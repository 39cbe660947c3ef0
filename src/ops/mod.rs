//! The ops, one file per op family: the CPU math that is the executable spec
//! (the CUDA kernels in kernels/ are tested against these).
pub mod fastmath;
pub mod fused;
pub mod grid;
pub mod grid_sample;
pub mod likelihood;
pub mod linear;
pub mod linear_bf16;
pub mod logsumexp;
pub mod rows;
pub mod sgemm;
pub mod simd;
pub mod tps;

pub use rows::Par;
