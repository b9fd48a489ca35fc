r"""FedFwd (Forward-Forward clients) against FedAvg with backprop.

  python -m experiments.fedfwd --config=configs/fedfwd_fashion_mnist.py \
      --workdir=workdirs/fedfwd

For every method x partition x seed: the training split is partitioned
among ``num_clients`` clients (IID, Dirichlet label skew, or shards; the
partition's seed is the run's), each round samples ``client_fraction`` of
them, they train ``local_epochs`` epochs from the global model and the
server averages their weights by example counts
(:mod:`flatsparse.federated`; all sampled clients in one ``vmap``). The
global model's test accuracy is recorded every ``eval_every`` rounds.

Methods: ``fedfwd`` (an :class:`~flatsparse.models.FFMLP` of ``hidden``
widths, Forward-Forward's layer-local losses, prediction by goodness) and
``fedavg_bp`` (the same hidden layers plus a linear head, cross-entropy,
backprop). The server state is checkpointed every ``eval_every`` rounds in
each run's folder, so a killed study resumes where it stopped.

Costs per client (XLA's analyses, nothing timed): FLOPs of one local step
times the steps of a local epoch of an average client, and the memory plan
of one local step: FF's fused step (every layer at once), FF's largest
single-layer step (the schedule that trains one layer at a time keeps only
that layer's activations), and backprop's step.

References:
  Park et al., "FedFwd: Federated learning without backpropagation",
  FL-ICML workshop 2023; Hinton, "The Forward-Forward Algorithm: Some
  Preliminary Investigations", 2022; McMahan et al., AISTATS 2017.
"""

from __future__ import annotations

from collections.abc import Sequence
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments import cli
from flatsparse import federated as fl
from flatsparse import study
from flatsparse.data import load_dataset
from flatsparse.federated import objectives
from flatsparse.models import FFMLP
from flatsparse.models import MLP

METHODS = ("fedfwd", "fedavg_bp")


def load(config: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                               np.ndarray, int]:
  """Flattened train and test images and labels, and the class count
  (with ``holdout`` > 0 the last ``holdout`` training examples replace the
  test split: the set the knobs are tuned on)."""
  kwargs = {"flatten": True} if config.dataset == "digits" else {}
  train = load_dataset(config.dataset, "train", **kwargs)
  test = load_dataset(config.dataset, "test", **kwargs)

  def flat(ds):
    return (np.asarray(ds.images, np.float32).reshape(ds.images.shape[0], -1),
            np.asarray(ds.labels, np.int32))

  x, y = flat(train)
  if config.holdout:  # tuning: the last `holdout` training examples
    n = x.shape[0] - int(config.holdout)
    return x[:n], y[:n], x[n:], y[n:], int(train.num_classes)
  return x, y, *flat(test), int(train.num_classes)


def partition_of(name: str, labels: np.ndarray, config: Any, seed: int
                 ) -> list[np.ndarray]:
  """``iid``, ``dirichlet_<alpha>`` or ``shards_<per client>``."""
  kind, _, arg = name.partition("_")
  if kind == "dirichlet":
    return fl.partition.dirichlet(labels, config.num_clients, seed,
                                  alpha=float(arg),
                                  min_size=config.min_client_size)
  if kind == "shards":
    return fl.partition.shards(labels, config.num_clients, seed,
                               shards_per_client=int(arg))
  if kind == "iid" and not arg:
    return fl.partition.iid(labels, config.num_clients, seed)
  raise ValueError(f"Unknown partition {name!r}; allowed: 'iid', "
                   "'dirichlet_<alpha>', 'shards_<per client>'.")


def method_parts(method: str, config: Any, num_classes: int, dim: int,
                 seed: int = 0
                 ) -> tuple[Any, Any, Any, Any, optax.GradientTransformation]:
  """``(model, params, loss_fn, predict_fn, tx)`` of ``method``; the
  params drawn with ``seed``."""
  if method == "fedfwd":
    model = FFMLP(tuple(config.hidden), num_labels=num_classes,
                  threshold=config.ff_threshold,
                  normalize_input=config.ff_normalize_input)
    loss = objectives.forward_forward_loss(model)
    predict = objectives.make_predict(model, "ff", config.ff_rule)
    tx = optax.adam(config.ff_learning_rate)
  elif method == "fedavg_bp":
    model = MLP(tuple(config.hidden), num_classes)
    loss = objectives.backprop_loss(model)
    predict = objectives.make_predict(model, "bp")
    tx = optax.adam(config.bp_learning_rate)
  else:
    raise ValueError(f"Unknown method {method!r}; allowed: "
                     f"{', '.join(METHODS)}.")
  params = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, dim)))[
      "params"]
  return model, params, loss, predict, tx


def _run_config(method: str, partition: str, config: Any
                ) -> ml_collections.ConfigDict:
  keys = ("dataset", "holdout", "hidden", "num_clients", "client_fraction",
          "local_epochs", "batch_size", "rounds", "eval_every",
          "min_client_size")
  keys += (("ff_threshold", "ff_learning_rate", "ff_normalize_input",
            "ff_rule") if method == "fedfwd" else ("bp_learning_rate",))
  out = ml_collections.ConfigDict({k: config[k] for k in keys})
  out.method, out.partition = method, partition
  return out


def run_one(method: str, partition: str, seed: int, data: tuple,
            config: Any, run_dir: str) -> dict[str, Any]:
  """Trains one federated run; its accuracy curve and client sizes."""
  x_train, y_train, x_test, y_test, num_classes = data
  parts = partition_of(partition, y_train, config, seed)
  clients = fl.stack_clients(x_train, y_train, parts)
  # The run's seed draws its partition, model start and every round.
  _, params, loss, predict, tx = method_parts(method, config, num_classes,
                                              x_train.shape[1], seed)
  update = fl.make_client_update(
      loss, tx, batch_size=config.batch_size,
      local_epochs=config.local_epochs)
  round_fn = fl.make_round(update, clients,
                           client_fraction=config.client_fraction)
  curve = [[0, objectives.accuracy(predict, params, x_test, y_test)]]
  losses = []

  def on_round(state, metrics):
    r = int(state.round)
    losses.append(metrics["loss"])
    if r % config.eval_every == 0 or r == config.rounds:
      curve.append([r, objectives.accuracy(predict, state.params, x_test,
                                           y_test)])

  start = time.time()
  state = fl.run_rounds(round_fn, fl.init_server(params, seed),
                        config.rounds,
                        checkpoint_dir=os.path.join(run_dir, "checkpoints"),
                        checkpoint_every=config.eval_every,
                        on_round=on_round)
  if curve[-1][0] != config.rounds:  # resumed past the last evaluation
    curve.append([config.rounds, objectives.accuracy(
        predict, state.params, x_test, y_test)])
  sizes = clients.sizes
  return {"method": method, "partition": partition, "seed": seed,
          "final_accuracy": curve[-1][1], "curve": curve,
          "client_loss": losses[-1] if losses else None,
          "client_sizes": {"min": int(sizes.min()), "max": int(sizes.max()),
                           "mean": float(sizes.mean())},
          "train_s": round(time.time() - start, 2)}


def client_costs(config: Any, num_classes: int, dim: int,
                 mean_client_size: float) -> dict[str, dict[str, float]]:
  """Per-client FLOPs per local epoch and one local step's memory plan
  (``flatsparse.federated.costs.ff_step_costs``)."""
  steps = -(-int(round(mean_client_size)) // config.batch_size)
  ff_model, _, _, _, tx = method_parts("fedfwd", config, num_classes, dim)
  bp_model = method_parts("fedavg_bp", config, num_classes, dim)[0]
  costs = fl.costs.ff_step_costs(ff_model, bp_model, tx, config.batch_size,
                                 dim)

  def per_client(flops, temp, peak):
    return {"gflops_per_epoch": flops * steps / 1e9,
            "step_temp_mb": temp / 2**20, "step_peak_mb": peak / 2**20}

  def of(c):
    return per_client(c["flops"], c.get("temp_bytes", 0),
                      c.get("peak_bytes", 0))

  layers = costs["ff_layers"]
  return {"fedfwd": of(costs["ff_step"]),
          # One layer at a time: each layer's step per batch; the largest
          # memory plan.
          "fedfwd_one_layer": per_client(
              sum(c["flops"] for c in layers),
              max(c.get("temp_bytes", 0) for c in layers),
              max(c.get("peak_bytes", 0) for c in layers)),
          "fedavg_bp": of(costs["bp_step"])}


def run_study(config: Any, workdir: str) -> dict[str, Any]:
  """Every method x partition x seed; the report, plots and costs."""
  data = load(config)
  runs = [study.Run(study.Variant(f"{p}/{m}", tags={"method": m,
                                                     "partition": p}),
                    int(s), _run_config(m, p, config))
          for p in config.partitions for m in config.methods
          for s in config.seeds]

  def fn(run, run_dir, stale):
    del stale
    return run_one(run.variant.tags["method"], run.variant.tags["partition"],
                   run.seed, data, config, run_dir)

  def progress(i, run, record, seconds):
    print(f"{i + 1}/{len(runs)} {run.path}: accuracy "
          f"{record['final_accuracy']:.4f} ({seconds:.0f} s)", flush=True)

  records = study.run_or_load(runs, workdir, fn=fn, on_record=progress)
  summary = study.summarize(records, by=("partition", "method"),
                            fields=("final_accuracy", "train_s"))
  rows = []
  for p in config.partitions:
    cells = {row["method"]: row for row in summary if row["partition"] == p}
    line = [p] + [study.cell(cells[m]["final_accuracy"], scale=100,
                             fmt=".2f") for m in config.methods]
    if set(METHODS) <= set(cells):
      gap = _gap(records, p)
      line.append(gap)
    rows.append(line)
  mean_size = float(np.mean([r["client_sizes"]["mean"] for r in records]))
  costs = client_costs(config, data[4], data[0].shape[1], mean_size)
  cost_rows = [[name, f"{c['gflops_per_epoch']:.3f}",
                f"{c['step_temp_mb']:.2f}", f"{c['step_peak_mb']:.2f}"]
               for name, c in costs.items()]
  header = ["partition"] + [f"{m} test accuracy (%)" for m in config.methods]
  if set(METHODS) <= set(config.methods):
    header.append("FF - BP (points; within noise?)")
  report = [
      "# FedFwd against FedAvg with backprop", "",
      f"{config.dataset}: {config.num_clients} clients, fraction "
      f"{config.client_fraction}, {config.local_epochs} local epoch(s), "
      f"batch {config.batch_size}, {config.rounds} rounds, hidden "
      f"{list(config.hidden)}; seeds {list(config.seeds)}, mean ± std.", "",
      study.markdown_table(header, rows), "",
      "Per-client cost (XLA cost and memory analysis of one local step; "
      f"FLOPs x {-(-int(round(mean_size)) // config.batch_size)} steps of a "
      "mean client's epoch):", "",
      study.markdown_table(["client", "GFLOP per local epoch",
                            "step scratch (MiB)", "step peak (MiB)"],
                           cost_rows)]
  for p in config.partitions:
    path = _plot(config, records, p, os.path.join(
        workdir, f"accuracy_{p}.png"))
    report += ["", f"![{p}]({os.path.basename(path)})"]
  text = "\n".join(report) + "\n"
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write(text)
  results = {"runs": records, "summary": summary, "costs": costs}
  study.save_record(os.path.join(workdir, "results.json"), results)
  return {**results, "report": text}


def _gap(records: Sequence[dict[str, Any]], partition: str) -> str:
  acc = {m: np.array([r["final_accuracy"] for r in records
                      if r["partition"] == partition and r["method"] == m])
         for m in METHODS}
  gap = 100 * (acc["fedfwd"].mean() - acc["fedavg_bp"].mean())
  if min(a.size for a in acc.values()) < 2:
    return f"{gap:+.2f} (one seed)"
  spread = 100 * max((a.std(ddof=1) if a.size > 1 else 0.0)
                     for a in acc.values())
  verdict = "within noise" if abs(gap) <= spread else "beyond the spread"
  return f"{gap:+.2f} ({verdict})"


def _plot(config, records, partition, path):
  fig, axes = study.figure(1, (6.0, 4.0))
  for method in config.methods:
    curves = np.array([r["curve"] for r in records
                       if r["method"] == method
                       and r["partition"] == partition])
    stats = [study.aggregate(curves[:, i, 1])
             for i in range(curves.shape[1])]
    study.errorbar(axes[0], curves[0, :, 0], stats, scale=100,
                   label=method, marker=".")
  axes[0].set_xlabel("round")
  axes[0].set_ylabel("test accuracy (%)")
  axes[0].set_title(f"{config.dataset}, {partition}")
  return study.save_figure(fig, axes, path)


if __name__ == "__main__":
  cli.define_flags("FedFwd study config.", workdir="Where it writes.")
  cli.run(cli.report_main(run_study))
