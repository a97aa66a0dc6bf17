"""agelab: Adversarial Generator-Encoder networks (Ulyanov, Vedaldi, Lempitsky 2017).

    >>> import agelab
    >>> model = agelab.load("runs/00000-digits-age")   # a run folder or a checkpoint folder
    >>> x = model.sample(16)                           # (16, C, S, S) in [-1, 1]
    >>> z = model.encode(x)                            # (16, M) on the unit sphere
    >>> x_rec = model.reconstruct(x)                   # g(e(x))
"""

from __future__ import annotations

__version__ = "0.1.0"

from os import PathLike


def load(path: str | PathLike, device: str = "cpu"):
    """Load a trained model from a run folder (its newest good checkpoint) or a checkpoint folder.

    Returns the model in eval mode with ``.sample(n)``, ``.encode(x)``,
    ``.decode(z)`` and ``.reconstruct(x)``; images are float (B, C, S, S) in [-1, 1].
    A colorization run (model.json ``"model": "cage"`` or ``"pix2pix"``) gives its own
    class, whose ``encode(ab, L)`` / ``decode(z, L)`` take the lightness L; see
    :mod:`agelab.colorize` for colorizing and colour transfer.
    """
    import torch

    from agelab.checkpoint import CheckpointError, load_model_files, resolve_checkpoint
    from agelab.config import ConfigError
    from agelab.errors import first_line
    from agelab.models import MODEL_TYPES, make_model
    from agelab.models.base import ModelConfig

    ckpt = resolve_checkpoint(path)
    model_cfg, weights = load_model_files(ckpt)
    if model_cfg.get("model", "age") not in MODEL_TYPES:
        raise CheckpointError(f"{ckpt}: unsupported model type {model_cfg.get('model')!r}")
    try:
        model = make_model(ModelConfig.from_dict(model_cfg))  # the class model.json names (MODEL_TYPES)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{ckpt}: model.json does not describe a valid model ({first_line(exc)})") from None
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"{ckpt}: weights do not match model.json ({first_line(exc)})") from None
    model.checkpoint_path = ckpt
    try:
        dev = torch.device(device)
        if dev.type not in ("cpu", "cuda", "mps"):
            raise RuntimeError("only cpu, cuda and mps devices can run a model")
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("CUDA is not available")
    except RuntimeError as exc:
        raise ConfigError(f"--device: cannot use device {device!r} ({first_line(exc)})") from None
    return model.to(dev).eval().requires_grad_(False)


__all__ = ["load", "__version__"]
