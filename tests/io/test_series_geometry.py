"""Stacks that are not plain axial: a tilted gantry, sagittal, coronal and oblique slices.
Each holds a sphere at a known patient position; the volume lungcad reads is axial and puts
the sphere where it is, and the source grid kept for the DICOM SEG maps it back onto the
stack's own pixels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lungcad.core.io.series import read_series
from lungcad.dicom.segments import sphere_on_ct
from tests.conftest import write_series

CENTRE_MM = np.array([10.0, -20.0, 35.0])
RADIUS_MM = 7.0
SIZE = 56  # rows and columns of 0.9 mm
PIXEL_MM = 0.9
SLICES, STEP_MM = 36, 1.5


def _stack(row, col, step_vector):
    """Row and column cosines and the slice step; positions chosen so the sphere is in the
    middle of the stack."""
    row, col, step_vector = (np.asarray(v, float) for v in (row, col, step_vector))
    middle = (SIZE - 1) / 2 * PIXEL_MM * (row + col) + (SLICES - 1) / 2 * step_vector
    origin = CENTRE_MM + np.array([1.3, -0.7, 0.9]) - middle  # sphere off the voxel centres
    return row, col, step_vector, origin


def _tilted(deg):
    t = math.radians(deg)
    # The gantry tilts the image plane about x; the table still moves along z.
    return _stack((1, 0, 0), (0, math.cos(t), math.sin(t)), (0, 0, STEP_MM))


STACKS = {
    "gantry tilt 20": (_tilted(20), "gantry tilt of 20.0 degrees: resampled"),
    "sagittal": (_stack((0, 1, 0), (0, 0, -1), (-STEP_MM, 0, 0)), "sagittal slices: reordered"),
    "coronal": (_stack((1, 0, 0), (0, 0, -1), (0, STEP_MM, 0)), "coronal slices: reordered"),
    "oblique": (
        _stack(
            (math.cos(0.5), math.sin(0.5), 0), (-math.sin(0.5), math.cos(0.5), 0), (0, 0, STEP_MM)
        ),
        "oblique slices: resampled",
    ),
}


def _write(folder, row, col, step_vector, origin):
    k, r, c = np.meshgrid(np.arange(SLICES), np.arange(SIZE), np.arange(SIZE), indexing="ij")
    mm = (
        origin
        + c[..., None] * PIXEL_MM * row
        + r[..., None] * PIXEL_MM * col
        + k[..., None] * step_vector
    )
    inside = np.linalg.norm(mm - CENTRE_MM, axis=-1) <= RADIUS_MM
    hu = np.where(inside, 60, -800).astype(np.int16)
    positions = [tuple(origin + i * step_vector) for i in range(SLICES)]
    files = write_series(
        folder,
        hu,
        (PIXEL_MM, PIXEL_MM, STEP_MM),
        (0, 0, 0),
        orientation=(*row, *col),
        positions=positions,
    )
    return files, hu, mm


@pytest.mark.parametrize("name", sorted(STACKS))
def test_the_volume_is_axial_and_the_sphere_where_it_was_placed(tmp_path, name) -> None:
    stack, note = STACKS[name]
    files, _, _ = _write(tmp_path / "s", *stack)
    vol = read_series(list(reversed(files)))
    np.testing.assert_allclose(vol.geometry.direction, np.eye(3), atol=1e-6)
    assert any(note in n for n in vol.notes), vol.notes
    k, r, c = np.nonzero(vol.hu > -370)  # half way between lung and the sphere
    centroid = vol.geometry.index_to_mm(np.c_[c, r, k]).mean(axis=0)
    assert np.linalg.norm(centroid - CENTRE_MM) < 1.0, centroid
    volume_mm3 = (vol.hu > -370).sum() * np.prod(vol.geometry.spacing_mm)
    assert volume_mm3 == pytest.approx(4 / 3 * np.pi * RADIUS_MM**3, rel=0.1)
    np.testing.assert_allclose(
        vol.z_positions_mm,
        vol.geometry.origin_mm[2] + np.arange(len(vol.hu)) * vol.geometry.spacing_mm[2],
    )


@pytest.mark.parametrize("name", sorted(STACKS))
def test_the_source_grid_maps_patient_mm_back_onto_the_stack(tmp_path, name) -> None:
    stack, _ = STACKS[name]
    files, hu, mm = _write(tmp_path / "s", *stack)
    vol = read_series(files)
    grid, frames = vol.source_grid
    assert vol.source_files == tuple(files) and frames == tuple(range(SLICES))
    sphere = sphere_on_ct(grid, CENTRE_MM, 2 * RADIUS_MM)[list(frames)]
    # The SEG's pixels are the stack's own: exactly the pixels of the sphere written there.
    assert (sphere == (hu > 0)).mean() > 0.995
    np.testing.assert_allclose(mm[sphere].mean(axis=0), CENTRE_MM, atol=0.5)


def test_a_stack_with_a_tiny_tilt_is_read_as_it_is(tmp_path) -> None:
    files, _, _ = _write(tmp_path / "s", *_tilted(0.01))
    vol = read_series(files)
    assert vol.source_geometry is None and not vol.notes
    assert vol.hu.shape == (SLICES, SIZE, SIZE)
