// Where the kernels' parallel work runs: on a host's pool when one was given
// (qk_set_parallel_runner; the Python layer gives torch's OpenMP team), else on the library's own
// persistent pool. Callers pass the thread count per call (the Python layer passes
// torch.get_num_threads()), so qkernels never oversubscribes, and links no OpenMP runtime itself.
#pragma once

#include <cstdint>
#include <functional>

namespace qk {

// Runs fn(task) for every task in [0, n_tasks) on up to n_threads threads, the caller included,
// and returns when all are done. If a task throws, the remaining tasks are skipped and the first
// exception is rethrown on the calling thread. Concurrent callers are safe: while one
// caller's job occupies the pool, another caller runs its tasks serially on its own thread,
// which gives identical results because every task computes a fixed block of the output.
void parallel_for(int64_t n_tasks, int n_threads, const std::function<void(int64_t)>& fn);

// A host's thread pool (qk_set_parallel_runner in qkernels.h), or nullptr for the library's own.
using ParallelRunner = void (*)(void (*work)(void*), void* arg, int n_threads, void* ctx);
void set_parallel_runner(ParallelRunner runner, void* ctx);

// Default thread count used by the C ABI (qk_set_num_threads); hardware threads initially.
int default_num_threads();
void set_default_num_threads(int n);

}  // namespace qk
