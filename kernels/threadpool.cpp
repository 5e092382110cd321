// threadpool.cpp: persistent workers; between parallel_for calls they spin briefly, then sleep
// on a condition variable (threadpool.h).
#include "kernels/threadpool.h"

#include <chrono>

namespace reparq {

namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ volatile("yield");
#endif
}

// Polls done() for up to `micros`; true if it became true.
template <class Done>
bool spin_until(Done done, int micros) {
  const auto limit = std::chrono::steady_clock::now() + std::chrono::microseconds(micros);
  for (int i = 0;; ++i) {
    if (done()) return true;
    cpu_relax();
    if ((i & 63) == 63 && std::chrono::steady_clock::now() >= limit) return done();
  }
}

}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  const int extra = n_threads > 1 ? n_threads - 1 : 0;
  workers_.reserve(static_cast<size_t>(extra));
  for (int i = 0; i < extra; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true, std::memory_order_release);
  }
  start_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::drain() {
  for (;;) {
    const int i = next_.fetch_add(1, std::memory_order_relaxed);
    if (i >= n_tasks_) return;
    call_(ctx_, i);
  }
}

void ThreadPool::run(int n_tasks, TaskFn call, void* ctx) {
  if (n_tasks <= 0) return;
  if (workers_.empty() || n_tasks == 1) {
    for (int i = 0; i < n_tasks; ++i) call(ctx, i);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    call_ = call;
    ctx_ = ctx;
    n_tasks_ = n_tasks;
    next_.store(0, std::memory_order_relaxed);
    busy_workers_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);  // publishes the fields above
  }
  start_cv_.notify_all();
  drain();
  if (spin_until([this] { return busy_workers_.load(std::memory_order_acquire) == 0; }, kSpinMicros)) return;
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [this] { return busy_workers_.load(std::memory_order_acquire) == 0; });
}

void ThreadPool::worker_loop() {
  std::uint64_t seen = 0;
  for (;;) {
    auto ready = [&] { return stop_.load(std::memory_order_acquire) || generation_.load(std::memory_order_acquire) != seen; };
    if (!spin_until(ready, kSpinMicros)) {
      std::unique_lock<std::mutex> lock(mu_);
      start_cv_.wait(lock, ready);
    }
    if (stop_.load(std::memory_order_acquire)) return;
    seen = generation_.load(std::memory_order_acquire);
    drain();
    if (busy_workers_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      { std::lock_guard<std::mutex> lock(mu_); }  // a caller inside done_cv_.wait sees the 0
      done_cv_.notify_one();
    }
  }
}

}  // namespace reparq
