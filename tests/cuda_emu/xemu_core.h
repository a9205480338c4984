/* xemu core: what the CUDA mode (xemu.h) and the HIP mode
 * (tests/hip_emu/xemu_hip.h) share: fibers, the block and warp barriers,
 * the per-warp exchange area, launches and the entry points. The including
 * header chooses the warp (wave) size before including this one:
 * XEMU_WAVE, 32 unless defined (the HIP mode's fake hiprtc defines 64 for
 * CDNA, 32 for RDNA). It is a compile-time constant of each kernel module,
 * so the CUDA mode runs exactly as fast as with a fixed 32. With XEMU_HIP
 * defined, lanes that have exited are inactive (left out of a wave's
 * shuffles and ballots, as the EXEC mask leaves them out on AMD hardware)
 * instead of an error, except at an MFMA, which needs every lane.
 * What is modelled and what is not: xemu.h's header comment. */
#pragma once
#ifndef XEMU_WAVE
#define XEMU_WAVE 32
#endif
/* Fibers switch with _setjmp/_longjmp between stacks, which the fortified
 * longjmp (a check that the target frame is on the current stack) refuses. */
#undef _FORTIFY_SOURCE
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sys/mman.h>
#include <setjmp.h>
#include <ucontext.h>
#include <unistd.h>
#include <utility>

/* The bounds of the static shared arrays (the linker defines them when the
 * section exists; weak, so a module without any links). */
extern "C" char __start_xemu_shared[] __attribute__((weak, visibility("hidden")));
extern "C" char __stop_xemu_shared[] __attribute__((weak, visibility("hidden")));

struct xemu_dim3 {
    unsigned x, y, z;
};

namespace xemu {

enum { STACK_BYTES = 64 << 10, MAX_THREADS = 1024, WARP = XEMU_WAVE };
static_assert(WARP == 32 || WARP == 64, "XEMU_WAVE is 32 or 64");
/* A set of lanes of a warp (bit l: lane l); 64 bits for wave64. */
typedef uint64_t lanemask;
static const lanemask ALL_LANES = WARP == 64 ? ~(lanemask)0 : (((lanemask)1 << WARP) - 1);
enum wait_kind { RUNNING = 0, AT_BLOCK = 1, AT_WARP = 2, DONE = 3 };
/* What a lane waits at, when at a warp barrier: every lane a warp
 * operation names must be at the same one. */
enum warp_op { OP_SYNCWARP, OP_SHFL, OP_BALLOT, OP_MMA, OP_LDMATRIX, OP_WAVE_BARRIER, OP_MFMA };

struct fiber {
    ucontext_t ctx; /* to start it */
    jmp_buf jb;     /* where it waits, once started */
    bool started;
    xemu_dim3 tid;
    int state;
    int op;         /* warp_op, at a warp barrier */
    lanemask mask;  /* the lanes it names, at a warp barrier */
};

/* The one launch in progress (one thread runs launches at a time: the fake
 * driver holds a lock). Static in each kernel module. */
static fiber *fibers;
static int nthreads, cur;
static ucontext_t sched;
static jmp_buf sched_jb;
static xemu_dim3 grid_dim, block_dim, block_idx;
static unsigned char *dyn_smem;
static unsigned dyn_smem_bytes;
#ifdef XEMU_HIP
/* HIP: LDS is at most 64 KiB a block on every AMD target, so dynamic LDS is
 * one static area, which `extern __shared__ T name[]` (rewritten by the
 * fake hiprtc) can point at even at namespace scope. */
alignas(128) static unsigned char lds_area[64 << 10];
#endif
static void (*body)(void *);
static void *body_arg;
static bool failed;
/* Warp exchange area: 8 words per thread (lane l of warp w at thread
 * w * WARP + l) for shuffles and fragments. */
static uint32_t exch[MAX_THREADS][8];

/* Fiber stacks, kept from launch to launch, each above a guard page, so an
 * overflow faults instead of silently corrupting the neighbour's stack. */
static char *stack_area;
static int stack_count;
static size_t page_bytes;

static bool stacks_for(int n)
{
    if (n <= stack_count) return true;
    if (!page_bytes) page_bytes = (size_t)sysconf(_SC_PAGESIZE);
    const size_t slot = STACK_BYTES + page_bytes;
    if (stack_area) munmap(stack_area, (size_t)stack_count * slot);
    stack_count = 0;
    void *m = mmap(NULL, (size_t)n * slot, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
        stack_area = NULL;
        return false;
    }
    stack_area = (char *)m;
    for (int i = 0; i < n; i++) mprotect(stack_area + (size_t)i * slot, page_bytes, PROT_NONE);
    stack_count = n;
    return true;
}

/* Switches: a fiber starts with swapcontext (which also switches the
 * signal mask, a system call), then every later switch is _setjmp and
 * _longjmp (none), so a warp operation costs no system call. */
/* cp.async copies not yet landed, per thread, oldest first: the 16 bytes
 * (read from the source when issued) land at the cp_async_wait that covers
 * their group, so a pipeline that reads a stage before waiting for it
 * reads what was there before. Group g is the thread's g-th commit; the
 * copies since the last commit have group == groups[thread]. */
enum { PENDING = 64 };
struct pending_copy {
    unsigned char *dst;
    unsigned char bytes[16];
    unsigned group;
};
static pending_copy pending[MAX_THREADS][PENDING];
static int npending[MAX_THREADS];
static unsigned groups[MAX_THREADS];

/* Land the copies of thread t in groups below `below` (all: ~0u). */
static void land(int t, unsigned below)
{
    int kept = 0;
    for (int i = 0; i < npending[t]; i++) {
        pending_copy &c = pending[t][i];
        if (c.group < below) memcpy(c.dst, c.bytes, 16);
        else pending[t][kept++] = c;
    }
    npending[t] = kept;
}

static void trampoline()
{
    body(body_arg);
    land(cur, ~0u); /* a thread's copies complete when it exits */
    fibers[cur].state = DONE;
    _longjmp(sched_jb, 1);
}

static void to_sched()
{
    if (!_setjmp(fibers[cur].jb)) _longjmp(sched_jb, 1);
}

static void resume(int i)
{
    cur = i;
    if (_setjmp(sched_jb)) return;
    fiber &f = fibers[i];
    if (f.started) _longjmp(f.jb, 1);
    f.started = true;
    swapcontext(&sched, &f.ctx);
}

/* Park the running fiber at a barrier and switch to the scheduler. */
static void wait_at(int kind, int op = OP_SYNCWARP, lanemask mask = ALL_LANES)
{
    fibers[cur].state = kind;
    fibers[cur].op = op;
    fibers[cur].mask = mask;
    to_sched();
    if (failed) { /* the launch was abandoned: unwind by finishing */
        fibers[cur].state = DONE;
        _longjmp(sched_jb, 1);
    }
}

static const char *op_name(int op)
{
    static const char *const names[] = {"__syncwarp", "a shuffle", "a ballot", "mma.sync",
                                        "ldmatrix", "a wave barrier", "an MFMA"};
    return op >= 0 && op <= OP_MFMA ? names[op] : "?";
}

/* The block could not go on: say why on stderr (the test's log). */
__attribute__((format(printf, 1, 2))) static void report(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "xemu: block (%u,%u,%u): ", block_idx.x, block_idx.y, block_idx.z);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* Release the lanes of warp w whose warp operation is complete: every lane
 * it names waits at the same operation with the same mask. Returns -1 on
 * an operation that can never complete (a named lane exited, or waits at a
 * different operation or with a different mask), else how many lanes
 * were released. In the HIP mode an exited lane is inactive, not an error
 * (but an MFMA needs every lane). */
static int release_warp(int w)
{
    const int first = w * WARP, last = nthreads < first + WARP ? nthreads : first + WARP;
    const lanemask exists = last - first == WARP ? ALL_LANES : ((lanemask)1 << (last - first)) - 1;
    lanemask go = 0;
    for (int l = first; l < last; l++) {
        const fiber &f = fibers[l];
        if (f.state != AT_WARP) continue;
        const unsigned named = f.mask & exists;
        if (!(named >> (l - first) & 1)) {
            report("thread %d calls %s with mask 0x%llx, which does not name its lane %d", l,
                   op_name(f.op), (unsigned long long)f.mask, l - first);
            return -1;
        }
        bool complete = true;
        for (int k = first; k < last; k++) {
            if (!(named >> (k - first) & 1)) continue;
            const fiber &o = fibers[k];
            if (o.state == DONE) {
#ifdef XEMU_HIP
                if (f.op != OP_MFMA) continue;
#endif
                report("thread %d waits at %s (mask 0x%llx) naming thread %d, which has exited", l,
                       op_name(f.op), (unsigned long long)f.mask, k);
                return -1;
            }
            if (o.state != AT_WARP) {
                complete = false;
                continue;
            }
            if (o.op != f.op || o.mask != f.mask) {
                report("thread %d waits at %s (mask 0x%llx) while thread %d of its warp waits at %s "
                       "(mask 0x%llx)", l, op_name(f.op), (unsigned long long)f.mask, k,
                       op_name(o.op), (unsigned long long)o.mask);
                return -1;
            }
        }
        if (complete) go |= (lanemask)1 << (l - first);
    }
    for (int l = first; l < last; l++)
        if (go >> (l - first) & 1) fibers[l].state = RUNNING;
    return __builtin_popcountll(go);
}

/* Run one block to its end. Returns false on a barrier that cannot
 * complete. */
static bool run_block()
{
    const size_t slot = STACK_BYTES + page_bytes;
    for (int i = 0; i < nthreads; i++) {
        fiber &f = fibers[i];
        f.tid.x = (unsigned)i % block_dim.x;
        f.tid.y = (unsigned)i / block_dim.x % block_dim.y;
        f.tid.z = (unsigned)i / (block_dim.x * block_dim.y);
        f.state = RUNNING;
        f.started = false;
        npending[i] = 0;
        groups[i] = 0;
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = stack_area + (size_t)i * slot + page_bytes;
        f.ctx.uc_stack.ss_size = STACK_BYTES;
        f.ctx.uc_link = &sched;
        makecontext(&f.ctx, trampoline, 0);
    }
    /* Shared memory starts as garbage on a GPU: 0xff bytes (NaN) here. */
    memset(dyn_smem, 0xff, dyn_smem_bytes);
    const uintptr_t s0 = (uintptr_t)__start_xemu_shared, s1 = (uintptr_t)__stop_xemu_shared;
    if (s0 && s1 > s0) memset(__start_xemu_shared, 0xff, s1 - s0);
    bool ok = true;
    for (;;) {
        bool ran = false;
        for (int i = 0; i < nthreads; i++)
            if (fibers[i].state == RUNNING) {
                resume(i);
                ran = true;
            }
        if (ran) continue;
        /* Nobody runs: release complete warp operations, else the block
         * barrier, else it is over (or stuck). */
        int released = 0;
        for (int w = 0; ok && w * WARP < nthreads; w++) {
            const int r = release_warp(w);
            if (r < 0) ok = false;
            else released += r;
        }
        if (!ok) break;
        if (released) continue;
        int at_block = 0, done = 0, other = 0;
        for (int i = 0; i < nthreads; i++) {
            if (fibers[i].state == AT_BLOCK) at_block++;
            else if (fibers[i].state == DONE) done++;
            else other++;
        }
        if (done == nthreads) return true;
        if (at_block == nthreads) {
            for (int i = 0; i < nthreads; i++) fibers[i].state = RUNNING;
            continue;
        }
        report("a barrier cannot complete: %d threads at __syncthreads, %d exited, "
               "%d at a warp operation whose lanes are elsewhere", at_block, done, other);
        ok = false;
        break;
    }
    failed = true;
    for (int i = 0; i < nthreads; i++)
        while (fibers[i].state != DONE) resume(i);
    return false;
}

/* Launch body(arg) over the grid; 0, or 1 when a barrier failed. */
static int launch(xemu_dim3 g, xemu_dim3 b, unsigned smem, void (*fn)(void *), void *arg)
{
    nthreads = (int)(b.x * b.y * b.z);
    if (nthreads < 1 || nthreads > MAX_THREADS) return 1;
#ifdef XEMU_HIP
    if (smem > sizeof lds_area) return 1;
#endif
    fibers = (fiber *)calloc((size_t)nthreads, sizeof *fibers);
    dyn_smem_bytes = smem;
#ifdef XEMU_HIP
    dyn_smem = lds_area;
#else
    dyn_smem = (unsigned char *)aligned_alloc(128, smem ? (smem + 127) / 128 * 128 : 128);
#endif
    int rc = 0;
    if (!fibers || !dyn_smem || !stacks_for(nthreads)) rc = 1;
    grid_dim = g;
    block_dim = b;
    body = fn;
    body_arg = arg;
    failed = false;
    for (unsigned z = 0; z < g.z && !rc; z++)
        for (unsigned y = 0; y < g.y && !rc; y++)
            for (unsigned x = 0; x < g.x && !rc; x++) {
                block_idx = {x, y, z};
                if (!run_block()) rc = 1;
            }
    free(fibers);
    fibers = NULL;
#ifndef XEMU_HIP
    free(dyn_smem);
#endif
    dyn_smem = NULL;
    return rc;
}

inline int lane() { return cur % WARP; }
inline int warp_base() { return cur - cur % WARP; }

/* One exchange: every lane the mask names publishes n words, they meet,
 * each reads, they meet again (so the area is free for the next one). */
inline void publish(const uint32_t *w, int n, int op, lanemask mask)
{
    memcpy(exch[cur], w, (size_t)n * 4);
    wait_at(AT_WARP, op, mask);
}
inline const uint32_t *peer(int l) { return exch[warp_base() + (l & (WARP - 1))]; }
inline void done_reading(int op, lanemask mask) { wait_at(AT_WARP, op, mask); }

template <typename T> T shfl_any(lanemask mask, T v, int src)
{
    static_assert(sizeof(T) <= 8, "shuffle of a value over 8 bytes");
    uint32_t w[2] = {0, 0};
    memcpy(w, &v, sizeof v);
    publish(w, 2, OP_SHFL, mask);
    T out;
    memcpy(&out, peer(src), sizeof out);
    done_reading(OP_SHFL, mask);
    return out;
}

} // namespace xemu

#define threadIdx (xemu::fibers[xemu::cur].tid)
#define blockIdx (xemu::block_idx)
#define blockDim (xemu::block_dim)
#define gridDim (xemu::grid_dim)

#ifndef __global__ /* the fake hiprtc marks kernels by defining it */
#define __global__
#endif
#define __device__
#define __host__
#define __forceinline__ inline
/* Static shared arrays are statics in one section, so each block can
 * start them as garbage (0xff bytes) like the dynamic ones. */
#define __shared__ static __attribute__((section("xemu_shared")))
#ifndef __launch_bounds__ /* the fake hiprtc reads the bounds through it */
#define __launch_bounds__(...)
#endif
#define __align__(n) __attribute__((aligned(n)))

inline void __syncthreads() { xemu::wait_at(xemu::AT_BLOCK); }

/* One thread runs at a time, so atomics are plain read-modify-writes. */
template <typename T> T atomicAdd(T *p, T v) { T old = *p; *p = old + v; return old; }
inline int atomicMax(int *p, int v) { int old = *p; if (v > old) *p = v; return old; }

inline float __int_as_float(int x) { float f; memcpy(&f, &x, 4); return f; }
inline int __float_as_int(float f) { int x; memcpy(&x, &f, 4); return x; }
inline unsigned __float_as_uint(float f) { unsigned x; memcpy(&x, &f, 4); return x; }
inline float __uint_as_float(unsigned x) { float f; memcpy(&f, &x, 4); return f; }

template <typename A, typename B> auto min(A a, B b) -> decltype(a + b) { return a < b ? a : b; }
template <typename A, typename B> auto max(A a, B b) -> decltype(a + b) { return a > b ? a : b; }

inline float xemu_f16_to_f32(unsigned short h) { _Float16 x; memcpy(&x, &h, 2); return (float)x; }
inline unsigned short xemu_f32_to_f16(float f)
{
    _Float16 x = (_Float16)f; /* round to nearest even */
    unsigned short h;
    memcpy(&h, &x, 2);
    return h;
}

/* The entry point the fake driver calls: unpack the parameters by the
 * kernel's own types and run it over the grid. */
namespace xemu {
template <typename... A, size_t... I>
void call_with(void (*f)(A...), void **params, std::index_sequence<I...>)
{
    f(*static_cast<std::remove_cv_t<std::remove_reference_t<A>> *>(params[I])...);
}
template <typename... A> struct bound {
    void (*f)(A...);
    void **params;
    static void run(void *self)
    {
        bound *b = (bound *)self;
        call_with(b->f, b->params, std::index_sequence_for<A...>{});
    }
};
template <typename... A>
int launch_kernel(void (*f)(A...), const unsigned *dims, unsigned smem, void **params)
{
    bound<A...> b{f, params};
    return launch({dims[0], dims[1], dims[2]}, {dims[3], dims[4], dims[5]}, smem,
                  &bound<A...>::run, &b);
}
} // namespace xemu

#define XATTN_EXPORT(name)                                                     \
    extern "C" int xemu_launch_##name(const unsigned *dims, unsigned smem, void **params) \
    {                                                                          \
        return xemu::launch_kernel(name, dims, smem, params);                  \
    }
