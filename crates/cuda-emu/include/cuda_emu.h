// The CUDA device dialect as plain C++ for the CPU emulator (see ../src/lib.rs).
// Force-included before every kernels/*.cu: qualifiers become C++ (a
// __shared__ array is a static, shared by the fibers of the one block that
// runs at a time), the built-in indices are globals the scheduler sets
// before it resumes a fiber, and barriers and shuffles are scheduler calls.
// Only what kernels/ uses is here; anything else fails to compile, loudly.
#pragma once
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define IWTVAE_EMU 1
#define __global__
#define __launch_bounds__(...)
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __align__(n) alignas(n)

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
};
struct uint2 {
  uint32_t x, y;
};
struct uint4 {
  uint32_t x, y, z, w;
};
struct float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};

inline uint2 make_uint2(uint32_t x, uint32_t y) { return {x, y}; }
inline uint4 make_uint4(uint32_t x, uint32_t y, uint32_t z, uint32_t w) { return {x, y, z, w}; }
inline float2 make_float2(float x, float y) { return {x, y}; }

// Set by the scheduler for the fiber it is about to resume.
extern uint3 threadIdx;
extern uint3 blockIdx;
extern dim3 blockDim;
extern dim3 gridDim;

namespace emu {
void syncthreads();
uint32_t shfl_xor(uint32_t mask, uint32_t bits, int lane_mask);
// The launch's dynamic shared memory (poisoned with NaN bytes per block).
unsigned char* dynamic_shared();
// Ends the launch with an error (what a GPU would fault on, or do wrong).
[[noreturn]] void trap(const char* why);
}  // namespace emu

inline void __syncthreads() { emu::syncthreads(); }

inline float __int_as_float(int v) {
  float f;
  memcpy(&f, &v, 4);
  return f;
}
inline int __float_as_int(float f) {
  int v;
  memcpy(&v, &f, 4);
  return v;
}
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((uint64_t)a * b) >> 32); }

inline float __shfl_xor_sync(unsigned mask, float v, int lane_mask) {
  return __int_as_float((int)emu::shfl_xor(mask, (uint32_t)__float_as_int(v), lane_mask));
}
inline int __shfl_xor_sync(unsigned mask, int v, int lane_mask) {
  return (int)emu::shfl_xor(mask, (uint32_t)v, lane_mask);
}

// One fiber runs at a time, so a read-modify-write is atomic.
inline float atomicAdd(float* p, float v) {
  float old = *p;
  *p = old + v;
  return old;
}
inline int atomicAdd(int* p, int v) {
  int old = *p;
  *p = old + v;
  return old;
}
inline unsigned atomicAdd(unsigned* p, unsigned v) {
  unsigned old = *p;
  *p = old + v;
  return old;
}
// Blocks run one after another and share the host's memory: an earlier
// block's writes are visible to a later one without a fence or a cache
// bypass.
inline void __threadfence() {}
inline float __ldcg(const float* p) { return *p; }

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline void sincospif(float x, float* s, float* c) {
  const double pi = 3.14159265358979323846;
  *s = (float)sin(pi * (double)x);
  *c = (float)cos(pi * (double)x);
}

// extern __shared__ arrays have no C++ spelling; the kernels declare them
// through this macro (kernels/common.cuh).
#define IWTVAE_DYNAMIC_SHARED(type, name, align) type* name = reinterpret_cast<type*>(emu::dynamic_shared())
