"""Tile dictionaries: the floors and the bound a learned tokenizer is measured against."""

from __future__ import annotations

import torch

from pokevq.train import baselines
from pokevq.train.baselines import TileDictionary, fit_baselines, kmeans, nearest


def _frames_from(tiles: list[torch.Tensor], layout: list[list[int]]) -> torch.Tensor:
    """One (1,3,8*rows,8*cols) frame whose tile at (r, c) is tiles[layout[r][c]]."""
    rows = [torch.cat([tiles[i] for i in row], dim=2) for row in layout]
    return torch.cat(rows, dim=1).unsqueeze(0)


def _tiles(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shades = torch.tensor([0.0, 1 / 3, 2 / 3, 1.0])
    return [shades[torch.randint(0, 4, (8, 8), generator=g)].expand(3, 8, 8).clone() for _ in range(n)]


def test_exact_dictionary_gives_back_every_training_tile_exactly():
    tiles = _tiles(6)
    frame = _frames_from(tiles, [[0, 1, 2], [3, 4, 5], [5, 0, 1]])
    found = fit_baselines([frame], codebook_size=512, tile=8)
    assert [d.name for d in found] == ["exact dictionary"]  # 6 distinct tiles: k-means 512 would be the same
    exact = found[0]
    assert exact.size == 6
    codes = exact.encode(frame)
    assert codes.shape == (1, 3, 3)
    assert codes[0, 0, 1] == codes[0, 2, 2] and codes[0, 0, 0] == codes[0, 2, 1]  # same tile, same code
    torch.testing.assert_close(exact.decode(codes), frame, atol=1 / 255, rtol=0)


def test_unseen_tile_is_coded_as_its_nearest_training_tile():
    tiles = _tiles(3)
    dictionary = fit_baselines([_frames_from(tiles, [[0, 1, 2]])], codebook_size=512, tile=8)[0]
    near = tiles[1].clone()
    near[:, 0, 0] = 1 - near[:, 0, 0]  # one pixel off tile 1
    codes = dictionary.encode(_frames_from([near], [[0]]))
    torch.testing.assert_close(dictionary.decode(codes), _frames_from(tiles, [[1]]), atol=1 / 255, rtol=0)


def test_kmeans_at_a_small_codebook_is_a_floor_below_the_exact_dictionary():
    tiles = _tiles(40, seed=1)
    frame = _frames_from(tiles, [list(range(i, i + 8)) for i in range(0, 40, 8)])
    found = {d.name: d for d in fit_baselines([frame], codebook_size=4, tile=8)}
    assert list(found) == ["k-means 4", "exact dictionary"]
    small = found["k-means 4"]
    assert small.size == 4

    def error(d: TileDictionary) -> float:
        return float(((d.decode(d.encode(frame)) - frame) ** 2).mean())

    assert error(found["exact dictionary"]) < 1e-8 < error(small)


def test_kmeans_finds_separated_clusters_weighted_by_frequency():
    centres = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    points = torch.cat([centres[0] + 0.01 * torch.arange(3)[:, None], centres[1] - 0.01 * torch.arange(3)[:, None]])
    found = kmeans(points, torch.ones(6), 2, seed=0)
    found = found[found[:, 0].argsort()]
    torch.testing.assert_close(found, torch.tensor([[0.01, 0.01], [0.99, 0.99]]), atol=1e-6, rtol=0)


def test_nearest_in_chunks_matches_the_whole_distance_matrix(monkeypatch):
    g = torch.Generator().manual_seed(0)
    rows, tiles = torch.rand(500, 12, generator=g), torch.rand(37, 12, generator=g)
    whole = torch.cdist(rows, tiles).argmin(1)
    monkeypatch.setattr(baselines, "_DISTANCE_BUDGET", 100)  # chunks of 2 rows
    assert torch.equal(nearest(rows, tiles), whole)
