#include "threadpool.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace qk {
namespace {

class ThreadPool {
 public:
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
  }

  // Returns false without running anything when another caller holds the pool.
  bool try_run(int64_t n_tasks, int n_threads, const std::function<void(int64_t)>& fn) {
    std::unique_lock<std::mutex> job_lock(job_mu_, std::try_to_lock);
    if (!job_lock.owns_lock()) return false;
    const int helpers = static_cast<int>(std::min<int64_t>(n_threads, n_tasks)) - 1;
    {
      std::lock_guard<std::mutex> lk(mu_);
      while (static_cast<int>(workers_.size()) < helpers)
        workers_.emplace_back([this, id = static_cast<int>(workers_.size())] { loop(id); });
      fn_ = &fn;
      n_tasks_ = n_tasks;
      next_.store(0);
      active_helpers_ = helpers;
      pending_ = helpers;
      ++generation_;
    }
    wake_.notify_all();
    drain();
    std::unique_lock<std::mutex> lk(mu_);
    done_.wait(lk, [this] { return pending_ == 0; });
    fn_ = nullptr;
    // A task that threw on any thread (std::bad_alloc, say) surfaces on the caller, whose C ABI
    // wrapper turns it into a status; on a worker it would otherwise call std::terminate.
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
    return true;
  }

 private:
  void drain() {
    for (int64_t t; (t = next_.fetch_add(1)) < n_tasks_;) {
      try {
        (*fn_)(t);
      } catch (...) {
        std::lock_guard<std::mutex> lk(mu_);
        if (!error_) error_ = std::current_exception();
        next_.store(n_tasks_);  // skip the remaining tasks
      }
    }
  }

  void loop(int id) {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(mu_);
        wake_.wait(lk, [&] { return stop_ || (generation_ != seen && id < active_helpers_); });
        if (stop_) return;
        seen = generation_;
      }
      drain();
      std::lock_guard<std::mutex> lk(mu_);
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::mutex job_mu_;  // one job at a time
  std::mutex mu_;      // guards the fields below
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  const std::function<void(int64_t)>* fn_ = nullptr;
  int64_t n_tasks_ = 0;
  std::atomic<int64_t> next_{0};
  int active_helpers_ = 0;
  int pending_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;  // the first exception a task threw in the current job
};

ThreadPool& pool() {
  static ThreadPool p;
  return p;
}

// One job on a host's pool: every thread the runner starts drains the same task counter, so any
// number of them (one included) computes the same blocks.
struct HostJob {
  HostJob(const std::function<void(int64_t)>* f, int64_t n) : fn(f), n_tasks(n) {}
  const std::function<void(int64_t)>* fn;
  int64_t n_tasks;
  std::atomic<int64_t> next{0};
  std::mutex mu;
  std::exception_ptr error;

  static void drain(void* p) {
    auto* job = static_cast<HostJob*>(p);
    for (int64_t t; (t = job->next.fetch_add(1)) < job->n_tasks;) {
      try {
        (*job->fn)(t);
      } catch (...) {  // never across the host's (C) frames: rethrown on the caller below
        std::lock_guard<std::mutex> lk(job->mu);
        if (!job->error) job->error = std::current_exception();
        job->next.store(job->n_tasks);
      }
    }
  }
};

struct Runner {
  ParallelRunner fn = nullptr;
  void* ctx = nullptr;
};
std::mutex g_runner_mu;  // guards g_runner: each call copies it (fn and ctx always belong together)
Runner g_runner;

Runner current_runner() {
  std::lock_guard<std::mutex> lk(g_runner_mu);
  return g_runner;
}

std::atomic<int> g_default_threads{
    static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))};

// The pool's workers do not survive fork(): a child (a DataLoader worker, say) runs every call
// on its calling thread instead of waiting for threads that no longer exist.
const pid_t g_owner_pid = getpid();

}  // namespace

void parallel_for(int64_t n_tasks, int n_threads, const std::function<void(int64_t)>& fn) {
  if (n_tasks <= 0) return;
  if (n_threads > 1 && n_tasks > 1 && getpid() == g_owner_pid) {
    if (const Runner r = current_runner(); r.fn != nullptr) {
      HostJob job(&fn, n_tasks);
      r.fn(&HostJob::drain, &job, static_cast<int>(std::min<int64_t>(n_threads, n_tasks)), r.ctx);
      HostJob::drain(&job);  // whatever the runner left undone (it may run fewer threads)
      if (job.error) std::rethrow_exception(job.error);
      return;
    }
    if (pool().try_run(n_tasks, n_threads, fn)) return;
  }
  for (int64_t t = 0; t < n_tasks; ++t) fn(t);
}

void set_parallel_runner(ParallelRunner runner, void* ctx) {
  std::lock_guard<std::mutex> lk(g_runner_mu);
  g_runner = Runner{runner, ctx};
}

int default_num_threads() { return g_default_threads.load(); }
void set_default_num_threads(int n) { g_default_threads.store(n); }

}  // namespace qk
