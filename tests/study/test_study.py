"""The study library: plan, run or load, aggregation, tables, plots.

Runs here are fake (a function that writes no checkpoint): nothing trains;
tests/experiments run the mains end to end.
"""

import json
import math

import ml_collections
import pytest

from flatsparse import study


def _base():
  return ml_collections.ConfigDict({
      "dataset": {"name": "digits", "label_noise": None},
      "model": {"name": "mlp", "hidden": (8,)},
      "optimizer": {"name": "sgd", "learning_rate": 0.1},
      "sparsity": None, "steps": 10, "batch_size": 4, "seed": 0})


# ---- aggregation --------------------------------------------------------


def test_aggregate_is_mean_std_and_count_by_hand():
  values = [0.9, 0.8, 0.6]
  mean = (0.9 + 0.8 + 0.6) / 3
  squares = sum((v - mean) ** 2 for v in values)
  got = study.aggregate(values)
  assert got["n"] == 3
  assert got["mean"] == pytest.approx(mean, abs=1e-15)
  assert got["std"] == pytest.approx(math.sqrt(squares / 2), abs=1e-15)
  population = study.aggregate(values, ddof=0)
  assert population["std"] == pytest.approx(math.sqrt(squares / 3),
                                             abs=1e-15)
  # Missing values are left out; nothing at all is None.
  assert study.aggregate([None, 2.0, None, 4.0]) == {
      "mean": 3.0, "std": pytest.approx(math.sqrt(2.0)), "n": 2}
  assert study.aggregate([None, None]) is None
  assert study.aggregate([]) is None
  # One seed: std 0, not NaN.
  assert study.aggregate([0.5]) == {"mean": 0.5, "std": 0.0, "n": 1}
  with pytest.raises(ValueError, match="ddof must be 0 .* or 1 .*got 2"):
    study.aggregate(values, ddof=2)


def test_summarize_groups_in_order_of_first_appearance():
  records = [
      {"method": "gmp", "sparsity": 0.9, "seed": 0, "accuracy": 0.8,
       "sharp": {"eig": 2.0}},
      {"method": "dense", "sparsity": None, "seed": 0, "accuracy": 0.9},
      {"method": "gmp", "sparsity": 0.9, "seed": 1, "accuracy": 0.6,
       "sharp": {"eig": 4.0}},
      {"method": "dense", "sparsity": None, "seed": 1, "accuracy": 1.0},
  ]
  rows = study.summarize(
      records, ("method", "sparsity"),
      {"accuracy": "accuracy",
       "eig": lambda r: r["sharp"]["eig"] if "sharp" in r else None},
      ddof=0)
  assert [(r["method"], r["sparsity"], r["seeds"]) for r in rows] == [
      ("gmp", 0.9, [0, 1]), ("dense", None, [0, 1])]
  assert rows[0]["accuracy"] == {"mean": pytest.approx(0.7),
                                 "std": pytest.approx(0.1), "n": 2}
  assert rows[0]["eig"] == {"mean": 3.0, "std": 1.0, "n": 2}
  assert rows[1]["eig"] is None  # dense runs measured nothing
  assert list(rows[0]) == ["method", "sparsity", "seeds", "accuracy", "eig"]


def test_cells_and_markdown_table():
  stats = {"mean": 0.97123, "std": 0.0053}
  assert study.cell(stats, scale=100) == "97.12 ± 0.53"
  assert study.cell(stats, fmt=".3g") == "0.971 ± 0.0053"
  assert study.cell({"mean": 0.0025, "std": 0.001}, scale=100,
                    signed=True) == "+0.25 ± 0.10"
  assert study.cell(None) == "-"
  table = study.markdown_table(["variant", "n"], [["dense", 3], ["gmp", 1]])
  assert table == ("| variant | n |\n|---|---|\n| dense | 3 |\n| gmp | 1 |")
  with pytest.raises(ValueError, match="Row 1 has 1 cells, the header 2"):
    study.markdown_table(["a", "b"], [["x", "y"], ["z"]])


# ---- plan ----------------------------------------------------------------


def test_plan_applies_overrides_per_variant_and_seed():
  gmp = {"algorithm": "magnitude", "sparsity": 0.9}
  variants = [study.Variant("dense"),
              study.Variant("gmp", {"sparsity": gmp, "steps": 20,
                                    "dataset.label_noise": 0.25})]
  runs = study.plan(_base(), variants, seeds=(3, 4))
  assert [r.path for r in runs] == ["dense/seed_3", "dense/seed_4",
                                    "gmp/seed_3", "gmp/seed_4"]
  assert runs[0].config.sparsity is None and runs[0].config.seed == 3
  assert runs[0].tags == {"variant": "dense", "seed": 3}
  config = runs[3].config
  assert isinstance(config, ml_collections.ConfigDict)
  assert config.sparsity.to_dict() == gmp and config.steps == 20
  assert config.seed == 4 and config.dataset.label_noise == 0.25
  assert config.dataset.name == "digits"  # the rest of the section stays
  assert _base().dataset.label_noise is None  # the base is not modified


@pytest.mark.parametrize("variants, seeds, message", [
    ([study.Variant("a", {"lr": 0.1})], (0,),
     r"Variant 'a' overrides unknown top-level keys \['lr'\]; allowed: "),
    ([study.Variant("a"), study.Variant("a")], (0,), "'a' appears twice"),
    ([study.Variant("")], (0,), "non-empty name"),
    ([study.Variant("a")], (), "at least one seed"),
    ([], (0,), "at least one variant"),
    ([study.Variant("a", {"sparsity.sparsity": 0.5})], (0,),
     "Cannot set 'sparsity.sparsity': sparsity is None"),
])
def test_bad_plans_name_the_bad_value(variants, seeds, message):
  with pytest.raises(ValueError, match=message):
    study.plan(_base(), variants, seeds)


def test_product_and_the_pruning_axes():
  methods = {"dense": {}, "gmp": {"sparsity": {"algorithm": "magnitude"}},
             "safe": {"safe": {"name": "safe", "lam": 0.3}}}
  axis = study.sparsity_axis(methods, (0.9, 0.99), order=("safe", "dense",
                                                          "gmp"))
  assert [v.name for v in axis] == [
      "safe/sparsity_0.9", "safe/sparsity_0.99", "dense",
      "gmp/sparsity_0.9", "gmp/sparsity_0.99"]
  assert axis[1].overrides == {"safe": {"name": "safe", "lam": 0.3},
                               "safe.sparsity": 0.99}
  assert axis[2].tags == {"method": "dense", "sparsity": None}
  grid = study.product(study.label_noise_axis((0.0, 0.5)), axis)
  assert len(grid) == 10 and grid[0].name == "noise_0/safe/sparsity_0.9"
  assert grid[-1].tags == {"noise": 0.5, "method": "gmp", "sparsity": 0.99}
  assert grid[-1].overrides["dataset.label_noise"] == 0.5
  # No noise levels: the methods as they are, noise None.
  plain = study.product(study.label_noise_axis(()), axis)
  assert [v.name for v in plain] == [v.name for v in axis]
  assert plain[0].tags["noise"] is None
  runs = study.plan(_base(), grid, (0,))
  run = runs[-1].config
  assert run.sparsity.sparsity == 0.99 and run.dataset.label_noise == 0.5
  assert run.dataset.noise_kind == "symmetric"
  # A run's tags: its variant's full name, the axes' tags and the seed.
  assert runs[-1].tags == {"variant": "noise_0.5/gmp/sparsity_0.99",
                           "noise": 0.5, "method": "gmp", "sparsity": 0.99,
                           "seed": 0}
  with pytest.raises(ValueError, match="must list every method once"):
    study.sparsity_axis(methods, (0.9,), order=("gmp",))
  with pytest.raises(ValueError, match="'gmp' prunes .* sparsities is empty"):
    study.sparsity_axis(methods, ())


# ---- run or load ---------------------------------------------------------


class _FakeRuns:
  """A run function that counts its calls and trains nothing."""

  def __init__(self):
    self.calls = []

  def __call__(self, run, run_dir, stale):
    self.calls.append((run.path, stale))
    return {**run.tags, "accuracy": 0.5 + 0.1 * run.seed,
            "measured": len(self.calls)}


def test_run_or_load_caches_each_run_and_refuses_a_changed_config(tmp_path):
  variants = [study.Variant("dense"),
              study.Variant("wide", {"model.hidden": (16,)})]
  runs = study.plan(_base(), variants, (0, 1))
  fake, seen = _FakeRuns(), []
  records = study.run_or_load(
      runs, str(tmp_path), fake,
      on_record=lambda i, run, record, s: seen.append((i, run.path)))
  assert [c[0] for c in fake.calls] == [r.path for r in runs]
  assert seen == list(enumerate(r.path for r in runs))
  saved = json.loads((tmp_path / "wide/seed_1/result.json").read_text())
  assert saved == records[3]
  assert saved["config"]["model"]["hidden"] == [16]
  assert saved["accuracy"] == pytest.approx(0.6)
  # A second call loads every record: the run function is not called.
  again = study.run_or_load(runs, str(tmp_path), fake)
  assert len(fake.calls) == 4 and again == records
  # A record the caller calls stale is made again, and handed to it.
  fresh = study.run_or_load(runs, str(tmp_path), fake,
                            is_current=lambda r: r["variant"] != "dense")
  assert [c[0] for c in fake.calls[4:]] == ["dense/seed_0", "dense/seed_1"]
  assert fake.calls[4][1] == records[0]
  assert fresh[0]["measured"] == 5 and fresh[2] == records[2]
  # Another config in the same workdir is an error naming what changed.
  changed = study.plan(_base(), [study.Variant("wide", {
      "model.hidden": (16,), "steps": 11})], (0,))
  with pytest.raises(ValueError, match=r"wide.seed_0 holds a run of a "
                     r"different config .*\(changed: steps\); use a new "
                     "--workdir"):
    study.run_or_load(changed, str(tmp_path), fake)
  # Other file and key names (experiments/overparam.py keeps record.json).
  study.run_or_load(runs[:1], str(tmp_path / "other"), fake,
                    cache_file="record.json", config_key="run_config")
  other = json.loads((tmp_path / "other/dense/seed_0/record.json").read_text())
  assert other["run_config"]["steps"] == 10 and "config" not in other


def test_plot_helpers_write_a_png_without_touching_pyplot(tmp_path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  backend = matplotlib.get_backend()
  fig, axes = study.figure(2, (8, 3))
  study.errorbar(axes[0], [1, 2, 3], [{"mean": 0.5, "std": 0.1}, None,
                                      {"mean": 0.7, "std": 0.0}],
                 scale=100, label="a")
  study.errorbar(axes[1], [1], [None])  # nothing to draw
  path = study.save_figure(fig, axes, str(tmp_path / "plot.png"))
  data = (tmp_path / "plot.png").read_bytes()
  assert path.endswith("plot.png") and data[:8] == b"\x89PNG\r\n\x1a\n"
  line = axes[0].containers[0].lines[0]
  assert list(line.get_ydata()) == [50.0, 70.0]  # the None point left out
  assert matplotlib.get_backend() == backend
  with pytest.raises(ValueError, match="panels must be an int >= 1, got 0"):
    study.figure(0)
