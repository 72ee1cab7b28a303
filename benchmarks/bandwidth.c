/*
 * bandwidth.c -- how fast one core reads a buffer that sits in L1, L2 or L3:
 * the floor of a batch-1 recurrent step, which reads every weight once.
 *
 *     gcc -O2 -mavx2 -mfma benchmarks/bandwidth.c -o /tmp/bandwidth && /tmp/bandwidth
 *
 * Each size is swept front to back repeatedly with eight independent
 * accumulators (so neither latency nor the FMA unit limits it); the best of
 * five timings is printed in GB/s.  Results for this machine: RESULTS.md.
 */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef float v8 __attribute__((vector_size(32)));

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

int main(void)
{
    static const int sizes_kib[] = {16, 24, 48, 64, 192, 512, 4096};
    for (unsigned s = 0; s < sizeof sizes_kib / sizeof *sizes_kib; ++s) {
        const size_t n = (size_t)sizes_kib[s] * 1024 / sizeof(v8);     /* vectors */
        v8 *buf = aligned_alloc(64, n * sizeof(v8));
        if (!buf) return 1;
        for (size_t i = 0; i < n; ++i) buf[i] = (v8){0} + 1e-6f * (float)(i & 1023);
        const long reps = 200000000L / (long)n;
        v8 acc[8] = {{0}};
        const v8 m = (v8){0} + 1.0001f;
        double best = 1e30;
        for (int t = 0; t < 5; ++t) {
            const double t0 = now();
            for (long r = 0; r < reps; ++r)
                for (size_t i = 0; i < n; i += 8) {
                    v8 a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
                    v8 a4 = acc[4], a5 = acc[5], a6 = acc[6], a7 = acc[7];
                    a0 += m * buf[i]; a1 += m * buf[i + 1]; a2 += m * buf[i + 2];
                    a3 += m * buf[i + 3]; a4 += m * buf[i + 4]; a5 += m * buf[i + 5];
                    a6 += m * buf[i + 6]; a7 += m * buf[i + 7];
                    acc[0] = a0; acc[1] = a1; acc[2] = a2; acc[3] = a3;
                    acc[4] = a4; acc[5] = a5; acc[6] = a6; acc[7] = a7;
                }
            const double dt = now() - t0;
            if (dt < best) best = dt;
        }
        float sum = 0;
        for (int j = 0; j < 8; ++j) for (int l = 0; l < 8; ++l) sum += acc[j][l];
        printf("%5d KiB: %6.1f GB/s  (checksum %g)\n", sizes_kib[s],
               (double)reps * n * sizeof(v8) / best / 1e9, sum);
        free(buf);
    }
    return 0;
}
