import pytest
import torch
from sbi.inference import NPE_C
from sbi.neural_nets import posterior_nn

from sbi_tumor.embedding import LabelMapCNN3d, PaperMLPEmbedding, RadialProfileEmbedding, make_embedding
from sbi_tumor.prior import make_prior

SHAPE = (8, 8, 8)


def random_labels(n: int, shape=SHAPE) -> torch.Tensor:
    return torch.randint(0, 3, (n, *shape)).float()


@pytest.mark.parametrize("kind", ["cnn", "mlp", "radial"])
def test_output_shape_for_5d_4d_and_flat_input(kind):
    torch.manual_seed(0)
    net = make_embedding(kind, SHAPE)
    x = random_labels(4)
    out = net(x)
    assert out.shape == (4, 100 if kind == "mlp" else 20)
    torch.testing.assert_close(net(x.unsqueeze(1)), out)
    torch.testing.assert_close(net(x.flatten(1)), out)
    with pytest.raises(ValueError, match="Expected x of shape"):
        net(x[:, :7])


def test_cnn_one_hot_encoding_and_ordinal_scaling():
    net = LabelMapCNN3d(SHAPE)
    x = torch.tensor([0.0, 1.0, 2.0, 2.0]).repeat(128).reshape(1, 1, *SHAPE)
    encoded = net._encode(x)
    assert encoded.shape == (1, 3, *SHAPE)
    assert torch.all(encoded.sum(1) == 1)
    assert encoded[0, :, 0, 0, :4].T.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]]

    ordinal = LabelMapCNN3d(SHAPE, one_hot=False)
    assert ordinal.features[0].in_channels == 1
    assert ordinal._encode(x)[0, 0, 0, 0, :4].tolist() == [0.0, 0.5, 1.0, 1.0]


def test_cnn_rounds_and_clamps_non_label_input():
    # sbi 0.27 probes the embedding with torch.randn input, so it must not fail.
    net = LabelMapCNN3d(SHAPE)
    x = torch.tensor([-0.7, 0.4, 1.6, 5.0]).repeat(128).reshape(1, 1, *SHAPE)
    assert net._encode(x)[0, :, 0, 0, :4].argmax(0).tolist() == [0, 0, 2, 2]
    assert net(torch.randn(1, 512)).shape == (1, 20)


def test_cnn_pooling_skips_thin_axes_and_kernel_checks():
    torch.manual_seed(0)
    net = LabelMapCNN3d((9, 4, 1), out_channels_per_layer=(4, 4, 4), input_pool=1)
    pools = [m.kernel_size for m in net.features if isinstance(m, torch.nn.MaxPool3d)]
    # 9x4x1 -> 4x2x1 -> 2x1x1 -> 1x1x1; z is never pooled, y stops after two pools.
    assert pools == [(2, 2, 1), (2, 2, 1), (2, 1, 1)]
    assert net(random_labels(3, (9, 4, 1))).shape == (3, 20)
    assert LabelMapCNN3d((1, 1, 1)).forward(torch.zeros(2, 1)).shape == (2, 20)
    with pytest.raises(ValueError, match="odd"):
        LabelMapCNN3d(SHAPE, kernel_size=4)


def test_cnn_head_layers():
    net = LabelMapCNN3d(SHAPE, num_linear_layers=2, num_linear_units=16, output_dim=5)
    widths = [m.out_features for m in net.head if isinstance(m, torch.nn.Linear)]
    assert widths == [16, 16, 5]
    assert len(LabelMapCNN3d(SHAPE, num_linear_layers=0).head) == 1


def test_paper_mlp_structure_and_init():
    torch.manual_seed(0)
    net = PaperMLPEmbedding((20, 20, 20))
    linear = net.net[0]
    assert linear.in_features == 8000 and linear.out_features == 100
    assert isinstance(net.net[1], torch.nn.Tanh) and len(net.net) == 2
    # He-normal: std = sqrt(2 / fan_in); zero bias.
    assert linear.weight.std().item() == pytest.approx((2 / 8000) ** 0.5, rel=0.01)
    assert torch.all(linear.bias == 0)
    out = net(random_labels(3, (20, 20, 20)))
    assert out.shape == (3, 100) and out.abs().max() <= 1
    assert PaperMLPEmbedding(SHAPE, output_dim=7)(random_labels(2)).shape == (2, 7)


def test_radial_profile_of_nested_balls():
    # Core (2) within radius 2.5 voxels, oedema (1) out to 4.5, around the centre of a 11^3 grid.
    shape = (11, 11, 11)
    offsets = torch.stack(torch.meshgrid(*[torch.arange(11.0) - 5] * 3, indexing="ij"))
    r = offsets.norm(dim=0)
    x = torch.where(r < 2.5, 2.0, torch.where(r < 4.5, 1.0, 0.0))[None, None]
    net = RadialProfileEmbedding(shape, octants=False)
    assert net.num_shells == 9  # corner at sqrt(75) = 8.66 voxels
    features = net.features(x).reshape(2, net.num_shells + 7)
    oedema, core = features[:, :net.num_shells]
    # Shell k holds radii [k, k+1): cores fill shells 0-1, oedema shells 3 and 4 (4 only up to 4.5).
    assert core[:2].tolist() == [1.0, 1.0] and core[3:].abs().sum() == 0 and 0 < core[2] < 1
    assert oedema[:2].abs().sum() == 0 and oedema[3] == 1 and 0 < oedema[4] < 1 and oedema[5:].abs().sum() == 0
    volumes = [(x == 1).sum(), (x == 2).sum()]
    log_volume = features[:, net.num_shells]
    torch.testing.assert_close(log_volume, torch.log1p(torch.tensor(volumes).float()) / torch.log1p(torch.tensor(1331.0)))
    centroid, extent = features[:, -6:-3], features[:, -3:]
    assert centroid.abs().max() < 1e-6  # symmetric about the centre
    torch.testing.assert_close(extent[:, 0], extent[:, 2])  # and isotropic


def test_radial_moments_of_one_voxel_and_custom_centre():
    x = torch.zeros(1, 1, 9, 5, 5)
    x[0, 0, 8, 2, 2] = 1  # the +x edge of the grid, on the centre line
    net = RadialProfileEmbedding((9, 5, 5), num_classes=2, octants=False)
    features = net.features(x)[0]
    centroid, extent = features[-6:-3], features[-3:]
    assert centroid.tolist() == [1.0, 0.0, 0.0] and extent.tolist() == [1.0, 0.0, 0.0]
    profile = features[:net.num_shells]
    grid = torch.meshgrid(torch.arange(9.0) - 4, torch.arange(5.0) - 2, torch.arange(5.0) - 2, indexing="ij")
    shell_4 = ((torch.stack(grid).norm(dim=0) // 1) == 4).sum()  # radii in [4, 5) voxels
    assert profile.nonzero().flatten().tolist() == [4] and profile[4] == 1 / shell_4
    octants = RadialProfileEmbedding((9, 5, 5), num_classes=2, octants=True).features(x)[0]
    # The voxel lies in octant (+x, +y, +z) = 7 (offsets >= 0 count as positive).
    assert octants[:-7].nonzero().flatten().tolist() == [7 * net.num_shells + 4]
    moved = RadialProfileEmbedding((9, 5, 5), num_classes=2, centre=(8, 2, 2), shell_width=2.0, octants=False)
    # Within 2 voxels of the x = 8 face centre: 9 voxels in that face plane and 9 in the next.
    assert moved.num_shells == 5 and moved.features(x)[0, 0] == 1 / 18
    with pytest.raises(ValueError, match="shell_width > 0"):
        RadialProfileEmbedding((9, 5, 5), shell_width=0)


def balls(radii, shape=(11, 11, 11)):
    """Label maps (B, 1, *shape) of one ball of label 1 per radius (voxels) around the centre."""
    offsets = torch.stack(torch.meshgrid(*[torch.arange(n) - (n - 1) / 2 for n in shape], indexing="ij"))
    r = offsets.norm(dim=0)
    return torch.stack([(r < radius).float() for radius in radii])[:, None]


def test_radial_standardize_z_scores_the_features_of_the_training_maps():
    net = RadialProfileEmbedding((11, 11, 11), num_classes=2)
    x = balls(torch.linspace(2.0, 3.0, 12))  # radii within one voxel: features move by < 0.1
    raw = net.features(x)
    net.standardize(x, batch_size=5)
    torch.testing.assert_close(net.feature_mean, raw.mean(0))
    moving = raw.std(0) > 1e-3
    assert moving.sum() >= 3  # shell 2, the volume, the extent
    z = (raw - net.feature_mean) / net.feature_std
    torch.testing.assert_close(z[:, moving].std(0), torch.ones(int(moving.sum())))
    assert z[:, ~moving].abs().max() < 1e-4  # constant features (empty shells) stay at 0
    assert (net.feature_std[~moving] == 1e-3).all()
    torch.testing.assert_close(net(x), net.head(z))  # the MLP sees the z-scores
    restored = RadialProfileEmbedding((11, 11, 11), num_classes=2)
    restored.load_state_dict(net.state_dict())  # the statistics travel with saved weights
    torch.testing.assert_close(restored(x), net(x))


@pytest.mark.parametrize("kind", ["cnn", "mlp", "radial"])
def test_gradients_flow_to_first_layer(kind):
    torch.manual_seed(0)
    net = make_embedding(kind, SHAPE)
    net(random_labels(4)).square().sum().backward()
    first = next(net.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_make_embedding_unknown_kind():
    with pytest.raises(ValueError, match=r"Unknown embedding kind 'rnn'.*\['cnn', 'mlp', 'radial'\]"):
        make_embedding("rnn", SHAPE)


@pytest.mark.filterwarnings("ignore:Maximum number of epochs")
@pytest.mark.parametrize("kind", ["cnn", "mlp", "radial"])
def test_npe_c_trains_with_embedding(kind, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # NPE writes TensorBoard logs to ./sbi-logs
    torch.manual_seed(0)
    prior = make_prior("paper")
    theta = prior.sample((50,))
    x = random_labels(50).flatten(1)
    net = make_embedding(kind, SHAPE)
    estimator = posterior_nn(model="mdn", embedding_net=net, z_score_x="none")
    inference = NPE_C(prior=prior, density_estimator=estimator, show_progress_bars=False)
    inference.append_simulations(theta, x).train(max_num_epochs=2, training_batch_size=25)
    posterior = inference.build_posterior()
    samples = posterior.sample((10,), x=x[0], show_progress_bars=False)
    assert samples.shape == (10, 4)
    assert torch.all(prior.support.check(samples))


def test_radial_features_of_integer_and_float_label_maps_agree():
    """The simulator's uint8 maps are featurised without a float copy; x_o comes as float32."""
    torch.manual_seed(0)
    x = torch.randint(0, 3, (4, 1, 9, 8, 7), dtype=torch.uint8)
    net = RadialProfileEmbedding((9, 8, 7))
    assert torch.equal(net.features(x), net.features(x.float()))
    assert torch.equal(net.features(x), net.features(x.float() + 0.2))  # rounded, as _one_hot does
