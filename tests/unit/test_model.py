"""Tests for pokevq.model.vqvae (VQ-VAE) and pokevq.metrics. Tiny models only: the file runs in seconds."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch

from pokevq.model.vqvae import VQVAE, ModelConfig, VectorQuantizerEMA, count_codes
from pokevq.train.metrics import EpochMetrics, codebook_usage, perplexity_from_counts, psnr

pytestmark = pytest.mark.usefixtures("one_thread_seeded")


def tiny_config(**overrides) -> ModelConfig:
    base = dict(
        architecture="tile",
        image_size=(32, 40),
        hidden_channels=16,
        embedding_dim=8,
        codebook_size=32,
        downsample=8,
        num_res_blocks=1,
    )
    base.update(overrides)
    return ModelConfig(**base)


def encoder_vectors(model: VQVAE, x: torch.Tensor) -> torch.Tensor:
    """Encoder outputs as (N, D) rows, the vectors the quantizer sees."""
    with torch.no_grad():
        z = model.encoder(x)
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


def min_dist_to(rows: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """For each row, the distance to its nearest point."""
    return torch.cdist(rows, points, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values


# --------------------------------------------------------------------- config / shapes


@pytest.mark.parametrize(
    "image_size, downsample",
    [((144, 160), 4), ((144, 160), 8), ((144, 160), 16), ((72, 80), 4), ((72, 80), 8)],
)
def test_output_shapes(image_size, downsample):
    config = tiny_config(image_size=image_size, downsample=downsample)
    model = VQVAE(config)
    h, w = image_size
    x = torch.rand(2, 3, h, w)
    out = model(x)
    assert out.recon.shape == (2, 3, h, w)
    assert out.recon.dtype == torch.float32
    assert out.codes.shape == (2, h // downsample, w // downsample)
    assert out.codes.dtype == torch.long
    assert config.latent_size == (h // downsample, w // downsample)
    assert 0.0 <= out.recon.min() and out.recon.max() <= 1.0
    for name in ("loss", "recon_loss", "commit_loss", "perplexity"):
        value = getattr(out, name)
        assert value.dim() == 0 and torch.isfinite(value), name
    expected = out.recon_loss + config.commitment_cost * out.commit_loss
    assert torch.allclose(out.loss, expected)

    model.eval()
    codes = model.encode(x)
    assert codes.shape == out.codes.shape and codes.dtype == torch.long
    assert model.decode_codes(codes).shape == (2, 3, h, w)


@pytest.mark.parametrize("image_size, downsample", [((100, 160), 8), ((36, 40), 8), ((72, 80), 16)])
def test_image_size_not_divisible_raises(image_size, downsample):
    with pytest.raises(ValueError, match="image_size"):
        ModelConfig(image_size=image_size, downsample=downsample, architecture="tile")


def test_wrong_input_size_raises():
    model = VQVAE(tiny_config())
    with pytest.raises(ValueError, match="image_size"):
        model(torch.rand(1, 3, 40, 32))


def test_config_dict_round_trip():
    config = tiny_config(commitment_cost=0.5)
    d = json.loads(json.dumps(config.to_dict()))
    assert d["image_size"] == [32, 40]
    assert ModelConfig.from_dict(d) == config
    with pytest.raises(ValueError):
        ModelConfig.from_dict({**d, "hiden_channels": 3})


def test_num_parameters():
    model = VQVAE(tiny_config())
    assert model.num_parameters() == sum(p.numel() for p in model.parameters())
    # The codebook is a buffer: the optimizer must never see it.
    assert "quantizer.embedding" not in dict(model.named_parameters())


# --------------------------------------------------------------------- quantizer behaviour


def test_straight_through_gradients_reach_encoder():
    model = VQVAE(tiny_config())
    # The tile decoder's output layer starts at zero (flat grey frames); once it has moved,
    # the straight-through path carries the reconstruction loss back to every encoder weight.
    torch.nn.init.normal_(model.decoder.out.weight, std=0.1)
    out = model(torch.rand(2, 3, 32, 40))
    out.recon_loss.backward()  # recon loss alone: only the straight-through path links it to the encoder
    for name, p in model.encoder.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_ema_updates_only_in_training():
    model = VQVAE(tiny_config())
    x = torch.rand(4, 3, 32, 40)
    model(x)  # first training batch: data-sampled init
    assert bool(model.quantizer.initialized)

    before = model.quantizer.embedding.clone()
    model(x)
    assert not torch.equal(model.quantizer.embedding, before)

    model.eval()
    before = model.quantizer.embedding.clone()
    sizes = model.quantizer.cluster_size.clone()
    with torch.no_grad():
        model(x)
    assert torch.equal(model.quantizer.embedding, before)
    assert torch.equal(model.quantizer.cluster_size, sizes)

    model.train()
    model.encode(x)  # encode is a pure lookup even in train mode
    assert torch.equal(model.quantizer.embedding, before)


def test_state_dict_round_trip():
    config = tiny_config()
    model = VQVAE(config)
    x = torch.rand(4, 3, 32, 40)
    for _ in range(3):
        model(x)
    model.eval()

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert "quantizer.initialized" in state

    clone = VQVAE(ModelConfig.from_dict(config.to_dict()))
    clone.load_state_dict(state)
    clone.eval()
    assert bool(clone.quantizer.initialized)
    with torch.no_grad():
        a, b = model(x), clone(x)
    assert torch.equal(a.recon, b.recon)
    assert torch.equal(a.codes, b.codes)
    assert torch.equal(a.loss, b.loss)
    # encode -> decode_codes is the eval forward pass in two halves.
    assert torch.allclose(clone.decode_codes(clone.encode(x)), a.recon, atol=1e-6)

    # A resumed model continues the EMA rather than re-initialising the codebook.
    model.train()
    clone.train()
    torch.manual_seed(1)
    model(x)
    torch.manual_seed(1)
    clone(x)
    assert torch.equal(model.quantizer.embedding, clone.quantizer.embedding)


@pytest.mark.parametrize("batch", [4, 1])  # 4 frames: 80 vectors > 32 codes; 1 frame: 20 < 32
def test_data_sampled_init(batch):
    model = VQVAE(tiny_config(codebook_init="data"))
    x = torch.rand(batch, 3, 32, 40)
    z = encoder_vectors(model, x)
    scale = z.std().item()
    assert min_dist_to(model.quantizer.embedding, z).min() > 0.1 * scale  # random init is far off

    model(x)
    codebook = model.quantizer.embedding
    # Every code sits on some encoder output, up to the tiny tie-breaking noise.
    assert min_dist_to(codebook, z).max() < 0.01 * scale
    # Noise keeps codes distinct even when vectors had to be reused.
    assert torch.pdist(codebook).min() > 0
    # Each code starts with its usage in that batch: surplus codes start dead.
    assert torch.equal(model.quantizer.cluster_size, count_codes(model.encode(x), 32).float())


def test_kmeans_init_fits_the_first_batch_better_than_sampling():
    x = torch.rand(4, 3, 32, 40)
    errors = {}
    for init in ("data", "kmeans"):
        torch.manual_seed(0)
        model = VQVAE(tiny_config(codebook_init=init))
        z = encoder_vectors(model, x)
        model(x)
        errors[init] = min_dist_to(z, model.quantizer.embedding).pow(2).mean().item()
    assert errors["kmeans"] < 0.8 * errors["data"]


@pytest.mark.parametrize("restart", ["random", "worst"])
def test_dead_code_restart(restart):
    model = VQVAE(tiny_config(dead_code_restart=restart))
    q = model.quantizer
    x = torch.rand(4, 3, 32, 40)
    model(x)  # init

    dead = torch.arange(8)
    with torch.no_grad():
        q.embedding[dead] = 100.0  # far from the data: no vector picks them
        q.cluster_size[dead] = 0.0
        q.embed_sum[dead] = 0.0
    z = encoder_vectors(model, x)  # no optimizer step, so the same vectors the step sees
    model(x)  # a training step: these codes are dead and get restarted
    restarted = min_dist_to(q.embedding[dead], z) < 1e-5  # moved exactly onto a latent of the batch
    if restart == "random":
        assert restarted.all()
    else:  # worst: only onto latents represented worse than average, so at least one, maybe not all
        assert restarted.any()
    assert torch.all(q.cluster_size[dead][restarted] == 1.0)
    assert torch.allclose(q.embed_sum[dead][restarted], q.embedding[dead][restarted])

    # Usage recovers: the restarted codes are chosen again.
    model.eval()
    counts = count_codes(model.encode(x), q.codebook_size)
    assert counts[dead].sum() > 0


def test_quantizer_is_fp32_under_autocast():
    torch.manual_seed(0)
    q = VectorQuantizerEMA(512, 64, codebook_init="random").eval()
    z = torch.randn(4, 64, 16, 16)
    with torch.no_grad():
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            zq, _, commit, codes, _ = q(z.bfloat16())
    assert zq.dtype == torch.float32 and commit.dtype == torch.float32
    # Same nearest codes as in fp32 (up to the input having been rounded to bf16).
    expected = q.lookup(z.bfloat16().float())
    assert torch.equal(codes, expected)


def test_model_forward_under_cpu_autocast():
    model = VQVAE(tiny_config())
    x = torch.rand(2, 3, 32, 40)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = model(x)
    out.loss.backward()
    assert out.recon.dtype == torch.float32
    assert torch.isfinite(out.loss)
    assert 0.0 <= out.recon.min() and out.recon.max() <= 1.0


def test_batch_perplexity_matches_counts():
    model = VQVAE(tiny_config())
    out = model(torch.rand(4, 3, 32, 40))
    expected = perplexity_from_counts(count_codes(out.codes, 32))
    assert out.perplexity.item() == pytest.approx(expected, rel=1e-4)


def test_count_codes():
    counts = count_codes(torch.tensor([[0, 2], [2, 3]]), 5)
    assert counts.dtype == torch.long
    assert counts.tolist() == [1, 0, 2, 1, 0]


# --------------------------------------------------------------------- metrics


def test_psnr():
    assert psnr(0.0) == math.inf
    assert psnr(0.01) == pytest.approx(20.0)
    assert psnr(0.01, max_val=255.0) == pytest.approx(20.0 + 20 * math.log10(255.0))


def test_perplexity_and_usage():
    assert perplexity_from_counts(torch.zeros(8, dtype=torch.long)) == 0.0
    assert perplexity_from_counts(torch.tensor([0, 7, 0, 0])) == pytest.approx(1.0)
    assert perplexity_from_counts(torch.full((8,), 3)) == pytest.approx(8.0)
    assert codebook_usage(torch.tensor([5, 0, 2, 1])) == 0.75
    assert codebook_usage(torch.zeros(4, dtype=torch.long)) == 0.0


def test_epoch_metrics_identical_and_known_mse():
    target = torch.rand(2, 3, 8, 8) * 0.5
    m = EpochMetrics(codebook_size=4)
    m.update(target.clone(), target, torch.tensor([[0, 0], [2, 3]]), loss=0.0, batch_size=2)
    r = m.compute()
    assert r["mse"] == 0.0 and r["psnr"] == math.inf
    assert r["codebook_usage"] == 0.75 and r["dead_codes"] == 1
    assert r["frames"] == 2

    m = EpochMetrics(codebook_size=4)
    m.update(target + 0.1, target, torch.zeros(2, 1, 1, dtype=torch.long), loss=torch.tensor(0.5), batch_size=2)
    r = m.compute()
    assert r["mse"] == pytest.approx(0.01, rel=1e-4)
    assert r["psnr"] == pytest.approx(20.0, abs=1e-3)
    assert r["loss"] == pytest.approx(0.5)
    assert r["perplexity"] == pytest.approx(1.0)
    assert set(r) == {"loss", "mse", "psnr", "perplexity", "codebook_usage", "dead_codes", "frames"}
    assert all(type(v) in (float, int) for v in r.values())


def test_epoch_metrics_empty():
    r = EpochMetrics(codebook_size=16).compute()
    assert r["frames"] == 0
    assert all(v == 0 and not math.isnan(v) for v in r.values())


def test_epoch_metrics_equal_concatenation():
    k = 16
    sizes = (3, 5)
    recons = [torch.rand(n, 3, 16, 16) for n in sizes]
    targets = [torch.rand(n, 3, 16, 16) for n in sizes]
    codes = [torch.randint(0, k // 2, (n, 2, 2)) for n in sizes]  # only half the codes: some dead

    m = EpochMetrics(codebook_size=k)
    for r, t, c, n in zip(recons, targets, codes, sizes):
        m.update(r, t, c, loss=torch.mean((r - t) ** 2), batch_size=n)
    got = m.compute()

    r, t, c = torch.cat(recons), torch.cat(targets), torch.cat(codes)
    mse = torch.mean((r.double() - t.double()) ** 2).item()
    counts = count_codes(c, k)
    assert got["frames"] == 8
    assert got["mse"] == pytest.approx(mse, rel=1e-6)
    assert got["loss"] == pytest.approx(mse, rel=1e-5)  # loss = batch MSE, weighted by batch size
    assert got["psnr"] == pytest.approx(psnr(mse), rel=1e-6)
    assert got["perplexity"] == pytest.approx(perplexity_from_counts(counts))
    assert got["codebook_usage"] == pytest.approx(codebook_usage(counts))
    assert got["dead_codes"] == int((counts == 0).sum())


# --------------------------------------------------------------------- learns


def tile_images(n: int, palette: torch.Tensor) -> torch.Tensor:
    """n 32x40 images of flat-coloured 8x8 tiles, like Game Boy backgrounds."""
    idx = torch.randint(0, len(palette), (n, 4, 5))
    img = palette[idx].permute(0, 3, 1, 2)  # (n, 3, 4, 5)
    return img.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3).contiguous()


def test_tiny_model_learns():
    palette = torch.tensor(
        [[0.88, 0.97, 0.82], [0.53, 0.75, 0.44], [0.20, 0.41, 0.34], [0.03, 0.09, 0.12]]
    )
    x = tile_images(8, palette)
    model = VQVAE(tiny_config(hidden_channels=32))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(60):
        out = model(x)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        losses.append(out.recon_loss.item())
    model.eval()
    with torch.no_grad():
        final = model(x).recon_loss.item()
    assert final < losses[0] / 3, (losses[0], final)
