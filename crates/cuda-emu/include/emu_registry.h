// A kernel's entry in the emulator's registry: its name, its address, an
// invoker that unpacks cuLaunchKernel-style arguments (args[i] points at the
// i-th parameter's value), the parameter kinds, which a launch must match
// (cudarc cannot check them; the emulator can), and the most threads a block
// may have (the kernel's __launch_bounds__; a GPU refuses a larger block).
#pragma once
#include <stddef.h>
#include <type_traits>
#include <utility>

namespace emu {

struct Entry {
  const char* name;
  void* fn;
  void (*invoke)(void* fn, void** args);
  const char* kinds;  // one letter per parameter: p pointer, i int, u unsigned, l long long, f float
  unsigned max_threads;
};

template <typename T>
constexpr char kind_of() {
  if constexpr (std::is_pointer_v<T>) return 'p';
  else if constexpr (std::is_same_v<T, int>) return 'i';
  else if constexpr (std::is_same_v<T, unsigned>) return 'u';
  else if constexpr (std::is_same_v<T, long long>) return 'l';
  else if constexpr (std::is_same_v<T, float>) return 'f';
  else return '?';
}

template <typename... A>
struct Kinds {
  static constexpr char str[] = {kind_of<A>()..., '\0'};
};

template <typename... A, size_t... I>
void call(void (*k)(A...), void** args, std::index_sequence<I...>) {
  k(*static_cast<std::remove_cv_t<A>*>(args[I])...);
}

template <typename... A>
void invoke(void* fn, void** args) {
  call(reinterpret_cast<void (*)(A...)>(fn), args, std::index_sequence_for<A...>{});
}

template <typename... A>
Entry entry(const char* name, void (*k)(A...), unsigned max_threads) {
  return Entry{name, reinterpret_cast<void*>(k), &invoke<A...>, Kinds<A...>::str, max_threads};
}

}  // namespace emu
