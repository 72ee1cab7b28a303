/*
 * cpu.c -- CPU feature detection and the dispatch table.
 *
 * drnn_kernels() is the only place that chooses which variant of a kernel
 * runs.  Today every CPU gets the portable C kernels; the SIMD variants
 * (compiled from the same sources with per-file ISA flags) plug in here,
 * chosen from cpuid with the OS support check (xgetbv).
 */
#include <string.h>
#include "internal.h"

#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64)
#define DRNN_X86 1
#include <xmmintrin.h>
#include <cpuid.h>
#endif

static const drnn_kernel_table portable_table = {
    "portable",
    drnn_gemm_nt_portable,
};

static const drnn_kernel_table *active = &portable_table;

const drnn_kernel_table *drnn_kernels(void)
{
    return active;
}

int drnn_select_isa(const char *name)
{
    if (!name || strcmp(name, "auto") == 0 || strcmp(name, "portable") == 0) {
        active = &portable_table;
        return DRNN_OK;
    }
    return DRNN_ERR_ARGUMENT;
}

const char *drnn_isa_name(void)
{
    return drnn_kernels()->isa;
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
    static char buf[128];
    buf[0] = '\0';
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
