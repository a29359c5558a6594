// common.cuh -- device helpers shared by the kernels (compiled by nvcc and by the CPU twin).
#pragma once
#ifndef DAMAGE_RIG_TWIN_SHIM_H
#include <cuda_fp16.h>
#endif

// Source taps of destination index d for a resize of src_len -> dst_len, with
// cv2.resize INTER_LINEAR semantics: half-pixel centres, clamped to the
// source's border.
//
// The coordinate (d + 0.5) * src/dst - 0.5 equals ((2d+1)*src - dst) / (2*dst);
// we split that fraction with exact integer arithmetic into its floor i and
// remainder r, and each weight is ONE correctly rounded float division:
// w1 = r/q, w0 = (q-r)/q. OpenCV (4.14) computes the fraction in double and
// rounds each weight to float once, so the weights agree with it. A float
// coordinate such as `(d+0.5)*scale-0.5` or even a correctly rounded float
// quotient keeps only ~2^-24 relative precision of the WHOLE coordinate: at
// x~600 the fraction is off by ~3e-5, i.e. up to 1e-4 after normalisation.
// Exact integers: |numerator| < 2^24 as long as src, dst <= 4096.
struct Tap {
    int i0, i1;  // the two source indices (equal at the border)
    float w0, w1;
};

__device__ __forceinline__ Tap bilinear_tap(int d, int src_len, int dst_len) {
    const int num = (2 * d + 1) * src_len - dst_len;
    const int den = 2 * dst_len;
    int i = num >= 0 ? num / den : -((-num + den - 1) / den);  // floor division
    const int rem = num - i * den;                               // 0 <= rem < den
    float w1 = __fdiv_rn(__int2float_rn(rem), __int2float_rn(den));
    float w0 = __fdiv_rn(__int2float_rn(den - rem), __int2float_rn(den));
    if (i < 0) {
        i = 0;
        w0 = 1.0f;
        w1 = 0.0f;
    }
    if (i >= src_len - 1) {
        i = src_len - 1;
        w0 = 1.0f;
        w1 = 0.0f;
    }
    Tap t;
    t.i0 = i;
    t.i1 = min(i + 1, src_len - 1);
    t.w0 = w0;
    t.w1 = w1;
    return t;
}

// a*w0 + b*w1, in the order OpenCV's linear resize evaluates it, without FMA.
__device__ __forceinline__ float lerp_rn(float a, float b, float w0, float w1) {
    return __fadd_rn(__fmul_rn(a, w0), __fmul_rn(b, w1));
}

__device__ __forceinline__ void store_value(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_value(__half* p, float v) { *p = __float2half_rn(v); }
