"""Building the network for a device and loading it back from a lungcad checkpoint."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from lungcad.config import CandidatesConfig, PreprocessConfig, TrainConfig, validate_section
from lungcad.core.model.checkpoint import checkpoint_sha256, load_checkpoint
from lungcad.core.model.ensemble import EnsembleNet, is_ensemble
from lungcad.core.model.network import NoduleNet
from lungcad.errors import LungcadError

log = logging.getLogger(__name__)


class DeviceError(LungcadError, RuntimeError):
    """The device asked for is not on this machine."""


class CheckpointContentError(LungcadError, ValueError):
    """A checkpoint whose contents do not fit together (settings of the wrong type, weights
    that do not fit the network its settings describe)."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("train.device=cuda but no CUDA device is available; use auto or cpu")
    return torch.device(name)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full fp32."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def build_model(config: TrainConfig, device: torch.device) -> NoduleNet:
    model = NoduleNet(config.model).to(device)
    return model.to_channels_last() if config.channels_last else model


def load_model(
    checkpoint: str | Path, device: torch.device | str = "cpu"
) -> tuple[NoduleNet, TrainConfig]:
    """Rebuild the network of a lungcad checkpoint with its weights (in channels_last_3d,
    for faster inference, when it was trained so); an :class:`EnsembleNet` of its members
    for an ensemble checkpoint."""
    model, config, _ = _load_parts(checkpoint, device)
    return model, config


def load(checkpoint: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """A checkpoint's :class:`LoadedModel`, from one read of it."""
    model, config, cut = _load_parts(checkpoint, device)
    return LoadedModel(model, config, cut, checkpoint_sha256(checkpoint))


def _load_parts(
    checkpoint: str | Path, device: torch.device | str = "cpu"
) -> tuple[NoduleNet, TrainConfig, CubeCut]:
    """``load_model`` and ``cube_cut`` from one read of the checkpoint."""
    state = load_checkpoint(checkpoint, device)
    source = f"checkpoint {checkpoint}"
    config = checkpoint_train_config(state, source)
    if is_ensemble(state):
        if not isinstance(state.get("members"), list) or not state["members"]:
            raise CheckpointContentError(f"{source}: an ensemble without a list of members")
        members = [
            _build_loaded(member, f"{source}, member {i}", device)
            for i, member in enumerate(state["members"])
        ]
        model = EnsembleNet(members).eval()
    else:
        model = _build_loaded(state, source, device)
    return model, config, _cut(state, source)


def _build_loaded(state: dict, source: str, device: torch.device | str) -> NoduleNet:
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise CheckpointContentError(f"{source}: its weights are not a state dict")
    model = build_model(checkpoint_train_config(state, source), torch.device(device))
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        first = " ".join(str(exc).split())[:300]
        raise CheckpointContentError(
            f"{source}: its weights do not fit the network its settings describe ({first}); "
            "use a checkpoint written by `lungcad train`"
        ) from None
    return model.eval()


def checkpoint_train_config(state: dict, source: str) -> TrainConfig:
    """The validated train settings of a loaded checkpoint. A setting that shapes the
    network or its input and that a checkpoint written before it existed does not hold takes
    the value every network had then, not today's default: no segmentation decoder (``detect``
    then sizes findings from the cube's centre), no centre heatmap, whole cubes (no training
    crops)."""
    config = state.get("config") if isinstance(state, dict) else None
    if not isinstance(config, dict):
        raise CheckpointContentError(f"{source}: its train settings are not a mapping")
    model = config.get("model", {})
    if isinstance(model, dict):
        if "segmentation" not in model:
            config = {**config, "lambda_seg": 0.0}
            model = {**model, "segmentation": False}
        config = {**config, "model": {"centre_head": False, **model}}
    augment = config.get("augment", {})
    if isinstance(augment, dict):
        config = {**config, "augment": {"crop_size": 0, **augment}}
    return validate_section(TrainConfig, config, source, "train")


@dataclass(frozen=True)
class CubeCut:
    """How a model's input cubes are cut: the training data's preprocess and candidate
    settings, carried by the checkpoint so that detection and explanation cut cubes exactly
    as the model was trained on (the HU window is in the train settings)."""

    preprocess: PreprocessConfig
    candidates: CandidatesConfig


@dataclass(frozen=True)
class LoadedModel:
    """A lungcad checkpoint, loaded (``load``): what inference needs travels together.

    Attributes:
        network: the network (or the ensemble of its members), in eval mode.
        config: its train settings (the HU window among them).
        cut: how its cubes are cut (the training data's settings).
        sha256: the checkpoint file's SHA-256 (what a run's outputs are keyed by).
    """

    network: torch.nn.Module
    config: TrainConfig
    cut: CubeCut
    sha256: str = ""

    @property
    def window(self) -> tuple[float, float]:
        """The HU window the network reads (the train settings')."""
        return tuple(self.config.window_hu)

    @property
    def head_cube(self) -> int:
        """Voxels per side of the cubes its heads learnt on: the training crops
        (``train.augment.crop_size``), else the whole cubes."""
        return self.config.augment.crop_size or self.cut.preprocess.cube_size


def cube_cut(checkpoint: str | Path) -> CubeCut:
    """The :class:`CubeCut` a checkpoint was trained with.

    A checkpoint written before it carried its cut gets the schema's defaults (the
    settings lungcad has always cut cubes with), and a warning says so.
    """
    return _cut(load_checkpoint(checkpoint), f"checkpoint {checkpoint}")


def _cut(state: dict, source: str) -> CubeCut:
    cut = state.get("cut_settings") or {}
    if not isinstance(cut, dict) or not all(
        isinstance(cut.get(k, {}), dict) for k in ("preprocess", "candidates")
    ):
        raise CheckpointContentError(
            f"{source}: its cut_settings are a {type(cut).__name__} with the wrong parts, not "
            "the preprocess and candidates settings; use a checkpoint written by `lungcad train`"
        )
    if not cut:
        log.warning("%s carries no cube settings; using the default preprocess settings", source)
    return CubeCut(
        validate_section(PreprocessConfig, cut.get("preprocess", {}), source, "preprocess"),
        validate_section(CandidatesConfig, cut.get("candidates", {}), source, "candidates"),
    )
