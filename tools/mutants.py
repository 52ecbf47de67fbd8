"""Mutation harness: plants known bugs one at a time and checks that the
tests meant to catch them fail.

Run on demand (not in CI; a few minutes per mutant on 2 cores):

    .venv/bin/python tools/mutants.py            # every mutant
    .venv/bin/python tools/mutants.py --list     # names, files, tests
    .venv/bin/python tools/mutants.py --only NAME [--only NAME2]

Each mutant copies the repository's files (`git ls-files`: tracked, and new
files not ignored; working-tree versions) to a temporary directory, replaces one exact
snippet of one file, and runs only the mutant's tests there
(`pytest -p no:cacheprovider -x -q -m ""`). A failing test run prints
`killed`; a passing one `survived`; a collection error, timeout or a snippet
that is not found exactly once prints `error`. The exit status is 0 only if
every mutant selected was killed.

The snippets are part of the code's maintenance: a refactor that moves or
rewrites a line must update its mutant here (`tests/test_mutants.py` checks
in the default suite that every snippet still occurs exactly once).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Mutant:
    """One planted bug.

    Attributes:
        name: short identifier (`--only`).
        file: path relative to the repository root.
        original: exact snippet, which must occur exactly once in `file`.
        replacement: what the snippet becomes.
        tests: pytest node ids meant to catch the bug.
    """

    name: str
    file: str
    original: str
    replacement: str
    tests: tuple[str, ...]


VMA = "vma_tf/modeling/vma.py"
BASELINES = "vma_tf/modeling/baselines.py"
NONFINITE = "vma_tf/modeling/nonfinite.py"
TERMS = "tests/test_model_terms.py"
ROBUSTNESS = "vma_tf/protocols/_robustness.py"
FIGURES = "vma_tf/protocols/_figures.py"

MUTANTS = (
    # -- the bugs of issue 15's table ------------------------------------
    Mutant(
        "vma_log_p_a_dropped",
        VMA,
        "log_weights = log_px + p_z.log_prob(z) - log_q_z + log_p_a - log_q_a_term",
        "log_weights = log_px + p_z.log_prob(z) - log_q_z - log_q_a_term",
        (f"{TERMS}::test_vma_terms_match_numpy_reference",),
    ),
    Mutant(
        "restore_without_assert_consumed",
        "vma_tf/checkpointing.py",
        "status.assert_consumed()",
        "status.expect_partial()",
        (
            "tests/test_training.py::test_checkpoint_of_another_model_restores_nothing",
            "tests/test_training.py::test_resume_with_an_edited_config_is_refused",
        ),
    ),
    Mutant(
        "restore_mismatch_not_rolled_back",
        "vma_tf/checkpointing.py",
        "for v, value in zip(variables, before):\n            v.assign(value)",
        "for v, value in zip(variables, before):\n            pass",
        ("tests/test_training.py::test_checkpoint_of_another_model_restores_nothing",),
    ),
    Mutant(
        "recall_targets_not_in_memory",
        "vma_tf/data/pipelines.py",
        '"x": tf.gather(memory, targets),',
        '"x": tf.cast(tf.gather(images, targets), tf.float32),',
        (
            "tests/test_pipelines.py::test_recall_targets_are_their_memory_rows",
            "tests/test_protocols.py::test_recall_sizes",
        ),
    ),
    Mutant(
        "two_stage_group_max",
        "vma_tf/modeling/sampling.py",
        "group_logits = tf.reduce_logsumexp(grouped, axis=-1)",
        "group_logits = tf.reduce_max(grouped, axis=-1)",
        (
            "tests/test_modeling.py::"
            "test_two_stage_categorical_for_large_memory_is_exact_and_chunkable",
        ),
    ),
    Mutant(
        "gradient_finiteness_unchecked",
        NONFINITE,
        "finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(g)))",
        "finite = tf.logical_and(finite, True)",
        (
            "tests/test_training.py::"
            "test_nonfinite_gradient_with_a_finite_loss_stops_training",
        ),
    ),
    Mutant(
        "learning_signals_sign",
        "vma_tf/estimators.py",
        "return bound[tf.newaxis] - loo",
        "return loo - bound[tf.newaxis]",
        (
            "tests/test_properties.py::"
            "test_vimco_is_finite_exact_and_permutation_equivariant",
        ),
    ),
    # -- the bound, the KL terms, gathers, resume, data splits -------------
    Mutant(
        "bound_mean_not_logmeanexp",
        "vma_tf/estimators.py",
        "return tf.reduce_logsumexp(log_weights, axis=0) - tf.math.log(k)",
        "return tf.reduce_mean(log_weights, axis=0)",
        ("tests/test_estimators.py::test_bound_value_is_log_mean_exp",),
    ),
    Mutant(
        "kl_z_arguments_swapped",
        VMA,
        "kl_z = tfd.kl_divergence(q_z, p_z)",
        "kl_z = tfd.kl_divergence(p_z, q_z)",
        (f"{TERMS}::test_vma_terms_match_numpy_reference",),
    ),
    Mutant(
        "kl_a_without_cross_entropy",
        VMA,
        "kl_a=tfd.kl_divergence(q_a, p_a),",
        "kl_a=-q_a.entropy(),",
        (f"{TERMS}::test_vma_terms_match_numpy_reference",),
    ),
    Mutant(
        "soft_attention_softmax_over_targets",
        BASELINES,
        "self.similarity(self.memory_embedder(m), self.query_net(z)), axis=-1",
        "self.similarity(self.memory_embedder(m), self.query_net(z)), axis=-2",
        (f"{TERMS}::test_soft_attention_terms_match_numpy_reference",),
    ),
    Mutant(
        "per_sample_gather_transposed",
        VMA,
        'tf.gather(state["memory"], tf.reshape(addresses, [-1]))',
        'tf.gather(state["memory"], tf.reshape(tf.transpose(addresses), [-1]))',
        (f"{TERMS}::test_vma_terms_match_numpy_reference",),
    ),
    Mutant(
        "log_q_a_gathered_from_first_target",
        VMA,
        "tf.gather(log_q_all, tf.transpose(addresses), batch_dims=1)",
        "tf.gather(log_q_all[0], tf.transpose(addresses))",
        (f"{TERMS}::test_vma_terms_match_numpy_reference",),
    ),
    Mutant(
        "resume_data_from_step_zero",
        "vma_tf/training.py",
        "distribute(model.distribute_strategy, data.train(step)),",
        "distribute(model.distribute_strategy, data.train(0)),",
        ("tests/test_training.py::test_resume_is_exact[mnist_recall]",),
    ),
    Mutant(
        "seed_stream_not_checkpointed",
        "vma_tf/checkpointing.py",
        "model=_variable_map(model.variables, strip_scope=False),",
        "model=_variable_map(\n"
        '            [v for v in model.variables if "seed" not in v.path],\n'
        "            strip_scope=False,\n"
        "        ),",
        ("tests/test_training.py::test_resume_is_exact[mnist_recall]",),
    ),
    Mutant(
        "valid_split_is_test",
        "vma_tf/data/pipelines.py",
        'evals=_eval_sets(config, "valid", valid),',
        'evals=_eval_sets(config, "valid", test),',
        ("tests/test_pipelines.py::test_mnist_splits_come_from_their_own_files",),
    ),
    Mutant(
        "omniglot_train_includes_test_alphabets",
        "vma_tf/data/omniglot_builders.py",
        'self._generate_examples(images, rows, is_test == (split == "test"))',
        'self._generate_examples(images, rows, is_test | (split == "train"))',
        ("tests/test_omniglot_data.py::test_fewshot_split",),
    ),
    Mutant(
        "epoch_position_ignores_batch_size",
        "vma_tf/data/pipelines.py",
        "pos = tf.cast(step, tf.int64) * batch_size + tf.range(",
        "pos = tf.cast(step, tf.int64) + tf.range(",
        (
            "tests/test_pipelines.py::"
            "test_epoch_batches_visit_each_example_once_per_epoch",
        ),
    ),
    Mutant(
        "nvil_centre_decay_reversed",
        "vma_tf/modeling/nvil.py",
        "moved = a * statistic + (1.0 - a) * value",
        "moved = (1.0 - a) * statistic + a * value",
        ("tests/test_estimators.py::test_nvil_running_statistics_update_values",),
    ),
    Mutant(
        "encoder_context_init_ignored",
        "vma_tf/modeling/builders.py",
        'return "zeros" if config.encoder_context_init == "zeros" else "glorot_uniform"',
        'return "glorot_uniform"',
        (
            "tests/test_modeling.py::"
            "test_encoder_context_init_zeros_starts_q_z_as_q_z_given_x",
        ),
    ),
    Mutant(
        "early_stop_not_checkpointed",
        "vma_tf/training.py",
        "or step >= t.steps or self.stopped:",
        "or step >= t.steps:",
        ("tests/test_training.py::test_stop_when_ends_training_at_that_evaluation",),
    ),
    Mutant(
        "patience_counts_from_the_latest_best",
        "vma_tf/time_to_quality.py",
        "best = min(points, key=lambda p: (p[1], p[0]))[0]\n    return best if",
        "best = min(points, key=lambda p: (p[1], -p[0]))[0]\n    return best if",
        (
            "tests/test_time_to_quality.py::test_patience_rule_watches_the_best_evaluation",
        ),
    ),
    Mutant(
        "resumed_run_ignores_its_plateau",
        "vma_tf/training.py",
        "met = _evaluated(log.rows) and bool(stop_when(_periodic(log.rows)))",
        "met = False",
        (
            "tests/test_training.py::"
            "test_patience_ends_training_once_the_bound_stops_improving",
        ),
    ),
    Mutant(
        "time_to_quality_interval_from_step_zero",
        "vma_tf/time_to_quality.py",
        "start = train[-1][0] if train else 0",
        "start = 0",
        (
            "tests/test_time_to_quality.py::"
            "test_first_reaching_evaluation_and_training_time_of_a_resumed_run",
        ),
    ),
    Mutant(
        "time_to_quality_rewind_keeps_old_evaluations",
        "vma_tf/time_to_quality.py",
        "evals = {s: b for s, b in evals.items() if s < step}",
        "pass",
        ("tests/test_time_to_quality.py::test_a_rewound_log_keeps_the_later_history",),
    ),
    Mutant(
        "multi_worker_stop_on_local_signal",
        "vma_tf/training.py",
        "        return bool(number)\n",
        "        return self.signal is not None\n",
        (
            "tests/test_reliability.py::"
            "test_multi_worker_stop_is_decided_by_the_reduced_signal_alone",
        ),
    ),
    Mutant(
        "per_class_targets_from_memory",
        "vma_tf/protocols/_gmn_table.py",
        "drawings[labels, _next_drawing(labels, num_classes, shots)]",
        "drawings[labels, _next_drawing(labels, num_classes, 0)]",
        (
            "tests/test_protocols.py::"
            "test_per_class_split_holds_t_drawings_of_each_character_in_memory",
        ),
    ),
    Mutant(
        "gmn_table_cells_bind_the_last_t",
        "vma_tf/protocols/_gmn_table.py",
        '                batch = {"x": seq[t:], "memory": seq[:t]}\n',
        '                batch = {"x": seq[o.shots[-1] :], "memory": seq[: o.shots[-1]]}\n',
        ("tests/test_protocols.py::test_gmn_table",),
    ),
    Mutant(
        "gmn_sampler_draws_distinct_drawings",
        "vma_tf/protocols/_gmn_table.py",
        "        drawing = rng.integers(0, images.shape[1], size=length)\n",
        "        drawing = rng.permutation(images.shape[1])[:length]\n",
        (
            "tests/test_protocols.py::"
            "test_gmn_sequences_with_replacement_repeat_drawings_as_gmn_draws_them",
        ),
    ),
    Mutant(
        "gmn_table_split_ignored",
        "vma_tf/protocols/_gmn_table.py",
        '{"test": test, "train": train}[o.split].images',
        '{"test": test, "train": train}["test"].images',
        (
            "tests/test_protocols.py::"
            "test_gmn_tables_split_train_draws_the_training_characters",
        ),
    ),
    Mutant(
        "reproduce_takes_a_report_of_other_options",
        "vma_tf/reproduction.py",
        "        if name in recorded and _option_text(recorded[name]) != text:\n",
        "        if False:\n",
        ("tests/test_reproduction.py::test_report_and_skip_rules",),
    ),
    Mutant(
        "reproduce_wants_the_default_options",
        "vma_tf/reproduction.py",
        "        if name in wanted:\n",
        "        if False:\n",
        (
            "tests/test_reproduction.py::test_wanted_options_are_what_evaluate_records_for_the_rows_flags",
        ),
    ),
    Mutant(
        "rotated_classes_ignored",
        "vma_tf/data/experiments.py",
        "    if d.rotated_classes:\n",
        "    if False:\n",
        (
            "tests/test_omniglot_data.py::test_rotated_classes_reach_the_training_episodes_only",
        ),
    ),
    Mutant(
        "final_evaluation_repeats_the_periodic_one",
        "vma_tf/training.py",
        '        and data.evals[r["split"]] is data.final_evals.get(r["split"])\n',
        "        and False\n",
        ("tests/test_training.py::test_run_writes_everything",),
    ),
    Mutant(
        "table1_prior_z_glorot",
        "vma_tf/configs/presets.py",
        '    prior_z_init="standard_normal",\n)',
        '    prior_z_init="glorot",\n)',
        ("tests/test_configs.py::test_omniglot_presets",),
    ),
    Mutant(
        "unused_z_not_warned_in_training",
        "vma_tf/training.py",
        '    return config.data.task != "recall"\n',
        '    return config.data.task == "recall"\n',
        ("tests/test_training.py::test_unused_z_is_not_a_warning_in_recall",),
    ),
    Mutant(
        "unused_z_threshold_inverted",
        "vma_tf/training.py",
        'if warn_unused_z and float(values["kl_z"]) < UNUSED_Z_MAX_KL:',
        'if warn_unused_z and float(values["kl_z"]) > UNUSED_Z_MAX_KL:',
        ("tests/test_training.py::test_unused_z_prints_one_warning_line",),
    ),
    Mutant(
        "finished_run_evaluated_again",
        "vma_tf/training.py",
        "    if finished is not None:\n",
        "    if False:\n",
        (
            "tests/test_training.py::test_rerun_after_completion_leaves_the_run_as_it_is",
            "tests/test_training.py::test_patience_ends_training_once_the_bound_stops_improving",
        ),
    ),
    Mutant(
        "finished_run_trained_past_its_summary",
        "vma_tf/training.py",
        "    if summary is None or summary.get(\"step\") != start_step:\n",
        "    if summary is None:\n",
        (
            "tests/test_training.py::test_rerun_after_completion_leaves_the_run_as_it_is",
        ),
    ),
    Mutant(
        "workers_stop_on_their_own_history",
        "vma_tf/training.py",
        "                self.stopped = self.agreed(bool(self.stop_when(records)))\n",
        "                self.stopped = bool(self.stop_when(records))\n",
        (
            "tests/test_distributed.py::test_patience_stops_every_worker_where_the_chief_s_history_says",
        ),
    ),
    Mutant(
        "resumed_workers_stop_on_their_own_history",
        "vma_tf/training.py",
        "            monitor.stopped = monitor.agreed(met)\n",
        "            monitor.stopped = met\n",
        (
            "tests/test_distributed.py::test_patience_stops_every_worker_where_the_chief_s_history_says",
        ),
    ),
    Mutant(
        "metrics_line_cut_short_is_fatal",
        "vma_tf/metrics_log.py",
        "            if number == lines[-1][0]:\n",
        "            if False:\n",
        ("tests/test_training.py::test_resume_drops_a_last_metrics_line_cut_short",),
    ),
    Mutant(
        "eval_episodes_drawn_with_the_run_seed",
        "vma_tf/data/experiments.py",
        "make_test = episodes(config, test, _EVAL_STREAM, seed=d.eval_seed)",
        "make_test = episodes(config, test, _EVAL_STREAM)",
        (
            "tests/test_omniglot_data.py::"
            "test_evaluation_sets_follow_eval_seed_not_the_run_seed[omniglot_fewshot]",
        ),
    ),
    Mutant(
        "eval_memories_drawn_with_the_run_seed",
        "vma_tf/data/pipelines.py",
        "t.batch_size, d.eval_seed, _EVAL_STREAM)",
        "t.batch_size, t.seed, _EVAL_STREAM)",
        (
            "tests/test_omniglot_data.py::"
            "test_evaluation_sets_follow_eval_seed_not_the_run_seed[mnist_recall]",
        ),
    ),
    Mutant(
        "old_config_evaluated_on_other_sets",
        "vma_tf/configs/schema.py",
        '"eval_seed": d["train"].get("seed", 0),',
        '"eval_seed": 0,',
        (
            "tests/test_configs.py::"
            "test_old_config_json_without_eval_seed_keeps_its_evaluation_sets",
        ),
    ),
    Mutant(
        "tf_config_checked_after_tensorflow",
        "vma_tf/workdir.py",
        '    check_tf_config(config.train.strategy, os.environ.get("TF_CONFIG"))\n',
        "",
        (
            "tests/test_distributed.py::test_tf_config_is_checked_before_tensorflow_loads",
        ),
    ),
    Mutant(
        "mixed_memory_ignored",
        "vma_tf/data/experiments.py",
        "        mixed_memory=d.mixed_memory,\n",
        "",
        (
            "tests/test_omniglot_data.py::test_mixed_memory_reaches_the_training_episodes_only",
        ),
    ),
    Mutant(
        "mixed_memory_over_the_cap",
        "vma_tf/data/omniglot.py",
        "    fits = tf.reduce_all(counts <= cap, axis=-1)  # [R]\n",
        "    fits = tf.reduce_all(counts <= cap + 1, axis=-1)  # [R]\n",
        (
            "tests/test_omniglot_data.py::test_memory_counts_are_uniform_compositions_within_caps",
        ),
    ),
    Mutant(
        "bound_over_swaps_copies_and_fresh",
        "vma_tf/protocols/common.py",
        '        for name, mask in (("copies", copy), ("fresh", ~copy)):\n',
        '        for name, mask in (("copies", ~copy), ("fresh", copy)):\n',
        (
            "tests/test_protocols.py::test_gmn_table_with_replacement_scores_copies_apart",
        ),
    ),
    Mutant(
        "export_version_dir_private",
        "vma_tf/export/archive.py",
        "        os.chmod(tmp, new_mode(0o777))\n",
        "",
        ("tests/test_export.py::test_tf_serving_layout_and_signatures",),
    ),
    Mutant(
        "served_memory_always_one_stage",
        "vma_tf/modeling/sampling.py",
        "            tf.shape(logits)[-1] > HIERARCHICAL_MIN_CATEGORIES,\n",
        "            tf.shape(logits)[-1] < 0,\n",
        ("tests/test_export.py::test_served_large_memory_samples_as_compute_terms",),
    ),
    Mutant(
        "rest_lone_output_unnamed",
        "vma_tf/serving_client.py",
        '        return {SINGLE_OUTPUTS.get(signature, "output"): _array(outputs)}\n',
        '        return {"output": _array(outputs)}\n',
        (
            "tests/test_export.py::test_soft_attention_with_learned_memory_serves_its_memory",
        ),
    ),
    Mutant(
        "integer_inputs_wrapped",
        "vma_tf/serving_client.py",
        "            if array.size and (array.min() < info.min or array.max() > info.max):\n",
        "            if False:\n",
        ("tests/test_export.py::test_integer_inputs_are_never_silently_changed",),
    ),
    Mutant(
        "query_inputs_file_beats_flags",
        "launchers/query.py",
        "        if FLAGS[name].present or name not in inputs:\n",
        "        if name not in inputs:\n",
        ("tests/test_export.py::test_query_launcher_request_body_feeds_the_signature",),
    ),
    Mutant(
        "soft_attention_export_ignores_learned_memory",
        "vma_tf/export/signatures.py",
        '        "soft_attention",\n        SoftAttentionVAE,\n        False,\n',
        '        "soft_attention",\n        SoftAttentionVAE,\n        None,\n',
        (
            "tests/test_export.py::test_soft_attention_with_learned_memory_serves_its_memory",
        ),
    ),
    Mutant(
        "interrupted_trial_only_fails",
        "vma_tf/tuning.py",
        "        except (Interrupted, ConfigError, DataError) as e:\n",
        "        except (ConfigError, DataError) as e:\n",
        (
            "tests/test_tuning.py::test_interrupted_trial_stops_the_search_and_a_rerun_resumes_it",
        ),
    ),
    Mutant(
        "first_trial_not_retried",
        "vma_tf/tuning.py",
        "    tuner.save()\n",
        "",
        (
            "tests/test_tuning.py::test_interrupted_trial_stops_the_search_and_a_rerun_resumes_it",
        ),
    ),
    Mutant(
        "reproduce_trusts_the_log",
        "vma_tf/reproduction.py",
        "    last = checkpoint_step(workdir)\n",
        '    last = max(r["step"] for r in ttq.read_metrics(path))\n',
        (
            "tests/test_reproduction.py::test_a_run_stopped_before_its_last_checkpoint_is_trained_and_evaluated",
        ),
    ),
    Mutant(
        "metrics_reader_fails_on_a_cut_line",
        "vma_tf/time_to_quality.py",
        "            if i == len(lines) - 1:\n",
        "            if False:\n",
        (
            "tests/test_reproduction.py::test_a_run_stopped_before_its_last_checkpoint_is_trained_and_evaluated",
        ),
    ),
    Mutant(
        "driver_signals_not_forwarded",
        "launchers/reproduce.py",
        "    forward = lambda signum, frame: child.send_signal(signum)\n",
        "    forward = signal.SIG_DFL\n",
        (
            "tests/test_reproduction.py::test_a_signal_to_the_driver_reaches_the_training_once_and_is_awaited",
        ),
    ),
    Mutant(
        "unevaluated_split_accepted",
        "vma_tf/time_to_quality.py",
        "        if split not in splits:\n",
        "        if False:\n",
        (
            "tests/test_time_to_quality.py::test_stop_when_refuses_a_split_the_run_does_not_evaluate",
        ),
    ),
    Mutant(
        "state_file_not_repaired",
        "vma_tf/training.py",
        '    checkpointing.repair_state(workdir / "checkpoints")  # Before the manager reads it.\n',
        "",
        (
            "tests/test_training.py::test_resume_and_load_read_the_checkpoints_not_their_state_file",
        ),
    ),
    Mutant(
        "repaired_state_keeps_every_checkpoint",
        "vma_tf/checkpointing.py",
        "        last_preserved_timestamp=0.0,\n",
        "        last_preserved_timestamp=2e9,\n",
        (
            "tests/test_training.py::test_resume_and_load_read_the_checkpoints_not_their_state_file",
        ),
    ),
    Mutant(
        "load_run_trusts_the_state_file",
        "vma_tf/experiment.py",
        "    if checkpointing.newest(directory) is None:\n",
        "    if tf.train.latest_checkpoint(str(directory)) is None:\n",
        (
            "tests/test_training.py::test_resume_and_load_read_the_checkpoints_not_their_state_file",
        ),
    ),
    Mutant(
        "partial_eval_reads_the_first_batches",
        "vma_tf/data/pipelines.py",
        '        seed=d.eval_seed if d.eval_subset == "spread" else None,\n',
        "        seed=None,\n",
        ("tests/test_pipelines.py::test_mnist_splits_come_from_their_own_files",),
    ),
    Mutant(
        "old_config_reads_a_spread_subset",
        "vma_tf/configs/schema.py",
        '        "eval_subset": "first",\n',
        '        "eval_subset": "spread",\n',
        (
            "tests/test_configs.py::test_old_config_json_without_eval_seed_keeps_its_evaluation_sets",
        ),
    ),
    # -- run files readable by others, damaged caches repaired -----------
    Mutant(
        "atomic_write_mode_0600",
        "vma_tf/workdir.py",
        "        os.chmod(tmp, new_mode(0o666))\n",
        "",
        ("tests/test_workdir.py::test_atomic_write_gives_the_mode_of_a_new_file",),
    ),
    Mutant(
        "atomic_write_temp_left_on_failure",
        "vma_tf/workdir.py",
        "            os.unlink(tmp)\n        raise\n",
        "            pass\n        raise\n",
        ("tests/test_workdir.py::test_atomic_write_failure_leaves_no_temporary_file",),
    ),
    Mutant(
        "damaged_decoded_split_not_repaired",
        "vma_tf/data/tfds_data.py",
        "        except _LOAD_ERRORS as exc:\n",
        "        except () as exc:\n",
        (
            "tests/test_data_files.py::test_damaged_decoded_split_is_deleted_and_decoded_again",
        ),
    ),
    Mutant(
        "decoded_split_temp_left_on_failure",
        "vma_tf/data/tfds_data.py",
        "        if tmp is not None:\n",
        "        if False:\n",
        (
            "tests/test_data_files.py::test_decoded_split_is_synced_and_a_failed_write_leaves_nothing",
        ),
    ),
    Mutant(
        "unusable_tfds_cache_traceback",
        "vma_tf/data/tfds_data.py",
        "    except OSError as exc:\n        raise DataError(\n            f\"{root}:",
        "    except () as exc:\n        raise DataError(\n            f\"{root}:",
        ("tests/test_data_files.py::test_cache_that_is_not_a_directory_is_one_line",),
    ),
    Mutant(
        "idx_gz_called_uncompressed",
        "vma_tf/data/tfds_data.py",
        'if name.endswith(".amat.gz") else "content"',
        'if name.endswith(".gz") else "content"',
        (
            "tests/test_data_files.py::test_corrupted_mnist_idx_gz_is_its_content_not_uncompressed",
        ),
    ),
    # -- evaluation protocols: review fixes --------------------------------
    Mutant(
        "own_slot_compared_across_dtypes",
        "vma_tf/classification.py",
        "    same_x = tf.cast(x, tf.float32)\n"
        "    same_memory = tf.cast(memory, tf.float32)\n",
        "    same_x = tf.cast(x, model.head_dtype)\n"
        "    same_memory = tf.cast(memory, model.compute_dtype)\n",
        ("tests/test_protocols.py::test_recall_sizes[mixed_bfloat16]",),
    ),
    Mutant(
        "robustness_reference_on_first_class",
        ROBUSTNESS,
        '    base = a["1"]["nll_bound"]["mean"]  # L(C = 1).\n',
        '    base = a[str(classes[0])]["nll_bound"]["mean"] - math.log(classes[0])\n',
        (
            "tests/test_protocols.py::test_robustness_reference_is_anchored_on_one_character",
        ),
    ),
    Mutant(
        "robustness_classes_above_test_characters",
        ROBUSTNESS,
        "    if max(o.classes) > total or min(o.classes) < 1:\n",
        "    if min(o.classes) < 1:\n",
        (
            "tests/test_protocols.py::test_robustness_reference_is_anchored_on_one_character",
        ),
    ),
    Mutant(
        "robustness_a_targets_past_20_drawings",
        ROBUSTNESS,
        "        per_target = min(o.targets_per_class, drawings - per_class)\n",
        "        per_target = o.targets_per_class\n",
        (
            "tests/test_protocols.py::test_robustness_of_a_run_with_17_examples_per_character",
        ),
    ),
    Mutant(
        "figures_metrics_read_as_plain_json",
        FIGURES,
        "            records = read_metrics(metrics)\n",
        '            records = [__import__("json").loads(line) for line in '
        "metrics.read_text().splitlines() if line.strip()]\n",
        (
            "tests/test_protocols.py::test_figures_reads_metrics_as_time_to_quality_does",
        ),
    ),
    Mutant(
        "figures_samples_fixed_title",
        FIGURES,
        "    title = samples_title(run.config.name, model, memory)\n",
        '    title = "rows share one m_a"\n',
        (
            "tests/test_protocols.py::test_figures_reads_metrics_as_time_to_quality_does",
        ),
    ),
    Mutant(
        "slots_used_as_mode_truncated",
        "vma_tf/protocols/_address_usage.py",
        'float(stats["slots_as_mode"])',
        'int(stats["slots_as_mode"])',
        (
            "tests/test_protocols.py::test_address_usage_keeps_the_per_batch_mean_of_slots_used",
        ),
    ),
    Mutant(
        "evaluate_empty_list_flag_accepted",
        "launchers/evaluate.py",
        "        if value is not None and not value:\n",
        "        if False:\n",
        (
            "tests/test_bad_flags.py::test_bad_flags_one_line_exit_2_nothing_written"
            "[evaluate:--workdir={run} --protocol=robustness --classes=]",
        ),
    ),
    Mutant(
        "evaluate_workdir_of_commas_accepted",
        "launchers/evaluate.py",
        "    if not workdirs:\n",
        "    if False:\n",
        (
            "tests/test_bad_flags.py::test_bad_flags_one_line_exit_2_nothing_written"
            "[evaluate:--workdir=,]",
        ),
    ),
    # -- training loop: review fixes --------------------------------------
    Mutant(
        "signal_in_an_evaluation_step_skips_it",
        "vma_tf/training.py",
        '        if batch + 1 < self.params["steps"] and self._signalled():\n',
        "        if self._signalled():\n",
        (
            "tests/test_reliability.py::test_a_signal_in_an_evaluation_step_keeps_its_evaluation",
        ),
    ),
    Mutant(
        "resume_below_steps_accepted",
        "vma_tf/training.py",
        "    if start_step > t.steps:  # Keras would train on without end.\n",
        "    if False:\n",
        (
            "tests/test_training.py::test_resume_with_steps_below_the_checkpoint_is_one_line",
        ),
    ),
    Mutant(
        "finished_run_reads_orphan_rows",
        "vma_tf/time_to_quality.py",
        '    rows = [r for r in rows if step is None or r.get("step", 0) <= step]\n',
        "",
        (
            "tests/test_time_to_quality.py::test_plateaued_at_reads_the_rows_up_to_the_restored_step",
            "tests/test_training.py::test_finished_run_ignores_rows_past_its_checkpoint",
        ),
    ),
    Mutant(
        "rerun_summary_without_the_last_rows",
        "vma_tf/training.py",
        '        monitor.history.extend(r for r in log.rows if r.get("step") == start_step)\n',
        "        pass\n",
        (
            "tests/test_training.py::test_a_rerun_with_nothing_to_train_summarises_as_the_run_did",
        ),
    ),
    # -- --skip_nonfinite logging ------------------------------------------
    Mutant(
        "all_skipped_interval_logs_zero_bounds",
        "vma_tf/training.py",
        '        if round(float(logs.get("skipped_steps", 0))) >= step - self._epoch_start:\n',
        "        if False:\n",
        ("tests/test_training.py::test_skip_nonfinite_changes_nothing_and_counts",),
    ),
    Mutant(
        "signal_row_reads_replica_local_metrics",
        "vma_tf/training.py",
        "            logs = {k: result[k] for k in logs}\n",
        "",
        ("tests/test_distributed.py::test_skip_nonfinite_with_two_replicas",),
    ),
    Mutant(
        "old_run_refused_with_its_own_command",
        "vma_tf/workdir.py",
        "    config = dataclasses.replace(config, data=dataclasses.replace(config.data, **keep))\n",
        "",
        (
            "tests/test_workdir.py::test_a_run_older_than_the_evaluation_fields_resumes_with_its_own_command",
        ),
    ),
    Mutant(
        "training_ignores_the_resumed_config",
        "vma_tf/training.py",
        "    config, workdir = preflight(config, workdir)\n",
        "    _, workdir = preflight(config, workdir)\n",
        (
            "tests/test_training.py::test_a_run_older_than_the_evaluation_fields_keeps_them_when_resumed",
        ),
    ),
    Mutant(
        "nvil_statistics_moved_before_the_signal",
        "vma_tf/modeling/base.py",
        "        objective = self.objective(terms, x, estimator)\n"
        "        update = self._lookup(estimator).update_statistics\n"
        "        if update is not None and update_statistics and terms.log_q_a is not None:\n"
        "            update(self, terms, x)\n",
        "        update = self._lookup(estimator).update_statistics\n"
        "        if update is not None and update_statistics and terms.log_q_a is not None:\n"
        "            update(self, terms, x)\n"
        "        objective = self.objective(terms, x, estimator)\n",
        (
            "tests/test_estimators.py::test_nvil_as_trained_is_unbiased_by_exact_enumeration",
        ),
    ),
    # -- bad input found by review: one line, nothing written -----------------
    Mutant(
        "config_json_values_untyped",
        "vma_tf/configs/schema.py",
        "        if not ok:\n            raise ConfigError(",
        "        if False:\n            raise ConfigError(",
        (
            "tests/test_configs.py::test_config_json_of_other_types_is_refused_naming_the_field",
        ),
    ),
    Mutant(
        "nan_passes_a_minimum",
        "vma_tf/configs/validation.py",
        "    if not value >= minimum or not math.isfinite(value):  # NaN: not >=.\n",
        "    if value < minimum:\n",
        (
            "tests/test_bad_flags.py::test_bad_flags_one_line_exit_2_nothing_written[train:--weight_decay=nan]",
        ),
    ),
    Mutant(
        "evaluate_out_checked_after_the_evaluation",
        "launchers/evaluate.py",
        '        check_output_dir("--out" if FLAGS.out else "--workdir", out)\n',
        "        pass\n",
        (
            "tests/test_bad_flags.py::test_bad_flags_one_line_exit_2_nothing_written[evaluate:--workdir={run} --out={run}/config.json]",
        ),
    ),
    Mutant(
        "query_timeout_nan_accepted",
        "launchers/query.py",
        "    if not (math.isfinite(FLAGS.timeout) and FLAGS.timeout > 0):\n",
        "    if FLAGS.timeout <= 0:\n",
        ("tests/test_export.py::test_query_launcher_bad_flags_give_one_line",),
    ),
    Mutant(
        "query_labels_cast_to_int32",
        "launchers/query.py",
        "        return np.array(labels, np.int64)\n",
        "        return np.array(labels, np.int32)\n",
        ("tests/test_export.py::test_query_launcher_bad_flags_give_one_line",),
    ),
    Mutant(
        "reproduce_lr_drop_checked_by_each_training",
        "launchers/reproduce.py",
        '                fail(f"run {t.name}: {e}")\n',
        "                pass\n",
        (
            "tests/test_bad_flags.py::test_bad_flags_one_line_exit_2_nothing_written[reproduce:--action=run --rows=fewshot --lr_drop_step=150 --runs_dir={new}]",
        ),
    ),
    # -- reported numbers found by review --------------------------------------
    Mutant(
        "relative_variance_over_the_plugin_mean",
        "vma_tf/gradient_variance.py",
        '        "relative_variance": ratio(unbiased),\n',
        '        "relative_variance": ratio(mean_sq_norm),\n',
        (
            "tests/test_estimators.py::test_relative_variance_is_not_capped_by_the_number_of_draws",
        ),
    ),
    Mutant(
        "one_log_ceiling_for_every_split",
        "vma_tf/plotting.py",
        '    sizes = {int(r["memory_size"]) for r in records if r.get("memory_size")}\n',
        "    sizes = set()\n",
        (
            "tests/test_protocols.py::test_learning_curves_bound_kl_a_by_each_split_s_own_memory",
        ),
    ),
    Mutant(
        "legacy_field_kept_on_the_first_resume_only",
        "vma_tf/workdir.py",
        "        if getattr(old.data, k) == legacy\n",
        '        if k not in raw["data"]\n',
        (
            "tests/test_training.py::test_a_run_older_than_the_evaluation_fields_keeps_them_when_resumed",
        ),
    ),
    Mutant(
        "documented_flag_renamed",
        "launchers/evaluate.py",
        '    "num_examples",\n',
        '    "num_targets",\n',
        ("tests/test_docs.py::test_documented_launcher_commands_use_flags_that_exist",),
    ),
    Mutant(
        "documented_tool_flag_renamed",
        "tools/budget_curves.py",
        'parser.add_argument("--run",',
        'parser.add_argument("--runs",',
        ("tests/test_docs.py::test_documented_make_targets_rows_and_tool_flags_exist",),
    ),
    Mutant(
        "warm_start_loads_nothing",
        "vma_tf/checkpointing.py",
        "        checkpoint.restore(path).expect_partial().assert_existing_objects_matched()\n",
        "        tf.no_op()\n",
        (
            "tests/test_training.py::test_warm_start_copies_the_model_and_starts_a_fresh_optimizer",
        ),
    ),
    Mutant(
        "nvil_baseline_regression_sign",
        "vma_tf/estimators.py",
        "    regression = -0.5 * tf.square(residual)",
        "    regression = 0.5 * tf.square(residual)",
        (
            "tests/test_estimators.py::test_nvil_objective_gradients_are_the_signal_and_the_regression",
            "tests/test_estimators.py::test_nvil_baseline_network_regresses_on_the_residual",
        ),
    ),
    Mutant(
        "nvil_baseline_without_gradient",
        "vma_tf/estimators.py",
        "    baseline_value = tf.cast(baseline_value, bound.dtype)\n",
        "    baseline_value = tf.stop_gradient(tf.cast(baseline_value, bound.dtype))\n",
        (
            "tests/test_estimators.py::test_nvil_baseline_network_regresses_on_the_residual",
        ),
    ),
    Mutant(
        "classifier_geometric_mean_of_samples",
        "vma_tf/classification.py",
        "return tf.reduce_logsumexp(lw, axis=1) - math.log(s)  # [e, B]",
        "return tf.reduce_mean(lw, axis=1)  # [e, B]",
        (
            "tests/test_protocols.py::test_log_joint_is_the_log_mean_of_the_entry_s_sample_weights",
        ),
    ),
    Mutant(
        "classifier_chunk_offset_in_entries",
        "vma_tf/classification.py",
        "offset = tf.constant(start * self.samples, tf.int64)",
        "offset = tf.constant(start, tf.int64)",
        (
            "tests/test_protocols.py::test_log_joint_is_the_log_mean_of_the_entry_s_sample_weights",
        ),
    ),
    Mutant(
        "relaxed_address_densities_swapped",
        "vma_tf/modeling/vma.py",
        "            log_p_a = concrete(log_p_all).log_prob(log_y)\n"
        "            log_q_a = concrete(log_q_all).log_prob(log_y)\n",
        "            log_p_a = concrete(log_q_all).log_prob(log_y)\n"
        "            log_q_a = concrete(log_p_all).log_prob(log_y)\n",
        ("tests/test_model_terms.py::test_relaxed_vma_terms_match_numpy_reference",),
    ),
    Mutant(
        "relaxed_features_of_the_first_entry",
        "vma_tf/modeling/vma.py",
        "lambda u: tf.tensordot(tf.cast(y, u.dtype), u, axes=[[2], [0]]), t",
        "lambda u: tf.tensordot(tf.cast(tf.one_hot(tf.zeros_like(hard), tf.shape(y)[-1]), u.dtype), u, axes=[[2], [0]]), t",
        ("tests/test_model_terms.py::test_relaxed_vma_terms_match_numpy_reference",),
    ),
    Mutant(
        "joint_log_q_without_the_address",
        "vma_tf/modeling/vma.py",
        "log_q=log_q_a_term + log_q_z",
        "log_q=log_q_z",
        ("tests/test_model_terms.py::test_vma_terms_match_numpy_reference",),
    ),
    Mutant(
        "replicas_share_one_seed",
        "vma_tf/modeling/base.py",
        "        if replicas > 1:\n            seed = tf.random.experimental.stateless_fold_in(",
        "        if False:\n            seed = tf.random.experimental.stateless_fold_in(",
        (
            "tests/test_distributed.py::test_mirrored_two_local_replicas_equal_two_workers",
        ),
    ),
    Mutant(
        "budget_ignores_steps_past_the_last_evaluation",
        "vma_tf/time_to_quality.py",
        "    if (points[-1][0] if trained_to is None else trained_to) < budget:\n",
        "    if points[-1][0] < budget:\n",
        (
            "tests/test_budget_curves.py::test_budget_table_reads_the_last_evaluation_before_each_budget",
        ),
    ),
    Mutant(
        "docs_command_stops_at_a_continuation",
        "tests/test_docs.py",
        'launchers\\.(\\w+)((?:\\\\\\n|\\[[^\\]\\n]*\\]|[^\\n`;|&>)])*)"',
        'launchers\\.(\\w+)((?:\\[[^\\]\\n]*\\]|[^\\n`;|&>)]|\\\\\\n)*)"',
        (
            "tests/test_docs.py::test_command_patterns_read_continuation_lines_and_make_args",
        ),
    ),
    Mutant(
        "docs_command_stops_at_a_bar_in_brackets",
        "tests/test_docs.py",
        'launchers\\.(\\w+)((?:\\\\\\n|\\[[^\\]\\n]*\\]|[^\\n`;|&>)])*)"',
        'launchers\\.(\\w+)((?:\\\\\\n|[^\\n`;|&>)])*)"',
        (
            "tests/test_docs.py::test_command_patterns_read_continuation_lines_and_make_args",
        ),
    ),
    Mutant(
        "resume_takes_the_presets_lr_drop",
        "vma_tf/workdir.py",
        "    if given is not None:\n        config = _resume_settings(",
        "    if False:\n        config = _resume_settings(",
        (
            "tests/test_workdir.py::test_a_resumable_setting_not_given_keeps_the_runs_value",
        ),
    ),
    Mutant(
        "checkpoints_without_config_resume",
        "vma_tf/workdir.py",
        '        if numbered_checkpoints(workdir / "checkpoints"):\n',
        '        if False:\n',
        (
            "tests/test_workdir.py::test_a_workdir_with_checkpoints_but_no_config_is_refused",
        ),
    ),
    Mutant(
        "finished_rerun_rewrites_config",
        "vma_tf/training.py",
        "    start_step = _restore(model, checkpoint, restore_dir or workdir, t.init_from)\n",
        "    start_step = _restore(model, checkpoint, restore_dir or workdir, t.init_from)\n"
        '    atomic_write(workdir / "config.json", config.to_json() + "\\n")\n',
        (
            "tests/test_training.py::test_rerun_after_completion_leaves_the_run_as_it_is",
        ),
    ),
    Mutant(
        "nll_by_batch_is_per_target",
        "vma_tf/evaluation.py",
        '            "stderr": clustered_stderr(values["nll_bound"]),\n',
        '            "stderr": summary["nll_bound"]["stderr"],\n',
        (
            "tests/test_evaluation.py::test_nll_protocol_reports_the_bounds_standard_error_over_batches",
        ),
    ),
    Mutant(
        "reproduce_skips_a_run_without_its_final_summary",
        "vma_tf/reproduction.py",
        '    if (read_summary(workdir) or {}).get("step") != last:',
        "    if False:",
        (
            "tests/test_reproduction.py::test_a_run_stopped_before_its_last_checkpoint_is_trained_and_evaluated",
        ),
    ),
    Mutant(
        "resume_validated_before_the_runs_settings",
        "vma_tf/workdir.py",
        "    config = configs.validate(check_workdir(workdir, config, given))\n",
        "    config = check_workdir(workdir, config, given)\n",
        (
            "tests/test_workdir.py::test_a_resumed_run_is_validated_with_the_settings_it_keeps",
        ),
    ),
    # -- a run stopped in its final evaluation: trained again, not on -------
    Mutant(
        "resume_ignores_a_met_stop_rule",
        "vma_tf/training.py",
        "        if start_step and stop_when is not None:\n",
        "        if start_step and t.patience:\n",
        (
            "tests/test_training.py::test_a_bound_reached_before_the_restored_step_trains_no_further",
        ),
    ),
    Mutant(
        "stop_rule_reads_a_log_without_evaluations",
        "vma_tf/training.py",
        '    return any(r.get("split") != "train" for r in rows)\n',
        "    return True\n",
        (
            "tests/test_training.py::test_a_bound_reached_before_the_restored_step_trains_no_further",
        ),
    ),
    Mutant(
        "ttq_done_without_the_final_evaluation",
        "vma_tf/time_to_quality.py",
        '    if saved and (read_summary(workdir) or {}).get("step") != saved:\n',
        "    if False:\n",
        (
            "tests/test_time_to_quality.py::test_already_done_needs_the_final_evaluation_at_the_checkpoint",
        ),
    ),
    # -- review of export, tuning and bfloat16 (2026-12-07) -----------------
    Mutant(
        "tuning_failures_drop_the_table",
        "vma_tf/tuning.py",
        "            write_results(tuner, base)\n",
        "            pass\n",
        (
            "tests/test_tuning.py::test_diverging_trials_fail_and_too_many_stop_with_one_line",
        ),
    ),
    Mutant(
        "tune_accepts_a_searched_flag",
        "launchers/tune.py",
        "        if new_search and key in given:\n",
        "        if False:\n",
        ("tests/test_bad_flags.py::test_bad_flags_one_line_exit_2_nothing_written",),
    ),
    Mutant(
        "export_step_from_the_state_file",
        "launchers/export.py",
        "    step = checkpoint_step(workdir)  # Its *.index files, no TensorFlow.\n",
        '    step = (workdir / "checkpoints" / "checkpoint").is_file() and checkpoint_step(workdir)\n',
        ("tests/test_export.py::test_export_launcher_refuses_bad_flags_with_one_line",),
    ),
    Mutant(
        "bf16_samples_stay_bfloat16",
        "vma_tf/modeling/vma.py",
        "        return tf.sigmoid(tf.cast(logits, tf.float32))  # float32 under bf16 too.\n",
        "        return tf.sigmoid(logits)\n",
        (
            "tests/test_evaluation.py::test_mixed_bfloat16_networks_keep_float32_log_weights",
        ),
    ),
    Mutant(
        "bf16_read_from_avx512_alone",
        "vma_tf/hardware.py",
        "    return bool(words & BF16_CPU_FLAGS) if words else None\n",
        '    return any(w.startswith("avx512") or w in BF16_CPU_FLAGS for w in words) if words else None\n',
        ("tests/test_hardware.py::test_cpu_flags_decide_bf16",),
    ),
    Mutant(
        "bf16_warning_every_build",
        "vma_tf/modeling/builders.py",
        "        _warn_if_emulated(policy)\n",
        "        _warn_if_emulated.__wrapped__(policy)\n",
        ("tests/test_hardware.py::test_policy_scope_warns_once_per_process",),
    ),
    Mutant(
        "mnist_final_test_cut_by_eval_batches",
        "vma_tf/data/pipelines.py",
        '            else {"test": sequential_batches(test, t.batch_size)}\n',
        '            else _eval_sets(config, "test", test)\n',
        ("tests/test_pipelines.py::test_mnist_splits_come_from_their_own_files",),
    ),
    Mutant(
        "mnist_sample_memory_from_the_run_seed",
        "vma_tf/data/pipelines.py",
        "        rng = np.random.default_rng([d.eval_seed, _SAMPLE_STREAM])\n",
        "        rng = np.random.default_rng(t.seed)\n",
        ("tests/test_pipelines.py::test_mnist_recall_sample_memory_follows_eval_seed",),
    ),
    Mutant(
        "benchmark_ignores_config_precision",
        "launchers/benchmark.py",
        '                "train.precision": "is not used by launchers.benchmark: give "\n',
        '                "train.unused": "is not used by launchers.benchmark: give "\n',
        ("tests/test_bad_flags.py::test_bad_flags_one_line_exit_2_nothing_written",),
    ),
    Mutant(
        "resume_rule_reads_final_rows",
        "vma_tf/training.py",
        "        if key not in seen:\n",
        "        if True:\n",
        (
            "tests/test_training.py::test_a_bound_reached_before_the_restored_step_trains_no_further",
        ),
    ),
    Mutant(
        "ttq_done_reads_rows_past_the_checkpoint",
        "vma_tf/time_to_quality.py",
        '        rows = [r for r in rows if r.get("step", 0) <= saved]\n',
        "        pass\n",
        (
            "tests/test_time_to_quality.py::test_already_done_needs_the_final_evaluation_at_the_checkpoint",
        ),
    ),
    Mutant(
        "recall_accepts_a_model_without_memory",
        "vma_tf/configs/validation.py",
        '    if m.kind != "vma":  # Its memory and test episodes would be dropped unsaid.\n',
        '    if m.kind != "vma":  # Its memory and test episodes would be dropped unsaid.\n        return\n',
        (
            "tests/test_bad_flags.py::test_bad_flags_one_line_exit_2_nothing_written[train:--preset=mnist_recall --config.model.kind=vae]",
        ),
    ),
    Mutant(
        "tune_refuses_searched_flags_of_a_search_in_progress",
        "launchers/tune.py",
        "        if new_search and key in given:\n",
        "        if key in given:\n",
        (
            "tests/test_tuning.py::test_a_search_in_progress_resumes_past_the_searched_flag_refusal",
        ),
    ),
    Mutant(
        "cell_cache_write_error_stops_the_evaluation",
        "vma_tf/protocols/common.py",
        "        except OSError as e:  # Not the evaluation's fault: it goes on.\n",
        "        except ValueError as e:  # Not the evaluation's fault: it goes on.\n",
        (
            "tests/test_protocols.py::test_an_unwritable_cell_cache_warns_once_and_the_evaluation_goes_on",
        ),
    ),
    Mutant(
        "gmn_table_accepts_zero_shots",
        "vma_tf/protocols/_gmn_table.py",
        "    if not 1 <= min(o.shots) <= max(o.shots) < LENGTH:\n",
        "    if not max(o.shots) < LENGTH:\n",
        (
            "tests/test_protocols.py::test_bad_protocol_requests_are_one_line_errors[omniglot-gmn_table-options8-gmn_table shots=0,1: each T]",
        ),
    ),
    Mutant(
        "gmn_table_accepts_more_classes_than_characters",
        "vma_tf/protocols/_gmn_table.py",
        "    if min(o.classes) < 1 or (most is not None and max(o.classes) > most):\n",
        "    if min(o.classes) < 1:\n",
        (
            "tests/test_protocols.py::test_bad_protocol_requests_are_one_line_errors[omniglot-gmn_table-options9-gmn_table classes=1,145: each C must be 1 to 144 (the test split's]",
        ),
    ),
    Mutant(
        "robustness_computes_the_shared_point_twice",
        "vma_tf/protocols/_robustness.py",
        "            if k == per_class and str(total) in a\n",
        "            if False\n",
        ("tests/test_protocols.py::test_robustness_computes_the_shared_point_once",),
    ),
    Mutant(
        "gradient_variance_by_step_stops_at_an_unreadable_checkpoint",
        "vma_tf/protocols/_gradient_variance.py",
        "        except checkpointing.UNREADABLE as e:\n",
        "        except ValueError as e:\n",
        (
            "tests/test_protocols.py::test_gradient_variance_protocol_on_a_restored_nvil_run",
        ),
    ),
    Mutant(
        "resume_check_raises_on_a_split_never_evaluated",
        "vma_tf/training.py",
        "            except ConfigError:  # A split never evaluated: every worker\n"
        "                met = False",
        "            except ZeroDivisionError:  # A split never evaluated: every worker\n"
        "                met = False",
        (
            "tests/test_training.py::"
            "test_a_bound_reached_before_the_restored_step_trains_no_further",
        ),
    ),
    Mutant(
        "mixed_memory_falls_back_to_the_even_split",
        "vma_tf/data/omniglot.py",
        "lambda: _uniform_capped_counts(seed, n, per, cap),",
        "lambda: tf.fill([n], per),",
        (
            "tests/test_omniglot_data.py::"
            "test_memory_counts_are_uniform_compositions_within_caps",
        ),
    ),
    Mutant(
        "capped_compositions_one_part_short",
        "vma_tf/data/omniglot.py",
        "parts = np.arange(1, min(cap, r - k + 1) + 1)",
        "parts = np.arange(1, min(cap, r - k + 1))",
        ("tests/test_omniglot_data.py::test_capped_composition_counts_are_exact",),
    ),
    Mutant(
        "mixed_memory_with_one_row_each_accepted",
        "vma_tf/configs/validation.py",
        "if d.mixed_memory and d.memory_per_class == 1:",
        "if d.mixed_memory and d.memory_per_class == -1:",
        (
            "tests/test_bad_flags.py::test_bad_flags_one_line_exit_2_nothing_written"
            "[train:--preset=omniglot_fewshot --mixed_memory --memory_per_class=1]",
        ),
    ),
    Mutant(
        "soft_attention_q_on_a_pyramid_of_its_own",
        "vma_tf/modeling/builders.py",
        "        if not conditional:\n            pyramid = self.memory_net\n",
        "        if not conditional:\n            pyramid = conv.ConvPyramid(\n"
        '                self.config.channels, fast=False, name="q_pyramid"\n'
        "            )\n",
        ("tests/test_conv.py::test_soft_attention_q_shares_the_readout_pyramid",),
    ),
    Mutant(
        "drop_moved_into_trained_steps_accepted",
        "vma_tf/workdir.py",
        "    for s in sorted(p for p in points if p < step):\n",
        "    for s in sorted(p for p in points if p < 0):\n",
        (
            "tests/test_workdir.py::"
            "test_a_drop_cannot_move_into_the_steps_the_run_has_trained",
        ),
    ),
    Mutant(
        "init_from_an_execution_field_again",
        "vma_tf/workdir.py",
        '        ("data", "data_dir"),\n',
        '        ("data", "data_dir"),\n        ("train", "init_from"),\n',
        ("tests/test_workdir.py::test_a_resumed_run_keeps_how_it_began",),
    ),
    Mutant(
        "warm_start_copies_the_seed_streams",
        "vma_tf/checkpointing.py",
        "    own = {id(v) for v in model.run_state()}\n",
        "    own = set()\n",
        (
            "tests/test_training.py::"
            "test_warm_start_copies_the_model_and_starts_a_fresh_optimizer",
        ),
    ),
    Mutant(
        "stop_trusts_the_managers_latest_checkpoint",
        "vma_tf/training.py",
        "        if step != self._saved_step:\n",
        "        if not (self.manager.latest_checkpoint or '').endswith(f'-{step}'):\n",
        (
            "tests/test_training.py::"
            "test_a_stop_at_an_unreadable_checkpoints_step_saves_that_step",
        ),
    ),
    Mutant(
        "episode_fields_ignored_off_episodes",
        "vma_tf/configs/validation.py",
        "        for name in _EPISODE_FIELDS:\n",
        "        for name in _EPISODE_FIELDS[5:]:\n",
        (
            "tests/test_bad_flags.py::test_bad_flags_one_line_exit_2_nothing_written[train:--preset=mnist_learned --absent_classes=3]",
        ),
    ),
    Mutant(
        "eval_memory_size_ignored_off_recall",
        "vma_tf/configs/validation.py",
        'if d.task != "recall" and d.eval_memory_size:',
        'if d.task == "none" and d.eval_memory_size:',
        (
            "tests/test_bad_flags.py::test_bad_flags_one_line_exit_2_nothing_written[train:--preset=mnist_learned --eval_memory_size=2048]",
        ),
    ),
    Mutant(
        "rate_after_no_drop_accepted",
        "vma_tf/configs/validation.py",
        "    if not t.lr_drop_step and t.lr_after_drop",
        "    if False and t.lr_after_drop",
        (
            "tests/test_bad_flags.py::test_bad_flags_one_line_exit_2_nothing_written[train:--lr_after_drop=5e-5]",
        ),
    ),
    Mutant(
        "recall_on_omniglot_accepted",
        "vma_tf/configs/validation.py",
        '    if d.dataset != "binarized_mnist":\n        raise ConfigError(\n'
        '            f"--config.data.task=recall is for',
        '    if d.dataset == "none":\n        raise ConfigError(\n'
        '            f"--config.data.task=recall is for',
        (
            "tests/test_bad_flags.py::test_bad_flags_one_line_exit_2_nothing_written[train:--preset=omniglot_learned --config.data.task=recall "
            "--config.model.memory=episodic]",
        ),
    ),
    Mutant(
        "soft_attention_batches_with_episodic_memory_accepted",
        "vma_tf/configs/validation.py",
        'if m.kind != "vae" and m.memory != "learned":',
        'if m.kind == "vma" and m.memory != "learned":',
        (
            "tests/test_bad_flags.py::test_bad_flags_one_line_exit_2_nothing_written[train:--preset=omniglot_learned --config.model.kind=soft_attention "
            "--config.model.memory=episodic]",
        ),
    ),
    Mutant(
        "baseline_beside_another_estimator_accepted",
        "vma_tf/configs/overrides.py",
        "given not in (None, wanted)",
        "given not in (None, wanted, *VIMCO_ESTIMATORS)",
        ("tests/test_configs.py::test_estimator_flags_and_the_old_baseline_flag",),
    ),
    Mutant(
        "reproduce_skips_a_run_trained_otherwise",
        "launchers/reproduce.py",
        "                _check_trained_as_asked(what.name, argv, runs_dir)\n",
        "",
        (
            "tests/test_reproduction.py::"
            "test_a_run_trained_otherwise_is_not_skipped_as_done",
        ),
    ),
    Mutant(
        "recall_extra_eval_split_not_named",
        "vma_tf/configs/fields.py",
        '        return ("valid", *(f"valid_m{n}" for n in sizes if n != m.memory_size))',
        '        return ("valid",)',
        (
            "tests/test_pipelines.py::test_periodic_splits_name_the_periodic_evaluations",
        ),
    ),
    Mutant(
        "budget_curves_read_test_on_mnist",
        "tools/budget_curves.py",
        "run_split = split or ttq.periodic_split(rows)",
        'run_split = split or "test"',
        ("tests/test_budget_curves.py::test_each_run_is_read_on_its_periodic_split",),
    ),
    Mutant(
        "time_to_quality_split_unchecked_before_training",
        "launchers/time_to_quality.py",
        "    if FLAGS.split not in splits:",
        "    if False:",
        (
            "tests/test_bad_flags.py::test_bad_flags_one_line_exit_2_nothing_written[time_to_quality:--workdir={new} --quality=90 --preset=mnist_vae --split=test]",
        ),
    ),
    Mutant(
        "conv_layers_ignores_channels",
        "launchers/benchmark.py",
        "channels=FLAGS.channels or 64,",
        "channels=64,",
        (
            "tests/test_benchmark.py::"
            "test_conv_layers_launcher_reads_channels_steps_and_json",
        ),
    ),
    Mutant(
        "tensorboard_keeps_events_past_the_checkpoint",
        "vma_tf/metrics_log.py",
        '            drop_events_past(workdir / "tb", start_step)\n',
        "            pass\n",
        (
            "tests/test_training.py::"
            "test_resume_drops_tensorboard_events_past_the_checkpoint",
        ),
    ),
    Mutant(
        "default_vimco_is_geometric",
        "vma_tf/modeling/estimator_registry.py",
        '"vimco": GradientEstimator("vimco", discrete_terms, _vimco("arithmetic")),',
        '"vimco": GradientEstimator("vimco", discrete_terms, _vimco("geometric")),',
        ("tests/test_estimators.py::test_model_vimco_is_the_arithmetic_leave_one_out",),
    ),
    Mutant(
        "default_vimco_is_the_bound",
        "vma_tf/modeling/estimator_registry.py",
        '"vimco": GradientEstimator("vimco", discrete_terms, _vimco("arithmetic")),',
        '"vimco": GradientEstimator("vimco", discrete_terms, _bound),',
        (
            "tests/test_estimators.py::"
            "test_model_estimators_are_unbiased_by_exact_enumeration[learned-vimco]",
        ),
    ),
    Mutant(
        "nvil_statistics_take_a_nan_batch",
        "vma_tf/modeling/nvil.py",
        "statistic.assign(tf.where(finite, moved, statistic))",
        "statistic.assign(moved)",
        ("tests/test_estimators.py::test_nvil_statistics_ignore_a_non_finite_batch",),
    ),
    Mutant(
        "classification_labels_by_sorted_character",
        "vma_tf/classification.py",
        "enumerate(dict.fromkeys(x_label.tolist()))",
        "enumerate(sorted(set(x_label.tolist())))",
        (
            "tests/test_protocols.py::"
            "test_episode_labels_follow_the_characters_not_the_row_order",
        ),
    ),
    Mutant(
        "tuner_seed_zero_unseeded",
        "vma_tf/tuning.py",
        "    seed = seed + 1\n",
        "",
        (
            "tests/test_tuning.py::"
            "test_every_oracle_is_seeded_also_by_seed_zero[random]",
        ),
    ),
    Mutant(
        "hyperband_rungs_of_equal_steps_accepted",
        "launchers/tune.py",
        'if FLAGS.tuner == "hyperband" and FLAGS.steps_per_trial < 2 * every:',
        "if False:",
        (
            "tests/test_bad_flags.py::test_bad_flags_one_line_exit_2_nothing_written[tune:--workdir={new} --tuner=hyperband --steps_per_trial=100]",
        ),
    ),
    Mutant(
        "tuner_maximises_the_bound",
        "vma_tf/tuning.py",
        'keras_tuner.Objective(OBJECTIVE, direction="min")',
        'keras_tuner.Objective(OBJECTIVE, direction="max")',
        (
            "tests/test_tuning.py::"
            "test_hyperband_continues_the_best_trials_from_their_checkpoints",
        ),
    ),
    Mutant(
        "replica_loss_not_divided_by_replicas",
        "vma_tf/modeling/base.py",
        "scaled = loss / replicas if replicas > 1 else loss",
        "scaled = loss",
        (
            "tests/test_distributed.py::"
            "test_two_replicas_step_as_one_device_on_the_global_mean",
        ),
    ),
    Mutant(
        "adam_moments_not_checkpointed",
        "vma_tf/checkpointing.py",
        "optimizer=_variable_map(model.optimizer.variables, strip_scope=True),",
        "optimizer=_variable_map(\n"
        '            [v for v in model.optimizer.variables if "iteration" in v.path],\n'
        "            strip_scope=True,\n"
        "        ),",
        (
            "tests/test_distributed.py::"
            "test_default_strategy_checkpoint_resumes_under_mirrored",
        ),
    ),
    Mutant(
        "served_chunk_tail_not_masked",
        "vma_tf/export/signatures.py",
        "valid = (j * c + tf.range(c) < num_samples)[:, None]  # [c, 1]",
        "valid = (j * c + tf.range(c) >= 0)[:, None]",
        (
            "tests/test_export.py::test_served_bound_in_chunks_equals_compute_terms"
            "[omniglot_fewshot-7]",
        ),
    ),
    Mutant(
        "robustness_without_confounders",
        "vma_tf/protocols/_robustness.py",
        "confounder_classes=num_classes - targets,",
        "confounder_classes=0,",
        ("tests/test_protocols.py::test_robustness",),
    ),
    Mutant(
        "robustness_b_keeps_the_runs_examples",
        "vma_tf/protocols/_robustness.py",
        "memory_per_class=per_class,",
        "memory_per_class=c.data.memory_per_class,",
        ("tests/test_protocols.py::test_robustness",),
    ),
    Mutant(
        "classification_argmax_over_queries",
        "vma_tf/protocols/_classification.py",
        "acc_q.append(np.mean(np.argmax(p.numpy(), -1) == truth))",
        "acc_q.append(np.mean(np.argmax(p.numpy(), 0) == truth))",
        (
            "tests/test_protocols.py::"
            "test_classification_scores_each_query_against_its_own_class",
        ),
    ),
    Mutant(
        "final_rows_evaluated_again",
        "vma_tf/training.py",
        'finals = {r["split"]: r for r in at_step if r.get("final")}',
        "finals = {}",
        (
            "tests/test_training.py::"
            "test_a_rerun_with_nothing_to_train_summarises_as_the_run_did",
        ),
    ),
    Mutant(
        "last_step_left_without_its_evaluation",
        "vma_tf/training.py",
        "        if missing:\n",
        "        if False:\n",
        (
            "tests/test_training.py::"
            "test_a_rerun_ending_at_a_checkpoint_between_evaluations_evaluates_it",
        ),
    ),
)


def find(name: str) -> Mutant:
    for m in MUTANTS:
        if m.name == name:
            return m
    raise SystemExit(f"error: no mutant named {name!r} (see --list)")


def occurrences(mutant: Mutant, root: pathlib.Path = REPO) -> int:
    """How often the mutant's snippet occurs in its file under `root`."""
    return (root / mutant.file).read_text().count(mutant.original)


def copy_tree(dest: pathlib.Path) -> None:
    """Copies the repository's files (tracked, and untracked but not
    ignored; working-tree versions)."""
    command = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    listed = subprocess.run(command, cwd=REPO, capture_output=True, check=True)
    files = listed.stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def run(mutant: Mutant, timeout: float) -> tuple[str, str]:
    """Applies `mutant` to a temporary copy and runs its tests.

    Returns:
        `(status, detail)`: status `killed`, `survived` or `error`.
    """
    count = occurrences(mutant)
    if count != 1:
        return "error", f"snippet found {count} times in {mutant.file} (need 1)"
    with tempfile.TemporaryDirectory(prefix=f"mutant_{mutant.name}_") as tmp:
        root = pathlib.Path(tmp)
        copy_tree(root)
        path = root / mutant.file
        path.write_text(path.read_text().replace(mutant.original, mutant.replacement))
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        shared = REPO.parent / "shared" / "data"
        if "VMA_DATA_DIR" not in env and shared.is_dir():
            env["VMA_DATA_DIR"] = str(shared)
        if mutant.file.endswith("_builders.py"):
            # Prepared tfds data bake in the builder code: prepare afresh.
            env["VMA_TFDS_DIR"] = str(root / "tfds_cache")
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]
        command += ["-x", "-q", "-m", "", *mutant.tests]
        try:
            proc = subprocess.run(
                command,
                cwd=root,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return "error", f"timeout after {timeout:.0f} s"
    lines = [l for l in proc.stdout.splitlines() if l.strip()]
    last = lines[-1] if lines else proc.stderr.strip()[-200:]
    if proc.returncode == 1:
        failed = [l for l in lines if l.startswith("FAILED ")]
        return "killed", (failed[0] if failed else last)
    if proc.returncode == 0:
        return "survived", last
    return "error", f"pytest exit {proc.returncode}: {last}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the mutants")
    parser.add_argument(
        "--only", action="append", default=[], metavar="NAME", help="run NAME only"
    )
    parser.add_argument(
        "--timeout", type=float, default=900, help="seconds per mutant (900)"
    )
    args = parser.parse_args(argv)
    selected = [find(n) for n in args.only] if args.only else list(MUTANTS)
    if args.list:
        for m in selected:
            print(f"{m.name}  ({m.file}, found {occurrences(m)}x)")
            for t in m.tests:
                print(f"    {t}")
        return 0
    results = []
    for m in selected:
        t0 = time.monotonic()
        status, detail = run(m, args.timeout)
        results.append(status)
        print(f"{status:9s} {m.name:42s} {time.monotonic() - t0:6.0f} s  {detail}")
        sys.stdout.flush()
    killed = results.count("killed")
    print(
        f"{killed}/{len(results)} killed, {results.count('survived')} survived, "
        f"{results.count('error')} errors"
    )
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
