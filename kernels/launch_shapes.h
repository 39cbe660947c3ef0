// The launch geometry that kernels and the Rust wrappers launching them must
// agree on: block sizes a kernel's indexing assumes, rows per block, the k
// padding of the tensor-core weights. Written here once. The kernels include
// this file (through common.cuh); build.rs turns each line
//   #define IWTVAE_<NAME> <integer>  // <what it is>
// into `pub const <NAME>: usize` in src/cuda/shapes.rs, so the two sides
// cannot drift apart. build.rs refuses any other kind of line.
#pragma once

// The most threads a block of any kernel has. Each kernel declares it with
// __launch_bounds__, so ptxas keeps a thread's registers within what a block
// of that size may have (65536 / 256), and a larger block is refused, on the
// GPU as in the emulator, rather than failing on some GPUs for want of
// registers.
#define IWTVAE_MAX_THREADS 256  // the largest block any kernel is launched with

#define IWTVAE_ROW_THREADS 256  // decode_row.cu: threads of the one block per sample row (its reductions count warps)
#define IWTVAE_GEMM_TILE 64     // linear.cu fp32 GEMMs: the output tile of a block, rows and columns
#define IWTVAE_GEMM_THREADS 256 // linear.cu fp32 GEMMs: threads per block, each a 4x4 micro-tile of the tile
#define IWTVAE_COL_SUM_THREADS 256 // linear.cu col_sum: threads per block (warps split the rows, a lane per column)

#define IWTVAE_FUSED_SAMPLES 16 // nll_fused.cu fp32 evaluator: sample rows per block
#define IWTVAE_FUSED_WARPS 8    // nll_fused.cu fp32 evaluator: warps per block
#define IWTVAE_TC_ROWS 32       // nll_fused.cu tensor-core evaluator: sample rows per block (16-row tiles)
#define IWTVAE_TC_WARPS 8       // nll_fused.cu tensor-core evaluator: warps per block
#define IWTVAE_LT_ROWS 64       // linear.cu tensor-core layers: rows per block (16-row tiles)
#define IWTVAE_LT_WARPS 8       // linear.cu tensor-core layers: warps per block
#define IWTVAE_TC_K_GROUP 64    // wmma_tile.cuh: k values per group of fragment loads; the host pads K to a multiple
