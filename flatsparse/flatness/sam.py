"""Sharpness-aware minimization as one opaque Optax transformation.

Per step, with gradient ``g`` at ``w`` and the loss ``f = value_fn``::

    e   = rho * g / ||g||                       (SAM; global norm)
    e   = rho * T^2 g / ||T g||,  T = |w| + eta (ASAM, element-wise)
    g~  = grad f(w + e)                         (the update passed on)

Both gradients are taken inside one ``update`` call (``value_fn`` is the
extra argument a train step passes; see ``flatsparse/train/step.py``), so
counters tick once per step and the transform sits first in any chain:
``optax.chain(sam(0.05), optax.sgd(0.1))``.

SAM must come first, where its input is the raw gradient:
``chain(sam(rho), adamw(...))``, never ``chain(adamw(...), sam(rho))``. Placed
after an optimizer it perturbs along the optimizer's update instead of the
gradient and then emits the raw sharp gradient ``grad f(w + e)`` as the
parameter update (no learning rate, wrong sign). This cannot be detected
cheaply (see :func:`sam`); ``flatsparse.train`` always puts it first.

``value_fn`` must return the scalar loss only (``lambda p: loss_fn(p)[0]``
for a ``loss_fn`` returning ``(loss, aux)``); anything else is a
``TypeError`` at trace time naming what it returned.
Inside a sparsity wrapper, ``sparse=True`` perturbs only active weights: the
wrapper passes its masks as the extra argument ``masks`` (``None`` on dense
leaves), and masked entries of ``e`` are zero.

m-sharpness (``sub_batches=m > 1``): under ``jax.jit`` with sharded data the
norm ``||g||`` above is that of the global gradient. The original SAM (and
the SAM-overparameterization study) perturbs each device's weights with its
own gradient; ``sub_batches=m`` does the same on ``m`` equal sub-batches of
the batch, with their losses ``f_i``::

    g_i = grad f_i(w),   e_i = rho * g_i / ||g_i||   (or ASAM's e_i)
    g~  = (1/m) sum_i grad f_i(w + e_i)

It needs a second extra argument of the protocol, ``sub_batch_value_fn``:
``(params, i) -> loss on the i-th of the m sub-batches`` (``i`` a traced
int32 index; the ``m`` sub-batches are ``vmap``-ped), on the same rng and
batch statistics as ``value_fn``. ``flatsparse.train.make_train_step(...,
sub_batches=m)`` passes it, with an attribute ``sub_batches = m`` that
``sam`` checks against its own ``m`` when present (a mismatch is an error).
The incoming gradient ``g`` is not used then (each ``g_i`` is recomputed on
its sub-batch): a step costs three gradient passes over the batch instead
of two. With BatchNorm in train mode each sub-batch is normalized with its
own statistics (as on separate devices).

BatchNorm: the batch statistics of the first forward pass are kept; the
perturbed pass must not change them. ``value_fn`` closes over the statistics
from before the step and discards the ones its pass computes (in train mode
the loss does not depend on the running statistics, only their update does).
``flatsparse.train.make_train_step`` does exactly this; by hand:

  >>> import flax.linen as nn
  >>> import jax
  >>> import jax.numpy as jnp
  >>> import optax
  >>> from flatsparse.flatness import sam
  >>> class Net(nn.Module):
  ...   @nn.compact
  ...   def __call__(self, x, train: bool):
  ...     x = nn.BatchNorm(use_running_average=not train)(nn.Dense(8)(x))
  ...     return nn.Dense(3)(nn.relu(x))
  >>> net = Net()
  >>> x = jax.random.normal(jax.random.PRNGKey(0), (16, 4))
  >>> y = jnp.arange(16) % 3
  >>> variables = net.init(jax.random.PRNGKey(1), x, train=False)
  >>> params, stats = variables["params"], variables["batch_stats"]
  >>> def loss_fn(params, stats):
  ...   logits, new = net.apply({"params": params, "batch_stats": stats}, x,
  ...                           train=True, mutable=["batch_stats"])
  ...   loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
  ...   return loss.mean(), new["batch_stats"]
  >>> tx = optax.chain(sam(rho=0.05), optax.sgd(0.1))
  >>> @jax.jit
  ... def step(params, stats, opt_state):
  ...   (loss, new_stats), grads = jax.value_and_grad(
  ...       loss_fn, has_aux=True)(params, stats)
  ...   # The perturbed pass sees the pre-step statistics; its update is
  ...   # dropped (the [0]), so only the first pass's statistics are kept.
  ...   value_fn = lambda p: loss_fn(p, stats)[0]
  ...   updates, opt_state = tx.update(grads, opt_state, params,
  ...                                  value_fn=value_fn)
  ...   return optax.apply_updates(params, updates), new_stats, opt_state
  >>> new_params, new_stats, _ = step(params, stats, tx.init(params))
  >>> first_pass = loss_fn(params, stats)[1]
  >>> all(jax.tree.leaves(jax.tree.map(jnp.array_equal, new_stats,
  ...                                  first_pass)))
  True

References:
  Foret et al., "Sharpness-Aware Minimization for Efficiently Improving
  Generalization", ICLR 2021 (m-sharpness: sec. 4.1).
  Kwon et al., "ASAM: Adaptive Sharpness-Aware Minimization", ICML 2021.
  Shin, Lee, Andriushchenko & Lee, "Critical Influence of
  Overparameterization on Sharpness-aware Minimization", 2024.
"""

from __future__ import annotations

from collections.abc import Callable
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from flatsparse import protocol

__all__ = ["SAMState", "sam", "perturbation", "checked_value_fn",
           "static_count"]


def checked_value_fn(value_fn: Callable[..., Any], name: str = "value_fn"
                     ) -> Callable[..., jax.Array]:
  """``value_fn`` with its output checked when traced (no runtime cost).

  ``jax.grad`` of a function returning ``(loss, aux)``, a batch of losses or
  an integer ends deep in a trace with a dump of tracers; this raises first,
  naming what ``value_fn`` returned and the fix.

  Args:
    value_fn: ``params -> loss`` (extra arguments are passed through).
    name: what the message calls it (``'value_fn'``,
      ``'sub_batch_value_fn'``).

  Returns:
    A function with the same arguments and output.

  Raises:
    TypeError: when called, unless ``value_fn`` returns a scalar
      floating-point array.
  """
  def checked(*args, **kwargs):
    out = value_fn(*args, **kwargs)
    fix = (f"{name} must return the scalar loss only (a float array of "
           "shape ())")
    if isinstance(out, (tuple, list, dict)):
      raise TypeError(
          f"{fix}, got a {type(out).__name__} of {len(out)} items; drop the "
          f"auxiliary outputs, e.g. {name}=lambda p: loss_fn(p)[0].")
    shape, dtype = jnp.shape(out), jnp.result_type(out)
    if shape != ():
      raise TypeError(f"{fix}, got an array of shape {shape}; reduce it, e.g. "
                      "with .mean().")
    if not jnp.issubdtype(dtype, jnp.floating):
      raise TypeError(f"{fix}, got dtype {dtype}.")
    return out
  return checked


def static_count(name: str, value: Any, meaning: str = "") -> int:
  """``value`` as a static Python int >= 1, ``None`` meaning 1.

  For counts that fix shapes or loop lengths (``sub_batches`` here,
  ``num_probes`` of the second-order optimizers): ``None`` as a factory's
  default keeps ``optax.inject_hyperparams(factory)`` from turning the count
  into a traced array (it injects every numeric argument, defaults
  included); an explicit count must then be in ``static_args``.

  Args:
    name: the argument's name, for the error.
    value: None or an int >= 1.
    meaning: said in the error after ``>= 1`` (e.g. ``' (1: plain SAM)'``).

  Returns:
    The count.

  Raises:
    ValueError: anything else.
  """
  if value is None:
    return 1
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(
        f"{name} must be a static int >= 1{meaning} or None for 1, got "
        f"{value!r}; under optax.inject_hyperparams list it in static_args.")
  return value


class SAMState(NamedTuple):
  """SAM keeps only a step counter (for logging and schedules)."""

  count: jax.Array


def perturbation(grads: Any, params: Any, rho: Any, *, adaptive: bool = False,
                 eta: float = 0.01, eps: float = 1e-12,
                 masks: Any = None) -> Any:
  """The ascent step ``e`` (see the module docstring), masked if given."""
  if masks is not None:
    grads = jax.tree.map(
        lambda m, g: g if m is None else jnp.where(m, g, 0), masks, grads,
        is_leaf=lambda x: x is None)
  if adaptive:
    scale = jax.tree.map(lambda w: jnp.abs(w) + eta, params)
    scaled = jax.tree.map(jnp.multiply, scale, grads)
    norm = optax.tree.norm(scaled)
    return jax.tree.map(lambda t, s: rho * t * s / (norm + eps), scale, scaled)
  norm = optax.tree.norm(grads)
  return jax.tree.map(lambda g: (rho * g / (norm + eps)).astype(g.dtype), grads)


def sam(rho: float = 0.05, *, adaptive: bool = False, eta: float = 0.01,
        sparse: bool = True, eps: float = 1e-12,
        sub_batches: int | None = None
        ) -> optax.GradientTransformationExtraArgs:
  """SAM (or ASAM with ``adaptive=True``): returns ``grad f(w + e)``.

  Args:
    rho: radius of the perturbation, >= 0 (0 gives the plain gradient at
      the cost of a second evaluation). May be injected as a hyperparameter.
    adaptive: ASAM's element-wise scaling ``T = |w| + eta``.
    eta: ASAM's offset.
    sparse: perturb only active weights when a sparsity wrapper passes
      ``masks``.
    eps: guards the division by the gradient norm.
    sub_batches: ``m`` of m-sharpness, a static int >= 1, or None for 1
      (plain SAM): with ``m > 1`` each of ``m`` equal sub-batches gets its
      own perturbation and the sharp gradients are averaged (module
      docstring); needs the extra argument ``sub_batch_value_fn``. None as
      the default keeps ``optax.inject_hyperparams(sam)`` from turning it
      into an array; an explicit ``m`` must be in its ``static_args``.

  Returns:
    A transformation needing the extra argument ``value_fn`` (``m = 1``) or
    ``sub_batch_value_fn`` (``m > 1``).

  Raises:
    ValueError: ``rho`` is negative, nan, inf or not a number; or bad
      ``sub_batches``; at ``update``, a missing ``value_fn``.
    TypeError: at trace time, when ``value_fn`` does not return a scalar
      float loss (e.g. ``(loss, aux)``: pass ``lambda p: loss_fn(p)[0]``).

  Note:
    SAM must be the FIRST transformation of a chain, where its input is the
    gradient: ``optax.chain(sam(rho), optax.adamw(lr))`` (inside a sparsity
    wrapper: ``wrap(chain(sam(rho), adamw(lr)))``). In
    ``chain(adamw(lr), sam(rho))`` it would perturb along adamw's update and
    emit the raw sharp gradient as the parameter update (no learning rate,
    ascent). This is not checked: a transform cannot see its position in a
    chain, and telling a gradient from another pytree of the same shape
    would take a third gradient evaluation per step, or a host callback, to
    compare ``updates`` with ``grad value_fn(params)``.
  """
  if not isinstance(rho, jax.core.Tracer):  # traced under inject_hyperparams
    try:
      value = math.nan if isinstance(rho, (str, bytes, bool)) else float(rho)
    except (TypeError, ValueError):
      value = math.nan
    if not (math.isfinite(value) and value >= 0):
      raise ValueError(f"rho must be >= 0, got {rho!r}; allowed: a finite "
                       "number >= 0.")
  sub_batches = static_count("sub_batches", sub_batches,
                             " (1: plain SAM, m > 1: m-sharpness)")

  def init_fn(params):
    del params
    return SAMState(count=jnp.zeros([], jnp.int32))

  def sharp_mean(updates, params, sub_batch_value_fn, masks):
    """``(1/m) sum_i grad f_i(w + e_i)``: the m sub-batches under vmap."""
    checked = checked_value_fn(sub_batch_value_fn, "sub_batch_value_fn")

    def one(i):
      f_i = lambda p: checked(p, i)  # noqa: E731
      e = perturbation(jax.grad(f_i)(params), params, rho, adaptive=adaptive,
                       eta=eta, eps=eps, masks=masks)
      return jax.grad(f_i)(
          jax.tree.map(lambda w, d: w + d.astype(w.dtype), params, e))

    stacked = jax.vmap(one)(jnp.arange(sub_batches, dtype=jnp.int32))
    return jax.tree.map(lambda s, g: jnp.mean(s, axis=0).astype(g.dtype),
                        stacked, updates)

  def update_fn(updates, state, params=None, *,
                value_fn: Callable[[Any], jax.Array] | None = None,
                sub_batch_value_fn: Callable[[Any, jax.Array], jax.Array]
                | None = None, masks: Any = None, **extra):
    del extra
    masks = masks if sparse else None
    given = getattr(sub_batch_value_fn, "sub_batches", sub_batches)
    if given != sub_batches:
      raise ValueError(
          f"sam(sub_batches={sub_batches}) got a sub_batch_value_fn over "
          f"{given} sub-batches; build the train step with "
          f"sub_batches={sub_batches} (or sam with sub_batches={given}).")
    count = optax.safe_int32_increment(state.count)
    if sub_batches > 1:
      protocol.require(f"sam(sub_batches={sub_batches})", "sub_batch_value_fn",
                       sub_batch_value_fn, params=params)
      return (sharp_mean(updates, params, sub_batch_value_fn, masks),
              SAMState(count=count))
    protocol.require("sam", "value_fn", value_fn, params=params)
    e = perturbation(updates, params, rho, adaptive=adaptive, eta=eta, eps=eps,
                     masks=masks)
    perturbed = jax.tree.map(lambda w, d: w + d.astype(w.dtype), params, e)
    sharp_grads = jax.grad(checked_value_fn(value_fn))(perturbed)
    sharp_grads = jax.tree.map(lambda s, g: s.astype(g.dtype), sharp_grads,
                               updates)
    return sharp_grads, SAMState(count=count)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
