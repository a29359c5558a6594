// twin_shim.h -- lets g++ compile our CUDA kernels as plain C++ (the "CPU twin").
//
// Why: no machine in CI has a GPU, but the kernels must still be proven against
// the OpenCV/numpy references. The twin compiles the *same* .cu source with this
// header force-included (g++ -include twin_shim.h -x c++ ...) and runs each
// launch as a loop over the grid: for every block, for every thread, set
// blockIdx/threadIdx and call the kernel body once. Large grids are split into
// contiguous ranges of blocks run on a few host threads (twin::threads, set by
// the loader; 1 = serial); blockIdx/threadIdx are thread_local, and since every
// kernel writes one output per thread, any split gives the same bytes.
//
// What a grid loop can and cannot emulate:
//  * one-output-per-thread kernels (all of ours): exact, in any order.
//  * atomics: emulated explicitly below with GCC __atomic compare-and-swap loops,
//    so they stay correct when the loop runs blocks on several host threads.
//    atomicMin is order-independent, so a z-buffer built with it is identical
//    to the GPU's whatever order the threads ran in.
//  * __syncthreads, shared-memory exchange between threads, warp shuffles:
//    NOT emulated (a thread would read values its neighbours have not written
//    yet). Using them is a compile error in the twin on purpose; keep kernels
//    one output per thread or add an explicit emulation here first.
//  * float arithmetic: the kernels use __fmul_rn/__fadd_rn/__fdiv_rn so nvcc
//    cannot contract a*b+c into FMA; g++ on x86-64 rounds every float op, so
//    both sides round the same operations the same way.
#pragma once
#ifndef DAMAGE_RIG_TWIN_SHIM_H
#define DAMAGE_RIG_TWIN_SHIM_H

#include <math.h>

#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>
#if defined(__F16C__)
#include <immintrin.h>
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// Per host thread: each worker of a launch sets its own copies, so launches from
// several Python threads at once do not disturb each other. initial-exec TLS: one
// %fs-relative access, no __tls_get_addr call per kernel invocation (fine for a
// few dozen bytes in a dlopen'ed library).
#define DAMAGE_RIG_TWIN_TLS static thread_local __attribute__((tls_model("initial-exec")))
DAMAGE_RIG_TWIN_TLS dim3 threadIdx;
DAMAGE_RIG_TWIN_TLS dim3 blockIdx;
DAMAGE_RIG_TWIN_TLS dim3 blockDim;
DAMAGE_RIG_TWIN_TLS dim3 gridDim;

// Deliberately undefined: see the header comment.
void __syncthreads_is_not_emulated_by_the_cpu_twin();
#define __syncthreads() __syncthreads_is_not_emulated_by_the_cpu_twin()
#define __shared__ __shared_memory_is_not_emulated_by_the_cpu_twin

// ---- float intrinsics with explicit rounding (round-to-nearest-even) ----
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __int2float_rn(int a) { return static_cast<float>(a); }
// Only called with |a| < 2^31 (align.cu checks the range first, as x86 needs).
static inline int __float2int_rz(float a) { return static_cast<int>(a); }
static inline float __int_as_float(int a) {
    float f;
    std::memcpy(&f, &a, 4);
    return f;
}
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }

// ---- half precision: storage type + float -> half, round to nearest even ----
struct __half {
    uint16_t bits;
};

#if defined(__F16C__)
// The loader adds -mf16c only when this machine's CPU has F16C (checked when it
// builds the twin): VCVTPS2PH with round-to-nearest-even, what the GPU does.
static inline __half __float2half_rn(float f) {
    __half h;
    h.bits = static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
    return h;
}
#else
// Portable software conversion (bit for bit the same as F16C for non-NaN input).
static inline __half __float2half_rn(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t absx = x & 0x7fffffffu;
    __half h;
    if (absx >= 0x7f800000u) {  // inf or nan
        h.bits = static_cast<uint16_t>(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0u));
        return h;
    }
    if (absx >= 0x477ff000u) {  // rounds to >= 65520: overflow to inf
        h.bits = static_cast<uint16_t>(sign | 0x7c00u);
        return h;
    }
    if (absx < 0x38800000u) {  // below the smallest normal half (2^-14): subnormal or zero
        if (absx < 0x33000000u) {  // below half of the smallest subnormal (2^-25): zero
            h.bits = static_cast<uint16_t>(sign);
            return h;
        }
        const int e = static_cast<int>(absx >> 23);         // biased float exponent
        const uint32_t mant = (absx & 0x7fffffu) | 0x800000u;  // with the implicit 1
        const int shift = 126 - e;                          // 14..24 for this range
        uint32_t q = mant >> shift;
        const uint32_t rem = mant & ((1u << shift) - 1u);
        const uint32_t halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (q & 1u))) q += 1u;
        h.bits = static_cast<uint16_t>(sign | q);
        return h;
    }
    // normal: rebias exponent (127 -> 15), keep 10 mantissa bits, round to nearest even
    uint32_t q = ((absx >> 13) - (112u << 10));
    const uint32_t rem = absx & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) q += 1u;  // may carry into the exponent: fine
    h.bits = static_cast<uint16_t>(sign | q);
    return h;
}
#endif

// ---- atomics (see header comment) ----
static inline unsigned int atomicMin(unsigned int* addr, unsigned int val) {
    unsigned int old = __atomic_load_n(addr, __ATOMIC_RELAXED);
    while (val < old &&
           !__atomic_compare_exchange_n(addr, &old, val, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}
static inline int atomicMin(int* addr, int val) {
    int old = __atomic_load_n(addr, __ATOMIC_RELAXED);
    while (val < old &&
           !__atomic_compare_exchange_n(addr, &old, val, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}

// ---- the grid loop: what <<<grid, block>>> means for the twin ----
namespace twin {
// Host threads a launch may use (the loader sets it through twin_set_threads).
inline int threads = 1;
// Below this many kernel threads a launch stays on the caller's thread: handing a
// range to a helper costs a wake-up, more than such a grid takes.
constexpr unsigned long long kMinParallelWork = 1ull << 15;

// Call a kernel with the launcher's arguments (void* -> T* needs the explicit cast).
template <typename... Params, typename... Args>
inline void call(void (*kernel)(Params...), Args... args) {
    kernel(static_cast<Params>(args)...);
}

// Persistent helper threads: started on first need, then kept for the process and
// woken per launch (starting threads on every launch cost tens of microseconds each
// and oversubscribed the cores). One launch uses the pool at a time; a launch from
// another thread meanwhile runs on its own caller, so launches never wait on each other.
class Pool {
  public:
    // Run part(k) for every k in [0, n): part 0 on the caller, the rest on helpers.
    // False (nothing run) when another launch holds the pool.
    bool run(unsigned n, const std::function<void(unsigned)>& part) {
        std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
        if (!busy.owns_lock()) return false;
        {
            std::lock_guard<std::mutex> g(mu_);
            while (started_ < n - 1) {
                try {
                    std::thread(&Pool::serve, this).detach();
                    ++started_;
                } catch (const std::system_error&) {  // no thread to be had: the caller does more
                    break;
                }
            }
            job_ = &part;
            parts_ = n;
            next_ = 1;
            done_ = 1;
        }
        wake_.notify_all();
        part(0);
        std::unique_lock<std::mutex> g(mu_);
        while (next_ < parts_) {  // parts no helper has taken yet (too few helpers, or slow to wake)
            const unsigned k = next_++;
            g.unlock();
            part(k);
            g.lock();
            ++done_;
        }
        finished_.wait(g, [this] { return done_ == parts_; });
        job_ = nullptr;
        return true;
    }

  private:
    void serve() {
        std::unique_lock<std::mutex> g(mu_);
        for (;;) {
            wake_.wait(g, [this] { return job_ != nullptr && next_ < parts_; });
            const unsigned k = next_++;
            const std::function<void(unsigned)>* job = job_;
            g.unlock();
            (*job)(k);
            g.lock();
            if (++done_ == parts_) finished_.notify_all();
        }
    }

    std::mutex busy_, mu_;
    std::condition_variable wake_, finished_;
    const std::function<void(unsigned)>* job_ = nullptr;
    unsigned parts_ = 0, next_ = 0, done_ = 0, started_ = 0;
};

// Never destroyed: its helpers wait on it until the process ends.
inline Pool& pool() {
    static Pool* p = new Pool();
    return *p;
}

// Run body() once per thread of the grid. `body` is a lambda naming the kernel
// directly (see loader.py's launchers), so g++ inlines the kernel into the loop;
// each host thread works on its own copy, so the arguments stay in registers.
template <typename Body>
inline void launch(dim3 grid, dim3 block, const Body& body) {
    const unsigned long long per_block = 1ull * block.x * block.y * block.z;
    const unsigned long long blocks = 1ull * grid.x * grid.y * grid.z;
    // Blocks [first, last) in x-fastest order, each block's threads in x-fastest order.
    auto run_blocks = [grid, block, &body](unsigned long long first, unsigned long long last) {
        const Body kernel_call = body;
        gridDim = grid;
        blockDim = block;
        for (unsigned long long b = first; b < last; ++b) {
            blockIdx = dim3(static_cast<unsigned>(b % grid.x), static_cast<unsigned>((b / grid.x) % grid.y),
                            static_cast<unsigned>(b / (1ull * grid.x * grid.y)));
            for (unsigned tz = 0; tz < block.z; ++tz)
                for (unsigned ty = 0; ty < block.y; ++ty)
                    for (unsigned tx = 0; tx < block.x; ++tx) {
                        threadIdx = dim3(tx, ty, tz);
                        kernel_call();
                    }
        }
    };
    unsigned long long n = threads > 1 ? static_cast<unsigned long long>(threads) : 1ull;
    if (n > blocks) n = blocks;
    if (n <= 1 || blocks * per_block < kMinParallelWork) {
        run_blocks(0, blocks);
        return;
    }
    const std::function<void(unsigned)> part = [&run_blocks, blocks, n](unsigned k) {
        run_blocks(blocks * k / n, blocks * (k + 1) / n);
    };
    if (!pool().run(static_cast<unsigned>(n), part)) run_blocks(0, blocks);
}
}  // namespace twin

#endif
