"""The schema of params.yaml: one pydantic model per section, holding every default once.

Every section refuses unknown keys, checks types and ranges at load time and is frozen.
Numbers follow YAML's obvious intent (``2e-3``, which YAML 1.1 reads as a string, is the
float 0.002); booleans must be YAML booleans and integers whole numbers.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, model_validator

_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _yaml_float(value: Any) -> Any:
    """``"2e-3"`` (YAML 1.1 needs a dot to read a float) is the number it spells."""
    if isinstance(value, str) and _FLOAT.match(value.strip()):
        return float(value)
    if isinstance(value, bool):
        raise ValueError("expected a number, not a boolean")
    return value


def _whole(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected a whole number, not a boolean")
    if isinstance(value, str):
        raise ValueError("expected a whole number, not text")
    return value


Float = Annotated[float, BeforeValidator(_yaml_float), Field(strict=False)]
Int = Annotated[int, BeforeValidator(_whole)]
Bool = StrictBool
Probability = Annotated[Float, Field(ge=0.0, le=1.0)]
PositiveFloat = Annotated[Float, Field(gt=0.0)]
NonNegativeFloat = Annotated[Float, Field(ge=0.0)]
Seed = Annotated[Int, Field(ge=0)]


class Section(BaseModel):
    """A params.yaml section: unknown keys refused, values typed, frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, not tuples): safe for YAML, JSON and weights-only checkpoints."""
        return self.model_dump(mode="json")

    def replace(self, **changes: Any):
        """A copy with ``changes`` applied and validated again.

        Raises:
            ConfigError: a change the schema refuses, named.
        """
        from lungcad.config.loader import validate_section

        return validate_section(type(self), {**self.model_dump(), **changes}, "changes", "")


class DataConfig(Section):
    """Where the raw scans are.

    Attributes:
        raw_root: the LIDC root (one folder per patient, DICOM series below) that the
            preprocess and detect stages read. The default is the phantom the ``phantom``
            stage writes; for real LIDC-IDRI set it to the TCIA download.
    """

    raw_root: str = "data/raw/LIDC-IDRI"


class RandomiseConfig(Section):
    """What each phantom scan's acquisition and background lung are drawn from
    (``lungcad.phantom.acquisition``).

    Attributes:
        enabled: draw them per scan; false writes every scan with the default look.
        kernels: reconstruction kernel -> share of scans (soft, standard, sharp, lung).
        dose_factor: [low, high] noise variance multiplier, drawn log-uniform.
        hu_offset: [low, high] HU calibration offset.
        motion_share: share of scans with in-plane motion blur over a band of slices ...
        motion_mm: ... of this [low, high] length.
        contrast_share: share of scans with IV contrast ...
        blood_hu: ... and their blood's [low, high] HU.
        backgrounds: background lung state -> share of scans (normal, emphysema,
            ground_glass, fibrosis, atelectasis, effusion).
        background_extent: [low, high] share of the lung a background state takes.
        thick_share: share of scans reconstructed thicker ...
        thick_factors: ... by averaging this many consecutive slices (one drawn).
    """

    enabled: bool = True
    kernels: dict[Literal["soft", "standard", "sharp", "lung"], NonNegativeFloat] = {
        "soft": 0.25,
        "standard": 0.35,
        "sharp": 0.25,
        "lung": 0.15,
    }
    dose_factor: tuple[PositiveFloat, PositiveFloat] = (0.5, 3.0)
    hu_offset: tuple[Float, Float] = (-25.0, 25.0)
    motion_share: Annotated[Float, Field(ge=0.0, le=1.0)] = 0.15
    motion_mm: tuple[NonNegativeFloat, NonNegativeFloat] = (1.0, 4.0)
    contrast_share: Annotated[Float, Field(ge=0.0, le=1.0)] = 0.5
    blood_hu: tuple[Float, Float] = (120.0, 300.0)
    backgrounds: dict[
        Literal["normal", "emphysema", "ground_glass", "fibrosis", "atelectasis", "effusion"],
        NonNegativeFloat,
    ] = {
        "normal": 0.45,
        "emphysema": 0.15,
        "ground_glass": 0.1,
        "fibrosis": 0.1,
        "atelectasis": 0.1,
        "effusion": 0.1,
    }
    background_extent: tuple[NonNegativeFloat, NonNegativeFloat] = (0.1, 0.35)
    thick_share: Annotated[Float, Field(ge=0.0, le=1.0)] = 0.15
    thick_factors: list[Annotated[Int, Field(ge=1, le=8)]] = [2, 3]


class PhantomConfig(Section):
    """The LIDC-grounded phantom (real LIDC geometry, UIDs, contours; synthetic pixels).

    Attributes:
        scans: real LIDC scans mirrored by the phantom.
        seed: seeds the synthetic anatomy and noise.
        min_readers: each chosen scan has a nodule outlined by at least this many readers.
        margin_mm: slab margin around the nodules; >= 32 keeps 64 mm cubes whole.
        format: ``dicom`` (TCIA's LIDC-IDRI layout) or ``luna16`` (``subset<k>/<uid>.mhd``
            with ``annotations.csv`` and ``annotations_excluded.csv``).
        luna16_subsets: with ``format: luna16``, the subsets the scans are dealt into.
        randomise: each scan's acquisition and background lung (``RandomiseConfig``).
    """

    scans: Annotated[Int, Field(ge=1)] = 60
    seed: Seed = 0
    min_readers: Annotated[Int, Field(ge=1, le=4)] = 3
    margin_mm: NonNegativeFloat = 34.0
    format: Literal["dicom", "luna16"] = "dicom"
    luna16_subsets: Annotated[Int, Field(ge=1)] = 10
    randomise: RandomiseConfig = RandomiseConfig()


class RealismConfig(Section):
    """How real the phantom's lungs look beside real LIDC scans.

    Attributes:
        real_root: folder of real LIDC series; without it the stage writes a report that
            says so.
        max_scans: phantom series measured.
        patches: lung patches per side for the domain classifier.
        seed: seeds patch sampling and the classifier.
    """

    real_root: str = "../shared/data/lidc-slabs"
    max_scans: Annotated[Int, Field(ge=1)] = 20
    patches: Annotated[Int, Field(ge=20)] = 400
    seed: Seed = 0


class CandidatesConfig(Section):
    """Stage 1 of whole-scan detection, shared by preprocessing (its false positives become
    ``kind=candidate`` training negatives) and detection (through the model's checkpoint).

    Attributes:
        min_response: least difference-of-Gaussians blob response (HU).
        max_candidates: per scan, best blob score first.
    """

    min_response: NonNegativeFloat = 40.0
    max_candidates: Annotated[Int, Field(ge=1)] = 300


class PreprocessConfig(Section):
    """What ``lungcad data build`` does to each scan.

    Attributes:
        min_readers: a nodule becomes a positive cube only if at least this many of the 4
            LIDC readers outlined it (3: a majority, the LUNA16 rule). Nodules below it are
            listed in skipped.csv and kept away from the negatives.
        cube_size: voxels per cube side.
        spacing_mm: isotropic voxel size of the cubes.
        negatives_per_positive: negative cubes per nodule cube, per scan.
        min_negatives_per_scan: negatives taken from every scan, nodule-free ones included.
        candidate_negative_fraction: share of negatives that are false positives of the
            candidate generator: what the detector's second stage must reject.
        candidate_min_distance_mm: a candidate negative is at least this far beyond the
            radius of every annotated nodule (closer ones are neither label).
        hard_negative_fraction: share of the other negatives that are dense in-lung
            structures.
        hard_min_hu: HU a hard-negative centre must exceed.
        negative_min_distance_mm: least distance of a negative centre to any nodule centre.
        negative_min_spacing_mm: least distance between two negative centres.
        lung_closing_mm: closing radius of the lung mask; fills juxtapleural nodules.
        lung_dilation_mm: growth of the lung mask beyond its closed border.
        seed: seeds negative sampling (per scan, independent of worker order).
    """

    min_readers: Annotated[Int, Field(ge=1, le=4)] = 3
    cube_size: Annotated[Int, Field(ge=8)] = 64
    spacing_mm: PositiveFloat = 1.0
    negatives_per_positive: NonNegativeFloat = 3.0
    min_negatives_per_scan: Annotated[Int, Field(ge=0)] = 2
    candidate_negative_fraction: Probability = 0.5
    candidate_min_distance_mm: NonNegativeFloat = 5.0
    hard_negative_fraction: Probability = 0.67
    hard_min_hu: Float = -300.0
    negative_min_distance_mm: NonNegativeFloat = 40.0
    negative_min_spacing_mm: NonNegativeFloat = 20.0
    lung_closing_mm: NonNegativeFloat = 20.0
    lung_dilation_mm: NonNegativeFloat = 5.0
    seed: Seed = 0


class SplitConfig(Section):
    """The patient-level split, stratified on nodule presence and malignancy.

    Attributes:
        val_fraction, test_fraction: shares of the patients.
        seed: seeds the split.
    """

    val_fraction: Annotated[Float, Field(ge=0.0, lt=1.0)] = 0.15
    test_fraction: Annotated[Float, Field(ge=0.0, lt=1.0)] = 0.2
    seed: Seed = 0

    @model_validator(mode="after")
    def _fractions(self) -> SplitConfig:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must leave patients to train on")
        return self


class CvConfig(Section):
    """Patient-level k-fold cross-validation (the pipeline in ``crossval/dvc.yaml``).

    Attributes:
        folds: the fold numbers ``[0, 1, ..., K-1]``; their count is K. Each fold holds out
            a K-th of the patients (stratified like the split) and trains on the rest, with
            ``split.val_fraction`` of all patients for validation. DVC runs one train,
            evaluate and detect stage per number: ``dvc exp run crossval/dvc.yaml -S
            'cv.folds=[0,1,2]'`` runs a 3-fold cross-validation.
        split_by: ``patients`` (folds dealt from the patients, stratified) or
            ``luna16_subsets`` (LUNA16's protocol: fold k is the k-th ``subset<k>`` folder of
            a LUNA16 root; list one fold per subset).
        holdout: ``none`` (the folds cover every patient: out-of-fold figures over all of
            them) or ``default_split`` (the default split's val and test patients,
            ``data/splits.json``, are in no fold: the fold models and their ensemble are
            then promotion candidates, compared with the champion on val and reported on
            test, neither of which any fold trained on).
    """

    folds: list[int] = [0, 1, 2, 3, 4]
    split_by: Literal["patients", "luna16_subsets"] = "patients"
    holdout: Literal["none", "default_split"] = "none"

    @model_validator(mode="after")
    def _numbered(self) -> CvConfig:
        if self.folds != list(range(len(self.folds))) or len(self.folds) < 2:
            raise ValueError(
                f"folds={self.folds}: list the fold numbers 0 to K-1 in order, K >= 2 "
                "(e.g. [0, 1, 2, 3, 4] for 5 folds)"
            )
        return self


class ModelConfig(Section):
    """Network shape: a MONAI 3D ResNet backbone, a shared feature, the heads.

    Attributes:
        widths: channels of the four residual stages.
        blocks: residual blocks per stage.
        feature_dim: size of the shared feature the heads read.
        dropout: dropout before the heads.
        attributes: a head predicts the eight LIDC characteristics and the diameter.
        hierarchical: malignancy from the predicted attributes beside the feature (needs
            ``attributes``).
        spread: malignancy as a Gaussian over one reader's rating (mean, sd), trained by
            the likelihood of the readers' ratings.
        segmentation: a decoder with skip connections from the backbone's stages predicts
            the nodule's mask in the cube (trained on the readers' consensus).
        decoder_widths: channels of the decoder's levels, coarsest first: one per residual
            stage (the finest reads the stem, at half the input resolution), or one more
            (a last level at the input's full resolution, reading the input).
        centre_head: the decoder also predicts a nodule-centre heatmap (a peak of 1 at each
            nodule's centre, falling as a Gaussian of its size), trained with a focal loss
            that weighs every nodule alike: the dense detector's score (``detect.score:
            centre``, docs/detection.md); needs ``segmentation``.
    """

    widths: tuple[Annotated[Int, Field(ge=1)], ...] = (32, 64, 128, 256)
    blocks: tuple[Annotated[Int, Field(ge=1)], ...] = (1, 1, 1, 1)
    feature_dim: Annotated[Int, Field(ge=1)] = 256
    dropout: Probability = 0.2
    attributes: Bool = True
    hierarchical: Bool = False
    spread: Bool = False
    segmentation: Bool = True
    decoder_widths: tuple[Annotated[Int, Field(ge=1)], ...] = (32, 16, 8, 8)
    centre_head: Bool = True

    @model_validator(mode="after")
    def _shape(self) -> ModelConfig:
        if len(self.widths) != len(self.blocks):
            raise ValueError(
                f"widths {list(self.widths)} and blocks {list(self.blocks)} need one entry "
                "per residual stage each"
            )
        if self.segmentation and len(self.decoder_widths) not in (
            len(self.widths),
            len(self.widths) + 1,
        ):
            raise ValueError(
                f"decoder_widths {list(self.decoder_widths)} need one entry per residual "
                f"stage ({len(self.widths)}), or one more for full resolution"
            )
        if self.hierarchical and not self.attributes:
            raise ValueError("hierarchical: true needs attributes: true")
        if self.centre_head and not self.segmentation:
            raise ValueError("centre_head: true needs segmentation: true (the decoder)")
        return self


class AugmentConfig(Section):
    """Augmentation of training cubes (all seeded).

    Attributes:
        flip: random flips along each axis.
        rot90: random 90-degree rotations in the axial plane.
        crop_size: the network trains on random crops of this many voxels per side of
            each cube (0: the whole cube); inference reads whole cubes (the network is
            convolutional up to its global pooling).
        shift_mm: air padding on each side before the crop: with ``crop_size`` 0, the
            largest random shift of the cube content (voxels are 1 mm).
        offcentre_margin_mm: a nodule cube's crop centre lands anywhere in a ball of the
            nodule's radius plus this margin around the nodule (as far as the cube
            allows): a candidate beside a nodule is still scored and outlined as it.
        offcentre_share: share of the nodule cubes cropped that way; the others move by at
            most ``centred_shift_mm`` along each axis, so the centred nodule stays the
            common case.
        centred_shift_mm: a nodule cube not moved off-centre: its crop centre moves by at
            most this along each axis (as far as the cube or the padding allows), so these
            crops look like the centred cubes the heads are evaluated on; without a crop
            they move like every other cube (``shift_mm``).
        negative_shift_mm: other cubes' crop centres move by at most this along each axis
            (kept small: a candidate negative a few mm beyond a nodule's edge must not be
            cropped onto the nodule).
        hu_jitter: largest random HU offset added to a cube.
        lesion_share: chance that a cube with no nodule receives a synthetic lesion (a
            mass, a solid, part-solid or ground-glass nodule, or a calcified granuloma
            that stays a negative; ``lungcad.training.lesions``).
    """

    flip: Bool = True
    rot90: Bool = True
    crop_size: Annotated[Int, Field(ge=0)] = 48
    shift_mm: Annotated[Int, Field(ge=0)] = 8
    offcentre_margin_mm: NonNegativeFloat = 16.0
    offcentre_share: Probability = 1.0
    centred_shift_mm: Annotated[Int, Field(ge=0)] = 4
    negative_shift_mm: Annotated[Int, Field(ge=0)] = 16
    hu_jitter: NonNegativeFloat = 20.0
    lesion_share: Probability = 0.15


class TrainConfig(Section):
    """What ``lungcad train`` does.

    Attributes:
        experiment: MLflow experiment the run is logged to.
        seed: seeds weights, shuffling, augmentation and dropout.
        epochs, batch_size, lr, weight_decay: AdamW + cosine schedule over all epochs.
        lambda_det, lambda_mal: loss weights, L = lambda_det * L_det + lambda_mal * L_mal.
        lambda_attr: weight of the attribute loss (nodule cubes); 0 keeps the head
            untrained; > 0 needs ``model.attributes``.
        lambda_seg: weight of the segmentation loss (Dice + BCE against the readers'
            consensus mask; empty on cubes without a nodule); > 0 needs
            ``model.segmentation``.
        lambda_centre: weight of the centre heatmap's focal loss (``model.centre_head``),
            part of the segmentation loss.
        seg_cubes: cubes of each batch the decoder trains on: the nodule cubes first, then
            others at random (0: all); the decoder costs as much as the rest of the network.
        seg_dice: the Dice part of the segmentation loss over the batch's nodule cubes'
            voxels pooled, or the mean of each cube's (every nodule weighs the same).
        det_loss: BCE with logits, or the focal loss.
        focal_gamma: focusing parameter of the focal loss.
        mal_on: SmoothL1 on nodule cubes only, or on all cubes (negatives target 1).
        mal_weighting: "agreement" weighs each nodule's malignancy loss by
            1 / (1 + the readers' standard deviation).
        grad_clip: max gradient norm.
        window_hu: HU mapped to [0, 1] (clipped) at the model input.
        amp: mixed precision on CUDA (auto: bf16 where supported, else fp16; fp32 on CPU).
        device: where to train.
        select_metric: validation metric that picks the best epoch (higher is better):
            val_objective = val_auc - val_mae / 4.
        selection: the model ``best.pt`` holds. "average": the weights averaged over the
            last ``average_last`` epochs (stochastic weight averaging on the cosine
            schedule's tail, batch-norm statistics recomputed on the train cubes), so
            that it does not hinge on one lucky epoch of a small validation split.
            "best_epoch": the epoch with the highest ``select_metric``. ``best_epoch.pt``
            holds that epoch either way.
        average_last: epochs averaged by ``selection: average`` (all when fewer).
        average_lr: with ``selection: average``, the learning rate over the averaged epochs,
            as a share of ``lr``: the cosine schedule falls to it by the first averaged
            epoch and holds it there (stochastic weight averaging's constant rate: the
            averaged weights come from distinct points around the minimum rather than
            one point approached ever more slowly). None: the cosine schedule over all
            epochs, falling to 0.
        num_workers: DataLoader worker processes of the streaming input path.
        deterministic: deterministic algorithms (reproducible, slower on GPU).
        channels_last: channels_last_3d memory format (faster on CPUs and tensor cores).
        compile: torch.compile the model.
        data_on_device: cubes resident on the device (RAM on a CPU): auto when they take
            under 40 % of its free memory.
        sync_every: training steps between host syncs (NaN/inf check, progress bar).
        eval_batch_size: cubes per forward pass in validation.
        model: the network.
        augment: training augmentation.
    """

    experiment: str = "lungcad"
    seed: Seed = 0
    epochs: Annotated[Int, Field(ge=1)] = 40
    batch_size: Annotated[Int, Field(ge=1)] = 16
    lr: PositiveFloat = 2e-3
    weight_decay: NonNegativeFloat = 1e-4
    lambda_det: NonNegativeFloat = 1.0
    lambda_mal: NonNegativeFloat = 2.0
    lambda_attr: NonNegativeFloat = 0.5
    lambda_seg: NonNegativeFloat = 2.0
    lambda_centre: NonNegativeFloat = 0.25
    seg_cubes: Annotated[Int, Field(ge=0)] = 0
    seg_dice: Literal["pooled", "per_cube"] = "per_cube"
    det_loss: Literal["bce", "focal"] = "bce"
    focal_gamma: NonNegativeFloat = 2.0
    mal_on: Literal["nodules", "all"] = "nodules"
    mal_weighting: Literal["none", "agreement"] = "none"
    grad_clip: PositiveFloat = 1.0
    window_hu: tuple[Float, Float] = (-1000.0, 400.0)
    amp: Literal["auto", "fp16", "bf16", "off"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    select_metric: Literal["val_objective", "val_auc", "neg_val_mae"] = "val_objective"
    selection: Literal["average", "best_epoch"] = "average"
    average_last: Annotated[Int, Field(ge=1)] = 8
    average_lr: Annotated[float, Field(gt=0, le=1)] | None = None
    num_workers: Annotated[Int, Field(ge=0)] = 0
    deterministic: Bool = True
    channels_last: Bool = True
    compile: Bool = False
    data_on_device: Literal["auto", "true", "false"] = "auto"
    sync_every: Annotated[Int, Field(ge=1)] = 50
    eval_batch_size: Annotated[Int, Field(ge=1)] = 64
    model: ModelConfig = ModelConfig()
    augment: AugmentConfig = AugmentConfig()

    @model_validator(mode="before")
    @classmethod
    def _yaml_booleans(cls, values: Any) -> Any:
        # data_on_device is a choice of three; YAML reads its true/false as booleans.
        if isinstance(values, dict) and isinstance(values.get("data_on_device"), bool):
            values = {**values, "data_on_device": str(values["data_on_device"]).lower()}
        return values

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.lambda_attr > 0 and not self.model.attributes:
            raise ValueError("lambda_attr > 0 needs model.attributes: true (the attribute head)")
        if self.lambda_seg > 0 and not self.model.segmentation:
            raise ValueError("lambda_seg > 0 needs model.segmentation: true (the decoder)")
        if self.window_hu[0] >= self.window_hu[1]:
            raise ValueError(f"window_hu {list(self.window_hu)} must be [low, high], low < high")
        return self

    def flat(self) -> dict[str, Any]:
        """Flattened ``{"model.widths": …}`` view for experiment trackers."""
        out: dict[str, Any] = {}
        for key, value in self.to_dict().items():
            if isinstance(value, dict):
                out.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                out[key] = value
        return out


class EvaluateConfig(Section):
    """Test-split metrics of the cube classifier.

    Attributes:
        bootstrap: patient-bootstrap resamples for the 95 % CIs.
        seed: seeds the bootstrap and the baselines.
    """

    bootstrap: Annotated[Int, Field(ge=0)] = 1000
    seed: Seed = 0


class ExplainConfig(Section):
    """3D Grad-CAM of the test cubes.

    Attributes:
        split: whose cubes are explained.
        layer: the network module the maps come from (4³ cells of 16 mm for layer3;
            layer4's 2³ is too coarse to point).
        methods: CAM methods measured; the first is drawn and written as NIfTI.
        dilate_mm: pointing game: the map's maximum within the consensus + this margin.
        random_seed: seeds the randomised-weights network of the sanity check.
        bootstrap, seed: patient-bootstrap resamples for the CIs and their seed.
    """

    split: Literal["train", "val", "test"] = "test"
    layer: str = "backbone.layer3"
    methods: tuple[Literal["gradcam", "gradcampp"], ...] = Field(
        ("gradcam", "gradcampp"), min_length=1
    )
    dilate_mm: NonNegativeFloat = 2.0
    random_seed: Seed = 0
    bootstrap: Annotated[Int, Field(ge=0)] = 1000
    seed: Seed = 0


class DetectConfig(Section):
    """Whole-scan detection (the candidate generator and the cube geometry come with the
    model: they are the ones it was trained with).

    Attributes:
        split: the split whose scans the detect stage reads.
        threshold: findings at or above this probability are printed and reported.
        batch_size: cubes per forward pass.
        tta_flips: test-time augmentation: also score each cube flipped along these axes
            (0 z, 1 y, 2 x) and average; each axis doubles the scoring.
        nms_overlap: MONAI box NMS in mm: drop a finding this much inside a better one's box.
        detector: ``dense``: the network's decoder over the whole lung region in one
            sliding-window pass, each connected part of its map a finding
            (``lungcad.detection.dense``); ``cubes``: candidates, one cube scored per
            candidate and the cubes' masks merged (``lungcad.detection.detector``).
        patch: the dense pass's patches (voxels of 1 mm per side).
        overlap: share of a dense patch that overlaps its neighbour; 0.5 makes a
            finding's map peaks all but independent of where the patches fall, for twice
            the scoring time (``peaks: cube`` steadies them for less, BENCHMARKS.md).
        score: a dense finding's probability: ``peak``, its map peak; ``centre``, its peak
            on the centre heatmap (``model.centre_head``); ``cube``, the detection head's on
            the cube centred on it (of the size the heads learnt on); ``mean``, the
            geometric mean of the map peak and the cube's; ``combined``, the mean of the
            centre peak and the map peak times the cube's (the heatmap is surest of small
            nodules, the cube's head of large ones).
        peaks: where a dense finding's map peak and centre peak are read: ``map``, the
            blended patches' maps; ``cube``, the decoder's maps of the cube centred on it
            (the one its heads read), where they depend far less on where the patches fall
            (where the finding lies, its mask and whether it is found at all still come
            from the blended maps).
        max_findings: the dense detector measures and scores at most this many findings
            per scan (0: all): the parts whose blended peaks could score highest (``score``
            with the cube's detection probability at its largest, 1); the scan's notes
            count the others. 300 is the cube detector's candidate budget.
        malignancy_cube: voxels per side of the cube centred on each dense finding in
            which the network's heads read its malignancy and the readers' attributes; 0:
            the cube its detection probability and peaks are read in (the size the heads
            learnt on, ``train.augment.crop_size``, else the dataset's cubes). The heads
            pool their whole cube, so a network trained on crops with the nodule anywhere
            in them rates a centred nodule differently at each size; the default reads
            the rating in the cube protocol's 64 mm cubes (BENCHMARKS.md).
        amp: the dense pass's precision: ``auto`` is bf16 on a CPU with native bf16 and AMP
            on CUDA, else fp32; ``off``: fp32. The heads read the findings' cubes in the
            same precision.
        bootstrap: FROC CIs: patients resampled with replacement (all their scans).
        seed: seeds the bootstrap.
    """

    split: Literal["train", "val", "test"] = "test"
    threshold: Probability = 0.41
    batch_size: Annotated[Int, Field(ge=1)] = 16
    tta_flips: tuple[Literal[0, 1, 2], ...] = ()
    nms_overlap: Probability = 0.5
    detector: Literal["dense", "cubes"] = "dense"
    patch: Annotated[Int, Field(ge=16)] = 96
    overlap: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.25
    score: Literal["peak", "centre", "cube", "mean", "combined"] = "combined"
    peaks: Literal["map", "cube"] = "cube"
    max_findings: Annotated[Int, Field(ge=0)] = 300
    malignancy_cube: Annotated[Int, Field(ge=0)] = 64
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    bootstrap: Annotated[Int, Field(ge=0)] = 1000
    seed: Seed = 0


class SearchSpace(Section):
    """Log-uniform ranges searched by ``lungcad tune``; ``weight_decay``, ``batch_size``
    (a list of choices) and ``lambda_attr`` are searched when set."""

    lambda_det: tuple[PositiveFloat, PositiveFloat] = (0.1, 10.0)
    lambda_mal: tuple[PositiveFloat, PositiveFloat] = (0.05, 5.0)
    lr: tuple[PositiveFloat, PositiveFloat] = (1e-4, 1e-2)
    weight_decay: tuple[PositiveFloat, PositiveFloat] | None = None
    batch_size: tuple[Annotated[Int, Field(ge=1)], ...] | None = None
    lambda_attr: tuple[PositiveFloat, PositiveFloat] | None = None

    @model_validator(mode="after")
    def _ranges(self) -> SearchSpace:
        for name in ("lambda_det", "lambda_mal", "lr", "weight_decay", "lambda_attr"):
            pair = getattr(self, name)
            if pair is not None and pair[0] > pair[1]:
                raise ValueError(f"{name} {list(pair)} must be [low, high]")
        return self


class TuneConfig(Section):
    """Optuna search over the loss weights and the learning rate.

    Attributes:
        trials: finished trials of the study in total (all processes together).
        epochs: epochs per trial (short trials: the tuning profile).
        pruner: how unpromising trials are stopped early.
        startup_trials: trials completed before the median pruner prunes.
        warmup_epochs: epochs of a trial before it may be pruned.
        study_name: Optuna study (and MLflow parent run) name.
        storage: "journal:<file>" or an RDB URL (postgresql://user:password@host/db); one
            journal file per machine, never one SQLite file for parallel workers.
        seed: seeds the TPE sampler.
        out_dir: trial checkpoints (deleted after each trial) and best_params.yaml.
        heartbeat_interval_s: a running trial beats this often ...
        grace_period_s: ... silent this long, its worker died: failed and queued again.
        max_retries: times one trial's parameters are queued again after lost workers.
        space: the search space.
    """

    trials: Annotated[Int, Field(ge=1)] = 50
    epochs: Annotated[Int, Field(ge=1)] = 3
    pruner: Literal["median", "hyperband", "none"] = "median"
    startup_trials: Annotated[Int, Field(ge=0)] = 5
    warmup_epochs: Annotated[Int, Field(ge=0)] = 1
    study_name: str = "lungcad-tune"
    storage: str = "journal:tune/optuna-journal.log"
    seed: Seed = 0
    out_dir: str = "tune"
    heartbeat_interval_s: Annotated[Int, Field(ge=1)] = 30
    grace_period_s: Annotated[Int, Field(ge=1)] = 180
    max_retries: Annotated[Int, Field(ge=0)] = 2
    space: SearchSpace = SearchSpace()

    @model_validator(mode="after")
    def _heartbeat(self) -> TuneConfig:
        if self.grace_period_s <= self.heartbeat_interval_s:
            raise ValueError(
                f"grace_period_s {self.grace_period_s} must be longer than "
                f"heartbeat_interval_s {self.heartbeat_interval_s} (a few beats)"
            )
        return self


class PromoteConfig(Section):
    """Promotion of the best run to the registry's champion.

    Attributes:
        criterion: MLflow order-by column; the highest run is the candidate.
        bootstrap: patient-bootstrap resamples of the promotion report's CIs.
    """

    criterion: str = "metrics.best_val_metric"
    bootstrap: Annotated[Int, Field(ge=0)] = 200


class BenchmarkConfig(Section):
    """The sealed benchmark (``benchmark/dvc.yaml``): whole-length phantom scans of LIDC
    patients the dataset does not hold, scored and never used to choose anything.

    Attributes:
        scans: LIDC scans drawn (LIDC's mix: about 31 % of its scans have no reference
            nodule, 1.4 reference nodules per scan; the default draw: 155 nodules, 35 %
            without).
        seed: draws the scans and seeds their synthetic anatomy.
        subsets: LUNA16 subsets the scans are dealt into.
        max_slices: draw only series of at most this many slices (``null``: any).
        workers: processes writing scans and detecting in them.
    """

    scans: Annotated[Int, Field(ge=1)] = 130
    seed: Seed = 2026
    subsets: Annotated[Int, Field(ge=1)] = 10
    max_slices: Annotated[Int, Field(ge=2)] | None = None
    workers: Annotated[Int, Field(ge=1)] = 2


class ReadLimits(Section):
    """What one scan read from outside (a DICOM series, a ``.mhd`` volume) may cost; checked
    from the headers before any pixel is decoded.

    Attributes:
        max_slice_pixels: Rows x Columns (x frames) of one DICOM file.
        max_series_voxels: voxels of one series or ``.mhd`` volume.
        max_series_files: files of one DICOM series.
        max_mhd_bytes: bytes of a ``.mhd`` volume's pixels once decompressed.
        max_gap_slices: missing slices (an unreadable or left-out slice, or a gap in the
            positions) filled by interpolation between their neighbours, with a note; a
            wider gap refuses the series.
    """

    max_slice_pixels: Annotated[Int, Field(ge=1)] = 2048 * 2048
    max_series_voxels: Annotated[Int, Field(ge=1)] = 1024 * 1024 * 1024
    max_series_files: Annotated[Int, Field(ge=2)] = 5000
    max_mhd_bytes: Annotated[Int, Field(ge=1)] = 4 * 1024**3
    max_gap_slices: Annotated[Int, Field(ge=0)] = 2


class DicomwebLimits(Section):
    """What a DICOMweb server's answers may cost a ``lungcad detect --dicomweb`` run.

    Attributes:
        page_size: results asked for per query page.
        max_pages: query pages per query (a server that pages forever is stopped).
        max_instances: instances of one series.
        max_response_bytes: bytes of one answer (a query page, one instance).
        max_total_bytes: bytes of all answers of one run.
        request_deadline_s: seconds one request may take, answer included, however slowly
            the server sends it.
    """

    page_size: Annotated[Int, Field(ge=1)] = 100
    max_pages: Annotated[Int, Field(ge=1)] = 100
    max_instances: Annotated[Int, Field(ge=1)] = 5000
    max_response_bytes: Annotated[Int, Field(ge=1)] = 64 * 1024**2
    max_total_bytes: Annotated[Int, Field(ge=1)] = 16 * 1024**3
    request_deadline_s: PositiveFloat = 120.0


class ServeLimits(Section):
    """What one request to ``lungcad serve`` may cost, checked before it is parsed.

    Attributes:
        max_body_bytes: bytes of a request body (413 beyond, unread).
        max_cubes: cubes (rows) in one request; a Parquet body is checked from its footer.
        max_decoded_bytes: bytes a Parquet body's values take once decoded.
        max_json_depth: nesting of a JSON body (``{"inputs": [...]}`` of cubes is 6 deep).
    """

    max_body_bytes: Annotated[Int, Field(ge=1)] = 64 * 1024**2
    max_cubes: Annotated[Int, Field(ge=1)] = 32
    max_decoded_bytes: Annotated[Int, Field(ge=1)] = 64 * 1024**2
    max_json_depth: Annotated[Int, Field(ge=1)] = 32


class LimitsConfig(Section):
    """Budgets on what outside input (scans, a PACS, requests to the served model) may cost;
    over a budget is one line naming the item and the setting, and a batch goes on."""

    read: ReadLimits = ReadLimits()
    dicomweb: DicomwebLimits = DicomwebLimits()
    serve: ServeLimits = ServeLimits()


class Params(Section):
    """The whole params.yaml: one section per pipeline stage."""

    data: DataConfig = DataConfig()
    phantom: PhantomConfig = PhantomConfig()
    realism: RealismConfig = RealismConfig()
    candidates: CandidatesConfig = CandidatesConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    split: SplitConfig = SplitConfig()
    cv: CvConfig = CvConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    explain: ExplainConfig = ExplainConfig()
    detect: DetectConfig = DetectConfig()
    tune: TuneConfig = TuneConfig()
    promote: PromoteConfig = PromoteConfig()
    benchmark: BenchmarkConfig = BenchmarkConfig()
    limits: LimitsConfig = LimitsConfig()
