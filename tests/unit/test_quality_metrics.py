"""Tokenizer quality metrics on inputs whose answers are known by construction.

Frames here are made of 8x8 tiles in a 4-shade palette, like Game Boy screens, so the
right pixel accuracy, dialog accuracy, token stability and tile counts can be counted by hand.
"""

from __future__ import annotations

import math

import pytest
import torch

from pokevq.train.metrics import QualityMetrics, frame_palette, perplexity_from_counts, snap_to_palette, ssim, to_uint8

PALETTE = torch.tensor([[224, 248, 208], [136, 192, 112], [52, 104, 86], [8, 24, 32]], dtype=torch.uint8)


def frames_from_shades(shades: torch.Tensor) -> torch.Tensor:
    """(N, H, W) shade indices 0-3 -> (N, 3, H, W) floats in [0, 1] in PALETTE's colours."""
    return PALETTE[shades].permute(0, 3, 1, 2).float() / 255


def tiled_shades(tile_ids: torch.Tensor, tiles: torch.Tensor) -> torch.Tensor:
    """(N, h, w) ids into (K, 8, 8) tiles -> (N, 8h, 8w) shade indices."""
    n, h, w = tile_ids.shape
    return tiles[tile_ids].permute(0, 1, 3, 2, 4).reshape(n, h * 8, w * 8)


@pytest.fixture
def tiles() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randint(0, 4, (6, 8, 8))


def metrics_for(recon, target, codes, **extra) -> dict:
    m = QualityMetrics(codebook_size=8, tile=8)
    m.update(recon, target, codes, loss=0.0, batch_size=len(target), **extra)
    return m.compute()


# --------------------------------------------------------------------- reconstruction


def test_identical_frames_are_perfect(tiles):
    x = frames_from_shades(tiled_shades(torch.randint(0, 6, (3, 2, 3)), tiles))
    r = metrics_for(x.clone(), x, torch.zeros(3, 2, 3, dtype=torch.long))
    assert r["psnr"] == math.inf
    assert r["ssim"] == pytest.approx(1.0)
    assert r["pixel_accuracy"] == 1.0
    assert r["exact_frames"] == 1.0


def test_small_errors_snap_back_to_the_right_shade(tiles):
    x = frames_from_shades(tiled_shades(torch.randint(0, 6, (2, 2, 3)), tiles))
    noisy = (x + (torch.rand_like(x) - 0.5) * 0.1).clamp(0, 1)  # well under half the gap between shades
    r = metrics_for(noisy, x, torch.zeros(2, 2, 3, dtype=torch.long))
    assert r["pixel_accuracy"] == 1.0 and r["exact_frames"] == 1.0
    assert 20 < r["psnr"] < 60
    assert r["ssim"] < 1.0


def test_each_wrong_pixel_counts_once():
    shades = torch.zeros(4, 16, 24, dtype=torch.long)
    x = frames_from_shades(shades)
    wrong = shades.clone()
    wrong[1, 3, 5] = 3  # one pixel of frame 1 in the darkest shade
    wrong[2, 0, 0:2] = 2  # two pixels of frame 2
    r = metrics_for(frames_from_shades(wrong), x, torch.zeros(4, 2, 3, dtype=torch.long), palettes=[PALETTE] * 4)
    assert r["pixel_accuracy"] == pytest.approx(1 - 3 / (4 * 16 * 24))
    assert r["exact_frames"] == pytest.approx(2 / 4)


def test_known_palette_is_used_when_given():
    # A frame that only shows the lightest shade: read off the frame, its palette is that one
    # colour, so a pixel drawn in the second shade would snap back and look right.
    x = frames_from_shades(torch.zeros(1, 8, 8, dtype=torch.long))
    wrong = torch.zeros(1, 8, 8, dtype=torch.long)
    wrong[0, 0, 0] = 1
    recon = frames_from_shades(wrong)
    codes = torch.zeros(1, 1, 1, dtype=torch.long)
    assert metrics_for(recon, x, codes)["pixel_accuracy"] == 1.0
    assert metrics_for(recon, x, codes, palettes=[PALETTE])["pixel_accuracy"] == pytest.approx(63 / 64)


def test_frame_palette_reads_the_shades_off_the_frame(tiles):
    frame = to_uint8(frames_from_shades(tiled_shades(torch.arange(6).view(1, 2, 3), tiles)))[0]
    found = {tuple(c) for c in frame_palette(frame).tolist()}
    assert found == {tuple(c) for c in PALETTE.tolist()}


def test_snap_to_palette_picks_the_nearest_shade():
    image = torch.tensor([[[[0.5, 0.0]], [[0.75, 0.1]], [[0.44, 0.1]]]])  # two pixels
    snapped = snap_to_palette(image, PALETTE.unsqueeze(0))
    assert snapped[0, :, 0, 0].tolist() == PALETTE[1].tolist()
    assert snapped[0, :, 0, 1].tolist() == PALETTE[3].tolist()


def test_ssim_falls_with_distortion_and_is_symmetric():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    slight, heavy = (x + 0.05 * torch.randn_like(x)).clamp(0, 1), torch.rand_like(x)
    assert ssim(x, x).tolist() == pytest.approx([1.0, 1.0])
    assert (ssim(x, slight) > ssim(x, heavy)).all()
    assert torch.allclose(ssim(x, heavy), ssim(heavy, x))


# --------------------------------------------------------------------- dialog boxes


def test_dialog_accuracy_counts_only_the_box():
    shades = torch.zeros(2, 16, 24, dtype=torch.long)
    x = frames_from_shades(shades)
    wrong = shades.clone()
    wrong[0, 0, 0] = 3  # outside frame 0's box
    wrong[1, 10, 5] = 3  # inside frame 1's box
    boxes = [(8, 0, 16, 24), (8, 0, 16, 24)]
    r = metrics_for(frames_from_shades(wrong), x, torch.zeros(2, 2, 3, dtype=torch.long),
                    palettes=[PALETTE] * 2, dialog_boxes=boxes)
    assert r["dialog_accuracy"] == pytest.approx(1 - 1 / (2 * 8 * 24))
    assert r["pixel_accuracy"] == pytest.approx(1 - 2 / (2 * 16 * 24))


def test_no_dialog_boxes_no_dialog_figure():
    x = frames_from_shades(torch.zeros(1, 8, 8, dtype=torch.long))
    assert "dialog_accuracy" not in metrics_for(x, x, torch.zeros(1, 1, 1, dtype=torch.long), dialog_boxes=[None])


# --------------------------------------------------------------------- token stability


def _sequence(tiles):
    """Four frames of one episode, 1x3 tiles each; frame 2 changes tile 0, frame 3 tile 2."""
    ids = torch.tensor([[[0, 1, 2]], [[0, 1, 2]], [[3, 1, 2]], [[3, 1, 4]]])
    return frames_from_shades(tiled_shades(ids, tiles))


def test_token_stability_counts_unchanged_tiles_that_keep_their_code(tiles):
    x = _sequence(tiles)
    # Unchanged tiles between consecutive frames: 3 (f0->f1) + 2 (f1->f2) + 2 (f2->f3) = 7.
    # Their codes: one of the 7 flips (tile 1 between f1 and f2), so 6 of 7 are stable.
    codes = torch.tensor([[[0, 1, 2]], [[0, 1, 2]], [[3, 5, 2]], [[3, 5, 4]]])
    r = metrics_for(x, x, codes, sequences=["e1"] * 4)
    assert r["token_stability"] == pytest.approx(6 / 7)


def test_token_stability_is_the_same_across_batch_boundaries(tiles):
    x = _sequence(tiles)
    codes = torch.tensor([[[0, 1, 2]], [[0, 1, 2]], [[3, 5, 2]], [[3, 5, 4]]])
    m = QualityMetrics(codebook_size=8, tile=8)
    for part in (slice(0, 1), slice(1, 3), slice(3, 4)):
        m.update(x[part], x[part], codes[part], loss=0.0, batch_size=len(x[part]), sequences=["e1"] * len(x[part]))
    assert m.compute()["token_stability"] == pytest.approx(6 / 7)


def test_frames_of_another_episode_are_not_compared(tiles):
    x = _sequence(tiles)
    codes = torch.tensor([[[0, 1, 2]], [[7, 7, 7]], [[3, 5, 2]], [[3, 5, 4]]])
    # f1 starts a new episode: only f2->f3 (2 unchanged tiles, both stable) and f1->f2 count.
    r = metrics_for(x, x, codes, sequences=["a", "b", "b", "b"])
    assert r["token_stability"] == pytest.approx(2 / 4)


# --------------------------------------------------------------------- codebook and data


def test_one_code_gives_perplexity_one_and_usage_of_one_code(tiles):
    x = frames_from_shades(tiled_shades(torch.randint(0, 6, (2, 2, 3)), tiles))
    r = metrics_for(x, x, torch.full((2, 2, 3), 5))
    assert r["perplexity"] == pytest.approx(1.0)
    assert r["codebook_usage"] == pytest.approx(1 / 8)
    assert r["dead_codes"] == 7


def test_data_tiles_counts_distinct_tiles_and_their_perplexity(tiles):
    ids = torch.tensor([[[0, 0, 1], [0, 0, 2]]])  # 4 x tile 0, 1 x tile 1, 1 x tile 2
    x = frames_from_shades(tiled_shades(ids, tiles))
    r = metrics_for(x, x, torch.zeros(1, 2, 3, dtype=torch.long))
    assert r["data_tiles"] == 3
    assert r["data_tile_perplexity"] == pytest.approx(perplexity_from_counts(torch.tensor([4, 1, 1])))
    # A tokenizer with one code per distinct tile matches the data's own figures exactly.
    per_tile = metrics_for(x, x, ids)
    assert per_tile["perplexity"] == pytest.approx(r["data_tile_perplexity"])
