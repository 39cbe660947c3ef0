// Fully connected layers in torch's layout, forward and backward; mirrors
// src/ops/linear.rs:
//   forward   Y[M,N] = act(X[M,K] · W[N,K]ᵀ + b[N])          linear_fwd
//   backward  dX = dY · W,  dW = dYᵀ · X                      gemm_strided
//             (dX ⊙ relu'(H) when H is the layer below's ReLU output)
//             db = Σ_rows dY                                  col_sum
//   split-K   the same GEMMs in K slices, summed in order     gemm_splitk (one launch), or
//                                                             gemm_partial + splitk_sum
//   TF32      the training step's GEMMs on the tensor cores    linear_fwd_tile_tf32,
//             (--precision tf32)                              gemm_strided_tf32, gemm_splitk_tf32,
//                                                             gemm_partial_tf32
// Plain 64×64-tiled fp32 GEMMs (each thread a 4×4 micro-tile, K in steps of
// 16 through shared memory). Every sum runs in a fixed order, so results are
// deterministic. The evaluator's big layer (fc3) does not come here:
// nll_fused.cu fuses it.
#include "common.cuh"
#include "wmma_tile.cuh"
using namespace iwtvae;

#define TILE IWTVAE_GEMM_TILE
#define KSTEP 16
// A 16×16 grid of threads, each a 4×4 micro-tile, covers the tile.
static_assert(TILE == 16 * 4 && IWTVAE_GEMM_THREADS == 16 * 16, "the GEMM tile is 16x16 threads of 4x4");

// acc = the 64×64 tile (blockIdx.y, blockIdx.x) of A[M,K] · B[K,N], A and B
// given by strides (rs, cs); each of the 256 threads holds a 4×4 micro-tile
// (rows ty·4.., columns tx·4..). The tile loads put consecutive threads along
// whichever of A's / B's dimensions is contiguous, so they coalesce.
__device__ __forceinline__ void tile_product(const float* A, long long rsa, long long csa, const float* B,
                                             long long rsb, long long csb, int M, int N, int K, float acc[4][4]) {
  __shared__ float as[KSTEP][TILE + 1];
  __shared__ float bs[KSTEP][TILE + 1];
  int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  int row0 = blockIdx.y * TILE, col0 = blockIdx.x * TILE;
  bool a_rows_fast = (rsa == 1), b_cols_fast = (csb == 1);
  for (int k0 = 0; k0 < K; k0 += KSTEP) {
    for (int t = threadIdx.x; t < TILE * KSTEP; t += IWTVAE_GEMM_THREADS) {
      int r = a_rows_fast ? t % TILE : t / KSTEP, kk = a_rows_fast ? t / TILE : t % KSTEP;
      int gr = row0 + r, gk = k0 + kk;
      as[kk][r] = (gr < M && gk < K) ? A[gr * rsa + gk * csa] : 0.0f;
      int c = b_cols_fast ? t % TILE : t / KSTEP, kb = b_cols_fast ? t / TILE : t % KSTEP;
      int gc = col0 + c, gkb = k0 + kb;
      bs[kb][c] = (gc < N && gkb < K) ? B[gkb * rsb + gc * csb] : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < KSTEP; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        a[i] = as[kk][ty * 4 + i];
        b[i] = bs[kk][tx * 4 + i];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }
}

// tile_product on the tensor cores, for training with --precision tf32:
// the same 64×64 tile of A·B (same strides, same coalesced staging), its A
// and B slices rounded to TF32 as they are staged (round to nearest, as
// wmma::__float_to_tf32 and cuBLAS's TF32 mode), multiplied by WMMA
// 16×16×8 with fp32 sums. Each of the 8 warps owns two of the tile's
// sixteen 16×16 fragments (fragment row w / 2, fragment columns 2·(w % 2)
// and one more). The sums go through shared memory into tile_product's
// acc layout, so the kernels' epilogues are the same code for both.
#define TC_LDA (KSTEP + 4)  // as_[r][k], padded: wmma wants ld a multiple of 16 bytes
#define TC_LDB (TILE + 4)   // bs_[k][c] and the result cs[r][c]
static_assert(IWTVAE_GEMM_THREADS == 8 * 32 && KSTEP % 8 == 0, "8 warps of two fragments; k steps of 8");
__device__ __forceinline__ void tile_product_tf32(const float* A, long long rsa, long long csa, const float* B,
                                                  long long rsb, long long csb, int M, int N, int K,
                                                  float acc[4][4]) {
  using namespace nvcuda;
  __align__(32) __shared__ float as_[TILE * TC_LDA];
  __align__(32) __shared__ float bs_[KSTEP * TC_LDB];
  __align__(32) __shared__ float cs[TILE * TC_LDB];
  int row0 = blockIdx.y * TILE, col0 = blockIdx.x * TILE;
  bool a_rows_fast = (rsa == 1), b_cols_fast = (csb == 1);
  int warp = threadIdx.x / 32, fr = warp / 2, fc = (warp % 2) * 2;
  using Acc = wmma::fragment<wmma::accumulator, 16, 16, 8, float>;
  Acc c0, c1;
  wmma::fill_fragment(c0, 0.0f);
  wmma::fill_fragment(c1, 0.0f);
  for (int k0 = 0; k0 < K; k0 += KSTEP) {
    for (int t = threadIdx.x; t < TILE * KSTEP; t += IWTVAE_GEMM_THREADS) {
      int r = a_rows_fast ? t % TILE : t / KSTEP, kk = a_rows_fast ? t / TILE : t % KSTEP;
      int gr = row0 + r, gk = k0 + kk;
      as_[r * TC_LDA + kk] = wmma::__float_to_tf32((gr < M && gk < K) ? A[gr * rsa + gk * csa] : 0.0f);
      int c = b_cols_fast ? t % TILE : t / KSTEP, kb = b_cols_fast ? t / TILE : t % KSTEP;
      int gc = col0 + c, gkb = k0 + kb;
      bs_[kb * TC_LDB + c] = wmma::__float_to_tf32((gc < N && gkb < K) ? B[gkb * rsb + gc * csb] : 0.0f);
    }
    __syncthreads();
#pragma unroll
    for (int ks = 0; ks < KSTEP; ks += 8) {
      wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fa;
      wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fb0, fb1;
      wmma::load_matrix_sync(fa, as_ + fr * 16 * TC_LDA + ks, TC_LDA);
      wmma::load_matrix_sync(fb0, bs_ + ks * TC_LDB + fc * 16, TC_LDB);
      wmma::load_matrix_sync(fb1, bs_ + ks * TC_LDB + (fc + 1) * 16, TC_LDB);
      wmma::mma_sync(c0, fa, fb0, c0);
      wmma::mma_sync(c1, fa, fb1, c1);
    }
    __syncthreads();
  }
  wmma::store_matrix_sync(cs + fr * 16 * TC_LDB + fc * 16, c0, TC_LDB, wmma::mem_row_major);
  wmma::store_matrix_sync(cs + fr * 16 * TC_LDB + (fc + 1) * 16, c1, TC_LDB, wmma::mem_row_major);
  __syncthreads();
  int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = cs[(ty * 4 + i) * TC_LDB + tx * 4 + j];
}

// The tile product in the kernel's arithmetic: fp32 FMAs, or TF32 tensor cores.
template <bool TF32>
__device__ __forceinline__ void tile(const float* A, long long rsa, long long csa, const float* B, long long rsb,
                                     long long csb, int M, int N, int K, float acc[4][4]) {
  if constexpr (TF32)
    tile_product_tf32(A, rsa, csa, B, rsb, csb, M, N, K, acc);
  else
    tile_product(A, rsa, csa, B, rsb, csb, M, N, K, acc);
}

// Calls f(r, c, i, j) for every element (r, c) of this thread's 4×4
// micro-tile (its entry i, j) that lies inside [M, N].
template <typename F>
__device__ __forceinline__ void for_tile(int M, int N, F f) {
  int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    int r = blockIdx.y * TILE + ty * 4 + i;
    if (r >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      int c = blockIdx.x * TILE + tx * 4 + j;
      if (c < N) f(r, c, i, j);
    }
  }
}

// Calls store(r, c, value) for every element of this thread's micro-tile
// that lies inside [M, N].
template <typename Store>
__device__ __forceinline__ void store_tile(const float acc[4][4], int M, int N, Store store) {
  for_tile(M, N, [&](int r, int c, int i, int j) { store(r, c, acc[i][j]); });
}

// Y[M,N] = act(X[M,K] · W[N,K]ᵀ + b[N]).
template <bool TF32>
__device__ __forceinline__ void linear_tile(const float* X, const float* W, const float* b, float* Y, int M, int N,
                                            int K, int relu) {
  float acc[4][4] = {};
  tile<TF32>(X, K, 1, W, 1, K, M, N, K, acc);
  store_tile(acc, M, N, [&](int r, int c, float v) {
    v += b[c];
    Y[(size_t)r * N + c] = relu ? fmaxf(v, 0.0f) : v;
  });
}
extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    linear_fwd(const float* X, const float* W, const float* b, float* Y, int M, int N, int K, int relu) {
  linear_tile<false>(X, W, b, Y, M, N, K, relu);
}
// The training step's layer in TF32 (not the evaluator's linear_fwd_tf32,
// which takes a padded weight).
extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    linear_fwd_tile_tf32(const float* X, const float* W, const float* b, float* Y, int M, int N, int K, int relu) {
  linear_tile<true>(X, W, b, Y, M, N, K, relu);
}

// The store of a backward GEMM: v (+ what C holds when accumulate), then
// zero where the layer below's ReLU output H (laid out as C) is not
// positive, when masked: dX = (dY·W) ⊙ relu'(H) in the GEMM's own store
// instead of a pass of its own over dX (y > 0 ⇔ pre-activation > 0; a
// NaN H gives 0, as the CPU's relu_backward).
__device__ __forceinline__ void store_grad(float* C, int ldc, int r, int c, float v, int accumulate,
                                           const float* relu_of, int masked) {
  size_t i = (size_t)r * ldc + c;
  if (accumulate) v += C[i];
  C[i] = (masked && !(relu_of[i] > 0.0f)) ? 0.0f : v;
}

// C[M,N] (row-major, leading dimension ldc) = A[M,K] · B[K,N] (+ C when
// accumulate; ⊙ relu'(relu_of) when masked): dY·W (both row-major) and
// dYᵀ·X (A a transposed view).
template <bool TF32>
__device__ __forceinline__ void strided_tile(const float* A, long long rsa, long long csa, const float* B, long long rsb,
                                             long long csb, float* C, int ldc, int M, int N, int K, int accumulate,
                                             const float* relu_of, int masked) {
  float acc[4][4] = {};
  tile<TF32>(A, rsa, csa, B, rsb, csb, M, N, K, acc);
  store_tile(acc, M, N, [&](int r, int c, float v) { store_grad(C, ldc, r, c, v, accumulate, relu_of, masked); });
}
extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    gemm_strided(const float* A, long long rsa, long long csa, const float* B, long long rsb, long long csb, float* C,
                 int ldc, int M, int N, int K, int accumulate, const float* relu_of, int masked) {
  strided_tile<false>(A, rsa, csa, B, rsb, csb, C, ldc, M, N, K, accumulate, relu_of, masked);
}
extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    gemm_strided_tf32(const float* A, long long rsa, long long csa, const float* B, long long rsb, long long csb,
                      float* C, int ldc, int M, int N, int K, int accumulate, const float* relu_of, int masked) {
  strided_tile<true>(A, rsa, csa, B, rsb, csb, C, ldc, M, N, K, accumulate, relu_of, masked);
}

// Split-K, for the training step's GEMMs whose output has too few 64×64
// tiles to fill the GPU (the encoder's 100 rows; dX and dW with K = 500 or
// 784): split z of K, [z·kchunk, min(K, (z+1)·kchunk)), is grid z, and its
// partial product goes to P[z] [M, N]; splitk_sum then adds the partials
// in order z = 0, 1, … and applies the epilogue, so the result does not
// depend on which block finishes first. How many splits: src/cuda/gemm.rs.
template <bool TF32>
__device__ __forceinline__ void partial_tile(const float* A, long long rsa, long long csa, const float* B, long long rsb,
                                             long long csb, float* P, int M, int N, int K, int kchunk) {
  long long k0 = (long long)blockIdx.z * kchunk;
  int kn = min(kchunk, K - (int)k0);
  float acc[4][4] = {};
  tile<TF32>(A + k0 * csa, rsa, csa, B + k0 * rsb, rsb, csb, M, N, kn, acc);
  float* Pz = P + (size_t)blockIdx.z * M * N;
  store_tile(acc, M, N, [&](int r, int c, float v) { Pz[(size_t)r * N + c] = v; });
}
extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    gemm_partial(const float* A, long long rsa, long long csa, const float* B, long long rsb, long long csb, float* P,
                 int M, int N, int K, int kchunk) {
  partial_tile<false>(A, rsa, csa, B, rsb, csb, P, M, N, K, kchunk);
}
extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    gemm_partial_tf32(const float* A, long long rsa, long long csa, const float* B, long long rsb, long long csb,
                      float* P, int M, int N, int K, int kchunk) {
  partial_tile<true>(A, rsa, csa, B, rsb, csb, P, M, N, K, kchunk);
}

// C[r, c] (leading dimension ldc) = v, then + bias[c] and ReLU (a layer's
// forward, has_bias), or gemm_strided's store (+ C when accumulate,
// ⊙ relu'(relu_of) when masked): the epilogues of linear_fwd and
// gemm_strided, after a split GEMM's sum.
__device__ __forceinline__ void splitk_store(float v, int r, int c, const float* bias, int has_bias, int relu,
                                             float* C, int ldc, int accumulate, const float* relu_of, int masked) {
  if (has_bias) {
    v += bias[c];
    C[(size_t)r * ldc + c] = relu ? fmaxf(v, 0.0f) : v;
  } else {
    store_grad(C, ldc, r, c, v, accumulate, relu_of, masked);
  }
}

// C = epilogue(Σ_z P[z]) over all of [M, N], one thread per element: the
// second launch of the two-launch split-K (IWTVAE_SPLITK_TWO_PASS=1).
extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    splitk_sum(const float* P, int splits, int M, int N, const float* bias, int has_bias, int relu, float* C, int ldc,
               int accumulate, const float* relu_of, int masked) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (size_t)M * N) return;
  int r = (int)(i / N), c = (int)(i % N);
  float v = 0.0f;
  for (int z = 0; z < splits; ++z) v += P[(size_t)z * M * N + i];
  splitk_store(v, r, c, bias, has_bias, relu, C, ldc, accumulate, relu_of, masked);
}

// Split-K in one launch: each block writes its slice's partial to P[z] as
// gemm_partial does; then the tile's last block to finish adds the tile's
// partials in order z = 0, 1, … and applies splitk_sum's epilogue. "Last"
// is decided by a ticket per output tile (tickets[tile], counted with
// atomicAdd after a __threadfence that makes the block's partial visible
// to the whole GPU, then read from L2, __ldcg, past the SM's own cache),
// and that block puts the ticket back to 0 for the next GEMM or the
// graph's next replay. The sum's order does not depend on which block is
// last, so C is the same bits as gemm_partial + splitk_sum, one launch
// fewer per split GEMM.
template <bool TF32>
__device__ __forceinline__ void splitk_tile(const float* A, long long rsa, long long csa, const float* B,
                                            long long rsb, long long csb, float* P, unsigned* tickets, int M, int N,
                                            int K, int kchunk, int splits, const float* bias, int has_bias, int relu,
                                            float* C, int ldc, int accumulate, const float* relu_of, int masked) {
  __shared__ int last;
  partial_tile<TF32>(A, rsa, csa, B, rsb, csb, P, M, N, K, kchunk);
  unsigned tile_id = blockIdx.y * gridDim.x + blockIdx.x;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    last = atomicAdd(&tickets[tile_id], 1u) == (unsigned)splits - 1;
    // The acquire side: the other blocks' partials are read after the
    // ticket that says they are all written.
    __threadfence();
  }
  __syncthreads();
  if (!last) return;
  for_tile(M, N, [&](int r, int c, int, int) {
    size_t i = (size_t)r * N + c;
    float v = 0.0f;
    for (int z = 0; z < splits; ++z) v += __ldcg(P + (size_t)z * M * N + i);
    splitk_store(v, r, c, bias, has_bias, relu, C, ldc, accumulate, relu_of, masked);
  });
  if (threadIdx.x == 0) tickets[tile_id] = 0u;
}
extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    gemm_splitk(const float* A, long long rsa, long long csa, const float* B, long long rsb, long long csb, float* P,
                unsigned* tickets, int M, int N, int K, int kchunk, int splits, const float* bias, int has_bias,
                int relu, float* C, int ldc, int accumulate, const float* relu_of, int masked) {
  splitk_tile<false>(A, rsa, csa, B, rsb, csb, P, tickets, M, N, K, kchunk, splits, bias, has_bias, relu, C, ldc,
                     accumulate, relu_of, masked);
}
extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    gemm_splitk_tf32(const float* A, long long rsa, long long csa, const float* B, long long rsb, long long csb,
                     float* P, unsigned* tickets, int M, int N, int K, int kchunk, int splits, const float* bias,
                     int has_bias, int relu, float* C, int ldc, int accumulate, const float* relu_of, int masked) {
  splitk_tile<true>(A, rsa, csa, B, rsb, csb, P, tickets, M, N, K, kchunk, splits, bias, has_bias, relu, C, ldc,
                    accumulate, relu_of, masked);
}

// out[c] = Σ_r dy[r, c] (+ out[c] when accumulate). A block sums 32
// columns, a lane per column so that each row's 32 values are one coalesced
// load; warp w adds rows w, w + 8, w + 16, … and the 8 warps' sums are then
// added in warp order, so the result does not depend on timing. (One
// thread walking all 500 rows of a column was a chain of 500 loads.)
#define CS_WARPS (IWTVAE_COL_SUM_THREADS / 32)
static_assert(IWTVAE_COL_SUM_THREADS % 32 == 0, "col_sum's block is whole warps");
extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    col_sum(const float* dy, float* out, int rows, int cols, int accumulate) {
  __shared__ float part[CS_WARPS][32];
  int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int c = blockIdx.x * 32 + lane;
  float s = 0.0f;
  if (c < cols) {
#pragma unroll 8
    for (int r = warp; r < rows; r += CS_WARPS) s += dy[(size_t)r * cols + c];
  }
  part[warp][lane] = s;
  __syncthreads();
  if (warp == 0 && c < cols) {
    float v = 0.0f;
    for (int w = 0; w < CS_WARPS; ++w) v += part[w][lane];
    out[c] = accumulate ? out[c] + v : v;
  }
}

// Tensor-core forward for the evaluator's decoder layers (wmma_tile.cuh; TF32
// or BF16 inputs, fp32 sums): Y[M,N] = act(X[M,K] · Wᵀ + b) with W padded to
// Wp [Np, Kp]. A block owns LT_ROWS = 64 rows and every column; the product
// goes through shared memory for the bias and ReLU. Shared memory:
// 64·Np·4 + 64·Kp·(4 or 2) bytes (128 KB for 256 → 256 in TF32).
#define LT_ROWS IWTVAE_LT_ROWS
#define LT_ROW_TILES (LT_ROWS / 16)
#define LT_WARPS IWTVAE_LT_WARPS
static_assert(LT_ROWS % 16 == 0, "LT_ROWS is whole 16-row tiles");

template <bool BF16>
__device__ __forceinline__ void linear_tc(const float* X, const void* Wp, const float* b, float* Y, int M, int N,
                                          int K, int Np, int Kp, int relu) {
  IWTVAE_DYNAMIC_SHARED(unsigned char, smem_raw, 128);
  int r0 = blockIdx.x * LT_ROWS;
  float* cs = stage_and_multiply<BF16, LT_ROW_TILES, LT_WARPS>(smem_raw, X, r0, M, K, Kp, Wp, Np);  // [LT_ROWS][Np]
  for (int t = threadIdx.x; t < LT_ROWS * N; t += blockDim.x) {
    int s = t / N, c = t % N;
    if (r0 + s >= M) break;  // rows are in order: every later t is past M too
    float v = cs[s * Np + c] + b[c];
    Y[(size_t)(r0 + s) * N + c] = relu ? fmaxf(v, 0.0f) : v;
  }
}

extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    linear_fwd_tf32(const float* X, const float* Wp, const float* b, float* Y, int M, int N, int K, int Np, int Kp,
                    int relu) {
  linear_tc<false>(X, Wp, b, Y, M, N, K, Np, Kp, relu);
}

extern "C" __global__ void __launch_bounds__(IWTVAE_MAX_THREADS)
    linear_fwd_bf16(const float* X, const __nv_bfloat16* Wp, const float* b, float* Y, int M, int N, int K, int Np,
                    int Kp, int relu) {
  linear_tc<true>(X, Wp, b, Y, M, N, K, Np, Kp, relu);
}
