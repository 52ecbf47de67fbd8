"""Export a trained model as a SavedModel for TF Serving, memory as an input.

Memory is non-parametric: a served VMA accepts any memory set per request
(few-shot generation and classification as a service). `export_run(workdir,
export_dir)` restores a run's newest checkpoint and writes

  EXPORT_DIR/<version>/saved_model.pb
  EXPORT_DIR/<version>/variables/
  EXPORT_DIR/<version>/assets.extra/vma_export.json   (what was exported)

the layout `tensorflow_model_server --model_base_path=EXPORT_DIR` serves
(version defaults to the checkpoint's step). The SavedModel is written with
`keras.export.ExportArchive`; loading it needs TensorFlow only
(`tf.saved_model.load(path).signatures[name](**inputs)`), no vma_tf code.

Signatures (N queries, |M| memory entries, `*x` the shape of one example:
`784` for MNIST, `26, 26, 1` / `28, 28, 1` for Omniglot; `*m` the shape of one
memory entry: `*x` for episodic memory, the learned entry shape otherwise):

  log_likelihood (= serving_default)
      x float32 `[N, *x]`, memory float32 `[|M|, *m]`, num_samples int32 `[]`,
      seed int32 `[2]`
      -> nll_bound `[N]` (-L_K, nats), kl_a `[N]`, kl_z `[N]`, recon `[N]`
  address
      x, memory, k int32 `[]`
      -> probs `[N, |M|]` (q(a|x)), top_indices int32 `[N, k]`,
         top_probs `[N, k]`
  sample
      memory, num int32 `[]`, seed int32 `[2]`
      -> images `[num, *x]` (Bernoulli means of p(x|z, m_a), a ~ p(a),
         z ~ p(z|m_a)), addresses int32 `[num]`
  classify
      x, memory, memory_labels int32 `[|M|]` (any integer ids)
      -> classes int32 `[C]` (the distinct labels, in order of first
         appearance), class_probs `[N, C]` (q(a|x) summed per label),
         predicted_label int32 `[N]`

Learned-memory models: `log_likelihood`, `address` and `sample` use the
learned memory and have no `memory` input; `log_likelihood_with_memory`,
`address_with_memory` and `sample_with_memory` take a `memory` of entries of
the learned entry shape instead, and `classify` always takes one. The VAE
baseline exports `log_likelihood` (x, num_samples, seed) and `sample` (num,
seed; images only); the soft-attention baseline exports `log_likelihood` and
`sample` (images only) with a `memory` input. Their `kl_a` is 0.

Every input is validated inside the graph: a wrong rank or example size, an
empty batch or memory, pixel values outside [0, 1], `memory_labels` not matching the
memory, `num_samples` outside [2, 10000], `k` outside [1, |M|], `num` outside
[1, 10000] or a seed that is not 2 integers raise `InvalidArgumentError` with
a message naming the input.
Same inputs and seed => same outputs (stateless Philox noise).

Modules: `signatures` (`ServingFunctions` and the `EXPORT_KINDS` registry of
what each kind of model exports), `validation` (the in-graph input checks),
`archive` (the `ExportArchive`, atomic version directories, metadata).
"""

from vma_tf.errors import ExportError
from vma_tf.export.archive import (
    EXPORT_METADATA,
    build_archive,
    export_model,
    export_run,
    read_metadata,
    version_dir,
)
from vma_tf.export.signatures import (
    EXPORT_KINDS,
    INPUT_SPECS,
    MAX_DRAWS,
    ExportKind,
    ServingFunctions,
    export_kind,
)
from vma_tf.export.validation import Validator

__all__ = [
    "EXPORT_KINDS",
    "EXPORT_METADATA",
    "INPUT_SPECS",
    "MAX_DRAWS",
    "ExportError",
    "ExportKind",
    "ServingFunctions",
    "Validator",
    "build_archive",
    "export_kind",
    "export_model",
    "export_run",
    "read_metadata",
    "version_dir",
]
