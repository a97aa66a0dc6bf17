"""Evaluation metrics: feature extractors, sample quality, reconstruction and linear probes.

    features.py        pluggable feature extractors (FID Inception, agelab's own classifier)
    sample_quality.py  FID, KID, Inception Score, precision/recall (k-NN manifolds), real-data floors
    reconstruction.py  L1/MSE/PSNR/SSIM of g(e(x)), latent cycle error, reconstruction domain accuracy
    probe.py           linear probes on encoder features (all labels, 1,000 labels; code or hidden layers)
    colorization.py    diverse colorization (conditional AGE vs pix2pix): diversity, z-sensitivity, colourfulness,
                       best-of-K / mean-of-K fidelity (evaluate_colorization)
    ais.py             AIS log-likelihood of the decoder (Wu et al. 2017) with a BDMC gap (eval --ais)

:func:`agelab.evaluate.evaluate_run` puts them together for a run folder; see docs/evaluation.md.
"""

from __future__ import annotations


class MetricsError(RuntimeError):
    """A metric cannot be computed as asked (missing weights, a classifier for another dataset, ...).

    The message is one line that says what is missing and what to do.
    """


__all__ = ["MetricsError"]
