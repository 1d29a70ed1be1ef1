"""Mutation testing: plants one known bug at a time in a copy of the repository and runs the tests
that should catch it.

  python tests/mutation.py [--only NAME ...] [--list] [--check] [--keep]

The files of the working tree (`git ls-files`, committed or not) are copied into a temporary
folder beside a link to ../shared (the tests' data). Each mutant is a file, an exact text that
must occur in it exactly once (else the script stops: the code moved, update the mutant; --check
tries them all at once) and its replacement. Its tests run with `pytest -x -q`: KILLED
when one fails, SURVIVED when all pass, ERROR when pytest could not run them (exit status other
than 0 and 1). First the unmutated copy runs every mutant's tests at once; they must all pass,
with nothing skipped. Not collected by pytest (no test_ prefix). CPU-heavy: about 15 minutes on
two cores; each mutant's tests take well under a minute.
"""

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAPER = "tests/test_paper.py"
STEPS = "tests/test_steps.py"
PREPROCESSING = "tests/test_preprocessing.py"
PLATEAU_TRAINING = "tests/test_train.py::test_plateau_drops_reach_training_and_survive_a_resume"
CAFFE = "tests/test_caffe.py"
EXPERIMENTS = "tests/test_experiments.py::test_"


@dataclasses.dataclass
class Mutant:
  name: str
  path: str
  old: str  # an exact text of the file, found exactly once
  new: str
  tests: list[str]


def mutant(name, path, old, new, *tests):
  return Mutant(name, path, old, new, list(tests))


MUTANTS = [
  # The maths of training and evaluation.
  mutant(
    "loss divided by the batch size, not the unmasked count", "supervision/steps.py",
    "return mask / jnp.maximum(mask.sum(), 1)", "return mask / mask.shape[0]", STEPS,
  ),
  mutant(
    "reported metrics averaged over masked rows too", "supervision/steps.py",
    "metrics = {k: (v * weights).sum() for k, v in metrics.items()}",
    "metrics = {k: v.mean() for k, v in metrics.items()}", STEPS,
  ),
  mutant(
    "eval sums include the padded rows", "supervision/steps.py",
    "sums = {k: (v * mask).sum() for k, v in metrics.items()}",
    "sums = {k: v.sum() for k, v in metrics.items()}", STEPS,
  ),
  mutant(
    "10-view average mixes images across the batch", "supervision/steps.py",
    "jax.nn.log_softmax(logits).reshape(b, v, -1), axis=1)",
    "jax.nn.log_softmax(logits).reshape(v, b, -1), axis=0)", STEPS,
  ),
  mutant(
    "10-view average of logits, not of softmaxes", "supervision/steps.py",
    "jax.nn.logsumexp(jax.nn.log_softmax(logits).reshape(b, v, -1), axis=1) - jnp.log(v)",
    "jax.nn.log_softmax(logits.reshape(b, v, -1).mean(axis=1))", STEPS,
  ),
  mutant(
    "top-5 error with any instead of all", "supervision/steps.py",
    "jnp.all(top5 != labels[:, None], axis=-1)", "jnp.any(top5 != labels[:, None], axis=-1)",
    STEPS,
  ),
  # The schedule.
  mutant(
    "plateau scale does not reach the optimizer", "supervision/steps.py",
    "hyperparams = dict(state.opt_state.hyperparams, learning_rate=lr)",
    "hyperparams = dict(state.opt_state.hyperparams, learning_rate=lr_fn(state.step))", STEPS,
  ),
  mutant(
    "training loop does not pass the plateau scale", "supervision/train.py",
    "trainer.train_step(state, batch, trainer.data_stats, plateau.scale)",
    "trainer.train_step(state, batch, trainer.data_stats, 1.0)", PLATEAU_TRAINING,
  ),
  mutant(
    "patience not reset after a drop", "supervision/optim.py",
    "self.drops, self.bad_evals, self.scale = self.drops + 1, 0, self.scale * self.factor",
    "self.drops, self.scale = self.drops + 1, self.scale * self.factor",
    "tests/test_optim.py",
  ),
  mutant(
    "plateau state not restored on resume", "supervision/train.py",
    'plateau = optim.Plateau(**meta["plateau"])', "plateau = optim.Plateau.from_config(config)",
    PLATEAU_TRAINING,
  ),
  mutant(
    "at most 2 learning-rate drops", "configs/alexnet.py",
    "config.max_lr_drops = 3", "config.max_lr_drops = 2", PAPER,
  ),
  # The paper's constants.
  mutant("LRN k = 1", "configs/alexnet.py", "k=2.0, n=5", "k=1.0, n=5", PAPER),
  mutant(
    "LRN alpha divided by n in the config", "configs/alexnet.py",
    "alpha_over_n=False", "alpha_over_n=True", PAPER,
  ),
  mutant(
    "LRN alpha divided by n by default", "supervision/models.py",
    "alpha_over_n: bool = False", "alpha_over_n: bool = True", PAPER,
  ),
  mutant(
    "pooling window 2", "configs/alexnet.py",
    "dict(window=3, stride=2, partial", "dict(window=2, stride=2, partial", PAPER,
  ),
  mutant(
    "momentum 0.8", "configs/alexnet.py", "config.momentum = 0.9", "config.momentum = 0.8", PAPER,
  ),
  mutant(
    "weight decay 5e-3", "configs/alexnet.py",
    "config.weight_decay = 5e-4", "config.weight_decay = 5e-3", PAPER,
  ),
  mutant(
    "learning rate 0.001", "configs/alexnet.py",
    "config.learning_rate = 0.01", "config.learning_rate = 0.001", PAPER,
  ),
  mutant(
    "dropout 0.25", "configs/alexnet.py", "m.dropout_rate = 0.5", "m.dropout_rate = 0.25", PAPER,
  ),
  mutant("init std 0.02", "configs/alexnet.py", "m.init_std = 0.01", "m.init_std = 0.02", PAPER),
  mutant(
    "conv4 bias 0", "configs/alexnet.py",
    '("conv2", "conv4", "conv5", "fc6", "fc7")', '("conv2", "conv5", "fc6", "fc7")', PAPER,
  ),
  mutant(
    "batch 256", "configs/alexnet.py", "config.batch_size = 128", "config.batch_size = 256", PAPER,
  ),
  mutant(
    "227x227 crops", "configs/alexnet.py",
    "config.crop_size = 224", "config.crop_size = 227", PAPER,
  ),
  mutant(
    "lighting std 0.2", "configs/alexnet.py",
    "config.pca_lighting_std = 0.1", "config.pca_lighting_std = 0.2", PAPER,
  ),
  mutant(
    "biases decayed by default", "configs/alexnet.py",
    "config.decay_biases = False", "config.decay_biases = True", STEPS,
  ),
  mutant(
    "conv1 padded 1 before and 2 after", "configs/alexnet.py",
    "padding=((0, 3), (0, 3))", "padding=((1, 2), (1, 2))", PAPER,
  ),
  mutant(
    "conv3 reads its own column", "configs/alexnet.py",
    'conv("conv3", 384, 3, reads="all")', 'conv("conv3", 384, 3)', PAPER,
  ),
  mutant(
    "CIFAR-10 conv3 max pooling", "configs/cifar10.py",
    'alexnet.conv("conv3", 64, 5, pool="avg")', 'alexnet.conv("conv3", 64, 5, pool="max")', PAPER,
  ),
  mutant(
    "one_column keeps conv4 whole", "configs/alexnet.py",
    'if c["name"] != "conv5"', 'if c["name"] not in ("conv4", "conv5")', PAPER,
  ),
  mutant(
    "six_conv's conv6 reads both columns", "configs/alexnet.py",
    'conv("conv6", 256, 3)', 'conv("conv6", 256, 3, reads="all")', PAPER,
  ),
  # The network's maths.
  mutant(
    "columns merged in reverse order", "supervision/models.py",
    "return jnp.concatenate(list(x), axis=-1)", "return jnp.concatenate(list(x)[::-1], axis=-1)",
    PAPER,
  ),
  mutant(
    "FC layers flatten channels first", "supervision/models.py",
    "x.reshape(len(x), -1) @ w + b", "jnp.moveaxis(x, -1, 1).reshape(len(x), -1) @ w + b", PAPER,
  ),
  mutant(
    "LRN before the ReLU", "supervision/models.py",
    'x, x_columns = act(x), True\n      lrn = self._lrn if layer["lrn"] else lambda x: x',
    'x_columns = True\n      lrn = (lambda x: act(self._lrn(x))) if layer["lrn"] else act',
    PAPER,
  ),
  mutant(
    "a run ended at stop_at_train_error trains on when started again", "supervision/train.py",
    'if meta.get("reached_train_error"):', 'if meta.get("reached_train_error") and False:',
    "tests/test_train.py::test_training_ends_at_the_first_logged_error_below_stop_at_train_error",
  ),
  mutant(
    "a network's standardize_inputs not taken from its checkpoint", "supervision/inference.py",
    '"channel_order", "standardize_inputs")', '"channel_order")', "tests/test_inference.py",
  ),
  mutant(
    "inputs standardized by the eigenvalues alone", "supervision/preprocessing.py",
    'jax.lax.rsqrt((stats["eigvecs"] ** 2) @ stats["eigvals"])', 'jax.lax.rsqrt(stats["eigvals"])',
    PREPROCESSING,
  ),
  mutant(
    "old checkpoints' missing keys filled with today's defaults", "supervision/checkpoint.py",
    '"model.dropout_form": "inverted"', '"model.dropout_form": "paper"', "tests/test_inference.py",
  ),
  mutant(
    "LRN after_pool ignored", "supervision/models.py",
    "x = lrn(pool(x)) if self.lrn[\"after_pool\"] else pool(lrn(x))", "x = pool(lrn(x))", PAPER,
  ),
  mutant(
    "layer_init_std ignored", "supervision/models.py",
    "nn.initializers.normal(self.layer_init_std.get(name, self.init_std))",
    "nn.initializers.normal(self.init_std)", "tests/test_models.py",
  ),
  mutant(
    "scaled init without the ReLU gain", "supervision/models.py",
    '"relu": nn.initializers.he_normal', '"relu": nn.initializers.lecun_normal',
    "tests/test_models.py",
  ),
  mutant(
    "the model ignores the pooling window", "supervision/models.py",
    'window, stride = self.pool["window"], self.pool["stride"]',
    'window, stride = 3, self.pool["stride"]', PAPER,
  ),
  mutant(
    "max and average pooling swapped", "supervision/models.py",
    "pooling.pool(kind, x,", 'pooling.pool("avg" if kind == "max" else "max", x,', PAPER,
  ),
  mutant(
    "partial windows padded with zeros for max pooling", "supervision/pooling.py",
    "init = -jnp.inf if op is lax.max else 0.0", "init = 0.0", "tests/test_models.py",
  ),
  mutant(
    "partial windows averaged over the whole window", "supervision/pooling.py",
    "return reduce(x) / reduce(", "return reduce(x) / window**2 + 0 * reduce(",
    "tests/test_models.py",
  ),
  mutant(
    "max pooling's gradient to every tied maximum", "supervision/pooling.py",
    "hit = (at_k == y) & ~taken", "hit = at_k == y", "tests/test_pooling.py",
  ),
  mutant(
    "max pooling's gradient to the wrong phase", "supervision/pooling.py",
    "phases[k % stride] +=", "phases[(k + 1) % stride] +=", "tests/test_pooling.py",
  ),
  mutant(
    "ReLU is GELU", "supervision/models.py", '"relu": nn.relu', '"relu": nn.gelu', PAPER,
  ),
  mutant(
    "init bias 0.1 instead of 1", "supervision/models.py",
    "bias = 1.0 if name in self.init_bias_one", "bias = 0.1 if name in self.init_bias_one",
    "tests/test_models.py::test_init_follows_details_of_learning",
  ),
  mutant(
    "init truncated normal", "supervision/models.py",
    "kernel_init = nn.initializers.normal(self.layer_init_std.get(name, self.init_std))",
    "kernel_init = nn.initializers.truncated_normal(self.layer_init_std.get(name, self.init_std))",
    "tests/test_models.py::test_init_follows_details_of_learning",
  ),
  mutant(
    "Nesterov momentum", "supervision/optim.py",
    "optax.trace(decay=momentum)", "optax.trace(decay=momentum, nesterov=True)", PAPER,
  ),
  # Data.
  mutant(
    "a batch across an epoch boundary drawn from one epoch's shuffle",
    "supervision/input_pipeline.py",
    "[epoch_order(size, seed, e)[o] for e, o in zip(epochs, offsets, strict=True)]",
    "[epoch_order(size, seed, epochs[0])[o] for o in offsets]",
    "tests/test_input_pipeline.py::test_a_batch_across_an_epoch_boundary_takes_from_both_epochs",
  ),
  mutant(
    "evaluation wraps around instead of padding", "supervision/input_pipeline.py",
    "return np.where(indices < size, indices, -1)", "return indices % size",
    "tests/test_input_pipeline.py::test_evaluation_sees_every_example_once_with_padding_masked",
  ),
  mutant(
    "flips not applied", "supervision/preprocessing.py",
    "return jnp.where(flips[:, None, None, None], images[:, :, ::-1], images)", "return images",
    PREPROCESSING,
  ),
  mutant(
    "crop offsets miss the last position", "supervision/preprocessing.py",
    "config.image_size - config.crop_size + 1)", "config.image_size - config.crop_size)",
    PREPROCESSING,
  ),
  mutant(
    "mean image not subtracted", "supervision/preprocessing.py",
    'return images.astype(jnp.float32) - stats["mean"]', "return images.astype(jnp.float32)",
    PREPROCESSING,
  ),
  mutant(
    "lighting scaled by eigenvalues, not their roots", "supervision/preprocessing.py",
    "s = jnp.sqrt(eigvals) if", "s = eigvals if", PREPROCESSING,
  ),
  mutant(
    "10 views reflected upside down", "supervision/preprocessing.py",
    "[views, views[:, :, :, ::-1]]", "[views, views[:, :, ::-1]]", STEPS,
  ),
  # Stopping, resuming, evaluating a checkpoint.
  mutant(
    "SIGTERM stops without saving", "supervision/train.py",
    "or last or eval_now or stopping", "or last or eval_now",
    "tests/test_train.py::test_sigterm_saves_exits_and_resumes_after_its_step",
  ),
  mutant(
    "eval_checkpoint_step ignored", "supervision/checkpoint.py",
    "return config.eval_checkpoint_step if config.eval_checkpoint_step >= 0 else None",
    "return None",
    "tests/test_failures.py::test_eval_restores_the_step_it_is_given",
  ),
  mutant(
    "eval computes statistics of the dataset given, not the network's own",
    "supervision/inference.py",
    "data_stats = sharding.replicate(mesh, training_stats(trained, workdir))",
    "data_stats = sharding.replicate(mesh, stats.load_or_compute_stats(net_config, workdir))",
    "tests/test_failures.py::test_eval_uses_the_networks_own_statistics_on_a_dataset_without_a_train_split",
  ),
  # Fine-tuning, class counts, class subsets.
  mutant(
    "padded classifier: the first neurons cut off", "supervision/models.py",
    "_merge_columns(x)[:, : self.num_classes]", "_merge_columns(x)[:, -self.num_classes :]",
    "tests/test_models.py::test_a_class_count_the_columns_do_not_divide_pads_the_classifier",
  ),
  mutant(
    "fine-tuning restores the classifier too", "supervision/checkpoint.py",
    "if name in classifiers or name not in source:", "if name not in source:",
    "tests/test_finetune.py::test_restores_the_matching_layers_and_starts_the_classifier_anew",
  ),
  mutant(
    "init_from applied to a resumed run too", "supervision/train.py",
    "  if restored is None:  # a fresh start", "  if restored is None or config.init_from:  #",
    "tests/test_finetune.py::test_a_run_with_its_own_checkpoint_resumes_and_ignores_init_from",
  ),
  mutant(
    "config.classes labelled in folder order", "supervision/datasets.py",
    "  return list(config.classes)", "  return sorted(config.classes)",
    "tests/test_input_pipeline.py::test_classes_select_some_class_folders_in_their_order",
  ),
  # Figures.
  mutant(
    "figure: conv1 kernels read across the column axis", "supervision/figures.py",
    "return np.moveaxis(kernel, -1, 1)",
    "return kernel.reshape(kernel.shape[0], kernel.shape[-1], *kernel.shape[1:4])",
    "tests/test_figures.py::test_kernel_j_of_column_c_makes_map_j_of_column_c",
  ),
  mutant(
    "figure: the last column's kernels on top", "supervision/figures.py",
    "y, x = c * (block + COLUMN_GAP)", "y, x = (columns - 1 - c) * (block + COLUMN_GAP)",
    "tests/test_figures.py::test_the_grid_has_column_0_on_top_and_each_column_in_order",
  ),
  mutant(
    "figure: kernels normalised channel by channel", "supervision/figures.py",
    "low = kernels.min(axis=(-3, -2, -1), keepdims=True)\n"
    "  span = kernels.max(axis=(-3, -2, -1), keepdims=True) - low",
    "low = kernels.min(axis=(-3, -2), keepdims=True)\n"
    "  span = kernels.max(axis=(-3, -2), keepdims=True) - low",
    "tests/test_figures.py::test_chroma_is_0_for_grey_kernels_and_hand_computed_for_a_red_one",
  ),
  mutant(
    "figure: the rows of a resumed run only replace those of their steps",
    "supervision/figures.py",
    'while points and points[-1][0] >= row["step"]:',
    'while points and points[-1][0] == row["step"]:',
    "tests/test_figures.py::test_the_curves_keep_the_resumed_rows_and_drop_a_row_cut_short",
  ),
  mutant(
    "figure 4: the neighbours' feature rows taken for their examples", "supervision/retrieval.py",
    "database_examples[neighbours],", "neighbours,",
    "tests/test_retrieval.py::test_the_figure_shows_the_examples_of_a_features_file_with_rows_left_out",
  ),
  # Importing Caffe's weights and conventions.
  mutant(
    "fc6 weights kept in Caffe's (channel, row, column) order", "supervision/caffe.py",
    "hwc = weights.reshape(out, maps, size // maps).transpose(0, 2, 1).reshape(out, size)",
    "hwc = weights", CAFFE,
  ),
  mutant(
    "Caffe's LRN within columns", "configs/alexnet.py",
    "m.lrn.update(k=1.0, alpha_over_n=True, across_columns=True)",
    "m.lrn.update(k=1.0, alpha_over_n=True)", CAFFE,
  ),
  mutant(
    "Caffe's test outputs scaled by the paper's dropout", "configs/alexnet.py",
    'm.dropout_form = "inverted"', 'm.dropout_form = "paper"', CAFFE,
  ),
  mutant(
    "Caffe's mean image kept in BGR order", "supervision/caffe.py",
    "return mean.transpose(1, 2, 0)[..., ::-1]", "return mean.transpose(1, 2, 0)", CAFFE,
  ),
  mutant(
    "BGR views not reversed", "supervision/preprocessing.py",
    'return views[..., ::-1] if config.channel_order == "bgr" else views', "return views",
    PREPROCESSING,
  ),
  mutant(
    "the CPU compiler options not given to the trainer's steps", "supervision/train.py",
    "options = sharding.compiler_options()", "options = None",
    "tests/test_train.py::test_the_steps_keep_the_convolutions_from_ynnpack_on_cpus",
  ),
  mutant(
    "the CPU compiler options give YNNPACK the convolutions too", "supervision/sharding.py",
    '"LIBRARY_FUSION_TYPE_REDUCE"',
    '"LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"',
    "tests/test_models.py::test_cpu_compiler_options_take_the_convolutions_from_ynnpack_and_"
    "compute_the_same",
  ),
  # The experiments' runner.
  mutant(
    "a continued run copies its source's final evaluation (and is skipped as done)",
    "experiments/common.py", "ignore_patterns(EVAL_RESULTS, ", "ignore_patterns(",
    EXPERIMENTS + "a_continued_run_starts_from_a_copy_without_the_final_evaluations_or_the_lock",
  ),
  mutant(
    "--runs ignored: every run not done is trained", "experiments/common.py",
    "if train_runs and name in chosen:", "if train_runs:",
    EXPERIMENTS + "runs_trains_only_the_matching_runs_and_names_a_pattern_that_matches_none",
  ),
  mutant(
    "a pair that reached 25% continues its best run too", "experiments/figure1.py",
    "best if best is not None and to_target(group[best])[0] is None else None", "best",
    EXPERIMENTS + "figure1_continues_the_best_rate_of_a_pair_that_fell_short",
  ),
  mutant(
    "the best of a pair short of 25% is its lowest last error, not its longest run",
    "experiments/figure1.py", '(-rows[-1]["epoch"], rows[-1]["top1_error"])',
    'rows[-1]["top1_error"]', EXPERIMENTS + "figure1_a_continued_run_is_its_pairs_best",
  ),
]  # fmt: skip


def copy_repo(dest: Path) -> Path:
  """The working tree's files (tracked, and untracked but not ignored) in dest/repo, with
  dest/shared linking to the shared data beside the repository."""
  listed = subprocess.run(
    ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
    cwd=ROOT, capture_output=True, text=True, check=True,
  ).stdout.split("\0")  # fmt: skip
  repo = dest / "repo"
  for name in filter(None, listed):
    if (ROOT / name).is_file():
      (repo / name).parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(ROOT / name, repo / name)
  (dest / "shared").symlink_to(ROOT.parent / "shared")
  return repo


def apply(repo: Path, m: Mutant) -> str:
  """Writes the mutant into `repo`; returns the original text of its file."""
  path = repo / m.path
  original = path.read_text()
  count = original.count(m.old)
  if count != 1:
    sys.exit(
      f"Mutant {m.name!r}: {m.old!r} occurs {count} times in {m.path}, not once: the code"
      " changed; update the mutant."
    )
  path.write_text(original.replace(m.old, m.new))
  return original


def pytest(repo: Path, tests: list[str]) -> tuple[int, str, float]:
  """Runs `tests` in `repo`; the runs share one JAX compilation cache (a mutant that leaves the
  compiled steps alone, in the training loop say, compiles nothing)."""
  args = [sys.executable, "-m", "pytest", "-x", "-q", "-n", "0", "-p", "no:cacheprovider", *tests]
  env = dict(os.environ, SUPERVISION_TEST_JAX_CACHE=str(repo.parent / "jax_cache"))
  start = time.time()
  result = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True)
  return result.returncode, result.stdout + result.stderr, time.time() - start


def first_failure(output: str) -> str:
  """The first failed test and the first lines of its error (the assertion and its message)."""
  failed = [line for line in output.splitlines() if re.match(r"(FAILED|ERROR) ", line)]
  name = failed[0].split(" - ")[0] if failed else output.strip().splitlines()[-1]
  errors = [line[1:].strip() for line in output.splitlines() if line.startswith("E ")]
  boilerplate = r"(AssertionError:|Omitting .*|Use -v.*|Differing items:|Full .*|\.\.\.)?$"
  errors = [e for e in errors if not re.fullmatch(boilerplate, e)][:3]
  return "\n           ".join([name[:200], *(e[:200] for e in errors)])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--only", nargs="+", default=[], help="run mutants whose name has this")
  parser.add_argument("--list", action="store_true", help="list the mutants and their tests")
  parser.add_argument("--keep", action="store_true", help="keep the temporary copy")
  parser.add_argument(
    "--check", action="store_true", help="only check that every mutant fits and its tests exist"
  )
  args = parser.parse_args()
  chosen = [m for m in MUTANTS if not args.only or any(o in m.name for o in args.only)]
  if args.list or not chosen:
    for m in MUTANTS:
      print(f"{m.name:65s} {m.path:32s} {' '.join(m.tests)}")
    return
  tmp = Path(tempfile.mkdtemp(prefix="supervision_mutation_"))
  try:
    repo = copy_repo(tmp)
    for m in chosen:  # every mutant fits the code before anything runs
      (repo / m.path).write_text(apply(repo, m))
    tests = sorted({t for m in chosen for t in m.tests})
    if args.check:
      code, output, _ = pytest(repo, ["--collect-only", *tests])
      if code != 0:
        sys.exit(f"The mutants' tests do not all collect:\n{output[-4000:]}")
      print(f"{len(chosen)} mutants fit the code; their {len(tests)} test selections collect.")
      return
    code, output, seconds = pytest(repo, ["-rs", *tests])
    if code != 0 or re.search(r"\d+ skipped", output):
      sys.exit(f"The unmutated code does not pass {tests} cleanly:\n{output[-4000:]}")
    print(f"unmutated: {len(tests)} test selections pass ({seconds:.0f} s)", flush=True)
    results = []
    for m in chosen:
      original = apply(repo, m)
      try:
        code, output, seconds = pytest(repo, m.tests)
      finally:
        (repo / m.path).write_text(original)
      status = {0: "SURVIVED", 1: "KILLED"}.get(code, "ERROR")
      detail = first_failure(output) if code else "all passed: " + " ".join(m.tests)
      results.append(status)
      print(f"{status:8s} {seconds:4.0f} s  {m.name}\n           {detail}", flush=True)
    killed = results.count("KILLED")
    print(f"\nScore: {killed}/{len(results)} killed ({100 * killed / len(results):.0f}%),", end="")
    print(f" {results.count('SURVIVED')} survived, {results.count('ERROR')} errors.")
    if killed < len(results):
      sys.exit(1)
  finally:
    if args.keep:
      print(f"The copy is kept in {tmp}.")
    else:
      shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
