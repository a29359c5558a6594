// align.cu -- depth-to-colour alignment (a z-buffer built with atomicMin).
//
// Identical, bit for bit, to damage_rig.calibration.align.align_depth_to_color,
// which documents every rounding step (it is librealsense's x86 rs.align). The
// steps here follow that docstring literally: float32 throughout, one rounding
// per operation (the _rn intrinsics stop nvcc from fusing a*b+c), and the
// projected corner u + 0.5 converted like C's (int) cast on x86: truncation
// toward zero, NaN or out of int32 range -> INT32_MIN (CUDA's conversion would
// saturate instead, so the range is checked first).
//
// Three launches per frame, over a WINDOW of the colour image (x0, y0, width,
// height; the whole image, or an item's ROI):
//   align_clear:   zbuf[i] = 0xFFFFFFFF (empty)              one thread per window pixel
//   align_scatter: each depth pixel atomicMin()s its raw value into every colour
//                  pixel of its rectangle clipped to the window
//                                                           one thread per depth pixel
//   align_finish:  out[i] = zbuf[i] == empty ? 0 : zbuf[i]   one thread per window pixel
// Clipping to a window that lies inside the image skips exactly the pixels outside
// it one by one, so a window's result is the full frame's, bit for bit, inside it.
// The smallest value wins whatever order the threads run in, so the GPU, the
// serial CPU twin and the numpy reference agree exactly.
//
// params (float32[21]): dfx dfy dppx dppy  cfx cfy cppx cppy  R00..R22 (row-major)  t0 t1 t2  scale
#include "common.cuh"

#define ALIGN_EMPTY 0xFFFFFFFFu
#define ALIGN_INT_MIN (-2147483647 - 1)

// x86 cvttss2si (C's (int) cast): toward zero; NaN, inf or outside int32 -> INT32_MIN.
__device__ __forceinline__ int trunc_x86(float v) {
    if (!(v >= -2147483648.0f && v < 2147483648.0f)) return ALIGN_INT_MIN;
    return __float2int_rz(v);
}

__device__ __forceinline__ void project_corner(const float* P, int i, int j, float z, float off, int* U,
                                               int* V) {
    const float x = __fdiv_rn(__fsub_rn(__fadd_rn(__int2float_rn(i), off), P[2]), P[0]);
    const float y = __fdiv_rn(__fsub_rn(__fadd_rn(__int2float_rn(j), off), P[3]), P[1]);
    const float px = __fmul_rn(z, x);
    const float py = __fmul_rn(z, y);
    const float* R = P + 8;
    const float* t = P + 17;
    const float X = __fadd_rn(__fmul_rn(R[0], px), __fadd_rn(__fmul_rn(R[1], py), __fadd_rn(__fmul_rn(R[2], z), t[0])));
    const float Y = __fadd_rn(__fmul_rn(R[3], px), __fadd_rn(__fmul_rn(R[4], py), __fadd_rn(__fmul_rn(R[5], z), t[1])));
    const float Z = __fadd_rn(__fmul_rn(R[6], px), __fadd_rn(__fmul_rn(R[7], py), __fadd_rn(__fmul_rn(R[8], z), t[2])));
    const float u = __fadd_rn(__fadd_rn(__fmul_rn(__fdiv_rn(X, Z), P[4]), P[6]), 0.5f);
    const float v = __fadd_rn(__fadd_rn(__fmul_rn(__fdiv_rn(Y, Z), P[5]), P[7]), 0.5f);
    *U = trunc_x86(u);
    *V = trunc_x86(v);
}

extern "C" __global__ void align_clear(unsigned int* zbuf, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) zbuf[i] = ALIGN_EMPTY;
}

extern "C" __global__ void align_scatter(const unsigned short* depth, int dw, int dh, int stride,
                                         const float* params, int rectangles, unsigned int* zbuf, int wx0,
                                         int wy0, int ww, int wh) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const int j = blockIdx.y;
    if (i >= dw || j >= dh) return;
    const unsigned short d = depth[static_cast<long long>(j) * stride + i];
    if (d == 0) return;
    const float z = __fmul_rn(__int2float_rn(d), params[20]);
    int u0, v0, u1, v1;
    project_corner(params, i, j, z, -0.5f, &u0, &v0);
    if (rectangles) {
        project_corner(params, i, j, z, 0.5f, &u1, &v1);
    } else {
        u1 = u0;
        v1 = v0;
    }
    // Clip to the window (pixels outside are skipped one by one, the rest is written).
    const int x0 = max(u0, wx0), y0 = max(v0, wy0);
    const int x1 = min(u1, wx0 + ww - 1), y1 = min(v1, wy0 + wh - 1);
    for (int y = y0; y <= y1; ++y)
        for (int x = x0; x <= x1; ++x)
            atomicMin(zbuf + static_cast<long long>(y - wy0) * ww + (x - wx0), static_cast<unsigned int>(d));
}

extern "C" __global__ void align_finish(const unsigned int* zbuf, unsigned short* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const unsigned int z = zbuf[i];
    out[i] = z == ALIGN_EMPTY ? 0 : static_cast<unsigned short>(z);
}
