"""The Colab notebook runs from top to bottom (headless, on the CPU, with its tiny setting)."""

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def test_the_notebook_runs(cifar10_small_dir, monkeypatch, tmp_path):
  monkeypatch.setenv("SUPERVISION_NOTEBOOK_TINY", "1")
  monkeypatch.setenv("SUPERVISION_NOTEBOOK_DATA", str(cifar10_small_dir))  # its 100 per class
  monkeypatch.setenv("SUPERVISION_NOTEBOOK_WORKDIR", str(tmp_path / "run"))  # a new run
  notebook = nbformat.read(ROOT / "notebooks" / "supervision.ipynb", as_version=4)
  NotebookClient(
    notebook, timeout=600, resources={"metadata": {"path": ROOT / "notebooks"}}
  ).execute()
  outputs = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))
  assert "ten_views" in outputs and "validation top-1 error" in outputs
  assert os.environ["SUPERVISION_NOTEBOOK_TINY"] == "1"
