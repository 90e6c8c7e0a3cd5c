#include "kernels/cpu/thread_pool.hpp"

#include <algorithm>
#include <memory>

#include "kernels/cpu/cpu_kernels.hpp"

namespace afd::kernels::cpu::detail {

thread_pool::thread_pool(int threads) {
  for (int i = 1; i < std::max(1, threads); ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

thread_pool::~thread_pool() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  start_cv_.notify_all();
  for (auto& w : workers_) w.join();
}

namespace {
// Range i of `ranges` equal parts of [0, count).
std::pair<std::int64_t, std::int64_t> range_of(std::int64_t count, int ranges, int i) {
  const std::int64_t base = count / ranges, extra = count % ranges;
  const std::int64_t begin = i * base + std::min<std::int64_t>(i, extra);
  return {begin, begin + base + (i < extra ? 1 : 0)};
}
}  // namespace

void thread_pool::worker_loop(int index) {
  std::uint64_t seen = 0;
  for (;;) {
    const std::function<void(std::int64_t, std::int64_t)>* job;
    std::int64_t count;
    int ranges;
    {
      std::unique_lock lock(mutex_);
      start_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      job = job_;
      count = count_;
      ranges = ranges_;
    }
    if (index < ranges) {
      const auto [b, e] = range_of(count, ranges, index);
      if (b < e) (*job)(b, e);
    }
    {
      std::lock_guard lock(mutex_);
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }
}

void thread_pool::parallel_for(std::int64_t count, const std::function<void(std::int64_t, std::int64_t)>& fn) {
  if (count <= 0) return;
  const int ranges = static_cast<int>(std::min<std::int64_t>(size(), count));
  std::unique_lock busy(busy_, std::try_to_lock);
  if (ranges <= 1 || !busy.owns_lock()) {
    fn(0, count);
    return;
  }
  {
    std::lock_guard lock(mutex_);
    job_ = &fn;
    count_ = count;
    ranges_ = ranges;
    pending_ = static_cast<int>(workers_.size());
    ++generation_;
  }
  start_cv_.notify_all();
  const auto [b, e] = range_of(count, ranges, 0);
  fn(b, e);
  std::unique_lock lock(mutex_);
  done_cv_.wait(lock, [&] { return pending_ == 0; });
  job_ = nullptr;
}

namespace {
std::mutex pool_mutex;
std::unique_ptr<thread_pool> the_pool;
int default_threads() { return std::max(1, static_cast<int>(std::thread::hardware_concurrency())); }
}  // namespace

thread_pool& pool() {
  std::lock_guard lock(pool_mutex);
  if (!the_pool) the_pool = std::make_unique<thread_pool>(default_threads());
  return *the_pool;
}

void parallel_for(std::int64_t count, const std::function<void(std::int64_t, std::int64_t)>& fn) {
  pool().parallel_for(count, fn);
}

}  // namespace afd::kernels::cpu::detail

namespace afd::kernels::cpu {

void set_num_threads(int n) {
  std::lock_guard lock(detail::pool_mutex);
  detail::the_pool.reset();  // joins the old workers
  detail::the_pool = std::make_unique<detail::thread_pool>(std::max(1, n));
}

int num_threads() { return detail::pool().size(); }

}  // namespace afd::kernels::cpu
