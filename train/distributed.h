// Data-parallel training over MPI (DESIGN.md §10, MPI): this process's place in the run and the few collectives
// the trainer needs. `mpirun -np N lcd-train …` runs N processes that each compute their rows of every global
// batch; the gradients are summed over the processes, so clipping, AdamW and the EMA run identically on every
// one. Without mpirun (or in a build without MPI) the run is one process and every collective returns at once,
// so nothing changes there.
//
// Failures: every stage that may fail on one process alone (loading, a step, rank 0's writes) ends in agree(),
// where the processes learn of each other's errors; the lowest failing rank's error is then thrown on every
// process (rank 0 prints it, the others print nothing). A process that dies or hangs is noticed by the wait in
// each collective: mpirun stops the others with SIGTERM, or the wait times out, and the process throws
// PeerLostError; MPI is then aborted at exit instead of finalised.
#pragma once
#include <atomic>
#include <cstdint>
#include <exception>
#include <string>
#include <utility>

#include "train/training_errors.h"

namespace lcd {

class Communicator {
 public:
  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_size() const { return local_size_; }  // processes on this machine
  bool is_root() const { return rank_ == 0; }
  bool lost_peer() const { return lost_peer_; }  // a collective failed: MPI must be aborted, not finalised

  // In place: the elementwise sum over the processes, the same bits on every process (what: for errors).
  void sum(double* x, int64_t n, const char* what);
  // Ends a stage on every process. `stop`: this process's wish to stop after it (0 none, larger wins); returns
  // the largest. When any process failed (failure set), throws the lowest failing rank's error on every process:
  // the error itself there, an error of the same kind, "rank R: …", elsewhere.
  int agree(int stop, std::exception_ptr failure);
  // Throws on every process when `value` differs between them (what: named in the error).
  void check_identical(uint64_t value, const std::string& what);

  // Seconds spent in collectives (waiting for the others included) since the last call.
  double take_wait_seconds() { return std::exchange(waited_s_, 0.0); }

  // How long a collective waits for the others before the run ends (seconds).
  void set_timeout(double seconds) { timeout_s_ = seconds; }
  // A flag set by the signal handler: a wait that sees it gives the others a grace period, then gives up.
  void set_stop_flag(const std::atomic<bool>* flag) { stop_flag_ = flag; }

 private:
  friend class MpiSession;
  void wait(void* request, const char* what);
  void broadcast(void* data, int64_t bytes, int root);

  int rank_ = 0, size_ = 1, local_size_ = 1;
  bool lost_peer_ = false;
  double timeout_s_ = 600, waited_s_ = 0;
  const std::atomic<bool>* stop_flag_ = nullptr;
};

// The process's communicator: one process unless an MpiSession started MPI.
Communicator& world();

// Runs f on this process, then agree(): an error of f is thrown on every process (see Communicator::agree).
template <typename F> void on_every_process(F&& f) {
  std::exception_ptr failure;
  try {
    f();
  } catch (...) {
    failure = std::current_exception();
  }
  world().agree(0, failure);
}

// MPI for the lifetime of a tool's main(): started when mpirun launched this process (its environment says so),
// so a plain run never touches MPI; finish() then finalises it, or aborts it after a lost peer.
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv);
  ~MpiSession();
  int finish(int exit_code);  // returns exit_code (MPI_Abort does not return)
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

 private:
  bool started_ = false, finished_ = false;
};
// Whether this build can run multi-process (LCDKIT_MPI).
bool mpi_available();

}  // namespace lcd
