"""Language modelling: exact perplexities, padding, and a trained LLaMA."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import shakespeare_llama
from flatsparse import data
from flatsparse.data import shakespeare
from flatsparse.train import language_modeling as lm
from flatsparse.train import loop
from flatsparse.train import metrics as metrics_lib
from flatsparse.train import tasks

V = 7


def _tokens(n=5, length=9, seed=0):
  return np.random.default_rng(seed).integers(0, V, size=(n, length))


def test_uniform_logits_give_perplexity_v():
  tokens = _tokens()
  result = lm.perplexity(lambda x: jnp.zeros((*x.shape, V)), tokens,
                         batch_size=2)
  assert result["perplexity"] == pytest.approx(V, rel=1e-6)
  assert result["bits_per_byte"] == pytest.approx(math.log2(V), rel=1e-6)
  assert result["tokens"] == tokens.size - tokens.shape[0]
  result = lm.perplexity(lambda x: jnp.zeros((*x.shape, 256)), tokens,
                         batch_size=8)
  assert result["bits_per_byte"] == pytest.approx(8.0, rel=1e-6)


def test_fixed_distribution_gives_exp_of_its_cross_entropy():
  p = np.arange(1.0, V + 1) / np.arange(1.0, V + 1).sum()
  tokens = _tokens(n=6, length=11, seed=1)
  targets = tokens[:, 1:]
  expected = math.exp(-np.mean(np.log(p[targets])))
  logits = jnp.asarray(np.log(p), jnp.float32) + 3.0  # any shift
  result = lm.perplexity(lambda x: jnp.broadcast_to(logits, (*x.shape, V)),
                         tokens, batch_size=4)
  assert result["perplexity"] == pytest.approx(expected, rel=1e-5)


def test_task_sums_exclude_padding_and_match_the_helper():
  task = tasks.get_task("language_modeling")
  assert isinstance(task, lm.LanguageModeling)
  assert (task.input_key, task.target_key) == ("image", "label")
  assert task.num_outputs(256) == 256
  table = jax.random.normal(jax.random.key(0), (V, V))

  def logits_fn(x):
    return table[x]

  windows = _tokens(n=5, length=9, seed=2)
  ds = data.Dataset(windows[:, :-1], windows[:, 1:], V)
  loader = data.Loader(ds, ds, batch_size=2)

  @jax.jit
  def eval_sums(batch):
    # NaN logits on the padding: where, not multiply, keeps them out.
    outputs = jnp.where(batch["mask"][:, None, None] > 0,
                        logits_fn(batch["image"]), jnp.nan)
    return task.eval_sums(outputs, batch, batch["mask"])

  sums = {}
  for batch in loader.eval_batches(batch_size=3):  # 5 = 3 + 2 + 1 padding
    for k, v in eval_sums(batch).items():
      sums[k] = sums.get(k, 0.0) + float(v)
  assert sums["count"] == 5 and sums["tokens"] == 5 * 8
  metrics = task.eval_metrics(sums)
  helper = lm.perplexity(logits_fn, windows, batch_size=3)
  for key in ("loss", "perplexity", "bits_per_byte"):
    assert metrics[key] == pytest.approx(helper[key], rel=1e-6), key
  log_p = np.asarray(jax.nn.log_softmax(table))
  nll = -log_p[ds.images, ds.labels]
  assert metrics["loss"] == pytest.approx(nll.mean(), rel=1e-5)
  correct = np.argmax(log_p[ds.images], -1) == ds.labels
  assert metrics["accuracy"] == pytest.approx(correct.mean())
  batch = {"image": ds.images, "label": ds.labels}
  train = jax.jit(lambda b: (task.loss(logits_fn(b["image"]), b),
                             task.train_metrics(logits_fn(b["image"]), b)))
  loss, train_metrics = train(batch)
  assert float(loss) == pytest.approx(nll.mean(), rel=1e-5)
  assert float(train_metrics["accuracy"]) == pytest.approx(correct.mean())


def test_nll_sums_mask_and_bad_input():
  total, count = jax.jit(lm.nll_sums)(
      jnp.zeros((2, 3, V)), jnp.zeros((2, 3), jnp.int32),
      jnp.asarray([[1, 1, 0], [0, 0, 0]]))
  assert float(count) == 2
  assert float(total) == pytest.approx(2 * math.log(V), rel=1e-6)
  with pytest.raises(ValueError, match=r"tokens must be .* got shape \(4,\)"):
    lm.perplexity(lambda x: x, np.zeros(4, np.int32), batch_size=2)
  with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
    lm.perplexity(lambda x: x, _tokens(), batch_size=0)
  with pytest.raises(ValueError, match="num_tokens must be > 0"):
    lm.lm_metrics(0.0, 0.0)


def _unigram_perplexity(labels: np.ndarray) -> float:
  """The best unigram model of ``labels``: exp of their entropy."""
  p = np.bincount(labels.ravel()) / labels.size
  p = p[p > 0]
  return float(np.exp(-np.sum(p * np.log(p))))


def test_tiny_llama_learns_the_text_through_the_trainer(tmp_path):
  config = shakespeare_llama.get_config("tiny")
  test = data.load_dataset("shakespeare_bytes", "test",
                           text=config.dataset.text,
                           seq_len=config.dataset.seq_len)
  baseline = _unigram_perplexity(test.labels)
  assert baseline > 10  # bytes of English verse
  result = loop.train_and_evaluate(config, str(tmp_path))
  assert result["perplexity"] < 0.6 * baseline, (result, baseline)
  assert result["bits_per_byte"] == pytest.approx(
      result["loss"] / math.log(2))
  final = metrics_lib.read_metrics(str(tmp_path))[-1]
  assert final["eval/perplexity"] == pytest.approx(result["perplexity"])
  assert shakespeare.VOCAB_SIZE == test.num_classes
