// height.cu -- height of every depth pixel above the belt plane, for the trigger.
//
// For depth pixel (u, v) with reading z = depth * units_m (metres), the point in
// the depth camera frame is P = z * ((u - cx)/fx, (v - cy)/fy, 1); its signed
// height above the plane n.X + d = 0 (n a unit normal pointing away from the
// belt, towards the camera) is n.P + d. Output: float32 millimetres, NaN where
// the camera gave no reading (depth == 0), so "height > threshold" is false
// there. One output pixel per thread; blockIdx.y is the image row.
#include "common.cuh"

extern "C" __global__ void height_map(const unsigned short* depth, int width, int height, int stride,
                                      float units_m, float fx, float fy, float cx, float cy,
                                      float nx, float ny, float nz, float d_m, float* out) {
    const int u = blockIdx.x * blockDim.x + threadIdx.x;
    const int v = blockIdx.y;
    if (u >= width || v >= height) return;
    const unsigned short raw = depth[static_cast<long long>(v) * stride + u];
    float* dst = out + static_cast<long long>(v) * width + u;
    if (raw == 0) {
        *dst = __int_as_float(0x7fc00000);  // quiet NaN: no reading
        return;
    }
    const float z = __fmul_rn(__int2float_rn(raw), units_m);
    const float x = __fmul_rn(__fdiv_rn(__fsub_rn(__int2float_rn(u), cx), fx), z);
    const float y = __fmul_rn(__fdiv_rn(__fsub_rn(__int2float_rn(v), cy), fy), z);
    const float h = __fadd_rn(__fadd_rn(__fadd_rn(__fmul_rn(nx, x), __fmul_rn(ny, y)), __fmul_rn(nz, z)), d_m);
    *dst = __fmul_rn(h, 1000.0f);
}
