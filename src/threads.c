/* threads.c — spin-then-sleep fork-join pool (see threads.h for why). */
#include "threads.h"
#include "common.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

/* ~ a few ms of spinning before a worker goes to sleep between tokens (pauses; when
 * oversubscribed, pauses then yields: ds_spin_step). */
#define SPIN_ITERS 200000
#define SPIN_ITERS_YIELDING 8192

typedef struct {
    ds_pool *pool;
    int ith;
    pthread_t tid;
} worker;

struct ds_pool {
    int n;
    worker *workers;
    ds_task_fn fn;
    void *ctx;
    _Atomic unsigned gen;       /* bumped per ds_pool_run */
    _Atomic int done;           /* workers finished with the current gen */
    _Atomic int stop;
    _Atomic int sleepers;
    int oversub;                /* more threads than CPUs to run them (ds_spin_step) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static void *worker_main(void *arg) {
    worker *w = arg;
    ds_pool *p = w->pool;
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen &&
               !atomic_load_explicit(&p->stop, memory_order_acquire)) {
            if (spins < (p->oversub ? SPIN_ITERS_YIELDING : SPIN_ITERS)) { ds_spin_step(&spins, p->oversub); continue; }
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while (atomic_load(&p->gen) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->cv, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
            spins = 0;
        }
        if (atomic_load(&p->stop)) return NULL;
        seen = g;
        p->fn(p->ctx, w->ith, p->n);
        atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
    }
}

ds_pool *ds_pool_new(int n_threads) {
    if (n_threads < 1) n_threads = 1;
    ds_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = n_threads;
    p->oversub = n_threads > ds_cpu_count();
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->workers = calloc((size_t)n_threads, sizeof *p->workers);
    if (!p->workers) { free(p); return NULL; }
    for (int i = 1; i < n_threads; i++) {
        p->workers[i].pool = p;
        p->workers[i].ith = i;
        if (pthread_create(&p->workers[i].tid, NULL, worker_main, &p->workers[i]) != 0) {
            p->n = i; /* run with the threads we got */
            break;
        }
    }
    return p;
}

void ds_pool_free(ds_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++) pthread_join(p->workers[i].tid, NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->workers);
    free(p);
}

int ds_pool_size(const ds_pool *p) { return p->n; }
int ds_pool_oversubscribed(const ds_pool *p) { return p->oversub; }

void ds_pool_run(ds_pool *p, ds_task_fn fn, void *ctx) {
    if (p->n == 1) { fn(ctx, 0, 1); return; }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    atomic_fetch_add(&p->gen, 1); /* seq_cst: ordered before the sleepers check */
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    fn(ctx, 0, p->n);
    int spins = 0;
    while (atomic_load_explicit(&p->done, memory_order_acquire) < p->n - 1) ds_spin_step(&spins, p->oversub);
}

int ds_cpu_count(void) {
    /* the CPUs this process may run on (a container or taskset can allow fewer than are online) */
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}
