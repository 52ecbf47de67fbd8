"""Hyperparameter search (`launchers.tune`): the hypermodel's config mapping,
a seeded single-process search, Hyperband's continued trials, and a chief +
2 workers search over gRPC on 127.0.0.1."""

import csv
import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import time

import keras_tuner
import pytest
from helpers import reserved_ports, tiny, wait_all

from vma_tf import configs, tuning
from vma_tf.modeling.models import VMA, LatentVariableModel

REPO = pathlib.Path(__file__).resolve().parents[1]

# A tiny trial: 10 steps of B = 8 with |M| = 8, one validation batch, no XLA.
TINY = [
    "--preset=mnist_recall",
    "--log_every=10",
    "--eval_batches=1",
    "--memory_size=8",
    "--batch_size=8",
    "--eval_memory_size=0",
    "--jit=false",
]


def tune_command(workdir, *args):
    return [
        sys.executable,
        "-m",
        "launchers.tune",
        *TINY,
        f"--workdir={workdir}",
        *args,
    ]


def run(cmd, timeout=300):
    return subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


def hp_with(values):
    hp = keras_tuner.HyperParameters()
    for name, value in values.items():
        hp.Fixed(name, value)
    return hp


def test_a_search_in_progress_resumes_past_the_searched_flag_refusal(tmp_path):
    """A searched flag (`--num_samples`) is refused for a new search only: a
    workdir holding search.json (a search begun before the refusal, with that
    flag) gets past it to the settings check, which names the first setting
    that differs from the saved ones. One line, exit 2, nothing written."""
    (tmp_path / "search.json").write_text("{}")
    proc = run(tune_command(tmp_path, "--num_samples=4"))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert "holds a search with other settings (tuner)" in lines[0], lines[0]
    assert [p.name for p in tmp_path.iterdir()] == ["search.json"]


def test_hypermodel_maps_values_onto_the_config():
    base = configs.get_preset("omniglot_fewshot")
    model = tuning.VMAHyperModel(base, steps_per_trial=300)
    values = {
        "learning_rate": 1e-4,
        "weight_decay": 3e-4,
        "embed_dim": 64,
        "similarity": "cosine",
        "num_samples": 8,
        "channels": 16,
    }
    config = model.config(hp_with(values))
    assert config.name == base.name and config.data == base.data
    assert config.train.learning_rate == 1e-4 and config.train.steps == 300
    assert config.train.eval_every == config.train.checkpoint_every == 300
    m = config.model
    assert (m.weight_decay, m.embed_dim, m.similarity) == (3e-4, 64, "cosine")
    assert (m.num_samples, m.channels) == (8, 16)
    # build(hp): the trainer's builder on that config.
    built = model.build(hp_with(values))
    assert isinstance(built, VMA) and built.num_samples == 8
    # Search spaces: the paper's learning rates; channels only for conv; no
    # addressing values without memory.
    space = tuning.search_space(configs.get_preset("mnist_recall"))
    assert space["learning_rate"] == (1e-4, 3e-4) and "channels" not in space
    assert {"weight_decay", "embed_dim", "similarity", "num_samples"} <= set(space)
    vae = tuning.search_space(configs.get_preset("mnist_vae"))
    assert "embed_dim" not in vae and "similarity" not in vae
    vae_model = tuning.VMAHyperModel(configs.get_preset("mnist_vae"), 100)
    assert isinstance(
        vae_model.build(keras_tuner.HyperParameters()), LatentVariableModel
    )


@pytest.mark.parametrize("tuner", ["random", "bayesian", "hyperband"])
def test_every_oracle_is_seeded_also_by_seed_zero(tuner):
    """keras-tuner draws a random seed for 0; the default --tuner_seed=0
    must still give the same search twice."""
    seeds = [tuning.make_oracle(tuner, 2, s).seed for s in (0, 0, 5)]
    assert seeds == [1, 1, 6]


def test_hyperband_budget_rounds_to_log_every():
    assert tuning.trial_steps(30, 10, None) == 30
    assert [tuning.trial_steps(30, 10, e) for e in (1, 2, 3)] == [10, 20, 30]
    assert tuning.trial_steps(100, 10, 1) == 40  # ceil(33.3 / 10) * 10.


@pytest.mark.slow  # >= 30 s (BUILD.md "Tests"): `make test-slow`, run by CI.
def test_seeded_search_writes_table_and_a_trainable_best_config(tmp_path):
    """Two searches with the same (default) seed: the same trials, the same
    numbers; the best config trains with launchers.train --config_json."""
    results = []
    for name in ("a", "b"):
        proc = run(
            tune_command(tmp_path / name, "--max_trials=2", "--steps_per_trial=10")
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        rows = json.loads((tmp_path / name / "trials.json").read_text())
        results.append(rows)
        assert [r["trial_id"] for r in rows] == ["0", "1"]
        assert all(r["status"] == "COMPLETED" for r in rows)
        with open(tmp_path / name / "trials.csv") as f:
            table = list(csv.DictReader(f))
        assert [float(r["objective"]) for r in table] == [r["objective"] for r in rows]
        assert "hp/learning_rate" in table[0] and "metric/kl_a" in table[0]
    strip = lambda rows: [
        {k: v for k, v in r.items() if k not in ("workdir", "metric/steps_per_sec")}
        for r in rows
    ]
    assert strip(results[0]) == strip(results[1])

    best = configs.Config.from_dict(
        json.loads((tmp_path / "a" / "best_config.json").read_text())
    )
    winner = min(results[0], key=lambda r: r["objective"])
    assert best.train.learning_rate == winner["hp/learning_rate"]
    assert best.model.embed_dim == winner["hp/embed_dim"]
    assert best.model.memory_size == 8  # The base config's flags are kept.
    run_dir = tmp_path / "best_run"
    proc = run(
        [
            sys.executable,
            "-m",
            "launchers.train",
            f"--config_json={tmp_path / 'a' / 'best_config.json'}",
            "--steps=10",
            "--eval_every=10",
            "--checkpoint_every=10",
            "--progress=false",
            f"--workdir={run_dir}",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run_dir / "summary.json").read_text())["step"] == 10


@pytest.mark.slow
def test_hyperband_continues_the_best_trials_from_their_checkpoints(tmp_path):
    proc = run(
        tune_command(
            tmp_path, "--tuner=hyperband", "--max_trials=4", "--steps_per_trial=30"
        )
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "trials.json").read_text())
    assert len(rows) == 4
    steps = sorted(r["metric/steps"] for r in rows)
    assert steps == [10.0, 10.0, 10.0, 30.0]
    (long,) = [r for r in rows if r["metric/steps"] == 30.0]
    # Hyperband promotes the lowest bound (the objective is minimised).
    best = min(
        (r for r in rows if r["metric/steps"] == 10.0), key=lambda r: r["objective"]
    )
    hp = lambda r: {k: v for k, v in r.items() if k.startswith("hp/")}
    assert hp(long) == hp(best)
    text = (pathlib.Path(long["workdir"]) / "metrics.jsonl").read_text()
    log = [json.loads(line) for line in text.splitlines()]
    # Continued from a 10-step trial's checkpoint (copied), not retrained.
    assert [r["step"] for r in log if r["split"] == "train"] == [10, 20, 30]


@pytest.mark.slow  # >= 30 s (BUILD.md "Tests"): `make test-slow`, run by CI.
def test_distributed_search_chief_and_two_workers(tmp_path):
    """keras-tuner's gRPC oracle on 127.0.0.1: the chief serves, 2 workers run
    4 trials; every trial is recorded once, all processes exit by themselves."""
    workdir = tmp_path / "search"
    # The port stays reserved until every process has exited (no race).
    with reserved_ports(1) as (port,):
        base_env = {
            **os.environ,
            "KERASTUNER_ORACLE_IP": "127.0.0.1",
            "KERASTUNER_ORACLE_PORT": str(port),
        }
        cmd = tune_command(workdir, "--max_trials=4", "--steps_per_trial=10")
        procs, logs = [], []
        try:
            for tuner_id in ("chief", "tuner0", "tuner1"):
                logs.append(tmp_path / f"{tuner_id}.log")
                with open(logs[-1], "w") as log:
                    procs.append(
                        subprocess.Popen(
                            cmd,
                            cwd=REPO,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            env={**base_env, "KERASTUNER_TUNER_ID": tuner_id},
                            start_new_session=True,
                        )
                    )
                if tuner_id == "chief":
                    time.sleep(2)  # Workers wait for the server anyway (gRPC).
        finally:
            wait_all(procs, timeout=240)
    texts = [log.read_text() for log in logs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(
        t[-2000:] for t in texts
    )
    assert "search finished" in texts[1] and "search finished" in texts[2]
    rows = json.loads((workdir / "trials.json").read_text())
    assert sorted(r["trial_id"] for r in rows) == ["0", "1", "2", "3"]
    assert all(r["status"] == "COMPLETED" for r in rows)
    assert {r["tuner_id"] for r in rows} <= {"tuner0", "tuner1"}
    print("trials per tuner:", [r["tuner_id"] for r in rows])
    # Each trial trained exactly once: one train line at step 10, in its own
    # workdir; no other trial directories.
    trial_dirs = sorted(p.name for p in (workdir / "trials").iterdir())
    assert trial_dirs == [f"trial_{i}" for i in range(4)]
    for r in rows:
        lines = (pathlib.Path(r["workdir"]) / "metrics.jsonl").read_text().splitlines()
        train = [json.loads(line) for line in lines if '"train"' in line]
        assert [t["step"] for t in train] == [10]
    assert (workdir / "best_config.json").is_file()


@pytest.mark.parametrize("name", tuning.TUNERS)
def test_every_oracle_proposes_values_from_the_search_space(tmp_path, name):
    """No training: each oracle (Bayesian needs scipy and scikit-learn, the
    `keras-tuner[bayesian]` extra) hands out a trial inside the space."""
    base = configs.get_preset("omniglot_fewshot")
    tuner = tuning.make_tuner(base, tmp_path, tuner=name, max_trials=2)
    trial = tuner.oracle.create_trial("tuner0")
    assert trial.status == "RUNNING"
    space = tuning.search_space(base)
    for key, choices in space.items():
        assert trial.hyperparameters.values[key] in choices, key
    config = tuner.hypermodel.config(trial.hyperparameters)
    assert config.model.channels in space["channels"]


def _tiny_base():
    """`TINY`'s base config: 10-step trials, one validation batch, no XLA."""
    return configs.validate(tiny(eval_batches=1, jit=False))


SETTINGS = {"tuner": "random", "max_trials": 2, "steps_per_trial": 10, "tuner_seed": 0}


@pytest.mark.slow  # >= 30 s (BUILD.md "Tests"): `make test-slow`, run by CI.
def test_interrupted_trial_stops_the_search_and_a_rerun_resumes_it(
    tmp_path, monkeypatch
):
    """A signal in a trial (checkpointed, `Interrupted`) ends the search, not
    just the trial; the same search again retries that trial from its
    checkpoint and runs no extra one."""
    from vma_tf import training
    from vma_tf.errors import Interrupted

    real = training.train_and_evaluate

    def stopped_at_5(config, workdir, **kwargs):
        train = dataclasses.replace(config.train, steps=5)
        real(dataclasses.replace(config, train=train), workdir, **kwargs)
        raise Interrupted("SIGINT: checkpointed step 5", 130)

    base = _tiny_base()
    monkeypatch.setattr(training, "train_and_evaluate", stopped_at_5)
    with pytest.raises(Interrupted, match="checkpointed step 5"):
        tuning.run_search(base, tmp_path, SETTINGS)
    monkeypatch.setattr(training, "train_and_evaluate", real)
    results = tuning.run_search(base, tmp_path, SETTINGS)
    rows = results["trials"]
    assert [r["trial_id"] for r in rows] == ["0", "1"]
    assert all(r["status"] == "COMPLETED" for r in rows), rows
    text = (pathlib.Path(rows[0]["workdir"]) / "metrics.jsonl").read_text()
    log = [json.loads(line) for line in text.splitlines()]
    # Resumed at step 5 (its checkpoint), not retrained.
    assert [r["step"] for r in log if r["split"] == "train"] == [5, 10]


def test_diverging_trials_fail_and_too_many_stop_with_one_line(tmp_path, monkeypatch):
    """A trial whose values diverge (`NonFiniteError`) fails and the search
    goes on; keras-tuner's limit of 3 failures in a row ends it with one
    line naming the last error, and the table of the trials so far is
    written (keras-tuner raises before saving the last trial)."""
    from vma_tf import training
    from vma_tf.errors import NonFiniteError

    train = training.train_and_evaluate
    calls = []

    def diverges_after_the_first(config, workdir, **kwargs):
        calls.append(workdir)
        if len(calls) == 1:
            return train(config, workdir, **kwargs)
        raise NonFiniteError(f"loss is NaN at step 7 (lr {config.train.learning_rate})")

    monkeypatch.setattr(training, "train_and_evaluate", diverges_after_the_first)
    settings = dict(SETTINGS, max_trials=6)
    with pytest.raises(configs.ConfigError) as error:
        tuning.run_search(_tiny_base(), tmp_path, settings)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("the search stopped: Number of consecutive failures")
    assert "loss is NaN at step 7" in message
    assert message.endswith(f"the trials so far: {tmp_path / 'trials.csv'}")
    rows = json.loads((tmp_path / "trials.json").read_text())
    assert [r["status"] for r in rows] == ["COMPLETED"] + ["FAILED"] * 3
    assert (tmp_path / "trials.csv").is_file()
    assert (tmp_path / "best_config.json").is_file()


def test_every_trial_is_scored_at_the_same_k(tmp_path):
    """A trial trained with K = 2 is scored by L_8 on its validation set (its
    own L_2 would be looser for the same weights, favouring K = 8)."""
    from keras_tuner.engine.trial import Trial

    from vma_tf import evaluation
    from vma_tf.experiment import load_run

    base = _tiny_base()
    tuner = tuning.make_tuner(base, tmp_path, steps_per_trial=10)
    values = {"learning_rate": 3e-4, "weight_decay": 0.0, "embed_dim": 64}
    values |= {"similarity": "normalized", "num_samples": 2}
    metrics = tuner.run_trial(Trial(hp_with(values), trial_id="0"))
    _, model, data, _ = load_run(tmp_path / "trials" / "trial_0")
    assert model.num_samples == 2
    evals = {"valid": data.evals["valid"]}
    at = lambda k: evaluation.nll_protocol(model, evals, k, jit=False)["valid"]
    assert metrics["nll_bound"] == at(tuning.OBJECTIVE_SAMPLES)["nll_bound"]["mean"]
    assert metrics["nll_bound"] < at(2)["nll_bound"]["mean"]
    assert metrics["trial_nll_bound"] != metrics["nll_bound"]
