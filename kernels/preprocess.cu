// preprocess.cu -- fused crop + bilinear resize + normalise + HWC->CHW for a batch of ROIs.
//
// Two launches per batch, each covering every ROI (blockIdx.z is the ROI):
//  1. preprocess_taps: one thread per (ROI, axis, output index) computes that
//     column's or row's source taps (indices and weights, common.cuh's exact
//     integer maths) into a table;
//  2. preprocess_rgb_* / resize_plane_*: one thread per output pixel (2D blocks:
//     x = output column, y = output row) reads its column's and row's taps and
//     writes that pixel (its 3 channels) straight into the network's
//     (N, C, size, size) input buffer at batch index start + roi. Channels other
//     than the ones written are left untouched.
// Why a table: each tap costs an integer division and two float divisions; per
// pixel that was the larger part of the work, yet every ROI has only 2*size
// distinct taps. Reading them from a table gives the same bits on both sides.
//
// Per-ROI descriptors (int32, ROI_FIELDS per ROI): x0, y0, width, height,
// row_stride (in elements of the source: bytes for uint8 RGB, floats for
// planes). srcs[r] is the base address of ROI r's image (a device pointer on
// the GPU, a host pointer in the CPU twin); several ROIs may share one image.
// Tap table: taps[(r * 2 + axis) * size + d], axis 0 = columns (x), 1 = rows (y).
#include "common.cuh"

#define ROI_FIELDS 5

// grid (ceil(size / blockDim.x), 2, n_rois), 1D blocks.
extern "C" __global__ void preprocess_taps(const int* rois, int size, Tap* taps) {
    const int d = blockIdx.x * blockDim.x + threadIdx.x;
    const int axis = blockIdx.y;
    const int r = blockIdx.z;
    if (d >= size) return;
    const int src_len = rois[r * ROI_FIELDS + 2 + axis];  // width for x, height for y
    taps[(r * 2 + axis) * size + d] = bilinear_tap(d, src_len, size);
}

template <typename OutT>
__device__ __forceinline__ void rgb_body(const unsigned long long* srcs, const int* rois, const Tap* taps,
                                         int size, OutT* out, int item_stride, int plane_stride, int start,
                                         float s0, float s1, float s2, float b0, float b1, float b2) {
    const int ox = blockIdx.x * blockDim.x + threadIdx.x;
    const int oy = blockIdx.y * blockDim.y + threadIdx.y;
    const int r = blockIdx.z;
    if (ox >= size || oy >= size) return;
    const int p = oy * size + ox;
    const int* d = rois + r * ROI_FIELDS;
    const int x0 = d[0], y0 = d[1], stride = d[4];
    const unsigned char* img = reinterpret_cast<const unsigned char*>(srcs[r]);

    const Tap tx = taps[(r * 2) * size + ox];
    const Tap ty = taps[(r * 2 + 1) * size + oy];
    const unsigned char* row0 = img + static_cast<long long>(y0 + ty.i0) * stride;
    const unsigned char* row1 = img + static_cast<long long>(y0 + ty.i1) * stride;
    const int c0 = (x0 + tx.i0) * 3;
    const int c1 = (x0 + tx.i1) * 3;
    const float scale[3] = {s0, s1, s2};
    const float bias[3] = {b0, b1, b2};
    OutT* dst = out + static_cast<long long>(start + r) * item_stride + p;
    for (int c = 0; c < 3; ++c) {
        const float top = lerp_rn(row0[c0 + c], row0[c1 + c], tx.w0, tx.w1);
        const float bot = lerp_rn(row1[c0 + c], row1[c1 + c], tx.w0, tx.w1);
        const float v = lerp_rn(top, bot, ty.w0, ty.w1);
        store_value(dst + c * plane_stride, __fadd_rn(__fmul_rn(v, scale[c]), bias[c]));
    }
}

template <typename OutT>
__device__ __forceinline__ void plane_body(const unsigned long long* srcs, const int* rois, const Tap* taps,
                                           int size, OutT* out, int item_stride, int plane_stride, int start,
                                           int channel, float scale, float offset) {
    const int ox = blockIdx.x * blockDim.x + threadIdx.x;
    const int oy = blockIdx.y * blockDim.y + threadIdx.y;
    const int r = blockIdx.z;
    if (ox >= size || oy >= size) return;
    const int p = oy * size + ox;
    const int* d = rois + r * ROI_FIELDS;
    const int x0 = d[0], y0 = d[1], stride = d[4];
    const float* img = reinterpret_cast<const float*>(srcs[r]);

    const Tap tx = taps[(r * 2) * size + ox];
    const Tap ty = taps[(r * 2 + 1) * size + oy];
    const float* row0 = img + static_cast<long long>(y0 + ty.i0) * stride;
    const float* row1 = img + static_cast<long long>(y0 + ty.i1) * stride;
    const float top = lerp_rn(row0[x0 + tx.i0], row0[x0 + tx.i1], tx.w0, tx.w1);
    const float bot = lerp_rn(row1[x0 + tx.i0], row1[x0 + tx.i1], tx.w0, tx.w1);
    const float v = lerp_rn(top, bot, ty.w0, ty.w1);
    OutT* dst = out + static_cast<long long>(start + r) * item_stride +
                static_cast<long long>(channel) * plane_stride + p;
    store_value(dst, __fadd_rn(__fmul_rn(v, scale), offset));
}

// out[start+r, c] = bilinear(crop_r)[c] * scale[c] + bias[c] for c in 0..2, where
// scale = 1/(255*std) and bias = -mean/std: ((v/255) - mean)/std, rearranged.
extern "C" __global__ void preprocess_rgb_f32(const unsigned long long* srcs, const int* rois, const Tap* taps,
                                              int size, float* out, int item_stride, int plane_stride, int start,
                                              float s0, float s1, float s2, float b0, float b1, float b2) {
    rgb_body<float>(srcs, rois, taps, size, out, item_stride, plane_stride, start, s0, s1, s2, b0, b1, b2);
}

extern "C" __global__ void preprocess_rgb_f16(const unsigned long long* srcs, const int* rois, const Tap* taps,
                                              int size, __half* out, int item_stride, int plane_stride, int start,
                                              float s0, float s1, float s2, float b0, float b1, float b2) {
    rgb_body<__half>(srcs, rois, taps, size, out, item_stride, plane_stride, start, s0, s1, s2, b0, b1, b2);
}

// out[start+r, channel] = bilinear(crop_r) * scale + offset, for float32 planes (depth, height).
extern "C" __global__ void resize_plane_f32(const unsigned long long* srcs, const int* rois, const Tap* taps,
                                            int size, float* out, int item_stride, int plane_stride, int start,
                                            int channel, float scale, float offset) {
    plane_body<float>(srcs, rois, taps, size, out, item_stride, plane_stride, start, channel, scale, offset);
}

extern "C" __global__ void resize_plane_f16(const unsigned long long* srcs, const int* rois, const Tap* taps,
                                            int size, __half* out, int item_stride, int plane_stride, int start,
                                            int channel, float scale, float offset) {
    plane_body<__half>(srcs, rois, taps, size, out, item_stride, plane_stride, start, channel, scale, offset);
}
