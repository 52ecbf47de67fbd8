"""`classification`: N-way k-shot accuracy on test characters by
p(c|x) ≈ Σ_{a in c} q(a|x), and by the importance-weighted form."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from vma_tf.configs import ConfigError
from vma_tf.protocols.common import CLASSIFY_STREAM, Options, Result, Run, require


@dataclasses.dataclass(frozen=True)
class ClassificationOptions(Options):
    """Options of `classification`.

    Attributes:
        num_samples: z-samples per memory entry of the importance-weighted
            form.
        num_examples: episodes per setting (0: 1000).
        seed: evaluation seed (of the importance-weighted form).
        settings: `(ways, shots)` pairs: N characters, k examples of each in
            memory, one query per character.
        iw_episodes: the first episodes of each setting also scored by the
            importance-weighted form (0 disables it).
        episode_alphabets: each episode's characters come from this many
            random alphabets of the test split (0: from all of them, the
            sampler of training; 1: Lake et al.'s within-alphabet episodes).
        jit: compile with XLA.
    """

    protocol = "classification"
    num_samples: int = 10
    num_examples: int = 0
    seed: int = 0
    settings: Sequence[tuple[int, int]] = ((5, 1), (5, 5), (20, 1), (20, 5))
    iw_episodes: int = 100
    episode_alphabets: int = 0
    jit: bool = True


def classification_protocol(
    run: Run, options: ClassificationOptions | None = None, **keywords
) -> Result:
    """N-way k-shot accuracy on test characters (one query per class).

    Args:
        run: a restored episodic Omniglot VMA run (`load`).
        options: `ClassificationOptions` (default: the defaults).
        **keywords: `ClassificationOptions` fields, overriding `options`.

    Returns:
        `({"settings": {"N-way k-shot": {"q(a|x)": accuracy,
        ["importance_weighted": accuracy]}}[, "iw_samples_per_entry"]}, {})`
        (the importance-weighted parts only when it ran);
        accuracies from `classification.accuracy_interval`.

    Raises:
        ConfigError: an unknown option, or a run of another kind.
            Also `episode_alphabets` out of range for the test split.
    """
    o = ClassificationOptions.resolve(options, keywords)
    import tensorflow as tf

    from vma_tf import classification
    from vma_tf.data.experiments import episodes, episodic_splits
    from vma_tf.data.pipelines import from_counter

    c = run.config
    require(
        run,
        "classification",
        c.model.kind == "vma" and c.data.task == "episodes",
        "an episodic Omniglot VMA run",
    )
    _, test = episodic_splits(c)
    model = run.model
    q_probs = tf.function(
        lambda x, m, labels, n: classification.address_class_probs(
            model, x, m, labels, n
        ),
        jit_compile=o.jit,
    )
    iw = classification.ImportanceClassifier(model, max(o.num_samples, 1), jit=o.jit)
    results = {}
    for ways, shots in o.settings:
        try:
            make = episodes(
                c,
                test,
                CLASSIFY_STREAM,
                seed=c.data.eval_seed,
                batch_classes=ways,
                targets_per_class=1,
                memory_per_class=shots,
                episode_alphabets=o.episode_alphabets,
            )
        except ValueError as e:  # One line naming the flag.
            raise ConfigError(f"classification, {ways}-way {shots}-shot: {e}") from e
        acc_q, acc_iw = [], []
        for i, ep in enumerate(from_counter(make, 0, o.num_examples or 1000)):
            labels_m, truth = classification.episode_labels(
                ep["memory_label"], ep["x_label"]
            )
            p = q_probs(ep["x"], ep["memory"], tf.constant(labels_m), ways)
            acc_q.append(np.mean(np.argmax(p.numpy(), -1) == truth))
            if i < o.iw_episodes and o.num_samples > 0:
                p = iw(ep["x"], ep["memory"], labels_m, ways, seed=(o.seed, i))
                acc_iw.append(np.mean(np.argmax(p, -1) == truth))
        key = f"{ways}-way {shots}-shot"
        results[key] = {"q(a|x)": classification.accuracy_interval(acc_q)}
        if acc_iw:
            results[key]["importance_weighted"] = classification.accuracy_interval(
                acc_iw
            )
    if not (o.iw_episodes and o.num_samples):
        return {"settings": results}, {}
    return {"settings": results, "iw_samples_per_entry": o.num_samples}, {}
