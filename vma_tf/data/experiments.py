"""`make_data(config)`: the datasets of any experiment config."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from vma_tf.configs import EPISODIC_DATASETS, Config
from vma_tf.data import omniglot
from vma_tf.data.pipelines import (
    ExperimentData,
    epoch_batch_fn,
    eval_batches,
    from_counter,
    mnist_data,
    sequential_batches,
)

_TRAIN_STREAM, _EVAL_STREAM = 0, 1


def episodic_splits(config: Config):
    """`(train, test)` `OmniglotSet`s of an episodic Omniglot config."""
    d = config.data
    load = {
        "omniglot_fewshot": omniglot.load_fewshot26,
        "omniglot_gmn": omniglot.load_gmn28,
        "omniglot_bgeval": omniglot.load_bgeval26,
    }[d.dataset]
    return load(d.data_dir)


def episodes(
    config: Config,
    split: omniglot.OmniglotSet,
    stream: int,
    seed: int | None = None,
    **sizes,
):
    """Episode maker over `split` with the config's episode sizes, overridden
    by `sizes` (`batch_classes`, `targets_per_class`, `memory_per_class`,
    `confounder_classes`, `absent_classes`, `mixed_memory`; the last three are
    off unless given), drawn with `seed` (default: the run's `train.seed`)."""
    d = config.data
    kw = dict(
        batch_classes=d.batch_classes,
        targets_per_class=d.targets_per_class,
        memory_per_class=d.memory_per_class,
        confounder_classes=0,
    )
    kw.update(sizes)
    return omniglot.episode_batch_fn(
        tf.constant(split.images),
        tf.constant(split.alphabet),
        seed=config.train.seed if seed is None else seed,
        stream=stream,
        **kw,
    )


def omniglot_episode_data(config: Config) -> ExperimentData:
    """Few-shot episodes: train characters for training (and their rotations
    with `rotated_classes`), test characters for evaluation (periodic and
    final, 20 fixed episodes by default)."""
    d = config.data
    train, test = episodic_splits(config)
    if d.rotated_classes:
        train = omniglot.with_rotations(train)
    make_train = episodes(
        config,
        train,
        _TRAIN_STREAM,
        confounder_classes=d.confounder_classes,
        absent_classes=d.absent_classes,
        mixed_memory=d.mixed_memory,
    )
    make_test = episodes(config, test, _EVAL_STREAM, seed=d.eval_seed)
    evals = {"test": from_counter(make_test, 0, d.eval_batches or 20)}
    x_shape = tuple(train.images.shape[2:]) + (1,)
    return ExperimentData(
        make_batch=make_train,
        evals=evals,
        final_evals=evals,
        sample_memory=make_test(tf.constant(0, tf.int64))["memory"].numpy(),
        x_shape=x_shape,
    )


def omniglot_learned_data(config: Config) -> ExperimentData:
    """28x28 Omniglot as plain shuffled batches (learned memory or VAE)."""
    train, test = omniglot.load_learned28(config.data.data_dir)
    train, test = train[..., np.newaxis], test[..., np.newaxis]
    t = config.train
    make = epoch_batch_fn(tf.constant(train), t.batch_size, t.seed, _TRAIN_STREAM)
    evals = {"test": eval_batches(test, config)}
    return ExperimentData(
        make_batch=make,
        evals=evals,
        final_evals={"test": sequential_batches(test, t.batch_size)},
        sample_memory=None,
        x_shape=train.shape[1:],
    )


def make_data(config: Config) -> ExperimentData:
    """Datasets for `config`."""
    dataset = config.data.dataset
    if dataset == "binarized_mnist":
        return mnist_data(config)
    if dataset in EPISODIC_DATASETS:
        return omniglot_episode_data(config)
    if dataset == "omniglot_learned":
        return omniglot_learned_data(config)
    raise ValueError(f"unknown dataset {dataset!r}")
