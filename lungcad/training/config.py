"""Settings of the training stage (the ``train`` section of params.yaml)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lungcad.params import read_section, reject_unknown


@dataclass(frozen=True)
class ModelConfig:
    """Network shape: a MONAI 3D ResNet backbone, a 256-d feature, two heads.

    Attributes:
        widths: channels of the four residual stages.
        blocks: residual blocks per stage.
        feature_dim: size of the shared feature both heads read.
        dropout: dropout before the heads.
        attributes: a third head predicts the eight LIDC characteristics and the diameter
            (``lungcad.training.attributes``) from the shared feature.
        hierarchical: the malignancy head reads the predicted attributes beside the feature
            (attributes first, malignancy from them; needs ``attributes``).
        spread: the malignancy head also predicts the readers' spread: malignancy becomes a
            Gaussian N(mean, sd²) over one reader's rating, trained by its negative
            log-likelihood of the readers' ratings (``lungcad.training.losses``).
    """

    widths: tuple[int, ...] = (16, 32, 64, 128)
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    feature_dim: int = 256
    dropout: float = 0.2
    attributes: bool = False
    hierarchical: bool = False
    spread: bool = False

    def __post_init__(self) -> None:
        if self.hierarchical and not self.attributes:
            raise ValueError("train.model.hierarchical needs train.model.attributes: true")


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation of training cubes (all seeded).

    Attributes:
        flip: random flips along each axis.
        rot90: random 90-degree rotations in the axial plane.
        shift_mm: largest random shift of the cube content (voxels are 1 mm).
        hu_jitter: largest random HU offset added to a cube.
    """

    flip: bool = True
    rot90: bool = True
    shift_mm: int = 4
    hu_jitter: float = 20.0


@dataclass(frozen=True)
class TrainConfig:
    """What ``lungcad train`` does.

    Attributes:
        experiment: MLflow experiment the run is logged to.
        seed: seeds weights, shuffling, augmentation and dropout.
        epochs, batch_size, lr, weight_decay: AdamW + cosine schedule over all epochs.
        lambda_det, lambda_mal: loss weights, L = lambda_det * L_det + lambda_mal * L_mal.
        lambda_attr: weight of the attribute loss (SmoothL1 on the normalised attributes of
            nodule cubes), added to L; needs ``model.attributes``.
        det_loss: "bce" (BCE with logits) or "focal".
        focal_gamma: focusing parameter of the focal loss.
        mal_on: "nodules" (SmoothL1 on nodule cubes only) or "all" (negatives target 1).
        mal_weighting: "none", or "agreement": each nodule's malignancy loss weighs
            1 / (1 + the readers' standard deviation), so nodules the readers agree on
            count more (index column ``malignancy_std``).
        grad_clip: max gradient norm.
        window_hu: HU mapped to [0, 1] (clipped) at the model input.
        amp: mixed precision on CUDA ("auto": bf16 where supported, else fp16; "off").
        device: "auto", "cpu" or "cuda".
        select_metric: validation metric that picks the best epoch (higher is better):
            "val_objective" = val_auc - val_mae / 4, "val_auc", or "neg_val_mae".
        num_workers: DataLoader worker processes of the streaming input path (cubes not
            resident on the device); persistent across epochs.
        deterministic: use deterministic algorithms (reproducible, slower on GPU); when
            off, cuDNN picks its fastest kernels (``cudnn.benchmark``).
        channels_last: channels_last_3d memory format.
        compile: torch.compile the model.
        data_on_device: "auto" (the train and val cubes go to the device when they take
            under 40 % of its free memory; RAM on the CPU), "true" or "false".
        sync_every: training steps between host syncs (NaN/inf check, progress bar);
            every step still records the first non-finite loss on the device.
        eval_batch_size: cubes per forward pass in validation.
    """

    experiment: str = "lungcad"
    seed: int = 0
    epochs: int = 12
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    lambda_det: float = 1.0
    lambda_mal: float = 0.5
    lambda_attr: float = 0.0
    det_loss: str = "bce"
    focal_gamma: float = 2.0
    mal_on: str = "nodules"
    mal_weighting: str = "none"
    grad_clip: float = 1.0
    window_hu: tuple[float, float] = (-1000.0, 400.0)
    amp: str = "auto"
    device: str = "auto"
    select_metric: str = "val_objective"
    num_workers: int = 0
    deterministic: bool = True
    channels_last: bool = False
    compile: bool = False
    data_on_device: str = "auto"
    sync_every: int = 50
    eval_batch_size: int = 64
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        choices = {
            "det_loss": ("bce", "focal"),
            "mal_on": ("nodules", "all"),
            "mal_weighting": ("none", "agreement"),
            "amp": ("auto", "fp16", "bf16", "off"),
            "device": ("auto", "cpu", "cuda"),
            "select_metric": ("val_objective", "val_auc", "neg_val_mae"),
            "data_on_device": ("auto", "true", "false"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"train.{name}={getattr(self, name)!r}: choose one of {allowed}")
        positive = ("epochs", "batch_size", "lr", "sync_every", "eval_batch_size")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"train.{name} must be > 0 (got {getattr(self, name)})")
        if self.lambda_attr < 0:
            raise ValueError(f"train.lambda_attr must be >= 0 (got {self.lambda_attr})")
        if self.lambda_attr > 0 and not self.model.attributes:
            raise ValueError(
                "train.lambda_attr > 0 needs train.model.attributes: true (the attribute head)"
            )
        if self.window_hu[0] >= self.window_hu[1]:
            raise ValueError(
                f"train.window_hu {self.window_hu} must be (low, high) with low < high"
            )

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> TrainConfig:
        values = dict(values)
        nested = {"model": ModelConfig, "augment": AugmentConfig}
        reject_unknown(values, cls, "train")
        for key, kind in nested.items():
            sub = values.get(key) or {}
            reject_unknown(sub, kind, f"train.{key}")
            values[key] = kind(
                **{k: tuple(v) if isinstance(v, list) else v for k, v in sub.items()}
            )
        if isinstance(values.get("data_on_device"), bool):  # YAML true/false
            values["data_on_device"] = str(values["data_on_device"]).lower()
        if "window_hu" in values:
            values["window_hu"] = tuple(float(v) for v in values["window_hu"])
        return cls(**values)

    @classmethod
    def from_params(cls, params_file: str | Path, section: str = "train") -> TrainConfig:
        return cls.from_mapping(read_section(params_file, section))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def flat(self) -> dict[str, Any]:
        """Flattened ``{"model.widths": …}`` view for experiment trackers."""
        out: dict[str, Any] = {}
        for key, value in self.to_dict().items():
            if isinstance(value, dict):
                out.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                out[key] = value
        return out

    def replace(self, **changes: Any) -> TrainConfig:
        return TrainConfig.from_mapping({**self.to_dict(), **changes})
