"""The sparse-training wrapper: masks live in the optimizer state.

``updater.wrap(inner)`` returns an ``optax.GradientTransformationExtraArgs``
whose state is :class:`SparseState` (inner state, masks, step counter, PRNG
key). Per step ``t``, with parameters ``p``, gradients ``g`` and old masks
``m0``::

    u      = inner.update(g, inner_state, p)              # any optax optimizer
    m1     = new_masks(p, g, m0, t) if is_update_step(t) else m0
    u'     = where(m0 & m1, u, -p)                        # masked weights -> 0

so ``optax.apply_updates(p, u')`` alone keeps the model exactly sparse
(``p + (-p) == 0`` in floating point) and kept weights get exactly the inner
update; no second call in the training loop. Scores see the current weights
and gradients (as RigL does). Weights that (re)grow start at zero, and for
algorithms that regrow (SET, RigL, AC/DC) their optimizer moments are reset.
STE variants leave the dense weights untouched (``u' = u``) and the forward pass
uses :func:`masked_params`.

The wrapper must be the outermost transformation: ``wrap(chain(...))``, not
``chain(wrap(...), ...)``. A later transformation (``optax.scale``, clipping,
a second optimizer) would move pruned weights off zero, and nothing inside a
jitted step can see what comes after it; :func:`check_sparse` (host-side,
run at each evaluation by ``flatsparse.train``) finds the nonzero pruned
weights and says so.

Gradient accumulation with ``optax.MultiSteps`` (pinned by
``tests/sparsity/test_guards.py``):

* ``MultiSteps(wrap(inner), k)`` (recommended): the wrapper runs only on the
  emitting mini-step, so its counter, and every schedule step
  (``update_freq``, ``update_end_step``, ...), counts optimizer steps
  (``k`` mini-steps each); scores see the averaged gradient; mini-steps in
  between emit zeros, so the weights stay exactly sparse.
* ``wrap(MultiSteps(inner, k))``: the wrapper runs on every mini-step, so
  its schedule counts mini-steps and scores see one mini-batch's gradient.

``flatsparse.train``'s ``accum_steps`` averages micro-batches inside one step
(one ``update``), so there too the schedule counts optimizer steps.

Host-scheduled mask updates: on GPUs, XLA's conditional reads its predicate on
the host every step. A training loop that knows the step on the host can pass
``mask_update=bool(updater.is_update_step(t))`` as an extra argument (a static
argument of its jitted step): two compiled steps, no conditional in either. The
counter still ticks, and results equal the ``lax.cond`` path.
``flatsparse.train`` does this by default off the CPU
(``config.host_mask_schedule``).

References:
  Lee et al., "JaxPruner: A concise library for sparsity research", CPAL 2024.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import dataclasses
from typing import Any, ClassVar, NamedTuple
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flatsparse import rng
from flatsparse import tree_utils
from flatsparse.sparsity import distributions
from flatsparse.sparsity import importance as importance_lib
from flatsparse.sparsity import masks as masks_lib
from flatsparse.sparsity import schedules
from flatsparse.sparsity import spec
from flatsparse.tree_utils import is_none
from flatsparse.tree_utils import map_masked

__all__ = [
    "SparseState",
    "SparseUpdater",
    "apply_masks",
    "masked_params",
    "get_masks",
    "find_sparse_state",
    "check_sparse",
    "vmap_axes",
    "reset_where_grown",
    "summarize_sparsity",
    "format_sparsity_table",
]

Array = jax.Array


class SparseState(NamedTuple):
  """State of a wrapped optimizer.

  Attributes:
    inner_state: the wrapped optimizer's state.
    masks: pytree like the params: a mask (uint8, or bit-packed uint8 along the
      last axis) for each prunable leaf, ``None`` for dense leaves.
    count: int32 number of ``update`` calls so far (keep it unbatched under
      ``vmap``; see :func:`vmap_axes`).
    key: base PRNG key; step ``t`` uses ``fold_in(key, t)``, computed only on
      mask-update steps.
  """

  inner_state: optax.OptState
  masks: Any
  count: Array
  key: Array


@dataclasses.dataclass(frozen=True, kw_only=True)
class SparseUpdater:
  """Prune-by-score updater; algorithms subclass it.

  The mask specification (``scope``, ``distribution``, ``overrides``,
  ``is_prunable``, ``importance``, ``min_kept``, ``global_normalization``)
  is the vocabulary SAFE's ``Projection`` shares (``flatsparse.sparsity.
  spec``); the old argument names ``structure`` and ``score`` are errors
  naming the new ones.

  Attributes:
    sparsity: target fraction of zeros in [0, 1).
    scope: ``'layer'`` (default: each leaf keeps its own count), ``'2:4'``
      (N:M), ``'block:4x4'``, ``'channel'``, or a structure from ``masks``;
      ``'global'`` is :class:`~flatsparse.sparsity.GlobalPruning`'s.
    distribution: ``'uniform'`` or ``'erk'`` (see ``distributions``).
    overrides: ``{leaf path: sparsity}`` fixed per leaf (also selects a leaf
      that ``is_prunable`` leaves dense).
    is_prunable: ``(path, leaf) -> bool``; default: the kernels
      (floating-point leaves named ``kernel`` with ``ndim > 1``,
      ``spec.default_is_prunable``).
    importance: ``'magnitude'``, ``'random'``, ``'saliency'`` or a callable
      ``(weights, grads, key) -> scores`` (``flatsparse.sparsity.importance``).
    min_kept: the fewest weights (blocks, channels) a prunable leaf keeps,
      whatever its sparsity (default 1: no layer is disconnected; 0 allows
      empty leaves). Counts are ``max(n - round(s n), min(min_kept, n))``.
    global_normalization: ``'none'``, or ``'l2'`` for the global scope (each
      leaf's scores divided by their L2 norm before the shared ranking).
    schedule: when and to what sparsity masks are updated.
    mask_storage: ``'uint8'`` (1 byte per weight) or ``'packed'`` (1 bit).
    seed: an int or a PRNG key (may be traced, e.g. under ``vmap``): the
      base key kept in the state (``flatsparse.rng``). ``flatsparse.train``
      derives it from the run's seed.
    ste: straight-through: weights stay dense, the forward pass masks them.
    reset_moments_on_grow: zero optimizer moments of weights that regrow
      (only for algorithms with ``regrows``: SET, RigL, AC/DC; prune-by-score
      masks are nested, so nothing regrows).
  """

  regrows: ClassVar[bool] = False
  # The scopes (of spec.SCOPES) this class implements.
  scopes: ClassVar[tuple[str, ...]] = ("layer", "N:M", "block:RxC", "channel")

  sparsity: Any = 0.0
  scope: Any = "layer"
  distribution: str = "uniform"
  overrides: Mapping[str, float] | None = None
  is_prunable: Callable[[str, Any], bool] = spec.default_is_prunable
  importance: Any = "magnitude"
  min_kept: int = 1
  global_normalization: str = "none"
  schedule: schedules.Schedule = dataclasses.field(
      default_factory=schedules.OneShot)
  mask_storage: str = "uint8"
  seed: Any = 0
  ste: bool = False
  reset_moments_on_grow: bool = True
  erk_power: float = 1.0

  def __new__(cls, *args, **kwargs):
    del args
    spec.check_renamed(kwargs, cls.__name__)  # structure=, score=
    return super().__new__(cls)

  def __post_init__(self):
    distributions.check_sparsity(self.sparsity)
    if self.distribution not in distributions.DISTRIBUTIONS:
      raise ValueError(f"Unknown distribution {self.distribution!r}; allowed: "
                       f"{', '.join(distributions.DISTRIBUTIONS)}.")
    if self.mask_storage not in masks_lib.MASK_STORAGES:
      raise ValueError(f"Unknown mask_storage {self.mask_storage!r}; allowed: "
                       f"{', '.join(masks_lib.MASK_STORAGES)}.")
    kind = self._scope().kind  # validates the scope early.
    importance_lib.get_score(self.importance, owner=type(self).__name__)
    spec.check_min_kept(self.min_kept)
    spec.check_global_normalization(self.global_normalization, kind)

  def _scope(self) -> spec.Scope:
    hint = ("" if "global" in self.scopes else
            " (scope 'global': GlobalPruning, the algorithms "
            "global_magnitude and global_saliency)")
    return spec.parse_scope(self.scope, self.scopes,
                            owner=type(self).__name__ + hint)

  @property
  def structure(self) -> masks_lib.Structure:
    """What the scope prunes together (``masks.Unstructured()`` for the
    layer and global scopes)."""
    return self._scope().structure

  # ---- per-leaf targets ---------------------------------------------------

  def layer_sparsities(self, params: Any) -> dict[str, Any]:
    """Final target sparsity ``{path: s}`` of every prunable leaf."""
    fixed = self.structure.fixed_sparsity()
    targets = distributions.layer_sparsities(
        params, self.sparsity if fixed is None else fixed,
        self.distribution if fixed is None else "uniform",
        overrides=self.overrides, is_prunable=self.is_prunable,
        erk_power=self.erk_power)
    if not targets and self._prunes():
      raise ValueError(self._nothing_prunable_message(params))
    for path, leaf in distributions.prunable_leaves(
        params, lambda p, _: p in targets).items():
      dtype = getattr(leaf, "dtype", None)
      if dtype is not None and not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"Leaf {path!r} has dtype {dtype} and was selected for pruning "
            "(by is_prunable or overrides); only floating-point leaves can be "
            "pruned. Exclude it in is_prunable.")
      self.structure.check(tuple(leaf.shape), path)
    return targets

  def _prunes(self) -> bool:
    """Whether this updater is asked to prune anything (traced: assume so)."""
    if self.structure.fixed_sparsity() is not None:
      return True
    try:
      return float(self.sparsity) != 0.0
    except (TypeError, jax.errors.ConcretizationTypeError):
      return True

  def _nothing_prunable_message(self, params: Any) -> str:
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    seen = [f"{distributions.path_str(p)} "
            f"{getattr(x, 'dtype', type(x).__name__)}{list(np.shape(x))}"
            for p, x in flat]
    predicate = getattr(self.is_prunable, "__qualname__",
                        repr(self.is_prunable))
    if self.is_prunable is spec.default_is_prunable:
      predicate += " (floating-point leaves named 'kernel' with ndim > 1)"
    more = " ..." if len(seen) > 20 else ""
    return (
        f"{type(self).__name__}(sparsity={self.sparsity!r}) found no prunable "
        f"leaf: is_prunable={predicate} selects none of the {len(seen)} "
        f"leaves it saw: {', '.join(seen[:20])}{more}. Nothing would be "
        "pruned. Pass an is_prunable that selects the leaves to prune (or "
        "overrides naming them), or use no_pruning().")

  def _targets_tree(self, params: Any) -> Any:
    """Pytree like params: target sparsity per prunable leaf, None elsewhere."""
    targets = self.layer_sparsities(params)
    return jax.tree_util.tree_map_with_path(
        lambda p, _: targets.get(distributions.path_str(p)), params)

  # ---- hooks for algorithms -----------------------------------------------

  def is_update_step(self, step: Array) -> Array:
    return self.schedule.is_update_step(step)

  def init_masks(self, params: Any, key: Array) -> Any:
    """Masks before the first step: dense (all ones) for prune-by-score."""
    del key
    return map_masked(
        lambda t, p: None if t is None else jnp.ones_like(p, dtype=bool),
        self._targets_tree(params), params)

  def _scores(self, weights: Any, grads: Any, old: Any, key: Array) -> Any:
    """Scores; inactive weights rank last unless the updater is STE."""
    score_fn = importance_lib.get_score(self.importance)
    leaves = jax.tree.leaves(old, is_leaf=is_none)
    keys = iter(jax.random.split(key, max(len(leaves), 1)))

    def one(m, w, g):
      if m is None:
        return None
      s = score_fn(w, g, next(keys)).astype(jnp.float32)
      return s if self.ste else jnp.where(m, s, -jnp.inf)
    return map_masked(one, old, weights, grads)

  def new_masks(self, weights: Any, grads: Any, old: Any, step: Array,
                key: Array) -> Any:
    """Masks at an update step, every leaf at its scheduled sparsity."""
    scores = self._scores(weights, grads, old, key)
    targets = self._targets_tree(weights)
    return self._masks_at(scores, map_masked(
        lambda t: None if t is None else self.schedule.sparsity(step, t),
        targets))

  def _masks_at(self, scores: Any, sparsities: Any) -> Any:
    """Masks from score and sparsity trees (None = dense), one joint top-k."""
    flat, treedef = jax.tree.flatten(sparsities, is_leaf=is_none)
    score_leaves = treedef.flatten_up_to(scores)
    idx = [i for i, t in enumerate(flat) if t is not None]
    chosen = masks_lib.masks_for_leaves(
        self.structure, [score_leaves[i] for i in idx], [flat[i] for i in idx],
        self.min_kept)
    out = [None] * len(flat)
    for i, m in zip(idx, chosen):
      out[i] = m
    return treedef.unflatten(out)

  # ---- storage ------------------------------------------------------------

  def _store(self, masks: Any) -> Any:
    if self.mask_storage == "packed":
      return map_masked(lambda m: None if m is None else
                         masks_lib.pack_mask(m), masks)
    return map_masked(lambda m: None if m is None else m.astype(jnp.uint8),
                       masks)

  def _load(self, stored: Any, params: Any) -> Any:
    if self.mask_storage == "packed":
      return map_masked(lambda m, p: None if m is None else
                         masks_lib.unpack_mask(m, p.shape), stored, params)
    return map_masked(lambda m: None if m is None else m.astype(bool), stored)

  # ---- the transformation -------------------------------------------------

  def wrap(self, inner: optax.GradientTransformation
           ) -> optax.GradientTransformationExtraArgs:
    """Wraps ``inner`` so its updates keep the parameters sparse."""
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
      key = rng.base_key(self.seed)
      masks = map_masked(lambda m, p: None if m is None else _place_like(m, p),
                          self.init_masks(params, key), params)
      return SparseState(inner_state=inner.init(params),
                         masks=self._store(masks),
                         count=jnp.zeros([], jnp.int32), key=key)

    def update_fn(updates, state, params=None, **extra):
      if params is None:
        raise ValueError(
            "The sparsity wrapper needs params: call update(grads, state, "
            "params).")
      mask_update = extra.pop("mask_update", None)
      if mask_update is not None and not isinstance(mask_update, bool):
        raise ValueError(
            "mask_update must be a Python bool (a static argument of the "
            f"jitted step) or None, got {mask_update!r}.")
      grads = updates
      old = self._load(state.masks, params)
      # Inner transforms see the active set (sparse SAM perturbs only it).
      inner_updates, inner_state = inner.update(
          updates, state.inner_state, params, masks=old, **extra)

      def refresh(stored):
        # A fresh key per step without paying for a split on steady steps.
        mask_key = jax.random.fold_in(state.key, state.count)
        # Scores see the current weights p (pruned ones are 0) and gradients,
        # as in RigL; STE scores p + u, the weights its next forward pass uses.
        weights = params if not self.ste else jax.tree.map(
            lambda p, u: p + u.astype(p.dtype), params, inner_updates)
        return self._store(self.new_masks(
            weights, grads, self._load(stored, params), state.count, mask_key))

      # The branch reads only buffers that exist anyway (params, grads, masks),
      # so a steady step still fuses the inner update with the masking below.
      if mask_update is None:
        stored = jax.lax.cond(self.is_update_step(state.count), refresh,
                              lambda stored: stored, state.masks)
      else:  # Host-scheduled: no conditional in the compiled step.
        stored = refresh(state.masks) if mask_update else state.masks
      new = self._load(stored, params)
      if self.regrows and self.reset_moments_on_grow:
        grown = map_masked(
            lambda m0, m1: None if m0 is None else m1 & ~m0, old, new)
        inner_state = reset_where_grown(inner_state, grown, params)
      if self.ste:
        final_updates = inner_updates
      else:
        # Kept weights get exactly u; others land on p + (-p) == 0 exactly.
        # Regrown weights (m1 & ~m0) start at 0; without regrowth m1 alone
        # suffices, and not reading the old masks after the cond lets XLA
        # reuse their buffer instead of copying it every step.
        keep = (map_masked(lambda m0, m1: None if m0 is None else m0 & m1,
                            old, new) if self.regrows else new)
        final_updates = map_masked(
            lambda m, p, u: u if m is None else
            jnp.where(m, u, -p.astype(u.dtype)), keep, params, inner_updates)
      return final_updates, SparseState(
          inner_state=inner_state, masks=stored,
          count=optax.safe_int32_increment(state.count), key=state.key)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)

  # ---- one-shot -----------------------------------------------------------

  def instant_sparsify(self, params: Any, grads: Any = None,
                       key: Array | None = None) -> tuple[Any, Any]:
    """Prunes ``params`` now to the final target; returns ``(params, masks)``.

    Uses the updater's importance and scope with the full (final) per-leaf
    sparsity; ``grads`` are needed by the saliency importance. Masks are
    bool.
    """
    key = rng.base_key(self.seed) if key is None else key
    targets = self._targets_tree(params)
    grads = jax.tree.map(lambda _: None, params) if grads is None else grads
    dense = map_masked(lambda t, p: None if t is None else
                        jnp.ones_like(p, dtype=bool), targets, params)
    scores = self._scores(params, grads, dense, key)
    new = self._masks_at(scores, targets)
    return apply_masks(params, new), new


def _place_like(x: Array, like: Any) -> Array:
  """Puts ``x`` on ``like``'s sharding (eager init of placed params); a no-op
  under tracing and for uncommitted params: committing the masks alone
  would give the first jitted step other input shardings than the next
  ones (two compilations of the same step)."""
  if (isinstance(like, jax.Array) and not isinstance(like, jax.core.Tracer)
      and like.committed):
    return jax.device_put(x, like.sharding)
  return x


def apply_masks(params: Any, masks: Any) -> Any:
  """``params * mask`` on masked leaves (dense leaves unchanged)."""
  return map_masked(lambda m, p: p if m is None else p * m.astype(p.dtype),
                     masks, params)


def reset_where_grown(inner_state: Any, grown: Any, params: Any) -> Any:
  """Zeros the optimizer moments of newly grown weights, for any optax state.

  Every subtree of ``inner_state`` with the tree structure and leaf shapes of
  ``params`` (adam's mu and nu, momentum traces, lion's mu, states inside
  chains or ``inject_hyperparams``) is treated as per-weight statistics.
  """
  params_def = jax.tree.structure(params)
  shapes = [np.shape(p) for p in jax.tree.leaves(params)]

  def is_moment(node):
    try:
      if jax.tree.structure(node) != params_def:
        return False
    except Exception:  # pylint: disable=broad-except
      return False
    return [np.shape(x) for x in jax.tree.leaves(node)] == shapes

  def reset(node):
    if not is_moment(node):
      return node
    return map_masked(
        lambda g, x: x if g is None else jnp.where(g, jnp.zeros_like(x), x),
        grown, node)

  return jax.tree.map(reset, inner_state, is_leaf=is_moment)


def find_sparse_state(opt_state: Any) -> SparseState:
  """The (first) :class:`SparseState` inside any optimizer state."""
  found = tree_utils.find_states(opt_state, SparseState)
  if not found:
    raise ValueError("No SparseState in this optimizer state: was the "
                     "optimizer built with a sparsity updater's wrap()?")
  return found[0]


def get_masks(opt_state: Any, params: Any) -> Any:
  """Bool masks (``None`` for dense leaves) from an optimizer state."""
  stored = find_sparse_state(opt_state).masks
  return map_masked(
      lambda m, p: None if m is None else (
          masks_lib.unpack_mask(m, p.shape) if m.shape != p.shape
          else m.astype(bool)), stored, params)


def check_sparse(params: Any, opt_state: Any, *,
                 updater: SparseUpdater | None = None,
                 action: str = "raise") -> dict[str, tuple[int, int]]:
  """Checks on the host that every weight the masks prune is exactly zero.

  After any ``update`` of a (non-STE) sparsity wrapper that is the outermost
  transformation, ``p == 0`` wherever the stored mask is 0. A nonzero pruned
  weight means a transformation ran after the wrapper (``chain(wrap(adamw),
  scale(0.5))``), or the parameters were changed outside the optimizer.
  ``flatsparse.train`` calls this at each evaluation. Costs one host copy of
  the parameters and masks; nothing runs inside the jitted step.

  Args:
    params: the parameters (on device or host; a leading ``vmap`` axis on
      both params and state is fine).
    opt_state: an optimizer state holding a :class:`SparseState`.
    updater: the wrapper's updater, if known: STE updaters (``ste=True``)
      keep dense weights by design and are not checked. Without it the check
      assumes a non-STE wrapper.
    action: ``'raise'`` (ValueError) or ``'warn'`` (UserWarning) when some
      pruned weight is nonzero.

  Returns:
    ``{leaf path: (nonzero pruned weights, pruned weights)}`` of the leaves
    that break the invariant (empty when all pruned weights are zero, when
    the updater is STE, or before the first ``update``: the masks drawn at
    ``init`` are applied by the first update).

  Raises:
    ValueError: with ``action='raise'``, naming the leaves and counts and the
      fix; or for an unknown ``action``; or without a SparseState.
  """
  if action not in ("raise", "warn"):
    raise ValueError(f"action must be 'raise' or 'warn', got {action!r}.")
  state = find_sparse_state(opt_state)
  if (updater is not None and updater.ste) or not np.any(
      np.asarray(jax.device_get(state.count)) > 0):
    return {}
  masks, params = jax.device_get((get_masks(opt_state, params), params))
  flat, treedef = jax.tree_util.tree_flatten_with_path(masks, is_leaf=is_none)
  bad = {}
  for (path, m), p in zip(flat, treedef.flatten_up_to(params)):
    if m is None:
      continue
    pruned = ~np.asarray(m, bool)
    nonzero = int(np.count_nonzero(np.asarray(p)[pruned]))
    if nonzero:
      bad[distributions.path_str(path)] = (nonzero, int(pruned.sum()))
  if bad:
    leaves = "; ".join(f"{n} of the {t} pruned weights of {k}"
                       for k, (n, t) in bad.items())
    message = (
        f"check_sparse: nonzero pruned weights: {leaves}. The sparsity "
        "wrapper must be the outermost transformation: wrap(chain(...)), not "
        "chain(wrap(...), ...); and parameters must change only through its "
        "updates. (STE wrappers keep dense weights by design: pass "
        "updater= to skip them.)")
    if action == "raise":
      raise ValueError(message)
    warnings.warn(message, stacklevel=2)
  return bad


def masked_params(params: Any, opt_state: Any) -> Any:
  """Parameters for the forward pass, masked with a straight-through gradient.

  Value ``p * m``, gradient passed to ``p`` unchanged (``p + sg(p*m - p)``).
  For STE algorithms this is how the forward pass sees sparse weights while
  the dense weights train; for the others it is a no-op on values.
  """
  masks = get_masks(opt_state, params)
  return map_masked(
      lambda m, p: p if m is None else
      p + jax.lax.stop_gradient(p * m.astype(p.dtype) - p), masks, params)


def vmap_axes(opt_state: Any, axis: int = 0) -> Any:
  """``in_axes``/``out_axes`` prefix for ``vmap`` over seeds.

  Every leaf is batched along ``axis`` except the step counters of sparse
  states, which stay shared. An unbatched counter keeps the schedule predicate
  a real ``lax.cond``; a batched one turns it into a select that computes new
  masks on every step. The keys are batched: give each seed its own by
  building the wrapper inside the vmapped ``init`` from the traced seed
  (``jax.vmap(lambda p, s: make_tx(seed=s).init(p))``; see
  ``flatsparse.rng``), or every lane draws the same random masks.
  """
  def axes(node):
    if isinstance(node, SparseState):
      return SparseState(inner_state=vmap_axes(node.inner_state, axis),
                         masks=axis, count=None, key=axis)
    return axis
  return jax.tree.map(axes, opt_state,
                      is_leaf=lambda x: isinstance(x, SparseState))


def summarize_sparsity(params: Any, is_prunable=None) -> dict[str, Any]:
  """Per-leaf and total sparsity of ``params`` (host-side, exact zeros).

  Returns:
    ``{'leaves': {path: {'size', 'nnz', 'sparsity'}}, 'size', 'nnz',
    'sparsity', 'prunable_size', 'prunable_nnz', 'prunable_sparsity'}``.
    A total over no entries (no prunable leaf, or an empty tree) is
    reported as sparsity 0.0, with a UserWarning when no leaf is prunable.
  """
  is_prunable = is_prunable or spec.default_is_prunable
  leaves, size, nnz, psize, pnnz = {}, 0, 0, 0, 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = distributions.path_str(path)
    arr = np.asarray(leaf)
    n, z = int(arr.size), int(np.count_nonzero(arr))
    leaves[name] = {"size": n, "nnz": z, "sparsity": 1 - z / n if n else 0.0,
                    "prunable": bool(is_prunable(name, leaf))}
    size, nnz = size + n, nnz + z
    if leaves[name]["prunable"]:
      psize, pnnz = psize + n, pnnz + z
  if not psize:
    # 1 - 0/0 would report a dense model as fully pruned.
    predicate = getattr(is_prunable, "__qualname__", repr(is_prunable))
    warnings.warn(
        f"summarize_sparsity: is_prunable={predicate} selects none of the "
        f"{len(leaves)} leaves ({', '.join(list(leaves)[:10])}"
        f"{' ...' if len(leaves) > 10 else ''}); prunable sparsity is "
        "reported as 0.0.", stacklevel=2)
  ratio = lambda z, n: 1 - z / n if n else 0.0  # noqa: E731
  return {"leaves": leaves, "size": size, "nnz": nnz,
          "sparsity": ratio(nnz, size), "prunable_size": psize,
          "prunable_nnz": pnnz, "prunable_sparsity": ratio(pnnz, psize)}


def format_sparsity_table(summary: Mapping[str, Any]) -> str:
  """Plain-text table of :func:`summarize_sparsity` output."""
  rows = [("leaf", "size", "nnz", "sparsity")]
  for name, s in summary["leaves"].items():
    rows.append((name, str(s["size"]), str(s["nnz"]), f"{s['sparsity']:.4f}"))
  rows.append(("total", str(summary["size"]), str(summary["nnz"]),
               f"{summary['sparsity']:.4f}"))
  rows.append(("prunable", str(summary["prunable_size"]),
               str(summary["prunable_nnz"]),
               f"{summary['prunable_sparsity']:.4f}"))
  widths = [max(len(r[i]) for r in rows) for i in range(4)]
  return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(r, widths)))
                   for r in rows)
