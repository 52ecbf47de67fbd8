"""Distributed training helpers: strategies, per-replica batches, checks.

A strategy is built from `config.train.strategy` (`make_strategy`), the
global batch is split between replicas (`distribute`): every replica gets a
slice of the targets and the whole (shared) memory, so the union of the
replicas' batches is exactly the single-device batch.
"""

from __future__ import annotations

import os

import tensorflow as tf

from vma_tf.configs import Config, ConfigError
from vma_tf.errors import WorkdirError
from vma_tf.workdir import check_tf_config


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The `tf.distribute` strategy named by `config.train.strategy`.

    Args:
        name: `"default"` (the default one-device strategy), `"mirrored"`
            (`MirroredStrategy` over all local GPUs, or the CPU) or
            `"multi_worker"` (`MultiWorkerMirroredStrategy`; the cluster and
            this task come from `$TF_CONFIG`). `multi_worker` must be created
            before TensorFlow runs any op in the process.

    Returns:
        The strategy.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        check_tf_config(name, os.environ.get("TF_CONFIG"))
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"unknown strategy {name!r}")


def task_info(strategy: tf.distribute.Strategy) -> tuple[str | None, int, bool]:
    """`(task_type, task_id, is_chief)` of this process in `strategy`.

    The chief is task `chief` if the cluster has one, else `worker` 0;
    without a cluster (default / mirrored) the process is the chief.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return None, 0, True
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    chief = task_type == "chief" or (
        task_type == "worker" and task_id == 0 and not has_chief
    )
    return task_type, task_id, chief


def distribute(strategy: tf.distribute.Strategy, dataset: tf.data.Dataset):
    """Splits a dataset of global batches into per-replica batches.

    Replica `r` of `R` gets `x[r * B/R : (r + 1) * B/R]` of every global
    batch and the whole `memory` (memory is shared by the batch, never split),
    so the union of the replicas' batches is exactly the single-device batch.
    Every worker builds the same global batches (a pure function of the step)
    and keeps only its own replicas' slices; no file sharding.

    Args:
        strategy: the strategy; with one replica `dataset` is returned as is.
        dataset: elements `{"x": [B, *x], "memory": [|M|, *entry]}` (memory
            optional), `B` static and divisible by the number of replicas.

    Returns:
        `dataset`, or a `tf.distribute.DistributedDataset` for `model.fit` /
        `model.evaluate`.
    """
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return dataset

    def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        local = ctx.num_replicas_in_sync // ctx.num_input_pipelines
        ds = replica_batches(
            dataset, replicas, ctx.input_pipeline_id * local, local
        ).prefetch(tf.data.AUTOTUNE)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.OFF
        )
        return ds.with_options(options)

    return strategy.distribute_datasets_from_function(dataset_fn)


def replica_batches(
    dataset: tf.data.Dataset, replicas: int, first: int, local: int
) -> tf.data.Dataset:
    """The per-replica batches of replicas `first, ..., first + local - 1`.

    Args:
        dataset: global batches `{"x": [B, *x], "memory": [|M|, *entry]}`.
        replicas: R, the number of replicas in sync (`B % R == 0`).
        first: global id of this input pipeline's first replica.
        local: replicas fed by this input pipeline.

    Returns:
        `local` consecutive elements per global batch, element `j`
        `{"x": [B/R, *x], "memory": [|M|, *entry]}` for replica `first + j`.
    """

    def split(batch):
        x = batch["x"]
        b = int(x.shape[0]) // replicas
        parts = {
            "x": tf.stack(
                [x[(first + j) * b : (first + j + 1) * b] for j in range(local)]
            )
        }
        if "memory" in batch:
            parts["memory"] = tf.stack([batch["memory"]] * local)
        return tf.data.Dataset.from_tensor_slices(parts)

    return dataset.flat_map(split)


def check_same_step(strategy: tf.distribute.Strategy, step: int) -> None:
    """Raises `WorkdirError` on every worker unless all resume at `step`.

    A worker that cannot read the chief's checkpoints would otherwise train
    from other weights (e.g. no shared filesystem). Compares the mean and
    the mean square of the workers' steps (one all-reduce).
    """
    if strategy.num_replicas_in_sync == 1:
        return
    value = tf.constant([step, step * step], tf.float64)
    mean, mean_sq = strategy.reduce(
        "MEAN", strategy.run(lambda: tf.identity(value)), axis=None
    ).numpy()
    if mean != step or mean_sq != step * step:
        raise WorkdirError(
            f"the workers resume from different checkpoints (this one: step "
            f"{step}, mean over workers {mean:g}); every worker must read the "
            "chief's WORKDIR/checkpoints (a shared filesystem)"
        )


def check_batch(config: Config, replicas: int) -> None:
    """Raises `ConfigError` unless the global batch splits between replicas."""
    if config.train.batch_size % replicas:
        raise ConfigError(
            f"--batch_size={config.train.batch_size} must be divisible by the "
            f"{replicas} replicas of --strategy={config.train.strategy}"
        )
