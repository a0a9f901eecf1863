"""Batched inference of a NoduleNet on cubes: the one path for validation, evaluation,
promotion, serving and whole-scan detection.

Cubes cross to the device in their own dtype (int16 from the cube array: half the bytes of
float32) and are windowed there; the forward runs under ``torch.inference_mode`` and, when
asked, autocast; results stay on the device until the end, so a batch never waits on a copy
back to the host.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from lungcad.core.model.attributes import to_lidc_scale
from lungcad.core.model.network import NoduleNet, window_hu

#: A voxel belongs to the predicted nodule mask at this probability or above.
MASK_THRESHOLD = 0.5

#: A network with the centre heatmap reads a centred cube's nodule probability from its
#: decoder's peaks within this many voxels of the cube's centre along each axis (the
#: cube protocol's cubes are centred on the nodule).
CENTRE_REACH = 4

#: Cubes per forward pass when the caller does not say (64 cubes of 64^3 in fp32 are
#: 64 MB of input; activations of the default network stay well under 1 GB).
PREDICT_BATCH_SIZE = 64


@torch.inference_mode()
def predict_batches(
    model: NoduleNet,
    batches: Iterable[torch.Tensor],
    window: tuple[float, float],
    device: torch.device | str,
    amp_dtype: torch.dtype | None = None,
    named_outputs: bool = False,
    masks: bool = False,
    maps: bool = False,
    head_only: bool = False,
) -> tuple[np.ndarray, ...]:
    """Nodule probability and malignancy for HU batches of shape (B, S, S, S) or
    (B, 1, S, S, S), any dtype, on any device; the HU window is applied on ``device``
    exactly as in training.
    ``named_outputs``: also return the network's optional outputs, (N, k), columns named by
    ``model.output_names``: the attributes on their LIDC scales
    (``lungcad.core.model.attributes``), then the readers' predicted malignancy sd; (N, 0)
    for a model with neither head.
    ``masks``: also return (last) the predicted nodule masks, bool (N, S, S, S): mask
    probability >= ``MASK_THRESHOLD``; None for a model without the decoder.
    ``maps``: also return (last) the decoder's probability maps instead of the masks
    (``masks`` is then ignored), float32 (N, 1 or 2, S, S, S): the mask, then the centre
    heatmap with the centre head; a model without the decoder is refused.
    The nodule probability of a network with the centre heatmap (``model.centres``, the
    default network's) is ``centre_probability``: its dense detection output over the cube's
    centre; ``head_only`` gives its detection head's instead (the dense detector combines
    the head with peaks of its own)."""
    device = torch.device(device)
    model.eval()
    if maps and not model.segments:
        raise ValueError("this network has no segmentation decoder (model.segmentation)")
    with_masks = (masks or maps) and model.segments
    centred = model.centres and not head_only
    probs, mals, attrs, mask_list = [], [], [], []
    for x in batches:
        x = x.to(device, non_blocking=True)
        if x.ndim == 4:
            x = x[:, None]
        x = window_hu(x, window)
        with torch.autocast(
            device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
        ):
            logit, mal, attr, spread, *mask_logit = model(x, with_mask=with_masks or centred)
        prob = torch.sigmoid(logit.float())
        if centred:
            prob = centre_probability(prob, mask_logit[0], mask_logit[1])
        if maps:
            mask_list.append(torch.sigmoid(torch.cat(mask_logit, dim=1).float()).cpu())
        elif with_masks:
            mask_list.append((torch.sigmoid(mask_logit[0][:, 0].float()) >= MASK_THRESHOLD).cpu())
        probs.append(prob)
        mals.append(mal.float())
        attrs.append(torch.cat([attr.float(), spread.float()], dim=1))
    if probs:
        out = (torch.cat(probs).cpu().numpy(), torch.cat(mals).cpu().numpy())
        raw = torch.cat(attrs).cpu().numpy()
    else:
        out = (np.zeros(0, np.float32), np.zeros(0, np.float32))
        raw = np.zeros((0, len(model.output_names)), np.float32)
    k = model.n_attributes
    named = np.concatenate([to_lidc_scale(raw[:, :k]), raw[:, k:]], axis=1)
    out = (*out, named) if named_outputs else out
    if maps:
        empty = np.zeros((0, 0, 0, 0, 0), np.float32)
        return (*out, torch.cat(mask_list).numpy() if mask_list else empty)
    if not masks:
        return out
    if not with_masks:
        return (*out, None)
    return (*out, torch.cat(mask_list).numpy() if mask_list else np.zeros((0, 0, 0, 0), bool))


def combined_probability(centre_peak, mask_peak, head_probability):
    """A nodule's probability from two readings that fail apart: the centre heatmap's peak,
    sure of small nodules and less of larger ones (a wider target spreads it), and the
    detection head's probability, sure of large nodules, times the mask's peak (a part the
    mask barely holds is doubtful): their mean. Numbers or arrays alike."""
    return (centre_peak + mask_peak * head_probability) / 2


def centre_probability(
    head_probability: torch.Tensor, mask_logit: torch.Tensor, centre_logit: torch.Tensor
) -> torch.Tensor:
    """(N,) the ``combined_probability`` of centred cubes: the mask's and the centre
    heatmap's peaks over the central voxels (``CENTRE_REACH``) of their (N, 1, S, S, S)
    logits, with the detection head's (N,) probability."""
    size = centre_logit.shape[-1]  # the centre lies at (size - 1) / 2: a voxel, or between two
    near = slice(max((size - 1) // 2 - CENTRE_REACH, 0), size // 2 + CENTRE_REACH + 1)

    def peak(logit: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logit[:, 0, near, near, near].float().flatten(1).amax(dim=1))

    return combined_probability(peak(centre_logit), peak(mask_logit), head_probability)


def predict_hu_cubes(
    model: NoduleNet,
    cubes_hu: np.ndarray | torch.Tensor,
    window: tuple[float, float],
    device: torch.device | str,
    batch_size: int = PREDICT_BATCH_SIZE,
    amp_dtype: torch.dtype | None = None,
    named_outputs: bool = False,
    masks: bool = False,
    maps: bool = False,
    head_only: bool = False,
) -> tuple[np.ndarray, ...]:
    """Nodule probability and malignancy (and with ``named_outputs`` the network's optional
    outputs, with ``masks`` the predicted masks, with ``maps`` the decoder's maps, see
    ``predict_batches``) for (N, S, S, S) or (N, 1, S, S, S) HU cubes (a numpy array,
    memory-mapped or not, or a tensor already on the device)."""

    def chunks():
        for start in range(0, len(cubes_hu), batch_size):
            chunk = cubes_hu[start : start + batch_size]
            yield (
                chunk
                if isinstance(chunk, torch.Tensor)
                else torch.from_numpy(np.ascontiguousarray(chunk))
            )

    return predict_batches(
        model,
        chunks(),
        window,
        device,
        amp_dtype,
        named_outputs=named_outputs,
        masks=masks,
        maps=maps,
        head_only=head_only,
    )


def predict_rows(
    model: NoduleNet,
    cubes: np.ndarray,
    rows,
    window: tuple[float, float],
    device: torch.device | str,
    batch_size: int = PREDICT_BATCH_SIZE,
    amp_dtype: torch.dtype | None = None,
):
    """``rows`` of the cube index (sorted by cube_index, for sequential memory-mapped reads)
    with ``nodule_prob`` and ``malignancy_pred`` columns added, and ``pred_<attribute>``
    columns for the model's optional outputs (``model.output_names``: the attributes,
    ``pred_malignancy_sd``)."""
    rows = rows.sort_values("cube_index")
    prob, mal, attrs = predict_hu_cubes(
        model,
        cubes[rows["cube_index"].to_numpy()],
        window,
        device,
        batch_size,
        amp_dtype,
        named_outputs=True,
    )
    named = {f"pred_{name}": attrs[:, i] for i, name in enumerate(model.output_names)}
    return rows.assign(nodule_prob=prob, malignancy_pred=mal, **named)
