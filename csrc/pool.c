/*
 * pool.c -- the thread pool behind every multi-threaded kernel call.
 *
 * Worker threads are created once, on first use, and live for the process.
 * drnn_parallel(n, fn, prepare, ctx) decides how many threads the job gets
 * (at most n), tells prepare(ctx, count) -- barriers are sized there --
 * then runs fn(ctx, tid, count) on the calling thread (tid 0) and count - 1
 * workers, and returns when all are done.  Workers spin
 * briefly on a generation counter after each job before sleeping on a
 * condition variable, so back-to-back calls (a layer's projection, then its
 * time loop) do not pay a wake-up each.
 *
 * One job runs at a time.  A caller that finds the pool busy (another
 * Python thread is mid-predict) runs its job on its own thread alone:
 * results do not depend on the thread count, only speed does.
 *
 * drnn_barrier is a sense-reversing spin barrier for the threads of one job
 * (or a team of them); a crossing costs well under a microsecond.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include "internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

#define MAX_WORKERS 63
#define SPIN_ROUNDS 200000   /* ~100 us of pause before sleeping */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;  /* guards the fields below */
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static pthread_mutex_t busy = PTHREAD_MUTEX_INITIALIZER;  /* held by the running job */
static int n_workers;
static atomic_uint generation;          /* bumped once per job */
static atomic_int pending;              /* workers still running the job */
static drnn_task_fn job_fn;
static void *job_ctx;
static int job_threads;
static unsigned spawn_generation;       /* generation when workers were created */

static void *worker_main(void *arg)
{
    const int tid = (int)(intptr_t)arg;   /* 1 .. n_workers */
    /* Not atomic_load(&generation): the job that made us may already have
     * bumped it, and we must not miss that job. */
    unsigned seen = spawn_generation;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&generation, memory_order_acquire)) == seen) {
            if (++spins < SPIN_ROUNDS) {
                CPU_RELAX();
                continue;
            }
            pthread_mutex_lock(&lock);
            while ((g = atomic_load(&generation)) == seen)
                pthread_cond_wait(&wake, &lock);
            pthread_mutex_unlock(&lock);
            break;
        }
        seen = g;
        /* Every worker acknowledges every job, so none can lag into the next. */
        if (tid < job_threads)
            job_fn(job_ctx, tid, job_threads);
        atomic_fetch_sub_explicit(&pending, 1, memory_order_release);
    }
    return NULL;
}

/* A forked child has none of the parent's threads: start from scratch. */
static void after_fork_child(void)
{
    pthread_mutex_init(&lock, NULL);
    pthread_mutex_init(&busy, NULL);
    pthread_cond_init(&wake, NULL);
    n_workers = 0;
}

static void register_fork_handler(void)
{
    pthread_atfork(NULL, NULL, after_fork_child);
}

/* Make sure n - 1 workers exist; returns how many threads a job may use. */
static int ensure_workers(int n)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    if (n - 1 > MAX_WORKERS) n = MAX_WORKERS + 1;
    pthread_once(&once, register_fork_handler);
    pthread_mutex_lock(&lock);
    spawn_generation = atomic_load(&generation);
    while (n_workers < n - 1) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&t, &attr, worker_main, (void *)(intptr_t)(n_workers + 1));
        pthread_attr_destroy(&attr);
        if (rc != 0) break;                 /* run with what we have */
        ++n_workers;
    }
    int avail = n_workers + 1;
    pthread_mutex_unlock(&lock);
    return n < avail ? n : avail;
}

void drnn_parallel(int nthreads, drnn_task_fn fn, drnn_prepare_fn prepare, void *ctx)
{
    if (nthreads <= 1 || pthread_mutex_trylock(&busy) != 0) {
        if (prepare) prepare(ctx, 1);
        fn(ctx, 0, 1);
        return;
    }
    nthreads = ensure_workers(nthreads);
    if (prepare) prepare(ctx, nthreads);
    if (nthreads <= 1) {
        pthread_mutex_unlock(&busy);
        fn(ctx, 0, 1);
        return;
    }
    job_fn = fn;
    job_ctx = ctx;
    job_threads = nthreads;
    atomic_store(&pending, n_workers);
    pthread_mutex_lock(&lock);
    atomic_fetch_add_explicit(&generation, 1, memory_order_release);
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&lock);
    fn(ctx, 0, nthreads);
    for (unsigned spins = 0; atomic_load_explicit(&pending, memory_order_acquire) > 0;)
        if (++spins > 2048) sched_yield(); else CPU_RELAX();
    pthread_mutex_unlock(&busy);
}

void drnn_cpu_relax(void)
{
    CPU_RELAX();
}

/* Before the job's threads start: drnn_parallel's release of the job
 * publishes it, so plain (relaxed) stores do (a locked exchange each cost
 * ~30 ns of every stream step). */
void drnn_barrier_init(drnn_barrier *b, int count)
{
    atomic_store_explicit(&b->waiting, 0, memory_order_relaxed);
    atomic_store_explicit(&b->phase, 0, memory_order_relaxed);
    b->count = count;
}

void drnn_barrier_wait(drnn_barrier *b)
{
    if (b->count <= 1) return;
    unsigned phase = atomic_load_explicit(&b->phase, memory_order_acquire);
    if (atomic_fetch_add_explicit(&b->waiting, 1, memory_order_acq_rel) == (unsigned)b->count - 1) {
        atomic_store_explicit(&b->waiting, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&b->phase, 1, memory_order_release);
        return;
    }
    unsigned spins = 0;
    while (atomic_load_explicit(&b->phase, memory_order_acquire) == phase) {
        CPU_RELAX();
        if (++spins > 2048) sched_yield();   /* ~50 us: the partner may be descheduled; let it run */
    }
}

int drnn_cpu_count(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
    return 1;
}
