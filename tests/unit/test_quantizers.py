"""The quantizers and what keeps a codebook alive: k-means init, worst-first restarts, cosine codes, FSQ.

Each test builds a case whose right answer is known (a dead code and one badly represented
latent, three separated clusters, a legacy checkpoint) and checks the quantizer finds it.
"""

from __future__ import annotations

import io

import pytest
import torch

from pokevq.errors import CheckpointError, ConfigError
from pokevq.model.quantizers import FSQ, VectorQuantizer, VectorQuantizerEMA, fsq_levels, kmeans
from pokevq.model.vqvae import LEGACY_MODEL_FIELDS, VQVAE, ModelConfig
from pokevq.train.checkpoint import check_model_shape

pytestmark = pytest.mark.usefixtures("one_thread_seeded")


def as_map(rows: torch.Tensor) -> torch.Tensor:
    """(N, D) latents as a (1, D, 1, N) map, the shape a quantizer takes."""
    return rows.t().reshape(1, rows.shape[1], 1, rows.shape[0])


# --------------------------------------------------------------------- FSQ


@pytest.mark.parametrize(
    "size, levels", [(512, (8, 8, 8)), (1000, (8, 5, 5, 5)), (64, (8, 8)), (16, (4, 4)), (240, (8, 6, 5))]
)
def test_fsq_levels_multiply_to_the_codebook_size(size, levels):
    assert fsq_levels(size) == levels


@pytest.mark.parametrize("size", [11, 2, 1024 * 1024 * 17])
def test_fsq_refuses_sizes_that_are_no_product_of_levels(size):
    with pytest.raises(ConfigError, match="cannot be an FSQ codebook"):
        fsq_levels(size)


def test_fsq_reaches_every_code_and_decodes_its_own_codes():
    fsq = FSQ(64, embedding_dim=4).eval()
    codes = torch.arange(64).view(1, 8, 8)
    decoded = fsq.embed(codes)
    # Every code has its own decoder input, and looking that input up again gives the code back.
    assert torch.unique(decoded.flatten(2).transpose(1, 2)[0], dim=0).shape[0] == 64
    z = torch.randn(3, 4, 5, 6) * 3
    out = fsq(z)
    assert out.codes.min() >= 0 and out.codes.max() < 64
    assert torch.equal(fsq.lookup(z), out.codes)
    assert torch.allclose(fsq.embed(out.codes), out.z_q, atol=1e-5)
    assert out.loss.item() == 0.0


def test_fsq_passes_gradients_straight_through():
    fsq = FSQ(125, embedding_dim=4)
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    fsq(z).z_q.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


# --------------------------------------------------------------------- codebook init


def test_kmeans_finds_separated_clusters():
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    rows = torch.cat([c + 0.1 * torch.randn(50, 2) for c in centres])
    found = kmeans(rows, 3)
    distances = torch.cdist(found, centres)
    assert distances.min(dim=1).values.max() < 0.2  # every centroid on a cluster
    assert sorted(distances.argmin(dim=1).tolist()) == [0, 1, 2]  # and every cluster found


def test_kmeans_with_fewer_distinct_points_than_codes():
    rows = torch.tensor([[1.0, 1.0], [2.0, 2.0]]).repeat(10, 1)
    found = kmeans(rows, 8)
    assert found.shape == (8, 2)
    assert torch.cdist(found, rows).min(dim=1).values.max() < 1e-6  # surplus codes repeat data points


def test_kmeans_init_covers_rare_clusters_that_random_sampling_misses():
    # 1000 latents at one point and one latent far away: sampling rows almost never picks the
    # rare one, k-means++ seeding always does (it is the farthest point from the first seed).
    common = torch.zeros(1000, 2)
    rare = torch.tensor([[50.0, 50.0]])
    rows = torch.cat([common, rare])
    q = VectorQuantizerEMA(4, 2, codebook_init="kmeans", dead_code_restart="off")
    q(as_map(rows))
    assert torch.cdist(q.codebook_vectors(), rare).min() < 0.1


# --------------------------------------------------------------------- dead-code restarts


def _one_dead_code(restart: str) -> VectorQuantizerEMA:
    """Codes 0-2 on a point where 100 latents sit, code 3 dead and far from all; one latent far off."""
    q = VectorQuantizerEMA(4, 2, codebook_init="data", dead_code_restart=restart, decay=0.99)
    with torch.no_grad():
        q.embedding.copy_(torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [-100.0, -100.0]]))
        q.cluster_size.copy_(torch.tensor([1.0, 1.0, 1.0, 0.0]))
        q.embed_sum.copy_(q.embedding * q.cluster_size.unsqueeze(1))
        q.initialized.fill_(True)
    return q


def test_worst_restart_puts_the_dead_code_on_the_worst_represented_latent():
    outlier = torch.tensor([[10.0, 10.0]])
    rows = torch.cat([torch.zeros(100, 2), outlier])
    q = _one_dead_code("worst")
    q(as_map(rows))
    assert torch.allclose(q.embedding[3], outlier[0])
    # From now on the outlier has a code of its own.
    assert q.lookup(as_map(outlier)).item() == 3


def test_random_restart_lands_where_the_latents_are_dense():
    rows = torch.cat([torch.zeros(100, 2), torch.tensor([[10.0, 10.0]])])
    landed_on_outlier = moved = 0
    for seed in range(20):
        torch.manual_seed(seed)
        q = _one_dead_code("random")
        q(as_map(rows))
        landed_on_outlier += bool(torch.allclose(q.embedding[3], torch.tensor([10.0, 10.0])))
        moved += bool(q.embedding[3].abs().max() < 50)  # it left its far-off place for a latent's
    assert moved == 20  # the dead code is restarted every time ...
    assert landed_on_outlier <= 3  # ... on a random latent: 1 in 101 per draw is the rare one


def test_restart_off_leaves_the_outlier_without_a_code():
    outlier = torch.tensor([[10.0, 10.0]])
    rows = torch.cat([torch.zeros(100, 2), outlier])
    q = _one_dead_code("off")
    for _ in range(10):
        q(as_map(rows))
    assert torch.cdist(q.codebook_vectors(), outlier).min() > 5  # shared with the common latents' code


def test_a_rarely_used_code_is_not_restarted():
    # Used once every 50 batches: its usage EMA stays above the 0.01 default threshold.
    q = _one_dead_code("worst")
    rare = torch.tensor([[10.0, 10.0]])
    with torch.no_grad():
        q.embedding[3] = rare[0]
        q.embed_sum[3] = rare[0]
        q.cluster_size[3] = 1.0
    common = torch.zeros(100, 2)
    for step in range(200):
        q(as_map(torch.cat([common, rare]) if step % 50 == 0 else common))
    assert torch.allclose(q.embedding[3], rare[0], atol=1e-2)


# --------------------------------------------------------------------- lookup spaces


def test_cosine_codes_stay_on_the_unit_sphere():
    q = VectorQuantizerEMA(16, 8, code_dim=4, cosine=True)
    for _ in range(5):
        q(torch.randn(2, 8, 4, 4))
    assert torch.allclose(q.codebook_vectors().norm(dim=1), torch.ones(16), atol=1e-5)
    assert q.project_in.weight.shape == (4, 8, 1, 1)  # looked up in 4 dimensions


def test_gradient_codebook_learns_through_its_loss_and_ema_codebook_does_not():
    vq = VectorQuantizer(8, 4, codebook_init="data")
    out = vq(torch.randn(2, 4, 3, 3))
    out.loss.backward()
    assert vq.embedding.grad is not None and vq.embedding.grad.abs().sum() > 0
    ema = VectorQuantizerEMA(8, 4)
    assert "embedding" not in dict(ema.named_parameters())


# --------------------------------------------------------------------- tile architecture


def test_tile_codes_depend_on_their_own_tile_only():
    model = VQVAE(ModelConfig(architecture="tile", image_size=(32, 40), hidden_channels=16, embedding_dim=8,
                                codebook_size=32)).eval()
    x = torch.rand(1, 3, 32, 40)
    changed = x.clone()
    changed[:, :, 8:16, 16:24] = torch.rand(1, 3, 8, 8)  # tile (1, 2)
    with torch.no_grad():
        diff = (model.encoder(x) - model.encoder(changed)).abs().amax(dim=1)[0]
    assert diff[1, 2] > 0
    diff[1, 2] = 0
    assert diff.max() == 0  # so an unchanged tile keeps its code whatever its neighbours do


def test_tile_model_is_much_cheaper_than_conv():
    tile = VQVAE(ModelConfig(architecture="tile", codebook_size=512))
    conv = VQVAE(ModelConfig(architecture="conv", codebook_size=512))
    x = torch.rand(1, 3, 144, 160)

    def flops(model):
        from torch.utils.flop_counter import FlopCounterMode

        with torch.no_grad():
            model(x)  # the codebook's one-off k-means start is not a frame's cost (and crawls under the counter)
        with FlopCounterMode(display=False) as counter:
            model(x)
        return counter.get_total_flops()

    assert flops(conv) > 10 * flops(tile)


# --------------------------------------------------------------------- old checkpoints


def _legacy_checkpoint_state() -> tuple[dict, dict]:
    """A conv model's state and a model_config as checkpoints wrote them before architecture existed."""
    old = ModelConfig(image_size=(32, 40), hidden_channels=8, embedding_dim=4, codebook_size=16, **LEGACY_MODEL_FIELDS)
    model = VQVAE(old)
    model(torch.rand(2, 3, 32, 40))
    saved = {k: v for k, v in old.to_dict().items() if k not in LEGACY_MODEL_FIELDS}
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True), saved


def test_checkpoints_from_before_architectures_load_as_conv():
    state, saved = _legacy_checkpoint_state()
    config = ModelConfig.from_dict(saved)
    assert config.architecture == "conv" and config.codebook_init == "data"
    VQVAE(config).load_state_dict(state)  # every key and shape matches


def test_an_old_checkpoint_against_the_new_default_names_the_architecture():
    _, saved = _legacy_checkpoint_state()
    configured = ModelConfig(image_size=(32, 40), hidden_channels=8, embedding_dim=4, codebook_size=16)
    with pytest.raises(CheckpointError, match="architecture='conv' \\(configured 'patch'\\)"):
        check_model_shape({"model_config": saved}, configured.to_dict(), "old.pt")


def test_checkpoints_from_before_encoder_context_load_with_one_tile_of_context():
    old = ModelConfig(image_size=(32, 40), hidden_channels=8, embedding_dim=4, codebook_size=16, architecture="tile")
    model = VQVAE(old)
    saved = {k: v for k, v in old.to_dict().items() if k != "encoder_kernel"}
    config = ModelConfig.from_dict(saved)
    assert config.encoder_kernel == 1
    VQVAE(config).load_state_dict(model.state_dict())
    check_model_shape({"model_config": saved}, config.to_dict(), "old.pt")  # the same model: no complaint
    wider = ModelConfig(image_size=(32, 40), hidden_channels=8, embedding_dim=4, codebook_size=16, encoder_kernel=3,
                        architecture="tile")
    with pytest.raises(CheckpointError, match="encoder_kernel=1 \\(configured 3\\)"):
        check_model_shape({"model_config": saved}, wider.to_dict(), "old.pt")


def test_encoder_context_lets_a_code_see_its_neighbours():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 40)
    changed = x.clone()
    changed[:, :, :8, :8] = 1 - changed[:, :, :8, :8]  # only the top-left tile
    for kernel, neighbour_moves in ((1, False), (3, True)):
        model = VQVAE(ModelConfig(image_size=(32, 40), hidden_channels=8, embedding_dim=4, codebook_size=16,
                                  encoder_kernel=kernel, architecture="tile")).eval()
        with torch.no_grad():
            moved = (model.encoder(x) - model.encoder(changed)).abs().sum(1)[0]  # (h, w)
        assert bool(moved[0, 1] > 0) is neighbour_moves and float(moved[3:, 3:].sum()) == 0  # 2 blocks: 2 tiles
