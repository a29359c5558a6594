// preprocess.cu -- fused crop + bilinear resize + normalise + HWC->CHW for a batch of ROIs.
//
// One launch handles every ROI of a batch: blockIdx.y is the ROI, and each
// thread writes one output pixel (its 3 channels) of that ROI's size x size
// square, straight into the network's (N, C, size, size) input buffer at batch
// index start + roi. Channels other than the ones written are left untouched.
//
// Per-ROI descriptors (int32, ROI_FIELDS per ROI): x0, y0, width, height,
// row_stride (in elements of the source: bytes for uint8 RGB, floats for
// planes). srcs[r] is the base address of ROI r's image (a device pointer on
// the GPU, a host pointer in the CPU twin); several ROIs may share one image.
#include "common.cuh"

#define ROI_FIELDS 5

template <typename OutT>
__device__ __forceinline__ void rgb_body(const unsigned long long* srcs, const int* rois, int size,
                                         OutT* out, int item_stride, int plane_stride, int start,
                                         float s0, float s1, float s2, float b0, float b1, float b2) {
    const int r = blockIdx.y;
    const int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= size * size) return;
    const int ox = p % size;
    const int oy = p / size;
    const int* d = rois + r * ROI_FIELDS;
    const int x0 = d[0], y0 = d[1], w = d[2], h = d[3], stride = d[4];
    const unsigned char* img = reinterpret_cast<const unsigned char*>(srcs[r]);

    const Tap tx = bilinear_tap(ox, w, size);
    const Tap ty = bilinear_tap(oy, h, size);
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
__device__ __forceinline__ void plane_body(const unsigned long long* srcs, const int* rois, int size,
                                           OutT* out, int item_stride, int plane_stride, int start,
                                           int channel, float scale, float offset) {
    const int r = blockIdx.y;
    const int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= size * size) return;
    const int ox = p % size;
    const int oy = p / size;
    const int* d = rois + r * ROI_FIELDS;
    const int x0 = d[0], y0 = d[1], w = d[2], h = d[3], stride = d[4];
    const float* img = reinterpret_cast<const float*>(srcs[r]);

    const Tap tx = bilinear_tap(ox, w, size);
    const Tap ty = bilinear_tap(oy, h, size);
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
extern "C" __global__ void preprocess_rgb_f32(const unsigned long long* srcs, const int* rois, int size,
                                              float* out, int item_stride, int plane_stride, int start,
                                              float s0, float s1, float s2, float b0, float b1, float b2) {
    rgb_body<float>(srcs, rois, size, out, item_stride, plane_stride, start, s0, s1, s2, b0, b1, b2);
}

extern "C" __global__ void preprocess_rgb_f16(const unsigned long long* srcs, const int* rois, int size,
                                              __half* out, int item_stride, int plane_stride, int start,
                                              float s0, float s1, float s2, float b0, float b1, float b2) {
    rgb_body<__half>(srcs, rois, size, out, item_stride, plane_stride, start, s0, s1, s2, b0, b1, b2);
}

// out[start+r, channel] = bilinear(crop_r) * scale + offset, for float32 planes (depth, height).
extern "C" __global__ void resize_plane_f32(const unsigned long long* srcs, const int* rois, int size,
                                            float* out, int item_stride, int plane_stride, int start,
                                            int channel, float scale, float offset) {
    plane_body<float>(srcs, rois, size, out, item_stride, plane_stride, start, channel, scale, offset);
}

extern "C" __global__ void resize_plane_f16(const unsigned long long* srcs, const int* rois, int size,
                                            __half* out, int item_stride, int plane_stride, int start,
                                            int channel, float scale, float offset) {
    plane_body<__half>(srcs, rois, size, out, item_stride, plane_stride, start, channel, scale, offset);
}
