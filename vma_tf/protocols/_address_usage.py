"""`address_usage`: how many memory slots q(a|x) really uses on the test set
(entropies of q(a|x), of its average over x and of p(a); slots that are the
mode for some x): tells index collapse (every x on one slot) from use."""

from __future__ import annotations

import dataclasses
import math

from vma_tf.protocols.common import Options, Result, Run, require


@dataclasses.dataclass(frozen=True)
class AddressUsageOptions(Options):
    """Options of `address_usage`.

    Attributes:
        num_examples: caps the test examples, in whole batches (0: the whole
            test split; binarized MNIST's test file is not shuffled, so a
            prefix of it is not a sample of it).
    """

    protocol = "address_usage"
    num_examples: int = 0


def address_usage(
    run: Run, options: AddressUsageOptions | None = None, **keywords
) -> Result:
    """Slot usage of q(a|x) over test examples (learned or episodic memory).

    `vma_tf.address_health` statistics over the test split: with learned
    memory pooled over all targets, with episodic memory per batch and
    averaged. Reports H(q(a|x)), the entropy of the marginal q̄(a) = E_x q(a|x),
    their difference I(x; a), H(p(a)), the number of slots that are the mode
    of q(a|x) for some x and the share of the most frequent mode (index
    collapse: I(x; a) ≈ 0 and one slot).

    Args:
        run: a restored VMA run (`load`).
        options: `AddressUsageOptions` (default: the defaults).
        **keywords: `AddressUsageOptions` fields, overriding `options`.

    Returns:
        `({**address_health.measure(...), "H_p", "memory_size",
        "log_memory_size", "slots_used_as_mode", "num_examples"}, {})`; H_p is
        the entropy of p(a) for the first test batch; slots_used_as_mode is
        `slots_as_mode`, a float: with episodic memory the per-batch mean
        (e.g. 5.5), with learned memory a count over all targets.

    Raises:
        ConfigError: an unknown option, or not a VMA run.
    """
    o = AddressUsageOptions.resolve(options, keywords)
    from vma_tf import address_health

    require(run, "address_usage", run.config.model.kind == "vma", "a VMA run")
    ds = next(iter(run.data.final_evals.values()))  # The test split.
    if o.num_examples:
        ds = ds.take(max(1, math.ceil(o.num_examples / run.config.train.batch_size)))
    stats = address_health.measure(run.model, ds)
    first = next(iter(ds))
    _, p_a = run.model.address_distributions(first["x"], first.get("memory"))
    h_p = float(address_health.entropy(p_a.probs_parameter().numpy()))
    seen = sum(int(b["x"].shape[0]) for b in ds)
    size = int(stats["memory_size"])
    return {
        **stats,
        "H_p": h_p,
        "memory_size": size,
        "log_memory_size": math.log(size),
        "slots_used_as_mode": float(stats["slots_as_mode"]),
        "num_examples": seen,
    }, {}
