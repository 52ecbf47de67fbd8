"""`NonFiniteGuard`: an optimizer wrapper that watches for NaN/Inf steps.

In the manner of `keras.optimizers.LossScaleOptimizer`, it wraps the
optimizer that updates the weights and checks every step's gradients (and
loss) before applying them:

* it records the first non-finite step (1-based) in an int64 variable,
  `first_nonfinite_step` (-1: none yet), which training reads to stop with
  `NonFiniteError`;
* with `skip_nonfinite`, a non-finite step applies nothing (weights and Adam
  moments unchanged) and only advances the step counter, so the data
  position stays a function of the step.

Checkpoints are unchanged by the wrapper: its `variables`, `iterations` and
`learning_rate` are the inner optimizer's, and the marker variable is
created by the model (`LatentVariableModel.first_nonfinite_step`), so a
checkpoint holds it where it always has.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def all_finite(grads, loss=None) -> tf.Tensor:
    """`[]` bool: every gradient (None skipped) and `loss`, if given, finite."""
    finite = tf.constant(True) if loss is None else tf.math.is_finite(loss)
    for g in grads:
        if g is not None:
            finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(g)))
    return finite


class NonFiniteGuard(keras.optimizers.Optimizer):
    """Applies the inner optimizer's update only if a step is finite.

    Args:
        inner_optimizer: the `keras.optimizers.Optimizer` that updates the
            variables.
        first_nonfinite_step: int64 scalar `keras.Variable` (-1 initially);
            the first non-finite step is written to it.
        skip_nonfinite: False: every step is applied (a non-finite one only
            recorded; training stops on it). True: a non-finite step applies
            nothing but the step counter.
        name: the wrapper's name.
    """

    def __init__(
        self,
        inner_optimizer: keras.optimizers.Optimizer,
        first_nonfinite_step: keras.Variable,
        skip_nonfinite: bool = False,
        name: str | None = None,
    ):
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = inner_optimizer
        self.skip_nonfinite = skip_nonfinite
        # The model's variable: set past `__setattr__` so that the wrapper
        # does not track it as its own.
        self.__dict__["_first_nonfinite_step"] = first_nonfinite_step

    @property
    def first_nonfinite_step(self) -> keras.Variable:
        """The marker variable: the first non-finite step, or -1."""
        return self._first_nonfinite_step

    def build(self, var_list):
        self.inner_optimizer.build(var_list)
        super().build(var_list)

    @property
    def variables(self):
        return self.inner_optimizer.variables

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        # The base constructor sets 0.0 before `inner_optimizer` exists.
        if "inner_optimizer" in self.__dict__:
            self.inner_optimizer.learning_rate = learning_rate

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    def apply(self, grads, trainable_variables=None, loss=None) -> tf.Tensor:
        """Applies `grads` unless the step is non-finite and skipped.

        Args:
            grads: gradients, one per variable (None entries allowed).
            trainable_variables: the variables (default: those built on).
            loss: the step's `[]` loss; a non-finite loss makes the step
                non-finite even if its gradients are finite.

        Returns:
            `[]` bool, whether the step was finite; the same on every replica
            (a step non-finite on any replica is non-finite on all).
        """
        finite = all_finite(grads, loss)
        replica = tf.distribute.get_replica_context()
        replicas = replica.num_replicas_in_sync if replica is not None else 1
        if replicas > 1:  # Non-finite on any replica: marked on all.
            bad = replica.all_reduce("sum", tf.cast(tf.logical_not(finite), tf.int32))
            finite = tf.equal(bad, 0)
        if self.skip_nonfinite:
            self._apply_if_finite(finite, grads, trainable_variables, replica)
            return finite
        step = tf.cast(self.iterations, tf.int64) + 1
        first = self.first_nonfinite_step
        first.assign(
            tf.where(tf.logical_and(first < 0, tf.logical_not(finite)), step, first)
        )
        self.inner_optimizer.apply(grads, trainable_variables)
        return finite

    def _apply_if_finite(self, finite, grads, variables, replica):
        """Applies `grads` if `finite`, else only advances the step counter.

        With several replicas the condition is taken in cross-replica
        context, as `keras.optimizers.LossScaleOptimizer` does: TF forbids a
        `tf.cond` around the optimizer's cross-replica sync inside the
        replica function.
        """

        def skip():
            self.iterations.assign_add(1)

        if replica is None or replica.num_replicas_in_sync == 1:
            tf.cond(finite, lambda: self.inner_optimizer.apply(grads, variables), skip)
            return

        def cross_replica(strategy, finite, grads):
            def apply():
                strategy.extended.call_for_each_replica(
                    lambda g: self.inner_optimizer.apply(g, variables), args=(grads,)
                )

            ok = strategy.experimental_local_results(finite)[0]
            tf.cond(ok, apply, skip)

        replica.merge_call(cross_replica, args=(finite, grads))

    def get_config(self):
        return {
            "name": self.name,
            "inner_optimizer": keras.optimizers.serialize(self.inner_optimizer),
            "skip_nonfinite": self.skip_nonfinite,
        }
