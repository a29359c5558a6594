"""kernels/preprocess.cu as a preprocessor: on the CPU twin or on the GPU.

Both run every ROI of a call in TWO kernel launches (grid.z = ROI): the per-ROI
tap table (preprocess_taps), then one thread per output pixel. The twin passes
host addresses straight to the compiled kernels (zero copies) and runs each
launch on ``threads`` host threads; the GPU path uploads each distinct frame
once, launches, and copies the written slots back into ``out``.
"""

from __future__ import annotations

import logging

import numpy as np

from ...kernels.align import align_depth_to_color as kernel_align
from ...kernels.loader import cuda_context, load
from . import PREPROCESS
from .base import check_batch, check_normalisation, scale_bias

log = logging.getLogger(__name__)

BLOCK = (32, 8)  # output pixels per block: 32 columns (a warp, coalesced) x 8 rows
TAP_BLOCK = 128  # taps per block of preprocess_taps
ROI_FIELDS = 5  # x0, y0, width, height, row stride (elements); matches preprocess.cu
TAP_BYTES = 16  # sizeof(Tap) in common.cuh: int i0, i1; float w0, w1


def roi_table(images, boxes, itemsize: int) -> np.ndarray:
    table = np.empty((len(boxes), ROI_FIELDS), np.int32)
    for i, (img, (x0, y0, x1, y1)) in enumerate(zip(images, boxes)):
        table[i] = (x0, y0, x1 - x0, y1 - y0, img.strides[0] // itemsize)
    return table


class KernelPreprocessor:
    def __init__(self, backend: str, size: int, mean, std):
        self.name = backend
        self.size, self.mean, self.std = check_normalisation(size, mean, std)
        self._scale, self._bias = scale_bias(self.mean, self.std)
        self._mod = load("preprocess", backend)  # builds/compiles now, so errors surface early
        self._gpu = _GpuBuffers() if backend == "cuda" else None
        self._taps = np.empty(0, np.uint8)  # the twin's tap table, grown on demand

    def align(self, depth, depth_K, color_K, color_size, T_color_depth, depth_units_m, window=None):
        """Depth registered to the colour camera by kernels/align.cu on this backend (twin or GPU)."""
        return kernel_align(depth, depth_K, color_K, color_size, T_color_depth, depth_units_m,
                            backend=self.name, window=window)

    @property
    def threads(self) -> int:
        """Host threads per twin launch (shared by every user of the loaded module)."""
        return self._mod.threads

    def set_threads(self, n: int) -> None:
        self._mod.set_threads(n)

    def _grid(self, n: int) -> tuple[int, int, int]:
        bx, by = BLOCK
        return ((self.size + bx - 1) // bx, (self.size + by - 1) // by, n)

    def _tap_grid(self, n: int) -> tuple[int, int, int]:
        return ((self.size + TAP_BLOCK - 1) // TAP_BLOCK, 2, n)

    def _twin_launch(self, kernel, srcs, table, out, tail) -> None:
        n = len(table)
        nbytes = n * 2 * self.size * TAP_BYTES
        if self._taps.nbytes < nbytes:
            self._taps = np.empty(nbytes, np.uint8)
        taps = self._taps.ctypes.data
        self._mod.launch("preprocess_taps", self._tap_grid(n), (TAP_BLOCK,), table.ctypes.data,
                         self.size, taps)
        self._mod.launch(kernel, self._grid(n), BLOCK, srcs.ctypes.data, table.ctypes.data, taps,
                         self.size, out.ctypes.data, *tail)

    def _rgb_args(self):
        return (*(float(v) for v in self._scale), *(float(v) for v in self._bias))

    def run(self, images, rois, out, start: int = 0) -> None:
        boxes = check_batch(images, rois, out, start, self.size, rgb=True)
        if not boxes:
            return
        kernel = "preprocess_rgb_f32" if out.dtype == np.float32 else "preprocess_rgb_f16"
        table = roi_table(images, boxes, 1)
        item, plane = out.strides[0] // out.itemsize, out.strides[1] // out.itemsize
        tail = (item, plane, start, *self._rgb_args())
        if self._gpu is None:
            srcs = np.array([img.ctypes.data for img in images], np.uint64)
            self._twin_launch(kernel, srcs, table, out, tail)
        else:
            self._gpu.run(self._mod, kernel, self._grid(len(boxes)), self._tap_grid(len(boxes)),
                          images, table, out, start, self.size, tail)

    def run_float(self, planes, rois, out, start: int, channel: int, scale: float = 1.0,
                  offset: float = 0.0) -> None:
        boxes = check_batch(planes, rois, out, start, self.size, rgb=False, channel=channel)
        if not boxes:
            return
        kernel = "resize_plane_f32" if out.dtype == np.float32 else "resize_plane_f16"
        table = roi_table(planes, boxes, 4)
        item, plane = out.strides[0] // out.itemsize, out.strides[1] // out.itemsize
        tail = (item, plane, start, channel, float(scale), float(offset))
        if self._gpu is None:
            srcs = np.array([p.ctypes.data for p in planes], np.uint64)
            self._twin_launch(kernel, srcs, table, out, tail)
        else:
            self._gpu.run(self._mod, kernel, self._grid(len(boxes)), self._tap_grid(len(boxes)),
                          planes, table, out, start, self.size, tail)


class _GpuBuffers:
    """Device copies of the frames, the tables and the batch, reused between calls.

    Untested off-device (no GPU here): `rig selftest` on a GPU checks it against
    the CPU twin.
    """

    def __init__(self):
        self._ctx = cuda_context
        self._frames: dict[tuple, object] = {}  # (shape, dtype, slot) -> DeviceAllocation
        self._out = None
        self._out_nbytes = 0
        self._stream = None
        self._last = None

    def time_last_kernel(self, repeats: int = 50) -> float:
        """Median milliseconds of the last call's launches (tap table + pixels; frames
        already on the GPU), timed with CUDA events: the "8 ROIs under 1 ms" figure."""
        mod, launches = self._last
        times = []
        with self._ctx() as drv:
            for _ in range(repeats):
                t0, t1 = drv.Event(), drv.Event()
                t0.record(self._stream)
                for kernel, grid, block, args in launches:
                    mod.launch(kernel, grid, block, *args, stream=self._stream)
                t1.record(self._stream)
                t1.synchronize()
                times.append(t1.time_since(t0))
        return float(np.median(times))

    def _alloc(self, drv, key, nbytes):
        buf = self._frames.get(key)
        if buf is None:
            buf = drv.mem_alloc(nbytes)
            self._frames[key] = buf
        return buf

    def run(self, mod, kernel, grid, tap_grid, images, table, out, start, size, tail):
        n = len(images)
        with self._ctx() as drv:
            if self._stream is None:
                self._stream = drv.Stream()
            stream = self._stream
            if self._out is None or self._out_nbytes < out.nbytes:
                self._out = drv.mem_alloc(out.nbytes)
                self._out_nbytes = out.nbytes
            # Upload each distinct frame once; ROIs that share a frame share its copy.
            ptrs: dict[int, int] = {}
            srcs = np.empty(n, np.uint64)
            for i, img in enumerate(images):
                if id(img) not in ptrs:
                    buf = self._alloc(drv, (img.shape, img.dtype.str, len(ptrs)), img.nbytes)
                    drv.memcpy_htod_async(buf, np.ascontiguousarray(img), stream)
                    ptrs[id(img)] = int(buf)
                srcs[i] = ptrs[id(img)]
            # Uploaded frames are contiguous: fix the row strides in the table.
            for i, img in enumerate(images):
                table[i, 4] = img.shape[1] * (3 if img.ndim == 3 else 1)
            srcs_d = self._alloc(drv, ("srcs", n), srcs.nbytes)
            table_d = self._alloc(drv, ("table", n), table.nbytes)
            drv.memcpy_htod_async(srcs_d, srcs, stream)
            drv.memcpy_htod_async(table_d, table, stream)
            taps_d = self._alloc(drv, ("taps", n, size), n * 2 * size * TAP_BYTES)
            # Bring the untouched slots along so the copy back leaves them as they were.
            first = out[start:start + n]
            off = start * out.strides[0]
            drv.memcpy_htod_async(int(self._out) + off, first, stream)
            launches = [
                ("preprocess_taps", tap_grid, (TAP_BLOCK,), (int(table_d), size, int(taps_d))),
                (kernel, grid, BLOCK, (int(srcs_d), int(table_d), int(taps_d), size, int(self._out),
                                       *tail)),
            ]
            for name, g, b, args in launches:
                mod.launch(name, g, b, *args, stream=stream)
            self._last = (mod, launches)
            drv.memcpy_dtoh_async(first, int(self._out) + off, stream)
            stream.synchronize()


@PREPROCESS.register("twin")
def twin_preprocessor(size: int, mean, std) -> KernelPreprocessor:
    """kernels/preprocess.cu compiled for the CPU (g++ through the grid-loop shim)."""
    return KernelPreprocessor("twin", size, mean, std)


@PREPROCESS.register("cuda")
def cuda_preprocessor(size: int, mean, std) -> KernelPreprocessor:
    """kernels/preprocess.cu on the GPU through pycuda."""
    return KernelPreprocessor("cuda", size, mean, std)
