"""Summary: summary.json, what a train or eval run measured and what the result depends on."""
from __future__ import annotations

import dataclasses
from typing import Any

from harness.outputs.record import Record, field
from harness.outputs.trace_report import TraceReport


@dataclasses.dataclass(kw_only=True)
class TimeStats(Record):
  """Step times in seconds: {median, p10, p90, n}; median, p10, p90 null when n is 0."""
  median: float | None = field()
  p10: float | None = field()
  p90: float | None = field()
  n: int | None = field()


@dataclasses.dataclass(kw_only=True)
class Attention(Record):
  """The attention bindings of the run: {variant, num_chunks, kernel, ulysses_degree, packed_qkv,
  pipelined_projections} (aot.json: the same without ulysses_degree and packed_qkv)."""
  variant: str | None = field()
  num_chunks: int | None = field()
  kernel: str | None = field()
  ulysses_degree: int | None = field()
  packed_qkv: bool | None = field()
  pipelined_projections: bool | None = field()


@dataclasses.dataclass(kw_only=True)
class Devices(Record):
  """{platform ('cpu', 'tpu', 'gpu'), count (global), kind (device_kind), processes}."""
  platform: str | None = field()
  count: int | None = field()
  kind: str | None = field()
  processes: int | None = field()


@dataclasses.dataclass(kw_only=True)
class EvalSummary(Record):
  """The timed denoising sample after training: {step_time_s, compile_time_s, denoising_steps,
  final_metrics}."""
  step_time_s: TimeStats | None = field(nested=TimeStats)
  compile_time_s: float | None = field()
  denoising_steps: int | None = field()
  final_metrics: dict[str, float] | None = field()


# Where summaries written before `sequence_length` existed kept the tokens per sample.
_OLDER_SEQUENCE_KEYS = (("seq_len",), ("tokens_per_sample",), ("model", "seq_len"),
                        ("model", "sequence_length"), ("video", "tokens"))


def older_sequence_length(obj: dict[str, Any]) -> int | None:
  """Tokens per sample from the keys of an older summary.json or aot.json, if any."""
  for path in _OLDER_SEQUENCE_KEYS:
    value: Any = obj
    for key in path:
      value = value.get(key) if isinstance(value, dict) else None
    if isinstance(value, int) and not isinstance(value, bool):
      return value
  return None


@dataclasses.dataclass(kw_only=True)
class SequenceFromOlderKeys(Record):
  """A record whose `sequence_length` an older file stored under another key."""

  @classmethod
  def _older_keys(cls, obj: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    if values.get("sequence_length") is None and older_sequence_length(obj) is not None:
      return {"sequence_length": older_sequence_length(obj)}
    return {}


@dataclasses.dataclass(kw_only=True)
class Summary(SequenceFromOlderKeys):
  """summary.json in a run folder (DESIGN.md §3.3); written by process 0 at the end of an attempt.

  Keys (null where a value is unknown; NaN is never written):
    status                   'ok', 'preempted', 'nan', 'failed', 'error' or 'interrupted'
    error                    one line, or null
    mode                     'train' or 'eval' ('aot' in the summary of a failed AOT attempt)
    run_name                 run.run_name
    attention                Attention {variant, num_chunks, kernel, ulysses_degree, packed_qkv,
                             pipelined_projections}
    mesh                     {axis: size} for data, fsdp, context, tensor
    devices                  Devices {platform, count, kind, processes}
    model, video             the model and video config sections as bound
    sequence_length          tokens per sample
    batch_size, seed         run.batch_size, run.seed
    step_time_s              TimeStats {median, p10, p90, n} of the timed steps (all segments)
    step_times_s             every timed step's seconds
    compile_time_s           the first step's compile (carried over from an earlier segment)
    steps_run                steps run by this attempt
    steps_completed          train only: steps of every segment so far
    tokens_per_second        tokens per median step (eval counts both CFG halves)
    params                   parameter count
    flops_per_step           analytic FLOPs of one step
    per_device_tflops_per_sec
    final_metrics            the last step's metrics, e.g. {loss}
    eval                     train with run.final_eval: EvalSummary {step_time_s, compile_time_s,
                             denoising_steps, final_metrics}
    trace                    with a profiler capture: TraceReport without per_step, or {error}
    versions                 {package: version} of jax, jaxlib, libtpu, flax, optax,
                             orbax-checkpoint
    git_commit               the harness's commit ('+dirty' with changes), or null
    XLA_FLAGS, LIBTPU_INIT_ARGS  the environment the run saw
    fingerprint              the operative config's fingerprint (run.json)
    attempt                  the attempt number in run.json
    first_step               the step this attempt started from (> 0 when continued)
    source                   eval of a trained run: {run_dir, checkpoint_step, ...}

  A failed attempt's summary holds only status, error, mode, fingerprint and attempt. Summaries
  written before `sequence_length` existed are read with it taken from their older keys.
  """
  status: str | None = field()
  error: str | None = field()
  mode: str | None = field()
  run_name: str | None = field()
  attention: Attention | None = field(nested=Attention)
  mesh: dict[str, int] | None = field()
  devices: Devices | None = field(nested=Devices)
  model: dict[str, Any] | None = field()
  video: dict[str, Any] | None = field()
  sequence_length: int | None = field()
  batch_size: int | None = field()
  seed: int | None = field()
  step_time_s: TimeStats | None = field(nested=TimeStats)
  step_times_s: list[float] | None = field()
  compile_time_s: float | None = field()
  steps_run: int | None = field()
  steps_completed: int | None = field(optional=True)
  tokens_per_second: float | None = field()
  params: int | None = field()
  flops_per_step: float | None = field()
  per_device_tflops_per_sec: float | None = field()
  final_metrics: dict[str, float] | None = field()
  eval: EvalSummary | None = field(nested=EvalSummary, optional=True)
  trace: TraceReport | None = field(nested=TraceReport, optional=True)
  versions: dict[str, str | None] | None = field()
  git_commit: str | None = field()
  xla_flags: str | None = field(key="XLA_FLAGS")
  libtpu_init_args: str | None = field(key="LIBTPU_INIT_ARGS")
  fingerprint: str | None = field()
  attempt: int | None = field()
  first_step: int | None = field()
  source: dict[str, Any] | None = field(optional=True)

  @classmethod
  def failure(cls, status: str, error: str, mode: str | None, fingerprint: str | None,
              attempt: int | None) -> Summary:
    """The summary of an attempt that ended in an exception: these five keys only."""
    return cls.from_json({"status": status, "error": error, "mode": mode,
                          "fingerprint": fingerprint, "attempt": attempt})

  @property
  def median_step_s(self) -> float | None:
    """The median timed step, or None when none was timed."""
    return self.step_time_s.median if isinstance(self.step_time_s, TimeStats) else None

  @property
  def timed_steps(self) -> int | None:
    """Steps in the step-time statistics: len(step_times_s), else step_time_s.n."""
    if isinstance(self.step_times_s, list):
      return len(self.step_times_s)
    n = self.step_time_s.n if isinstance(self.step_time_s, TimeStats) else None
    return int(n) if isinstance(n, (int, float)) and not isinstance(n, bool) else None
