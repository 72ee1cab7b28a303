/*
 * cpu.c -- CPU feature detection and the dispatch table.
 *
 * drnn_kernels() is the only place that chooses which variant of a kernel
 * runs.  Each table is one compilation of the same kernel sources (setup.py
 * builds them with per-file ISA flags).  drnn_select_isa("auto"), called once
 * at import, takes the widest one the CPU supports -- cpuid for the
 * instructions, xgetbv for the OS saving the wide registers; DRNN_ISA names
 * one explicitly and fails if the CPU lacks it.
 */
#include <string.h>
#include "internal.h"

#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64)
#define DRNN_X86 1
#include <xmmintrin.h>
#include <cpuid.h>
#endif

#define TABLE(sfx, width) { #sfx, width, drnn_gemm_##sfx, drnn_rnn_step_##sfx, \
                           drnn_lstm_step_##sfx, drnn_gru_step_##sfx, drnn_act_##sfx }
static const drnn_kernel_table tables[] = {
    TABLE(portable, 4),
#ifdef DRNN_HAVE_X86_VARIANTS
    TABLE(avx2, 8),
    TABLE(avx512, 16),
#endif
};
#define N_TABLES ((int)(sizeof tables / sizeof tables[0]))

static const drnn_kernel_table *active = &tables[0];

const drnn_kernel_table *drnn_kernels(void)
{
    return active;
}

const char *drnn_isa_name(void)
{
    return active->isa;
}

static int cpu_has(const char *feature);

/* Can this CPU (and OS) run table i? */
static int table_supported(int i)
{
    const char *isa = tables[i].isa;
    if (strcmp(isa, "avx2") == 0) return cpu_has("avx2") && cpu_has("fma");
    if (strcmp(isa, "avx512") == 0)
        return cpu_has("avx512f") && cpu_has("avx512vl") && cpu_has("avx512bw") &&
               cpu_has("avx512dq") && cpu_has("fma");
    return 1;
}

int drnn_select_isa(const char *name)
{
    if (!name || strcmp(name, "auto") == 0) {
        for (int i = N_TABLES - 1; i >= 0; --i)
            if (table_supported(i)) {
                active = &tables[i];
                return DRNN_OK;
            }
        return DRNN_ERR_ARGUMENT;
    }
    for (int i = 0; i < N_TABLES; ++i)
        if (strcmp(name, tables[i].isa) == 0) {
            if (!table_supported(i)) return DRNN_ERR_ARGUMENT;
            active = &tables[i];
            return DRNN_OK;
        }
    return DRNN_ERR_ARGUMENT;
}

const char *drnn_isa_list(void)
{
    static char buf[64];
    buf[0] = '\0';
    for (int i = 0; i < N_TABLES; ++i)
        if (table_supported(i)) {
            if (buf[0]) strcat(buf, " ");
            strcat(buf, tables[i].isa);
        }
    return buf;
}

#ifdef DRNN_X86
static unsigned long long read_xcr0(void)
{
    unsigned eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}
#endif

const char *drnn_cpu_features(void)
{
    /* Computed on every call: a few cpuid instructions, called rarely. */
    static char buf[160];
    if (buf[0]) return buf;        /* computed once; the CPU does not change */
#ifdef DRNN_X86
    unsigned a, b, c, d;
    int avx_os = 0, avx512_os = 0;
    strcat(buf, "sse2");
    if (__get_cpuid(1, &a, &b, &c, &d)) {
        int osxsave = (c >> 27) & 1;
        if (osxsave) {
            unsigned long long xcr0 = read_xcr0();
            avx_os = (xcr0 & 0x6) == 0x6;
            avx512_os = avx_os && (xcr0 & 0xe0) == 0xe0;
        }
        if (avx_os && ((c >> 28) & 1)) strcat(buf, " avx");
        if (avx_os && ((c >> 12) & 1)) strcat(buf, " fma");
    }
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        if (avx_os && ((b >> 5) & 1)) strcat(buf, " avx2");
        if (avx512_os && ((b >> 16) & 1)) strcat(buf, " avx512f");
        if (avx512_os && ((b >> 17) & 1)) strcat(buf, " avx512dq");
        if (avx512_os && ((b >> 30) & 1)) strcat(buf, " avx512bw");
        if (avx512_os && ((b >> 31) & 1)) strcat(buf, " avx512vl");
    }
#else
    strcat(buf, "generic");
#endif
    return buf;
}

unsigned drnn_fpmode_enter(void)
{
#ifdef DRNN_X86
    unsigned saved = _mm_getcsr();
    _mm_setcsr(saved | 0x8040u); /* FTZ (bit 15) | DAZ (bit 6) */
    return saved;
#else
    return 0;
#endif
}

void drnn_fpmode_leave(unsigned saved)
{
#ifdef DRNN_X86
    _mm_setcsr(saved);
#else
    (void)saved;
#endif
}

static int cpu_has(const char *feature)
{
    /* Whole-word match in the feature list. */
    const char *list = drnn_cpu_features();
    size_t n = strlen(feature);
    for (const char *p = list; (p = strstr(p, feature)) != NULL; p += n)
        if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0')) return 1;
    return 0;
}

const char *drnn_strerror(int code)
{
    switch (code) {
    case DRNN_OK: return "success";
    case DRNN_ERR_ARGUMENT: return "invalid argument (size, kind or missing pointer)";
    case DRNN_ERR_WORKSPACE: return "workspace missing or too small";
    case DRNN_ERR_LENGTH: return "a sequence length is outside [0, steps]";
    case DRNN_ERR_OVERFLOW: return "buffer size overflows";
    default: return "unknown error";
    }
}
