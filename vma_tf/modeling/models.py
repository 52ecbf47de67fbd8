"""The models, one import path: `LatentVariableModel` (`modeling.base`), `VMA`
(`modeling.vma`), and the baselines `VAE` and `SoftAttentionVAE`
(`modeling.baselines`).

Each model implements `compute_terms(x, memory, num_samples, seed)`,
returning the `[K, B]` log importance weights and the diagnostics (`Terms`);
`LatentVariableModel.train_step` trains it with the estimator of
`modeling.estimator_registry`.
"""

from vma_tf.modeling.base import METRIC_NAMES, LatentVariableModel, Terms, as_seed
from vma_tf.modeling.baselines import VAE, SoftAttentionVAE
from vma_tf.modeling.vma import ENTRY_WORK, VMA

__all__ = [
    "ENTRY_WORK",
    "METRIC_NAMES",
    "VAE",
    "VMA",
    "LatentVariableModel",
    "SoftAttentionVAE",
    "Terms",
    "as_seed",
]
