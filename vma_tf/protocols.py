"""The paper's evaluation protocols, each one function of a restored run.

Every protocol takes a `Run` (from `load`) and keyword options and returns
`(results, figures)`: a JSON-ready dict whose numbers are `{"mean", "stderr"}`
pairs (or accuracies with a 95 % interval) and a dict `name -> figure writer`
(`path -> None`) that `launchers.evaluate` saves as PNGs. Bounds are the
K-sample L_K streamed in chunks (`evaluation.StreamedBound`); randomness is
seeded by `seed`, so the same command gives the same numbers.

Protocols:

* `nll`: L_K (K up to thousands) on the run's final evaluation sets.
* `recall_sizes`: MNIST recall model, memory of 256...2048 test images,
  targets drawn from memory; NLL and kl_a against log|M|.
* `gmn_table`: the paper's Table 1 (GMN split): sequences of 20 test images
  from C characters; each image after the first T is a target with memory =
  the first T images. Targets T+1..20 of one sequence are exchangeable, so
  all of them are evaluated against the same memory (one batch per sequence).
* `robustness`: Fig. 5. A: C characters in memory (targets from up to 8 of
  them, the rest confounders), with the reference L(C=1) + log C of an
  optimal model of C disjoint classes; B: all test characters in memory,
  1...16 examples each.
* `kl_breakdown`: Fig. 4B: kl_a, kl_z and NLL of several runs (e.g. trained
  with 1, 4, 8 examples per class).
* `classification`: N-way k-shot accuracy on test characters by
  p(c|x) ≈ Σ_{a in c} q(a|x), and by the importance-weighted form.
* `address_usage`: how many memory slots q(a|x) really uses on the test set
  (entropies of q(a|x), of its average over x and of p(a); slots that are
  the mode for some x): tells index collapse (every x on one slot) from use.
* `large_memory`: MNIST recall model with a test-time memory of up to
  130 000 images (default 100 000), targets drawn from it: L_K, kl_a, the
  own-slot diagnostics, wall time and peak RSS (the Performance issue's
  scale test).
* `gradient_variance`: issue 7. For the run's final checkpoint and one fixed
  test batch, the variance over `num_draws` seeds of each estimator's
  gradient of the addressing parameters (same K as training);
  `vma_tf.gradient_variance`.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from vma_tf import address_health, classification, evaluation, experiment
from vma_tf.configs import Config, ConfigError
from vma_tf.data.pipelines import from_counter, recall_batch_fn

# Streams of evaluation data, distinct from training (0) and periodic eval (1).
_RECALL_STREAM, _ROBUST_STREAM, _CLASSIFY_STREAM = 11, 12, 13


@dataclasses.dataclass
class Run:
    """A restored training run."""

    workdir: pathlib.Path
    config: Config
    model: Any
    data: Any
    step: int


def load(workdir, dtype_policy: str | None = None) -> Run:
    """Restores the newest checkpoint of `workdir` (see `experiment.load_run`)."""
    config, model, data, step = experiment.load_run(workdir, dtype_policy)
    return Run(pathlib.Path(workdir).expanduser(), config, model, data, step)


def _summary(values: dict[str, list]) -> dict:
    out = {}
    for k, v in values.items():
        mean, se = evaluation.mean_and_stderr(np.concatenate(v))
        out[k] = {"mean": mean, "stderr": se}
    return out


def _bound_over(stream, batches, num_samples: int, seed: int, key="x") -> dict:
    """Summary of L_K diagnostics over an iterable of batches."""
    values = {k: [] for k in ("nll_bound", "kl_a", "kl_z", "recon")}
    n = 0
    for i, batch in enumerate(batches):
        res = stream(batch[key], batch.get("memory"), num_samples, seed=(seed, i))
        for k in values:
            values[k].append(res[k])
        n += len(res["nll_bound"])
    return {**_summary(values), "num_examples": n}


def _require(run: Run, protocol: str, ok: bool, what: str):
    if not ok:
        raise ConfigError(
            f"--protocol={protocol} needs {what}; {run.workdir} is a "
            f"{run.config.name!r} run ({run.config.model.kind}, "
            f"{run.config.data.dataset}, task={run.config.data.task})"
        )


def nll(
    run: Run, num_samples=1000, num_examples=0, chunk_size=100, seed=0, jit=True, **_
):
    """L_K and its diagnostics on the run's final evaluation sets."""
    results = evaluation.nll_protocol(
        run.model,
        run.data.final_evals,
        num_samples,
        num_examples,
        chunk_size,
        seed,
        jit,
    )
    return results, {}


def recall_sizes(
    run: Run,
    num_samples=1000,
    num_examples=0,
    chunk_size=100,
    seed=0,
    sizes: Sequence[int] = (256, 512, 1024, 2048),
    jit=True,
    **_,
):
    """NLL and kl_a with test-time memories of `sizes` test images.

    Targets are drawn from the memory (the training task), `num_examples`
    targets per size (default 320). Also reports `q_own_slot`, the q(a|x)
    mass on the target's own slot, and `mode_is_own_slot`, the fraction of
    targets whose most probable address is their own slot
    (`classification.own_slot_recall`): lookup means both approach 1.
    """
    from vma_tf.data.mnist import load_binarized_mnist

    c = run.config
    _require(
        run,
        "recall_sizes",
        c.model.kind == "vma" and c.data.task == "recall",
        "an MNIST recall VMA run",
    )
    test = tf.constant(load_binarized_mnist("test", c.data.data_dir))
    batch = c.train.batch_size
    batches = max(1, math.ceil((num_examples or 320) / batch))
    stream = evaluation.StreamedBound(run.model, chunk_size, jit)
    results = {}
    for size in sizes:
        make = recall_batch_fn(test, size, batch, c.train.seed, _RECALL_STREAM)
        r = _bound_over(stream, from_counter(make, 0, batches), num_samples, seed)
        own = {"q_own_slot": [], "mode_is_own_slot": []}
        for targets in from_counter(make, 0, batches):
            mass, hit = classification.own_slot_recall(
                run.model, targets["x"], targets["memory"]
            )
            own["q_own_slot"].append(mass.numpy())
            own["mode_is_own_slot"].append(hit.numpy().astype(np.float64))
        results[str(size)] = {
            **r,
            **_summary(own),
            "log_memory_size": math.log(size),
        }

    def figure(path):
        from vma_tf import plotting

        plotting.recall_sizes_figure(path, results)

    return {"by_memory_size": results, "num_samples": num_samples}, {
        "recall_sizes": figure
    }


def gmn_sequences(
    images: np.ndarray, num_classes: int, length: int, rng: np.random.Generator
):
    """One sequence of `length` images from `num_classes` random characters.

    Each position's character is uniform over the chosen ones; each character
    contributes distinct drawings.

    Returns:
        `(images [length, H, W, 1] float32, labels [length] int)`.
    """
    chars = rng.choice(images.shape[0], size=num_classes, replace=False)
    which = rng.integers(0, num_classes, size=length)
    perms = np.stack([rng.permutation(images.shape[1]) for _ in chars])
    seen = np.zeros(num_classes, int)
    out = []
    for w in which:
        out.append(images[chars[w], perms[w, seen[w]]])
        seen[w] += 1
    return np.asarray(out, np.float32)[..., None], chars[which]


def gmn_table(
    run: Run,
    num_samples=1000,
    num_examples=0,
    chunk_size=100,
    seed=0,
    classes: Sequence[int] = (1, 2, 4, 16),
    shots: Sequence[int] = (1, 2, 3, 4, 5, 10, 19),
    jit=True,
    **_,
):
    """Table 1: NLL of image T+1.. given the first T of a 20-image sequence
    from C test characters; `num_examples` sequences per C (default 10)."""
    from vma_tf.data.experiments import episodic_splits

    c = run.config
    _require(
        run,
        "gmn_table",
        c.model.kind == "vma" and c.data.task == "episodes",
        "an episodic Omniglot VMA run",
    )
    _, test = episodic_splits(c)
    length = 20
    if max(shots) >= length:
        raise ConfigError(f"gmn_table shots must be < {length}")
    stream = evaluation.StreamedBound(run.model, chunk_size, jit)
    rng = np.random.default_rng([seed, 1])
    sequences = {
        n: [
            gmn_sequences(test.images, n, length, rng)
            for _ in range(num_examples or 10)
        ]
        for n in classes
    }
    table = {}
    for n in classes:
        for t in shots:
            batches = ({"x": seq[t:], "memory": seq[:t]} for seq, _ in sequences[n])
            table[f"C={n},T={t}"] = _bound_over(stream, batches, num_samples, seed)
    return {
        "table": table,
        "classes": list(classes),
        "shots": list(shots),
        "sequences_per_row": num_examples or 10,
        "num_samples": num_samples,
    }, {}


def _episode_bound(run, stream, make, batches, num_samples, seed):
    return _bound_over(stream, from_counter(make, 0, batches), num_samples, seed)


def robustness(
    run: Run,
    num_samples=1000,
    num_examples=0,
    chunk_size=100,
    seed=0,
    classes: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 144),
    examples: Sequence[int] = (1, 2, 4, 8, 16),
    targets_per_class: int = 4,
    jit=True,
    **_,
):
    """Fig. 5 A (C characters in memory) and B (all, 1..16 examples each).

    `num_examples` targets per point (default 64, in batches of up to 8
    characters x `targets_per_class`).
    """
    from vma_tf.data.experiments import episodes, episodic_splits

    c = run.config
    _require(
        run,
        "robustness",
        c.model.kind in ("vma", "soft_attention") and c.data.task == "episodes",
        "an episodic Omniglot memory run",
    )
    _, test = episodic_splits(c)
    total = test.num_characters
    classes = [n for n in classes if n <= total] or [total]
    stream = evaluation.StreamedBound(run.model, chunk_size, jit)
    wanted = num_examples or 64
    mpc = c.data.memory_per_class

    def point(num_classes, per_class):
        targets = min(num_classes, c.data.batch_classes)
        make = episodes(
            c,
            test,
            _ROBUST_STREAM,
            batch_classes=targets,
            targets_per_class=targets_per_class,
            memory_per_class=per_class,
            confounder_classes=num_classes - targets,
        )
        batches = max(1, math.ceil(wanted / (targets * targets_per_class)))
        r = _episode_bound(run, stream, make, batches, num_samples, seed)
        return {**r, "classes": num_classes, "memory_per_class": per_class}

    a = {str(n): point(n, mpc) for n in classes}
    base = a[str(classes[0])]["nll_bound"]["mean"] - math.log(classes[0])
    for n in classes:
        a[str(n)]["optimal_reference"] = base + math.log(n)
    b = {
        str(k): point(total, k)
        for k in examples
        if k + targets_per_class <= test.images.shape[1]
    }
    results = {"A_classes": a, "B_examples_per_class": b, "num_samples": num_samples}

    def figure(path):
        from vma_tf import plotting

        plotting.robustness_figure(path, results)

    return results, {"robustness": figure}


def kl_breakdown(
    runs: Sequence[Run],
    num_samples=1000,
    num_examples=0,
    chunk_size=100,
    seed=0,
    jit=True,
    **_,
):
    """Fig. 4B: kl_a, kl_z and NLL of each run on its own test episodes."""
    out = {}
    for run in runs:
        res = evaluation.nll_protocol(
            run.model,
            run.data.final_evals,
            num_samples,
            num_examples,
            chunk_size,
            seed,
            jit,
        )
        split = res["test"] if "test" in res else next(iter(res.values()))
        out[str(run.workdir)] = {
            **split,
            "memory_per_class": run.config.data.memory_per_class,
            "step": run.step,
        }

    def figure(path):
        from vma_tf import plotting

        plotting.kl_breakdown_figure(path, out)

    return {"runs": out, "num_samples": num_samples}, {"kl_breakdown": figure}


def classification_protocol(
    run: Run,
    num_samples=10,
    num_examples=0,
    chunk_size=100,
    seed=0,
    settings: Sequence[tuple[int, int]] = ((5, 1), (5, 5), (20, 1), (20, 5)),
    iw_episodes: int = 100,
    jit=True,
    **_,
):
    """N-way k-shot accuracy on test characters (one query per class).

    `num_examples` episodes per setting (default 1000) for q(a|x); the
    importance-weighted form (`num_samples` z-samples per memory entry) runs
    on the first `iw_episodes` of them (0 disables it).
    """
    from vma_tf.data.experiments import episodes, episodic_splits

    c = run.config
    _require(
        run,
        "classification",
        c.model.kind == "vma" and c.data.task == "episodes",
        "an episodic Omniglot VMA run",
    )
    _, test = episodic_splits(c)
    num_episodes = num_examples or 1000
    model = run.model
    q_probs = tf.function(
        lambda x, m, labels, n: classification.address_class_probs(
            model, x, m, labels, n
        ),
        jit_compile=jit,
    )
    iw = classification.ImportanceClassifier(model, max(num_samples, 1), jit=jit)
    results = {}
    for ways, shots in settings:
        make = episodes(
            c,
            test,
            _CLASSIFY_STREAM,
            batch_classes=ways,
            targets_per_class=1,
            memory_per_class=shots,
        )
        labels_m = tf.repeat(tf.range(ways), shots)
        truth = np.arange(ways)
        acc_q, acc_iw = [], []
        for i, ep in enumerate(from_counter(make, 0, num_episodes)):
            p = q_probs(ep["x"], ep["memory"], labels_m, ways)
            acc_q.append(np.mean(np.argmax(p.numpy(), -1) == truth))
            if i < iw_episodes and num_samples > 0:
                p = iw(ep["x"], ep["memory"], labels_m.numpy(), ways, seed=(seed, i))
                acc_iw.append(np.mean(np.argmax(p, -1) == truth))
        key = f"{ways}-way {shots}-shot"
        results[key] = {"q(a|x)": classification.accuracy_interval(acc_q)}
        if acc_iw:
            results[key]["importance_weighted"] = classification.accuracy_interval(
                acc_iw
            )
    return {"settings": results, "iw_samples_per_entry": num_samples}, {}


def _image_hw(run: Run):
    shape = run.data.x_shape
    return (28, 28) if len(shape) == 1 else tuple(shape[:2])


def figures(run: Run, seed=0, **_):
    """Learning curves, samples per memory entry (Fig. 2B, 4A) and q(a|x)
    histograms with the top-5 entries (Fig. 3), whichever apply to the run."""
    import json

    from vma_tf import plotting
    from vma_tf.modeling.models import VMA
    from vma_tf.experiment import sample_grid

    figs = {}
    records = [
        json.loads(line)
        for line in (run.workdir / "metrics.jsonl").read_text().splitlines()
        if line.strip()
    ]
    m = run.config.model
    memory_size = None
    if m.kind == "vma":
        memory_size = m.memory_size
    figs["learning_curves"] = lambda path: plotting.learning_curves(
        path, records, memory_size
    )
    hw = _image_hw(run)
    model = run.model
    memory = run.data.sample_memory
    figs["samples"] = lambda path: plotting.save_grid(
        path, sample_grid(model, memory, 8, 9, seed, hw), "rows share one m_a"
    )
    if not isinstance(model, VMA):
        return {"records": len(records)}, figs
    batch = next(iter(next(iter(run.data.final_evals.values()))))
    x, mem = batch["x"][:6], batch.get("memory")
    images_memory = mem if mem is not None else model.memory(None)
    if int(np.prod(images_memory.shape[1:])) == hw[0] * hw[1]:
        q_a, _ = model.address_distributions(x, mem)
        figs["address_histograms"] = lambda path: plotting.address_histograms(
            path,
            np.reshape(x.numpy(), [-1, *hw]),
            np.reshape(np.asarray(images_memory), [-1, *hw]),
            q_a.probs_parameter().numpy(),
        )
    if mem is not None:  # One-shot samples next to their memory entry.
        rows = min(8, int(mem.shape[0]))
        addr = tf.repeat(tf.range(rows), 8)
        samples = model.sample(addr, mem, seed=tf.constant([seed, 4]))
        samples = np.reshape(samples.numpy(), [rows, 8, *hw])
        entries = np.reshape(mem.numpy()[:rows], [rows, *hw])
        figs["entry_samples"] = lambda path: plotting.entry_samples(
            path, entries, samples, "memory entry | samples of p(x|m_a)"
        )
    return {"records": len(records)}, figs


def large_memory_images(size: int, data_dir=None) -> np.ndarray:
    """`[size, 784]` float32 0/1 MNIST images for a very large memory.

    The 70 000 binarized MNIST images (train, valid, test) first, then the
    MNIST training images (tfds `mnist`, IDX-file order) binarized at 0.5 (a
    different binarization of some of the same digits), up to 130 000 images.
    """
    from vma_tf.data.mnist import load_binarized_mnist, load_mnist_train_images

    parts = [load_binarized_mnist(s, data_dir) for s in ("train", "valid", "test")]
    have = sum(len(p) for p in parts)
    if size > have:
        extra = load_mnist_train_images(data_dir) > 127
        if size > have + len(extra):
            raise ConfigError(
                f"--memory_size={size}: at most {have + len(extra)} MNIST images"
            )
        parts.append(extra[: size - have])
    out = np.empty([size, 784], np.float32)
    start = 0
    for part in parts:
        take = min(len(part), size - start)
        out[start : start + take] = part[:take]
        start += take
    return out


def large_memory(
    run: Run,
    num_samples=1000,
    num_examples=0,
    chunk_size=100,
    seed=0,
    memory_size=100_000,
    memory_chunk=10_000,
    jit=True,
    **_,
):
    """L_K with a memory of `memory_size` MNIST images (targets from memory).

    The per-entry state is computed in chunks of `memory_chunk` rows, q(a|x)
    is normalised exactly over all entries, and addresses are sampled in two
    exact stages (`sampling.categorical`), so RAM grows with |M| only through
    the per-entry state. `num_examples` targets (default 64) are drawn
    uniformly from the memory.
    """
    import time

    from vma_tf.benchmark import peak_rss_bytes

    c = run.config
    _require(
        run,
        "large_memory",
        c.model.kind == "vma"
        and c.data.dataset == "binarized_mnist"
        and c.model.memory == "episodic",
        "an MNIST VMA run with episodic memory (e.g. mnist_recall)",
    )
    t0 = time.perf_counter()
    memory = tf.convert_to_tensor(large_memory_images(memory_size, c.data.data_dir))
    n = num_examples or 64
    if n > memory_size:
        raise ConfigError(
            f"--num_examples={n} exceeds --memory_size={memory_size} (the "
            "targets are distinct memory images)"
        )
    rng = np.random.default_rng(seed)
    index = rng.choice(memory_size, size=n, replace=False)
    stream = evaluation.StreamedBound(run.model, chunk_size, jit, memory_chunk)
    state = evaluation.memory_state_in_chunks(run.model, memory, memory_chunk)
    batch = c.train.batch_size
    values = {k: [] for k in ("nll_bound", "kl_a", "kl_z", "recon")}
    own = {"q_own_slot": [], "mode_is_own_slot": []}
    t_eval = time.perf_counter()
    for i in range(0, n, batch):
        x = tf.gather(memory, index[i : i + batch])
        res = stream(x, memory, num_samples, seed=(seed, i), state=state)
        for k in values:
            values[k].append(res[k])
        q_a, _ = run.model.address_distributions(x, state=state)
        probs = q_a.probs_parameter().numpy()
        rows = np.arange(len(x))
        own["q_own_slot"].append(probs[rows, index[i : i + batch]].astype(np.float64))
        own["mode_is_own_slot"].append(
            (probs.argmax(-1) == index[i : i + batch]).astype(np.float64)
        )
    wall = time.perf_counter() - t0
    results = {
        **_summary(values),
        **_summary(own),
        "memory_size": memory_size,
        "log_memory_size": math.log(memory_size),
        "num_examples": n,
        "num_samples": num_samples,
        "wall_sec": wall,
        "importance_samples_per_sec": n * num_samples / (time.perf_counter() - t_eval),
        "peak_rss_mb": peak_rss_bytes() / 2**20,
    }
    return results, {}


def address_usage(run: Run, num_examples=0, **_):
    """Slot usage of q(a|x) over test examples (learned or episodic memory).

    `vma_tf.address_health` statistics over the test split (all of it by
    default; `num_examples` caps it, in whole batches): with learned memory
    pooled over all targets, with episodic memory per batch and averaged.
    Reports H(q(a|x)), the entropy of the marginal q̄(a) = E_x q(a|x), their
    difference I(x; a), H(p(a)), the number of slots that are the mode of
    q(a|x) for some x and the share of the most frequent mode (index
    collapse: I(x; a) ≈ 0 and one slot). Binarized MNIST's test file is not
    shuffled (its first 1024 images are far from the split's average), so a
    prefix of the split is not a sample of it: the default is the whole split.
    """
    _require(run, "address_usage", run.config.model.kind == "vma", "a VMA run")
    ds = next(iter(run.data.final_evals.values()))  # The test split.
    if num_examples:
        ds = ds.take(max(1, math.ceil(num_examples / run.config.train.batch_size)))
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
        "slots_used_as_mode": int(stats["slots_as_mode"]),
        "num_examples": seen,
    }, {}


def gradient_variance_protocol(
    run: Run,
    estimators=None,
    num_draws=100,
    seed=0,
    jit=True,
    all_checkpoints=False,
    **_,
):
    """Address-gradient variance of estimators on a fixed model and batch.

    Args:
        run: a VMA run.
        estimators: names from `vma_tf.estimators.ESTIMATORS` (default: all
            the model supports; `"nvil"` needs a run trained with it).
        num_draws: gradient draws per estimator (seeds `(seed, i)`).
        seed: seed of the draws.
        jit: compile the gradient with XLA.
        all_checkpoints: also measure at every checkpoint the run kept
            (`"by_step"`, oldest first: the variance along the training
            curve); the newest is restored again at the end.

    Returns:
        `({estimator: summary, "batch_size", "num_samples", "training_estimator",
        ["by_step": {step: {estimator: summary}}]}, {})`; summaries from
        `gradient_variance.summarize`.
    """
    from vma_tf import estimators as est
    from vma_tf import gradient_variance

    _require(run, "gradient_variance", run.config.model.kind == "vma", "a VMA run")
    if num_draws < 2:
        raise ConfigError(f"--num_draws={num_draws} must be >= 2")
    model = run.model
    if not estimators:
        estimators = [
            e for e in est.ESTIMATORS if e != "nvil" or model.nvil_baseline is not None
        ]
    for name in estimators:
        if name not in est.ESTIMATORS:
            raise ConfigError(
                f"--estimators={name!r} is not allowed; choose from "
                f"{', '.join(est.ESTIMATORS)}"
            )
        if name == "nvil" and model.nvil_baseline is None:
            raise ConfigError(
                "--estimators=nvil needs a run trained with --estimator=nvil (its "
                f"baseline network); {run.workdir} was trained with "
                f"{run.config.model.estimator}"
            )
    split, ds = next(iter(run.data.final_evals.items()))
    batch = next(iter(ds))
    results = {
        "split": split,
        "batch_size": int(batch["x"].shape[0]),
        "num_samples": model.num_samples,
        "training_estimator": run.config.model.estimator,
    }
    measure = lambda: {
        name: gradient_variance.address_gradient_variance(
            model, batch["x"], batch.get("memory"), name, num_draws, seed, jit
        )
        for name in estimators
    }
    results.update(measure())
    if all_checkpoints:
        from vma_tf import checkpointing

        checkpoint = checkpointing.make_checkpoint(model)
        paths = checkpointing._numbered_checkpoints(run.workdir / "checkpoints")
        by_step = {}
        for path in reversed(paths):  # Oldest first.
            checkpointing.restore(checkpoint, path)
            by_step[path.rsplit("-", 1)[1]] = measure()
        checkpointing.restore(checkpoint, paths[0])
        results["by_step"] = by_step
    return results, {}


PROTOCOLS: dict[str, Callable] = {
    "nll": nll,
    "recall_sizes": recall_sizes,
    "gmn_table": gmn_table,
    "robustness": robustness,
    "kl_breakdown": kl_breakdown,
    "classification": classification_protocol,
    "figures": figures,
    "large_memory": large_memory,
    "address_usage": address_usage,
    "gradient_variance": gradient_variance_protocol,
}
