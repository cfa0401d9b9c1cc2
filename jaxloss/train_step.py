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

from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxloss import losses
from jaxloss.curriculum import CompiledCurriculum, CurriculumState
from jaxloss.data.sampler import sample_indices, sampling_probabilities
from jaxloss.parallel import DATA_AXIS, device_varying, global_positions
from jaxloss.train_state import TrainState

# (logits [b, C], labels [b], knobs) -> (per-example loss [b], per-example weight [b])
LossFn = Callable[[jax.Array, jax.Array, Mapping[str, jax.Array]],
                  tuple[jax.Array, jax.Array]]
OPTIMIZERS = ("sgd", "adamw")


def make_optimizer(name: str = "sgd", *, learning_rate: float, momentum: float = 0.9,
                   weight_decay: float = 0.0, max_grad_norm: Optional[float] = None
                   ) -> optax.GradientTransformation:
  """Global-norm clipping, then SGD-momentum (coupled weight decay) or AdamW.

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
        learning_rate=learning_rate, momentum=momentum, nesterov=True))
  else:
    parts.append(optax.inject_hyperparams(optax.adamw)(
        learning_rate=learning_rate, weight_decay=weight_decay))
  return optax.chain(*parts)


def make_imbalance_loss(class_counts: np.ndarray, *, loss: str = "ce",
                        gamma: float = 2.0, weight_method: str = "inverse_frequency",
                        weight_normalize: Optional[str] = "head",
                        beta: float = 0.999) -> LossFn:
  """The imbalance recipe's loss: class-weighted, logit-adjusted CE (or focal).

  ``ℓ_i = w_{y_i} · L(z_i + τ·log π, y_i)`` with ``w = class_weights_from_counts(counts,
  cap=knobs["class_weight_cap"])`` and ``τ = knobs["tau"]``; ``L`` is cross-entropy
  (Menon et al., ICLR 2021, logit-adjusted loss) or softmax focal loss (Lin et al.,
  ICCV 2017). With ``weight_normalize="head"`` a cap of 1 gives uniform weights and
  τ = 0 gives plain cross-entropy, so the ERM baseline is the same step with other
  knob values.

  Returns:
    ``loss_fn(logits, labels, knobs) -> (loss [b], weight [b])``; the step reduces with
    ``Σ w·ℓ / Σ w`` (PyTorch's ``CrossEntropyLoss(weight=...)`` mean).

  Raises:
    ValueError: unknown ``loss``; bad counts (see ``class_weights_from_counts``).
  """
  if loss not in ("ce", "focal"):
    raise ValueError(f"loss must be 'ce' or 'focal', got {loss!r}")
  counts = np.asarray(class_counts)
  priors = losses.class_priors_from_counts(counts)
  # Validate the static arguments once, eagerly, with a concrete cap.
  losses.class_weights_from_counts(counts, method=weight_method, beta=beta,
                                   normalize=weight_normalize, cap=1.0)

  def loss_fn(logits, labels, knobs):
    weights = losses.class_weights_from_counts(
        counts, method=weight_method, beta=beta, normalize=weight_normalize,
        cap=knobs["class_weight_cap"])
    if loss == "ce":
      per_example = losses.logit_adjusted_softmax_cross_entropy(
          logits, labels, class_priors=priors, tau=knobs["tau"])
    else:
      adjusted = logits + knobs["tau"] * jnp.log(jnp.maximum(priors, 1e-12))
      per_example = losses.softmax_focal_loss_with_integer_labels(
          adjusted, labels, gamma=gamma)
    return per_example, weights[labels]

  return loss_fn


def make_train_step(*, curriculum: CompiledCurriculum, loss_fn: LossFn,
                    global_batch_size: int, num_devices: int,
                    class_counts: np.ndarray,
                    augment_fn: Optional[Callable] = None,
                    max_grad_norm: Optional[float] = None) -> Callable:
  """Builds the per-device train step body ``(state, data) -> (state, metrics)``.

  Args:
    curriculum: compiled curriculum; its knobs must include ``learning_rate`` and
      ``sampler_mix`` (``aug_strength`` if ``augment_fn`` is given) and whatever
      ``loss_fn`` reads.
    loss_fn: see :data:`LossFn`.
    global_batch_size: examples per step over all devices (divisible by
      ``num_devices``).
    num_devices: size of the ``data`` axis.
    class_counts: ``[C]`` training examples per class (for the sampler).
    augment_fn: ``(key, images [b, ...], positions [b], strength) -> images``.
    max_grad_norm: the clipping threshold in the optimizer, to report ``clipped``.

  ``data`` is the whole training set, replicated: ``{"image": [N, ...], "label": [N]}``.
  Metrics (identical on every device): ``loss``, ``grad_norm``, ``clipped``, ``finite``,
  ``stage`` and every knob value.

  Raises:
    ValueError: batch size not divisible by the number of devices; missing knobs.
  """
  if global_batch_size % num_devices:
    raise ValueError(
        f"batch_size must be divisible by the number of devices ({num_devices}), got "
        f"{global_batch_size}")
  needed = {"learning_rate", "sampler_mix"} | ({"aug_strength"} if augment_fn else set())
  missing = needed - set(curriculum.knobs)
  if missing:
    raise ValueError(f"curriculum is missing knobs {sorted(missing)}; it has "
                     f"{sorted(curriculum.knobs)}")
  local_batch = global_batch_size // num_devices
  counts = jnp.asarray(np.asarray(class_counts), jnp.float32)

  def body(state: TrainState, data: dict[str, jax.Array]):
    knobs = curriculum.values(state.step)
    step_key = jax.random.fold_in(state.rng, state.step)
    k_sample, k_aug = jax.random.split(step_key)
    probs = sampling_probabilities(data["label"], counts, knobs["sampler_mix"])
    indices = sample_indices(k_sample, probs, global_batch_size)
    positions = global_positions(local_batch)
    local = indices[positions]
    images, labels = data["image"][local], data["label"][local]
    if augment_fn is not None:
      images = augment_fn(k_aug, images, positions, knobs["aug_strength"])

    mutable = list(state.model_state) or False

    def objective(params):
      variables = {"params": params, **state.model_state}
      out = state.apply_fn(variables, images, train=True, mutable=mutable)
      logits, new_model_state = out if mutable else (out, {})
      per_example, weight = loss_fn(logits, labels, knobs)
      weight_sum = jax.lax.psum(jnp.sum(weight), DATA_AXIS)
      local_loss = jnp.sum(per_example * weight) / jnp.maximum(weight_sum, 1e-12)
      return local_loss, new_model_state

    (local_loss, new_model_state), grads = jax.value_and_grad(
        objective, has_aux=True)(device_varying(state.params))
    grads = jax.lax.psum(grads, DATA_AXIS)
    loss = jax.lax.psum(local_loss, DATA_AXIS)
    # Running statistics are synchronised by the model when it uses axis_name; the
    # pmean makes them identical on every device in any case (flax imagenet example).
    new_model_state = jax.lax.pmean(new_model_state, DATA_AXIS)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    opt_state = optax.tree_utils.tree_set(state.opt_state,
                                          learning_rate=knobs["learning_rate"])
    updates, new_opt_state = state.tx.update(grads, opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)

    def keep_if_finite(new, old):
      return jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)

    clipped = (grad_norm > max_grad_norm) if max_grad_norm else jnp.zeros((), bool)
    sums = state.train_sums
    new_sums = {
        "loss": sums["loss"] + jnp.where(finite, loss, 0.0),
        "steps": sums["steps"] + 1.0,
        "grad_norm": sums["grad_norm"] + jnp.where(finite, grad_norm, 0.0),
        "clipped": sums["clipped"] + clipped.astype(jnp.float32),
        "skipped": sums["skipped"] + (~finite).astype(jnp.float32),
    }
    new_step = state.step + 1
    new_state = state.replace(
        step=new_step,
        params=keep_if_finite(new_params, state.params),
        opt_state=keep_if_finite(new_opt_state, opt_state),
        model_state=keep_if_finite(new_model_state, state.model_state),
        curriculum=CurriculumState(stage=curriculum.stage_index(new_step)),
        skipped_steps=state.skipped_steps + (~finite).astype(jnp.int32),
        train_sums=new_sums,
    )
    metrics = {"loss": loss, "grad_norm": grad_norm, "clipped": clipped,
               "finite": finite, "stage": curriculum.stage_index(state.step), **knobs}
    return new_state, metrics

  return body


def make_eval_step(num_classes: int) -> Callable:
  """Builds the per-device eval body ``(state, batch) -> sums``.

  ``batch`` holds this device's ``image``, ``label`` and boolean ``mask`` (False for
  padding). Returns, psum-ed over devices, ``confusion`` (float32 ``[C, C]``, rows = true
  class, columns = predicted), ``loss_sum`` (cross-entropy over real examples) and
  ``count``. Uses the model in inference mode (running BN statistics).
  """

  def body(state: TrainState, batch):
    variables = {"params": state.params, **state.model_state}
    logits = state.apply_fn(variables, batch["image"], train=False)
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
