"""The paper's experiments as named presets (`get_preset`)."""

from __future__ import annotations

from vma_tf.configs.overrides import override
from vma_tf.configs.schema import (
    EPISODIC_DATASETS,
    Config,
    ConfigError,
    DataConfig,
    ModelConfig,
    TrainConfig,
)


def _mnist(name: str, data: DataConfig, model: ModelConfig) -> Config:
    return Config(name=name, data=data, model=model, train=TrainConfig())


PRESETS: dict[str, Config] = {
    # Fig. 2A: memory of |M| training images, targets drawn from it.
    # Tied embedders (h = h^q): with eq. 5 an exact copy of x in memory then
    # always has the highest score (README "Deviations from the paper").
    "mnist_recall": _mnist(
        "mnist_recall",
        DataConfig(task="recall", eval_memory_size=2048, eval_batches=20),
        ModelConfig(kind="vma", memory="episodic", memory_size=256, tie_embedders=True),
    ),
    # Section 4.1 "learned memory": |M| in {64, ..., 1024}, m_a in R^256.
    "mnist_learned": _mnist(
        "mnist_learned",
        DataConfig(task="batches"),
        # m_a enters the decoder's first layer only (an MLP on [z, m_a]), the
        # decoder starts at the data mean and p(z|m_a) at N(0, I): measured
        # to keep the address from collapsing onto one slot; q(z|x, m_a)
        # starts as q(z|x) (zero m_a-half), measured to let z learn as fast
        # as in the VAE (README "Deviations from the paper").
        ModelConfig(
            kind="vma",
            memory="learned",
            memory_size=256,
            memory_dim=256,
            decoder_context="first",
            decoder_bias_init="data_mean",
            prior_z_init="standard_normal",
            encoder_context_init="zeros",
        ),
    ),
    # Baseline: the same encoder/decoder, no memory.
    "mnist_vae": _mnist(
        "mnist_vae",
        DataConfig(task="batches"),
        ModelConfig(kind="vae", decoder_bias_init="data_mean"),
    ),
}


def _omniglot(
    name: str,
    dataset: str,
    kind: str = "vma",
    memory: str = "episodic",
    memory_size: int | None = None,
    channels: int = 64,
    weight_decay: float = 0.0,
    hidden_units=(256,),
    prior_z_init: str = "glorot",
) -> Config:
    task = "episodes" if dataset in EPISODIC_DATASETS else "batches"
    data = DataConfig(dataset=dataset, task=task, eval_batches=20)
    model = ModelConfig(
        kind=kind,
        architecture="conv",
        channels=channels,
        weight_decay=weight_decay,
        memory=memory,
        memory_size=memory_size or 0,
        hidden_units=hidden_units,
        latent_dim=64,
        embed_dim=128,
        decoder_refine=2,
        prior_z_init=prior_z_init,
    )
    # TF's own (oneDNN) conv kernels: 1.1-1.6x faster than XLA's for these
    # nets on the CPUs measured (BENCHMARKS.md: 1.54x and 1.11x on an AVX-512
    # EPYC, 1.11-1.18x on an AVX2 Zen 3); pass --jit to compile with XLA
    # (e.g. GPU).
    train = TrainConfig(jit=False)
    config = Config(name=name, data=data, model=model, train=train)
    return override(config)  # Derives batch and memory size of episodes.


# Table 1's model (the paper: fewer channels and MLP layers, L2 3e-4).
# Linear MLP heads ("fewer hidden layers": none): 2.1-4.6 nats better at
# every T of the C = 1 table than one hidden layer of 128 units (same seed,
# same targets). p(z|m_a) starts at N(0, I): with Glorot's init z went
# unused (KL of z <= 0.01 nats) by step 500 on 3 of 5 seeds, for 6700+
# steps on one. (README "Deviations from the paper".)
_TABLE1_MODEL = dict(
    channels=32,
    weight_decay=3e-4,
    hidden_units=(),
    prior_z_init="standard_normal",
)

PRESETS.update(
    {
        # Section 4.2 few-shot: 8 characters x 4 targets, 4 more of each in memory.
        "omniglot_fewshot": _omniglot("omniglot_fewshot", "omniglot_fewshot"),
        "omniglot_fewshot_vae": _omniglot(
            "omniglot_fewshot_vae", "omniglot_fewshot", kind="vae"
        ),
        "omniglot_fewshot_soft": _omniglot(
            "omniglot_fewshot_soft", "omniglot_fewshot", kind="soft_attention"
        ),
        # Learned memory: |M| = 256 entries of 28x28, 32 maps, L2 3e-4 except M.
        "omniglot_learned": _omniglot(
            "omniglot_learned",
            "omniglot_learned",
            memory="learned",
            memory_size=256,
            channels=32,
            weight_decay=3e-4,
        ),
        # GMN split (Table 1): smaller channels and MLPs, L2 3e-4.
        "omniglot_gmn": _omniglot("omniglot_gmn", "omniglot_gmn", **_TABLE1_MODEL),
        # The same model on the public PyTorch VMA's data (Table 1's second
        # anchor): 26x26 nearest-neighbour, background/evaluation split.
        "omniglot_bgeval": _omniglot(
            "omniglot_bgeval", "omniglot_bgeval", **_TABLE1_MODEL
        ),
    }
)

DEFAULT_PRESET = "mnist_recall"


def get_preset(name: str) -> Config:
    """Returns the named preset. Raises `ConfigError` for unknown names."""
    if name not in PRESETS:
        raise ConfigError(
            f"--preset={name!r} is unknown; choose one of {', '.join(sorted(PRESETS))}"
        )
    return PRESETS[name]
