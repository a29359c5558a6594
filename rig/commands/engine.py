"""`rig engine build --model MODEL_DIR [--fp16] [--max-batch N]`: build the TensorRT engine on the device."""

from __future__ import annotations

NAME = "engine"
HELP = "build the TensorRT engine for a model on this device (rig engine build --model DIR)"


def add_arguments(p):
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    b = sub.add_parser("build", help="build (or rebuild) the engine and write it with its key")
    b.add_argument("--model", required=True, help="model directory holding model.onnx ('shipped' for the shipped model)")
    b.add_argument("--fp16", action="store_true", help="allow fp16 kernels (check with rig selftest)")
    b.add_argument("--max-batch", type=int, default=8, help="largest batch of the profile (1..N), default 8")
    b.add_argument("--engine-dir", default=None, help="where engines live (default: the user cache dir)")
    b.add_argument("--force", action="store_true", help="rebuild even when a matching engine exists")


def model_onnx(model_dir: str):
    """model.onnx of a model directory ('shipped' = the model in the package)."""
    from pathlib import Path

    from ..foundation.errors import ModelError

    if model_dir == "shipped":
        from ...models import SHIPPED_DIR

        d = SHIPPED_DIR
    else:
        d = Path(model_dir).expanduser()
    if d.is_file() and d.suffix == ".onnx":
        return d
    onnx = d / "model.onnx"
    if not onnx.is_file():
        raise ModelError(f"{onnx} does not exist; --model must be a model directory with model.onnx")
    return onnx


def run(args) -> int:
    from ..infer.tensorrt import build_engine, device_identity, make_key, resolve_engine

    onnx = model_onnx(args.model)
    version, gpu, cc = device_identity()  # DeviceError without TensorRT/GPU
    key = make_key(onnx, version, gpu, cc, args.fp16, args.max_batch)
    path, action = resolve_engine(args.engine_dir, onnx, key, rebuild=True)
    if action == "load" and not args.force:
        print(f"{path}: up to date ({key.precision}, batch 1..{args.max_batch}, {gpu})")
        return 0
    build_engine(onnx, path, key)
    print(f"built {path}\nkey: {key.to_dict()}")
    return 0
