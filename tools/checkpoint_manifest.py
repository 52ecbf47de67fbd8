"""Golden checkpoint manifest: the variable keys, shapes and dtypes that a
training checkpoint of every preset (and `VARIANTS`, the long runs' flags
that change the variables) holds.

A run checkpointed by one version of the code resumes on another only if the
two agree on this manifest (`vma_tf.checkpointing.restore` refuses any
mismatch). `tests/test_checkpoint_manifest.py` compares every preset against
`tests/golden/checkpoint_manifest.json` in the default suite, so a refactor
that renames, reorders or reshapes a variable fails there first.

    .venv/bin/python tools/checkpoint_manifest.py           # compare, exit 1 on a difference
    .venv/bin/python tools/checkpoint_manifest.py --write   # re-record (an intended change)

Re-recording breaks the resumability of existing runs of the changed presets:
say so in the commit message.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "checkpoint_manifest.json"

# Flags of the long runs that change a preset's variables: `NAME -> (preset,
# overrides)`, recorded beside the presets so those runs stay resumable too
# (the reproduce rows' 48-map few-shot runs; the 128-unit GMN-split runs made
# before the presets' heads became linear, and the bgeval reproduce rows; the
# GMN split with q's pyramid tied, gmn_h0_tie).
VARIANTS = {
    "omniglot_fewshot+channels=48": ("omniglot_fewshot", {"channels": 48}),
    "omniglot_gmn+hidden_units=128": ("omniglot_gmn", {"hidden_units": (128,)}),
    "omniglot_bgeval+hidden_units=128": ("omniglot_bgeval", {"hidden_units": (128,)}),
    "omniglot_gmn+tie_pyramid": ("omniglot_gmn", {"tie_pyramid": True}),
}


def names() -> list[str]:
    """Every preset and variant the golden file records."""
    from vma_tf import configs

    return sorted([*configs.PRESETS, *VARIANTS])


def preset_manifest(name: str) -> dict[str, list]:
    """`key -> [dtype, shape]` of a fresh training checkpoint of preset (or
    `VARIANTS` entry) `name` (the model built as `launchers.train` builds it,
    on its first batch)."""
    import tensorflow as tf

    from vma_tf import checkpointing, configs, experiment
    from vma_tf.data.experiments import make_data

    preset, overrides = VARIANTS.get(name, (name, {}))
    config = configs.override(configs.get_preset(preset), **overrides)
    data = make_data(config)
    example = data.make_batch(tf.constant(0, tf.int64))
    model = experiment.build_model(config, data.x_shape, example, data.pixel_mean)
    with tempfile.TemporaryDirectory() as tmp:
        path = checkpointing.make_checkpoint(model).save(str(pathlib.Path(tmp) / "c"))
        return checkpointing.manifest(path)


def all_manifests() -> dict[str, dict[str, list]]:
    return {name: preset_manifest(name) for name in names()}


def main() -> int:
    sys.path.insert(0, str(REPO))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--write", action="store_true", help="re-record the golden file"
    )
    args = parser.parse_args()
    current = all_manifests()
    if args.write:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
        print(f"wrote {GOLDEN.relative_to(REPO)} ({len(current)} presets)")
        return 0
    golden = json.loads(GOLDEN.read_text())
    bad = [
        n for n in sorted(set(golden) | set(current)) if golden.get(n) != current.get(n)
    ]
    for n in bad:
        print(f"differs: {n}")
    print("ok" if not bad else f"{len(bad)} preset(s) differ from {GOLDEN.name}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
