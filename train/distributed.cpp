// Data-parallel training over MPI (see distributed.h). Every collective is non-blocking and polled, so that a
// wait can time out or notice mpirun's SIGTERM instead of blocking forever on a process that is gone.
#include "train/distributed.h"

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <thread>

#include "autograd/threads.h"

#ifdef LCDKIT_HAVE_MPI
#define OMPI_SKIP_MPICXX 1  // the C API only (OpenMPI would pull in its deprecated C++ bindings)
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace lcd {

namespace {

Communicator g_world;

const char* launcher_size() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"})
    if (const char* s = std::getenv(v)) return s;
  return nullptr;
}

#ifdef LCDKIT_HAVE_MPI
using Clock = std::chrono::steady_clock;

// How long a wait goes on after SIGINT/SIGTERM before it gives up: short, because mpirun sends SIGTERM when a
// process has ended and SIGKILL soon after, and rank 0 must save the last good state and say so in between.
constexpr double kStopGraceSeconds = 0.2;
constexpr int64_t kChunk = int64_t{1} << 30;  // elements per MPI call (counts are ints)

// The kinds of error that cross between processes, so that every process throws the same kind.
enum ErrorKind : int64_t { kOther = 0, kUsage, kNonFinite, kPeerLost, kOutOfMemory, kInternal };

ErrorKind describe(const std::exception_ptr& failure, std::string* text) {
  try {
    std::rethrow_exception(failure);
  } catch (const UsageError& e) {
    *text = e.what();
    return kUsage;
  } catch (const NonFiniteError& e) {
    *text = e.what();
    return kNonFinite;
  } catch (const PeerLostError& e) {
    *text = e.what();
    return kPeerLost;
  } catch (const Error& e) {
    *text = e.what();
    return kOther;
  } catch (const std::bad_alloc&) {
    *text = "out of memory (the inputs or settings ask for more memory than this machine has)";
    return kOutOfMemory;
  } catch (const std::exception& e) {
    *text = std::string("internal error, please report: ") + e.what();
    return kInternal;
  } catch (...) {
    *text = "internal error, please report: an unknown exception";
    return kInternal;
  }
}

[[noreturn]] void throw_as(int64_t kind, const std::string& text) {
  switch (kind) {
    case kUsage: throw UsageError(text);
    case kNonFinite: throw NonFiniteError(text);
    case kPeerLost: throw PeerLostError(text);
    default: throw Error(text);
  }
}

// Threads per process when the config and OMP_NUM_THREADS leave it open: the cores this process may run on
// (mpirun binds each process to its own by default), at most the machine's cores shared by its processes.
int threads_per_process(int local_size) {
  cpu_set_t set;
  const int allowed = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
  const int machine = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, std::min(allowed, machine / std::max(1, local_size)));
}
#endif

}  // namespace

Communicator& world() { return g_world; }

bool mpi_available() {
#ifdef LCDKIT_HAVE_MPI
  return true;
#else
  return false;
#endif
}

#ifdef LCDKIT_HAVE_MPI

void Communicator::wait(void* request, const char* what) {
  auto* r = static_cast<MPI_Request*>(request);
  const auto start = Clock::now();
  Clock::time_point signalled{};
  for (long polls = 0;; ++polls) {
    int done = 0;
    const int rc = MPI_Test(r, &done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) {
      lost_peer_ = true;
      char text[MPI_MAX_ERROR_STRING];
      int length = 0;
      MPI_Error_string(rc, text, &length);
      throw PeerLostError(std::string("the other processes are gone (") + std::string(text, length) + ") while " + what);
    }
    if (done) {
      waited_s_ += std::chrono::duration<double>(Clock::now() - start).count();
      return;
    }
    if (polls > 1000) std::this_thread::sleep_for(std::chrono::microseconds(100));  // spin first: most waits are short
    const auto now = Clock::now();
    if (stop_flag_ && *stop_flag_ && signalled == Clock::time_point{}) signalled = now;
    const bool gave_up_after_signal = signalled != Clock::time_point{} &&
                                      std::chrono::duration<double>(now - signalled).count() > kStopGraceSeconds;
    if (gave_up_after_signal || std::chrono::duration<double>(now - start).count() > timeout_s_) {
      lost_peer_ = true;
      char limit[32];
      std::snprintf(limit, sizeof limit, "%g", timeout_s_);
      throw PeerLostError(gave_up_after_signal
                              ? std::string("stopped by a signal while ") + what + " (mpirun stops every process so "
                                "when one of them has ended)"
                              : "no answer from the other processes for " + std::string(limit) + " s (--mpi-timeout) while " + what);
    }
  }
}

void Communicator::sum(double* x, int64_t n, const char* what) {
  if (size_ == 1) return;
  for (int64_t at = 0; at < n; at += kChunk) {
    MPI_Request r;
    MPI_Iallreduce(MPI_IN_PLACE, x + at, static_cast<int>(std::min(kChunk, n - at)), MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD, &r);
    wait(&r, what);
  }
}

void Communicator::broadcast(void* data, int64_t bytes, int root) {
  for (int64_t at = 0; at < bytes; at += kChunk) {
    MPI_Request r;
    MPI_Ibcast(static_cast<char*>(data) + at, static_cast<int>(std::min(kChunk, bytes - at)), MPI_BYTE, root, MPI_COMM_WORLD, &r);
    wait(&r, "passing on an error");
  }
}

int Communicator::agree(int stop, std::exception_ptr failure) {
  if (size_ == 1) {
    if (failure) std::rethrow_exception(failure);
    return stop;
  }
  // The largest stop wish, and the lowest failing rank as size − rank (0: none).
  int mine[2] = {stop, failure ? size_ - rank_ : 0}, all[2];
  MPI_Request r;
  MPI_Iallreduce(mine, all, 2, MPI_INT, MPI_MAX, MPI_COMM_WORLD, &r);
  wait(&r, "waiting for the others to end a stage");
  if (all[1] == 0) return all[0];
  const int failed = size_ - all[1];
  std::string text;
  int64_t header[2] = {rank_ == failed ? describe(failure, &text) : kOther, static_cast<int64_t>(text.size())};
  broadcast(header, sizeof header, failed);
  text.resize(static_cast<size_t>(header[1]));
  broadcast(text.data(), header[1], failed);
  if (rank_ == failed) std::rethrow_exception(failure);
  throw_as(header[0], "rank " + std::to_string(failed) + ": " + text);
}

void Communicator::check_identical(uint64_t value, const std::string& what) {
  if (size_ == 1) return;
  uint64_t mine[2] = {value, ~value}, all[2];  // max(v) and max(¬v) = ¬min(v)
  MPI_Request r;
  MPI_Iallreduce(mine, all, 2, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD, &r);
  wait(&r, "comparing the processes' states");
  if (all[0] != ~all[1])
    throw TrainingError(what + " differs between the processes (a bug, or inputs that differ between machines)");
}

MpiSession::MpiSession(int* argc, char*** argv) {
  if (!launcher_size()) return;  // not started by mpirun: one process, MPI untouched
  int provided = 0;
  MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);  // only the main thread calls MPI
  started_ = true;
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);  // a lost peer becomes PeerLostError, not an abort
  MPI_Comm_rank(MPI_COMM_WORLD, &g_world.rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &g_world.size_);
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_world.rank_, MPI_INFO_NULL, &node);
  MPI_Comm_size(node, &g_world.local_size_);
  MPI_Comm_free(&node);
  if (g_world.local_size_ > 1 && !std::getenv("OMP_NUM_THREADS")) set_num_threads(threads_per_process(g_world.local_size_));
}

int MpiSession::finish(int exit_code) {
  if (started_ && !finished_) {
    finished_ = true;
    if (g_world.lost_peer_) MPI_Abort(MPI_COMM_WORLD, exit_code ? exit_code : 1);  // a finalise would wait for it
    MPI_Finalize();
  }
  return exit_code;
}

#else  // a build without MPI: one process

void Communicator::wait(void*, const char*) {}
void Communicator::sum(double*, int64_t, const char*) {}
void Communicator::broadcast(void*, int64_t, int) {}
int Communicator::agree(int stop, std::exception_ptr failure) {
  if (failure) std::rethrow_exception(failure);
  return stop;
}
void Communicator::check_identical(uint64_t, const std::string&) {}

MpiSession::MpiSession(int*, char***) {
  const char* n = launcher_size();
  if (n && std::atoi(n) > 1)
    throw UsageError(std::string("started by mpirun with ") + n + " processes, but this build has no MPI (install "
                     "libopenmpi-dev and rebuild: scripts/setup.sh; LCDKIT_MPI)");
}
int MpiSession::finish(int exit_code) { return exit_code; }

#endif

MpiSession::~MpiSession() { finish(0); }

}  // namespace lcd
