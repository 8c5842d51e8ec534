// Memory, matmul and threading helpers for the time loops.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <thread>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

#if defined(__linux__) && defined(__x86_64__)
// MKL's packed GEMM (a documented MKL API). libtorch_cpu exports it when torch is built with MKL; the
// weak declarations resolve to null otherwise and we fall back to at::mm_out. Packing the recurrent
// weight once and reusing it at every step saves ~20% of the per-step GEMM time at batch 32.
extern "C" {
size_t cblas_sgemm_pack_get_size(int identifier, int m, int n, int k) __attribute__((weak));
void cblas_sgemm_pack(int layout, int identifier, int trans, int m, int n, int k, float alpha,
                      const float* src, int ld, float* dest) __attribute__((weak));
void cblas_sgemm_compute(int layout, int transa, int transb, int m, int n, int k, const float* a,
                         int lda, const float* b, int ldb, float beta, float* c, int ldc)
    __attribute__((weak));
}
#define ZOO_HAVE_MKL_PACK 1
#endif

namespace zoo {

// ---- memory: on a VM every first touch of a 4 KB page costs microseconds, which at these sizes rivals
// the matmuls, so buffers are kept and reused between calls.

enum Slot { kPack0, kPack1, kSlab, kSlots };  // the per-thread scratch buffers

// A per-thread, 64-byte aligned buffer of at least n elements for `slot`, kept between calls and never
// zero-filled.
template <typename T>
T* scratch(Slot slot, size_t n) {
  struct Buffer {
    std::unique_ptr<char[]> data;
    size_t bytes = 0;
  };
  static thread_local Buffer buffers[kSlots];
  Buffer& b = buffers[slot];
  if (b.bytes < n * sizeof(T)) b.data.reset(new char[n * sizeof(T) + 63]), b.bytes = n * sizeof(T);
  const auto address = reinterpret_cast<uintptr_t>(b.data.get());
  return reinterpret_cast<T*>((address + 63) & ~uintptr_t{63});
}

// at::empty for the big per-call tensors (saved activations, gradients), recycling the memory of one
// that nothing uses any more. The pool keeps its own tensor and hands out others sharing its storage,
// so the storage's use count says whether any handed-out tensor is alive. At most kPoolSize are kept.
inline at::Tensor recycled_empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
  constexpr size_t kPoolSize = 32;
  static thread_local std::vector<at::Tensor> pool;
  auto unused = [](const at::Tensor& t) { return t.storage().use_count() == 1; };
  auto hand_out = [&](const at::Tensor& t) { return at::empty({0}, options).set_(t.storage(), 0, sizes); };
  const int64_t n = c10::multiply_integers(sizes);
  for (const at::Tensor& t : pool)
    if (t.numel() == n && t.dtype() == options.dtype() && unused(t)) return hand_out(t);
  if (pool.size() == kPoolSize) {  // make room by dropping the oldest one not in use
    const auto old = std::find_if(pool.begin(), pool.end(), unused);
    if (old == pool.end()) return at::empty(sizes, options);
    pool.erase(old);
  }
  pool.push_back(at::empty(sizes, options));
  return hand_out(pool.back());
}

// ---- matmul

// A matrix as a matmul operand, read in place: element (i, j) at p[i * ld + j], or, when `transposed`, at
// p[j * ld + i]. The second form is the transposed view of a row-major matrix, e.g. nn.LSTM's
// weight_hh.t(): MKL reads either layout, so neither needs a copy.
template <typename T>
struct Operand {
  const T* p;
  int64_t ld;
  bool transposed;
  const T* at(int64_t i, int64_t j) const { return transposed ? p + j * ld + i : p + i * ld + j; }
  Operand block(int64_t i, int64_t j) const { return {at(i, j), ld, transposed}; }  // from (i, j) on
  Operand t() const { return {p, ld, !transposed}; }
};

// c (m, n) = a (m, k) @ b (k, n) for a right operand b reused at every time step. a and c are row-major
// with the given row strides.
template <typename T>
class StepGemm {
 public:
  StepGemm(Operand<T> b, int64_t m, int64_t n, int64_t k, Slot slot) : m_(m), n_(n), k_(k) {
#ifdef ZOO_HAVE_MKL_PACK
    if (std::is_same<T, float>::value && cblas_sgemm_compute && n > 0) {
      enum { kRowMajor = 101, kNoTrans = 111, kTrans = 112, kBMatrix = 162 };
      packed_ = scratch<float>(slot, cblas_sgemm_pack_get_size(kBMatrix, m, n, k) / sizeof(float) + 1);
      cblas_sgemm_pack(kRowMajor, kBMatrix, b.transposed ? kTrans : kNoTrans, m, n, k, 1.0f,
                       reinterpret_cast<const float*>(b.p), b.ld, packed_);
      return;
    }
#endif
    const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
    b_ = b.transposed ? at::from_blob(const_cast<T*>(b.p), {n, k}, {b.ld, 1}, options).t()
                      : at::from_blob(const_cast<T*>(b.p), {k, n}, {b.ld, 1}, options);
  }

  void operator()(const T* a, int64_t lda, T* c, int64_t ldc) const {
    if (n_ == 0) return;
#ifdef ZOO_HAVE_MKL_PACK
    if (packed_) {
      enum { kRowMajor = 101, kNoTrans = 111, kPacked = 151 };
      cblas_sgemm_compute(kRowMajor, kNoTrans, kPacked, m_, n_, k_, reinterpret_cast<const float*>(a),
                          lda, packed_, n_, 0.0f, reinterpret_cast<float*>(c), ldc);
      return;
    }
#endif
    at::Tensor out = at::from_blob(c, {m_, n_}, {ldc, 1}, b_.options());
    at::mm_out(out, at::from_blob(const_cast<T*>(a), {m_, k_}, {lda, 1}, b_.options()), b_);
  }

 private:
  int64_t m_, n_, k_;
  float* packed_ = nullptr;
  at::Tensor b_;
};

// ---- threads: a team of P threads splits the hidden units, each thread owning the same slice at every
// step, so a thread's elementwise pass reads the matmul output it has just computed in its own cache.

struct Slice {
  int64_t u0, n;  // units [u0, u0 + n)
};

// The units of thread p of P: chunks of a multiple of 16 floats, so that slices do not share cache lines.
inline Slice unit_slice(int64_t h, int p, int P) {
  const int64_t chunk = ((h + P - 1) / P + 15) / 16 * 16;
  const int64_t u0 = std::min(h, p * chunk);
  return {u0, std::min(h, u0 + chunk) - u0};
}

// The team's barrier. A step takes microseconds, so a thread first spins (with the CPU's pause hint);
// after 1,000 pauses (tens of us) it yields the core instead, so that a team-mate the OS has descheduled
// (another process busy on its core) can run rather than wait out the spin of the thread waiting for it.
// With one busy process beside a 2-thread LSTM run this gave 20k tokens/s where libgomp's barrier gave 9k.
class TeamBarrier {
 public:
  explicit TeamBarrier(int size) : size_(size) {}

  void wait() {
    const int generation = generation_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) == size_ - 1) {  // the last one opens it
      arrived_.store(0, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
      return;
    }
    for (int spins = 0; generation_.load(std::memory_order_acquire) == generation; ++spins) {
      if (spins < kSpins) {
        pause();
      } else {
        std::this_thread::yield();
      }
    }
  }

 private:
  static constexpr int kSpins = 1000;
  static void pause() {
#if defined(__x86_64__) || defined(_M_X64)
    _mm_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }
  const int size_;
  alignas(64) std::atomic<int> arrived_{0};
  alignas(64) std::atomic<int> generation_{0};
};

// The barrier of the team the calling thread belongs to (null outside a team of two or more).
inline TeamBarrier*& current_barrier() {
  thread_local TeamBarrier* barrier = nullptr;
  return barrier;
}

// Runs body(p, P) on a team of P threads (at most one per 16 units, per core and per torch thread),
// with the caller's thread-local state (grad mode, dispatch keys) as at::parallel_for does. More threads
// than cores would make every per-step barrier wait for the scheduler.
template <typename F>
void run_team(int64_t h, const F& body) {
  const int64_t cores = std::max(1u, std::thread::hardware_concurrency());
  const int64_t max_team = std::min<int64_t>({at::get_num_threads(), cores, (h + 15) / 16});
#ifdef _OPENMP
  if (max_team > 1 && !at::in_parallel_region()) {
    const at::ThreadLocalState state;
    std::optional<TeamBarrier> barrier;
#pragma omp parallel num_threads(max_team)
    {
#pragma omp single
      barrier.emplace(omp_get_num_threads());  // OpenMP may give fewer threads than asked
      const at::ThreadLocalStateGuard guard(state);
      current_barrier() = &*barrier;
      body(omp_get_thread_num(), omp_get_num_threads());
      current_barrier() = nullptr;
    }
    return;
  }
#endif
  body(0, 1);
}

// All threads of the team wait here until each has arrived (a no-op for a team of one).
inline void team_barrier() {
  if (TeamBarrier* barrier = current_barrier()) barrier->wait();
}

}  // namespace zoo
