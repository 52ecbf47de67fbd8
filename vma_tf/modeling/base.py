"""`LatentVariableModel`: what the VMA and its baselines share.

Every model implements `compute_terms(x, memory, num_samples, seed)`,
returning the `[K, B]` log importance weights and the diagnostics (`Terms`).
The shared `train_step` only composes: sample a seed, take the estimator's
training terms and surrogate (`estimator_registry`, looked up once), apply
the gradients through the optimizer (a `nonfinite.NonFiniteGuard`, which
records or skips NaN/Inf steps), update metrics. Evaluation (`test_step`,
`call`) always uses the discrete model and the plain K-sample bound L_K,
whatever the training estimator.

Inputs are batches `{"x": [B, *x], "memory": [|M|, *entry]}` (`"memory"` only
for episodic memory).
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import tensorflow as tf

from vma_tf import estimators
from vma_tf.modeling import estimator_registry
from vma_tf.modeling.nonfinite import NonFiniteGuard

METRIC_NAMES = ("loss", "nll_bound", "kl_a", "kl_z", "recon")


class Terms(NamedTuple):
    """Per-example quantities of one K-sample evaluation.

    Attributes:
        log_weights: `[K, B]` log p(x, a_k, z_k) - log q(a_k, z_k | x).
        log_q_a: `[K, B]` log q(a_k | x), or None for a model without addresses.
        kl_a: `[B]` KL(q(a|x) || p(a)), exact over all slots (0 without memory).
        kl_z: `[B]` analytic KL(q(z|x,a_k) || p(z|a_k)), averaged over the K
            sampled addresses.
        recon: `[B]` -log p(x | a_k, z_k) averaged over the K samples.
        addresses: `[K, B]` sampled addresses (or None).
        log_q: `[K, B]` log q(a_k, z_k | x) (the joint of the address and z),
            or None. With `stop_z_gradient=True` it is evaluated at fixed z
            (what reweighted wake-sleep needs).
    """

    log_weights: tf.Tensor
    log_q_a: tf.Tensor | None
    kl_a: tf.Tensor
    kl_z: tf.Tensor
    recon: tf.Tensor
    addresses: tf.Tensor | None = None
    log_q: tf.Tensor | None = None


def _seed(seed) -> tf.Tensor:
    return tf.cast(seed, tf.int32)


def as_seed(seed) -> tf.Tensor:
    """`seed` as an int32 stateless seed `[2]`."""
    return tf.cast(seed, tf.int32)


class LatentVariableModel(keras.Model):
    """Base class: the `train_step` (any estimator) and `test_step`.

    Args:
        num_samples: K.
        baseline: VIMCO baseline, `"arithmetic"` or `"geometric"` (kept for
            old configs: `estimator="vimco"` with `"geometric"` is
            `"vimco_geometric"`).
        seed: seeds the training and evaluation `keras.random.SeedGenerator`s.
        weight_decay: L2 penalty `weight_decay * sum(theta^2)` added to the
            loss for every trainable variable except learned memory.
        estimator: address gradient estimator used in training, one of
            `configs.ESTIMATORS` (models without an address always train
            with the IWAE gradient).
        gumbel_temperature: temperature of the relaxed address (`"gumbel"`).
        straight_through: `"gumbel"` with the hard one-hot address in the
            forward pass and the relaxed gradient (straight-through).
        nvil_baseline: `NVILBaseline` layer, required by `"nvil"`.
    """

    # True for models with a discrete address (the estimator matters).
    has_addresses = False

    def __init__(
        self,
        num_samples: int = 4,
        baseline: str = "arithmetic",
        seed: int = 0,
        weight_decay: float = 0.0,
        estimator: str = "vimco",
        gumbel_temperature: float = 0.5,
        straight_through: bool = False,
        nvil_baseline=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.weight_decay = weight_decay
        # VIMCO's leave-one-out baseline needs K >= 2; without an address the
        # IWAE gradient works with K = 1 (the ELBO).
        least = 2 if self.has_addresses else 1
        if num_samples < least:
            raise ValueError(
                f"num_samples must be >= {least}"
                f"{' for VIMCO' if self.has_addresses else ''}; got {num_samples}"
            )
        self.num_samples = num_samples
        self.baseline = baseline
        self.estimator = estimator_registry.canonical_name(estimator, baseline)
        self._estimator = self._lookup(self.estimator)
        if not gumbel_temperature > 0:
            raise ValueError(
                f"gumbel_temperature must be > 0; got {gumbel_temperature}"
            )
        self.gumbel_temperature = gumbel_temperature
        self.straight_through = straight_through
        self.nvil_baseline = nvil_baseline
        self.seed_generator = keras.random.SeedGenerator(seed, name="train_seed")
        self._eval_seed = seed + 1
        self.eval_seed_generator = keras.random.SeedGenerator(
            self._eval_seed, name="eval_seed"
        )
        # Written by the optimizer (`NonFiniteGuard`); a model variable so
        # that checkpoints hold it.
        self.first_nonfinite_step = keras.Variable(
            -1, dtype="int64", trainable=False, name="first_nonfinite_step"
        )
        # Steps skipped per log window with `skip_nonfinite` (a metric, not a
        # checkpointed variable: checkpoints of runs without it stay loadable).
        self._skipped = keras.metrics.Sum(name="skipped_steps")
        self._trackers = [keras.metrics.Mean(name=n) for n in METRIC_NAMES]

    def run_state(self) -> list:
        """The variables that belong to the run, not to the model: the
        training and evaluation seed streams and the first non-finite step.
        A warm start (`checkpointing.warm_start`) keeps the new run's own, so
        its `--seed` seeds its samples."""
        return [
            self.seed_generator.state,
            self.eval_seed_generator.state,
            self.first_nonfinite_step,
        ]

    # -- subclasses implement -------------------------------------------------
    def compute_terms(
        self,
        x,
        memory=None,
        num_samples=None,
        seed=None,
        addresses=None,
        state=None,
        sample_offset=0,
    ) -> Terms:
        """K-sample log-weights and diagnostics; see `VMA.compute_terms`."""
        raise NotImplementedError

    def memory_state(self, memory=None):
        """Per-memory-entry tensors reusable across calls (None: no memory)."""
        return None

    def pair_state(self, x, state, num_samples=None, rows: int = 0):
        """Per-target and per-(entry, target) tensors of `compute_terms`
        reusable across calls with the same `x` (`compute_terms(pairs=)`);
        None: the model has none (see `VMA.pair_state`)."""
        return None

    # -- shared ---------------------------------------------------------------
    @property
    def head_dtype(self):
        """dtype of x, every distribution and the log-weights: the variable
        dtype, so under `mixed_bfloat16` the networks run in bfloat16 while
        log-probabilities and their sums over pixels stay float32."""
        return self.dtype_policy.variable_dtype

    def _head(self, t):
        return tf.nest.map_structure(lambda u: tf.cast(u, self.head_dtype), t)

    @property
    def metrics(self):
        return [*self._trackers, self._skipped]

    def compile(self, optimizer="rmsprop", **kwargs):
        """`keras.Model.compile`, the optimizer wrapped in a `NonFiniteGuard`.

        Args:
            optimizer: a `NonFiniteGuard` on `first_nonfinite_step`, or any
                optimizer (wrapped in one that records non-finite steps
                without skipping them).
            **kwargs: `keras.Model.compile`'s.
        """
        if not isinstance(optimizer, NonFiniteGuard):
            optimizer = NonFiniteGuard(
                keras.optimizers.get(optimizer), self.first_nonfinite_step
            )
        super().compile(optimizer=optimizer, **kwargs)

    def _lookup(self, estimator=None) -> estimator_registry.GradientEstimator:
        """The registry entry of `estimator` (default: the model's)."""
        if estimator is None:
            return self._estimator
        return estimator_registry.lookup(estimator, self.has_addresses)

    def objective(self, terms: Terms, x=None, estimator=None) -> tf.Tensor:
        """`[B]` training surrogate of `estimator` (default: the model's).

        Its value is L_K of `terms.log_weights` and its gradient the
        estimator's (IWAE for models without an address and for relaxed
        `"gumbel"` terms, which carry no `log_q_a`).

        Args:
            terms: from `compute_terms` (`stop_z_gradient=True` for `"rws"`)
                or `compute_relaxed_terms` (`"gumbel"`).
            x: `[B, *x]` targets (needed by `"nvil"`'s baseline b(x)).
            estimator: one of `configs.ESTIMATORS`.

        Returns:
            `[B]` surrogate to maximise.
        """
        spec = self._lookup(estimator)
        if terms.log_q_a is None:
            return estimators.iwae_bound(terms.log_weights)
        return spec.objective(self, terms, x)

    def training_objective(
        self, terms: Terms, x, estimator=None, update_statistics=True
    ) -> tf.Tensor:
        """`[B]` `objective` of a training step, then the estimator's running
        statistics (NVIL's mean c and variance v) moved towards this batch.

        The learning signal uses the statistics of the batches before. Moved
        first, as in Mnih & Gregor's Algorithm 1, c would depend on this
        batch's addresses, and the expected score term would shrink by
        1 - (1 - alpha) / B: by exact enumeration 20 % at B = 1
        (tests/test_estimators.py).

        Args:
            terms: the step's training terms (`training_terms`).
            x: `[B, *x]` targets.
            estimator: overrides the model's estimator.
            update_statistics: False: leave the statistics as they are.

        Returns:
            `[B]` surrogate to maximise.
        """
        objective = self.objective(terms, x, estimator)
        update = self._lookup(estimator).update_statistics
        if update is not None and update_statistics and terms.log_q_a is not None:
            update(self, terms, x)
        return objective

    @staticmethod
    def _unpack(data):
        if isinstance(data, (tuple, list)):  # Keras may wrap as (x,).
            data = data[0]
        return data["x"], data.get("memory")

    def _update_metrics(self, loss, terms: Terms, finite=None):
        """Updates the running means; a step with `finite == False` (skipped)
        is left out of them."""
        bound = estimators.iwae_bound(terms.log_weights)
        values = (
            loss,
            -tf.reduce_mean(bound),
            tf.reduce_mean(terms.kl_a),
            tf.reduce_mean(terms.kl_z),
            tf.reduce_mean(terms.recon),
        )
        for tracker, value in zip(self._trackers, values):
            if finite is None:
                tracker.update_state(value)
            else:
                tracker.update_state(
                    tf.where(finite, value, tf.zeros_like(value)),
                    sample_weight=tf.cast(finite, value.dtype),
                )
        return {t.name: t.result() for t in self._trackers}

    def no_decay_variables(self) -> list:
        """Variables exempt from weight decay (learned memory)."""
        return []

    def l2_penalty(self) -> tf.Tensor:
        """`sum(theta^2)` over trainable variables except `no_decay_variables`."""
        skip = {id(v) for v in self.no_decay_variables()}
        return tf.add_n(
            [
                tf.reduce_sum(tf.square(v))
                for v in self.trainable_variables
                if id(v) not in skip
            ]
        )

    def training_terms(self, x, memory, seed, estimator=None) -> Terms:
        """The terms `estimator` trains on: relaxed for `"gumbel"`, with
        fixed z for `"rws"`, else the discrete model's `compute_terms`."""
        return self._lookup(estimator).terms(self, x, memory, seed)

    def loss_and_terms(
        self, x, memory, seed, training=True, estimator=None, update_statistics=True
    ):
        """`(loss, terms)`: the negated mean surrogate (plus penalties).

        Args:
            x: `[B, *x]` targets.
            memory: `[|M|, *entry]` or None.
            seed: stateless seed `[2]`.
            training: the estimator's surrogate on its training terms; False:
                the discrete model's L_K (evaluation), whatever the estimator.
            estimator: overrides the model's estimator (e.g. to measure
                another estimator's gradient on this model).
            update_statistics: in training with `"nvil"`, move the running
                mean/variance towards this batch after forming the signal
                (`training_objective`; False: leave them, e.g. to measure
                gradient variance).

        Returns:
            `(loss, terms)`: the `[]` loss to minimise and its `Terms`.
        """
        if not training:
            terms = self.compute_terms(x, memory, self.num_samples, seed)
            objective = estimators.iwae_bound(terms.log_weights)
        else:
            terms = self._lookup(estimator).terms(self, x, memory, seed)
            objective = self.training_objective(terms, x, estimator, update_statistics)
        loss = -tf.reduce_mean(objective)
        if self.weight_decay:
            loss = loss + self.weight_decay * self.l2_penalty()
        if self.losses:
            loss = loss + tf.add_n(self.losses)
        return loss, terms

    @staticmethod
    def _replica_seed(seed):
        """`(seed, R)`. Under a tf.distribute strategy with R > 1 replicas
        (see `vma_tf.distribution.distribute`) each replica folds its id into
        the seed, so the replicas draw different noise."""
        replica = tf.distribute.get_replica_context()
        replicas = replica.num_replicas_in_sync if replica is not None else 1
        if replicas > 1:
            seed = tf.random.experimental.stateless_fold_in(
                as_seed(seed), replica.replica_id_in_sync_group
            )
        return seed, replicas

    def train_step(self, data):
        x, memory = self._unpack(data)
        # With R > 1 replicas the optimizer sums the replicas' gradients, so
        # each replica's loss is scaled by 1/R (the global mean).
        seed, replicas = self._replica_seed(self.seed_generator.next())
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            loss, terms = self.loss_and_terms(x, memory, seed)
            scaled = loss / replicas if replicas > 1 else loss
        grads = tape.gradient(scaled, variables)
        finite = self.optimizer.apply(grads, variables, loss=loss)
        if not self.optimizer.skip_nonfinite:
            return self._update_metrics(loss, terms)
        # Summed over replicas by Keras: each adds 1/R per skipped step.
        skipped = tf.cast(tf.logical_not(finite), tf.float32) / replicas
        self._skipped.update_state(skipped)
        logs = self._update_metrics(loss, terms, finite)
        return {**logs, "skipped_steps": self._skipped.result()}

    def test_step(self, data):
        x, memory = self._unpack(data)
        seed, _ = self._replica_seed(self.eval_seed_generator.next())
        loss, terms = self.loss_and_terms(x, memory, seed, training=False)
        return self._update_metrics(loss, terms)

    def call(self, inputs, training=False):
        """Per-example K-sample bound L_K, `[B]` (evaluation seed stream)."""
        x, memory = self._unpack(inputs)
        terms = self.compute_terms(
            x, memory, self.num_samples, self.eval_seed_generator.next()
        )
        return estimators.iwae_bound(terms.log_weights)

    def reset_eval_seed(self):
        """Restarts the evaluation seed stream (same eval samples every time)."""
        state = self.eval_seed_generator.state
        state.assign(tf.constant([self._eval_seed, 0], state.dtype))
