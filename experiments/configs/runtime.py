"""The blocks every config shares, in one place: the monitors and how a run executes
(devices, processes, input path, checkpoints, progress). The loop
(:mod:`jaxloss.training.loop`) reads these; changing them never changes what is
trained, so a workdir may be resumed with other values (``jaxloss.training.guard``)."""

import ml_collections

from jaxloss.monitors import checks as monitors

# XLA:CPU options for the steps of the convolutional image recipes (digits, CIFAR): the
# element-wise kernels compiled by XLA's earlier emitters instead of its MLIR fusion
# emitters. Measured with jax 0.10.2 (python -m tools.bench.xla_options,
# docs/bench_compile.md): the same values to the bit, the same step time, the step's
# XLA compile shorter (digits 39-45 %, ResNet-8 11-27 %). Not for the text and ranking
# models: their steps compile slower with it (SASRec, joint NLU 1.7-1.8x), and the
# BiLSTM's also runs slower.
CONV_CPU_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


def add_runtime(c: ml_collections.ConfigDict, *, eval_batch_size: int = 512,
                checkpoint_every_steps: int = 200, keep_checkpoints: int = 3,
                cpu_compiler_options: dict | None = None) -> ml_collections.ConfigDict:
  """Adds the shared fields to ``c`` (in place) and returns it."""
  # Training-health monitors (jaxloss.monitors): thresholds and the codes that stop
  # the run cleanly (checkpoint written) when they fire, e.g. ("non_finite",).
  c.monitor = ml_collections.ConfigDict(monitors.default_thresholds())
  c.monitor.enabled = True
  c.monitor.halt_on = ()
  # A run whose diagnosis has an error ends with exit status 3 (summary.json records it);
  # False: exit 0 whatever the diagnosis.
  c.monitor.fail_on_error = True
  c.parallel = "shard_map"  # or "pmap" (single process)
  c.num_devices = ml_collections.config_dict.placeholder(int)  # None: all devices
  # "auto": "host" with several processes (each gathers its rows of the batch), else
  # "device" (the training set on every device, batches drawn in the step).
  c.train_input = "auto"
  # Several processes (jaxloss.distributed): set all three, or the JAXLOSS_* variables,
  # or auto_detect=True for JAX's detection on TPU pods / SLURM / Open MPI.
  c.distributed = ml_collections.ConfigDict({
      "coordinator_address": ml_collections.config_dict.placeholder(str),  # host:port
      "num_processes": ml_collections.config_dict.placeholder(int),
      "process_id": ml_collections.config_dict.placeholder(int),
      "auto_detect": False,
      "peer_timeout_s": 10.0,  # a silent peer for this long ends every process
      "heartbeat_timeout_s": 30,  # JAX's own coordination-service heartbeat
      "initialization_timeout_s": 120,
      "shutdown_timeout_s": 120,  # a finished process waits this long for the others
  })
  # XLA options for the steps when they run on the CPU (empty: XLA's defaults); they
  # change how long XLA takes to compile a step, not what it computes
  # (jaxloss.parallel.DataParallel; docs/bench_compile.md).
  c.cpu_compiler_options = ml_collections.ConfigDict(cpu_compiler_options or {})
  c.eval_batch_size = eval_batch_size
  # Evaluate every this many steps, at the curriculum's stage boundaries and at the end
  # (a train log period ends there too, mid-epoch if need be); None: the recipe's
  # cadence (every epoch, or every k-th). Model selection sees only these evaluations.
  c.eval_every_steps = ml_collections.config_dict.placeholder(int)
  c.checkpoint_every_steps = checkpoint_every_steps
  c.keep_checkpoints = keep_checkpoints
  c.progress = True
  # Stop (as if killed) before this step, leaving only the checkpoints saved so far.
  c.interrupt_at_step = ml_collections.config_dict.placeholder(int)
  return c
