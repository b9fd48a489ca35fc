"""Tests of the miniature CLIP: spliced prompt forward, towers, the task.

A tiny random BERT and a word-level toy tokenizer stand in for MiniLM; one
test uses the real all-MiniLM-L6-v2 when its package is installed.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flatsparse.zeroth_order import black_box
from flatsparse.zeroth_order import vlm

HIDDEN = 16
CLS, SEP = 1, 2
WORDS = (*vlm.DIGIT_CLASSES, "a", "photo", "of")
NAMES = ("one", "two three", "four five six")


@pytest.fixture(scope="module")
def text():
  return vlm.toy_text_tower(WORDS, hidden_size=HIDDEN, max_positions=12)


@pytest.fixture(scope="module")
def captions(text):
  return vlm.tokenize_class_names(text.tokenizer, NAMES)


def pooled(hidden, mask):
  w = mask[..., None].astype(np.float32)
  out = np.sum(np.asarray(hidden) * w, 1) / np.sum(w, 1)
  return out / np.linalg.norm(out, axis=-1, keepdims=True)


def plain(text, params, tokens, mask):
  # The unmodified encoder, compiled (eager flax compiles op by op).
  return jax.jit(text.model.apply)({"params": params}, tokens, mask)


def test_tokenize_pads_to_the_longest_name(captions):
  ids, mask = captions
  assert ids.shape == mask.shape == (3, 5)
  np.testing.assert_array_equal(mask.sum(1), [3, 4, 5])
  assert (ids[:, 0] == CLS).all()


def test_no_prompt_is_the_plain_encoder(text, captions):
  ids, mask = captions
  hidden, spliced_mask = vlm.encode_with_prompt(
      text.model, text.params, jnp.zeros((0, HIDDEN)), ids, mask)
  np.testing.assert_allclose(hidden, plain(text, text.params, ids, mask),
                             atol=1e-6)
  np.testing.assert_array_equal(spliced_mask, mask)


# NumPy draws: jax.random compiles threefry, seconds on a busy CPU.
PROMPTS = np.random.default_rng(1).normal(size=(4, 2, HIDDEN)).astype(
    np.float32)


def test_a_prompt_is_extra_words_after_cls(text, captions):
  ids, mask = captions
  prompt = PROMPTS[0]
  # Two unused rows of the word table hold the prompt's vectors.
  params = jax.tree.map(lambda x: x, text.params)
  table = params["word_embeddings"]["embedding"]
  extra = table.shape[0] - 2
  params["word_embeddings"]["embedding"] = table.at[extra:].set(prompt)
  words = np.broadcast_to([extra, extra + 1], (3, 2))
  as_tokens = np.concatenate([ids[:, :1], words, ids[:, 1:]], 1)
  as_mask = np.concatenate([mask[:, :1], np.ones((3, 2), int), mask[:, 1:]],
                           1)
  expected = plain(text, params, as_tokens, as_mask)
  hidden, spliced_mask = vlm.encode_with_prompt(text.model, text.params,
                                                prompt, ids, mask)
  np.testing.assert_allclose(hidden, expected, atol=1e-5)
  np.testing.assert_array_equal(spliced_mask, as_mask)
  emb = vlm.class_text_embeddings(text.model, text.params, prompt, ids, mask)
  assert emb.shape == (3, HIDDEN)
  np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1, rtol=1e-5)
  np.testing.assert_allclose(emb, pooled(expected, as_mask), atol=1e-5)


def test_phrase_prompt_is_the_phrases_word_embeddings(text):
  # A prompt of word-table rows reads as those words (the test above).
  prompt = vlm.phrase_embeddings(text, "a photo of")
  rows = [3 + WORDS.index(w) for w in ("a", "photo", "of")]
  np.testing.assert_array_equal(
      prompt, text.params["word_embeddings"]["embedding"][np.array(rows)])


def test_jit_and_vmap_over_prompts(text, captions):
  ids, mask = captions
  batched = jax.jit(
      jax.vmap(vlm.class_text_embeddings, in_axes=(None, None, 0, None,
                                                   None)),
      static_argnums=0)(text.model, text.params, PROMPTS, ids, mask)
  assert batched.shape == (4, 3, HIDDEN)
  for i in range(4):
    np.testing.assert_allclose(
        batched[i], vlm.class_text_embeddings(text.model, text.params,
                                              PROMPTS[i], ids, mask),
        atol=1e-5)


def test_prompt_errors_name_the_bad_value(text, captions):
  ids, mask = captions
  with pytest.raises(ValueError, match="width 8; the text tower's "
                     "hidden_size is 16"):
    vlm.class_text_embeddings(text.model, text.params, jnp.zeros((2, 8)),
                              ids, mask)
  with pytest.raises(ValueError, match=r"\(num_tokens, hidden\).*\(16,\)"):
    vlm.class_text_embeddings(text.model, text.params, jnp.zeros(HIDDEN),
                              ids, mask)
  with pytest.raises(ValueError, match="8 prompt tokens \\+ 5 caption tokens"
                     " exceed max_position_embeddings=12"):
    vlm.class_text_embeddings(text.model, text.params,
                              jnp.zeros((8, HIDDEN)), ids, mask)
  with pytest.raises(ValueError, match="names must be a non-empty"):
    vlm.tokenize_class_names(text.tokenizer, ())
  with pytest.raises(ValueError, match="at least one token, got ''"):
    vlm.phrase_embeddings(text, "")


def toy_images(n_per_class, seed):
  # Class c lights up row band c of an 8x8 image: linearly separable.
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(3), n_per_class)
  images = 0.3 * rng.random((labels.size, 8, 8, 1), np.float32)
  for i, c in enumerate(labels):
    images[i, 2 * c:2 * c + 3] += 0.7
  return images, labels.astype(np.int32)


def toy_class_embeddings():
  emb = np.random.default_rng(3).normal(size=(3, HIDDEN))
  return (emb / np.linalg.norm(emb, axis=-1, keepdims=True)).astype(
      np.float32)


def accuracy(params, images, labels, class_emb):
  logits = vlm.clip_logits(vlm.embed_images(params, images), class_emb)
  return float(np.mean(np.argmax(logits, -1) == labels))


TOWER = dict(seed=0, batch_size=30, widths=(4,), hidden_size=16,
             learning_rate=1e-2)


@pytest.fixture(scope="module")
def toy_tower():
  images, labels = toy_images(20, seed=0)
  return vlm.train_image_tower(images, labels, toy_class_embeddings(),
                               steps=40, **TOWER)


def test_clip_training_aligns_images_with_their_class_text(toy_tower):
  images, labels = toy_images(20, seed=0)
  class_emb = toy_class_embeddings()
  before = vlm.train_image_tower(images, labels, class_emb, steps=1, **TOWER)
  assert vlm.image_tower_of(toy_tower) == vlm.ImageTower(HIDDEN, (4,), 16)
  test_images, test_labels = toy_images(10, seed=1)
  assert accuracy(before, test_images, test_labels, class_emb) < 0.7
  assert accuracy(toy_tower, test_images, test_labels, class_emb) == 1.0
  emb = vlm.embed_images(toy_tower, test_images)
  np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1, rtol=1e-5)


def test_train_image_tower_errors():
  images, labels = toy_images(2, seed=0)
  with pytest.raises(ValueError, match=r"labels must be in \[0, 2\).*0..2"):
    vlm.train_image_tower(images, labels, toy_class_embeddings()[:2])
  with pytest.raises(ValueError, match="steps must be an int >= 1, got 0"):
    vlm.train_image_tower(images, labels, toy_class_embeddings(), steps=0)
  with pytest.raises(ValueError, match=r"\(N, H, W, C\).*\(6, 64\)"):
    vlm.train_image_tower(images.reshape(6, 64), labels,
                          toy_class_embeddings())


def test_rotate90_and_few_shot_indices():
  image = np.arange(4.0).reshape(1, 2, 2, 1)  # [[0, 1], [2, 3]]
  np.testing.assert_array_equal(vlm.rotate90(image)[0, ..., 0],
                                [[1, 3], [0, 2]])  # counter-clockwise
  np.testing.assert_array_equal(vlm.rotate90(image, 4), image)
  labels = np.array([0, 1, 0, 1, 0, 2, 2, 1])
  picked = vlm.few_shot_indices(labels, 2, seed=0)
  np.testing.assert_array_equal(np.bincount(labels[picked]), [2, 2, 2])
  np.testing.assert_array_equal(picked, vlm.few_shot_indices(labels, 2, 0))
  with pytest.raises(ValueError, match="Class 2 has 2 examples; shots=3"):
    vlm.few_shot_indices(labels, 3, seed=0)
  with pytest.raises(ValueError, match="Unknown dataset 'cifar'; allowed: "
                     "'fashion_mnist', 'digits'"):
    vlm.load_image_data("cifar")


@pytest.fixture(scope="module")
def task(text, toy_tower):
  # The shifted digits task (8x8 images, as the toy tower's): the plumbing.
  return vlm.make_prompt_task(dataset="digits", shots=4, seed=0,
                              phrase="a photo of", text=text,
                              image_params=toy_tower)[0]


def test_prompt_task_shapes_and_zero_shot(task):
  assert task.train["image_embeddings"].shape == (40, HIDDEN)
  np.testing.assert_array_equal(np.bincount(task.train["label"]), [4] * 10)
  assert task.test["image_embeddings"].shape == (
      task.source_test["image_embeddings"].shape)
  assert task.init_prompt.shape == (3, HIDDEN)
  empty = jnp.zeros((0, HIDDEN))
  logits = task.logits(empty, task.test)
  assert logits.shape == (task.test["label"].size, 10)
  assert vlm.zero_shot_accuracy(task, task.test) == pytest.approx(
      np.mean(np.argmax(logits, -1) == task.test["label"]))


def test_prompt_task_under_black_box_jit_and_vmap(task):
  box = black_box.BlackBox(task.loss, task.accuracy)
  prompts = task.init_prompt + 0.1 * np.random.default_rng(4).normal(
      size=(5, *task.init_prompt.shape)).astype(np.float32)
  losses = jax.jit(jax.vmap(box.loss, in_axes=(0, None)))(prompts,
                                                          task.train)
  assert losses.shape == (5,) and np.isfinite(losses).all()
  for i in (0, 4):
    assert float(losses[i]) == pytest.approx(
        float(task.loss(prompts[i], task.train)), rel=1e-5)
  acc = box.accuracy(jnp.zeros((0, HIDDEN)), task.test)
  assert float(acc) == pytest.approx(vlm.zero_shot_accuracy(task, task.test))
  assert (box.queries, box.accuracy_queries) == (5, 1)
  with pytest.raises(ValueError, match="width 8; the text tower's"):
    task.loss(jnp.zeros((2, 8)), task.train)


@pytest.mark.slow  # loads 90 MB and compiles six layers: ~3 s
def test_real_minilm_class_embeddings_are_unit_and_distinct():
  pytest.importorskip(vlm.MINILM_PACKAGE)
  pytest.importorskip("tokenizers")
  text = vlm.load_minilm()
  names = ("T-shirt/top", "Trouser", "Sneaker", "Bag")
  ids, mask = vlm.tokenize_class_names(text.tokenizer, names)
  hidden = text.model.config.hidden_size
  emb = np.asarray(vlm.class_text_embeddings(
      text.model, text.params, jnp.zeros((0, hidden)), ids, mask))
  assert emb.shape == (4, 384)
  np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1, rtol=1e-5)
  cosines = emb @ emb.T
  assert np.max(cosines[~np.eye(4, dtype=bool)]) < 0.9
