// threadpool.h: a tiny persistent pool of std::threads with one blocking parallel_for.
//
// The calling thread takes part in the work, so ThreadPool(2) starts one extra thread.
// Tasks are handed out by an atomic counter; which thread runs which task is not fixed, so
// callers must make every task's result independent of the thread that runs it (the GEMM
// does: each output element is written by exactly one task with the same arithmetic).
// parallel_for allocates nothing: the callable is passed by address through a trampoline.
// Waiting is spin-then-sleep: a worker that has just finished polls for the next parallel_for
// for up to kSpinMicros before it blocks on the condition variable, and the caller polls for
// the workers' completion likewise. The executor issues ~10 short parallel_fors per block; a
// condition-variable wake-up costs tens of microseconds on a VM, which made two threads barely
// faster than one at batch 1 (docs/PERF.md, session 8).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace reparq {

class ThreadPool {
 public:
  // n_threads >= 1 counts the calling thread.
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs fn(i) for i in [0, n_tasks) and returns when all are done. fn must not throw.
  // Not reentrant: do not call parallel_for from inside a task or from two threads at once.
  template <class F>
  void parallel_for(int n_tasks, F&& fn) {
    using Fn = std::remove_reference_t<F>;
    run(n_tasks, [](void* ctx, int i) { (*static_cast<Fn*>(ctx))(i); },
        const_cast<void*>(static_cast<const void*>(&fn)));
  }

 private:
  using TaskFn = void (*)(void*, int);
  void run(int n_tasks, TaskFn call, void* ctx);
  void worker_loop();
  void drain();

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_;
  std::condition_variable done_cv_;
  static constexpr int kSpinMicros = 200;
  // Bumped per parallel_for (written under mu_, read by spinning workers without it).
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<int> busy_workers_{0};  // workers still inside the current generation
  std::atomic<bool> stop_{false};
  TaskFn call_ = nullptr;
  void* ctx_ = nullptr;
  int n_tasks_ = 0;
  std::atomic<int> next_{0};
};

}  // namespace reparq
