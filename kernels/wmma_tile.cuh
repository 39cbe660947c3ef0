// Tensor-core building blocks shared by the evaluator's TF32/BF16 kernels
// (linear.cu, nll_fused.cu): stage a block of activation rows in shared
// memory, then multiply it by a padded weight on the tensor cores (WMMA).
//
// Weights are zero-padded to Wp [Np, Kp] (Np a multiple of 16, Kp of
// TC_K_GROUP), row-major, which is the B operand in column-major with
// ld = Kp: fp32 for TF32 (rounded to TF32 in the fragments), bf16 for BF16. Sums are fp32. A block owns
// ROW_TILES·16 rows; each warp takes 16-wide column tiles and keeps
// ROW_TILES accumulators, so every B fragment it loads serves all the
// block's rows: the weight is read from L2 once per ROW_TILES·16 rows.
#pragma once
#include <cuda_bf16.h>
#include "launch_shapes.h"
#include <mma.h>

namespace iwtvae {

// a[r, k] for r < nrows, k < Kp: X[(r0 + r), k] (zero past `rows` or K),
// as float (TF32) or bf16, row-major with ld = Kp.
template <bool BF16>
__device__ __forceinline__ void stage_rows(const float* X, int r0, int rows, int K, int Kp, int nrows,
                                           unsigned char* a_raw) {
  for (int t = threadIdx.x; t < nrows * Kp; t += blockDim.x) {
    int s = t / Kp, k = t % Kp;
    float v = (r0 + s < rows && k < K) ? X[(size_t)(r0 + s) * K + k] : 0.0f;
    if constexpr (BF16)
      reinterpret_cast<__nv_bfloat16*>(a_raw)[t] = __float2bfloat16(v);
    else
      reinterpret_cast<float*>(a_raw)[t] = v;
  }
}

// The fragments of one k step as the tensor cores take them: A (16 staged
// rows), B (a 16-column tile of Wp), C (fp32 sums), and the element type T
// (TF32: 16×16×8 with fp32 storage; BF16: 16×16×16).
template <bool BF16>
struct TcFragments;
template <>
struct TcFragments<true> {
  static constexpr int KS = 16;
  using A = nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, __nv_bfloat16, nvcuda::wmma::row_major>;
  using B = nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, __nv_bfloat16, nvcuda::wmma::col_major>;
  using C = nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float>;
  using T = __nv_bfloat16;
};
template <>
struct TcFragments<false> {
  static constexpr int KS = 8;
  using A = nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 8, nvcuda::wmma::precision::tf32,
                                   nvcuda::wmma::row_major>;
  using B = nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 8, nvcuda::wmma::precision::tf32,
                                   nvcuda::wmma::col_major>;
  using C = nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 8, float>;
  using T = float;
};

// k steps whose B fragments are loaded together: the loads of a group are
// in flight at once and the next group's are issued before this group's
// multiplies, so a warp waits for L2 once per group rather than once per
// k step (with one 8-warp block per SM, nothing else hides that latency).
// Kp is a multiple of the group (the host pads it so), which keeps a group
// free of branches for the scheduler; the sums run in the same order as one
// step at a time, so the results are the same to the bit.
#define TC_K_GROUP IWTVAE_TC_K_GROUP

template <bool BF16>
__device__ __forceinline__ void load_b_group(typename TcFragments<BF16>::B (&fb)[TC_K_GROUP / TcFragments<BF16>::KS],
                                             const typename TcFragments<BF16>::T* B, int k0, int Kp) {
  constexpr int KS = TcFragments<BF16>::KS;
#pragma unroll
  for (int u = 0; u < TC_K_GROUP / KS; ++u) nvcuda::wmma::load_matrix_sync(fb[u], B + k0 + u * KS, Kp);
}

// cs[ROW_TILES·16, Np] (fp32, ld Np) = a · Wpᵀ, with `a` from stage_rows.
template <bool BF16, int ROW_TILES, int WARPS>
__device__ __forceinline__ void rows_times_wt(const unsigned char* a_raw, const void* Wp, float* cs, int Np, int Kp) {
  using namespace nvcuda;
  using Tile = TcFragments<BF16>;
  using T = typename Tile::T;
  constexpr int KS = Tile::KS, KU = TC_K_GROUP / KS;
  const T* A = reinterpret_cast<const T*>(a_raw);
  int warp = threadIdx.x / 32;
  for (int n0 = warp * 16; n0 < Np; n0 += WARPS * 16) {
    const T* B = reinterpret_cast<const T*>(Wp) + (size_t)n0 * Kp;
    typename Tile::C acc[ROW_TILES];
#pragma unroll
    for (int rt = 0; rt < ROW_TILES; ++rt) wmma::fill_fragment(acc[rt], 0.0f);
    typename Tile::B fb[KU], next[KU];
    load_b_group<BF16>(fb, B, 0, Kp);
    for (int k0 = 0; k0 < Kp; k0 += TC_K_GROUP) {
      if (k0 + TC_K_GROUP < Kp) load_b_group<BF16>(next, B, k0 + TC_K_GROUP, Kp);
#pragma unroll
      for (int u = 0; u < KU; ++u) {
        int k = k0 + u * KS;
        if constexpr (!BF16) {
#pragma unroll
          for (int i = 0; i < fb[u].num_elements; ++i) fb[u].x[i] = wmma::__float_to_tf32(fb[u].x[i]);
        }
#pragma unroll
        for (int rt = 0; rt < ROW_TILES; ++rt) {
          typename Tile::A fa;
          wmma::load_matrix_sync(fa, A + (size_t)rt * 16 * Kp + k, Kp);
          if constexpr (!BF16) {
#pragma unroll
            for (int i = 0; i < fa.num_elements; ++i) fa.x[i] = wmma::__float_to_tf32(fa.x[i]);
          }
          wmma::mma_sync(acc[rt], fa, fb[u], acc[rt]);
        }
      }
      if (k0 + TC_K_GROUP < Kp) {
#pragma unroll
        for (int u = 0; u < KU; ++u) fb[u] = next[u];
      }
    }
#pragma unroll
    for (int rt = 0; rt < ROW_TILES; ++rt)
      wmma::store_matrix_sync(cs + (size_t)rt * 16 * Np + n0, acc[rt], Np, wmma::mem_row_major);
  }
}

// The tensor-core front of a kernel: stage rows r0 .. r0 + ROW_TILES·16 of
// X [rows, K] (stage_rows) behind the product in the block's shared memory
// and multiply by Wpᵀ (rows_times_wt). Returns cs [ROW_TILES·16, Np] (fp32,
// ld Np) at the start of smem_raw, which needs ROW_TILES·16·(Np·4 + Kp·(4 or
// 2)) bytes; ends with a barrier, so cs is ready for every thread.
template <bool BF16, int ROW_TILES, int WARPS>
__device__ __forceinline__ float* stage_and_multiply(unsigned char* smem_raw, const float* X, int r0, int rows, int K,
                                                     int Kp, const void* Wp, int Np) {
  float* cs = reinterpret_cast<float*>(smem_raw);
  unsigned char* a_raw = smem_raw + (size_t)ROW_TILES * 16 * Np * sizeof(float);
  stage_rows<BF16>(X, r0, rows, K, Kp, ROW_TILES * 16, a_raw);
  __syncthreads();
  rows_times_wt<BF16, ROW_TILES, WARPS>(a_raw, Wp, cs, Np, Kp);
  __syncthreads();
  return cs;
}

}  // namespace iwtvae
