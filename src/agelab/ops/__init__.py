"""Fast forms of the DCGAN nets' layers, each beside the reference it equals.

    module         fast form                    reference                              in the nets
    image_end.py   to_image, from_image         to_image_reference, from_image_...     g's last layer, e's first layer
    code_end.py    code_to_map, map_to_code     code_to_map_reference, map_to_code_... g's first layer, e's head
    stacked.py     stacked(f, x1, x2)           stacked_reference(f, x1, x2)           two batches through one net

Each module's docstring states the identity its fast form relies on: the same sums as the
reference, in another order, so the two agree to float rounding. ``tests/test_ops.py`` checks
every pair, values and gradients, at tolerances that hold on any x86-64 CPU.

The DCGAN nets (:mod:`agelab.nets.dcgan`) run the layer forms when their ``fast`` attribute is
set and their layers as written otherwise; every model sets it when it is built
(:meth:`agelab.models.base.GenerativeModel.use_fast_ops`). The AGE model runs a phase's two
passes through one net ``stacked`` where that net is fast (``AGE.stacks_passes``). Why each is
worth having, with measurements: docs/performance.md.
"""

from agelab.ops.code_end import code_to_map, code_to_map_reference, map_to_code, map_to_code_reference
from agelab.ops.image_end import from_image, from_image_reference, to_image, to_image_reference
from agelab.ops.stacked import stacked, stacked_reference

__all__ = ["code_to_map", "code_to_map_reference", "from_image", "from_image_reference", "map_to_code",
           "map_to_code_reference", "stacked", "stacked_reference", "to_image", "to_image_reference"]
