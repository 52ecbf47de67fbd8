"""The paper's evaluation protocols, each one function of a restored run.

Every protocol takes a `Run` (from `load`) and its options, a frozen
dataclass (`REGISTRY[name].options`) given as an object or as keywords, and
returns `(results, figures)`: a JSON-ready dict whose numbers are
`{"mean", "stderr"}` pairs (or accuracies with a 95 % interval) and a dict
`name -> figure writer` (`path -> None`) that `launchers.evaluate` saves as
PNGs. An option the protocol does not take is a one-line `ConfigError`
naming it, the protocol and the options it takes. Bounds are the K-sample L_K
streamed in chunks (`evaluation.StreamedBound`); randomness is seeded by
`seed`, so the same command gives the same numbers.

Protocols, one module `_<name>` each (private: this package's attributes
`nll`, `figures`, ... are the functions, which a public module of the same name
would shadow); `common` holds what they share:

* `nll`: L_K (K up to thousands) on the run's final evaluation sets.
* `recall_sizes`: MNIST recall model, memory of 256...2048 test images,
  targets drawn from memory; NLL and kl_a against log|M|.
* `gmn_table`: the paper's Table 1 (GMN split) by GMN's protocol: sequences
  of 20 test images from C characters; each image after the first T is a
  target with memory = the first T images.
* `gmn_table_per_class`: Table 1 with T drawings of each of the C characters
  in memory and 20 - T other drawings of them as targets (the setting the
  paper's VMA rows follow: the C = 1 row + about log C).
* `robustness`: Fig. 5. A: C characters in memory, with the reference
  L(C=1) + log C of an optimal model of C disjoint classes; B: all test
  characters in memory, 1...16 examples each.
* `kl_breakdown`: Fig. 4B: kl_a, kl_z and NLL of several runs (e.g. trained
  with 1, 4, 8 examples per class).
* `classification`: N-way k-shot accuracy on test characters by
  p(c|x) ≈ Σ_{a in c} q(a|x), and by the importance-weighted form.
* `figures`: learning curves, samples, q(a|x) histograms.
* `large_memory`: MNIST recall model with a test-time memory of up to
  130 000 images, targets drawn from it: L_K, kl_a, own-slot diagnostics,
  wall time and peak RSS.
* `address_usage`: how many memory slots q(a|x) really uses on the test set:
  tells index collapse (every x on one slot) from use.
* `gradient_variance`: issue 7. The variance over seeds of each estimator's
  gradient of the addressing parameters, for one fixed test batch.

Importing this package does not import TensorFlow (the protocols import it
when called), so launchers can read `REGISTRY` before TensorFlow starts.

Example:

    run = protocols.load("~/vma_runs/recall16")
    results, figures = protocols.nll(run, num_samples=1000, num_examples=640)
    entry = protocols.REGISTRY["nll"]
    results, _ = entry.function(run, entry.options(num_samples=10))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from vma_tf.configs import ConfigError
from vma_tf.protocols._address_usage import AddressUsageOptions, address_usage
from vma_tf.protocols._classification import (
    ClassificationOptions,
    classification_protocol,
)
from vma_tf.protocols._figures import FiguresOptions, figures
from vma_tf.protocols._gmn_table import (
    SPLITS as TABLE_SPLITS,
    GmnTableOptions,
    GmnTablePerClassOptions,
    copies_of_memory,
    gmn_sequences,
    gmn_table,
    gmn_table_per_class,
    per_class_draw,
    per_class_split,
)
from vma_tf.protocols._gradient_variance import (
    GradientVarianceOptions,
    gradient_variance_protocol,
)
from vma_tf.protocols._kl_breakdown import KlBreakdownOptions, kl_breakdown
from vma_tf.protocols._large_memory import (
    LargeMemoryOptions,
    large_memory,
    large_memory_images,
)
from vma_tf.protocols._nll import NllOptions, nll
from vma_tf.protocols._recall_sizes import RecallSizesOptions, recall_sizes
from vma_tf.protocols._robustness import RobustnessOptions, robustness
from vma_tf.protocols.common import (
    BoundOptions,
    Figures,
    Options,
    Result,
    Run,
    load,
)


class Protocol(NamedTuple):
    """A registered protocol.

    Attributes:
        options: its options type (`options.protocol` is its name).
        function: `function(run, options=None, **keywords) -> (results,
            figures)`; `run` is a sequence of runs if `options.several_runs`.
    """

    options: type[Options]
    function: Callable[..., Result]


# name -> (options type, function), in the order `launchers.evaluate` lists them.
REGISTRY: dict[str, Protocol] = {
    p.options.protocol: p
    for p in (
        Protocol(NllOptions, nll),
        Protocol(RecallSizesOptions, recall_sizes),
        Protocol(GmnTableOptions, gmn_table),
        Protocol(GmnTablePerClassOptions, gmn_table_per_class),
        Protocol(RobustnessOptions, robustness),
        Protocol(KlBreakdownOptions, kl_breakdown),
        Protocol(ClassificationOptions, classification_protocol),
        Protocol(FiguresOptions, figures),
        Protocol(LargeMemoryOptions, large_memory),
        Protocol(AddressUsageOptions, address_usage),
        Protocol(GradientVarianceOptions, gradient_variance_protocol),
    )
}

# name -> function (`PROTOCOLS[name](run, **options)`).
PROTOCOLS: dict[str, Callable[..., Result]] = {
    name: p.function for name, p in REGISTRY.items()
}

__all__ = [
    "PROTOCOLS",
    "REGISTRY",
    "TABLE_SPLITS",
    "AddressUsageOptions",
    "BoundOptions",
    "ClassificationOptions",
    "ConfigError",
    "Figures",
    "FiguresOptions",
    "GmnTableOptions",
    "GmnTablePerClassOptions",
    "GradientVarianceOptions",
    "KlBreakdownOptions",
    "LargeMemoryOptions",
    "NllOptions",
    "Options",
    "Protocol",
    "RecallSizesOptions",
    "Result",
    "RobustnessOptions",
    "Run",
    "address_usage",
    "classification_protocol",
    "copies_of_memory",
    "figures",
    "gmn_sequences",
    "gmn_table",
    "gmn_table_per_class",
    "gradient_variance_protocol",
    "kl_breakdown",
    "large_memory",
    "large_memory_images",
    "load",
    "nll",
    "per_class_draw",
    "per_class_split",
    "recall_sizes",
    "robustness",
]
