// WMMA for the CPU emulator. A warp's fragment is spread over its 32 lanes
// on a GPU; here every lane holds the whole tile (x[r·cols + c]), loads and
// stores it whole and multiplies it whole, so all lanes agree, which is
// what the warp-collective *_sync calls guarantee. TF32 inputs are cut to
// their 10-bit mantissa in mma_sync, as the tensor cores read them;
// products are summed in fp32 in k order (the hardware's order is
// unspecified, so tests of these paths carry a TF32/BF16 tolerance anyway).
#pragma once
#include <stdio.h>

#include <type_traits>

#include "cuda_bf16.h"

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
}  // namespace precision
enum layout_t { mem_row_major, mem_col_major };

template <typename T>
struct storage {
  using type = T;
};
template <>
struct storage<precision::tf32> {
  using type = float;
};

template <typename Use, int M, int N, int K>
struct shape {
  static constexpr int rows = 0, cols = 0;
};
template <int M, int N, int K>
struct shape<matrix_a, M, N, K> {
  static constexpr int rows = M, cols = K;
};
template <int M, int N, int K>
struct shape<matrix_b, M, N, K> {
  static constexpr int rows = K, cols = N;
};
template <int M, int N, int K>
struct shape<accumulator, M, N, K> {
  static constexpr int rows = M, cols = N;
};

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  using element_type = typename storage<T>::type;
  static constexpr int rows = shape<Use, M, N, K>::rows, cols = shape<Use, M, N, K>::cols;
  static constexpr int num_elements = rows * cols;
  element_type x[num_elements];
};

inline float to_float(float v) { return v; }
inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

// cvt.rna.tf32.f32: round to nearest, ties away from zero, to 10 mantissa bits.
inline float __float_to_tf32(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;
  memcpy(&f, &u, 4);
  return f;
}

inline float tensor_core_input(float v, bool tf32) {
  if (!tf32) return v;
  uint32_t u;
  memcpy(&u, &v, 4);
  u &= 0xffffe000u;
  memcpy(&v, &u, 4);
  return v;
}

// What the hardware requires of a tile's memory (CUDA C++ Programming Guide,
// "Warp Matrix Functions"): a 256-bit aligned pointer and a leading dimension
// that is a multiple of 16 bytes. A GPU faults or reads the wrong elements
// otherwise; the host would not notice, so the emulator refuses.
inline void check_tile_memory(const void* p, unsigned ld, size_t element_bytes, const char* call) {
  char why[160];  // emu::trap copies it
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0)
    snprintf(why, sizeof why, "wmma::%s: pointer %p is not 32-byte aligned", call, p);
  else if ((size_t)ld * element_bytes % 16 != 0)
    snprintf(why, sizeof why, "wmma::%s: leading dimension %u is not a multiple of 16 bytes", call, ld);
  else
    return;
  emu::trap(why);
}

template <typename Use, int M, int N, int K, typename T, typename Layout, typename P>
inline void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const P* p, unsigned ld) {
  using F = fragment<Use, M, N, K, T, Layout>;
  check_tile_memory(p, ld, sizeof(P), "load_matrix_sync");
  constexpr bool col = std::is_same_v<Layout, col_major>;
  for (int r = 0; r < F::rows; ++r)
    for (int c = 0; c < F::cols; ++c) f.x[r * F::cols + c] = col ? p[(size_t)c * ld + r] : p[(size_t)r * ld + c];
}

template <int M, int N, int K, typename T>
inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, T>& f, unsigned ld, layout_t layout) {
  check_tile_memory(p, ld, sizeof(float), "store_matrix_sync");
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c)
      (layout == mem_row_major ? p[(size_t)r * ld + c] : p[(size_t)c * ld + r]) = f.x[r * N + c];
}

template <typename Use, int M, int N, int K, typename T, typename Layout>
inline void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, typename storage<T>::type v) {
  for (int i = 0; i < f.num_elements; ++i) f.x[i] = v;
}

template <int M, int N, int K, typename TA, typename LA, typename LB>
inline void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
                     const fragment<matrix_b, M, N, K, TA, LB>& b, const fragment<accumulator, M, N, K, float>& c) {
  constexpr bool tf32 = std::is_same_v<TA, precision::tf32>;
  float out[M * N];
  for (int r = 0; r < M; ++r)
    for (int n = 0; n < N; ++n) {
      float s = 0.0f;
      for (int k = 0; k < K; ++k)
        s += tensor_core_input(to_float(a.x[r * K + k]), tf32) * tensor_core_input(to_float(b.x[k * N + n]), tf32);
      out[r * N + n] = c.x[r * N + n] + s;
    }
  for (int i = 0; i < M * N; ++i) d.x[i] = out[i];
}

}  // namespace wmma
}  // namespace nvcuda
