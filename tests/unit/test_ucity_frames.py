"""Real Game Boy Color frames (tests/fixtures/ucity: µCity 1.2 in PyBoy) through the tile dictionaries and metrics.

The frames use many more colours than a Game Boy's 4 shades, and a Game Boy Color frame can show 56; the
palette-snapped metrics must keep every one of them, or an exact reconstruction reads as wrong pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pokevq.train.baselines import fit_baselines
from pokevq.train.metrics import QualityMetrics, frame_palette, to_uint8

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ucity" / "ucity"


def episode(name: str) -> torch.Tensor:
    """(N,3,144,160) floats in [0, 1]: one fixture episode's frames in order."""
    files = sorted(FIXTURE.joinpath(name).glob("frame_*.png"))
    arrays = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


def colours(frame: torch.Tensor) -> int:
    pixels = to_uint8(frame).reshape(3, -1).T
    return len(torch.unique(pixels, dim=0))


def score(recon: torch.Tensor, target: torch.Tensor, codes: torch.Tensor) -> dict:
    metrics = QualityMetrics(codebook_size=max(1, int(codes.max()) + 1), tile=8)
    metrics.update(recon, target, codes, loss=0.0, batch_size=len(target))
    return metrics.compute()


def recoloured(frame: torch.Tensor, palettes: int) -> torch.Tensor:
    """A real frame shown the Game Boy Color way: tile t drawn with palette t % `palettes` of 4 colours.

    Each pixel keeps its shade (its colour's rank by frequency in the frame, modulo 4); the palettes'
    colours are all different: up to 4 * `palettes` colours in the frame.
    """
    found = frame_palette(to_uint8(frame))
    ids = to_uint8(frame).permute(1, 2, 0).reshape(-1, 1, 3)
    shade = (ids == found.reshape(1, -1, 3)).all(-1).float().argmax(-1).reshape(144, 160) % 4
    table = torch.arange(palettes * 4 * 3, dtype=torch.float32).reshape(palettes, 4, 3)
    table = (table * 37 % 251) / 255  # distinct, spread-out colours
    tile = (torch.arange(144)[:, None] // 8 * 20 + torch.arange(160)[None, :] // 8) % palettes
    return table[tile, shade].permute(2, 0, 1)


def test_exact_dictionary_gives_back_a_real_colour_training_frame_exactly():
    train = torch.cat([episode("episode1"), episode("episode2")])
    assert max(colours(f) for f in train) > 4  # Game Boy Color frames, not 4 shades
    exact = fit_baselines([train], codebook_size=512, tile=8)[-1]
    assert exact.name == "exact dictionary"
    frames = train[[3, 8, 17]]  # a built town, a scenario city, a menu
    codes = exact.encode(frames)
    figures = score(exact.decode(codes), frames, codes)
    assert figures["pixel_accuracy"] == 1.0 and figures["exact_frames"] == 1.0 and figures["psnr"] == float("inf")


def test_an_unseen_episode_holds_tiles_training_never_showed():
    exact = fit_baselines([torch.cat([episode("episode1"), episode("episode2")])], codebook_size=512, tile=8)[-1]
    val = episode("episode3")
    codes = exact.encode(val)
    figures = score(exact.decode(codes), val, codes)
    assert figures["psnr"] < 40 and 0.5 < figures["pixel_accuracy"] < 1.0


def test_every_colour_of_a_game_boy_color_frame_is_kept_by_the_palette_snapping():
    # 14 palettes of 4 (the Game Boy Color's 56 colours at most): far above the 16 the metrics once kept.
    frame = recoloured(episode("episode1")[8], 14).unsqueeze(0)
    shown = colours(frame[0])
    assert 16 < shown <= 56
    assert len(frame_palette(to_uint8(frame[0]))) == shown
    codes = torch.zeros(1, 18, 20, dtype=torch.long)
    assert score(frame.clone(), frame, codes)["pixel_accuracy"] == 1.0
    wrong = frame.clone()
    wrong[0, :, 0:8, 152:160] = wrong[0, :, 0:8, 144:152]  # the last tile drawn with its neighbour's palette
    changed = int((to_uint8(wrong) != to_uint8(frame)).any(1).sum())
    assert changed > 0
    assert score(wrong, frame, codes)["pixel_accuracy"] == pytest.approx(1 - changed / (144 * 160))

