// The one thread knob (--threads): sets OpenMP's and Eigen's thread count together.
#pragma once
#include <exception>
#include <mutex>

namespace lcd {

void set_num_threads(int threads);  // threads ≤ 0 keeps the OpenMP default
int num_threads();

// The thread count set for a scope and the one before restored at its end, also when an assertion leaves early
// (tests, like PrecisionGuard).
class ThreadCountGuard {
 public:
  explicit ThreadCountGuard(int threads) : saved_(num_threads()) { set_num_threads(threads); }
  ~ThreadCountGuard() { set_num_threads(saved_); }
  ThreadCountGuard(const ThreadCountGuard&) = delete;
  ThreadCountGuard& operator=(const ThreadCountGuard&) = delete;

 private:
  int saved_;
};

// The first exception thrown by the iterations of an OpenMP loop (none may leave the parallel region): each
// iteration's catch (...) calls capture(), and rethrow() throws it after the loop.
class FirstException {
 public:
  void capture() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!error_) error_ = std::current_exception();
  }
  void rethrow() const {
    if (error_) std::rethrow_exception(error_);
  }

 private:
  std::mutex mutex_;
  std::exception_ptr error_;
};

}  // namespace lcd
