"""vma_tf: Variational Memory Addressing in Generative Models (Bornschein et al. 2017).

Modules:
  configs     frozen config dataclasses and the paper's presets
  estimators  K-sample bound and VIMCO as pure functions of `[K, B]` log-weights
  modeling    Keras 3 layers (MemoryBuffer, NormalizedSimilarity, AddressingHead)
              and the VMA / VAE models with their `train_step`
  data        data file lookup/verification and tf.data pipelines
  training    `train_and_evaluate(config, workdir)`
"""

__version__ = "0.1.0"
