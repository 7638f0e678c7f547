"""The patch architecture (the default): a codebook seeded from the training frames' patches at every offset codes
a scrolled frame exactly where the on-grid tile dictionary cannot, and its lookups agree however they are made."""

from __future__ import annotations

import io

import pytest
import torch

from pokevq.model.patches import frame_phases, seed_patches, window_hashes
from pokevq.model.vqvae import VQVAE, ModelConfig
from pokevq.train.baselines import fit_baselines

pytestmark = pytest.mark.usefixtures("one_thread_seeded")

H, W = 32, 40


def _map(rows: int = 7, cols: int = 8, seed: int = 0) -> torch.Tensor:
    """A Game Boy-like background: a map of 8x8 tiles drawn from a few 4-shade tiles, as (3, 8*rows, 8*cols)."""
    generator = torch.Generator().manual_seed(seed)
    shades = torch.tensor([[0.88, 0.97, 0.82], [0.53, 0.75, 0.44], [0.20, 0.41, 0.34], [0.03, 0.09, 0.12]])
    tiles = shades[torch.randint(0, 4, (6, 8, 8), generator=generator)]  # (6, 8, 8, 3)
    layout = torch.randint(0, 6, (rows, cols), generator=generator)
    picture = tiles[layout].permute(0, 2, 1, 3, 4).reshape(8 * rows, 8 * cols, 3)
    return (picture * 255).round().div(255).permute(2, 0, 1)


def _view(picture: torch.Tensor, y: int, x: int) -> torch.Tensor:
    return picture[:, y:y + H, x:x + W]


def _model(codebook_size: int = 4096) -> VQVAE:
    return VQVAE(ModelConfig(image_size=(H, W), codebook_size=codebook_size, hidden_channels=8, num_res_blocks=1))


def test_a_frame_scrolled_off_the_grid_is_coded_exactly_where_the_tile_dictionary_is_not() -> None:
    picture = _map()
    training = torch.stack([_view(picture, y, x) for y in (0, 8) for x in (0, 8)])
    scrolled = _view(picture, 3, 5)[None]  # the camera moved 3 and 5 pixels: every tile off the grid
    model = _model().eval()
    model.seed_codebook([training])
    recon = model.decode_codes(model.encode(scrolled))
    assert torch.equal((recon * 255).round(), (scrolled * 255).round())
    exact = next(d for d in fit_baselines([training], 4096, 8) if d.name == "exact dictionary")
    dictionary = exact.decode(exact.encode(scrolled))
    assert float((dictionary - scrolled).abs().amax()) > 0.1


def test_the_codebook_keeps_the_configured_size_with_the_most_frequent_grid_patches_first() -> None:
    frames = torch.stack([_view(_map(seed=s), 0, 0) for s in range(4)])
    uint8 = (frames * 255).round().to(torch.uint8)
    all_patches = seed_patches([uint8], 100000, 8)
    grid = torch.unique(uint8.unfold(2, 8, 8).unfold(3, 8, 8).permute(0, 2, 3, 1, 4, 5).reshape(-1, 192), dim=0)
    assert all_patches.shape[0] > grid.shape[0]  # windows at other offsets follow the grid's patches
    few = seed_patches([uint8], 5, 8)
    assert few.shape == (5, 192)
    model = _model(codebook_size=5)
    model.seed_codebook([frames])
    assert int(model.quantizer.filled) == 5 and model.encode(frames).max() < 5


def _frame_of(tiles: list[torch.Tensor]) -> torch.Tensor:
    """(3, H, W) in [0, 1] from H/8 x W/8 tiles of (3, 8, 8) uint8, row by row."""
    rows = [torch.cat(tiles[r * (W // 8):(r + 1) * (W // 8)], 2) for r in range(H // 8)]
    return torch.cat(rows, 1).float() / 255


def test_a_sprite_seen_over_two_backgrounds_is_coded_exactly_over_a_third() -> None:
    generator = torch.Generator().manual_seed(3)
    shades = torch.tensor([[224, 248, 208], [136, 192, 112], [52, 104, 86], [8, 24, 32]], dtype=torch.uint8)
    a, b, c, d = (shades[torch.randint(0, 4, (8, 8), generator=generator)].permute(2, 0, 1) for _ in range(4))
    cursor = torch.zeros(8, 8, dtype=torch.bool)
    cursor[0, :], cursor[:, 0] = True, True  # a corner of the cursor's frame, in a colour of its own
    red = torch.tensor([248, 0, 0], dtype=torch.uint8)[:, None, None]

    def under_cursor(tile: torch.Tensor) -> torch.Tensor:
        return torch.where(cursor, red, tile)

    backgrounds = [a, b, c, d] * 5
    training = torch.stack([_frame_of(backgrounds), _frame_of([under_cursor(a)] + backgrounds[1:]),
                            _frame_of([under_cursor(b)] + backgrounds[1:])])
    held_out = _frame_of([under_cursor(c)] + backgrounds[1:])[None]  # the cursor over a tile it never crossed

    model = _model().eval()
    model.seed_codebook([training])
    assert torch.equal(model.decode_codes(model.encode(held_out)), held_out)
    exact = next(t for t in fit_baselines([training], 4096, 8) if t.name == "exact dictionary")
    assert float((exact.decode(exact.encode(held_out)) - held_out).abs().amax()) > 0.5


def test_a_frame_scrolled_off_its_tiles_is_found_at_its_phase() -> None:
    picture = (_map(rows=9, cols=10) * 255).round().to(torch.uint8)
    views = torch.stack([_view(picture, 0, 0), _view(picture, 3, 5), _view(picture, 8, 1)])
    assert frame_phases(window_hashes(views, 8), 8).tolist() == [0, 8 * (8 - 3) + (8 - 5), 8 * 0 + (8 - 1)]


def test_the_hashed_lookup_and_the_plain_search_give_the_same_codes() -> None:
    generator = torch.Generator().manual_seed(1)
    training = torch.randint(0, 4, (4, 3, H, W), generator=generator).float() / 3
    unseen = torch.randint(0, 4, (4, 3, H, W), generator=generator).float() / 3
    model = _model().eval()
    model.seed_codebook([training])
    frames = torch.cat([training, unseen])
    assert torch.equal(model.encode(frames), model.patch_codes_by_search(frames))
    assert torch.equal(model.decode_codes(model.encode(training)), training)


def test_a_saved_patch_model_codes_and_draws_the_same_after_loading() -> None:
    picture = _map()
    training = torch.stack([_view(picture, y, x) for y in (0, 8) for x in (0, 8)])
    model = _model().eval()
    model.seed_codebook([training])
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    again = _model().eval()
    assert again.needs_seeding
    again.load_state_dict(torch.load(buffer, weights_only=True))
    assert not again.needs_seeding
    frames = _view(picture, 5, 2)[None]
    assert torch.equal(again.encode(frames), model.encode(frames))
    assert torch.equal(again.decode_codes(again.encode(frames)), model.decode_codes(model.encode(frames)))


def test_training_moves_only_the_decoder_and_keeps_seen_frames_exact_at_the_start() -> None:
    picture = _map()
    training = torch.stack([_view(picture, y, x) for y in (0, 8) for x in (0, 8)])
    model = _model()
    model.seed_codebook([training])
    before = model.quantizer.patches.clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    out = model(training)
    out.loss.backward()
    optimizer.step()
    assert torch.equal(model.quantizer.patches, before)
    assert {name.split(".")[0] for name, _ in model.named_parameters()} == {"decoder"}
