"""The VMA model and the memory-less VAE baseline, with their `train_step`.

Both models implement `compute_terms(x, memory, num_samples, seed)`, returning
the `[K, B]` log importance weights and the diagnostics. The shared
`LatentVariableModel.train_step` only composes: sample a seed, compute the
terms, hand the log-weights to the estimator (`vma_tf.estimators`, chosen by
`estimator`), apply the gradients, update metrics. Evaluation (`test_step`,
`call`) always uses the discrete model and the plain K-sample bound L_K,
whatever the training estimator.

Inputs are batches `{"x": [B, *x], "memory": [|M|, *entry]}` (`"memory"` only
for episodic memory).
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vma_tf import estimators
from vma_tf.modeling import networks, sampling
from vma_tf.modeling.addressing import AddressingHead
from vma_tf.modeling.memory import MemoryBuffer

tfd = tfp.distributions

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
            `estimators.ESTIMATORS` (models without an address always train
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
        if num_samples < (2 if self.has_addresses else 1):
            raise ValueError(
                f"num_samples must be >= {2 if self.has_addresses else 1}"
                f"{' for VIMCO' if self.has_addresses else ''}; got {num_samples}"
            )
        self.num_samples = num_samples
        self.baseline = baseline
        estimators.check_estimator(estimator)
        if estimator == "vimco" and baseline == "geometric":
            estimator = "vimco_geometric"
        self.estimator = estimator
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
        self.first_nonfinite_step = keras.Variable(
            -1, dtype="int64", trainable=False, name="first_nonfinite_step"
        )
        # With `skip_nonfinite` a NaN/Inf step updates nothing and is counted
        # per log window (a metric, not a checkpointed variable: checkpoints
        # of runs made without it stay loadable).
        self.skip_nonfinite = False
        self._skipped = keras.metrics.Sum(name="skipped_steps")
        self._trackers = [keras.metrics.Mean(name=n) for n in METRIC_NAMES]

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

    def objective(self, terms: Terms, x=None, estimator=None) -> tf.Tensor:
        """`[B]` training surrogate of `estimator` (default: the model's).

        Its value is L_K of `terms.log_weights` and its gradient the
        estimator's (IWAE for models without an address and for relaxed
        `"gumbel"` terms, which carry no `log_q_a`).

        Args:
            terms: from `compute_terms` (`stop_z_gradient=True` for `"rws"`)
                or `compute_relaxed_terms` (`"gumbel"`).
            x: `[B, *x]` targets (needed by `"nvil"`'s baseline b(x)).
            estimator: one of `estimators.ESTIMATORS`.

        Returns:
            `[B]` surrogate to maximise.
        """
        estimator = estimators.check_estimator(estimator or self.estimator)
        if terms.log_q_a is None:
            return estimators.iwae_bound(terms.log_weights)
        if estimator in ("vimco", "vimco_geometric"):
            baseline = "geometric" if estimator == "vimco_geometric" else "arithmetic"
            return estimators.vimco_objective(
                terms.log_weights, terms.log_q_a, baseline
            )
        if estimator == "nvil":
            nvil = self._require_nvil()
            return estimators.nvil_objective(
                terms.log_weights,
                terms.log_q_a,
                self._head(nvil(x)),
                nvil.centre,
                nvil.scale(),
            )
        if estimator == "rws":
            if terms.log_q is None:
                raise ValueError("estimator 'rws' needs terms with log_q")
            return estimators.rws_objective(terms.log_weights, terms.log_q)
        raise ValueError(
            "estimator 'gumbel' needs relaxed terms (compute_relaxed_terms)"
        )

    def _require_nvil(self):
        if self.nvil_baseline is None:
            raise ValueError(
                "estimator 'nvil' needs a model built with an NVILBaseline "
                "(ModelConfig.estimator='nvil')"
            )
        return self.nvil_baseline

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
        estimator = estimators.check_estimator(estimator or self.estimator)
        if self.has_addresses and estimator == "gumbel":
            return self.compute_relaxed_terms(x, memory, self.num_samples, seed)
        if self.has_addresses and estimator == "rws":
            return self.compute_terms(
                x, memory, self.num_samples, seed, stop_z_gradient=True
            )
        return self.compute_terms(x, memory, self.num_samples, seed)

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
                mean/variance towards this batch before using them (False:
                use them as they are, e.g. to measure gradient variance).
        """
        if not training:
            terms = self.compute_terms(x, memory, self.num_samples, seed)
            objective = estimators.iwae_bound(terms.log_weights)
        else:
            estimator = estimators.check_estimator(estimator or self.estimator)
            terms = self.training_terms(x, memory, seed, estimator)
            if (
                self.has_addresses
                and estimator == "nvil"
                and update_statistics
                and terms.log_q_a is not None
            ):
                nvil = self._require_nvil()
                nvil.update(
                    *estimators.nvil_signal_statistics(
                        terms.log_weights, self._head(nvil(x))
                    )
                )
            objective = self.objective(terms, x, estimator)
        loss = -tf.reduce_mean(objective)
        if self.weight_decay:
            loss = loss + self.weight_decay * self.l2_penalty()
        if self.losses:
            loss = loss + tf.add_n(self.losses)
        return loss, terms

    @staticmethod
    def _replica_seed(seed):
        """`(seed, replica context, R)`. Under a tf.distribute strategy with
        R > 1 replicas (see `vma_tf.distribution.distribute`) each replica folds
        its id into the seed, so the replicas draw different noise."""
        replica = tf.distribute.get_replica_context()
        replicas = replica.num_replicas_in_sync if replica is not None else 1
        if replicas > 1:
            seed = tf.random.experimental.stateless_fold_in(
                _seed(seed), replica.replica_id_in_sync_group
            )
        return seed, replica, replicas

    def train_step(self, data):
        x, memory = self._unpack(data)
        # With R > 1 replicas the optimizer sums the replicas' gradients, so
        # each replica's loss is scaled by 1/R (the global mean).
        seed, replica, replicas = self._replica_seed(self.seed_generator.next())
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            loss, terms = self.loss_and_terms(x, memory, seed)
            scaled = loss / replicas if replicas > 1 else loss
        grads = tape.gradient(scaled, variables)
        finite = tf.math.is_finite(loss)
        for g in grads:
            if g is not None:
                finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(g)))
        if replicas > 1:  # Non-finite on any replica: marked on all.
            bad = replica.all_reduce("sum", tf.cast(tf.logical_not(finite), tf.int32))
            finite = tf.equal(bad, 0)
        if self.skip_nonfinite:
            self._apply_if_finite(finite, grads, variables, replica, replicas)
            # Summed over replicas by Keras: each adds 1/R per skipped step.
            skipped = tf.cast(tf.logical_not(finite), tf.float32) / replicas
            self._skipped.update_state(skipped)
            logs = self._update_metrics(loss, terms, finite)
            return {**logs, "skipped_steps": self._skipped.result()}
        step = tf.cast(self.optimizer.iterations, tf.int64) + 1
        first = self.first_nonfinite_step
        first.assign(
            tf.where(tf.logical_and(first < 0, tf.logical_not(finite)), step, first)
        )
        self.optimizer.apply(grads, variables)
        return self._update_metrics(loss, terms)

    def _apply_if_finite(self, finite, grads, variables, replica, replicas):
        """Applies `grads` if `finite`, else only advances the step counter
        (weights and Adam moments unchanged; the data position stays a
        function of the step). `finite` is the same on every replica.

        With several replicas the condition is taken in cross-replica context,
        as `keras.optimizers.LossScaleOptimizer` does: TF forbids a `tf.cond`
        around the optimizer's cross-replica sync inside the replica function.
        """

        def skip():
            self.optimizer.iterations.assign_add(1)

        if replicas == 1:
            tf.cond(finite, lambda: self.optimizer.apply(grads, variables), skip)
            return

        def cross_replica(strategy, finite, grads):
            def apply():
                strategy.extended.call_for_each_replica(
                    lambda g: self.optimizer.apply(g, variables), args=(grads,)
                )

            ok = strategy.experimental_local_results(finite)[0]
            tf.cond(ok, apply, skip)

        replica.merge_call(cross_replica, args=(finite, grads))

    def test_step(self, data):
        x, memory = self._unpack(data)
        seed, _, _ = self._replica_seed(self.eval_seed_generator.next())
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


# Where `VMA.compute_terms` runs the z part's per-entry nets: "auto" (on
# the K B addressed entries when |M| > K B, else once per entry), or forced.
ENTRY_WORK = ("auto", "per_entry", "per_sample")


class VMA(LatentVariableModel):
    """Variational Memory Addressing (paper eq. 1-3).

    p(x|M) = sum_a p(a|M) ∫ p(z|m_a) p(x|z, m_a) dz, with
    q(a, z|M, x) = q(a|M, x) q(z|m_a, x).

    Per-memory-entry work is computed once per call, never per sample. The
    addressing part — embeddings e_a and prior logits — runs on all |M|
    entries (q(a|x) is normalised over them). The z part — p(z|m_a)
    parameters, m's pyramid and the memory halves of the q(z|.) and p(x|.)
    layers (`entry_features`) — runs on all |M| entries and is gathered by
    the sampled addresses when |M| <= K B, and on the K B addressed entries
    only when |M| > K B (`entry_work="auto"`): the same function and
    gradients, at a cost that stops growing with |M| beyond K B.

    Args:
        memory: `MemoryBuffer` (learned or episodic).
        addressing: `AddressingHead` for q(a|x) and p(a).
        prior_net: network `[|M|, *entry]` -> `[|M|, 2 Z]` for p(z|m_a).
        encoder: `ConditionalMLP` for q(z|x, m_a), output `2 Z`.
        decoder: `ConditionalMLP` for p(x|z, m_a), output = logits of x.
        x_event_ndims: number of event dims of x (1 for flat images).
        memory_net: optional feature network applied once to every memory
            entry (the conv pyramid); `prior_net` and
            `decoder.memory_features` then receive its output instead of the
            raw entries.

    `encoder` and `decoder` implement `memory_features(...)` (per-entry
    tensors, any nest; the encoder's from the raw entries) and
    `call(input, gathered_features)`.

    For the `"gumbel"` estimator, `compute_relaxed_terms` replaces the gather
    by a relaxed one-hot address `y` `[K, B, |M|]` contracted with the same
    per-entry tensors (sum_a y_a f(m_a)).
    """

    has_addresses = True

    def __init__(
        self,
        memory: MemoryBuffer,
        addressing: AddressingHead,
        prior_net,
        encoder,
        decoder,
        x_event_ndims: int = 1,
        memory_net=None,
        entry_work: str = "auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if entry_work not in ENTRY_WORK:
            raise ValueError(
                f"entry_work must be one of {ENTRY_WORK}; got {entry_work!r}"
            )
        self.entry_work = entry_work
        self.memory = memory
        self.memory_net = memory_net
        self.addressing = addressing
        self.prior_net = prior_net
        self.encoder = encoder
        self.decoder = decoder
        self.x_event_ndims = x_event_ndims

    def memory_state(self, memory=None) -> dict[str, tf.Tensor]:
        """Per-entry tensors, each `[|M|, ...]`, computed once per step:
        `address_state` and `entry_features` of every entry."""
        state = self.address_state(memory)
        return {**state, **self.entry_features(state["memory"])}

    def address_state(self, memory=None) -> dict[str, tf.Tensor]:
        """The addressing part of `memory_state`: `memory` `[|M|, *entry]`,
        `embeddings` `[|M|, E]` and `prior_logits` `[|M|]`."""
        m = self.memory(memory)
        e = self.addressing.embed_memory(m)
        return {
            "memory": m,
            "embeddings": e,
            "prior_logits": self.addressing.prior_logits(e),
        }

    def entry_features(self, m) -> dict:
        """The z part of `memory_state` for entries `m` `[N, *entry]`:
        `prior_z` `[N, 2 Z]` and the `encoder` and `decoder` per-entry nests
        (`memory_features`), each with leading dim N."""
        features = m if self.memory_net is None else self.memory_net(m)
        return {
            "prior_z": self.prior_net(features),
            "encoder": self.encoder.memory_features(m),
            "decoder": self.decoder.memory_features(features),
        }

    def _per_sample_entries(self, memory, num_samples: int, x) -> bool:
        """Whether `compute_terms` runs `entry_features` on the K B addressed
        entries rather than on all |M| (static shapes; see the class doc)."""
        if self.entry_work != "auto":
            return self.entry_work == "per_sample"
        rows = self.memory.size if memory is None else memory.shape[0]
        batch = x.shape[0]
        return rows is not None and batch is not None and num_samples * batch < rows

    def no_decay_variables(self):
        return list(self.memory.trainable_variables)

    def address_distributions(self, x, memory=None, state=None):
        """Returns `(q_a, p_a)` over the slots of `memory`."""
        state = state or self.memory_state(memory)
        q_a = tfd.Categorical(
            logits=self._head(self.addressing.posterior_logits(state["embeddings"], x))
        )
        p_a = tfd.Categorical(logits=self._head(state["prior_logits"]))
        return q_a, p_a

    def compute_terms(
        self,
        x,
        memory=None,
        num_samples=None,
        seed=None,
        addresses=None,
        state=None,
        sample_offset=0,
        stop_z_gradient=False,
    ) -> Terms:
        """K-sample log-weights and diagnostics.

        Args:
            x: `[B, *x]` targets (0/1 floats).
            memory: `[|M|, *entry]` episodic contents (None for learned memory).
            num_samples: K.
            seed: stateless seed `[2]`; same seed => same samples.
            addresses: optional `[K, B]` int addresses to use instead of sampling
                from q(a|x) (exact enumeration in tests).
            state: `memory_state(memory)` computed before, to reuse the
                per-entry work across calls (evaluation in chunks).
            sample_offset: index of the first of these K samples in a longer
                draw with the same seed: chunks [k0, k0 + k) of one draw
                reproduce the unchunked draw exactly.
            stop_z_gradient: treat z as a fixed sample (no reparameterised
                gradient; for reweighted wake-sleep). Values are unchanged.

        Returns:
            `Terms`.
        """
        num_samples = num_samples or self.num_samples
        per_sample = state is None and self._per_sample_entries(memory, num_samples, x)
        if per_sample:
            state = self.address_state(memory)
        x, state, q_a, p_a, seed_a, seed_z = self._address_inputs(
            x, memory, state, seed
        )
        if addresses is None:
            addresses = sampling.sample(q_a, seed_a, [num_samples], sample_offset)
        # log q(a_k|x), log p(a_k): normalised once per target and gathered,
        # not broadcast to [K, B, |M|] as `Categorical.log_prob` would.
        log_q_all = tf.nn.log_softmax(q_a.logits_parameter())  # [B, |M|]
        log_q_a = tf.transpose(
            tf.gather(log_q_all, tf.transpose(addresses), batch_dims=1)
        )  # [K, B]
        log_p_a = tf.gather(tf.nn.log_softmax(p_a.logits_parameter()), addresses)
        gather = lambda t: tf.nest.map_structure(  # [K, B, ..]
            lambda u: tf.gather(u, addresses), t
        )
        if per_sample:  # The z part's nets on the K B addressed entries.
            features = self.entry_features(
                tf.gather(state["memory"], tf.reshape(addresses, [-1]))
            )
            unflatten = lambda u: tf.reshape(
                u, tf.concat([tf.shape(addresses), tf.shape(u)[1:]], 0)
            )
            state = {**state, **tf.nest.map_structure(unflatten, features)}
            gather = lambda t: t
        return self._terms_given_addresses(
            x,
            state,
            gather,
            (q_a, p_a),
            (log_p_a, log_q_a),
            seed_z,
            sample_offset,
            stop_z_gradient,
            addresses,
            log_q_a,
        )

    def _address_inputs(self, x, memory, state, seed):
        """What the discrete and the relaxed terms both start from.

        Returns:
            `(x, state, q_a, p_a, seed_a, seed_z)`: `x` in the head dtype,
            the per-entry state (`memory_state(memory)` unless given), q(a|x)
            and p(a), and the seeds of the address and of z (one stateless
            split of `seed`).
        """
        x = tf.cast(x, self.head_dtype)
        if state is None:
            state = self.memory_state(memory)
        q_a, p_a = self.address_distributions(x, state=state)
        seed_a, seed_z = tf.unstack(
            tf.random.experimental.stateless_split(_seed(seed), 2)
        )
        return x, state, q_a, p_a, seed_a, seed_z

    def _terms_given_addresses(
        self,
        x,
        state,
        select,
        address_dists,
        address_log_probs,
        seed_z,
        sample_offset,
        stop_z_gradient,
        addresses,
        log_q_a,
    ) -> Terms:
        """The z part of the terms, given how entries are selected.

        `select` maps a nest of per-entry tensors `[|M|, ...]` to `[K, B, ...]`
        (a gather, or a relaxed mixture); `address_log_probs` =
        `(log p(a_k), log q(a_k|x))` `[K, B]` enter the log-weights.
        """
        q_a, p_a = address_dists
        log_p_a, log_q_a_term = address_log_probs
        q_z = networks.gaussian(self._head(self.encoder(x, select(state["encoder"]))))
        p_z = networks.gaussian(self._head(select(state["prior_z"])))
        z = sampling.sample(q_z, seed_z, (), sample_offset)  # [K, B, Z]
        if stop_z_gradient:
            z = tf.stop_gradient(z)
        logits = self._head(self.decoder(z, select(state["decoder"])))
        log_px = networks.bernoulli(logits, self.x_event_ndims).log_prob(x)
        log_q_z = q_z.log_prob(z)
        log_weights = log_px + p_z.log_prob(z) - log_q_z + log_p_a - log_q_a_term
        return Terms(
            log_weights=log_weights,
            log_q_a=log_q_a,
            kl_a=tfd.kl_divergence(q_a, p_a),
            kl_z=tf.reduce_mean(tfd.kl_divergence(q_z, p_z), axis=0),
            recon=-tf.reduce_mean(log_px, axis=0),
            addresses=addresses,
            log_q=log_q_a_term + log_q_z,
        )

    def relaxed_addresses(self, logits, num_samples, seed, temperature):
        """Gumbel-softmax sample: log y `[K, B, |M|]` and argmax y `[K, B]`.

        log y = log_softmax((logits + G) / temperature) with the same Gumbel
        noise G as `sampling.categorical(logits, K, seed)`, so argmax y is
        exactly the address the discrete model samples with this seed (below
        `sampling.HIERARCHICAL_MIN_CATEGORIES` slots; above, the discrete
        sampler draws in two stages and the relaxation still uses one
        Gumbel per slot).
        (Sampled here rather than by `tfd.ExpRelaxedOneHotCategorical.sample`
        for noise that is identical with and without XLA.)
        """
        shape = tf.concat([[num_samples], tf.shape(logits)], axis=0)
        u = sampling.uniform(shape, seed, logits.dtype)
        perturbed = logits + -tf.math.log(-tf.math.log(u))
        hard = tf.argmax(perturbed, axis=-1, output_type=tf.int32)
        return tf.nn.log_softmax(perturbed / temperature, axis=-1), hard

    def compute_relaxed_terms(
        self,
        x,
        memory=None,
        num_samples=None,
        seed=None,
        temperature=None,
        straight_through=None,
        state=None,
    ) -> Terms:
        """K-sample terms of the relaxed model (the `"gumbel"` estimator).

        The address is a relaxed one-hot y ~ Concrete(q(a|x), temperature)
        (Gumbel-softmax); every per-entry tensor f(m_a) is replaced by
        sum_a y_a f(m_a). The address part of the log-weight is
        log p_tau(y) - log q_tau(y) with the Concrete densities of the prior
        and the posterior (`tfd.ExpRelaxedOneHotCategorical`, evaluated at
        log y). With `straight_through`, the forward pass uses the hard
        one-hot of argmax y (the discrete model's sample and log-weights,
        log p(a) - log q(a|x) for the address) and the gradient flows through
        the relaxed y.

        Args:
            x: `[B, *x]` targets.
            memory: `[|M|, *entry]` episodic contents (None for learned memory).
            num_samples: K.
            seed: stateless seed `[2]` (split as in `compute_terms`).
            temperature: relaxation temperature (default: the model's).
            straight_through: default: the model's.
            state: precomputed `memory_state(memory)`.

        Returns:
            `Terms` with `log_q_a=None` (no score function), `addresses` the
            hard addresses argmax y, `kl_a` the exact discrete KL.
        """
        num_samples = num_samples or self.num_samples
        temperature = temperature or self.gumbel_temperature
        if straight_through is None:
            straight_through = self.straight_through
        x, state, q_a, p_a, seed_a, seed_z = self._address_inputs(
            x, memory, state, seed
        )
        logits = q_a.logits_parameter()  # [B, |M|]
        log_q_all = tf.nn.log_softmax(logits)
        log_p_all = tf.nn.log_softmax(p_a.logits_parameter())  # [|M|]
        log_y, hard = self.relaxed_addresses(logits, num_samples, seed_a, temperature)
        if straight_through:
            soft = tf.exp(log_y)
            y = tf.one_hot(hard, tf.shape(logits)[-1], dtype=soft.dtype)
            y = y + (soft - tf.stop_gradient(soft))  # Forward: exactly one-hot.
            log_p_a = tf.reduce_sum(y * log_p_all, axis=-1)
            log_q_a = tf.reduce_sum(y * log_q_all, axis=-1)
        else:
            y = tf.exp(log_y)
            t = tf.cast(temperature, log_y.dtype)
            concrete = lambda lg: tfd.ExpRelaxedOneHotCategorical(t, logits=lg)
            log_p_a = concrete(log_p_all).log_prob(log_y)
            log_q_a = concrete(log_q_all).log_prob(log_y)
        mix = lambda t: tf.nest.map_structure(  # [K, B, ..]
            lambda u: tf.tensordot(tf.cast(y, u.dtype), u, axes=[[2], [0]]), t
        )
        return self._terms_given_addresses(
            x,
            state,
            mix,
            (q_a, p_a),
            (log_p_a, log_q_a),
            seed_z,
            0,
            False,
            hard,
            None,
        )

    def sample(self, addresses, memory=None, seed=None):
        """Bernoulli means of p(x|z, m_a) with z ~ p(z|m_a) for given addresses.

        Args:
            addresses: `[N]` int slots.
            memory: `[|M|, *entry]` episodic contents (None for learned memory).
            seed: stateless seed `[2]`.

        Returns:
            `[N, *x]` pixel probabilities.
        """
        state = self.memory_state(memory)
        gather = lambda t: tf.nest.map_structure(lambda u: tf.gather(u, addresses), t)
        z = sampling.sample(networks.gaussian(gather(state["prior_z"])), _seed(seed))
        return tf.sigmoid(self.decoder(z, gather(state["decoder"])))

    def sample_prior_addresses(self, num, memory=None, seed=None):
        """`[num]` addresses a ~ p(a)."""
        state = self.memory_state(memory)
        return tfd.Categorical(logits=state["prior_logits"]).sample(
            num, seed=_seed(seed)
        )


class VAE(LatentVariableModel):
    """The memory-less baseline: p(z) = N(0, I), q(z|x), p(x|z).

    Uses the same encoder/decoder networks as `VMA` without the memory half, and
    the IWAE gradient (there is no discrete latent).
    """

    def __init__(
        self, encoder, decoder, latent_dim: int, x_event_ndims: int = 1, **kwargs
    ):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.latent_dim = latent_dim
        self.x_event_ndims = x_event_ndims

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
        num_samples = num_samples or self.num_samples
        x = tf.cast(x, self.head_dtype)
        q_z = networks.gaussian(self._head(self.encoder(x)))  # [B]
        p_z = networks.standard_gaussian(self.latent_dim, x.dtype)
        z = sampling.sample(q_z, _seed(seed), [num_samples], sample_offset)
        logits = self._head(self.decoder(z))
        log_px = networks.bernoulli(logits, self.x_event_ndims).log_prob(x)
        log_weights = log_px + p_z.log_prob(z) - q_z.log_prob(z)
        batch = tf.shape(x)[:1]
        return Terms(
            log_weights=log_weights,
            log_q_a=None,
            kl_a=tf.zeros(batch, x.dtype),
            kl_z=tfd.kl_divergence(q_z, p_z),
            recon=-tf.reduce_mean(log_px, axis=0),
        )

    def sample(self, num, seed=None):
        """`[num, *x]` pixel probabilities with z ~ N(0, I)."""
        z = networks.standard_gaussian(self.latent_dim, self.compute_dtype).sample(
            num, seed=_seed(seed)
        )
        return tf.sigmoid(self.decoder(z))


class SoftAttentionVAE(LatentVariableModel):
    """Soft-attention memory baseline (paper section 4.2, Fig. 1A).

    z is the top-level latent: p(z) = N(0, I), q(z|x); attention weights
    w(z) = softmax_a S(h(m_a), g(z)) against the memory embeddings, and the
    read-out m(z) = sum_a w_a m_a conditions the decoder exactly where VMA's
    m_a does (through the shared pyramid and the same skip paths). There is
    no discrete latent, so training uses the IWAE gradient.

    Args:
        memory: `MemoryBuffer`.
        memory_embedder: h, `[|M|, *entry]` -> `[|M|, E]`.
        query_net: g, `[..., Z]` -> `[..., E]`.
        similarity: a `NormalizedSimilarity`.
        encoder: q(z|x) network (memory-less `ConvEncoder`/`MLP`), `2 Z` outputs.
        memory_net: feature network applied to m(z) (the shared pyramid).
        decoder: conditional decoder taking `memory_features(memory_net(m))`.
        latent_dim: Z.
        x_event_ndims: event dims of x.
    """

    def __init__(
        self,
        memory: MemoryBuffer,
        memory_embedder,
        query_net,
        similarity,
        encoder,
        memory_net,
        decoder,
        latent_dim: int,
        x_event_ndims: int = 3,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.memory = memory
        self.memory_embedder = memory_embedder
        self.query_net = query_net
        self.similarity = similarity
        self.encoder = encoder
        self.memory_net = memory_net
        self.decoder = decoder
        self.latent_dim = latent_dim
        self.x_event_ndims = x_event_ndims

    def no_decay_variables(self):
        return list(self.memory.trainable_variables)

    def attention_readout(self, z, m):
        """`m(z)` `[K, B, *entry]` and weights `[K, B, |M|]` for z `[K, B, Z]`."""
        weights = tf.nn.softmax(
            self.similarity(self.memory_embedder(m), self.query_net(z)), axis=-1
        )
        flat_m = tf.reshape(m, [tf.shape(m)[0], -1])
        read = tf.linalg.matmul(weights, flat_m)  # [K, B, D]
        shape = tf.concat([tf.shape(z)[:-1], tf.shape(m)[1:]], 0)
        return tf.reshape(read, shape), weights

    def _decode(self, z, m_z):
        lead = tf.shape(z)[:-1]
        entry_rank = m_z.shape.rank - z.shape.rank + 1
        folded = tf.reshape(m_z, tf.concat([[-1], tf.shape(m_z)[-entry_rank:]], 0))
        features = self.decoder.memory_features(self.memory_net(folded))
        unfold = lambda t: tf.reshape(t, tf.concat([lead, tf.shape(t)[1:]], 0))
        return self.decoder(z, tf.nest.map_structure(unfold, features))

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
        num_samples = num_samples or self.num_samples
        x = tf.cast(x, self.head_dtype)
        m = self.memory(memory)
        q_z = networks.gaussian(self._head(self.encoder(x)))  # [B]
        p_z = networks.standard_gaussian(self.latent_dim, x.dtype)
        z = sampling.sample(q_z, _seed(seed), [num_samples], sample_offset)
        m_z, _ = self.attention_readout(tf.cast(z, m.dtype), m)
        logits = self._head(self._decode(z, m_z))
        log_px = networks.bernoulli(logits, self.x_event_ndims).log_prob(x)
        log_weights = log_px + p_z.log_prob(z) - q_z.log_prob(z)
        return Terms(
            log_weights=log_weights,
            log_q_a=None,
            kl_a=tf.zeros(tf.shape(x)[:1], x.dtype),
            kl_z=tfd.kl_divergence(q_z, p_z),
            recon=-tf.reduce_mean(log_px, axis=0),
        )

    def sample(self, num, memory=None, seed=None):
        """`[num, *x]` pixel probabilities with z ~ N(0, I)."""
        m = self.memory(memory)
        z = sampling.standard_normal(
            [1, num, self.latent_dim], _seed(seed), self.compute_dtype
        )
        m_z, _ = self.attention_readout(z, m)
        return tf.sigmoid(self._decode(z, m_z))[0]
