"""Embedding networks that compress 3D tumour label maps into summary features.

The nets take a batch of label maps with voxel values 0 (healthy), 1 (oedema,
T2/FLAIR) and 2 (enhancing core, T1Gd) in any of the shapes ``(B, C, nx, ny, nz)``,
``(B, nx, ny, nz)`` (only if ``C == 1``) or flattened ``(B, C * nx * ny * nz)``,
and return ``(B, output_dim)``. Pass them to
``sbi.neural_nets.posterior_nn(model="mdn", embedding_net=net, z_score_x="none")``.

``z_score_x="none"`` matters: ``sbi`` z-scores x *before* the embedding net. That
destroys the integer labels ``LabelMapCNN3d`` one-hot encodes (non-integer values
are silently rounded and clamped to the nearest label), and voxels that are
constant in the training set get ``std = 1e-7``, so any change there at inference
time becomes a value of order 1e7.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .config import EMBEDDING_NAMES

__all__ = ["EMBEDDINGS", "LabelMapCNN3d", "PaperMLPEmbedding", "RadialProfileEmbedding", "make_embedding"]


def _as_volume(x: Tensor, in_channels: int, input_shape: tuple[int, ...]) -> Tensor:
    """Reshape x from (B, C, nx, ny, nz), (B, nx, ny, nz) or flat (B, C*nx*ny*nz)."""
    full = (in_channels, *input_shape)
    if x.dim() == 2 and x.shape[1] == math.prod(full):
        return x.reshape(x.shape[0], *full)
    if x.dim() == 4 and in_channels == 1 and tuple(x.shape[1:]) == full[1:]:
        return x.unsqueeze(1)
    if x.dim() == 5 and tuple(x.shape[1:]) == full:
        return x
    raise ValueError(
        f"Expected x of shape (B, {in_channels}, {', '.join(map(str, input_shape))}), "
        f"its flattened form or (for one channel) without the channel axis; "
        f"got {tuple(x.shape)}."
    )


def _grid(input_shape: Sequence[int]) -> tuple[int, int, int]:
    """``input_shape`` as a tuple of three positive ints, or a clear error."""
    grid = tuple(int(n) for n in input_shape)
    if len(grid) != 3 or min(grid) < 1:
        raise ValueError(f"input_shape must be (nx, ny, nz), got {grid}.")
    return grid


def _one_hot(x: Tensor, num_classes: int) -> Tensor:
    """Labels (B, C, *grid) -> indicators (B, C, num_classes, *grid) in x's dtype.

    Rounds and clamps rather than validates: sbi 0.27's MixtureDensityEstimator probes
    the embedding with ``torch.randn`` input at construction.
    """
    labels = x.round().clamp(0, num_classes - 1)
    classes = torch.arange(num_classes, device=x.device, dtype=x.dtype)
    return (labels.unsqueeze(2) == classes.view(1, 1, -1, *([1] * (x.dim() - 2)))).to(x.dtype)


def _mlp(num_inputs: int, num_layers: int, units: int, output_dim: int) -> nn.Sequential:
    """``num_layers`` hidden ReLU layers of ``units``, then a linear map to ``output_dim``."""
    layers: list[nn.Module] = []
    for _ in range(num_layers):
        layers += [nn.Linear(num_inputs, units), nn.ReLU()]
        num_inputs = units
    layers.append(nn.Linear(num_inputs, output_dim))
    return nn.Sequential(*layers)


class LabelMapCNN3d(nn.Module):
    """3D CNN embedding for tumour label maps.

    Blocks of Conv3d ("same" padding) + ReLU + MaxPool3d, global average pooling
    (so the head is independent of the grid size and features read as
    label-weighted volume fractions), then an MLP.

    Args:
        input_shape: Spatial grid ``(nx, ny, nz)``.
        in_channels: Number of label-map channels C (e.g. several time points).
        one_hot: If True, each channel's labels become ``num_classes`` indicator
            channels, so the net does not assume that oedema lies "between" healthy
            tissue and core. Otherwise the labels are used as ordinal values scaled
            to [0, 1].
        num_classes: Number of labels, values ``0 .. num_classes - 1``.
        out_channels_per_layer: Output channels of each conv block.
        kernel_size: Odd conv kernel size.
        pool_kernel_size: Max-pool size; a dim smaller than it is not pooled.
        num_linear_layers: Number of hidden fully connected layers (ReLU) between
            the pooled features and the output layer; 0 gives one linear map. Unlike
            ``sbi``'s ``CNNEmbedding`` the output layer is not counted.
        num_linear_units: Width of the hidden fully connected layers.
        output_dim: Number of summary features.
        input_pool: Average-pool the encoded input by this factor first (labels become
            label fractions of coarser voxels): ``input_pool=2`` makes every conv 8x
            cheaper, which decides whether training fits a 2-core CPU budget.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        in_channels: int = 1,
        one_hot: bool = True,
        num_classes: int = 3,
        out_channels_per_layer: Sequence[int] = (8, 16, 32),
        kernel_size: int = 3,
        pool_kernel_size: int = 2,
        num_linear_layers: int = 1,
        num_linear_units: int = 64,
        output_dim: int = 20,
        input_pool: int = 2,
    ):
        super().__init__()
        input_shape = _grid(input_shape)
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd to keep the grid, got {kernel_size}.")
        if num_classes < 2 or len(out_channels_per_layer) == 0:
            raise ValueError("Need num_classes >= 2 and at least one conv layer.")

        self.input_shape = input_shape
        self.in_channels = in_channels
        self.one_hot = one_hot
        self.num_classes = num_classes
        self.output_dim = output_dim

        layers: list[nn.Module] = []
        channels = in_channels * num_classes if one_hot else in_channels
        grid = input_shape
        pool = tuple(input_pool if n >= input_pool else 1 for n in grid)
        self.input_pool: nn.Module = nn.Identity()
        if max(pool) > 1:
            self.input_pool = nn.AvgPool3d(pool, ceil_mode=True)
            grid = tuple(-(-n // p) for n, p in zip(grid, pool))
        for out_channels in out_channels_per_layer:
            layers += [
                nn.Conv3d(channels, out_channels, kernel_size, padding=kernel_size // 2),
                nn.ReLU(),
            ]
            # Pool each axis separately so thin grids (e.g. a few slices) still work.
            pool = tuple(pool_kernel_size if n >= pool_kernel_size else 1 for n in grid)
            if max(pool) > 1:
                layers.append(nn.MaxPool3d(pool))
                grid = tuple(n // p for n, p in zip(grid, pool))
            channels = out_channels
        self.features = nn.Sequential(*layers)

        self.head = _mlp(channels, num_linear_layers, num_linear_units, output_dim)

    def _encode(self, x: Tensor) -> Tensor:
        """Map labels (B, C, nx, ny, nz) to the conv input (B, C * K or C, nx, ny, nz)."""
        if not self.one_hot:
            return x / (self.num_classes - 1)
        return _one_hot(x, self.num_classes).flatten(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        """Embed label maps, (B, C, nx, ny, nz) or see module docstring -> (B, output_dim)."""
        x = _as_volume(x, self.in_channels, self.input_shape)
        h = self.features(self.input_pool(self._encode(x)))
        return self.head(h.mean(dim=(2, 3, 4)))


class PaperMLPEmbedding(nn.Module):
    """Single tanh hidden layer on the flattened label map, as in the paper.

    The paper's network is flattened input -> 100 tanh units -> mixture density
    head. ``sbi``'s MDN brings its own head, so by default (``output_dim=None``)
    this module *is* the hidden layer and returns its ``hidden`` tanh activations.
    Setting ``output_dim`` appends a linear projection to that many features.

    Weights use He-normal (``kaiming_normal_``) initialisation, biases zero.

    Args:
        input_shape: Spatial grid ``(nx, ny, nz)`` (any shape; only its size is used).
        in_channels: Number of label-map channels C.
        hidden: Number of tanh units.
        output_dim: Optional size of a linear projection after the tanh layer.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        in_channels: int = 1,
        hidden: int = 100,
        output_dim: int | None = None,
    ):
        super().__init__()
        self.input_shape = tuple(int(n) for n in input_shape)
        self.in_channels = in_channels
        self.num_inputs = in_channels * math.prod(self.input_shape)
        self.output_dim = hidden if output_dim is None else output_dim

        layers: list[nn.Module] = [nn.Linear(self.num_inputs, hidden), nn.Tanh()]
        if output_dim is not None:
            layers.append(nn.Linear(hidden, output_dim))
        self.net = nn.Sequential(*layers)
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                nn.init.kaiming_normal_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Embed label maps, (B, C, nx, ny, nz) or see module docstring -> (B, output_dim)."""
        x = _as_volume(x, self.in_channels, self.input_shape)
        return self.net(x.flatten(1))


class RadialProfileEmbedding(nn.Module):
    """Radial label profiles around the tumour's origin, then an MLP.

    A fixed map turns each label map into a few hundred numbers that an MLP learns
    from with a few hundred simulations: for every label class ``c >= 1`` and every
    spherical shell of width ``shell_width`` voxels around ``centre``, the fraction of
    the shell's voxels labelled ``c``; and per class the log volume, the centroid
    offset and the root-mean-square extent along each axis (in half-grid units).

    Why these features: a Fisher-Kolmogorov tumour grown from a seed is close to
    radially symmetric, so each threshold of the density shows as a radius in the
    profile (front speed and thresholds), and in noisy segmentations the width of the
    transition shows the density's slope (infiltration length); the axis moments keep
    the anisotropy that grey/white matter adds. The flattened map of
    ``PaperMLPEmbedding`` must learn all of this from scratch.

    Args:
        input_shape: Spatial grid ``(nx, ny, nz)``.
        in_channels: Number of label-map channels C (e.g. several time points).
        num_classes: Number of labels, values ``0 .. num_classes - 1``; class 0
            (healthy) gets no features of its own.
        centre: Voxel coordinates of the profile origin; default the grid centre, which
            is the seed for [`TumorSimulator`][sbi_tumor.simulator.TumorSimulator]'s region.
        shell_width: Shell width in voxels.
        octants: Profile each octant around ``centre`` separately (8x the profile
            features): how far the tumour reaches towards white or grey matter. On by
            default: it measured better than one profile in ``benchmarks/defaults.py``.
        num_linear_layers: Hidden ReLU layers of the MLP.
        num_linear_units: Their width.
        output_dim: Number of summary features.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        in_channels: int = 1,
        num_classes: int = 3,
        centre: Sequence[float] | None = None,
        shell_width: float = 1.0,
        octants: bool = True,
        num_linear_layers: int = 2,
        num_linear_units: int = 64,
        output_dim: int = 20,
    ):
        super().__init__()
        input_shape = _grid(input_shape)
        if num_classes < 2 or shell_width <= 0:
            raise ValueError(f"Need num_classes >= 2 and shell_width > 0, got {num_classes}, {shell_width}.")
        self.input_shape = input_shape
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.output_dim = output_dim

        half = torch.tensor([(n - 1) / 2 for n in input_shape], dtype=torch.float64)
        origin = half if centre is None else torch.as_tensor(centre, dtype=torch.float64)
        axes = [torch.arange(n, dtype=torch.float64) for n in input_shape]
        offsets = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3) - origin
        shell = (offsets.norm(dim=1) / shell_width).floor().long()
        self.num_shells = int(shell.max()) + 1
        bins, self.num_bins = shell, self.num_shells
        if octants:  # profile bin = octant * num_shells + shell
            octant = ((offsets >= 0).long() * torch.tensor([4, 2, 1])).sum(dim=1)
            bins, self.num_bins = octant * self.num_shells + shell, 8 * self.num_shells
        counts = torch.bincount(bins, minlength=self.num_bins).clamp(min=1)
        self.register_buffer("bin", bins, persistent=False)
        self.register_buffer("inverse_bin_size", 1.0 / counts.float(), persistent=False)
        coords = (offsets / half.clamp(min=1)).float()
        # One product with [1, coords, coords^2] gives each mask's volume and first two moments.
        self.register_buffer("moment_basis", torch.cat([torch.ones(len(coords), 1), coords, coords.square()], 1),
                             persistent=False)
        self.log_num_voxels = math.log1p(math.prod(input_shape))

        num_maps = in_channels * (num_classes - 1)
        self.num_features = num_maps * (self.num_bins + 7)
        self.register_buffer("feature_mean", torch.zeros(self.num_features))
        self.register_buffer("feature_std", torch.ones(self.num_features))
        self.head = _mlp(self.num_features, num_linear_layers, num_linear_units, output_dim)
        #: When True, ``forward`` and ``standardize`` take the fixed features ``(B, num_features)``
        #: instead of label maps. ``run_sequential_npe`` trains this way, on features computed
        #: once per simulation rather than once per epoch, and then switches back.
        self.takes_features = False

    @torch.no_grad()
    def standardize(self, x: Tensor, min_std: float = 1e-3, batch_size: int = 256) -> None:
        """Z-score the features over the training label maps ``x`` (or features, with
        ``takes_features``) from now on.

        Within a narrow proposal a tumour's radius moves by a voxel or less, which shifts a
        feature by a few thousandths on its natural [0, 1] scale: too small a signal for the
        MLP to learn from in a few hundred simulations. Features (nearly) constant over ``x``,
        like empty outer shells, keep a spread of ``min_std``. sbi's own z-scoring of x cannot
        do this: it acts on the voxels, many of which are constant.
        """
        features = torch.cat([self._summary(chunk) for chunk in torch.split(x, batch_size)])
        self.feature_mean.copy_(features.mean(0))
        self.feature_std.copy_(features.std(0).nan_to_num(0.0).clamp(min=min_std))

    def features(self, x: Tensor) -> Tensor:
        """The fixed summary of label maps (see module docstring for shapes) -> (B, num_features)."""
        x = _as_volume(x, self.in_channels, self.input_shape)
        # Rounded and clamped as _one_hot does (sbi probes nets with randn), without its class 0;
        # integer label maps (uint8 from the simulator) are taken as they are.
        labels = (x.round() if x.is_floating_point() else x).clamp(0, self.num_classes - 1).flatten(2)  # (B, C, N)
        masks = torch.stack([labels == c for c in range(1, self.num_classes)], dim=2)
        masks = masks.flatten(1, 2).to(torch.float32)                                    # (B, M, N)
        profile = torch.zeros(*masks.shape[:2], self.num_bins, device=x.device)
        profile = profile.index_add(2, self.bin, masks) * self.inverse_bin_size
        moments = masks @ self.moment_basis                                              # (B, M, 7)
        volume = moments[..., :1]
        centroid = moments[..., 1:4] / volume.clamp(min=1)
        extent = (moments[..., 4:] / volume.clamp(min=1)).clamp(min=0).sqrt()
        log_volume = torch.log1p(volume) / self.log_num_voxels
        return torch.cat([profile, log_volume, centroid, extent], dim=2).flatten(1)

    def _summary(self, x: Tensor) -> Tensor:
        return x if self.takes_features else self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        """Embed label maps, (B, C, nx, ny, nz) or see module docstring -> (B, output_dim);
        with ``takes_features``, features (B, num_features) -> (B, output_dim)."""
        return self.head((self._summary(x) - self.feature_mean) / self.feature_std)


def make_embedding(kind: str, input_shape: Sequence[int], **kwargs) -> nn.Module:
    """Build an embedding net for label maps on grid ``input_shape = (nx, ny, nz)``.

    Args:
        kind: ``"cnn"`` for ``LabelMapCNN3d``, ``"mlp"`` for ``PaperMLPEmbedding`` or
            ``"radial"`` for ``RadialProfileEmbedding``.
        input_shape: Spatial grid of the label maps.
        **kwargs: Passed to the chosen class.
    """
    if kind not in EMBEDDINGS:
        raise ValueError(f"Unknown embedding kind {kind!r}; valid kinds: {sorted(EMBEDDINGS)}.")
    return EMBEDDINGS[kind](tuple(input_shape), **kwargs)


#: The embedding nets by the name ``make_embedding``, the CLI and the benchmarks use.
EMBEDDINGS: dict[str, type[nn.Module]] = dict(zip(EMBEDDING_NAMES, (LabelMapCNN3d, PaperMLPEmbedding,
                                                                    RadialProfileEmbedding)))
