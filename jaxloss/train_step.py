"""Pure per-device train and eval step bodies, and the optimizer they expect.

A step body is launched on every device by :class:`jaxloss.parallel.DataParallel`
(``shard_map`` under ``jit``, or ``pmap``). Inside it:

1. the curriculum's schedules are evaluated on ``state.step`` (values, not branches);
2. the *global* batch indices are drawn from the run key folded with the step and the
   sampler mix (a pure function of seed, step and mix), and each device takes its slice;
3. augmentation is keyed by each example's global position;
4. the loss is the global weighted mean ``Σ w·ℓ / Σ w`` (the denominator psum-ed first,
   so any number of devices computes the same objective), gradients are psum-ed;
5. a non-finite loss or gradient skips the update (params, optimizer and model state are
   kept) and is counted, so no NaN ever reaches the parameters;
6. the LR comes from the curriculum and is written into the optimizer's hyperparameters
   (``optax.inject_hyperparams``), so it follows ``state.step`` even across skipped steps.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxloss import losses
from jaxloss.curriculum import CompiledCurriculum, CurriculumState
from jaxloss.monitors import stats as monitor_stats
from jaxloss.data.sampler import sample_indices, sampling_probabilities
from jaxloss.parallel import DATA_AXIS, device_varying, global_positions
from jaxloss.train_state import TrainState

# (outputs, labels [b], knobs) -> (per-example loss [b], per-example weight [b], aux)
# ``outputs`` is whatever the model returns (logits [b, C], or a dict of them); ``aux``
# is optional (a 2-tuple is accepted) and holds what the monitors read:
#   {"terms": {name: per-example term [b] (unweighted by λ)},
#    "heads": {name: logits [..., C] or (logits, where [...])}}
LossFn = Callable[[Any, jax.Array, Mapping[str, jax.Array]], tuple]
OPTIMIZERS = ("sgd", "adamw")


def make_optimizer(name: str = "sgd", *, learning_rate: float, momentum: float = 0.9,
                   weight_decay: float = 0.0, max_grad_norm: Optional[float] = None,
                   b2: float = 0.999, nesterov: bool = True
                   ) -> optax.GradientTransformation:
  """Global-norm clipping, then SGD-momentum (coupled weight decay) or AdamW.

  ``b2`` is AdamW's second-moment decay (0.98 in SASRec's reference code); unused by SGD.
  ``nesterov`` picks Nesterov momentum for SGD (plain heavy-ball momentum when False,
  as PyTorch's ``SGD(momentum=0.9)`` in the CIFAR-LT reference code); unused by AdamW.

  The LR is an injected hyperparameter so that the train step can set it from the
  curriculum on every step.

  Raises:
    ValueError: unknown ``name``, ``learning_rate <= 0`` or ``max_grad_norm <= 0``.
  """
  if name not in OPTIMIZERS:
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
  if not learning_rate > 0:
    raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
  parts = []
  if max_grad_norm is not None:
    if not max_grad_norm > 0:
      raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm}")
    parts.append(optax.clip_by_global_norm(max_grad_norm))
  if name == "sgd":
    if weight_decay:
      parts.append(optax.add_decayed_weights(weight_decay))
    parts.append(optax.inject_hyperparams(optax.sgd)(
        learning_rate=learning_rate, momentum=momentum, nesterov=nesterov))
  else:
    if not 0 < b2 < 1:
      raise ValueError(f"b2 must be in (0, 1), got {b2}")
    parts.append(optax.inject_hyperparams(optax.adamw)(
        learning_rate=learning_rate, b2=b2, weight_decay=weight_decay))
  return optax.chain(*parts)


DATA_LAYOUTS = ("dataset", "batch")


def class_mix_indices(rng: jax.Array, step: jax.Array, labels: jax.Array,
                      class_counts: jax.Array, mix: jax.Array,
                      global_batch_size: int) -> jax.Array:
  """The example indices of step ``step``'s global batch under the class-mix sampler:
  :func:`jaxloss.data.sampler.sample_indices` keyed by the first half of
  ``split(fold_in(rng, step))`` (the second half keys augmentation). A pure function
  of the run's key, the step and the mix, so the train step (on device) and a
  per-process input pipeline (on the host, which then keeps its own rows) draw the
  same batch.

  Args:
    rng: the run's raw ``uint32[2]`` key (``TrainState.rng``).
    step: int scalar.
    labels: int ``[N]`` training labels.
    class_counts: ``[C]`` float.
    mix: the ``sampler_mix`` knob at ``step``.
    global_batch_size: static.

  Returns:
    int32 ``[global_batch_size]``.
  """
  k_sample, _ = jax.random.split(jax.random.fold_in(rng, step))
  probs = sampling_probabilities(labels, class_counts, mix)
  return sample_indices(k_sample, probs, global_batch_size)


def make_train_step(*, curriculum: CompiledCurriculum, loss_fn: LossFn,
                    global_batch_size: int, num_devices: int,
                    class_counts: np.ndarray,
                    augment_fn: Optional[Callable] = None,
                    max_grad_norm: Optional[float] = None,
                    monitor: Optional[monitor_stats.MonitorSpec] = None,
                    input_keys: Sequence[str] = ("image",),
                    sampler: Optional[Callable] = None,
                    data_layout: str = "dataset",
                    ema_decay: Optional[float] = None) -> Callable:
  """Builds the per-device train step body ``(state, data[, member_knobs]) ->
  (state, metrics)``.

  Args:
    curriculum: compiled curriculum; its knobs must include ``learning_rate`` and
      ``sampler_mix`` (``aug_strength`` if ``augment_fn`` is given) and whatever
      ``loss_fn`` reads.
    loss_fn: see :data:`LossFn`.
    global_batch_size: examples per step over all devices (divisible by
      ``num_devices``).
    num_devices: size of the ``data`` axis.
    class_counts: ``[C]`` training examples per class (for the default class-mix
      sampler; unused with ``sampler``).
    augment_fn: ``(key, inputs[0] [b, ...], positions [b], strength) -> inputs[0]``.
    max_grad_norm: the clipping threshold in the optimizer, to report ``clipped``.
    monitor: what to measure for the training-health monitors (per-term loss values,
      predicted-class histograms per head, max gradient norm, non-finite gradient
      elements), accumulated in ``state.train_sums``, whose structure must be
      ``monitors.zero_sums(monitor)``. None measures only the base sums.

    input_keys: the fields of ``data`` passed, in order, as the model's positional
      inputs (``("ids", "lengths")`` for a text model).
    sampler: ``(rng, step, data, knobs) -> int32 [global_batch_size]`` indices of the
      step's global batch (e.g. :func:`jaxloss.data.sampler.epoch_permutation_indices`);
      None draws them with the curriculum's class-mix sampler (knob ``sampler_mix``).
      When ``state.sampler_cache`` is not None the step calls the sampler's cached
      form instead, ``sampler.cached(rng, step, data, knobs, cache) -> (indices,
      cache)`` (the same indices; e.g.
      :class:`jaxloss.data.sampler.EpochPermutationSampler`), and carries the new
      cache in the state.
    data_layout: ``"dataset"`` (default): ``data`` is the whole training set,
      replicated, and the step draws its batch on device. ``"batch"``: ``data`` is the
      step's global batch, split along ``data`` (launch with ``batch_sharded=True``),
      drawn on the host by :func:`class_mix_indices` (or ``sampler``) with the same key
      and assembled per process (:meth:`jaxloss.parallel.DataParallel.assemble_batch`):
      the multi-process input path. Both give the same batch, positions and keys.
    ema_decay: None, or the decay ``d`` of an exponential moving average of the
      parameters kept in ``state.ema_params`` (which must then hold a copy of the
      parameters at step 0): after the update of step ``t`` (0-based),
      ``ema ← d_t·ema + (1 − d_t)·params`` with ``d_t = min(d, (1 + t) / (10 + t))``,
      the warm-up of TensorFlow's ``ExponentialMovingAverage(num_updates=t)``, so
      early averages are not dominated by the initialisation. A skipped (non-finite)
      step leaves it unchanged, as it leaves the parameters (Polyak & Juditsky, 1992).

  ``data`` is the whole training set, replicated: ``{"image": [N, ...], "label": [N]}``
  (or the ``input_keys`` fields and a ``label`` of any shape ``[N, ...]``, or a dict of
  such arrays for a multi-head model, e.g. ``{"tags": [N, T], "intent": [N]}``). The optional
  third argument ``member_knobs`` (a dict of scalars) is merged over the curriculum's
  knobs: ``jax.vmap(body, in_axes=(0, None, 0))`` trains an ensemble whose members
  differ in those values (e.g. loss weights) in one compiled step.
  Metrics (identical on every device): ``loss``, ``grad_norm``, ``clipped``, ``finite``,
  ``stage``, every knob value and, with ``monitor``, ``term/<name>`` for each term.

  Raises:
    ValueError: batch size not divisible by the number of devices; missing knobs;
      ``ema_decay`` outside (0, 1); (at trace time) a loss function that does not
      report the terms or heads ``monitor`` names, or ``ema_decay`` with a state whose
      ``ema_params`` is None.
  """
  if ema_decay is not None and not 0 < ema_decay < 1:
    raise ValueError(f"ema_decay must be in (0, 1) or None, got {ema_decay}")
  if data_layout not in DATA_LAYOUTS:
    raise ValueError(f"data_layout must be one of {DATA_LAYOUTS}, got {data_layout!r}")
  if global_batch_size % num_devices:
    raise ValueError(
        f"batch_size must be divisible by the number of devices ({num_devices}), got "
        f"{global_batch_size}")
  on_device = data_layout == "dataset"
  needed = ({"learning_rate"}
            | ({"sampler_mix"} if sampler is None and on_device else set())
            | ({"aug_strength"} if augment_fn else set()))
  missing = needed - set(curriculum.knobs)
  if missing:
    raise ValueError(f"curriculum is missing knobs {sorted(missing)}; it has "
                     f"{sorted(curriculum.knobs)}")
  local_batch = global_batch_size // num_devices
  counts = (jnp.asarray(np.asarray(class_counts), jnp.float32)
            if sampler is None and on_device else None)
  input_keys = tuple(input_keys)

  def body(state: TrainState, data: dict[str, jax.Array], member_knobs=None):
    knobs = {**curriculum.values(state.step), **(member_knobs or {})}
    step_key = jax.random.fold_in(state.rng, state.step)
    _, k_aug = jax.random.split(step_key)
    # Dropout differs per device (its examples differ); folded, not split, so the
    # sampling and augmentation keys are those of a model without dropout.
    k_dropout = jax.random.fold_in(jax.random.fold_in(step_key, 2),
                                   jax.lax.axis_index(DATA_AXIS))
    positions = global_positions(local_batch)
    sampler_cache = state.sampler_cache
    if on_device:
      if sampler is None:
        indices = class_mix_indices(state.rng, state.step, data["label"], counts,
                                    knobs["sampler_mix"], global_batch_size)
      elif state.sampler_cache is not None:  # the same indices, computed cheaper
        indices, sampler_cache = sampler.cached(state.rng, state.step, data, knobs,
                                                state.sampler_cache)
      else:
        indices = sampler(state.rng, state.step, data, knobs)
      local = indices[positions]
      inputs = [data[k][local] for k in input_keys]
      labels = jax.tree.map(lambda x: x[local], data["label"])
    else:  # this device's rows of the global batch, gathered on the host
      inputs = [data[k] for k in input_keys]
      labels = data["label"]
    if augment_fn is not None:
      inputs[0] = augment_fn(k_aug, inputs[0], positions, knobs["aug_strength"])

    mutable = list(state.model_state) or False

    def objective(params):
      variables = {"params": params, **state.model_state}
      out = state.apply_fn(variables, *inputs, train=True, mutable=mutable,
                           rngs={"dropout": k_dropout})
      outputs, new_model_state = out if mutable else (out, {})
      per_example, weight, *rest = loss_fn(outputs, labels, knobs)
      aux = rest[0] if rest else {}
      weight_sum = jax.lax.psum(jnp.sum(weight), DATA_AXIS)
      denominator = jnp.maximum(weight_sum, 1e-12)
      local_loss = jnp.sum(per_example * weight) / denominator
      observed = {}
      if monitor is not None:
        monitor_stats.check_loss_aux(monitor, aux)
        # Each term weighted like the total, so total = Σ λ·term exactly.
        for name in monitor.terms:
          observed[f"term/{name}"] = jnp.sum(aux["terms"][name] * weight) / denominator
        heads = monitor_stats.normalize_heads(aux.get("heads", {}))
        for name, head in monitor.heads:
          head_logits, where = heads[name]
          head_logits = jax.lax.stop_gradient(head_logits)
          observed[f"pred/{name}"] = monitor_stats.predicted_class_counts(
              head_logits, where)
          if head.o_index is not None:
            valid = (jnp.ones(head_logits.shape[:-1], bool) if where is None
                     else jnp.asarray(where, bool))
            predicted = jnp.argmax(head_logits, axis=-1)
            observed[f"tokens/{name}"] = jnp.sum(valid.astype(jnp.float32))
            observed[f"non_o/{name}"] = jnp.sum(
                (valid & (predicted != head.o_index)).astype(jnp.float32))
      observed = jax.lax.stop_gradient(observed)
      return local_loss, (new_model_state, observed)

    (local_loss, (new_model_state, observed)), grads = jax.value_and_grad(
        objective, has_aux=True)(device_varying(state.params))
    grads = jax.lax.psum(grads, DATA_AXIS)
    observed = jax.lax.psum(observed, DATA_AXIS)
    loss = jax.lax.psum(local_loss, DATA_AXIS)
    # Running statistics are synchronised by the model when it uses axis_name; the
    # pmean makes them identical on every device in any case (flax imagenet example).
    new_model_state = jax.lax.pmean(new_model_state, DATA_AXIS)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    opt_state = optax.tree_utils.tree_set(state.opt_state,
                                          learning_rate=knobs["learning_rate"])
    if ema_decay is not None and state.ema_params is None:
      raise ValueError("ema_decay is set but state.ema_params is None: start the "
                       "average with state.replace(ema_params=state.params)")

    def apply_update(operands):
      params, opt_state, _, ema_params = operands
      updates, new_opt_state = state.tx.update(grads, opt_state, params)
      new_params = optax.apply_updates(params, updates)
      if ema_decay is not None:
        t = state.step.astype(jnp.float32)
        d = jnp.minimum(jnp.float32(ema_decay), (1.0 + t) / (10.0 + t))
        ema_params = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema_params,
                                  new_params)
      return new_params, new_opt_state, new_model_state, ema_params

    # A non-finite step leaves the parameters, the optimizer state, the batch
    # statistics and the average as they were: a cond, where a select per array made
    # one more kernel per array for XLA:CPU to compile.
    kept_params, kept_opt_state, kept_model_state, ema_params = jax.lax.cond(
        finite, apply_update, lambda operands: operands,
        (state.params, opt_state, state.model_state, state.ema_params))

    clipped = (grad_norm > max_grad_norm) if max_grad_norm else jnp.zeros((), bool)
    step_stats = {"loss": loss, "steps": jnp.ones((), jnp.float32),
                  "grad_norm": grad_norm, "clipped": clipped.astype(jnp.float32),
                  "skipped": (~finite).astype(jnp.float32), **observed}
    if monitor is not None:
      step_stats["grad_norm_max"] = grad_norm
      step_stats["nonfinite_grads"] = monitor_stats.nonfinite_count(grads)
    new_sums = monitor_stats.accumulate(state.train_sums, step_stats, finite)
    new_step = state.step + 1
    new_state = state.replace(
        step=new_step,
        params=kept_params,
        ema_params=ema_params,
        opt_state=kept_opt_state,
        model_state=kept_model_state,
        curriculum=CurriculumState(stage=curriculum.stage_index(new_step)),
        skipped_steps=state.skipped_steps + (~finite).astype(jnp.int32),
        train_sums=new_sums,
        sampler_cache=sampler_cache,
    )
    metrics = {"loss": loss, "grad_norm": grad_norm, "clipped": clipped,
               "finite": finite, "stage": curriculum.stage_index(state.step), **knobs,
               **{k: v for k, v in observed.items() if k.startswith("term/")}}
    return new_state, metrics

  return body


def eval_logits(state: TrainState, inputs: Sequence[jax.Array], *,
                eval_call: Optional[jax.Array] = None) -> jax.Array:
  """The model's logits in inference mode (running BN statistics, no dropout), inside a
  mapped eval body. With ``eval_call`` (an evaluation's ordinal) dropout stays on, keyed
  by it and the device: the classic bug the ``eval_nondeterministic`` monitor catches
  (the failure-mode configs only)."""
  variables = {"params": state.params, **state.model_state}
  if eval_call is not None:
    key = jax.random.fold_in(jax.random.fold_in(state.rng, eval_call),
                             jax.lax.axis_index(DATA_AXIS))
    out = state.apply_fn(variables, *inputs, train=False, dropout=True,
                         rngs={"dropout": key})
  else:
    out = state.apply_fn(variables, *inputs, train=False)
  return out["logits"] if isinstance(out, Mapping) else out


def make_eval_step(num_classes: int, *, dropout_in_eval: bool = False,
                   input_keys: Sequence[str] = ("image",)) -> Callable:
  """Builds the per-device eval body ``(state, batch) -> sums``.

  ``batch`` holds this device's model inputs (the ``input_keys`` fields, ``image`` by
  default, ``("ids", "lengths")`` for a text model), ``label`` and boolean ``mask``
  (False for padding). Returns, psum-ed over devices, ``confusion`` (float32 ``[C, C]``, rows = true
  class, columns = predicted), ``loss_sum`` (cross-entropy over real examples) and
  ``count``. Uses the model in inference mode (running BN statistics, no dropout).

  Args:
    num_classes: C.
    dropout_in_eval: reproduces a classic bug for the ``eval_nondeterministic``
      monitor: dropout stays on in evaluation, keyed by ``batch["eval_call"]`` (a
      per-call counter, as code that draws a fresh key per evaluation would). Never set
      it in a real run.
  """

  input_keys = tuple(input_keys)

  def body(state: TrainState, batch):
    logits = eval_logits(state, [batch[k] for k in input_keys],
                         eval_call=batch["eval_call"][0] if dropout_in_eval else None)
    mask = batch["mask"]
    labels = jnp.where(mask, batch["label"], 0)
    predictions = jnp.argmax(logits, axis=-1)
    confusion = jnp.zeros((num_classes, num_classes), jnp.float32).at[
        labels, predictions].add(mask.astype(jnp.float32))
    ce = losses.softmax_cross_entropy_with_integer_labels(logits, labels, where=mask)
    sums = {"confusion": confusion, "loss_sum": jnp.sum(ce),
            "count": jnp.sum(mask.astype(jnp.float32))}
    return jax.lax.psum(sums, DATA_AXIS)

  return body
