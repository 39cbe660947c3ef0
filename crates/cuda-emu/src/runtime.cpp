// The emulator's scheduler: a launch runs its blocks one after another; a
// block runs one fiber (ucontext) per CUDA thread on the calling OS thread.
// A fiber runs until it reaches a barrier (__syncthreads, or a warp shuffle,
// which is a barrier of its warp) or returns; a barrier releases when every
// thread of its scope that has not returned has arrived, as on sm_70+. When
// no fiber can move, the launch fails with a deadlock report instead of
// hanging: a barrier that not all threads reach is a bug on the GPU too.
//
// Launches hold one process-wide lock: __shared__ arrays are statics, and a
// block's fibers are the only code that may touch them while it runs.
#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "emu_registry.h"

// Under AddressSanitizer (scripts/emu-asan.sh), memory a kernel must not
// touch is marked unaddressable, so any out-of-bounds access, read or
// write, stops at the kernel's source line.
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define EMU_ADDRESSABLE(p, n, yes) ((yes) ? ASAN_UNPOISON_MEMORY_REGION(p, n) : ASAN_POISON_MEMORY_REGION(p, n))
#define EMU_SANITIZED 1
#else
#define EMU_ADDRESSABLE(p, n, yes) ((void)(p), (void)(n), (void)(yes))
#define EMU_SANITIZED 0
#endif

uint3 threadIdx;
uint3 blockIdx;
dim3 blockDim;
dim3 gridDim;

namespace emu {
const Entry* find_kernel(const char* name);

namespace {

constexpr size_t kStackBytes = 256 * 1024;
// The most dynamic shared memory a kernel can opt into on sm_90 (227 KiB).
constexpr size_t kMaxDynamicShared = 232448;

enum class State { Runnable, AtBlockBarrier, AtWarpBarrier, Done };

struct Fiber {
  ucontext_t ctx;
  State state;
  uint3 tid;
  unsigned linear;
};

struct Warp {
  int size = 0, live = 0, arrived = 0;
  unsigned gen = 0;
  uint32_t slots[2][32];
};

struct Block {
  const Entry* entry = nullptr;
  void** args = nullptr;
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  ucontext_t scheduler;
  int current = -1, live = 0, at_barrier = 0;
  std::string error;
};

std::mutex launch_lock;
Block block;
alignas(256) unsigned char dynamic_shared_memory[kMaxDynamicShared];
unsigned char* stacks = nullptr;
size_t stack_fibers = 0;

Fiber& me() { return block.fibers[block.current]; }

void yield() { swapcontext(&me().ctx, &block.scheduler); }

void fail(const std::string& why) {
  if (block.error.empty()) block.error = why;
  me().state = State::Done;
  setcontext(&block.scheduler);
}

void release_block_barrier() {
  if (block.at_barrier == 0 || block.at_barrier != block.live) return;
  for (auto& f : block.fibers)
    if (f.state == State::AtBlockBarrier) f.state = State::Runnable;
  block.at_barrier = 0;
}

void release_warp_barrier(int w) {
  Warp& warp = block.warps[w];
  if (warp.arrived == 0 || warp.arrived != warp.live) return;
  for (int l = 0; l < warp.size; ++l) {
    Fiber& f = block.fibers[w * 32 + l];
    if (f.state == State::AtWarpBarrier) f.state = State::Runnable;
  }
  warp.arrived = 0;
  warp.gen++;
}

void fiber_main() {
  block.entry->invoke(block.entry->fn, block.args);
  Fiber& f = me();
  f.state = State::Done;
  block.live--;
  block.warps[f.linear / 32].live--;
  release_block_barrier();
  release_warp_barrier(f.linear / 32);
  // uc_link returns to the scheduler.
}

// Odd-numbered blocks resume their fibers in reverse order: a read of
// another thread's write without a barrier between them then sees the
// poison (or a stale value) whichever of the two threads comes first.
bool run_block(unsigned nthreads, bool reverse, unsigned shared_bytes) {
  block.fibers.assign(nthreads, Fiber{});
  block.warps.assign((nthreads + 31) / 32, Warp{});
  for (unsigned w = 0; w < block.warps.size(); ++w) {
    block.warps[w].size = (int)std::min(32u, nthreads - 32 * w);
    block.warps[w].live = block.warps[w].size;
  }
  block.live = (int)nthreads;
  block.at_barrier = 0;
  for (unsigned t = 0; t < nthreads; ++t) {
    Fiber& f = block.fibers[t];
    f.linear = t;
    f.tid = {t % blockDim.x, (t / blockDim.x) % blockDim.y, t / (blockDim.x * blockDim.y)};
    f.state = State::Runnable;
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = stacks + (size_t)t * kStackBytes;
    f.ctx.uc_stack.ss_size = kStackBytes;
    f.ctx.uc_link = &block.scheduler;
    makecontext(&f.ctx, fiber_main, 0);
  }
  // Uninitialised shared memory reads as NaN, so a missing barrier shows
  // (past the launch's bytes it stays poisoned from the launch's start).
  memset(dynamic_shared_memory, 0xff, shared_bytes);
  for (;;) {
    bool moved = false, all_done = true;
    for (unsigned q = 0; q < nthreads; ++q) {
      unsigned t = reverse ? nthreads - 1 - q : q;
      Fiber& f = block.fibers[t];
      if (f.state != State::Runnable) {
        all_done &= f.state == State::Done;
        continue;
      }
      block.current = (int)t;
      threadIdx = f.tid;
      swapcontext(&block.scheduler, &f.ctx);
      if (!block.error.empty()) return false;
      moved = true;
      all_done &= f.state == State::Done;
    }
    if (all_done) return true;
    if (!moved) {
      int at_block = 0, at_warp = 0;
      for (auto& f : block.fibers) {
        at_block += f.state == State::AtBlockBarrier;
        at_warp += f.state == State::AtWarpBarrier;
      }
      block.error = "deadlock in block (" + std::to_string(blockIdx.x) + ", " + std::to_string(blockIdx.y) + ", " +
                    std::to_string(blockIdx.z) + "): " + std::to_string(at_block) + " threads wait at __syncthreads, " +
                    std::to_string(at_warp) + " at a warp shuffle, " + std::to_string(block.live) +
                    " have not returned (a barrier that not every thread reaches)";
      return false;
    }
  }
}

}  // namespace

void syncthreads() {
  me().state = State::AtBlockBarrier;
  block.at_barrier++;
  release_block_barrier();
  yield();
}

uint32_t shfl_xor(uint32_t mask, uint32_t bits, int lane_mask) {
  Fiber& f = me();
  Warp& warp = block.warps[f.linear / 32];
  int lane = (int)(f.linear % 32);
  if (mask != 0xffffffffu) fail("a shuffle with a partial lane mask (not emulated)");
  if (warp.size != 32 || warp.live != 32)
    fail("a full-mask shuffle in warp " + std::to_string(f.linear / 32) + " with only " + std::to_string(warp.live) +
         " of 32 lanes active");
  unsigned buffer = warp.gen & 1;
  warp.slots[buffer][lane] = bits;
  warp.arrived++;
  f.state = State::AtWarpBarrier;
  release_warp_barrier(f.linear / 32);
  yield();
  return warp.slots[buffer][(lane ^ lane_mask) & 31];
}

unsigned char* dynamic_shared() { return dynamic_shared_memory; }

void trap(const char* why) {
  fail(why);
  __builtin_unreachable();
}

}  // namespace emu

namespace {
// A kernel whose block reads what another block of the same launch writes
// races on a GPU, which runs the blocks in any order at once; here it gives
// a different result in one of the two orders. CUDA_EMU_REVERSE_BLOCKS=1
// starts a process reversed.
std::atomic<bool> reverse_blocks{[] {
  const char* v = getenv("CUDA_EMU_REVERSE_BLOCKS");
  return v && strcmp(v, "1") == 0;
}()};
}  // namespace

extern "C" void emu_set_reverse_blocks(int on) { reverse_blocks = on != 0; }

extern "C" int emu_address_sanitized() { return EMU_SANITIZED; }

extern "C" void emu_set_addressable(void* p, size_t n, int yes) { EMU_ADDRESSABLE(p, n, yes); }

extern "C" int emu_launch(const char* name, const unsigned* grid, const unsigned* block_dim, unsigned shared_bytes,
                          unsigned shared_limit, void** args, const char* kinds, char* err, size_t errlen) {
  using namespace emu;
  std::lock_guard<std::mutex> guard(launch_lock);
  auto report = [&](const std::string& why) {
    snprintf(err, errlen, "%s: %s", name, why.c_str());
    return 1;
  };
  const Entry* entry = find_kernel(name);
  if (!entry) return report("no such kernel in kernels/*.cu");
  if (strcmp(kinds, entry->kinds) != 0)
    return report(std::string("argument kinds ") + kinds + " do not match the kernel's parameters " + entry->kinds +
                  " (p pointer, i int, u unsigned, l long long, f float)");
  unsigned nthreads = block_dim[0] * block_dim[1] * block_dim[2];
  if (nthreads == 0 || nthreads > 1024) return report("block of " + std::to_string(nthreads) + " threads (1..1024)");
  if (nthreads > entry->max_threads)
    return report("block of " + std::to_string(nthreads) + " threads, more than the kernel's __launch_bounds__ (" +
                  std::to_string(entry->max_threads) + "): a GPU refuses the launch");
  if (grid[0] == 0 || grid[1] == 0 || grid[2] == 0 || grid[1] > 65535 || grid[2] > 65535)
    return report("grid " + std::to_string(grid[0]) + "x" + std::to_string(grid[1]) + "x" + std::to_string(grid[2]));
  if (shared_limit > kMaxDynamicShared) return report("a shared-memory opt-in past 227 KiB");
  if (shared_bytes > shared_limit)
    return report(std::to_string(shared_bytes) + " bytes of dynamic shared memory past the kernel's limit of " +
                  std::to_string(shared_limit) + " (48 KiB unless the launch opts in)");
  if (stack_fibers < nthreads) {
    if (stacks) munmap(stacks, stack_fibers * kStackBytes);
    void* m = mmap(nullptr, (size_t)nthreads * kStackBytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
      stacks = nullptr;
      stack_fibers = 0;
      return report("cannot map fiber stacks");
    }
    stacks = static_cast<unsigned char*>(m);
    stack_fibers = nthreads;
  }
  block = Block{};
  block.entry = entry;
  block.args = args;
  EMU_ADDRESSABLE(dynamic_shared_memory, sizeof dynamic_shared_memory, 1);
  memset(dynamic_shared_memory, 0xff, sizeof dynamic_shared_memory);
  // Past the launch's dynamic shared memory is out of bounds.
  EMU_ADDRESSABLE(dynamic_shared_memory + shared_bytes, sizeof dynamic_shared_memory - shared_bytes, 0);
  blockDim = {block_dim[0], block_dim[1], block_dim[2]};
  gridDim = {grid[0], grid[1], grid[2]};
  // Blocks run one after another, first to last, or last to first (see
  // emu_set_reverse_blocks).
  size_t nblocks = (size_t)grid[0] * grid[1] * grid[2];
  const bool reverse = reverse_blocks;
  for (size_t q = 0; q < nblocks; ++q) {
    size_t b = reverse ? nblocks - 1 - q : q;
    unsigned x = (unsigned)(b % grid[0]), y = (unsigned)(b / grid[0] % grid[1]), z = (unsigned)(b / grid[0] / grid[1]);
    blockIdx = {x, y, z};
    if (!run_block(nthreads, b % 2 == 1, shared_bytes)) return report(block.error);
  }
  return 0;
}
