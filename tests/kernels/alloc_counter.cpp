// alloc_counter.cpp: replaces the global operator new of the test_kernels binary with one that
// counts its calls (and forwards to malloc), so tests can assert that a hot path allocates
// nothing. Kept in its own file: no new-expression here for GCC to pair with free().
#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

namespace {
std::atomic<long> g_new_calls{0};
}  // namespace

long test_new_calls() { return g_new_calls.load(std::memory_order_relaxed); }

void* operator new(std::size_t n) {
  g_new_calls.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
