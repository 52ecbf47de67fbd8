"""Evaluation protocols end to end on tiny trained runs; classification maths;
peak memory of the streamed bound."""

import dataclasses
import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import run_launcher, tiny

from vma_tf import (
    address_health,
    classification,
    configs,
    evaluation,
    plotting,
    protocols,
    training,
)
from vma_tf.configs import ConfigError
from vma_tf.errors import WorkdirError
from vma_tf.modeling.builders import build_model
from vma_tf.protocols.common import CellCache

# `make test` (--dist loadgroup): one xdist worker runs this whole file, so its
# module-scoped fixtures are built once.
pytestmark = pytest.mark.xdist_group("test_protocols")


@pytest.fixture(scope="module")
def recall_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("recall")
    training.train_and_evaluate(tiny(steps=20, jit=False), workdir, progress=False)
    return protocols.load(workdir)


@pytest.fixture(scope="module")
def omniglot_runs(tmp_path_factory):
    runs = []
    for mpc in (1, 2):
        workdir = tmp_path_factory.mktemp(f"omniglot{mpc}")
        cfg = tiny("omniglot_fewshot", steps=20, jit=False, memory_per_class=mpc)
        training.train_and_evaluate(cfg, workdir, progress=False)
        runs.append(protocols.load(workdir))
    return runs


def _finite_bounds(tree):
    """Every {"mean", "stderr"} leaf of `tree`."""
    if isinstance(tree, dict):
        if set(tree) >= {"mean", "stderr"}:
            return [tree]
        return [leaf for v in tree.values() for leaf in _finite_bounds(v)]
    return []


def _check(result):
    json.dumps(result)  # JSON-ready.
    leaves = _finite_bounds(result)
    assert leaves and all(np.isfinite(leaf["mean"]) for leaf in leaves)


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_recall_sizes(recall_run, tmp_path, precision):
    """Values known by construction. Targets are copies of memory entries
    and the recall preset ties its embedders, so S(m_a, x) <= S(x, x)
    (Cauchy-Schwarz): the own slot is the mode of q(a|x) for every target at
    any weights, and carries at least 1/|M| of its mass. A memory of one
    entry has q = p = 1: kl_a = 0, q_own_slot = 1. Under mixed_bfloat16
    (`--precision`) the targets are float32 and the memory bfloat16: the
    own slots are found all the same."""
    assert recall_run.config.model.tie_embedders
    run = recall_run
    if precision != "float32":
        run = protocols.load(recall_run.workdir, precision)
        assert run.model.compute_dtype == "bfloat16"
    result, figs = protocols.recall_sizes(
        run, num_samples=5, num_examples=8, sizes=(1, 8, 16), jit=False
    )
    _check(result)
    by_size = result["by_memory_size"]
    assert set(by_size) == {"1", "8", "16"} and by_size["16"]["num_examples"] == 8
    for size, entry in by_size.items():
        assert entry["log_memory_size"] == pytest.approx(np.log(int(size)))
        assert entry["mode_is_own_slot"]["mean"] == 1.0, size
        assert entry["q_own_slot"]["mean"] >= 1 / int(size) - 1e-6, size
    one = by_size["1"]
    assert one["kl_a"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert one["q_own_slot"]["mean"] == pytest.approx(1.0, abs=1e-6)
    figs["recall_sizes"](tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 0


# Bad requests to the protocols: (run, protocol, options, message). Each is a
# one-line ConfigError raised before any evaluation work.
BAD_REQUESTS = [
    ("recall", "gmn_table", {}, "--protocol=gmn_table needs an episodic Omniglot"),
    ("recall", "robustness", {}, "--protocol=robustness needs an episodic Omniglot"),
    ("recall", "classification", {}, "--protocol=classification needs an episodic"),
    ("omniglot", "recall_sizes", {}, "--protocol=recall_sizes needs an MNIST recall"),
    ("omniglot", "large_memory", {}, "--protocol=large_memory needs an MNIST VMA run"),
    (
        "recall",
        "large_memory",
        {"memory_size": 10**6},
        "--memory_size=1000000: at most",
    ),
    (
        "recall",
        "large_memory",
        {"memory_size": 8, "num_examples": 9},
        "--num_examples=9 exceeds --memory_size=8",
    ),
    (
        "omniglot",
        "gmn_table",
        {"shots": (20,)},
        "gmn_table shots=20: each T (images in memory) must be 1 to 19",
    ),
    ("omniglot", "gmn_table", {"shots": (0, 1)}, "gmn_table shots=0,1: each T"),
    (
        "omniglot",
        "gmn_table",
        {"classes": (1, 145)},
        "gmn_table classes=1,145: each C must be 1 to 144 (the test split's",
    ),
    (
        "omniglot",
        "gmn_table_per_class",
        {"classes": (145,)},
        "gmn_table_per_class classes=145: each C must be 1 to 144",
    ),
]


@pytest.mark.parametrize("kind,protocol,options,message", BAD_REQUESTS)
def test_bad_protocol_requests_are_one_line_errors(
    recall_run, omniglot_runs, kind, protocol, options, message
):
    run = recall_run if kind == "recall" else omniglot_runs[0]
    with pytest.raises(configs.ConfigError) as err:
        protocols.PROTOCOLS[protocol](run, num_samples=2, jit=False, **options)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_protocol_request_through_the_launcher(recall_run, tmp_path):
    """`launchers.evaluate`: one `error:` line, exit 2, no report written."""
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "launchers.evaluate",
            f"--workdir={recall_run.workdir}",
            "--protocol=classification",
            f"--out={out}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    # TensorFlow's C++ start-up lines (CUDA probing) may precede ours.
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == errors[0]
    assert errors[0].startswith("error: --protocol=classification needs")
    assert not out.exists()


@pytest.mark.parametrize("name", ["gmn_table", "gmn_table_per_class"])
def test_gmn_table(omniglot_runs, name):
    """Cells with a memory of one image (T = 1; per class: also C = 1) have
    q = p = 1, so kl_a = 0 exactly; with T = 3 the address carries
    information, and so it does per class at C = 2, T = 1 (one drawing of
    each character)."""
    result, _ = protocols.PROTOCOLS[name](
        omniglot_runs[0],
        num_samples=4,
        num_examples=2,
        classes=(1, 2),
        shots=(1, 3),
        jit=False,
    )
    _check(result)
    table = result["table"]
    assert set(table) == {"C=1,T=1", "C=1,T=3", "C=2,T=1", "C=2,T=3"}
    # Targets T+1..20 of each of the 2 sequences.
    assert table["C=2,T=1"]["num_examples"] == 2 * 19
    assert table["C=2,T=3"]["num_examples"] == 2 * 17
    one_entry = ("C=1,T=1", "C=2,T=1") if name == "gmn_table" else ("C=1,T=1",)
    for key in one_entry:
        assert table[key]["kl_a"]["mean"] == pytest.approx(0.0, abs=1e-6), key
    assert table["C=2,T=3"]["kl_a"]["mean"] > 1e-6
    if name == "gmn_table_per_class":
        assert table["C=2,T=1"]["kl_a"]["mean"] > 1e-6
    # The error by sequence (one batch each) beside the error by target.
    for cell in table.values():
        by_seq = cell["nll_bound_by_batch"]
        assert by_seq["mean"] == cell["nll_bound"]["mean"]
        assert np.isfinite(by_seq["stderr"]) and by_seq["stderr"] > 0


@pytest.mark.slow  # >= 30 s (BUILD.md "Tests"): `make test-slow`, run by CI.
def test_gmn_table_per_class_row_through_the_launcher(omniglot_runs, tmp_path):
    """`--classes`/`--shots` reach the protocol, and a row's cells do not
    depend on the other rows asked for (each row draws its own sequences):
    the launcher's C = 2 row equals that row of a C = 1, 2 table. `--split`
    reaches it too, and the output's first line names the split."""
    run = omniglot_runs[0]
    kw = dict(num_samples=3, num_examples=2, shots=(1, 3), jit=False, split="train")
    table, _ = protocols.gmn_table_per_class(run, classes=(1, 2), **kw)
    proc = run_launcher(
        "evaluate",
        [
            f"--workdir={run.workdir}",
            "--protocol=gmn_table_per_class",
            "--classes=2",
            "--shots=1,3",
            "--num_samples=3",
            "--num_examples=2",
            "--nojit",
            "--split=train",
            f"--out={tmp_path}",
        ],
    )
    assert proc.returncode == 0, proc.stderr
    assert "K = 3, the train split's characters" in proc.stdout.splitlines()[0]
    report = json.loads((tmp_path / "gmn_table_per_class.json").read_text())
    assert report["options"]["classes"] == [2] and report["options"]["shots"] == [1, 3]
    assert report["options"]["split"] == "train"
    row = report["results"]["table"]
    assert set(row) == {"C=2,T=1", "C=2,T=3"}
    for key, cell in row.items():
        assert cell == table["table"][key], key


def test_an_unwritable_cell_cache_warns_once_and_the_evaluation_goes_on(
    omniglot_runs, monkeypatch, capsys
):
    """A workdir the cell cache cannot write (a run archived read-only,
    evaluated with --out elsewhere): one warning, the same table as with the
    cache, nothing left behind. It raised PermissionError after the first
    cell."""
    run = omniglot_runs[0]
    kw = dict(num_samples=4, num_examples=2, classes=(1,), shots=(1, 3), jit=False)
    path = run.workdir / "eval" / ".gmn_table.cells.json"

    def refuse(target, text):
        raise PermissionError(13, "Permission denied", str(target))

    with monkeypatch.context() as m:
        m.setattr(protocols.common, "atomic_write", refuse)
        unsaved, _ = protocols.gmn_table(run, **kw)
    assert capsys.readouterr().err.count("cannot keep finished cells") == 1
    assert not path.exists()
    assert protocols.gmn_table(run, **kw)[0] == unsaved


def test_gmn_table_resumes_from_its_saved_cells(omniglot_runs, monkeypatch):
    """An interrupted evaluation leaves its finished cells on disk; a rerun
    takes them and computes the rest to the same numbers as an uninterrupted
    run. The file is gone once the table is complete, and a rerun with other
    options (another key) does not take it."""
    run = omniglot_runs[0]
    kw = dict(num_samples=4, num_examples=2, classes=(1,), shots=(1, 3), jit=False)
    full, _ = protocols.gmn_table(run, **kw)
    path = run.workdir / "eval" / ".gmn_table.cells.json"
    assert not path.exists()

    def interrupted(cell):  # As if stopped after the first cell.
        CellCache(run, protocols.GmnTableOptions(**kw))("C=1,T=1", lambda: cell)
        assert path.exists()

    interrupted(full["table"]["C=1,T=1"])
    assert protocols.gmn_table(run, **kw)[0] == full
    assert not path.exists()
    marked = {**full["table"]["C=1,T=1"], "num_examples": -1}
    interrupted(marked)
    resumed, _ = protocols.gmn_table(run, **kw)
    assert resumed["table"] == {**full["table"], "C=1,T=1": marked}
    interrupted(marked)
    other, _ = protocols.gmn_table(run, **{**kw, "num_samples": 5})
    assert other["table"]["C=1,T=1"]["num_examples"] == 2 * 19
    monkeypatch.setattr(CellCache, "finish", lambda self: None)  # Keep the file.
    protocols.gmn_table(run, **kw)
    assert json.loads(path.read_text())["cells"] == full["table"]  # Every cell saved.
    path.unlink()


def test_nll_resumes_from_its_saved_batches(recall_run, monkeypatch):
    """`nll` keeps each finished batch on disk until the result is complete: a
    rerun after an interruption takes the saved batches (here one, then a
    marked copy of it) and computes the rest to an uninterrupted run's
    numbers; other options (another key) start afresh."""
    run = recall_run
    kw = dict(num_samples=3, num_examples=12, jit=False)  # Batches of 8 and 4.
    full, _ = protocols.nll(run, **kw)
    path = run.workdir / "eval" / ".nll.cells.json"
    assert not path.exists()
    with monkeypatch.context() as m:  # Keep the file, as an interruption would.
        m.setattr(CellCache, "finish", lambda self: None)
        assert protocols.nll(run, **kw)[0] == full
    saved = json.loads(path.read_text())
    split = next(iter(full))
    assert sorted(saved["cells"]) == [f"{split}/0", f"{split}/1"]
    assert [len(c["nll_bound"]) for c in saved["cells"].values()] == [8, 4]

    def interrupted(first):  # As if stopped after the first batch.
        path.write_text(json.dumps({**saved, "cells": {f"{split}/0": first}}))

    first = saved["cells"][f"{split}/0"]
    interrupted(first)
    assert protocols.nll(run, **kw)[0] == full
    assert not path.exists()
    marked = {**first, "nll_bound": [v + 1.0 for v in first["nll_bound"]]}
    interrupted(marked)
    resumed, _ = protocols.nll(run, **kw)
    want = full[split]["nll_bound"]["mean"] + 8 / 12  # Only batch 0 was taken.
    assert resumed[split]["nll_bound"]["mean"] == pytest.approx(want, abs=1e-9)
    assert resumed[split]["kl_z"] == full[split]["kl_z"]
    assert not path.exists()
    interrupted(marked)  # Not taken under other options:
    other, _ = protocols.nll(run, **{**kw, "num_samples": 4})
    assert other == protocols.nll(run, **{**kw, "num_samples": 4})[0]


def test_gmn_sequences_draw_distinct_images_of_the_chosen_characters():
    rng = np.random.default_rng(0)
    images = np.arange(10 * 20 * 4).reshape(10, 20, 2, 2) % 251
    seq, labels = protocols.gmn_sequences(images.astype(np.uint8), 3, 20, rng)
    assert seq.shape == (20, 2, 2, 1) and len(set(labels)) <= 3
    flat = {tuple(s.ravel()) for s in seq}
    assert len(flat) == 20  # No drawing twice.


def test_gmn_sequences_with_replacement_repeat_drawings_as_gmn_draws_them():
    """GMN's draw (`with_replacement`): each position's drawing is uniform
    over the character's 20, so at C = 1 the last image repeats one of the
    19 before it with probability 1 - (19/20)^19 = 0.62; without it, never.
    Characters are drawn with replacement too (C = 3 from 2 characters)."""
    images = np.arange(2 * 20 * 4).reshape(2, 20, 2, 2).astype(np.uint8)
    last_repeats = {}
    for replace in (False, True):
        rng = np.random.default_rng(0)
        hits = []
        for _ in range(300):
            seq, labels = protocols.gmn_sequences(images[:1], 1, 20, rng, replace)
            assert seq.shape == (20, 2, 2, 1) and set(labels) == {0}
            hits.append(protocols.copies_of_memory(seq[:19], seq[19:])[0])
        last_repeats[replace] = np.mean(hits)
    assert last_repeats[False] == 0.0
    assert abs(last_repeats[True] - (1 - 0.95**19)) < 0.1, last_repeats
    rng = np.random.default_rng(1)
    seq, labels = protocols.gmn_sequences(images, 3, 20, rng, with_replacement=True)
    assert set(labels) <= {0, 1}
    for image, label in zip(seq[..., 0], labels):  # Each image is its label's.
        assert any((image == d).all() for d in images[label])


def test_copies_of_memory():
    memory = np.array([[[0, 1]], [[1, 1]]])
    targets = np.array([[[1, 1]], [[1, 0]], [[0, 1]], [[0, 0]]])
    np.testing.assert_array_equal(
        protocols.copies_of_memory(memory, targets), [True, False, True, False]
    )


def test_gmn_table_with_replacement_scores_copies_apart(omniglot_runs):
    """Each cell's copies and other targets partition its targets, and their
    bounds average to the cell's; the draw differs from the default's."""
    kw = dict(num_samples=3, num_examples=6, classes=(1,), shots=(1, 10), jit=False)
    run = omniglot_runs[0]
    result, _ = protocols.gmn_table(run, with_replacement=True, **kw)
    plain, _ = protocols.gmn_table(run, **kw)
    assert "copies" not in plain["table"]["C=1,T=10"]
    saw_copies = False
    for key, cell in result["table"].items():
        copies, fresh, n = cell["copies"], cell["fresh"], cell["num_examples"]
        assert copies["num_examples"] + fresh["num_examples"] == n, key
        assert cell["copy_fraction"] == pytest.approx(copies["num_examples"] / n)
        parts = [
            (p["num_examples"], p["nll_bound"]["mean"])
            for p in (copies, fresh)
            if p["num_examples"]
        ]
        mean = sum(k * m for k, m in parts) / n
        assert mean == pytest.approx(cell["nll_bound"]["mean"], rel=1e-9), key
        saw_copies |= copies["num_examples"] > 0
        assert cell["nll_bound"] != plain["table"][key]["nll_bound"], key
    assert saw_copies  # 6 sequences at T = 10: about 4 copies expected.


def test_gmn_tables_split_train_draws_the_training_characters(
    omniglot_runs, monkeypatch
):
    """`split="train"` draws the sequences from the training characters (the
    images handed to the draw are the training split's), records the split,
    and scores other targets than the test split; an unknown split is one
    line."""
    from vma_tf.data.experiments import episodic_splits
    from vma_tf.protocols import _gmn_table

    kw = dict(num_samples=3, num_examples=4, classes=(1,), shots=(1,), jit=False)
    run = omniglot_runs[0]
    train, test = episodic_splits(run.config)
    drawn_from = []
    draw = _gmn_table.table_sequences

    def spy(images, *args):
        drawn_from.append(images)
        return draw(images, *args)

    monkeypatch.setattr(_gmn_table, "table_sequences", spy)
    for protocol in (protocols.gmn_table, protocols.gmn_table_per_class):
        results = {s: protocol(run, split=s, **kw)[0] for s in ("test", "train")}
        for s, result in results.items():
            assert result["split"] == s
        cells = [r["table"]["C=1,T=1"]["nll_bound"] for r in results.values()]
        assert cells[0] != cells[1], protocol.__name__
    assert train.images.shape != test.images.shape  # Told apart by shape:
    assert [d.shape for d in drawn_from] == [test.images.shape, train.images.shape]
    np.testing.assert_array_equal(drawn_from[1], train.images)
    with pytest.raises(ConfigError, match="split='valid' is unknown; choose one of"):
        protocols.gmn_table(run, split="valid", **kw)


def test_robustness(omniglot_runs, tmp_path, monkeypatch):
    """A's point at C characters has C characters in memory, each with the
    run's examples (C x memory_per_class rows; targets of at most the run's
    batch_classes of them, the others confounders); B's point at k examples
    has every test character with k each; the points' bounds differ."""
    from vma_tf.data import experiments

    made = []  # (targets, confounders, per class, memory rows) per point.
    episodes = experiments.episodes

    def spy(config, split, stream, **kw):
        make = episodes(config, split, stream, **kw)
        batch = make(tf.constant(0, tf.int64))
        sizes = ("batch_classes", "confounder_classes", "memory_per_class")
        made.append((*(kw[k] for k in sizes), int(batch["memory"].shape[0])))
        return make

    monkeypatch.setattr(experiments, "episodes", spy)
    result, figs = protocols.robustness(
        omniglot_runs[0],
        num_samples=3,
        num_examples=4,
        classes=(1, 2, 4),
        examples=(1, 2),
        jit=False,
    )
    _check(result)
    d = omniglot_runs[0].config.data
    per, total = d.memory_per_class, 144
    targets = lambda n: min(n, d.batch_classes)
    assert made == [
        *((targets(n), n - targets(n), per, n * per) for n in (1, 2, 4)),
        *((targets(total), total - targets(total), k, total * k) for k in (1, 2)),
    ]
    a = result["A_classes"]
    assert [a[k]["classes"] for k in a] == [1, 2, 4]
    assert a["4"]["optimal_reference"] - a["1"]["optimal_reference"] == pytest.approx(
        np.log(4)
    )
    b = result["B_examples_per_class"]
    assert [b[k]["memory_per_class"] for k in b] == [1, 2]
    assert len({p["nll_bound"]["mean"] for p in (*a.values(), *b.values())}) == 5
    figs["robustness"](tmp_path / "f.png")
    # Resumable like gmn_table: a point left on disk by an interrupted run is
    # taken (here a marked copy), the others recomputed to the same numbers.
    options = protocols.RobustnessOptions(
        num_samples=3, num_examples=4, classes=(1, 2, 4), examples=(1, 2), jit=False
    )
    marked = {**a["2"], "num_examples": -1}
    del marked["optimal_reference"]  # Added after the points are computed.
    CellCache(omniglot_runs[0], options)("A2", lambda: marked)
    resumed, _ = protocols.robustness(omniglot_runs[0], options)
    assert resumed["A_classes"]["2"] == {**a["2"], "num_examples": -1}
    assert resumed["A_classes"]["4"] == a["4"] and resumed["B_examples_per_class"] == b


def test_robustness_computes_the_shared_point_once(
    omniglot_runs, tmp_path, monkeypatch
):
    """B's point at the run's memory_per_class (1) with every test character
    is A's point at C = 144: taken from A (the same numbers), not computed
    again."""
    from vma_tf.protocols import _robustness

    calls = []
    bound_over = _robustness.bound_over
    monkeypatch.setattr(
        _robustness, "bound_over", lambda *a: calls.append(1) or bound_over(*a)
    )
    run = dataclasses.replace(omniglot_runs[0], workdir=tmp_path)
    assert run.config.data.memory_per_class == 1
    kw = dict(num_samples=2, num_examples=2, classes=(1, 144), examples=(1, 2))
    result, _ = protocols.robustness(run, jit=False, **kw)
    assert len(calls) == 3  # A1, A144, B2.
    a, b = result["A_classes"]["144"], result["B_examples_per_class"]
    assert b["1"] == {k: v for k, v in a.items() if k != "optimal_reference"}
    assert b["2"]["memory_per_class"] == 2 and b["2"]["classes"] == 144


def test_robustness_reference_is_anchored_on_one_character(omniglot_runs, tmp_path):
    """L(1) + log C starts from the C = 1 point wherever 1 is listed; classes
    without 1, or above the test characters, are one line naming --classes."""
    run = dataclasses.replace(omniglot_runs[0], workdir=tmp_path)
    kw = dict(num_samples=2, num_examples=2, examples=(), jit=False)
    result, _ = protocols.robustness(run, classes=(2, 1), **kw)
    a = result["A_classes"]
    one = a["1"]["nll_bound"]["mean"]
    assert a["1"]["optimal_reference"] == pytest.approx(one)
    assert a["2"]["optimal_reference"] == pytest.approx(one + np.log(2))
    for classes, message in (
        ((2, 4), "--classes=2,4 must include 1: robustness's reference"),
        ((1, 1000), "--classes=1,1000: robustness takes 1 to 144 characters"),
    ):
        with pytest.raises(ConfigError, match=message) as info:
            protocols.robustness(run, classes=classes, **kw)
        assert "\n" not in str(info.value)


def test_robustness_of_a_run_with_17_examples_per_character(omniglot_runs, tmp_path):
    """A run trained with memory_per_class = 17 leaves 3 of a character's 20
    drawings as targets: A's points take 3 targets per character (not the
    option's 4), B's points that leave fewer than 4 are dropped."""
    config = configs.override(
        omniglot_runs[0].config, memory_per_class=17, targets_per_class=2
    )
    run = dataclasses.replace(omniglot_runs[0], workdir=tmp_path, config=config)
    result, _ = protocols.robustness(
        run, num_samples=2, num_examples=2, classes=(1, 2), examples=(1, 17), jit=False
    )
    a = result["A_classes"]
    assert [a[k]["memory_per_class"] for k in a] == [17, 17]
    assert [a[k]["num_examples"] for k in a] == [3, 6]  # One batch of 3 per target.
    assert list(result["B_examples_per_class"]) == ["1"]


def test_kl_breakdown(omniglot_runs, tmp_path):
    """Each run's row holds that run's own test numbers (the `nll` protocol
    with the same options), labelled with its memory_per_class."""
    result, figs = protocols.kl_breakdown(
        omniglot_runs, num_samples=3, num_examples=4, jit=False
    )
    _check(result)
    rows = result["runs"]
    assert [r["memory_per_class"] for r in rows.values()] == [1, 2]
    for run in omniglot_runs:
        own, _ = protocols.nll(run, num_samples=3, num_examples=4, jit=False)
        for key in ("nll_bound", "kl_a", "kl_z", "recon"):
            assert rows[str(run.workdir)][key] == own["test"][key], key
    assert rows[str(omniglot_runs[0].workdir)] != rows[str(omniglot_runs[1].workdir)]
    figs["kl_breakdown"](tmp_path / "k.png")


def test_kl_breakdown_resumes_from_each_runs_saved_batches(omniglot_runs, monkeypatch):
    """Each run's finished batches stay in its workdir until every run is
    done: a rerun after an interruption in the second run takes the first
    run's saved batches (here marked +1) and computes the second's afresh."""
    kw = dict(num_samples=3, num_examples=4, jit=False)
    full, _ = protocols.kl_breakdown(omniglot_runs, **kw)
    paths = [r.workdir / "eval" / ".kl_breakdown.cells.json" for r in omniglot_runs]
    assert not any(p.exists() for p in paths)
    with monkeypatch.context() as m:  # Keep the files, as an interruption would.
        m.setattr(CellCache, "finish", lambda self: None)
        # (JSON text: one batch per run leaves nll_bound_by_batch's error NaN.)
        assert _json(protocols.kl_breakdown(omniglot_runs, **kw)[0]) == _json(full)
    assert all(p.exists() for p in paths)
    saved = json.loads(paths[0].read_text())
    for cell in saved["cells"].values():
        cell["nll_bound"] = [v + 1.0 for v in cell["nll_bound"]]
    paths[0].write_text(json.dumps(saved))
    paths[1].unlink()  # Stopped before the second run's first batch.
    resumed, _ = protocols.kl_breakdown(omniglot_runs, **kw)
    first, second = (str(r.workdir) for r in omniglot_runs)
    want = full["runs"][first]["nll_bound"]["mean"] + 1.0
    assert resumed["runs"][first]["nll_bound"]["mean"] == pytest.approx(want, abs=1e-9)
    assert _json(resumed["runs"][second]) == _json(full["runs"][second])
    assert not any(p.exists() for p in paths)


def _json(value):
    """`value` as sorted JSON text, so NaNs compare equal."""
    return json.dumps(value, sort_keys=True)


def test_classification(omniglot_runs):
    """1-way episodes have one answer: accuracy 1 by both rules."""
    result, _ = protocols.classification_protocol(
        omniglot_runs[1],
        num_samples=2,
        num_examples=3,
        settings=((1, 2), (2, 1), (3, 2)),
        iw_episodes=2,
        jit=False,
    )
    json.dumps(result)
    assert result["iw_samples_per_entry"] == 2
    for setting in ("1-way 2-shot", "2-way 1-shot", "3-way 2-shot"):
        r = result["settings"][setting]
        assert r["q(a|x)"]["episodes"] == 3 and 0 <= r["q(a|x)"]["accuracy"] <= 1
        assert r["importance_weighted"]["episodes"] == 2
    one = result["settings"]["1-way 2-shot"]
    assert one["q(a|x)"]["accuracy"] == 1.0
    assert one["importance_weighted"]["accuracy"] == 1.0


def test_classification_scores_each_query_against_its_own_class(
    omniglot_runs, monkeypatch
):
    """The protocol's bookkeeping on known class probabilities: each query's
    predicted class is the argmax over classes (its row), compared with its
    character's class; accuracy is the mean over episodes and ci95 its 95 %
    normal interval. Here every query is right in even episodes and wrong
    in odd ones (3-way 2-shot, 4 episodes): 0.5 by both rules."""
    ways, shots, episodes = 3, 2, 4
    guess = (np.arange(ways) + 1) % ways  # Not symmetric: axis 0 differs.
    probs = np.eye(ways, dtype=np.float32)[guess]
    calls = []

    def q_probs(model, x, memory, labels, n):
        assert (x.shape[0], memory.shape[0], n) == (ways, ways * shots, ways)
        return tf.constant(probs)

    def iw_probs(self, x, memory, labels, n, seed):
        assert (x.shape[0], memory.shape[0], n) == (ways, ways * shots, ways)
        return probs

    episode_labels = classification.episode_labels

    def labels(memory_labels, x_labels):
        memory, truth = episode_labels(memory_labels, x_labels)
        np.testing.assert_array_equal(truth, np.arange(ways))
        calls.append(1)
        return memory, guess if len(calls) % 2 else np.arange(ways)

    monkeypatch.setattr(classification, "address_class_probs", q_probs)
    monkeypatch.setattr(classification.ImportanceClassifier, "__call__", iw_probs)
    monkeypatch.setattr(classification, "episode_labels", labels)
    result, _ = protocols.classification_protocol(
        omniglot_runs[1],
        num_samples=2,
        num_examples=episodes,
        settings=((ways, shots),),
        iw_episodes=episodes,
        jit=False,
    )
    ci95 = 1.96 * np.std([1, 0, 1, 0], ddof=1) / np.sqrt(episodes)
    for rule in ("q(a|x)", "importance_weighted"):
        r = result["settings"][f"{ways}-way {shots}-shot"][rule]
        assert r["accuracy"] == 0.5 and r["episodes"] == episodes, rule
        assert r["ci95"] == pytest.approx(ci95, rel=1e-12), rule


def test_episode_labels_follow_the_characters_not_the_row_order():
    """Classes are the targets' characters in target order; memory entries
    get their character's class wherever they sit (`tf.repeat` of the class
    ids would be right only for class-major memory)."""
    memory, x = classification.episode_labels([7, 3, 3, 9, 7, 9], [3, 9, 7])
    np.testing.assert_array_equal(x, [0, 1, 2])
    np.testing.assert_array_equal(memory, [2, 0, 0, 1, 2, 1])
    memory, x = classification.episode_labels([4, 4, 8, 8], [8, 4])
    np.testing.assert_array_equal(memory, [1, 1, 0, 0])
    np.testing.assert_array_equal(x, [0, 1])
    with pytest.raises(ValueError, match=r"memory characters \[5\] have no target"):
        classification.episode_labels([4, 5], [4])


def test_classification_under_mixed_bfloat16(omniglot_runs):
    """`--precision=mixed_bfloat16` (bfloat16 networks, q(a|x) in the
    head's float32): both rules run; 1-way is right by both."""
    run = protocols.load(omniglot_runs[1].workdir, "mixed_bfloat16")
    assert run.model.compute_dtype == "bfloat16"
    result, _ = protocols.classification_protocol(
        run, num_samples=2, num_examples=1, settings=((1, 2),), iw_episodes=1, jit=False
    )
    one = result["settings"]["1-way 2-shot"]
    assert one["q(a|x)"]["accuracy"] == one["importance_weighted"]["accuracy"] == 1


def test_classification_episode_alphabets(omniglot_runs):
    """Within-alphabet episodes run; more alphabets than the test split has
    is one line naming the flag."""
    kw = dict(num_examples=2, settings=((3, 1),), iw_episodes=0, jit=False)
    result, _ = protocols.classification_protocol(
        omniglot_runs[1], episode_alphabets=1, **kw
    )
    assert result["settings"]["3-way 1-shot"]["q(a|x)"]["episodes"] == 2
    assert "iw_samples_per_entry" not in result  # Nothing was importance-weighted.
    with pytest.raises(ConfigError, match="--episode_alphabets=6 exceeds") as info:
        protocols.classification_protocol(omniglot_runs[1], episode_alphabets=6, **kw)
    assert "\n" not in str(info.value)


def test_figures_through_the_launcher(omniglot_runs, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "launchers.evaluate",
            f"--workdir={omniglot_runs[0].workdir}",
            "--protocol=figures",
            f"--out={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert ", protocol figures\n" in proc.stdout  # No K: it draws no bound.
    for name in (
        "figures.json",
        "learning_curves.png",
        "samples.png",
        "address_histograms.png",
        "entry_samples.png",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    # The report records the four common options (as it always has), although
    # `figures` takes only --seed: the flags' values, no K (it draws no bound).
    report = json.loads((tmp_path / "figures.json").read_text())
    assert report["options"] == {
        "num_samples": None,
        "num_examples": 0,
        "chunk_size": 100,
        "seed": 0,
        "precision": "float32",
    }


def test_figures_reads_metrics_as_time_to_quality_does(
    omniglot_runs, tmp_path, monkeypatch
):
    """A cut-short last metrics line is left out, a bad earlier line is one
    line (WorkdirError), no metrics.jsonl draws no learning curves; the
    samples are titled as training titles them."""
    source = omniglot_runs[0]
    lines = (source.workdir / "metrics.jsonl").read_text().splitlines()
    run = dataclasses.replace(source, workdir=tmp_path)
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("\n".join(lines) + '\n{"split": "tr')
    result, figs = protocols.figures(run)
    assert result["records"] == len(lines) and "learning_curves" in figs
    titles = []
    monkeypatch.setattr(
        plotting, "save_grid", lambda path, grid, title: titles.append(title)
    )
    figs["samples"](tmp_path / "s.png")
    name = source.config.name
    assert titles == [f"{name}: first column m_a, then samples of p(x|m_a)"]
    metrics.write_text('{"split": "tr\n' + "\n".join(lines) + "\n")
    with pytest.raises(WorkdirError, match="metrics.jsonl line 1 is not JSON") as e:
        protocols.figures(run)
    assert "\n" not in str(e.value)
    metrics.unlink()
    result, figs = protocols.figures(run)
    assert result["records"] == 0 and "learning_curves" not in figs
    assert "samples" in figs


def test_learning_curves_bound_kl_a_by_each_split_s_own_memory():
    """recall's `*_m2048` splits have 2048 slots: their kl_a ceiling is
    log 2048, not the training memory's log 256; rows without a
    `memory_size` fall back to the run's."""
    records = [
        {"split": "train", "step": 10, "kl_a": 5.0},
        {"split": "valid", "step": 10, "kl_a": 5.4, "memory_size": 256.0},
        {"split": "valid_m2048", "step": 10, "kl_a": 7.5, "memory_size": 2048.0},
    ]
    assert plotting.memory_sizes(records, 256) == [256, 2048]
    assert plotting.memory_sizes(records[:1], 32) == [32]
    assert plotting.memory_sizes(records[:1]) == []


# -- classification maths ---------------------------------------------------


def _matched_vma():
    """A tiny MLP VMA whose query embedder is the memory embedder, scaled.

    With S(m, x) = <h(m), c h(x)> / |h(m)| and x = m_b, Cauchy-Schwarz makes
    entry b the unique maximiser (for distinct directions), and c = 50 makes
    q(a|x) nearly one-hot: a constructed memory the classifier must get right.
    """
    cfg = dataclasses.replace(
        configs.get_preset("mnist_recall").model,
        hidden_units=(32,),
        latent_dim=3,
        embed_dim=16,
        memory_size=12,
    )
    keras.utils.set_random_seed(1)
    model = build_model(cfg, (784,), seed=0)
    rng = np.random.default_rng(0)
    memory = (rng.uniform(size=(12, 784)) > 0.7).astype(np.float32)
    model.compute_terms(memory[:2], memory, 2, seed=(0, 0))
    head = model.addressing
    for src, dst in zip(
        head.memory_embedder.trainable_variables,
        head.query_embedder.trainable_variables,
    ):
        dst.assign(src)
    last = head.query_embedder.trainable_variables[-2:]  # Output kernel, bias.
    for v in last:
        v.assign(v * 50.0)
    return model, memory


def test_classification_of_targets_identical_to_a_memory_entry_is_exact():
    model, memory = _matched_vma()
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5])
    probs = classification.address_class_probs(model, memory, memory, labels, 6)
    probs = probs.numpy()
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    assert np.mean(np.argmax(probs, -1) == labels) == 1.0
    assert probs[np.arange(12), labels].min() > 0.9


def test_own_slot_recall_of_targets_in_and_not_in_memory():
    model, memory = _matched_vma()
    mass, hit = classification.own_slot_recall(model, memory[:5], memory)
    q_a, _ = model.address_distributions(memory[:5], memory)
    expected = q_a.probs_parameter().numpy()[np.arange(5), np.arange(5)]
    np.testing.assert_allclose(mass.numpy(), expected, rtol=1e-6)
    assert mass.numpy().min() > 0.9 and hit.numpy().all()
    # Duplicated entries both count as the target's own slot.
    doubled = np.concatenate([memory, memory[:1]])
    mass, hit = classification.own_slot_recall(model, memory[:1], doubled)
    q_a, _ = model.address_distributions(memory[:1], doubled)
    probs = q_a.probs_parameter().numpy()[0]
    np.testing.assert_allclose(mass.numpy()[0], probs[0] + probs[-1], rtol=1e-6)
    # A target that is in no slot has none of the mass.
    mass, hit = classification.own_slot_recall(model, 1.0 - memory[:2], memory)
    assert mass.numpy().max() == 0.0 and not hit.numpy().any()


def test_importance_classifier_chunks_and_normalises():
    model, memory = _matched_vma()
    labels = np.arange(12) % 4
    x = memory[:5]
    whole = classification.ImportanceClassifier(model, 3, entries_per_chunk=12)
    chunked = classification.ImportanceClassifier(model, 3, entries_per_chunk=5)
    lj_whole = whole.log_joint(x, memory, seed=(2, 3))
    lj_chunked = chunked.log_joint(x, memory, seed=(2, 3))
    assert lj_whole.shape == (12, 5)
    np.testing.assert_allclose(lj_chunked, lj_whole, rtol=1e-5, atol=1e-4)
    probs = whole(x, memory, labels, 4, seed=(2, 3))
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-9)
    # p(c|x) is the softmax over classes of logsumexp of log p(x, a) in c.
    manual = np.stack(
        [np.logaddexp.reduce(lj_whole[labels == c], axis=0) for c in range(4)], -1
    )
    manual = np.exp(manual - np.logaddexp.reduce(manual, axis=-1, keepdims=True))
    np.testing.assert_allclose(probs, manual, rtol=1e-9)


@pytest.mark.parametrize("samples", [1, 3])
def test_log_joint_is_the_log_mean_of_the_entry_s_sample_weights(samples):
    """log p(x, a) with S samples per entry: log (1/S) sum_s exp(log w_s +
    log q(a|x)) of the S log-weights the model gives for address a, the
    samples drawn as one K = 12 S evaluation with the same seed (chunks of 5
    entries continue its sample stream, so they agree too)."""
    model, memory = _matched_vma()
    x = memory[:3]
    lj = classification.ImportanceClassifier(model, samples, jit=False).log_joint(
        x, memory, seed=(4, 5)
    )
    addresses = tf.repeat(tf.range(12), samples)[:, None] + tf.zeros([1, 3], tf.int32)
    terms = model.compute_terms(
        x, memory, seed=tf.constant([4, 5]), addresses=addresses
    )
    joint = (terms.log_weights + terms.log_q_a).numpy().reshape(12, samples, 3)
    want = np.logaddexp.reduce(joint, axis=1) - np.log(samples)
    np.testing.assert_allclose(lj, want, rtol=1e-5, atol=1e-4)
    chunked = classification.ImportanceClassifier(
        model, samples, entries_per_chunk=5, jit=False
    ).log_joint(x, memory, seed=(4, 5))
    np.testing.assert_allclose(chunked, want, rtol=1e-5, atol=1e-4)


# -- memory of the streamed bound ------------------------------------------


def _largest_tensor(function, *args):
    """Elements of the largest tensor in `function`'s graph for `args`."""
    graph = function.get_concrete_function(*args).graph
    sizes = [
        t.shape.num_elements() for op in graph.get_operations() for t in op.outputs
    ]
    assert None not in sizes  # Static shapes: the count is exact.
    return max(sizes)


def test_memory_of_the_streamed_bound_does_not_grow_with_k():
    """K = 4000 in chunks of 100 runs a graph whose largest tensor is
    `[100, B, ~784]`, while one K = 4000 chunk holds a 40x larger one; both give the same bound. (Counted in the graph:
    an RSS threshold would depend on the allocator.)"""
    cfg = dataclasses.replace(
        configs.get_preset("mnist_recall").model,
        hidden_units=(16,),
        latent_dim=3,
        embed_dim=4,
        memory_size=8,
    )
    model = build_model(cfg, (784,), seed=0)
    rng = np.random.default_rng(0)
    x = tf.constant((rng.uniform(size=(32, 784)) > 0.7).astype(np.float32))
    memory = tf.constant((rng.uniform(size=(8, 784)) > 0.7).astype(np.float32))
    chunked = evaluation.StreamedBound(model, chunk_size=100, jit=False)
    whole = evaluation.StreamedBound(model, chunk_size=4000, jit=False)
    a, b = chunked(x, memory, 4000), whole(x, memory, 4000)
    np.testing.assert_allclose(a["nll_bound"], b["nll_bound"], rtol=1e-4)
    state = model.memory_state(memory)
    start = tf.constant(0, tf.int64)
    args = lambda k: (x, memory, state, tf.constant([0, 0]), start, k)
    small = _largest_tensor(chunked._chunk, *args(100))
    big = _largest_tensor(whole._chunk, *args(4000))
    assert 100 * 32 * 784 <= small < 2 * 100 * 32 * 784  # [100, B, ~784]
    assert big == 40 * small


def test_large_memory_protocol_end_to_end(recall_run):
    """Beyond 70 000 images the memory also holds MNIST training digits; the
    sampler takes its two-stage path (> 16384 entries)."""
    result, _ = protocols.large_memory(
        recall_run,
        num_samples=4,
        num_examples=8,
        chunk_size=2,
        memory_size=70_010,
        memory_chunk=20_000,
        jit=False,
    )
    _check(result)
    assert result["memory_size"] == 70_010 and result["num_examples"] == 8
    # Tied embedders, targets copied from memory: the own slot is the mode
    # (Cauchy-Schwarz), among 70 010 entries sampled in two stages.
    assert result["mode_is_own_slot"]["mean"] == 1.0
    assert result["q_own_slot"]["mean"] >= 1 / 70_010
    assert result["peak_rss_mb"] > 0
    with pytest.raises(protocols.ConfigError, match="memory_size"):
        protocols.large_memory(recall_run, memory_size=10**6)


def test_memory_state_in_chunks_equals_the_whole_state(recall_run):
    memory = tf.constant(protocols.large_memory_images(50))
    whole = recall_run.model.memory_state(memory)
    chunked = evaluation.memory_state_in_chunks(recall_run.model, memory, rows=16)
    for a, b in zip(tf.nest.flatten(whole), tf.nest.flatten(chunked)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_address_usage_reports_slot_entropies(recall_run):
    result, _ = protocols.address_usage(recall_run, num_examples=16)
    json.dumps(result)
    assert all(np.isfinite(v) for v in result.values())
    assert 1 <= result["slots_used_as_mode"] <= result["memory_size"]
    assert 0 < result["top_slot_share"] <= 1
    log_m = result["log_memory_size"]
    for key in ("H_q", "H_mean_q", "H_p"):
        assert -1e-6 <= result[key] <= log_m + 1e-6
    assert result["I_xa"] == pytest.approx(result["H_mean_q"] - result["H_q"])
    # H(p(a)) of the first test batch's memory, from the prior logits.
    first = next(iter(next(iter(recall_run.data.final_evals.values()))))
    logits = recall_run.model.memory_state(first["memory"])["prior_logits"].numpy()
    p = np.exp(logits - logits.max())
    p = p / p.sum()
    assert result["H_p"] == pytest.approx(-np.sum(p * np.log(p)), rel=1e-5)
    # The same numbers as the training-time address health of these batches.
    batches = -(-16 // recall_run.config.train.batch_size)
    ds = next(iter(recall_run.data.final_evals.values())).take(batches)
    expected = address_health.measure(recall_run.model, ds)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value), key


def test_address_usage_keeps_the_per_batch_mean_of_slots_used(recall_run, monkeypatch):
    """With episodic memory slots_as_mode is a mean over batches: 5.5 stays
    5.5 in slots_used_as_mode."""
    measure = address_health.measure
    monkeypatch.setattr(
        address_health,
        "measure",
        lambda model, ds: {**measure(model, ds), "slots_as_mode": 5.5},
    )
    result, _ = protocols.address_usage(recall_run, num_examples=8)
    assert result["slots_used_as_mode"] == 5.5 == result["slots_as_mode"]


def test_gradient_variance_protocol_on_a_restored_nvil_run(
    recall_run, tmp_path, capsys
):
    """A tiny run trained with --estimator=nvil restores (baseline network and
    running statistics included) and every estimator's address-gradient
    variance is measured on it; a VIMCO run refuses nvil by name."""
    workdir = tmp_path / "nvil"
    cfg = tiny(steps=10, jit=False, estimator="nvil")
    training.train_and_evaluate(cfg, workdir, progress=False)
    run = protocols.load(workdir)
    assert float(run.model.nvil_baseline.centre.numpy()) != 0.0  # Restored.
    # The other estimators' draws: tests/test_estimators.py.
    result, _ = protocols.gradient_variance_protocol(
        run, estimators=["nvil", "gumbel"], num_draws=2, jit=False, all_checkpoints=True
    )
    # tiny(): checkpoints at steps 10 (the end) and none before (every 20).
    assert list(result["by_step"]) == ["10"]
    assert result["by_step"]["10"]["nvil"] == result["nvil"]  # Same model, seeds.
    json.dumps(result)
    assert result["training_estimator"] == "nvil" and result["num_samples"] == 4
    for name in ("nvil", "gumbel"):
        assert result[name]["num_draws"] == 2
        assert np.isfinite(result[name]["total_variance"])
        assert result[name]["total_variance"] >= 0
    with pytest.raises(configs.ConfigError, match="--estimators=nvil needs a run"):
        protocols.gradient_variance_protocol(
            recall_run, estimators=["nvil"], num_draws=2, jit=False
        )
    # A garbage newest checkpoint: `load` falls back to step 10, and so does
    # the by-step measurement (it raised on ckpt-20 before).
    for suffix in (".index", ".data-00000-of-00001"):
        (workdir / "checkpoints" / f"ckpt-20{suffix}").write_bytes(b"garbage")
    run = protocols.load(workdir)
    assert run.step == 10
    again, _ = protocols.gradient_variance_protocol(
        run, estimators=["nvil"], num_draws=2, jit=False, all_checkpoints=True
    )
    assert list(again["by_step"]) == ["10"] and again["nvil"] == result["nvil"]
    assert "ckpt-20 is unreadable" in capsys.readouterr().err


# -- options -----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(protocols.REGISTRY))
def test_every_protocol_refuses_an_unknown_option_in_one_line(name):
    """By its options type and by its function (before touching the run):
    one line naming the option, the protocol and every option it takes."""
    entry = protocols.REGISTRY[name]
    assert entry.options.protocol == name
    assert protocols.PROTOCOLS[name] is entry.function
    calls = (
        lambda: entry.options.create(num_sample=3),
        lambda: entry.function(None, num_sample=3),
        lambda: entry.function(None, entry.options(), num_sample=3),
    )
    for call in calls:
        with pytest.raises(configs.ConfigError) as err:
            call()
        message = str(err.value)
        assert "\n" not in message
        assert f"'num_sample' is not an option of protocol '{name}'" in message
        assert message.endswith("it takes: " + ", ".join(entry.options.names()))


def test_options_are_frozen_typed_and_of_their_own_protocol():
    options = protocols.NllOptions(num_samples=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.num_samples = 6
    assert protocols.ClassificationOptions().num_samples == 10
    assert protocols.RecallSizesOptions.create(sizes=(8,)).sizes == (8,)
    with pytest.raises(configs.ConfigError, match="takes KlBreakdownOptions, not Nll"):
        protocols.kl_breakdown([], options)
    # Keywords override an options object's fields.
    merged = protocols.NllOptions.resolve(options, {"seed": 3})
    assert merged == protocols.NllOptions(num_samples=5, seed=3)


def test_the_registry_imports_no_tensorflow():
    """`launchers.evaluate` reads it to check flags before TensorFlow starts."""
    code = (
        "import sys; from vma_tf import protocols; "
        "assert protocols.REGISTRY; assert 'tensorflow' not in sys.modules"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_per_class_split_holds_t_drawings_of_each_character_in_memory():
    """Memory is drawings 0..T-1 of every one of the C characters; the 20 - T
    targets are other drawings of them, none in memory and none repeated,
    and the draws do not depend on T."""
    rng = np.random.default_rng(0)
    images = np.arange(10 * 20 * 4).reshape(10, 20, 2, 2)  # All distinct.
    drawings, chars, which = protocols.per_class_draw(images, 3, 20, rng)
    assert drawings.shape == (3, 20, 2, 2, 1) and drawings.dtype == np.float32
    assert len(set(chars)) == 3 and which.shape == (20,) and set(which) <= {0, 1, 2}
    char_of = {tuple(images[c, i].ravel()): c for c in range(10) for i in range(20)}
    for shots in (1, 5, 19):
        memory, targets, labels = protocols.per_class_split(drawings, which, shots)
        assert memory.shape == (3 * shots, 2, 2, 1)
        assert targets.shape == (20 - shots, 2, 2, 1)
        np.testing.assert_array_equal(labels, which[shots:])
        in_memory = [char_of[tuple(m.ravel().astype(int))] for m in memory]
        assert sorted(in_memory) == sorted(list(chars) * shots)
        seen = {tuple(m.ravel()) for m in memory}
        for x, label in zip(targets, labels):
            key = tuple(x.ravel())
            assert key not in seen  # Not in memory, not repeated.
            seen.add(key)
            assert char_of[tuple(x.ravel().astype(int))] == chars[label]
    with pytest.raises(protocols.ConfigError, match="gmn_table_per_class needs"):
        protocols.per_class_split(drawings, which, 20)
