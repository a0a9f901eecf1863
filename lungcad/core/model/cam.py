"""3D Grad-CAM and Grad-CAM++ of lungcad's network, from MONAI's ``monai.visualize``.

Target layer: ``backbone.layer3`` by default, the deepest stage of the ResNet whose map has
more than two cells per axis (4³ cells of 16 mm on a 64³ cube; ``layer4`` is 2³, too coarse
to point at anything, ``layer2`` is 8³ but its features are local texture rather than the
evidence the heads use). Any named module of the network can be chosen instead.

Upsampling: MONAI's default interpolation (``align_corners=False``) assumes a map cell covers
the input block ``[S·i, S·(i+1))`` of a stride-``S`` layer and puts its value at that block's
centre, ``S·i + (S - 1)/2``. Every downsampling step of lungcad's network is centred (odd
kernels padded by half their width), so cell ``i`` is really centred on input voxel ``S·i``;
the default would shift every map by ``(S - 1)/2`` voxels along each axis (7.5 mm at
``layer3``) towards the far corner of the cube. ``receptive_field_upsampler`` places each cell
at its receptive-field centre instead.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.visualize import GradCAM, GradCAMpp
from monai.visualize.class_activation_maps import ModelWithHooks
from torch import nn

from lungcad.core.model.ensemble import EnsembleNet
from lungcad.core.model.network import NoduleNet, window_hu
from lungcad.errors import LungcadError

DEFAULT_LAYER = "backbone.layer3"
METHODS = {"gradcam": GradCAM, "gradcampp": GradCAMpp}
TARGETS = ("detection", "malignancy")
#: Cubes per backward pass (the activations of a batch are kept for the gradients).
EXPLAIN_BATCH_SIZE = 8


class ExplainError(LungcadError, ValueError):
    """A bad explanation request (layer, method, target or cubes); the message says which."""


class _Head(nn.Module):
    """One output of a NoduleNet as an (N, 1) score, the shape MONAI's CAMs expect."""

    def __init__(self, net: NoduleNet, target: str) -> None:
        super().__init__()
        self.net = net
        self.output = TARGETS.index(target)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[self.output][:, None]


class _Hooks(ModelWithHooks):
    """MONAI's hooks with the class score kept as (N, 1, 1, 1, 1): Grad-CAM++ multiplies it
    into the (N, C, D, H, W) gradients, which a squeezed (N,) score does not broadcast to."""

    def class_score(self, logits: torch.Tensor, class_idx: int) -> torch.Tensor:
        return logits[:, class_idx].reshape(-1, 1, 1, 1, 1)


def receptive_field_upsampler(spatial_size):
    """Upsample a (N, 1, d, h, w) map to ``spatial_size`` with cell ``i`` of a stride-``S``
    layer centred on input voxel ``S·i`` (see the module docstring); linear in between,
    constant beyond the outermost cell centres."""

    def up(cam: torch.Tensor) -> torch.Tensor:
        axes = []
        for out_n, in_n in zip(spatial_size, cam.shape[2:]):
            stride = out_n / in_n
            cell = torch.arange(out_n, dtype=cam.dtype, device=cam.device) / stride
            # grid_sample's align_corners=True: -1 is cell 0's centre, +1 the last cell's.
            axes.append(2 * cell / max(in_n - 1, 1) - 1)
        gz, gy, gx = torch.meshgrid(*axes, indexing="ij")
        grid = torch.stack([gx, gy, gz], dim=-1)[None].expand(cam.shape[0], -1, -1, -1, -1)
        return F.grid_sample(cam, grid, mode="bilinear", padding_mode="border", align_corners=True)

    return up


def _scale_to_max(cam: torch.Tensor) -> torch.Tensor:
    """Each map divided by its maximum: [0, 1], an all-zero map stays zero (MONAI's default
    normaliser maps the maximum to 0 and the minimum to 1)."""
    peak = cam.flatten(1).amax(dim=1).clamp(min=1e-12)
    return cam / peak.view(-1, *[1] * (cam.ndim - 1))


def layer_names(model: NoduleNet) -> list[str]:
    """Names of the network's modules a map can be taken from."""
    return [name for name, _ in model.named_modules() if name]


@dataclass(frozen=True)
class CamSettings:
    """What to explain and how.

    Attributes:
        target: ``detection`` (the nodule logit) or ``malignancy`` (the 1-5 rating).
        method: ``gradcam`` or ``gradcampp`` (Grad-CAM++).
        layer: the module whose activations and gradients make the map.
    """

    target: str = "detection"
    method: str = "gradcam"
    layer: str = DEFAULT_LAYER

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ExplainError(f"target {self.target!r}: choose one of {', '.join(TARGETS)}")
        if self.method not in METHODS:
            raise ExplainError(f"method {self.method!r}: choose one of {', '.join(METHODS)}")


class CubeExplainer:
    """Heat maps of one network output over HU cubes.

    Args:
        model: a NoduleNet (weights are not changed; it is put in eval mode), or an
            EnsembleNet: each member's map of the layer, averaged.
        window_hu: the HU window the network was trained with.
        settings: target, method and layer.
        device: where to compute.

    Raises:
        ExplainError: the layer is not a module of the network.

    Example:
        >>> explainer = CubeExplainer(model, (-1000.0, 400.0), CamSettings())
        >>> maps = explainer(cubes_hu)  # (N, 64, 64, 64) float32 in [0, 1]
    """

    def __init__(
        self,
        model: NoduleNet,
        window_hu: tuple[float, float],
        settings: CamSettings = CamSettings(),
        device: torch.device | str = "cpu",
    ) -> None:
        self._members = None
        self.window_hu = tuple(window_hu)
        self.settings = settings
        self.device = torch.device(device)
        if isinstance(model, EnsembleNet):
            self._members = [CubeExplainer(m, window_hu, settings, device) for m in model.members]
            return
        names = layer_names(model)
        if settings.layer not in names:
            stages = [n for n in names if n.count(".") <= 1]
            raise ExplainError(
                f"layer {settings.layer!r} is not a module of this network; choose one of "
                f"{', '.join(stages)} (or a deeper name such as backbone.layer3.0)"
            )
        # MONAI hooks the layer for good: they go on a float32 copy, so the caller's model
        # (the one that serves plain predictions, say) runs as before.
        net = copy.deepcopy(model).float().to(self.device).eval()
        self._head = _Head(net, settings.target)
        layer = f"net.{settings.layer}"
        hooks = _Hooks(self._head, layer, register_forward=True, register_backward=True)
        self._cam = METHODS[settings.method](
            hooks, layer, upsampler=receptive_field_upsampler, postprocessing=_scale_to_max
        )

    def __call__(
        self, cubes_hu: np.ndarray | torch.Tensor, batch_size: int = EXPLAIN_BATCH_SIZE
    ) -> np.ndarray:
        """(N, S, S, S) float32 maps in [0, 1] (1 at each map's maximum) of (N, S, S, S) or
        (N, 1, S, S, S) HU cubes of any dtype."""
        if self._members is not None:
            mean = np.mean([explain(cubes_hu, batch_size) for explain in self._members], axis=0)
            if not len(mean):
                return mean.astype(np.float32)
            peak = mean.reshape(len(mean), -1).max(axis=1, initial=0).clip(min=1e-12)
            return (mean / peak.reshape(-1, *[1] * (mean.ndim - 1))).astype(np.float32)
        cubes = (
            torch.as_tensor(np.asarray(cubes_hu)) if isinstance(cubes_hu, np.ndarray) else cubes_hu
        )
        if cubes.ndim == 4:
            cubes = cubes[:, None]
        if cubes.ndim != 5 or cubes.shape[1] != 1 or len(set(cubes.shape[2:])) != 1:
            raise ExplainError(
                f"cubes of shape {tuple(cubes.shape)}: expected (N, S, S, S) or (N, 1, S, S, S)"
            )
        out = []
        for start in range(0, len(cubes), batch_size):
            x = window_hu(cubes[start : start + batch_size].to(self.device).float(), self.window_hu)
            x = x.contiguous()
            with torch.enable_grad():
                cam = self._cam(x, class_idx=0)
            out.append(cam[:, 0].detach().float().cpu().numpy())
        if not out:
            return np.zeros((0, *cubes.shape[2:]), np.float32)
        return np.concatenate(out).astype(np.float32)


def randomized_like(model: NoduleNet, seed: int = 0) -> NoduleNet:
    """The same architecture with freshly initialised weights (the model-randomisation
    sanity check of Adebayo et al., 2018): a map that survives this is not explaining what
    the network learned. An ensemble: each member randomised (seeds ``seed``, ``seed`` + 1, …)."""
    if isinstance(model, EnsembleNet):
        return EnsembleNet([randomized_like(m, seed + i) for i, m in enumerate(model.members)])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = NoduleNet(model.config, model.in_channels)
    return fresh.eval()
