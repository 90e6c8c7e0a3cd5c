#pragma once
/// The CPU backend's persistent worker threads. Work is split into static contiguous ranges of
/// independent outputs; threads never share a reduction, so results do not depend on the count.

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace afd::kernels::cpu::detail {

/// A small pool: the calling thread runs range 0, workers 1..n-1 run the others. Workers block on
/// a condition variable between jobs (no spinning: the machines we share are small).
class thread_pool {
 public:
  explicit thread_pool(int threads);
  ~thread_pool();
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  /// Calls fn(begin, end) on disjoint contiguous ranges covering [0, count), at most one range per
  /// thread; returns when all are done. If another thread is using the pool (several engines in one
  /// process), the caller runs the whole range itself: same results, no waiting.
  void parallel_for(std::int64_t count, const std::function<void(std::int64_t, std::int64_t)>& fn);

 private:
  void worker_loop(int index);

  std::vector<std::thread> workers_;
  std::mutex busy_;  // held by the caller of a parallel_for for its whole duration
  std::mutex mutex_;
  std::condition_variable start_cv_;
  std::condition_variable done_cv_;
  const std::function<void(std::int64_t, std::int64_t)>* job_ = nullptr;
  std::int64_t count_ = 0;
  int ranges_ = 0;
  int pending_ = 0;
  std::uint64_t generation_ = 0;
  bool stop_ = false;
};

/// The process-wide pool used by the kernels (created on first use, resized by set_num_threads).
thread_pool& pool();

/// Splits [0, count) over the process-wide pool.
void parallel_for(std::int64_t count, const std::function<void(std::int64_t, std::int64_t)>& fn);

}  // namespace afd::kernels::cpu::detail
