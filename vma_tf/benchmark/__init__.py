"""Throughput, compile time, peak memory and FLOP utilisation of a preset.

`run_benchmark(config, memory_sizes)` measures, in this process:

* the fp32 matmul rate of the machine (a large XLA `tf.matmul`), the
  reference for FLOP utilisation;
* per memory size: the compile time and the median wall time of the
  optimiser step (`model.train_step` under `tf.function(jit_compile=...)`,
  the function Keras' `fit` runs), steps/s, examples/s, the step's FLOP count
  read from its XLA HLO (`hlo_flops`), the achieved FLOP/s and its ratio to
  the matmul rate, and the process' peak RSS;
* evaluation throughput: importance samples per second of the streamed K =
  `eval_samples` bound (`evaluation.StreamedBound`);
* the input pipeline's batches/s (it must be far above steps/s).

Steps run on synthetic inputs of the preset's shapes (random binary images),
so any |M| can be measured, also beyond what the episode sizes of the preset
give; the work of a step does not depend on pixel values.

FLOPs count the multiply-adds of `dot` and `convolution` instructions (2 per
multiply-add; padding and dilation holes excluded), i.e. the matmul-class work
that the matmul rate measures; element-wise work is not counted, so the
utilisation is a lower bound.

Useful FLOPs only: with `fast_convs` the step runs stride-2 and transposed
convolutions as dense convolutions on space-to-depth rearrangements whose
kernels contain structural zeros (7 of 16 taps), which the HLO counter cannot
tell apart from real ones. `flops_per_step` (and the utilisation) therefore
come from the same step built with `fast_convs=False` (Keras' layers, the
same function), and `executed_flops_per_step` from the timed graph itself.

With `jit=False` the step runs TF's own kernels (oneDNN on CPU) and has no
HLO of its own; its FLOPs are counted on the XLA lowering of the same
`train_step` (compiled for counting only, never run): the same function, so
the same useful work.

Modules: `hlo` (the FLOP counter), `timing` (call timing, matmul rate, peak
RSS), `preset` (a preset's step per memory size, eval and input rates, the
table), `conv_layers` (Keras' conv layers against their `fast_convs` forms).
"""

from vma_tf.benchmark.conv_layers import conv_layer_timings, format_conv_layers
from vma_tf.benchmark.hlo import compiled_flops, hlo_flops
from vma_tf.benchmark.preset import (
    benchmark_step,
    format_precision_ratios,
    format_table,
    input_rate,
    run_benchmark,
    synthetic_batch,
)
from vma_tf.benchmark.timing import matmul_rate, peak_rss_bytes, time_calls

__all__ = [
    "benchmark_step",
    "compiled_flops",
    "conv_layer_timings",
    "format_conv_layers",
    "format_precision_ratios",
    "format_table",
    "hlo_flops",
    "input_rate",
    "matmul_rate",
    "peak_rss_bytes",
    "run_benchmark",
    "synthetic_batch",
    "time_calls",
]
