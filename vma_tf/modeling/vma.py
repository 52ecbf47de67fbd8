"""The VMA model: Variational Memory Addressing (paper eq. 1-3).

`VMA.compute_terms` gives the discrete model's `[K, B]` log-weights (an
address a_k ~ q(a|x) and z_k ~ q(z|x, m_a) per sample) and
`compute_relaxed_terms` those of the relaxed model of the `"gumbel"`
estimator; training and evaluation are `LatentVariableModel`'s.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from vma_tf.modeling import networks, sampling
from vma_tf.modeling import pairs as pairs_lib
from vma_tf.modeling.addressing import AddressingHead
from vma_tf.modeling.base import LatentVariableModel, Terms, as_seed
from vma_tf.modeling.memory import MemoryBuffer

tfd = tfp.distributions

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

    def pair_state(
        self, x, state, num_samples=None, rows: int = 0
    ) -> dict[str, tf.Tensor] | None:
        """Per (target, entry) pair work shared by the chunks of a streamed
        bound; see `vma_tf.modeling.pairs.pair_state`."""
        return pairs_lib.pair_state(self, x, state, num_samples, rows)

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
        pairs=None,
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
            pairs: `pair_state(x, state)` computed before (with `state`):
                q(z|x, m_a) and the KL of z are gathered from it by address
                instead of computed per sample (same values).

        Returns:
            `Terms`.
        """
        num_samples = num_samples or self.num_samples
        per_sample = (
            state is None
            and pairs is None
            and self._per_sample_entries(memory, num_samples, x)
        )
        if per_sample:
            state = self.address_state(memory)
        x, state, q_a, p_a, seed_a, seed_z = self._address_inputs(
            x, memory, state, seed, pairs
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
        encoded = None if pairs is None else pairs_lib.gather(pairs, addresses)
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
            encoded,
        )

    def _address_inputs(self, x, memory, state, seed, pairs=None):
        """What the discrete and the relaxed terms both start from.

        Returns:
            `(x, state, q_a, p_a, seed_a, seed_z)`: `x` in the head dtype,
            the per-entry state (`memory_state(memory)` unless given), q(a|x)
            and p(a), and the seeds of the address and of z (one stateless
            split of `seed`). With `pairs` (`pair_state`), x and the logits
            of q(a|x) and p(a) are taken from it.
        """
        if state is None:
            state = self.memory_state(memory)
        if pairs is not None:
            x = pairs["x"]
            q_a = tfd.Categorical(logits=pairs["q_logits"])
            p_a = tfd.Categorical(logits=pairs["p_logits"])
        else:
            x = tf.cast(x, self.head_dtype)
            q_a, p_a = self.address_distributions(x, state=state)
        seed_a, seed_z = tf.unstack(
            tf.random.experimental.stateless_split(as_seed(seed), 2)
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
        encoded=None,
    ) -> Terms:
        """The z part of the terms, given how entries are selected.

        `select` maps a nest of per-entry tensors `[|M|, ...]` to `[K, B, ...]`
        (a gather, or a relaxed mixture); `address_log_probs` =
        `(log p(a_k), log q(a_k|x))` `[K, B]` enter the log-weights.
        `encoded`: optional `(q(z|x, m_a) parameters [K, B, 2 Z], KL of z
        [K, B])` gathered from `pair_state`, instead of running the encoder.
        """
        q_a, p_a = address_dists
        log_p_a, log_q_a_term = address_log_probs
        if encoded is None:
            q_z_params = self._head(self.encoder(x, select(state["encoder"])))
        else:
            q_z_params, kl_z = encoded
        q_z = networks.gaussian(q_z_params)
        p_z = networks.gaussian(self._head(select(state["prior_z"])))
        z = sampling.sample(q_z, seed_z, (), sample_offset)  # [K, B, Z]
        if stop_z_gradient:
            z = tf.stop_gradient(z)
        logits = self._head(self.decoder(z, select(state["decoder"])))
        log_px = networks.bernoulli(logits, self.x_event_ndims).log_prob(x)
        log_q_z = q_z.log_prob(z)
        log_weights = log_px + p_z.log_prob(z) - log_q_z + log_p_a - log_q_a_term
        if encoded is None:
            kl_z = tfd.kl_divergence(q_z, p_z)
        return Terms(
            log_weights=log_weights,
            log_q_a=log_q_a,
            kl_a=tfd.kl_divergence(q_a, p_a),
            kl_z=tf.reduce_mean(kl_z, axis=0),
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
            `[N, *x]` float32 pixel probabilities.
        """
        state = self.memory_state(memory)
        gather = lambda t: tf.nest.map_structure(lambda u: tf.gather(u, addresses), t)
        z = sampling.sample(networks.gaussian(gather(state["prior_z"])), as_seed(seed))
        logits = self.decoder(z, gather(state["decoder"]))
        return tf.sigmoid(tf.cast(logits, tf.float32))  # float32 under bf16 too.

    def sample_prior_addresses(self, num, memory=None, seed=None):
        """`[num]` addresses a ~ p(a)."""
        state = self.memory_state(memory)
        return tfd.Categorical(logits=state["prior_logits"]).sample(
            num, seed=as_seed(seed)
        )
