"""``tfpipe bench-input``: how fast is the input pipeline, and is it what limits training?

On an experiment's records the bench times every cumulative stage of the
``tfpipe.data.load`` pipeline (read → parse → decode → augment → batch →
prefetch), an ablation with one optimisation off at a time, optional sweeps of
input settings or record encodings, and the model's training step with and
without input, with augmentation in the pipeline (CPU) and moved into the
model (``tfpipe.data.Augment``); then it says whether training is input- or
compute-bound, by how much, and what to change.

Example:
    >>> from tfpipe.config import load_experiment
    >>> from tfpipe.bench import bench_input, compare_reports
    >>> exp = load_experiment("experiments/kidney.yaml")
    >>> report = bench_input(exp, sweeps=["data.encoding=png,jpeg,raw"])  # doctest: +SKIP
    >>> report.verdict.bound, round(report.verdict.headroom, 1)          # doctest: +SKIP
    ('compute-bound', 140.2)
    >>> compare_reports("runs/bench-a", "runs/bench-b")                   # doctest: +SKIP

Modules: ``harness`` (entry points, progress display), ``measure`` (the timing
core, shared with the scripts in ``benchmarks/``), ``stages``, ``ablation``,
``model_step``, ``sweep`` and ``reencode``, ``advice``, ``report`` (figures,
``bench.json``) / ``tables`` (Markdown) / ``chart`` (PNG), ``machine``.
"""

from tfpipe.bench.harness import bench_input, compare_reports
from tfpipe.bench.report import BenchReport

__all__ = ["BenchReport", "bench_input", "compare_reports"]
