"""Network bodies: DCGAN-type encoder and generator (paper 3.1), and a small classifier."""

from agelab.nets.dcgan import DCGANEncoder, DCGANGenerator

__all__ = ["DCGANEncoder", "DCGANGenerator"]
