"""`--mode=predict`: the five most probable classes of images, as in the left half of Figure 4
("Qualitative Evaluations"), printed and optionally drawn.

The images (`config.predict.path`: a file, or a folder and its subfolders) are decoded and
preprocessed as evaluation does (`datasets.decode_image`, `preprocessing.center_view` or
`ten_views` with the network's mean image); the class names are the run's dataset's. An
image in a class folder of a dataset's layout, ROOT/SPLIT/CLASS/FILE, has that true class.
"""

from pathlib import Path

import jax
import ml_collections
import numpy as np
from matplotlib.figure import Figure

from supervision import ConfigError, DataError, checkpoint, datasets, inference, train

TOP = 5
FIGURE_INCHES = (3.0, 4.5)  # at FIGURE_DPI: 300 x 450 pixels
FIGURE_DPI = 100


def image_files(path: str) -> list[Path]:
  """The file `path`, or the files under the folder `path` (none starting with "."), sorted."""
  if not path:
    raise ConfigError("config.predict.path is empty: give an image file or a folder of images.")
  root = Path(path)
  if root.is_file():
    return [root]
  if not root.is_dir():
    raise FileNotFoundError(f"config.predict.path={path!r}: no such file or folder.")
  hidden = lambda p: any(part.startswith(".") for part in p.relative_to(root).parts)  # noqa: E731
  files = sorted(p for p in root.rglob("*") if p.is_file() and not hidden(p))
  if not files:
    raise DataError(f"config.predict.path={path!r}: the folder holds no files.")
  return files


def true_label(file: Path, labels: dict[str, int]) -> int:
  """The label of the class folder CLASS of a file ROOT/SPLIT/CLASS/FILE, where `labels` maps
  the class folders' names to labels and SPLIT is one of `datasets.FOLDER_SPLITS`; -1
  for a file elsewhere."""
  folder = file.absolute().parent
  in_split = folder.parent.name in datasets.FOLDER_SPLITS
  return labels.get(folder.name, -1) if in_split else -1


def fit_batch(config: ml_collections.ConfigDict, count: int) -> ml_collections.ConfigDict:
  """`config` with a batch no larger than `count` images need: a multiple of the data-parallel
  size (`config.mesh`; `inference.load` checks the mesh against the network's config)."""
  mesh = config.mesh
  data = mesh.data if mesh.data > 0 else max(1, jax.device_count() // max(1, mesh.model))
  fitted = config.copy_and_resolve_references()
  fitted.batch_size = min(config.batch_size, data * -(-count // data))
  return fitted


def figure_path(file: Path, config: ml_collections.ConfigDict, workdir: str) -> Path:
  """WORKDIR/predictions/<the file's path under config.predict.path, "_" for "/">.png"""
  root = Path(config.predict.path)
  relative = file.relative_to(root) if root.is_dir() else Path(file.name)
  return Path(workdir) / "predictions" / "_".join(relative.with_suffix(".png").parts)


def draw(image: np.ndarray, prediction: dict, path: Path) -> None:
  """A PNG of FIGURE_INCHES at FIGURE_DPI like Figure 4's left half: the image with its true
  class under it (when known) and bars of the top-5 probabilities, the true class's red."""
  fig = Figure(figsize=FIGURE_INCHES, dpi=FIGURE_DPI)
  picture, bars = fig.subplots(2, 1, height_ratios=(2, 1))
  picture.imshow(image, interpolation="nearest")
  picture.set_axis_off()
  label = prediction["label"] or "(true class unknown)"
  picture.text(0.5, -0.03, label, transform=picture.transAxes, ha="center", va="top", fontsize=9)
  names, probs = zip(*prediction["top5"], strict=True)
  colors = ["tab:red" if name == prediction["label"] else "lightsteelblue" for name in names]
  rows = np.arange(len(names))
  bars.barh(rows, probs, color=colors)
  for row, name in zip(rows, names, strict=True):
    bars.text(0.02, row, name, va="center", fontsize=7)
  bars.set(xlim=(0, 1), ylim=(len(names) - 0.5, -0.5), yticks=[])
  bars.tick_params(labelsize=7)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=FIGURE_DPI)


def predict(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """`--mode=predict`: prints the top-5 classes and probabilities of every image of
  `config.predict.path` (the central crop, or with `config.predict.ten_views` the mean of the 10
  views' softmax) and with `config.predict.figure` draws each into WORKDIR/predictions/.

  Returns {"file", "label" (the true class's name, or None), "top5": [(name, probability)]}
  per image read; an unreadable file is named in a warning, and the others are predicted.
  """
  files = image_files(config.predict.path)
  net = inference.load(fit_batch(config, len(files)), workdir, checkpoint.requested_step(config))
  folders = inference.dataset_classes(net)
  names = datasets.display_names(config, folders)
  by_folder = {name: label for label, name in enumerate(folders)}
  labels = [true_label(file, by_folder) for file in files]
  source = datasets.FolderSource([str(f) for f in files], labels, net.config.image_size)
  view = "ten_views" if config.predict.ten_views else "center"
  predictions = []
  for indices, batch_labels, values in net.batches(source, (view,)):
    for index, label, log_probs in zip(indices, batch_labels, values[view], strict=True):
      top = np.argsort(-log_probs, kind="stable")[:TOP]
      prediction = dict(
        file=str(files[index]),
        label=names[label] if label >= 0 else None,
        top5=[(names[c], float(np.exp(log_probs[c]))) for c in top],
      )
      predictions.append(prediction)
      known = f" (true class: {prediction['label']})" if prediction["label"] else ""
      lines = [f"  {p:.4f}  {name}" for name, p in prediction["top5"]]
      train.say("\n".join([f"{files[index]}{known}", *lines]))
      if config.predict.figure and jax.process_index() == 0:
        draw(source[index]["image"], prediction, figure_path(files[index], config, workdir))
  unread = sorted(set(map(str, files)) - {p["file"] for p in predictions})
  if unread:
    more = f" and {len(unread) - 5} more" if len(unread) > 5 else ""
    train.say(f"Not read: {len(unread)} of {len(files)} files ({', '.join(unread[:5])}{more}).")
  return predictions
