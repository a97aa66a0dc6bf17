"""Typed training configuration and presets.

One frozen dataclass, :class:`TrainConfig`, describes a whole training run. The
CLI builds its options from the fields below (their ``help`` metadata is the
``--help`` text), a preset supplies defaults, and command-line values override
the preset. The resolved config is saved as ``config.json`` in the run folder.

Paper values cite their section of Ulyanov et al. 2017 ("It Takes (Only) Two").
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from agelab.models import MODEL_TYPES
from agelab.nets.dcgan import NET_STYLES


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the option."""


def _opt(default: Any, help: str, choices: tuple | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices})


DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "svhn", "celeba", "tinyimagenet", "cars", "folder")
PRIORS = ("sphere", "gaussian")
DIVERGENCES = ("gaussian", "gaussian_reference", "knn")
GAME_SCALES = ("mean", "sum")
AMP_MODES = ("off", "bf16")
MODELS = tuple(MODEL_TYPES)  # the registered model types: age, cage, pix2pix, dcgan, vae, ali
GRAY_DATASETS = ("digits", "mnist", "fashion-mnist")  # one channel: nothing to colorize


@dataclass(frozen=True)
class TrainConfig:
    # --- data ---
    dataset: str = _opt("digits", "dataset to train on: 'digits' (scikit-learn's bundled 8x8 digits, "
                        "upsampled; no download), 'mnist' (IDX files under --data-root) or one of "
                        "fashion-mnist, cifar10, svhn, celeba, tinyimagenet, cars (see docs/data.md), or 'folder': "
                        "any folder of images given by --data-root (every 10th image held out as test)", DATASETS)
    data_root: str | None = _opt(None, "folder holding the dataset files (for mnist: a folder with "
                                 "train-images-idx3-ubyte.gz etc., or its parent with an mnist/ subfolder)")
    no_download: bool = _opt(False, "never download missing dataset files (offline use); fail with a message "
                              "naming the files to place instead")
    strict: bool = _opt(False, "with --dataset folder: stop at the first unreadable image file instead of "
                         "skipping such files with a counted warning")
    no_cache: bool = _opt(False, "decode the dataset every time instead of reading (and writing) the decoded, "
                           "resized images in the memory-mapped cache <data root>/agelab-cache/")
    image_size: int = _opt(32, "side of the square training images in pixels (32 or 64); smaller "
                           "datasets are padded (mnist) or upsampled (digits) to it")
    # --- model (paper 3.1) ---
    latent_dim: int = _opt(16, "latent size M (paper: 64 for CelebA/SVHN, 128 for CIFAR-10, 10 for MNIST LL)")
    prior: str = _opt("sphere", "latent prior: 'sphere' (uniform on the unit sphere, paper 2) or 'gaussian' "
                      "(unit Gaussian in R^M, encoder output not normalised)", PRIORS)
    width: int = _opt(32, "base channel width of the DCGAN-type encoder and generator (paper: 64)")
    nets: str = _opt("dcgan", "ends of the DCGAN-type nets: 'dcgan' (Radford et al.: g's last layer a stride-2 "
                     "transposed convolution to the image, e's head one 4x4 convolution over the 4x4 map) or "
                     "'authors' (the authors' released 32x32 nets: g's last stage at full resolution with w "
                     "channels, then a 1x1 convolution; e's head a stride-2 convolution and 2x2 average pooling); "
                     "every model type but cage and pix2pix uses them", NET_STYLES)
    # --- the AGE game (paper eq. 5-7) ---
    divergence: str = _opt("gaussian_reference", "latent divergence D: 'gaussian_reference' (the authors' released "
                           "code: the diagonal Gaussian fitted to the batch, with the variance where eq. 7 has the std; "
                           "the default: it trains the paper's game, docs/results.md), 'gaussian' (paper eq. 7 as "
                           "printed) or 'knn' (Kozachenko-Leonenko nearest-neighbour estimate)", DIVERGENCES)
    game_scale: str = _opt("mean", "how D and the latent term reduce over the M latent coordinates: 'mean' (the "
                           "authors' code: eq. 7 and the k-NN estimate divided by M, the latent term lam * (1 - cos) / M, "
                           "so that --mu 10 --lam 1000 mean what the paper's commands mean) or 'sum' (eq. 7 summed, "
                           "the latent term lam * (1 - cos): agelab before this option, where lam = the authors' "
                           "lambda / M). The authors' formula averages in both", GAME_SCALES)
    knn_k: int = _opt(1, "k of the nearest-neighbour divergence (only with --divergence knn)")
    knn_prior_samples: int = _opt(256, "prior samples drawn per step for the nearest-neighbour divergence")
    mu: float = _opt(10.0, "weight of the image reconstruction term mean|x - g(e(x))| (L1) in the ENCODER loss "
                     "(paper eq. 6: 10)")
    lam: float = _opt(1000.0, "weight lambda of the latent reconstruction term in the GENERATOR loss: lambda * (1 - "
                      "cos(z, e(g(z)))) / M with --game-scale mean (the paper's 500/1000/2000 apply), lambda * (1 - cos) "
                      "with sum (paper eq. 5: 1000)")
    enc_latent_recon: float = _opt(0.0, "weight (on lambda's scale) of the latent reconstruction term in the ENCODER "
                                   "loss; 0 in the paper. With gen_image_recon > 0 and mu = lam = 0 it gives the "
                                   "'swapped' recipe (--recipe swapped, docs/results.md)")
    gen_image_recon: float = _opt(0.0, "weight of the image L1 reconstruction term in the GENERATOR loss (paper fig. 9 "
                                  "ablation; 0 in the paper's main setting)")
    adversary_weight: float = _opt(1.0, "weight of D(e(g(z))) in the ENCODER loss, i.e. how hard e pushes generated "
                                   "codes away from the prior (paper eq. 6: 1; the authors' Stanford Cars command: 0.5)")
    adaptive_adversary: bool = _opt(True, "adapt the adversary weight during training as the authors' later code "
                                    "(branch cAGE) does: +0.001 every iteration, -0.02 (floored at 0) whenever D(e(x)) or "
                                    "D(e(g(z))) exceeds --adaptive-threshold times the divergence of ideal uniform codes, "
                                    "both steps scaled by lr / --lr; starts at --adversary-weight; logged as "
                                    "enc/adv_weight. On by default: without it the paper's game lets the encoder cram "
                                    "the generated codes and g stops learning (docs/results.md)")
    adaptive_threshold: float = _opt(1.3, "with --adaptive-adversary: the factor over the ideal codes' divergence "
                                     "above which the adversary weight drops (authors: 1.05, which at batch 64 the "
                                     "real codes' own divergence crosses by chance, holding the weight at 0)")
    adaptive_floor: float = _opt(0.0, "with --adaptive-adversary: the lowest value the adversary weight may drop to "
                                 "(authors: 0). A floor above 0 keeps the encoder pushing generated codes away from "
                                 "the prior while the divergences stay above the threshold; 0.5 doubled a 3-epoch MNIST FID (docs/results.md)")
    no_recon: bool = _opt(False, "ablation (paper fig. 5c): drop every reconstruction term")
    n_gen_steps: int = _opt(2, "generator updates per encoder update (paper: 2)")
    # --- optimisation (paper 3.1) ---
    batch_size: int = _opt(64, "images per batch")
    lr: float = _opt(2e-4, "Adam learning rate (paper: 0.0002)")
    beta1: float = _opt(0.5, "Adam beta1")
    beta2: float = _opt(0.999, "Adam beta2")
    lr_halve_every: int = _opt(0, "halve the learning rate every this many iterations (0 = never)")
    iterations: int = _opt(1500, "training iterations; one iteration = 1 encoder update + n_gen_steps "
                           "generator updates on one data batch")
    max_rollbacks: int = _opt(3, "on a non-finite loss or weight, roll back to the last good checkpoint with the "
                              "learning rate halved, at most this many times; then stop with an error (0 = stop at once)")
    # --- bookkeeping ---
    seed: int = _opt(0, "random seed (data order, initialisation, latent samples)")
    log_every: int = _opt(25, "write a metrics.jsonl line every this many iterations")
    sample_every: int = _opt(500, "write sample and reconstruction grids every this many iterations")
    ckpt_every: int = _opt(500, "write a checkpoint every this many iterations (and always at the end)")
    keep_ckpts: int = _opt(2, "how many of the newest checkpoints to keep")
    out_dir: str = _opt("runs", "parent folder of the numbered run folders")
    tag: str = _opt("age", "short name appended to the run folder name")
    device: str = _opt("auto", "'cpu', 'cuda', 'cuda:N' or 'auto' (cuda when available)")
    channels_last: bool = _opt(True, "keep images and activations in channels-last (NHWC) memory layout; "
                               "same math, different convolution kernels")
    threads: int = _opt(0, "CPU threads for torch (0 = torch's default)")
    malloc_tuning: bool = _opt(True, "on CPU (Linux/glibc), keep freed memory for reuse instead of unmapping it, "
                               "so activations are not page-faulted in again every pass (process-wide; "
                               "docs/performance.md)")
    compile: bool = _opt(False, "compile the encoder and generator with torch.compile (needs a C++ compiler on CPU); "
                         "same math to float tolerance; measured no faster than the default on agelab's nets, on CPU "
                         "or GPU (docs/performance.md): for experiments; on a GPU use --cuda-graphs")
    cuda_graphs: bool = _opt(False, "on CUDA, record one whole training iteration as a CUDA graph and replay it "
                             "(one launch instead of hundreds: for small nets and batches, whose speed is bound by "
                             "kernel launches; same math; docs/performance.md). Single-process runs only")
    amp: str = _opt("off", "mixed precision: 'bf16' runs the forward passes under bfloat16 autocast (on CUDA, or "
                    "on CPUs with native bfloat16: AVX512-BF16 or AMX; the divergence statistics stay fp32) or "
                    "'off' (fp32 everywhere)", AMP_MODES)
    # --- colorization (paper 3.2; docs/architecture.md "Conditional models") ---
    model: str = _opt("age", "what to train: 'age' (unconditional AGE, paper 2-3.1), 'cage' (conditional AGE "
                      "colorizing the lightness L of colour images in Lab space, paper 3.2) or 'pix2pix' (the "
                      "colorization baseline: pix2pix with noise maps, paper fig. 4), or a baseline on the AGE networks for "
                      "comparisons (docs/comparison.md): 'dcgan' (GAN, no encoder), 'vae' (needs --prior gaussian, "
                      "the default with this model) or 'ali' (ALI/BiGAN)", MODELS)
    res_blocks: int = _opt(6, "residual blocks of the conditional AGE's ResNet-type generator (only with --model cage)")

    # ------------------------------------------------------------------
    def validate(self) -> "TrainConfig":
        """Raise :class:`ConfigError` naming the first invalid option."""
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"--{name.replace('_', '-')}: {why}")

        for name, allowed in (("dataset", DATASETS), ("prior", PRIORS), ("divergence", DIVERGENCES), ("amp", AMP_MODES),
                              ("model", MODELS), ("game_scale", GAME_SCALES)):
            value = getattr(self, name)
            if value not in allowed:
                raise bad(name, f"unknown value {value!r}; choose one of {', '.join(allowed)}")
        if self.dataset == "folder" and not self.data_root:
            raise bad("data_root", "--dataset folder needs --data-root PATH: the folder of images to train on")
        if self.image_size not in (32, 64):
            raise bad("image_size", f"unsupported image size {self.image_size}; supported: 32, 64")
        if self.latent_dim < 2:
            raise bad("latent_dim", f"latent size must be >= 2, got {self.latent_dim}")
        for name in ("mu", "lam", "enc_latent_recon", "gen_image_recon", "adversary_weight", "lr"):
            v = getattr(self, name)
            if not (v >= 0) or v != v or v == float("inf"):
                raise bad(name, f"must be a finite number >= 0, got {v}")
        if self.adaptive_threshold <= 0 or self.adaptive_threshold != self.adaptive_threshold:
            raise bad("adaptive_threshold", f"must be a number > 0, got {self.adaptive_threshold}")
        if not 0 <= self.adaptive_floor <= self.adversary_weight:
            raise bad("adaptive_floor", f"must be in [0, --adversary-weight = {self.adversary_weight}] (the weight "
                      f"starts there and only a drop can reach the floor), got {self.adaptive_floor}")
        if self.lr == 0:
            raise bad("lr", "learning rate must be > 0")
        for name in ("beta1", "beta2"):
            v = getattr(self, name)
            if not 0 <= v < 1:
                raise bad(name, f"must be in [0, 1), got {v}")
        for name in ("width", "batch_size", "iterations", "n_gen_steps", "log_every", "sample_every",
                     "ckpt_every", "keep_ckpts", "knn_k", "knn_prior_samples"):
            if getattr(self, name) < 1:
                raise bad(name, f"must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise bad("batch_size", "batch statistics need at least 2 images per batch")
        if self.divergence == "knn" and self.batch_size <= self.knn_k:
            raise bad("knn_k", f"k={self.knn_k} needs a batch larger than k")
        if self.divergence == "knn" and self.knn_prior_samples < self.knn_k:
            raise bad("knn_k", f"k={self.knn_k} needs at least k prior samples (--knn-prior-samples)")
        if self.adaptive_adversary and self.divergence == "knn":
            raise bad("adaptive_adversary", "needs a fitted-Gaussian divergence (gaussian or gaussian_reference): "
                      "its threshold is a multiple of the ideal codes' divergence, which is 0 for the k-NN estimate; "
                      "with --divergence knn add --no-adaptive-adversary (the adaptive weight is on by default)")
        for name in ("lr_halve_every", "threads", "max_rollbacks"):
            if getattr(self, name) < 0:
                raise bad(name, f"must be >= 0, got {getattr(self, name)}")
        if not self.tag or any(c in self.tag for c in "/\\\0") or self.tag.startswith("."):
            raise bad("tag", f"invalid run tag {self.tag!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise bad("device", f"unknown device {self.device!r}")
        if self.device == "cpu":  # "auto" is checked by the trainer once it is resolved
            from agelab.cpu import amp_problem

            problem = amp_problem(self.amp, "cpu")
            if problem:
                raise bad("amp", problem)
        if self.cuda_graphs and self.device == "cpu":
            raise bad("cuda_graphs", "CUDA graphs need a GPU (--device cuda or auto)")
        if self.cuda_graphs and self.compile:
            raise bad("cuda_graphs", "use either --compile or --cuda-graphs, not both")
        from agelab.models import model_class

        model = model_class(self.model)  # what it can do: declared on its class
        if model.required_prior is not None and self.prior != model.required_prior:
            raise bad("prior", f"{model.prior_note}: use --prior {model.required_prior} (the default for --model "
                      f"{self.model})")
        if model.conditional and self.dataset in GRAY_DATASETS:
            raise bad("model", f"{self.model} colorizes colour images; {self.dataset} is grayscale (use e.g. "
                      "--dataset cars, cifar10 or a folder of colour images)")
        if self.nets != "dcgan" and model.conditional:
            raise bad("nets", f"--nets {self.nets} changes the DCGAN-type nets; {self.model} has its own")
        if self.res_blocks < 0:
            raise bad("res_blocks", f"must be >= 0, got {self.res_blocks}")
        return self

    # ------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """A config from its dict (config.json). Keys an older agelab did not write take the value that keeps
        that run's meaning (:data:`LEGACY_VALUES`), not today's default."""
        return cls(**{**LEGACY_VALUES, **_known_keys(d)})

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def _known_keys(d: dict) -> dict:
    """``d``, or a ConfigError naming the keys that are no TrainConfig field."""
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
    return d


# What a config.json written before a field existed meant by its absence: runs keep their own game.
# game_scale: before 2026-12-01 the game was eq. 7 summed; adaptive_adversary: off by default until 2026-12-02.
LEGACY_VALUES: dict[str, Any] = {"game_scale": "sum", "adaptive_adversary": False, "adaptive_threshold": 1.05}

# Presets: each is a set of overrides on the TrainConfig defaults.
# The swapped reconstruction assignment (--recipe swapped): the latent term on the encoder and the image term on
# the generator, in eq. 7's summed units. It trained in minutes where the paper's plain game (mu on the encoder,
# lambda on the generator) collapsed, and it was every preset's game until the adaptive adversary weight made the
# paper's game train (docs/results.md). Both assignments are the same adversarial game (eq. 2) plus reciprocity
# terms (paper 2.2, theorem 3 holds for either loss).
SWAPPED = dict(mu=0.0, lam=0.0, enc_latent_recon=1000.0, gen_image_recon=10.0, divergence="gaussian", game_scale="sum",
               adaptive_adversary=False)
# The paper's game at the scale of the authors' code (eq. 5-6: mu = 10 on the encoder, lambda = 1000 on the generator).
PAPER = dict(mu=10.0, lam=1000.0, enc_latent_recon=0.0, gen_image_recon=0.0, divergence="gaussian_reference",
             game_scale="mean", adaptive_adversary=False)
# The same game with the authors' later adaptive adversary weight (their branch cAGE), at a threshold of 1.3 instead of
# their 1.05 (at batch 64 the real codes' own divergence fluctuates around 1.05 x the ideal value, which holds the
# weight at 0): on MNIST it keeps the encoder from cramming the generated codes, which the plain game keeps doing
# (docs/results.md, "The paper's game at the authors' scale").
# The TrainConfig defaults are this recipe.
PAPER_ADAPTIVE = dict(PAPER, adaptive_adversary=True, adaptive_threshold=1.3)
RECIPES: dict[str, dict[str, Any]] = {"paper": PAPER, "paper-adaptive": PAPER_ADAPTIVE, "swapped": SWAPPED}

# Every value and its source (paper section or own choice, and why): docs/presets.md.
PRESETS: dict[str, dict[str, Any]] = {
    # The embedded default: 1,797 8x8 digits, upsampled to 32x32. Small nets so
    # that README command 1 finishes in a few minutes on 2 CPU cores. The paper's game with the adaptive
    # adversary weight: over two seeds its samples halve the swapped recipe's domain FID (3.4-4.2 vs 6.7-7.2),
    # its reconstructions keep the digit less often (78-85% vs 92-94%; docs/results.md).
    "digits": dict(dataset="digits", latent_dim=8, width=16, iterations=2500, sample_every=500,
                   ckpt_every=500, log_every=25, **PAPER_ADAPTIVE),
    # MNIST with latent size 10 as in the paper's log-likelihood experiment
    # (paper 3.1). Width 32 instead of the paper's 64 so that a run of under an
    # hour on 2 CPU cores gets through many epochs (own choice). The paper's game with the
    # adaptive adversary weight: at equal epochs its samples beat the swapped recipe's and
    # its reconstructions keep the digit about as often (docs/results.md). One generator update per iteration instead
    # of the paper's two: at equal wall-clock (20,000 iterations against 15,000) its three seeds' sample FID lie within
    # 0.88-0.94 where two updates gave 0.81-4.60, with better reconstructions (docs/comparison.md, 2026-12-04).
    "mnist": dict(dataset="mnist", latent_dim=10, width=32, iterations=20000, lr_halve_every=5000, n_gen_steps=1,
                  sample_every=2000, ckpt_every=1000, log_every=50, **PAPER_ADAPTIVE),
    # The paper's game at the authors' scale (eq. 5-6, section 3.1; RECIPES["paper"]), the learning rate halved
    # about every 5 epochs as the authors' code does by default (drop_lr = 5).
    "mnist-paper": dict(dataset="mnist", latent_dim=10, width=32, iterations=20000, lr_halve_every=5000,
                        sample_every=2000, ckpt_every=1000, log_every=50, **PAPER),
    # Not in the paper: Fashion-MNIST with the mnist preset's nets and a larger latent
    # (clothing varies more than digits).
    # The presets below train the paper's game with the adaptive adversary weight, as digits, mnist and cifar10, where it
    # was measured to beat the swapped recipe (CIFAR-10, 3 epochs: Inception FID 82 vs 320; docs/comparison.md); on
    # Fashion-MNIST, SVHN, CelebA and Tiny ImageNet that choice rests on those three datasets, not on their own runs.
    "fashion-mnist": dict(dataset="fashion-mnist", latent_dim=32, width=32, iterations=20000,
                          lr_halve_every=12000, sample_every=2000, ckpt_every=1000, log_every=50, **PAPER_ADAPTIVE),
    # Paper 3.1: M = 64 for SVHN and CelebA, M = 128 for CIFAR-10 and Tiny ImageNet,
    # the DCGAN-type nets at width 64, 32x32 (SVHN, CIFAR-10) and 64x64 (CelebA, Tiny ImageNet).
    "svhn": dict(dataset="svhn", latent_dim=64, width=64, iterations=30000, lr_halve_every=20000,
                 sample_every=2000, ckpt_every=1000, log_every=50, **PAPER_ADAPTIVE),
    "celeba": dict(dataset="celeba", image_size=64, latent_dim=64, width=64, iterations=30000,
                   lr_halve_every=20000, sample_every=2000, ckpt_every=1000, log_every=50, **PAPER_ADAPTIVE),
    # One generator update per iteration, as mnist: at equal wall-clock it scored 1-6% better over two seeds, and an
    # iteration costs 1/1.17 of a 2-update one, so 35,000 iterations (halving at 23,500) take the old 30,000's time.
    "cifar10": dict(dataset="cifar10", latent_dim=128, width=64, iterations=35000, lr_halve_every=23500, n_gen_steps=1,
                    sample_every=2000, ckpt_every=1000, log_every=50, **PAPER_ADAPTIVE),
    "tinyimagenet": dict(dataset="tinyimagenet", image_size=64, latent_dim=128, width=64, iterations=30000,
                         lr_halve_every=20000, sample_every=2000, ckpt_every=1000, log_every=50, **PAPER_ADAPTIVE),
    # Paper 3.2: conditional AGE colorizing Stanford Cars at 64x64 with a 3-dimensional latent on the sphere.
    # Small nets (width 16, 4 residual blocks) and 600 iterations, so that a run fits beside another training on
    # 2 CPU cores (times in docs/results.md, "Colorization"). The swapped recipe: under the authors' scale the
    # paper's game with the adaptive weight painted colour noise on held-out cars (best-of-8 ab L1 30.5 against
    # 5.69), as the paper's assignment at agelab's older scale gave oversaturated teal/magenta in a GPU pilot.
    "cars-colorization": dict(dataset="cars", image_size=64, model="cage", latent_dim=3, prior="sphere", width=16,
                              res_blocks=4, batch_size=64, iterations=600, sample_every=200, ckpt_every=100,
                              log_every=25, tag="cage", **SWAPPED),
    # The baseline of paper fig. 4: pix2pix with three noise maps, same data, size, latent and wall-clock budget
    # (width 32; its iteration costs about half of cars-colorization's, docs/results.md "Colorization").
    "cars-pix2pix": dict(dataset="cars", image_size=64, model="pix2pix", latent_dim=3, prior="sphere", width=32,
                         batch_size=64, iterations=1800, sample_every=600, ckpt_every=300, log_every=25,
                         tag="pix2pix"),
}


def config_fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(TrainConfig))


def build_config(preset: str | None = None, recipe: str | None = None, **overrides: Any) -> TrainConfig:
    """Preset defaults, then the recipe's game (RECIPES), then overrides (``None`` values are ignored), validated."""
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"--preset: unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        values.update(PRESETS[preset])
    if recipe is not None:
        if recipe not in RECIPES:
            raise ConfigError(f"--recipe: unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
        values.update(RECIPES[recipe])
    given = {k: v for k, v in overrides.items() if v is not None}
    values.update(given)
    if "prior" not in values and values.get("model") in MODEL_TYPES:  # a model's own prior (the VAE's: N(0, I))
        from agelab.models import model_class

        required = model_class(values["model"]).required_prior
        if required is not None:
            values["prior"] = required
    if given.get("divergence") == "knn" and "adaptive_adversary" not in given:
        values["adaptive_adversary"] = False  # its threshold needs a fitted-Gaussian divergence (validate)
    return TrainConfig(**_known_keys(values)).validate()
