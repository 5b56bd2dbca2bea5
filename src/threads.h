/* threads.h — a fork-join pool for the layer loop.
 *
 * Decode makes ~10 parallel regions per layer (hundreds per token), so the hand-off must cost
 * well under a microsecond: workers spin on a generation counter while work keeps coming and
 * only fall back to sleeping on a condition variable after a stretch of idleness. */
#ifndef DS_THREADS_H
#define DS_THREADS_H

typedef struct ds_pool ds_pool;
/* Called once on every thread: ith in [0, nth); the caller of ds_pool_run is thread 0. */
typedef void (*ds_task_fn)(void *ctx, int ith, int nth);

ds_pool *ds_pool_new(int n_threads);
void ds_pool_free(ds_pool *p);
int ds_pool_size(const ds_pool *p);
/* Run fn on all threads and return when every thread has finished. */
void ds_pool_run(ds_pool *p, ds_task_fn fn, void *ctx);
/* Number of CPUs this process may run on (its affinity mask; else the online CPUs). */
int ds_cpu_count(void);

/* One step of a spin-wait loop (a pause hint where the CPU has one). */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
static inline void ds_cpu_relax(void) { _mm_pause(); }
#else
static inline void ds_cpu_relax(void) {}
#endif

/* One step of a wait for another thread of the pool. With more threads than CPUs the thread
 * waited for may have no core: then, after DS_SPIN_PAUSES pauses, every step yields the CPU.
 * (Pausing alone made every parallel region wait out a scheduler time slice: 1.2 tok/s with 3
 * threads on 2 cores against ~80 with 2. With a core for every thread, yielding measured no
 * better than pausing, so it is kept for the oversubscribed case.) */
#include <sched.h>
#define DS_SPIN_PAUSES 1024
static inline void ds_spin_step(int *spins, int oversubscribed) {
    if (*spins < (1 << 30)) ++*spins;   /* counts every step (the pool sleeps after enough) */
    if (!oversubscribed || *spins <= DS_SPIN_PAUSES) ds_cpu_relax();
    else sched_yield();
}
/* Whether the pool has more threads than the process may run on at once. */
int ds_pool_oversubscribed(const ds_pool *p);

#endif
