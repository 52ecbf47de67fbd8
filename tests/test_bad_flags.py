"""Every launcher's bad command lines, from one table: one `error:` line on
stderr, exit status 2, nothing written.

`test_every_checked_flag_has_a_row` keeps the table complete: each integer,
float, enum or list flag a launcher defines must appear in one of its rows
(read from `--helpxml`, so a new flag without a row fails here).
"""

import pathlib
import xml.etree.ElementTree as ET

import pytest
from helpers import run_launcher

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCHERS = sorted(
    p.stem
    for p in (REPO / "launchers").glob("*.py")
    if p.stem not in ("__init__", "common")
)
OMNI = "--preset=omniglot_fewshot"
# No data files anywhere ("{new}" does not exist; ./data is the repo's), an
# empty tfds cache (nothing prepared) and no network: downloads go to a proxy
# on a closed local port and fail at once.
NO_DATA = {
    "VMA_DATA_DIR": "{new}",
    "VMA_TFDS_DIR": "{new}",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
}

# (launcher, args, message[, env]). "{run}" is a directory holding only
# config.json, "{new}" a path that must not exist afterwards; `env` entries
# (formatted the same way) are added to the launcher's environment.
TABLE = [
    # -- launchers.train: types, ranges, incompatible combinations ----------
    ("train", ["--preset=nope"], "--preset='nope' is unknown"),
    ("train", ["--steps=abc"], "flag --steps=abc: invalid literal for int()"),
    ("train", ["--learning_rate=fast"], "flag --learning_rate=fast"),
    (
        "train",
        ["--precision=fp16"],
        "flag --precision=fp16: value should be one of <float32|mixed_bfloat16>",
    ),
    ("train", ["--unknown_flag=1"], "Unknown command line flag 'unknown_flag'"),
    ("train", ["positional"], "unexpected arguments ['positional']"),
    ("train", ["--num_samples=1"], "--num_samples=1 must be >= 2"),
    (
        "train",
        ["--preset=mnist_vae", "--num_samples=0"],
        "--num_samples=0 must be >= 1",
    ),
    ("train", ["--memory_size=0"], "--memory_size=0 must be >= 1"),
    ("train", ["--memory_size=20000"], "exceeds the 10000 images"),
    ("train", ["--eval_memory_size=-1"], "--eval_memory_size=-1 must be >= 0"),
    ("train", ["--eval_memory_size=20000"], "images of the smallest evaluation split"),
    (
        "train",
        ["--preset=mnist_vae", "--batch_size=20000"],
        "--batch_size=20000 exceeds",
    ),
    ("train", ["--batch_size=0"], "--batch_size=0 must be >= 1"),
    ("train", ["--learning_rate=-1"], "--learning_rate=-1.0 must be a positive"),
    ("train", ["--learning_rate=nan"], "--learning_rate=nan must be a positive finite"),
    ("train", ["--weight_decay=-1"], "--weight_decay=-1.0 must be >= 0"),
    ("train", ["--weight_decay=nan"], "--weight_decay=nan must be >= 0"),
    (
        "train",
        ["--config.train.keep_checkpoints=0"],
        "--config.train.keep_checkpoints=0 must be >= 1",
    ),
    (
        "train",
        ["--preset=mnist_learned", "--config.model.memory_dim=0"],
        "--config.model.memory_dim=0 must be >= 1",
    ),
    (
        "train",
        ["--config.model.architecture=conv"],
        "--config.data.dataset='binarized_mnist' needs --config.model.architecture='mlp'",
    ),
    ("train", ["--config_json={run}/config.json"], "not a vma_tf config: name=None"),
    (
        "train",
        ["--config_json={run}/config.json", "--preset=mnist_vae"],
        "--preset=mnist_vae and --config_json=",
    ),
    ("train", ["--seed=-1"], "--seed=-1 must be in [0, 2**31 - 1]"),
    ("train", ["--steps=0"], "--steps=0 must be >= 1"),
    ("train", ["--log_every=0"], "--log_every=0 must be >= 1"),
    ("train", ["--eval_every=50"], "--eval_every=50 must be a positive multiple"),
    ("train", ["--checkpoint_every=0"], "--checkpoint_every=0 must be a positive"),
    ("train", ["--lr_drop_step=150"], "--lr_drop_step=150 must be 0 or a multiple"),
    ("train", ["--lr_after_drop=0"], "--lr_after_drop=0.0 must be a positive"),
    ("train", ["--patience=-1"], "--patience=-1 must be >= 0"),
    ("train", ["--eval_batches=-1"], "--eval_batches=-1 must be >= 0"),
    ("train", ["--channels=0", OMNI], "--channels=0 must be >= 1"),
    (
        "train",
        ["--skip_levels=7", OMNI],
        "--skip_levels=7 is not allowed; choose one of 0, 1, 2, 3, 4",
    ),
    ("train", ["--decoder_refine=-1", OMNI], "--decoder_refine=-1 must be >= 0"),
    ("train", ["--similarity=foo"], "flag --similarity=foo: value should be one of"),
    ("train", ["--prior=uniform"], "flag --prior=uniform: value should be one of"),
    ("train", ["--baseline=mean"], "flag --baseline=mean: value should be one of"),
    ("train", ["--decoder_context=none"], "flag --decoder_context=none"),
    (
        "train",
        ["--decoder_context=first", OMNI],
        "--decoder_context=first applies to MLP decoders",
    ),
    ("train", ["--skip_mode=mul"], "flag --skip_mode=mul: value should be one of"),
    (
        "train",
        ["--preset=mnist_learned", "--memory_init_scale=0"],
        "--memory_init_scale=0.0 must be a positive finite number",
    ),
    (
        "train",
        ["--preset=mnist_learned", "--tie_embedders"],
        "--tie_embedders needs episodic memory",
    ),
    (
        "train",
        ["--decoder_bias_init=ones"],
        "flag --decoder_bias_init=ones: value should be one of",
    ),
    (
        "train",
        ["--preset=omniglot_fewshot", "--decoder_bias_init=data_mean"],
        "--decoder_bias_init=data_mean applies to MLP decoders",
    ),
    (
        "train",
        ["--prior_z_init=he"],
        "flag --prior_z_init=he: value should be one of",
    ),
    (
        "train",
        ["--preset=omniglot_fewshot", "--encoder_context_init=zeros", "--tie_pyramid"],
        "--encoder_context_init=zeros needs --tie_pyramid=false",
    ),
    ("train", ["--strategy=ps"], "flag --strategy=ps: value should be one of"),
    # $TF_CONFIG is checked before TensorFlow loads (a mistyped cluster fails
    # in a second, not after the import or inside the collectives).
    (
        "train",
        ["--strategy=multi_worker"],
        "--strategy=multi_worker needs $TF_CONFIG (cluster and task)",
        {"TF_CONFIG": ""},
    ),
    (
        "train",
        ["--strategy=multi_worker"],
        "$TF_CONFIG is not JSON",
        {"TF_CONFIG": "{{cluster"},
    ),
    (
        "train",
        ["--strategy=multi_worker"],
        '$TF_CONFIG must be {"cluster": {...}, "task"',
        {"TF_CONFIG": '{{"cluster": ["h:1"]}}'},
    ),
    (
        "train",
        ["--strategy=multi_worker"],
        "$TF_CONFIG's task 'worker' 2 is not in its cluster (worker: 2)",
        {
            "TF_CONFIG": '{{"cluster": {{"worker": ["h:1", "h:2"]}}, '
            '"task": {{"type": "worker", "index": 2}}}}'
        },
    ),
    ("train", ["--estimator=reinforce"], "flag --estimator=reinforce: value should"),
    (
        "train",
        ["--gumbel_temperature=0"],
        "--gumbel_temperature=0.0 must be a positive",
    ),
    ("train", ["--preset=mnist_vae", "--estimator=rws"], "--estimator=rws needs a VMA"),
    (
        "train",
        ["--init_from=/nonexistent/run"],
        "--init_from=/nonexistent/run is not a run",
    ),
    ("train", ["--config_json=/nonexistent/c.json"], "/nonexistent/c.json"),
    ("train", [OMNI, "--batch_classes=0"], "--batch_classes=0 must be >= 1"),
    ("train", [OMNI, "--targets_per_class=0"], "--targets_per_class=0 must be >= 1"),
    ("train", [OMNI, "--memory_per_class=0"], "--memory_per_class=0 must be >= 1"),
    (
        "train",
        [OMNI, "--confounder_classes=-1"],
        "--confounder_classes=-1 must be >= 0",
    ),
    (
        "train",
        [OMNI, "--targets_per_class=15", "--memory_per_class=10"],
        "--targets_per_class=15 + --memory_per_class=10 exceeds",
    ),
    ("train", [OMNI, "--batch_size=64"], "--batch_size=64 conflicts"),
    ("train", [OMNI, "--batch_classes=200"], "exceeds the 144 characters"),
    (
        "train",
        [OMNI, "--batch_classes=8", "--confounder_classes=140"],
        "--batch_classes=8 + --confounder_classes=140 exceeds the 144",
    ),
    ("train", [OMNI, "--absent_classes=-1"], "--absent_classes=-1 must be >= 0"),
    (
        "train",
        [OMNI, "--absent_classes=9"],
        "--absent_classes=9 exceeds --batch_classes=8",
    ),
    (
        "train",
        [OMNI, "--confounder_classes=130", "--absent_classes=7"],
        "--confounder_classes=130 + --absent_classes=7 exceeds the 144",
    ),
    (
        "train",
        ["--preset=mnist_recall", "--rotated_classes"],
        "--rotated_classes is for the episodic datasets",
    ),
    (
        "train",
        ["--preset=mnist_recall", "--mixed_memory"],
        "--mixed_memory is for the episodic datasets",
    ),
    (
        "train",
        ["--preset=mnist_recall", "--config.model.kind=vae"],
        "--config.data.task=recall needs --config.model.kind='vma'",
    ),
    # Accepted, these did nothing (episode and recall fields elsewhere, a rate
    # after no drop) or crashed after TensorFlow loaded (no memory filled).
    (
        "train",
        ["--preset=mnist_learned", "--absent_classes=3"],
        "--absent_classes is for the episodic datasets",
    ),
    (
        "train",
        ["--preset=mnist_learned", "--eval_memory_size=2048"],
        "--eval_memory_size=2048 is for --config.data.task=recall, not 'batches'",
    ),
    ("train", ["--lr_after_drop=5e-5"], "--lr_after_drop=5e-05 needs --lr_drop_step"),
    (
        "train",
        ["--config.data.eval_seed=9223372036854775808"],
        "--config.data.eval_seed=9223372036854775808 must be in [0, 2**31 - 1]",
    ),
    (
        "train",
        [
            "--preset=omniglot_learned",
            "--config.data.task=recall",
            "--config.model.memory=episodic",
        ],
        "--config.data.task=recall is for binarized_mnist",
    ),
    (
        "train",
        [
            "--preset=omniglot_learned",
            "--config.model.kind=soft_attention",
            "--config.model.memory=episodic",
        ],
        "kind='soft_attention' needs learned memory",
    ),
    (
        "train",
        ["--preset=omniglot_gmn", "--mixed_memory", "--memory_per_class=16"],
        "--mixed_memory has nothing to mix: --memory_per_class=16 is every drawing",
    ),
    (
        "train",
        ["--preset=omniglot_fewshot", "--mixed_memory", "--memory_per_class=1"],
        "--mixed_memory has nothing to mix: with --memory_per_class=1 every",
    ),
    (
        "train",
        ["--preset=omniglot_fewshot", "--mixed_memory", "--batch_classes=1"],
        "--mixed_memory has nothing to mix: memory holds one character",
    ),
    # -- launchers.train: dotted overrides generated from the schema ---------
    (
        "train",
        ["--config.model.colour=1"],
        "Unknown command line flag 'config.model.colour'",
    ),
    ("train", ["--config.modle.memory_size=8"], "flag 'config.modle.memory_size'"),
    (
        "train",
        ["--config.model.memory_size=abc"],
        "flag --config.model.memory_size=abc: invalid literal for int()",
    ),
    (
        "train",
        ["--config.train.learning_rate=fast"],
        "flag --config.train.learning_rate=fast",
    ),
    (
        "train",
        ["--config.model.similarity=foo"],
        "flag --config.model.similarity=foo: value should be one of",
    ),
    (
        "train",
        ["--config.model.estimator=reinforce"],
        "flag --config.model.estimator=reinforce: value should be one of",
    ),
    (
        "train",
        ["--config.model.hidden_units=256,x"],
        "flag --config.model.hidden_units=256,x: must be comma-separated integers",
    ),
    (
        "train",
        ["--config.model.hidden_units=256,0"],
        "--config.model.hidden_units=256,0 must be positive sizes",
    ),
    (
        "train",
        ["--config.model.hidden_units="],
        "--config.model.hidden_units= (no hidden layer) needs "
        "--config.model.architecture='conv'",
    ),
    (
        "train",
        ["--config.model.latent_dim=0"],
        "--config.model.latent_dim=0 must be >= 1",
    ),
    (
        "train",
        ["--config.model.kind=vae", "--config.model.estimator=nvil"],
        "--estimator=nvil needs a VMA",
    ),
    ("train", ["--config.model.memory_size=0"], "--memory_size=0 must be >= 1"),
    (
        "train",
        ["--memory_size=16", "--config.model.memory_size=32"],
        "--memory_size=16 and --config.model.memory_size=32 both set",
    ),
    (
        "train",
        ["--config.data.dataset=omniglot_gmn"],
        "--config.data.dataset='omniglot_gmn' does not fit",
    ),
    # -- launchers.evaluate --------------------------------------------------
    (
        "evaluate",
        ["--workdir={run}", "--num_samples=0"],
        "--num_samples=0 must be >= 1",
    ),
    ("evaluate", ["--workdir={run}", "--chunk_size=0"], "--chunk_size=0 must be >= 1"),
    ("evaluate", ["--workdir={run}", "--num_examples=-1"], "--num_examples=-1 must be"),
    ("evaluate", ["--workdir={run}", "--iw_episodes=-1"], "--iw_episodes=-1 must be"),
    (
        "evaluate",
        ["--workdir={run}", "--protocol=classification", "--episode_alphabets=-1"],
        "--episode_alphabets=-1 must be >= 0",
    ),
    (
        "evaluate",
        ["--workdir={run}", "--memory_size=0"],
        "--memory_size=0 must be >= 1",
    ),
    ("evaluate", ["--workdir={run}", "--memory_chunk=0"], "--memory_chunk=0 must be"),
    (
        "evaluate",
        ["--workdir={run}", "--protocol=gmn_table", "--classes=1,0"],
        "--classes=1,0 must be integers >= 1, comma-separated",
    ),
    (
        "evaluate",
        ["--workdir={run}", "--protocol=gmn_table_per_class", "--shots=a"],
        "--shots=a must be integers >= 1",
    ),
    (
        "evaluate",
        ["--workdir={run}", "--protocol=robustness", "--classes="],
        "--classes= is empty: give integers >= 1, comma-separated",
    ),
    (
        "evaluate",
        ["--workdir={run}", "--shots=2"],
        "--shots does not apply to --protocol=nll",
    ),
    (
        "evaluate",
        ["--workdir={run}", "--protocol=gmn_table_per_class", "--with_replacement"],
        "--with_replacement does not apply to --protocol=gmn_table_per_class",
    ),
    (
        "evaluate",
        ["--workdir={run}", "--protocol=gmn_table", "--split=valid"],
        "flag --split=valid: value should be one of <test|train>",
    ),
    (
        "evaluate",
        ["--workdir={run}", "--split=train"],
        "--split does not apply to --protocol=nll",
    ),
    ("evaluate", ["--workdir={run}", "--seed=-1"], "flag --seed=-1: -1 is not"),
    ("evaluate", ["--workdir={run}", "--protocol=bogus"], "flag --protocol=bogus"),
    ("evaluate", ["--workdir={run}", "--precision=fp16"], "flag --precision=fp16"),
    ("evaluate", ["--workdir={run}", "--num_draws=1"], "--num_draws=1 must be >= 2"),
    ("evaluate", ["--workdir={run}", "--estimators=vimco,foo"], "unknown ['foo']"),
    ("evaluate", ["--workdir={run},{run}"], "several runs only with --protocol=kl_b"),
    ("evaluate", ["--workdir={new}"], "has no config.json (not a run)"),
    ("evaluate", ["--workdir=,"], "--workdir=, names no run directory"),
    ("evaluate", ["--out={new}"], "--workdir is required"),
    (
        "evaluate",
        ["--workdir={run}", "--out={run}/config.json"],
        "/config.json is not writable (",
    ),
    ("evaluate", ["--workdir={run}", "extra"], "unexpected arguments ['extra']"),
    # An option flag set explicitly that the protocol does not take.
    (
        "evaluate",
        ["--workdir={run}", "--iw_episodes=5"],
        "--iw_episodes does not apply to --protocol=nll; it takes: --num_samples, "
        "--num_examples, --chunk_size, --seed",
    ),
    (
        "evaluate",
        ["--workdir={run}", "--protocol=figures", "--num_samples=10"],
        "--num_samples does not apply to --protocol=figures; it takes: --seed",
    ),
    (
        "evaluate",
        ["--workdir={run}", "--protocol=classification", "--chunk_size=10"],
        "--chunk_size does not apply to --protocol=classification",
    ),
    (
        "evaluate",
        ["--workdir={run}", "--protocol=address_usage", "--seed=0"],
        "--seed does not apply to --protocol=address_usage; it takes: --num_examples",
    ),
    (
        "evaluate",
        ["--workdir={run}", "--protocol=large_memory", "--noall_checkpoints"],
        "--all_checkpoints does not apply to --protocol=large_memory",
    ),
    (
        "evaluate",
        ["--workdir={run}", "--protocol=gradient_variance", "--memory_chunk=5"],
        "--memory_chunk does not apply to --protocol=gradient_variance; it takes: "
        "--estimators, --num_draws, --seed, --jit, --all_checkpoints",
    ),
    # -- launchers.benchmark -------------------------------------------------
    ("benchmark", ["--memory_sizes=8,x"], "--memory_sizes=8,x must be comma-separated"),
    ("benchmark", ["--memory_sizes=0"], "--memory_sizes=0 must all be >= 1"),
    ("benchmark", ["--steps=0"], "--steps=0 must be >= 1"),
    (
        "benchmark",
        ["--config.train.precision=mixed_bfloat16"],
        "--config.train.precision is not used by launchers.benchmark",
    ),
    ("benchmark", ["--warmup=-1"], "--warmup=-1 must be >= 0"),
    ("benchmark", ["--eval_samples=-1"], "--eval_samples=-1 must be >= 0"),
    ("benchmark", ["--input_batches=-1"], "--input_batches=-1 must be >= 0"),
    ("benchmark", ["--num_samples=1"], "--num_samples=1 must be >= 2"),
    ("benchmark", [OMNI, "--channels=0"], "--channels=0 must be >= 1"),
    ("benchmark", ["--precision=fp16"], "flag --precision=fp16"),
    (
        "benchmark",
        ["--config.model.estimator=reinforce"],
        "flag --config.model.estimator=reinforce",
    ),
    ("benchmark", [OMNI, "--config.model.channels=0"], "--channels=0 must be >= 1"),
    ("benchmark", ["--estimator=reinforce"], "flag --estimator=reinforce"),
    ("benchmark", ["--preset=nope"], "--preset='nope' is unknown"),
    ("benchmark", ["--preset=mnist_vae", "--memory_sizes=8"], "is a VAE (no memory)"),
    ("benchmark", ["--json=/nonexistent/dir/b.json"], "--json=/nonexistent/dir/b.json"),
    ("benchmark", ["--json={run}"], "is a directory, not a file"),
    (
        "benchmark",
        ["--conv_layers", "--memory_sizes=8"],
        "--memory_sizes does not apply with --conv_layers (it reads --channels,",
    ),
    (
        "benchmark",
        ["--conv_layers", "--precision=mixed_bfloat16"],
        "--precision does not apply with --conv_layers",
    ),
    (
        "benchmark",
        ["--conv_layers", "--num_samples=4"],
        "--num_samples does not apply with --conv_layers",
    ),
    ("benchmark", ["--conv_layers", "--channels=0"], "--channels=0 must be >= 1"),
    (
        "benchmark",
        ["--conv_layers", "--json=/nonexistent/dir/b.json"],
        "--json=/nonexistent/dir/b.json",
    ),
    (
        "benchmark",
        ["--json={run}/config.json/b.json"],
        "config.json is not a directory",
    ),
    # Data checked before anything is built or timed (the last step reads it).
    ("benchmark", [], "omniglot105_background.npz (sha256", NO_DATA),
    (
        "benchmark",
        ["--preset=mnist_recall", "--steps=1"],
        "binarized_mnist_train.amat.gz (sha256",
        NO_DATA,
    ),
    # -- launchers.export ----------------------------------------------------
    (
        "export",
        ["--workdir={run}", "--export_dir={new}", "--version=0"],
        "--version=0 must",
    ),
    ("export", ["--workdir={run}", "--export_dir={new}"], "has no checkpoint yet"),
    ("export", ["--workdir={run}"], "--export_dir is required"),
    ("export", ["--workdir={new}", "--export_dir={new}"], "has no config.json"),
    ("export", ["--export_dir={new}"], "--workdir is required"),
    ("export", ["--workdir={run}", "--version=x"], "flag --version=x"),
    # -- launchers.query -----------------------------------------------------
    ("query", ["--signature=sample"], "--url is required"),
    ("query", ["--url=localhost:8501"], "must start with http://, https:// or grpc://"),
    ("query", ["--url=http://h:1", "--model_version=0"], "--model_version=0 must be"),
    ("query", ["--url=http://h:1", "--timeout=0"], "--timeout=0.0 must be a finite"),
    ("query", ["--url=http://h:1", "--num_samples=1"], "flag --num_samples=1: 1 is"),
    ("query", ["--url=http://h:1", "--k=0"], "flag --k=0: 0 is not"),
    ("query", ["--url=http://h:1", "--num=0"], "flag --num=0: 0 is not"),
    ("query", ["--url=http://h:1", "--signature=bogus"], "flag --signature=bogus"),
    ("query", ["--url=http://h:1", "--seed=1"], "--seed=1 must be two integers"),
    ("query", ["--url=http://h:1", "--x=/nonexistent.npy"], "no such file"),
    ("query", ["--url=http://h:1", "--out={new}", "--x=/no.npy"], "no such file"),
    # -- launchers.tune ------------------------------------------------------
    ("tune", ["--workdir={new}", "--steps=100"], "--steps is not used by launchers"),
    ("tune", ["--workdir={new}", "--strategy=multi_worker"], "is not supported"),
    (
        "tune",
        ["--workdir={new}", "--config.train.steps=100"],
        "--config.train.steps is not used by launchers.tune",
    ),
    (
        "tune",
        ["--workdir={new}", "--config.model.prior=none"],
        "flag --config.model.prior=none",
    ),
    ("tune", ["--workdir={new}", "--max_trials=0"], "--max_trials=0 must be >= 1"),
    # A searched value given would be overwritten by every trial.
    (
        "tune",
        ["--workdir={new}", "--num_samples=4"],
        "--num_samples is searched by launchers.tune (every trial sets one of 2, 4, 8)",
    ),
    (
        "tune",
        ["--workdir={new}", "--config.model.embed_dim=64"],
        "--config.model.embed_dim is searched by launchers.tune",
    ),
    (
        "tune",
        ["--workdir={new}", "--steps_per_trial=15"],
        "must be a positive multiple",
    ),
    ("tune", ["--workdir={new}", "--tuner=grid"], "flag --tuner=grid"),
    ("tune", ["--workdir={new}", "--tuner_seed=-1"], "flag --tuner_seed=-1"),
    ("tune", ["--workdir={new}", "--similarity=foo"], "flag --similarity=foo"),
    ("tune", ["--steps_per_trial=100"], "--workdir is required"),
    (
        "tune",
        ["--workdir={new}", "--tuner=hyperband", "--steps_per_trial=100"],
        "--tuner=hyperband needs --steps_per_trial >= 2 * --log_every (200)",
    ),
    # -- launchers.time_to_quality -------------------------------------------
    (
        "time_to_quality",
        ["--workdir={new}", "--quality=100,x"],
        "--quality=100,x must be comma-separated finite numbers",
    ),
    ("time_to_quality", ["--workdir={new}"], "--quality= must list one or more"),
    ("time_to_quality", ["--quality=100"], "--workdir is required"),
    ("time_to_quality", ["--workdir={new}", "--quality=90", "--steps=0"], "--steps=0"),
    ("time_to_quality", ["--workdir={new}", "--quality=90", "--seed=-1"], "--seed=-1"),
    (
        "time_to_quality",
        ["--workdir={new}", "--quality=90", "--channels=0"],
        "--channels=0 must be >= 1",
    ),
    (
        "time_to_quality",
        ["--workdir={new}", "--quality=90", "--decoder_refine=-1"],
        "--decoder_refine=-1 must be >= 0",
    ),
    (
        "time_to_quality",
        ["--workdir={new}", "--quality=90", "--eval_every=50"],
        "--eval_every=50 must be a positive multiple",
    ),
    (
        "time_to_quality",
        ["--workdir={run}", "--quality=90"],
        "is not a readable vma_tf config",
    ),
    (
        "time_to_quality",
        ["--workdir={run}", "--quality=90", "--notrain"],
        "has no metrics.jsonl",
    ),
    (
        "time_to_quality",
        ["--workdir={run}", "--quality=90", "--notrain", "--channels=32"],
        "--channels does not apply with --notrain",
    ),
    (
        "time_to_quality",
        ["--workdir={new}", "--quality=90", "--preset=mnist_vae", "--split=test"],
        "--split=test is not evaluated periodically by this run (it evaluates valid)",
    ),
    (
        "time_to_quality",
        ["--workdir={new}", "--quality=90", "--split=valid"],
        "--split=valid is not evaluated periodically by this run (it evaluates test)",
    ),
    # -- launchers.prepare_data ---------------------------------------------
    ("prepare_data", ["positional"], "unexpected arguments ['positional']"),
    ("prepare_data", ["--datasets=nope"], "--datasets=nope unknown; choose from"),
    (
        "prepare_data",
        ["--datasets=binarized_mnist,omniglot_gmn,typo"],
        "--datasets=typo unknown",
    ),
    ("prepare_data", ["--unknown_flag=1"], "Unknown command line flag 'unknown_flag'"),
    (
        "prepare_data",
        ["--datasets=binarized_mnist"],
        "binarized_mnist_train.amat.gz",
        NO_DATA,
    ),
    (
        "prepare_data",
        ["--datasets=omniglot_fewshot", "--data_dir={new}"],
        "omniglot105_background.npz",
        NO_DATA,
    ),
    ("reproduce", ["--action=train"], "flag --action=train: value should be one of"),
    (
        "reproduce",
        ["--rows=fewshot,table9"],
        "--rows=fewshot,table9: unknown row(s) table9",
    ),
    (
        "reproduce",
        ["--action=run", "--steps=0", "--runs_dir={new}"],
        "--steps=0 must be >= 1",
    ),
    (
        "reproduce",
        ["--action=run", "--patience=-1", "--runs_dir={new}"],
        "--patience=-1 must be >= 0",
    ),
    ("reproduce", ["--action=report", "--runs_dir={new}"], "is not a directory"),
    (
        "reproduce",
        ["--action=run", "--rows=fewshot", "--lr_drop_step=150", "--runs_dir={new}"],
        "--lr_drop_step=150 must be 0 or a multiple of --log_every=100",
    ),
    (
        "reproduce",
        ["--action=run", "--precision=float16", "--runs_dir={new}"],
        "flag --precision=float16: value should be one of",
    ),
    (
        "reproduce",
        ["--action=run", "--threads=-1", "--runs_dir={new}"],
        "flag --threads=-1: -1 is not a non-negative integer",
    ),
    (
        "reproduce",
        ["--action=run", "--lr_drop_step=-1", "--runs_dir={new}"],
        "flag --lr_drop_step=-1: -1 is not a non-negative integer",
    ),
    (
        "reproduce",
        ["--action=run", "--runs_dir={new}", "extra"],
        "unexpected arguments",
    ),
    ("reproduce", ["--figure={new}.png"], "--figure applies to --action=report only"),
    (
        "reproduce",
        ["--rows=gmn_table", "--runs=gmn,learned"],
        "--runs=gmn,learned: learned not a run of --rows=gmn_table (gmn)",
    ),
    (
        "reproduce",
        ["--action=report", "--runs_dir={run}", "--figure={new}/curves.png"],
        "does not exist",
    ),
    (
        "reproduce",
        ["--action=report", "--runs_dir={run}", "--figure={new}.txt"],
        "new.txt must end in a figure suffix: .avif, .eps",
    ),
]


def files_under(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def _row_id(row):
    env = " ".join(f"{k}={v}" for k, v in (row[3] if len(row) > 3 else {}).items())
    return f"{row[0]}:{' '.join(row[1])}" + (f" [{env}]" if env else "")


@pytest.mark.parametrize("row", TABLE, ids=[_row_id(r) for r in TABLE])
def test_bad_flags_one_line_exit_2_nothing_written(tmp_path, row):
    launcher, args, message, env = (*row, {})[:4]
    runs = tmp_path / "run"
    runs.mkdir()
    (runs / "config.json").write_text("{}")
    new = tmp_path / "new"
    values = {"run": str(runs), "new": str(new)}
    args = [a.format(**values) for a in args]
    env = {k: v.format(**values) for k, v in env.items()}
    if launcher == "train" and not any(a.startswith("--workdir") for a in args):
        args.append(f"--workdir={new}")
    before = files_under(tmp_path)
    # Temporary files of the launcher stay under tmp_path (checked below).
    proc = run_launcher(launcher, args, env={"TMPDIR": str(tmp_path), **env})
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert message in lines[0], lines[0]
    assert files_under(tmp_path) == before
    assert not new.exists()


def _checked_flags(launcher):
    """Names of the int/float/enum/list flags defined in launchers/NAME.py."""
    proc = run_launcher(launcher, ["--helpxml"])
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    root = ET.fromstring(proc.stdout)
    names = []
    for flag in root.iter("flag"):
        if not flag.findtext("file").endswith(f"launchers/{launcher}.py"):
            continue
        kind = flag.findtext("type")
        if kind.startswith(("int", "float", "string enum", "comma separated")):
            names.append(flag.findtext("name"))
    return names


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_every_checked_flag_has_a_row(launcher):
    rows = [row[1] for row in TABLE if row[0] == launcher]
    assert len(rows) >= 5, f"launchers.{launcher} has {len(rows)} rows"
    named = {a.split("=")[0][2:] for args in rows for a in args if a.startswith("--")}
    missing = sorted(set(_checked_flags(launcher)) - named)
    assert not missing, f"launchers.{launcher}: no bad-value row for {missing}"
