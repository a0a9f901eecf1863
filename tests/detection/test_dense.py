"""The dense detector with known geometry: the lung region's 1 mm grid where the patient mm
say, the sliding window's patches blended into one map whatever their size, one finding per
blob of the map at its patient position and size, and odd scans processed, not crashed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from lungcad.config import CandidatesConfig, DetectConfig, PreprocessConfig, TrainConfig
from lungcad.core.findings.record import FINDING_COLUMNS
from lungcad.core.io.geometry import VolumeGeometry
from lungcad.core.io.series import CtVolume
from lungcad.core.lung_mask import LungMasks, lung_mask
from lungcad.core.model.loading import CubeCut, LoadedModel
from lungcad.detection.dense import (
    detect_volume_dense,
    map_parts,
    probability_maps,
    region_grid,
)
from lungcad.detection.detector import detector_config
from tests.conftest import TEST_PARAMS
from tests.detection.test_candidates import ORIGIN, synthetic_chest
from tests.detection.test_detect_cli import _detect, checkpoint, scans  # noqa: F401 (fixtures)

#: Solid spheres (centre mm, diameter mm) drawn at ``BALL_HU``, denser than the chest wall
#: and the vessels, so a voxel-wise HU band finds them and nothing else.
BALLS = [((-45.0, -5.0, 0.0), 8.0), ((40.0, 10.0, -10.0), 12.0), ((50.0, -20.0, 20.0), 18.0)]
BALL_HU = 300
WINDOW = (-1000.0, 400.0)


class BandNet(nn.Module):
    """A voxel-wise stand-in for a trained decoder: mask logit high where the HU is above
    200 (the balls), so the map is known exactly; heads that say malignancy 4."""

    segments = True
    centres = False
    n_attributes = 0
    output_names: tuple[str, ...] = ()

    def dense_logits(self, x: torch.Tensor) -> torch.Tensor:
        cut = (200.0 - WINDOW[0]) / (WINDOW[1] - WINDOW[0])
        return (x - cut) * 200.0

    def forward(self, x: torch.Tensor, with_mask: bool = False, mask_rows=None):
        n = len(x)
        out = (x.new_full((n,), 2.0), x.new_full((n,), 4.0), x.new_zeros(n, 0), x.new_zeros(n, 0))
        return (*out, x.new_zeros(n, 0)) if with_mask else out


#: The stand-in as a loaded model: the network, its window and the default cube settings.
BAND = LoadedModel(
    BandNet(),
    TrainConfig(window_hu=WINDOW, augment={"crop_size": 0}),
    CubeCut(PreprocessConfig(), CandidatesConfig()),
)


def _chest(**kwargs) -> CtVolume:
    hu, geometry = synthetic_chest(spheres=[], **kwargs)
    k, j, i = np.indices(hu.shape, dtype=np.float32)
    x, y, z = (geometry.origin_mm[a] + n * geometry.spacing_mm[a] for a, n in enumerate((i, j, k)))
    for (cx, cy, cz), d in BALLS:
        hu[(x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= (d / 2) ** 2] = BALL_HU
    z_mm = geometry.origin_mm[2] + geometry.spacing_mm[2] * np.arange(hu.shape[0])
    return CtVolume(hu, geometry, "1.2.3", "1.2", "P", z_mm)


def plain_detect(**settings) -> DetectConfig:
    """The stand-in networks' settings: the map's peaks, every part, each read in the cube
    the heads learnt on; a test names what it changes."""
    plain = {"score": "peak", "peaks": "map", "max_findings": 0, "malignancy_cube": 0}
    return DetectConfig(**{**plain, **settings})


def _detector():
    return detector_config(CubeCut(PreprocessConfig(), CandidatesConfig()), DetectConfig())


@pytest.fixture(scope="module")
def chest() -> CtVolume:
    return _chest()


def test_each_ball_is_one_finding_at_its_patient_position_and_size(chest) -> None:
    det = detect_volume_dense(chest, BAND, _detector(), plain_detect(patch=64))
    found = det.findings
    assert list(found.columns) == FINDING_COLUMNS
    assert len(found) == len(BALLS), found
    centres = found[["coordX", "coordY", "coordZ"]].to_numpy()
    for centre, diameter in BALLS:
        d = np.linalg.norm(centres - np.array(centre), axis=1)
        row = found.iloc[int(np.argmin(d))]
        assert d.min() < 1.0  # the mask's centroid, in patient mm
        assert row["diameter_mm"] == pytest.approx(diameter, rel=0.2)
        assert row["malignancy"] == 4.0 and row["sizing"] == "mask"
        assert row["lung_rads"] != "n/a"
    # Each finding's mask is kept for the SEG, the figures and the Dice.
    assert sorted(det.masks) == list(range(len(BALLS)))


def test_the_map_is_the_same_whatever_the_patch_size(chest) -> None:
    lungs = lung_mask(chest.hu, chest.geometry)
    grid = region_grid(chest, lungs, 1.0, 4.0)
    small = probability_maps(BandNet(), grid.hu, WINDOW, 32, 0.5)
    whole = probability_maps(BandNet(), grid.hu, WINDOW, max(grid.hu.shape), 0.0)
    assert small.shape == (1, *grid.hu.shape)
    np.testing.assert_allclose(small, whole, atol=1e-5)


def test_the_grid_puts_every_voxel_at_its_patient_position() -> None:
    # An anisotropic scan with one bright voxel at a known position (on a whole mm).
    spacing = np.array([0.7, 0.9, 2.5])
    origin = np.array([-30.0, 12.0, -200.0])
    hu = np.full((20, 60, 50), -1000, np.int16)
    hu[10, 30, 20] = 1000
    geometry = VolumeGeometry(origin, spacing, np.eye(3), hu.shape)
    volume = CtVolume(hu, geometry, "1", "1", "P", origin[2] + spacing[2] * np.arange(20))
    lungs = LungMasks(np.ones((4, 6, 5), bool), np.ones((4, 6, 5), bool), (5, 10, 10))
    grid = region_grid(volume, lungs, 1.0, 0.0)
    bright_mm = geometry.index_to_mm(np.array([20.0, 30.0, 10.0]))
    at = np.rint((bright_mm - grid.origin_mm) / grid.spacing_mm).astype(int)[::-1]
    assert grid.hu[tuple(at)] == 1000
    assert np.unravel_index(np.argmax(grid.hu), grid.hu.shape) == tuple(at)
    # The grid spans the scan: from voxel (0, 0, 0) to within 1 mm of the last one.
    np.testing.assert_allclose(grid.origin_mm, origin)
    extent = spacing * (np.array(hu.shape[::-1]) - 1)
    np.testing.assert_array_equal(np.array(grid.hu.shape[::-1]) - 1, np.floor(extent))
    assert grid.region.all()


@pytest.mark.parametrize("margin_mm, mirror_mm", [(4.0, 4.0), (40.0, 24.0), (90.0, 10.0)])
def test_the_grid_reads_the_mirrored_scan_from_a_box_of_it(chest, margin_mm, mirror_mm) -> None:
    # The grid's HU come from the part of the mirrored scan around it (a copy of the box,
    # not of the scan): the same values as a resample of the whole mirrored scan, where the
    # grid lies inside the scan, runs past its first and last slices into the mirror, and
    # (90 mm) past the mirror and the scan's sides into air.
    from lungcad.core.cubes import mirror_pad_z, resample_box

    lungs = lung_mask(chest.hu, chest.geometry, 5.0, 20.0)
    grid = region_grid(chest, lungs, 1.0, margin_mm, mirror_mm)
    hu, geometry = mirror_pad_z(chest, 2 * mirror_mm)
    whole = resample_box(geometry.to_sitk(hu), grid.origin_mm, grid.hu.shape, 1.0)
    np.testing.assert_array_equal(grid.hu, whole)
    if margin_mm == 90.0:
        assert (grid.hu[0] == -1000).all() and (grid.hu[:, :, 0] == -1000).all()


def test_parts_outside_the_lung_and_specks_are_not_findings() -> None:
    prob = np.zeros((40, 40, 40), np.float32)
    zz, yy, xx = np.indices(prob.shape)
    prob[(zz - 10) ** 2 + (yy - 10) ** 2 + (xx - 10) ** 2 <= 9] = 0.8  # in the lung
    prob[(zz - 30) ** 2 + (yy - 30) ** 2 + (xx - 30) ** 2 <= 16] = 0.95  # in the lung
    prob[(zz - 10) ** 2 + (yy - 30) ** 2 + (xx - 30) ** 2 <= 9] = 0.99  # outside it
    prob[20, 20, 20:22] = 0.99  # a two-voxel speck
    region = np.ones(prob.shape, bool)
    region[:20, 20:, 20:] = False
    parts = map_parts(prob, region)
    assert [round(p.peak, 2) for p in parts] == [0.95, 0.8]
    assert parts[0].mask.sum() == np.count_nonzero(prob == np.float32(0.95))


def test_a_centre_map_adds_the_nodules_the_mask_map_misses_and_ranks_the_parts() -> None:
    prob = np.zeros((40, 40, 40), np.float32)
    centre = np.zeros_like(prob)
    zz, yy, xx = np.indices(prob.shape)
    ball = (zz - 10) ** 2 + (yy - 10) ** 2 + (xx - 10) ** 2
    prob[ball <= 16] = 0.99  # a mass the mask map is sure of, not a centre
    centre[ball <= 4] = 0.2
    small = (zz - 30) ** 2 + (yy - 30) ** 2 + (xx - 30) ** 2
    prob[small <= 4] = 0.1  # a small nodule the mask map barely sees, a sure centre
    centre[small <= 4] = 0.9
    centre[30, 30, 30] = 0.95
    region = np.ones(prob.shape, bool)
    assert len(map_parts(prob, region)) == 1
    parts = map_parts(prob, region, centre=centre)
    assert [round(p.centre, 2) for p in parts] == [0.95, 0.2]
    assert [round(p.peak, 2) for p in parts] == [0.1, 0.99]
    # the small one's mask: its voxels at half its mask peak
    assert parts[0].mask.sum() == np.count_nonzero(small <= 4)


def test_touching_nodules_are_one_finding_each_and_a_mass_stays_whole() -> None:
    prob = np.zeros((40, 60, 40), np.float32)
    centre = np.zeros_like(prob)
    zz, yy, xx = np.indices(prob.shape)
    a = (zz - 20) ** 2 + (yy - 18) ** 2 + (xx - 20) ** 2
    b = (zz - 20) ** 2 + (yy - 36) ** 2 + (xx - 20) ** 2
    prob[(a <= 100) | (b <= 64)] = 0.99  # two balls of 20 and 16 mm that touch
    # the heatmap's peaks at their centres, lower for the larger (a wider target)
    centre[:] = np.maximum(0.2 * np.exp(-a / 18), 0.15 * np.exp(-b / 8))
    region = np.ones(prob.shape, bool)
    parts = map_parts(prob, region, centre=centre)
    assert [round(p.centre, 2) for p in parts] == [0.2, 0.15]
    # each holds its own ball: the voxels nearer its centre, all of them
    for part, ball, other in zip(parts, (a, b), (b, a)):
        held = np.zeros(prob.shape, bool)
        held[part.box] = part.mask
        assert held[(ball <= 25)].all() and not held[(other <= 25)].any()
    assert sum(p.mask.sum() for p in parts) == np.count_nonzero(prob)
    # a mass whose heatmap ripples around one peak is one finding
    ripple = 0.02 * (np.sin(yy / 2.0) > 0)
    centre[:] = np.where(prob > 0, 0.2 * np.exp(-a / 400) + ripple, 0)
    assert len(map_parts(prob, region, centre=centre)) == 1


@pytest.mark.parametrize("seed", range(12))
def test_the_centre_peaks_are_skimages_h_maxima(seed) -> None:
    from scipy import ndimage
    from skimage.morphology import h_maxima

    from lungcad.detection.dense import centre_peaks

    rng = np.random.default_rng(seed)
    # smoothed noise in coarse steps (plateaus, ties), zero outside a blob (a part's box)
    image = ndimage.gaussian_filter(rng.random((24, 30, 28)), rng.uniform(1.0, 3.0))
    image = np.round((image - image.min()) / np.ptp(image) * rng.choice([20, 1000]))
    image[ndimage.gaussian_filter(rng.random(image.shape), 4) < 0.5] = 0
    image = image.astype(np.uint16)
    for dynamic in (1, 3, 100):
        expected = ndimage.label(h_maxima(image, dynamic), structure=np.ones((3, 3, 3)))
        peaks, n = centre_peaks(image, dynamic)
        assert n == expected[1]
        np.testing.assert_array_equal(peaks, expected[0])


def test_a_findings_cube_is_the_block_of_the_grid_around_it(chest) -> None:
    from lungcad.core.cubes import extract_cube, mirror_pad_z
    from lungcad.detection.dense import grid_cube

    lungs = lung_mask(chest.hu, chest.geometry, 5.0, 20.0)
    hu, geometry = mirror_pad_z(chest, 48.0)
    image = geometry.to_sitk(hu)
    grid = region_grid(chest, lungs, 1.0, 40.0, 24.0)
    # a centre on the grid's half-voxel lattice: the resampled cube's voxels are the grid's
    voxel = np.array([40, 60, 30])  # (x, y, z) of the cube's voxel (0, 0, 0) on the grid
    centre = grid.origin_mm + voxel + 11.5
    expected = extract_cube(image, centre, 24, 1.0)
    np.testing.assert_array_equal(grid_cube(grid, centre, 24), expected)
    # off the lattice by less than half a voxel: the same block
    np.testing.assert_array_equal(grid_cube(grid, centre + [0.4, -0.3, 0.2], 24), expected)
    # at the grid's edge the block stays inside it
    edge = grid_cube(grid, grid.origin_mm, 24)
    np.testing.assert_array_equal(edge, grid.hu[:24, :24, :24])


class SizeNet(BandNet):
    """The band's mask, a heatmap unsure of every centre (0.1 everywhere), and a detection
    head that grows surer with the dense voxels in its cube: a larger ball, a surer cube."""

    centres = True

    def dense_logits(self, x: torch.Tensor) -> torch.Tensor:
        centre = torch.full_like(x, float(np.log(0.1 / 0.9)))
        return torch.cat([super().dense_logits(x), centre], dim=1)

    def forward(self, x: torch.Tensor, with_mask: bool = False, mask_rows=None):
        cut = (200.0 - WINDOW[0]) / (WINDOW[1] - WINDOW[0])
        dense = (x > cut).float().mean(dim=(1, 2, 3, 4))
        logit, *rest = super().forward(x, with_mask, mask_rows)
        return (300.0 * dense - 2.0, *rest)


def test_the_combined_score_lets_the_cube_head_vouch_for_what_the_heatmap_doubts(chest) -> None:
    loaded = LoadedModel(SizeNet(), BAND.config, BAND.cut)
    centre = detect_volume_dense(chest, loaded, _detector(), plain_detect(patch=64, score="centre"))
    combined = detect_volume_dense(
        chest, loaded, _detector(), plain_detect(patch=64, score="combined")
    )
    assert centre.findings["probability"].round(3).tolist() == [0.1] * len(BALLS)
    c = combined.candidates
    expected = (c["centre_peak"] + c["map_peak"] * c["cube_probability"]) / 2
    assert np.allclose(c["probability"], expected)
    # most probable first: the largest ball, which the heatmap alone could not tell apart
    assert combined.findings["diameter_mm"].is_monotonic_decreasing
    assert (
        combined.findings["probability"].iloc[0] > 0.4 > combined.findings["probability"].iloc[-1]
    )


class RateNet(SizeNet):
    """SizeNet, whose malignancy also grows with the dense voxels in its cube."""

    def forward(self, x: torch.Tensor, with_mask: bool = False, mask_rows=None):
        cut = (200.0 - WINDOW[0]) / (WINDOW[1] - WINDOW[0])
        dense = (x > cut).float().mean(dim=(1, 2, 3, 4))
        logit, _, *rest = super().forward(x, with_mask, mask_rows)
        return (logit, 1.0 + 100.0 * dense, *rest)


def test_malignancy_cube_rates_each_finding_in_a_cube_of_its_own_size(chest) -> None:
    loaded = LoadedModel(RateNet(), BAND.config, BAND.cut)
    assert loaded.head_cube == 64  # no training crops: the dataset's cubes
    settings = {"patch": 64, "score": "cube"}
    default = detect_volume_dense(chest, loaded, _detector(), plain_detect(**settings))
    small = detect_volume_dense(
        chest, loaded, _detector(), plain_detect(**settings, malignancy_cube=32)
    )
    # detected, placed, scored and outlined as before: only the rating is read elsewhere
    rated = ["malignancy"]
    pd.testing.assert_frame_equal(
        default.candidates.drop(columns=rated), small.candidates.drop(columns=rated)
    )
    # The heads pool their whole cube: the 8 mm ball's dense voxels (nothing else dense lies
    # within 32 mm of it; the 18 mm ball lies inside the 12 mm one's 64 mm cube), now in
    # an eighth of the voxels.
    key = ["coordX", "coordY", "coordZ"]
    at = np.linalg.norm(default.candidates[key].to_numpy() - BALLS[0][0], axis=1).argmin()
    rating = small.candidates["malignancy"].iloc[at] - 1.0
    assert rating == pytest.approx(8.0 * (default.candidates["malignancy"].iloc[at] - 1.0))
    assert rating > 0.1


class GreyNet(BandNet):
    """The band's mask and a centre heatmap that rises with the HU: the denser a ball, the
    surer its centre."""

    centres = True

    def dense_logits(self, x: torch.Tensor) -> torch.Tensor:
        grey = (x - (300.0 - WINDOW[0]) / (WINDOW[1] - WINDOW[0])) * 50.0
        return torch.cat([super().dense_logits(x), grey], dim=1)

    def forward(self, x: torch.Tensor, with_mask: bool = False, mask_rows=None):
        out = super().forward(x)
        return (*out, self.dense_logits(x)) if with_mask else out


def test_past_max_findings_the_least_likely_parts_go_unscored_and_are_counted() -> None:
    volume = _chest()
    hu = volume.hu.copy()
    k, j, i = np.indices(hu.shape, dtype=np.float32)
    g = volume.geometry
    x, y, z = (g.origin_mm[a] + n * g.spacing_mm[a] for a, n in enumerate((i, j, k)))
    for ((cx, cy, cz), d), ball_hu in zip(BALLS, (250, 350, 300)):
        hu[(x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= (d / 2) ** 2] = ball_hu
    volume = CtVolume(hu, g, "1.2.3", "1.2", "P", volume.z_positions_mm)
    loaded = LoadedModel(GreyNet(), BAND.config, BAND.cut)
    settings = {"patch": 64, "score": "centre"}
    every = detect_volume_dense(volume, loaded, _detector(), plain_detect(**settings))
    assert len(every.findings) == len(BALLS) and not any("max_findings" in n for n in every.notes)
    capped = detect_volume_dense(
        volume, loaded, _detector(), plain_detect(**settings, max_findings=2)
    )
    # The 250 HU ball's centre is the least sure: it goes, the others are scored as without
    # the cap.
    assert every.findings["diameter_mm"].iloc[-1] == pytest.approx(BALLS[0][1], rel=0.2)
    pd.testing.assert_frame_equal(capped.findings, every.findings.iloc[:2])
    assert any("1 of 3 parts" in n and "the likeliest 2 kept" in n for n in capped.notes)


def test_the_parts_kept_are_those_the_score_could_rank_highest() -> None:
    from lungcad.detection.dense import DensePart, most_likely

    def part(peak: float, centre: float) -> DensePart:
        return DensePart(
            np.ones((1, 1, 1), bool), (slice(0, 1),) * 3, np.ones((1, 1, 1), bool), peak, centre
        )

    # (map peak, centre peak): the map's parts come surest centre first
    parts = [part(0.35, 0.9), part(1.0, 0.5), part(0.4, 0.3), part(0.99, 0.1)]
    # combined, the cube's probability at 1: (c + m) / 2 = 0.625, 0.75, 0.35, 0.545
    assert most_likely(parts, 2, "combined") == [parts[0], parts[1]]
    assert most_likely(parts, 3, "combined") == [parts[0], parts[1], parts[3]]
    assert most_likely(parts, 2, "centre") == parts[:2]
    assert most_likely(parts, 2, "peak") == [parts[1], parts[3]]
    assert most_likely(parts, 2, "cube") == [parts[1], parts[3]]  # all 1: the map peak decides
    no_heatmap = [part(0.5, float("nan")), part(0.9, float("nan")), part(0.7, float("nan"))]
    assert most_likely(no_heatmap, 2, "combined") == no_heatmap[1:]


class EdgeNet(BandNet):
    """The band's mask map and a centre map one logit below it, both surer towards a
    patch's centre than at its faces (as a network's zero padding and narrower context make
    it), so where the patches fall moves a finding's peaks; its decoder's maps of a cube
    are the same maps of the cube."""

    centres = True

    def dense_logits(self, x: torch.Tensor) -> torch.Tensor:
        axes = torch.meshgrid(*(torch.linspace(-1, 1, n) for n in x.shape[2:]), indexing="ij")
        edge = torch.stack(axes).abs().amax(dim=0)  # 0 at the patch's centre, 1 at its faces
        mask = super().dense_logits(x).clamp(max=3.0) - 4.0 * edge
        return torch.cat([mask, mask - 1.0], dim=1)

    def forward(self, x: torch.Tensor, with_mask: bool = False, mask_rows=None):
        out = super().forward(x)
        return (*out, self.dense_logits(x)) if with_mask else out


def test_peaks_read_from_the_findings_cubes_do_not_move_with_the_patches(
    chest, monkeypatch
) -> None:
    import lungcad.detection.dense as dense

    loaded = LoadedModel(EdgeNet(), BAND.config, BAND.cut)
    # the stand-in's centre map ripples where its patches meet: no part is shared out
    monkeypatch.setattr(dense, "CENTRE_DYNAMIC", 1.0)
    columns = ["map_peak", "centre_peak", "probability"]
    read = {}
    for how in ("map", "cube"):
        for margin in (16.0, 27.0):  # the balls 11 voxels further into the patches
            monkeypatch.setattr(dense, "GRID_MARGIN_MM", margin)
            config = plain_detect(patch=64, peaks=how, score="combined")
            found = detect_volume_dense(chest, loaded, _detector(), config).candidates
            assert len(found) == len(BALLS)
            read[how, margin] = found.sort_values("coordX")[columns].to_numpy()
    assert (np.abs(read["map", 16.0] - read["map", 27.0]).max(axis=0) > 0.05).all()
    np.testing.assert_allclose(read["cube", 16.0], read["cube", 27.0], atol=1e-6)
    # read at the (even) cube's central voxels, half a voxel from its centre
    mask_peak = torch.tensor(3.0 - 4.0 / 63).sigmoid().item()
    centre_peak = torch.tensor(2.0 - 4.0 / 63).sigmoid().item()
    np.testing.assert_allclose(read["cube", 16.0][:, 0], mask_peak, atol=1e-5)
    np.testing.assert_allclose(read["cube", 16.0][:, 1], centre_peak, atol=1e-5)


def test_the_decoders_maps_of_cubes_are_its_mask_and_centre_probabilities() -> None:
    from lungcad.config import ModelConfig
    from lungcad.core.model.network import NoduleNet, window_hu
    from lungcad.core.model.predict import predict_hu_cubes

    torch.manual_seed(0)
    net = NoduleNet(ModelConfig(centre_head=True)).eval()
    cubes = torch.randint(-1000, 400, (3, 32, 32, 32)).float()
    prob, _, maps = predict_hu_cubes(
        net, cubes, WINDOW, "cpu", batch_size=2, maps=True, head_only=True
    )
    assert maps.shape == (3, 2, 32, 32, 32) and maps.dtype == np.float32
    with torch.no_grad():
        logit, *_, mask, centre = net(window_hu(cubes[:, None], WINDOW), with_mask=True)
    np.testing.assert_allclose(prob, logit.sigmoid().numpy(), atol=1e-6)
    # Without head_only, the cube protocol's reading: the combined score over the centre.
    protocol, _ = predict_hu_cubes(net, cubes, WINDOW, "cpu", batch_size=2)
    near = maps[:, :, 11:21, 11:21, 11:21].reshape(3, 2, -1).max(axis=2)  # 15.5 +- 4.5
    expected = (near[:, 1] + near[:, 0] * logit.sigmoid().numpy()) / 2
    np.testing.assert_allclose(protocol, expected, atol=1e-6)
    np.testing.assert_allclose(maps[:, 0], mask[:, 0].sigmoid().numpy(), atol=1e-6)
    np.testing.assert_allclose(maps[:, 1], centre[:, 0].sigmoid().numpy(), atol=1e-6)
    plain = NoduleNet(ModelConfig(segmentation=False, centre_head=False)).eval()
    with pytest.raises(ValueError, match="no segmentation decoder"):
        predict_hu_cubes(plain, cubes, WINDOW, "cpu", maps=True)


class BallNet(BandNet):
    """The band's mask, the same as the centre heatmap, and a detection head unsure of
    everything (probability 0.5)."""

    centres = True

    def forward(self, x: torch.Tensor, with_mask: bool = False, mask_rows=None):
        n = len(x)
        out = (x.new_zeros(n), x.new_full((n,), 4.0), x.new_zeros(n, 0), x.new_zeros(n, 0))
        if not with_mask:
            return out
        logit = self.dense_logits(x)
        return (*out, logit, logit)


def test_a_dense_network_scores_a_cube_by_its_detection_output_over_the_centre() -> None:
    from lungcad.core.model.predict import CENTRE_REACH, predict_hu_cubes

    # A 32-voxel cube's centre lies at 15.5: the reach spans voxels 15.5 -+ (4 + 0.5).
    assert CENTRE_REACH == 4
    ats = (15, 16, 9, 22, 8, 23)  # 4 mm balls, mirror images in pairs along z
    cubes = np.full((len(ats), 32, 32, 32), -800.0, np.float32)
    k, j, i = np.indices((32, 32, 32))
    for n, at in enumerate(ats):
        cubes[n][(k - at) ** 2 + (j - 16) ** 2 + (i - 16) ** 2 <= 4] = BALL_HU
    prob, malignancy = predict_hu_cubes(BallNet(), cubes, WINDOW, "cpu")
    # Centred, or an edge within the reach (voxel 11 or 20): both peaks 1, so
    # (1 + 1 x 0.5) / 2, on either side alike; a ball whose edge stops one voxel short of
    # the reach is not the cube's nodule.
    np.testing.assert_allclose(prob, [0.75, 0.75, 0.75, 0.75, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(malignancy, 4.0)
    head, _ = predict_hu_cubes(BallNet(), cubes, WINDOW, "cpu", head_only=True)
    np.testing.assert_allclose(head, 0.5)


class CoreNet(BandNet):
    """The band's mask and a heatmap sure of a centre only where the HU reach ``CORE_HU``."""

    centres = True

    def dense_logits(self, x: torch.Tensor, full_size: bool = True) -> torch.Tensor:
        cut = (CORE_HU - 50 - WINDOW[0]) / (WINDOW[1] - WINDOW[0])
        return torch.cat([super().dense_logits(x), (x - cut) * 200.0], dim=1)


CORE_HU = 390


def test_a_finding_lies_where_the_heatmap_puts_the_lesions_centre_not_its_masks() -> None:
    # A 14 mm ball with a dense core, whose mask leaks along a 5 mm tube 48 mm long (a
    # vessel, the chest wall): one part of the map, its centroid pulled ~14 mm off the
    # ball. The centre map peaks at the core: the finding lies there, its cube on the ball.
    hu, geometry = synthetic_chest(spheres=[])
    k, j, i = np.indices(hu.shape, dtype=np.float32)
    x, y, z = (geometry.origin_mm[a] + n * geometry.spacing_mm[a] for a, n in enumerate((i, j, k)))
    ball = np.array([-45.0, -5.0, 0.0])
    hu[(x - ball[0]) ** 2 + (y - ball[1]) ** 2 + (z - ball[2]) ** 2 <= 7**2] = BALL_HU
    hu[((x - ball[0]) ** 2 + (y - ball[1]) ** 2 <= 2.5**2) & (z > 0) & (z < 55)] = BALL_HU
    hu[(x - ball[0]) ** 2 + (y - ball[1]) ** 2 + (z - ball[2]) ** 2 <= 1.5**2] = CORE_HU
    z_mm = geometry.origin_mm[2] + geometry.spacing_mm[2] * np.arange(hu.shape[0])
    volume = CtVolume(hu, geometry, "1.2.3", "1.2", "P", z_mm)
    loaded = LoadedModel(CoreNet(), BAND.config, BAND.cut)
    det = detect_volume_dense(volume, loaded, _detector(), plain_detect(patch=64, score="centre"))
    found = det.findings
    assert len(found) == 1
    at = found[["coordX", "coordY", "coordZ"]].to_numpy()[0]
    assert np.linalg.norm(at - ball) < 1.5
    mask, origin, spacing = det.masks[0]
    centroid = origin + np.argwhere(mask).mean(axis=0)[::-1] * spacing
    assert np.linalg.norm(centroid - ball) > 10.0  # the mask's centroid: on the tube


def test_a_model_that_cannot_run_the_dense_detector_is_refused_in_one_line() -> None:
    from lungcad.config import ModelConfig
    from lungcad.core.model.network import NoduleNet
    from lungcad.detection.dense import check_dense_model

    check_dense_model(NoduleNet(ModelConfig(centre_head=True)), DetectConfig(score="centre"))
    for score in ("centre", "combined"):
        with pytest.raises(ValueError, match="needs a model with the centre head"):
            check_dense_model(NoduleNet(ModelConfig(centre_head=False)), DetectConfig(score=score))
    with pytest.raises(ValueError, match="needs a model with a segmentation decoder"):
        check_dense_model(
            NoduleNet(ModelConfig(segmentation=False, centre_head=False)), DetectConfig()
        )


@pytest.mark.parametrize(
    "hu",
    [
        np.full((6, 64, 64), 40, np.int16),  # no air inside a body: no lung
        np.full((1, 80, 80), -900, np.int16),  # one slice, all of it lung-dark
    ],
    ids=["no lung", "one slice"],
)
def test_scans_without_a_lung_or_with_one_slice_are_processed(hu) -> None:
    geometry = VolumeGeometry(np.zeros(3), np.array([1.0, 1.0, 2.0]), np.eye(3), hu.shape)
    volume = CtVolume(hu, geometry, "1", "1", "P", np.arange(len(hu)) * 2.0)
    det = detect_volume_dense(volume, BAND, _detector(), plain_detect())
    assert list(det.findings.columns) == FINDING_COLUMNS and det.findings.empty


def test_a_scan_smaller_than_a_patch_is_searched_whole() -> None:
    # 24 slices from z = -20 mm: the first two balls, not the third; every side of the
    # lung region's grid is shorter than the patch.
    volume = _chest(shape=(24, 200, 250), origin=np.array([ORIGIN[0], ORIGIN[1], -20.0]))
    det = detect_volume_dense(volume, BAND, _detector(), plain_detect(patch=256))
    centres = det.findings[["coordX", "coordY", "coordZ"]].to_numpy()
    assert len(centres) == 2
    for centre, _ in BALLS[:2]:
        assert np.linalg.norm(centres - np.array(centre), axis=1).min() < 1.0


def test_the_dense_detector_writes_the_same_outputs_and_reports_the_bad_scans(
    scans,  # noqa: F811 (the fixtures of test_detect_cli)
    checkpoint,  # noqa: F811
    tmp_path,
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(f"extends: {TEST_PARAMS}\ndetect:\n  detector: dense\n  patch: 64\n")
    result = _detect(scans["dicom"], tmp_path / "out", checkpoint, params)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "out" / "scans.csv")
    assert (table["status"] == "ok").all() and len(table) == 3
    assert table["reason"].str.contains("no lung found", na=False).sum() == 1
    assert table["reason"].str.contains("truncated", na=False).sum() == 1
    assert {"seconds_resample", "seconds_scoring", "seconds_heads"} <= set(table.columns)
    found = pd.read_csv(tmp_path / "out" / "detections.csv")
    assert {"coordX", "probability", "diameter_mm", "lung_rads", "sizing"} <= set(found.columns)
    # Each scan has its SR, as with the cube detector.
    assert len(list((tmp_path / "out" / "dicom").glob("*/sr.dcm"))) == 3
    # A score the model cannot give stops the run before any scan, in one line.
    params.write_text(f"extends: {TEST_PARAMS}\ndetect:\n  detector: dense\n  score: centre\n")
    refused = _detect(scans["dicom"], tmp_path / "refused", checkpoint, params)
    assert refused.exit_code != 0 and "Traceback" not in refused.output
    assert "detect.score: centre needs a model with the centre head" in refused.output
    assert checkpoint.name in refused.output  # the message names the checkpoint
    assert not (tmp_path / "refused" / "scans.csv").exists()


def test_a_single_slice_is_repeated_where_there_is_nothing_to_mirror() -> None:
    from lungcad.core.cubes import mirror_pad_z

    hu = np.arange(12, dtype=np.int16).reshape(1, 3, 4)
    geometry = VolumeGeometry(np.zeros(3), np.array([1.0, 1.0, 2.0]), np.eye(3), hu.shape)
    padded, grown = mirror_pad_z(CtVolume(hu, geometry, "1", "1", "P", np.zeros(1)), 8.0)
    assert padded.shape == (7, 3, 4) and (padded == hu).all()
    assert grown.origin_mm[2] == -6.0  # three slices of 2 mm below the first
