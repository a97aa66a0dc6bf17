"""The unconditional AGE model (paper 2, eq. 5-7).

    encoder loss (eq. 6, minimised):  D(e(x)) - a * D(e(g(z))) + mu * L_X  [+ enc_latent_recon * L_Z]
    generator loss (eq. 5):           D(e(g(z))) + lam * L_Z          [+ gen_image_recon * L_X]

    L_X = mean |x - g(e(x))|  (L1 over all pixels),   L_Z = mean_b (1 - cos(z, e(g(z)))) / M

with D(.) the divergence of a batch of codes to the prior and a the adversary weight (1 in
the paper; 0.5 in the authors' Stanford Cars command). This is the scale of the
authors' released code (``GameConfig.scale = "mean"``): D per latent coordinate (their
fitted-Gaussian formula averages over the M coordinates; eq. 7 and the k-NN estimate are
divided by M) and the latent match ``2 - mean(z * e(g(z)))`` over all B x M elements, whose
gradient is that of (1 - cos) / M. So mu = 10, lam = 1000 mean what the paper's commands
mean. ``scale = "sum"`` is eq. 7 summed over coordinates and L_Z without the 1/M (agelab's
meaning before the scale existed; there lam = the authors' lambda / M). For unit vectors
1 - cos = ||z - e(g(z))||^2 / 2, which is how L_Z is computed. The bracketed terms are off
in the paper's setting; the swapped recipe (config.SWAPPED) uses them instead of mu and lam.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agelab.distributed import fp32_region
from agelab.divergences import kl_gaussian, kl_gaussian_reference, kl_knn
from agelab.models.base import GenerativeModel, ModelConfig, Phase, frozen_bn_stats, option
from agelab.nets.dcgan import dcgan_nets
from agelab.ops import stacked

# ModelConfig, frozen_bn_stats: from models.base
__all__ = ["AGE", "CodedBatch", "GameConfig", "ModelConfig", "frozen_bn_stats"]


@dataclass(frozen=True)
class GameConfig:
    """The AGE models' training config: the weights of the game and its phases' repeats; only needed for training.

    Each field is set by the TrainConfig field of its name (``scale`` by ``game_scale``): ``AGE.config_from``.
    """

    divergence: str = "gaussian_reference"  # the authors' formula
    # "mean": D and the latent term per latent coordinate (the authors' code); "sum": eq. 7's sum (--game-scale)
    scale: str = option("mean", "game_scale")
    mu: float = 10.0  # image reconstruction, encoder loss (paper)
    lam: float = 1000.0  # latent reconstruction, generator loss (paper, on the authors' scale with scale="mean")
    enc_latent_recon: float = 0.0  # latent reconstruction, encoder loss (not in the paper)
    gen_image_recon: float = 0.0  # image reconstruction, generator loss (paper fig. 9 ablation)
    adversary_weight: float = 1.0  # weight of D(e(g(z))) in the encoder loss (paper: 1); the start with adaptive
    adaptive_adversary: bool = False  # the authors' later schedule of that weight (AGE._adapt_adversary)
    adaptive_threshold: float = 1.05
    adaptive_floor: float = 0.0  # the lowest value the adaptive weight drops to (authors: 0)
    no_recon: bool = False
    n_gen_steps: int = 2
    knn_k: int = 1
    knn_prior_samples: int = 256


@dataclass(frozen=True)
class CodedBatch:
    """A batch (x, c) and its codes e(x | c), computed once without a graph (None where no loss term needs them).

    What the generator phase's ``begin`` (:meth:`AGE.code_batch`) gives the phase's updates.
    """

    x: Tensor
    c: Tensor | None
    codes: Tensor | None


class AGE(GenerativeModel):
    """Encoder e (image -> prior support) and generator g (latent -> image in [-1, 1]).

    Images are float tensors (B, C, S, S) in [-1, 1]; codes are (B, M).

    Conditional models (:class:`agelab.models.conditional.ConditionalAGE`) reuse the
    game unchanged: a training batch may carry a condition c (``split_batch``),
    which ``encode(x, c)`` and ``decode(z, c)`` take; here c is always None.
    ``prepare_batch`` turns the trainer's uint8 images into a batch.
    """

    kind = "age"
    age_game = True
    config_class = GameConfig
    # A phase's two passes through one net share the net's code-end product (agelab.ops.stacked) where the net runs
    # its fast forms and is not compiled (compiled code runs through forward only, and the stacked passes call the
    # net's parts). It needs encode and decode to be the nets' own passes: a subclass that conditions them sets it
    # False. Set on an instance, it turns the stacking alone off (benchmarks/shared_products.py).
    stacks_passes: bool = True

    def __init__(self, cfg: ModelConfig, config: GameConfig | None = None):
        super().__init__(cfg, config)  # cfg, config (the game), prior, shard, compiled, then build: the networks
        # The encoder's weight on D(e(g(z))) (changed by the adaptive schedule) and lr / initial lr, which scales
        # that schedule's steps: buffers that follow the model's device, kept out of the weights (train_state).
        self.register_buffer("adversary_weight", torch.tensor(float(self.config.adversary_weight)), persistent=False)
        self.register_buffer("lr_factor", torch.tensor(1.0), persistent=False)

    def build(self, cfg: ModelConfig) -> None:
        self.encoder, self.generator = self.build_networks(cfg)

    @staticmethod
    def build_networks(cfg: ModelConfig) -> tuple[nn.Module, nn.Module]:
        """(encoder, generator), initialised in this order: the DCGAN-type pair of paper 3.1."""
        return dcgan_nets(cfg)

    # ---- use of a trained model -------------------------------------------------
    def encode(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        return self.prior.project(self.encoder(x))  # (B, M), unit norm for the sphere prior

    def decode(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        return self.generator(z)  # (B, C, S, S) in [-1, 1]

    # ---- the game -----------------------------------------------------------------
    def divergence(self, z: Tensor) -> Tensor:
        """D(Q || prior) of the batch of codes z (B, M); a scalar.

        Always computed in fp32 with autocast off (the statistics of a bf16 batch are
        too coarse). In a multi-process run z is this process's slice and D is taken
        over the codes of the global batch, gathered from every process.
        """
        with fp32_region(z.device.type):
            z = z.float()  # (b, M)
            if self.shard is not None:
                z = self.shard.gather(z)  # (B, M), differentiable in this process's rows
            return self._divergence(z)

    def _divergence(self, z: Tensor) -> Tensor:
        name = self.config.divergence
        if name == "gaussian_reference":
            return kl_gaussian_reference(z)
        if name == "gaussian":
            return self._on_scale(kl_gaussian(z))
        if name == "knn":
            y = self.prior.sample(self.config.knn_prior_samples, device=z.device)  # (N, M)
            return self._on_scale(kl_knn(z, y, k=self.config.knn_k, dim=self.prior.intrinsic_dim))
        raise ValueError(f"unknown divergence {name!r}")

    def _on_scale(self, d):
        """A divergence that sums over the M coordinates (eq. 7, the k-NN estimate), per coordinate on the
        authors' scale; the authors' formula already averages and is used as it is on either scale."""
        return d / self.cfg.latent_dim if self.config.scale == "mean" else d

    def _latent_weight(self, weight: float) -> float:
        """The factor of mean_b ||z - e(g(z))||^2 for a latent weight: weight/2 * (1/M on the authors' scale).

        On unit codes ||z - e(g(z))||^2 / 2 = 1 - cos, so the term is weight * (1 - cos), per coordinate
        (the authors' ``2 - mean(z * e(g(z)))`` over all B x M elements) with scale="mean".
        """
        return 0.5 * weight / (self.cfg.latent_dim if self.config.scale == "mean" else 1)

    def _weights(self) -> tuple[float, float, float, float]:
        g = self.config
        if g.no_recon:
            return 0.0, 0.0, 0.0, 0.0
        return g.mu, g.lam, g.enc_latent_recon, g.gen_image_recon

    @staticmethod
    def latent_recon(z: Tensor, z_rec: Tensor) -> Tensor:
        """mean_b ||z - e(g(z))||^2; times 1/2 this equals 1 - cos(z, e(g(z))) for unit codes."""
        return (z - z_rec).pow(2).sum(1).mean()

    def encoder_loss(self, batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Eq. 6 as a minimisation. Passes: e on x and on g(z); g(e(x)) only when its L1 term is on.

        g(z) is drawn without a graph: the encoder phase never steps g. With a
        condition c every pass is conditioned on the batch's own c; the
        divergences are still over the whole batch (which mixes many c, paper 3.2).
        """
        x, c = self.split_batch(batch)
        mu, _, enc_z, _ = self._weights()
        b = x.shape[0]
        with torch.no_grad():
            z = self.batch_latent(b)  # (B, M)
            x_fake = self.decode(z, c)  # (B, C, S, S)
        z_real, z_fake = self._encode_real_and_fake(x, x_fake, c)  # (B, M) each
        kl_real, kl_fake = self.divergence(z_real), self.divergence(z_fake)
        logs = {"kl_real": kl_real.detach(), "kl_fake": kl_fake.detach()}
        if self.config.adaptive_adversary:
            weight = self.adversary_weight.clone()  # this update's; the buffer changes for the next one
            logs["adv_weight"] = weight
            self._adapt_adversary(logs["kl_real"], logs["kl_fake"])
        else:
            weight = self.config.adversary_weight  # 1 in the paper: x * 1.0 is exact, the loss and gradients as without
        loss = kl_real - weight * kl_fake
        if mu > 0:
            rec_x = F.l1_loss(self.decode(z_real, c), x)  # mean over all pixels
            loss = loss + mu * rec_x
            logs["rec_x"] = rec_x.detach()
        if enc_z > 0:
            rec_z = self.latent_recon(z, z_fake)
            loss = loss + self._latent_weight(enc_z) * rec_z
            logs["rec_z"] = rec_z.detach()
        logs["loss"] = loss.detach()
        return loss, logs

    def generator_loss(self, batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Eq. 5. Passes: g on z, e on g(z) (input gradients only: e is not stepped); g(e(x)) when its L1 term is on.

        ``batch`` is the phase's :class:`CodedBatch` (``code_batch``), or a batch, whose codes are then computed here.
        """
        batch = self.code_batch(batch)
        x, c = batch.x, batch.c
        _, lam, _, gen_x = self._weights()
        z = self.batch_latent(x.shape[0])  # (B, M)
        if gen_x > 0:  # g on z and on e(x), a constant for the generator
            x_fake, x_rec = self._decode_two(z, batch.codes, c)  # (B, C, S, S) each
        else:
            x_fake = self.decode(z, c)  # (B, C, S, S)
        with frozen_bn_stats(self.encoder):
            z_fake = self.encode(x_fake, c)  # (B, M)
        kl_fake = self.divergence(z_fake)
        loss = kl_fake
        logs = {"kl_fake": kl_fake.detach()}
        if lam > 0:
            rec_z = self.latent_recon(z, z_fake)
            loss = loss + self._latent_weight(lam) * rec_z
            logs["rec_z"] = rec_z.detach()
        if gen_x > 0:
            rec_x = F.l1_loss(x_rec, x)
            loss = loss + gen_x * rec_x
            logs["rec_x"] = rec_x.detach()
        logs["loss"] = loss.detach()
        return loss, logs

    def _adapt_adversary(self, kl_real: Tensor, kl_fake: Tensor) -> None:
        """The authors' adaptive adversary weight (branch cAGE of their code), for the next encoder update.

        +0.001 every iteration; when either divergence of this update exceeds the threshold times
        the divergence of ideal uniform codes, -0.02 instead of that (net -0.019), floored at
        ``adaptive_floor`` (the authors': 0);
        both scaled by lr / initial lr. On the device, without a host sync.
        """
        from agelab.divergences import ideal_gaussian_divergence

        ideal = ideal_gaussian_divergence(self.config.divergence, self.cfg.latent_dim)
        if self.config.divergence == "gaussian":
            ideal = self._on_scale(ideal)
        limit = self.config.adaptive_threshold * ideal
        up = self.adversary_weight + 0.001 * self.lr_factor
        above = (kl_real > limit) | (kl_fake > limit)
        down = (up - 0.02 * self.lr_factor).clamp_min(self.config.adaptive_floor)
        self.adversary_weight.copy_(torch.where(above, down, up))

    def train_state(self) -> dict[str, Tensor]:
        """What training changes besides the weights (checkpointed in state.pt): the adversary weight."""
        return {"adversary_weight": self.adversary_weight.detach().clone()}

    def load_train_state(self, state: dict) -> None:
        if "adversary_weight" in state:
            self.adversary_weight.copy_(state["adversary_weight"])

    def set_lr_factor(self, factor: float) -> None:
        """lr / initial lr: the adaptive adversary weight's step size (a device buffer, filled in place)."""
        self.lr_factor.fill_(factor)

    def _stacks(self, net: nn.Module) -> bool:
        """Whether a phase's two passes through ``net`` run ``stacked`` (see ``stacks_passes``)."""
        return self.stacks_passes and net.fast and not self.compiled

    def _encode_real_and_fake(self, x: Tensor, x_fake: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor]:
        """(e(x | c), e(x_fake | c)) of the encoder phase; the pass on x_fake leaves batch norm's running
        statistics alone (they are accumulated from real images only)."""
        if self._stacks(self.encoder):
            h_real = self.encoder.body(x)
            with frozen_bn_stats(self.encoder):
                h_fake = self.encoder.body(x_fake)
            raw_real, raw_fake = stacked(self.encoder.code_layer, h_real, h_fake)
            return self.prior.project(raw_real), self.prior.project(raw_fake)
        z_real = self.encode(x, c)
        with frozen_bn_stats(self.encoder):
            z_fake = self.encode(x_fake, c)
        return z_real, z_fake

    def _decode_two(self, z1: Tensor, z2: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor]:
        """(g(z1 | c), g(z2 | c)), z1's batch first (batch norm's running statistics see them in this order)."""
        if self._stacks(self.generator):
            h1, h2 = stacked(self.generator.code_layer, z1, z2)
            return self.generator.body(h1), self.generator.body(h2)
        return self.decode(z1, c), self.decode(z2, c)

    def code_batch(self, batch) -> CodedBatch:
        """The generator phase's ``begin``: the batch with e(x | c) when the generator's image term needs it.

        Computed once for the phase's n_gen_steps updates, without a graph: the encoder is not stepped
        in the phase, so every update would compute the same codes. In training mode batch norm
        normalises with the batch's own statistics, so its running averages do not enter the codes, and
        the pass leaves them alone (``frozen_bn_stats``), as every pass whose encoder is not stepped does.
        A :class:`CodedBatch` is returned as it is.
        """
        if isinstance(batch, CodedBatch):
            return batch
        x, c = self.split_batch(batch)
        _, _, _, gen_x = self._weights()
        if gen_x == 0:
            return CodedBatch(x, c, None)
        with torch.no_grad(), frozen_bn_stats(self.encoder):
            return CodedBatch(x, c, self.encode(x, c))  # (B, M)

    def phases(self) -> list[Phase]:
        return [
            Phase("enc", self.encoder, self.encoder_loss, repeats=1),
            Phase("gen", self.generator, self.generator_loss, repeats=self.config.n_gen_steps, begin=self.code_batch),
        ]
