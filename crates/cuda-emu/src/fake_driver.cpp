// A stand-in libcuda.so: the part of the CUDA driver API that cudarc calls
// for iwtvae, implemented over the kernel emulator. A process that finds it
// first on LD_LIBRARY_PATH runs its `--device cuda` path through cudarc's
// real calls (context, stream, module loading, allocations and copies,
// function attributes, cuLaunchKernel's parameter marshalling, stream
// capture and graph replay), with each kernel run by the emulator by name.
// The emulated backend (`--device emulated`) bypasses cudarc altogether;
// this is what exercises it without a GPU.
//
// It mimics the driver where a real one refuses: a zero-byte allocation, a
// copy or synchronization on a capturing stream, a launch past the
// function's dynamic shared-memory limit, a pointer argument into no live
// allocation, a module image that is not a fatbin, an unknown handle. Each
// refusal prints one line on stderr naming the call. Writes past either end
// of an allocation are caught in guard zones after every launch, and fresh
// allocations hold NaN bytes, as the emulator's buffers do (cuMemAlloc does
// not zero either). Everything runs synchronously on the calling thread, so
// stream order holds trivially; timing and concurrency are not modelled.
//
// Faults on request, to test how the host code fails on a GPU:
// IWTVAE_FAKE_CUDA_MEMORY=BYTES makes allocations past that total fail with
// CUDA_ERROR_OUT_OF_MEMORY; IWTVAE_FAKE_CUDA_FAIL_AT=N makes the N-th kernel
// run (direct or replayed, counted from 1) fail with
// CUDA_ERROR_ILLEGAL_ADDRESS, which, as on a GPU, is sticky: every later call
// that touches the context returns it too.
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "emu_registry.h"

namespace emu {
const Entry* find_kernel(const char* name);
}
extern "C" int emu_launch(const char* name, const unsigned* grid, const unsigned* block_dim, unsigned shared_bytes,
                          unsigned shared_limit, void** args, const char* kinds, char* err, size_t errlen);

#define EXPORT extern "C" __attribute__((visibility("default")))

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;

namespace {

enum : CUresult {
  SUCCESS = 0,
  INVALID_VALUE = 1,
  OUT_OF_MEMORY = 2,
  NOT_INITIALIZED = 3,
  NO_DEVICE = 100,
  INVALID_DEVICE = 101,
  INVALID_IMAGE = 200,
  INVALID_CONTEXT = 201,
  INVALID_HANDLE = 400,
  NOT_FOUND = 500,
  ILLEGAL_ADDRESS = 700,
  LAUNCH_FAILED = 719,
  NOT_SUPPORTED = 801,
  CAPTURE_UNSUPPORTED = 900,
  CAPTURE_UNMATCHED = 903,
};

constexpr size_t kGuard = 256;
constexpr unsigned char kGuardByte = 0xa5;
constexpr unsigned kDefaultShared = 48 * 1024;
constexpr unsigned kMaxOptInShared = 227 * 1024;

struct Context {
  int device;
};
struct Module {
  int unused;
};
struct Function {
  const emu::Entry* entry;
  unsigned shared_limit;
};
struct Launch {
  Function* f;
  unsigned grid[3], block[3], shared;
  std::vector<uint64_t> params;  // each parameter's value, widened
};
struct Graph {
  std::vector<Launch> launches;
};
struct Stream {
  bool capturing = false;
  Graph* capture = nullptr;
};
struct Allocation {
  unsigned char* base;  // guard, then size bytes, then guard
  size_t size;
};

std::recursive_mutex lock;
bool initialized = false;
Context* current = nullptr;
Context primary[8];
std::map<CUdeviceptr, Allocation> allocations;
std::vector<void*> handles;  // every live handle, to refuse stale ones
size_t bytes_in_use = 0;
unsigned long long kernels_run = 0;
CUresult sticky = SUCCESS;  // a fault that has corrupted the context

unsigned long long env_number(const char* name) {
  const char* v = getenv(name);
  return v ? strtoull(v, nullptr, 10) : 0;
}

// What the process did, printed at exit when IWTVAE_FAKE_CUDA_TRACE is set
// (so a test can tell a captured graph's replays from direct launches).
struct Counts {
  unsigned long long direct, captured, graph_launches, replayed, allocations;
} counts;

// (Also run when a probe's dlopen/dlclose unloads the library before its
// real use: that instance did nothing, and says nothing.)
__attribute__((destructor)) void report_counts() {
  if (getenv("IWTVAE_FAKE_CUDA_TRACE") && (counts.direct || counts.graph_launches || counts.allocations))
    fprintf(stderr,
            "fake libcuda: %llu direct launches, %llu captured, %llu graph launches replaying %llu kernels, %llu "
            "allocations\n",
            counts.direct, counts.captured, counts.graph_launches, counts.replayed, counts.allocations);
}

int device_count() {
  const char* v = getenv("IWTVAE_FAKE_CUDA_DEVICES");
  int n = v ? atoi(v) : 1;
  return n < 0 ? 0 : (n > 8 ? 8 : n);
}

CUresult refuse(CUresult code, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "fake libcuda: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  return code;
}

template <typename T>
T* live(void* h) {
  for (void* x : handles)
    if (x == h) return static_cast<T*>(h);
  return nullptr;
}

void forget(void* h) {
  for (auto& x : handles)
    if (x == h) {
      x = handles.back();
      handles.pop_back();
      return;
    }
}

// Ends the life of handle `h` of type T (CUDA_ERROR_INVALID_HANDLE when it
// is not a live one).
template <typename T>
CUresult destroy(void* h) {
  T* x = live<T>(h);
  if (!x) return INVALID_HANDLE;
  forget(h);
  delete x;
  return SUCCESS;
}

// The allocation holding [p, p + n), if any.
const Allocation* holding(CUdeviceptr p, size_t n) {
  auto it = allocations.upper_bound(p);
  if (it == allocations.begin()) return nullptr;
  --it;
  return p + n <= it->first + it->second.size ? &it->second : nullptr;
}

bool guards_intact(const Allocation& a) {
  for (size_t i = 0; i < kGuard; ++i)
    if (a.base[i] != kGuardByte || a.base[kGuard + a.size + i] != kGuardByte) return false;
  return true;
}

size_t param_bytes(char kind) { return kind == 'p' || kind == 'l' ? 8 : 4; }

CUresult run(const Launch& l) {
  const emu::Entry* e = l.f->entry;
  static const unsigned long long fail_at = env_number("IWTVAE_FAKE_CUDA_FAIL_AT");
  if (++kernels_run == fail_at) {
    sticky = ILLEGAL_ADDRESS;
    return refuse(sticky, "cuLaunchKernel %s: the fault injected at kernel run %llu (IWTVAE_FAKE_CUDA_FAIL_AT)",
                  e->name, fail_at);
  }
  size_t n = strlen(e->kinds);
  std::vector<void*> args(n);
  for (size_t i = 0; i < n; ++i) {
    if (e->kinds[i] == 'p' && l.params[i] != 0 && !holding(l.params[i], 0))
      return refuse(ILLEGAL_ADDRESS, "cuLaunchKernel %s: pointer argument %zu (0x%llx) is in no live allocation",
                    e->name, i, (unsigned long long)l.params[i]);
    args[i] = const_cast<uint64_t*>(&l.params[i]);
  }
  char err[512] = {0};
  if (emu_launch(e->name, l.grid, l.block, l.shared, l.f->shared_limit, args.data(), e->kinds, err, sizeof err) != 0)
    return refuse(LAUNCH_FAILED, "cuLaunchKernel: %s", err);
  for (auto& [p, a] : allocations)
    if (!guards_intact(a))
      return refuse(ILLEGAL_ADDRESS, "cuLaunchKernel %s: a write past either end of the %zu-byte allocation at 0x%llx",
                    e->name, a.size, (unsigned long long)p);
  return SUCCESS;
}

}  // namespace

#define GUARD std::lock_guard<std::recursive_mutex> guard(lock)
#define NEED_INIT \
  if (!initialized) return NOT_INITIALIZED
#define STICKY \
  if (sticky) return sticky

EXPORT CUresult cuInit(unsigned flags) {
  GUARD;
  if (flags != 0) return INVALID_VALUE;
  initialized = true;
  return SUCCESS;
}

EXPORT CUresult cuGetErrorString(CUresult e, const char** s) {
  switch (e) {
    case SUCCESS: *s = "no error"; break;
    case INVALID_VALUE: *s = "invalid argument"; break;
    case OUT_OF_MEMORY: *s = "out of memory"; break;
    case NOT_INITIALIZED: *s = "initialization error"; break;
    case NO_DEVICE: *s = "no CUDA-capable device is detected"; break;
    case INVALID_DEVICE: *s = "invalid device ordinal"; break;
    case INVALID_IMAGE: *s = "device kernel image is invalid"; break;
    case INVALID_CONTEXT: *s = "invalid device context"; break;
    case INVALID_HANDLE: *s = "invalid resource handle"; break;
    case NOT_FOUND: *s = "named symbol not found"; break;
    case ILLEGAL_ADDRESS: *s = "an illegal memory access was encountered"; break;
    case LAUNCH_FAILED: *s = "unspecified launch failure"; break;
    case NOT_SUPPORTED: *s = "operation not supported"; break;
    case CAPTURE_UNSUPPORTED: *s = "operation not permitted when stream is capturing"; break;
    case CAPTURE_UNMATCHED: *s = "capture was not initiated in this stream"; break;
    default: *s = nullptr; return INVALID_VALUE;
  }
  return SUCCESS;
}

EXPORT CUresult cuGetErrorName(CUresult e, const char** s) {
  const char* text;
  if (cuGetErrorString(e, &text) != SUCCESS) return INVALID_VALUE;
  *s = "CUDA_ERROR (fake libcuda)";
  return SUCCESS;
}

EXPORT CUresult cuDriverGetVersion(int* v) {
  *v = 13000;
  return SUCCESS;
}

EXPORT CUresult cuDeviceGetCount(int* n) {
  GUARD;
  NEED_INIT;
  *n = device_count();
  return SUCCESS;
}

EXPORT CUresult cuDeviceGet(CUdevice* d, int ordinal) {
  GUARD;
  NEED_INIT;
  if (ordinal < 0 || ordinal >= device_count()) return INVALID_DEVICE;
  *d = ordinal;
  return SUCCESS;
}

EXPORT CUresult cuDeviceGetName(char* name, int len, CUdevice d) {
  GUARD;
  if (d < 0 || d >= device_count()) return INVALID_DEVICE;
  snprintf(name, (size_t)len, "fake libcuda %d (kernel emulator)", d);
  return SUCCESS;
}

EXPORT CUresult cuDeviceGetAttribute(int* v, int attribute, CUdevice d) {
  GUARD;
  if (d < 0 || d >= device_count()) return INVALID_DEVICE;
  switch (attribute) {
    case 1: *v = 1024; break;               // max threads per block
    case 8: *v = 48 * 1024; break;          // shared memory per block
    case 10: *v = 32; break;                // warp size
    case 16: *v = 132; break;               // multiprocessors (an H100 SXM)
    case 75: *v = 9; break;                 // compute capability
    case 76: *v = 0; break;
    case 97: *v = kMaxOptInShared; break;   // opt-in shared memory per block
    case 115: *v = 1; break;                // memory pools (cuMemAllocAsync)
    default: return refuse(NOT_SUPPORTED, "cuDeviceGetAttribute: attribute %d is not modelled", attribute);
  }
  return SUCCESS;
}

EXPORT CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice d) {
  if (d < 0 || d >= device_count()) return INVALID_DEVICE;
  *bytes = (size_t)80 << 30;
  return SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxRetain(void** ctx, CUdevice d) {
  GUARD;
  NEED_INIT;
  if (d < 0 || d >= device_count()) return INVALID_DEVICE;
  primary[d].device = d;
  *ctx = &primary[d];
  return SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) {
  return d < 0 || d >= device_count() ? INVALID_DEVICE : SUCCESS;
}

EXPORT CUresult cuCtxSetCurrent(void* ctx) {
  GUARD;
  current = static_cast<Context*>(ctx);
  return SUCCESS;
}

EXPORT CUresult cuCtxGetCurrent(void** ctx) {
  GUARD;
  *ctx = current;
  return SUCCESS;
}

EXPORT CUresult cuCtxSynchronize() { return sticky; }

EXPORT CUresult cuCtxGetStreamPriorityRange(int* least, int* greatest) {
  *least = 0;
  *greatest = -5;
  return SUCCESS;
}

EXPORT CUresult cuStreamCreate(void** s, unsigned) {
  GUARD;
  if (!current) return INVALID_CONTEXT;
  *s = new Stream;
  handles.push_back(*s);
  return SUCCESS;
}

EXPORT CUresult cuStreamCreateWithPriority(void** s, unsigned flags, int) { return cuStreamCreate(s, flags); }

EXPORT CUresult cuStreamDestroy_v2(void* s) {
  GUARD;
  if (Stream* st = live<Stream>(s)) delete st->capture;
  return destroy<Stream>(s);
}

// A null stream is the legacy default stream (never captured here).
static CUresult stream_of(void* s, Stream** out, const char* call) {
  if (!s) {
    *out = nullptr;
    return SUCCESS;
  }
  *out = live<Stream>(s);
  return *out ? SUCCESS : refuse(INVALID_HANDLE, "%s: unknown stream", call);
}

static CUresult not_capturing(void* s, const char* call) {
  Stream* st;
  if (CUresult r = stream_of(s, &st, call)) return r;
  if (st && st->capturing)
    return refuse(CAPTURE_UNSUPPORTED, "%s on a capturing stream (a capture holds kernel launches only)", call);
  return SUCCESS;
}

EXPORT CUresult cuStreamSynchronize(void* s) {
  GUARD;
  STICKY;
  return not_capturing(s, "cuStreamSynchronize");
}

EXPORT CUresult cuStreamWaitEvent(void*, void*, unsigned) {
  GUARD;
  return refuse(NOT_SUPPORTED, "cuStreamWaitEvent: events are not modelled (iwtvae disables cudarc's event tracking)");
}

EXPORT CUresult cuMemAllocAsync(CUdeviceptr* p, size_t bytes, void* s) {
  GUARD;
  STICKY;
  if (CUresult r = not_capturing(s, "cuMemAllocAsync")) return r;
  if (bytes == 0) return refuse(INVALID_VALUE, "cuMemAllocAsync of 0 bytes (a real driver refuses it)");
  static const unsigned long long limit = env_number("IWTVAE_FAKE_CUDA_MEMORY");
  if (limit && bytes_in_use + bytes > limit)
    return refuse(OUT_OF_MEMORY, "cuMemAllocAsync of %zu bytes with %zu of %llu in use (IWTVAE_FAKE_CUDA_MEMORY)",
                  bytes, bytes_in_use, limit);
  // 256-byte aligned as cudaMalloc's, with a guard zone on each side.
  unsigned char* base = static_cast<unsigned char*>(aligned_alloc(256, kGuard + ((bytes + 255) / 256) * 256 + kGuard));
  if (!base) return OUT_OF_MEMORY;
  memset(base, kGuardByte, kGuard);
  memset(base + kGuard, 0xff, bytes);
  memset(base + kGuard + bytes, kGuardByte, kGuard);
  *p = (CUdeviceptr)(base + kGuard);
  allocations[*p] = Allocation{base, bytes};
  bytes_in_use += bytes;
  counts.allocations++;
  return SUCCESS;
}

EXPORT CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t bytes) { return cuMemAllocAsync(p, bytes, nullptr); }

EXPORT CUresult cuMemFreeAsync(CUdeviceptr p, void* s) {
  GUARD;
  STICKY;
  if (CUresult r = not_capturing(s, "cuMemFreeAsync")) return r;
  auto it = allocations.find(p);
  if (it == allocations.end()) return refuse(INVALID_VALUE, "cuMemFreeAsync of 0x%llx, not an allocation", p);
  if (!guards_intact(it->second))
    return refuse(ILLEGAL_ADDRESS, "cuMemFreeAsync: the allocation at 0x%llx was written past its end", p);
  free(it->second.base);
  bytes_in_use -= it->second.size;
  allocations.erase(it);
  return SUCCESS;
}

EXPORT CUresult cuMemFree_v2(CUdeviceptr p) { return cuMemFreeAsync(p, nullptr); }

EXPORT CUresult cuMemsetD8Async(CUdeviceptr p, unsigned char v, size_t n, void* s) {
  GUARD;
  STICKY;
  if (CUresult r = not_capturing(s, "cuMemsetD8Async")) return r;
  if (n == 0) return SUCCESS;
  if (!holding(p, n)) return refuse(INVALID_VALUE, "cuMemsetD8Async of %zu bytes at 0x%llx: outside any allocation", n, p);
  memset((void*)p, v, n);
  return SUCCESS;
}

EXPORT CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t n, void* s) {
  GUARD;
  STICKY;
  if (CUresult r = not_capturing(s, "cuMemcpyHtoDAsync")) return r;
  if (n == 0) return SUCCESS;
  if (!holding(dst, n))
    return refuse(INVALID_VALUE, "cuMemcpyHtoDAsync of %zu bytes to 0x%llx: outside any allocation", n, dst);
  memcpy((void*)dst, src, n);
  return SUCCESS;
}

EXPORT CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t n, void* s) {
  GUARD;
  STICKY;
  if (CUresult r = not_capturing(s, "cuMemcpyDtoHAsync")) return r;
  if (n == 0) return SUCCESS;
  if (!holding(src, n))
    return refuse(INVALID_VALUE, "cuMemcpyDtoHAsync of %zu bytes from 0x%llx: outside any allocation", n, src);
  memcpy(dst, (const void*)src, n);
  return SUCCESS;
}

EXPORT CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, void* s) {
  GUARD;
  STICKY;
  if (CUresult r = not_capturing(s, "cuMemcpyDtoDAsync")) return r;
  if (n == 0) return SUCCESS;
  if (!holding(src, n) || !holding(dst, n))
    return refuse(INVALID_VALUE, "cuMemcpyDtoDAsync of %zu bytes: outside any allocation", n);
  memmove((void*)dst, (const void*)src, n);
  return SUCCESS;
}

EXPORT CUresult cuModuleLoadData(void** m, const void* image) {
  GUARD;
  STICKY;
  if (!current) return INVALID_CONTEXT;
  // A fatbin (what build.rs embeds) starts with its magic, a version and a
  // header size, then the size of what follows.
  uint32_t magic;
  uint64_t size;
  memcpy(&magic, image, 4);
  memcpy(&size, static_cast<const char*>(image) + 8, 8);
  if (magic != 0xBA55ED50u || size == 0)
    return refuse(INVALID_IMAGE, "cuModuleLoadData: the image is not a fatbin (magic 0x%08x)", magic);
  *m = new Module;
  handles.push_back(*m);
  return SUCCESS;
}

EXPORT CUresult cuModuleUnload(void* m) {
  GUARD;
  return destroy<Module>(m);
}

EXPORT CUresult cuModuleGetFunction(void** f, void* m, const char* name) {
  GUARD;
  if (!live<Module>(m)) return refuse(INVALID_HANDLE, "cuModuleGetFunction %s: unknown module", name);
  const emu::Entry* e = emu::find_kernel(name);
  if (!e) return refuse(NOT_FOUND, "cuModuleGetFunction: no kernel %s in kernels/*.cu", name);
  *f = new Function{e, kDefaultShared};
  handles.push_back(*f);
  return SUCCESS;
}

EXPORT CUresult cuFuncSetAttribute(void* f, int attribute, int value) {
  GUARD;
  Function* fn = live<Function>(f);
  if (!fn) return INVALID_HANDLE;
  if (attribute != 8) return refuse(NOT_SUPPORTED, "cuFuncSetAttribute: attribute %d is not modelled", attribute);
  if (value < 0 || (unsigned)value > kMaxOptInShared)
    return refuse(INVALID_VALUE, "cuFuncSetAttribute %s: %d bytes of dynamic shared memory (at most %u)",
                  fn->entry->name, value, kMaxOptInShared);
  fn->shared_limit = (unsigned)value;
  return SUCCESS;
}

EXPORT CUresult cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                               unsigned shared, void* s, void** params, void** extra) {
  GUARD;
  STICKY;
  Function* fn = live<Function>(f);
  if (!fn) return refuse(INVALID_HANDLE, "cuLaunchKernel: unknown function");
  if (extra) return refuse(NOT_SUPPORTED, "cuLaunchKernel: `extra` parameters are not modelled");
  Stream* st;
  if (CUresult r = stream_of(s, &st, "cuLaunchKernel")) return r;
  const char* kinds = fn->entry->kinds;
  size_t n = strlen(kinds);
  if (n > 0 && !params) return refuse(INVALID_VALUE, "cuLaunchKernel %s: no parameters given", fn->entry->name);
  // The driver copies each parameter's value at the call (a captured launch
  // keeps them), so the caller's storage may die right after.
  Launch l{fn, {gx, gy, gz}, {bx, by, bz}, shared, std::vector<uint64_t>(n, 0)};
  for (size_t i = 0; i < n; ++i) memcpy(&l.params[i], params[i], param_bytes(kinds[i]));
  if (st && st->capturing) {
    st->capture->launches.push_back(std::move(l));
    counts.captured++;
    return SUCCESS;
  }
  counts.direct++;
  return run(l);
}

EXPORT CUresult cuStreamBeginCapture_v2(void* s, int) {
  GUARD;
  STICKY;
  Stream* st = live<Stream>(s);
  if (!st) return refuse(INVALID_HANDLE, "cuStreamBeginCapture: unknown stream (the legacy stream cannot be captured)");
  if (st->capturing) return refuse(INVALID_VALUE, "cuStreamBeginCapture: the stream is capturing already");
  st->capturing = true;
  st->capture = new Graph;
  return SUCCESS;
}

EXPORT CUresult cuStreamIsCapturing(void* s, int* status) {
  GUARD;
  Stream* st = live<Stream>(s);
  *status = st && st->capturing ? 1 : 0;
  return SUCCESS;
}

EXPORT CUresult cuStreamEndCapture(void* s, void** graph) {
  GUARD;
  STICKY;
  Stream* st = live<Stream>(s);
  if (!st || !st->capturing) return refuse(CAPTURE_UNMATCHED, "cuStreamEndCapture without cuStreamBeginCapture");
  st->capturing = false;
  *graph = st->capture;
  handles.push_back(st->capture);
  st->capture = nullptr;
  return SUCCESS;
}

EXPORT CUresult cuGraphInstantiateWithFlags(void** exec, void* graph, unsigned long long) {
  GUARD;
  Graph* g = live<Graph>(graph);
  if (!g) return INVALID_HANDLE;
  *exec = new Graph(*g);
  handles.push_back(*exec);
  return SUCCESS;
}

EXPORT CUresult cuGraphUpload(void* exec, void* s) {
  GUARD;
  STICKY;
  if (!live<Graph>(exec)) return INVALID_HANDLE;
  return not_capturing(s, "cuGraphUpload");
}

EXPORT CUresult cuGraphLaunch(void* exec, void* s) {
  GUARD;
  STICKY;
  Graph* g = live<Graph>(exec);
  if (!g) return refuse(INVALID_HANDLE, "cuGraphLaunch: unknown graph");
  if (CUresult r = not_capturing(s, "cuGraphLaunch")) return r;
  counts.graph_launches++;
  counts.replayed += g->launches.size();
  for (const Launch& l : g->launches)
    if (CUresult r = run(l)) return r;
  return SUCCESS;
}

EXPORT CUresult cuGraphExecDestroy(void* exec) {
  GUARD;
  return destroy<Graph>(exec);
}

EXPORT CUresult cuGraphDestroy(void* graph) { return cuGraphExecDestroy(graph); }
