"""Several trained networks as one model: the fold ensemble of a cross-validation.

An ensemble checkpoint is a plain lungcad checkpoint (weights-only loading) whose
``members`` each hold one network's weights and train settings; ``load_model`` gives back
an :class:`EnsembleNet`, which every consumer of a :class:`NoduleNet` (evaluate, detect,
explain, the pyfunc model behind ``serve``) takes unchanged. Its outputs are the members'
averaged: the mean nodule probability (returned as its logit), the mean malignancy,
attributes and spread, and the mean mask probability.

The members must cut and window their cubes alike (the same preprocess and candidate
settings, HU window and outputs): a cube cut for one of them is then a cube for all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lungcad.core.model.checkpoint import load_checkpoint, save_checkpoint
from lungcad.errors import LungcadError

#: Probabilities are kept this far from 0 and 1 before their logit is taken.
_EPS = 1e-7


class EnsembleError(LungcadError, ValueError):
    """Members that cannot form one model; the message names the member and the setting."""


def _logit_of_mean(logits: list[torch.Tensor]) -> torch.Tensor:
    prob = torch.stack([torch.sigmoid(t.float()) for t in logits]).mean(0)
    return torch.logit(prob.clamp(_EPS, 1 - _EPS))


class EnsembleNet(nn.Module):
    """The members' outputs averaged, with a NoduleNet's interface.

    Args:
        members: trained networks with the same outputs (``output_names``, decoder).

    Example:
        >>> net = EnsembleNet([fold0, fold1])
        >>> logit, malignancy, attributes, spread = net(cubes)  # members' means
    """

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise EnsembleError("an ensemble needs at least one member")
        first = members[0]
        for i, m in enumerate(members[1:], start=1):
            if (m.output_names, m.segments, m.centres) != (
                first.output_names,
                first.segments,
                first.centres,
            ):
                raise EnsembleError(
                    f"member {i} has other outputs ({', '.join(m.output_names) or 'none'}; "
                    f"decoder {m.segments}; centre heatmap {m.centres}) than member 0 "
                    f"({', '.join(first.output_names) or 'none'}; decoder {first.segments}; "
                    f"centre heatmap {first.centres})"
                )
        self.members = nn.ModuleList(members)
        self.config, self.in_channels = first.config, first.in_channels
        self.n_attributes = first.n_attributes

    @property
    def segments(self) -> bool:
        return self.members[0].segments

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.members[0].output_names

    def forward(
        self, x: torch.Tensor, with_mask: bool = False, mask_rows: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        """The members' outputs (see ``NoduleNet.forward``) averaged."""
        outs = [m(x, with_mask=with_mask, mask_rows=mask_rows) for m in self.members]
        averaged = [
            _logit_of_mean([o[0] for o in outs]),
            *(torch.stack([o[i] for o in outs]).mean(0) for i in range(1, 4)),
        ]
        if with_mask:
            for i in range(4, len(outs[0])):  # the mask, then the centre heatmap
                maps = [o[i] for o in outs]
                averaged.append(_logit_of_mean(maps) if maps[0].numel() else maps[0])
        return tuple(averaged)

    @property
    def centres(self) -> bool:
        return self.members[0].centres

    def dense_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The logits of the members' mean probabilities, channel by channel (see
        ``NoduleNet.dense_logits``)."""
        return _logit_of_mean([m.dense_logits(x) for m in self.members])


def is_ensemble(state: dict[str, Any]) -> bool:
    return "members" in state


def patient_digest(patient_id: str) -> str:
    """A patient's id as an ensemble records it: the first 16 hex digits of its SHA-256, so
    a checkpoint names no patient and a split can still be checked against it."""
    return hashlib.sha256(str(patient_id).encode()).hexdigest()[:16]


def seen_patients(state: dict[str, Any]) -> set[str] | None:
    """Digests of the patients any member of an ensemble trained on or chose its weights
    on; None when the checkpoint does not record them (a single network, or an ensemble
    built from checkpoints alone)."""
    seen = state.get("seen_patients_sha256")
    return None if seen is None else set(seen)


def unseen_check(state: dict[str, Any], patients: Iterable[str]) -> tuple[int, int] | None:
    """(how many of ``patients`` some member saw, how many there are), or None when the
    checkpoint does not record what its members saw."""
    seen = seen_patients(state)
    if seen is None:
        return None
    digests = [patient_digest(p) for p in set(map(str, patients))]
    return sum(d in seen for d in digests), len(digests)


def write_ensemble(
    checkpoints: list[Path],
    out: Path,
    selected: str | None = None,
    seen: Iterable[str] | None = None,
) -> Path:
    """One ensemble checkpoint at ``out`` of the lungcad checkpoints ``checkpoints``;
    ``seen``: the patients any member trained on or chose its weights on (recorded as
    ``patient_digest``s, so that a threshold is never fitted on them).

    Raises:
        EnsembleError: fewer than two members, a member that is itself an ensemble, or
            members cut, windowed or sized differently (named).
    """
    if len(checkpoints) < 2:
        raise EnsembleError(f"an ensemble needs at least 2 checkpoints, got {len(checkpoints)}")
    states = [load_checkpoint(path) for path in checkpoints]
    first = states[0]
    for path, state in zip(checkpoints, states):
        if is_ensemble(state):
            raise EnsembleError(f"{path} is already an ensemble; give its members instead")
        for what, key in (("cube settings", "cut_settings"), ("HU window", "window_hu")):
            mine = state.get(key) if key != "window_hu" else state["config"].get(key)
            theirs = first.get(key) if key != "window_hu" else first["config"].get(key)
            if mine != theirs:
                raise EnsembleError(
                    f"{path} was trained with other {what} ({mine}) than {checkpoints[0]} "
                    f"({theirs}): its members must cut their cubes alike"
                )
    members = [
        {
            "model": s["model"],
            "config": s["config"],
            "selected": s.get("selected", f"epoch {s.get('best_epoch')}"),
            "source": str(path),
        }
        for path, s in zip(checkpoints, states)
    ]
    state = {
        "model": {},
        "members": members,
        "config": first["config"],
        "cut_settings": first.get("cut_settings", {}),
        "selected": selected or f"mean of {len(members)} models",
        "torch_version": torch.__version__,
    }
    if seen is not None:
        state["seen_patients_sha256"] = sorted({patient_digest(p) for p in seen})
    save_checkpoint(state, out)
    return out
