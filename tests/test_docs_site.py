"""The documentation site builds with --strict, and documents every public class."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

import handgrad.nn as hnn
from handgrad.cli import SUBCOMMANDS
from handgrad.optim import BEYOND_TORCH, OPTIMIZERS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install .[dev])")
    pytest.importorskip("mkdocstrings_handlers.python", reason="mkdocstrings-python missing")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def _page(site: Path, *parts: str) -> str:
    return (site.joinpath(*parts) / "index.html").read_text(encoding="utf-8")


def test_every_public_nn_name_has_an_api_entry(site: Path) -> None:
    page = _page(site, "api", "nn")
    names = [name for name in hnn.__all__ if not inspect.ismodule(getattr(hnn, name))]
    missing = [name for name in names if f'id="handgrad.nn.{name}"' not in page]
    assert missing == []


def test_every_optimizer_has_an_api_entry(site: Path) -> None:
    page = _page(site, "api", "optim")
    names = [*OPTIMIZERS, *BEYOND_TORCH]
    missing = [name for name in names if f'id="handgrad.optim.{name}"' not in page]
    assert missing == []


def test_the_cli_reference_shows_every_subcommand_help(site: Path) -> None:
    page = _page(site, "cli")
    for name in SUBCOMMANDS:
        assert f"handgrad {name}" in page
    assert "usage: handgrad train" in page
    assert "<!-- handgrad-cli-reference -->" not in page


def test_guides_and_derivations_are_built(site: Path) -> None:
    assert "accumulate_grad" in _page(site, "writing-a-layer")
    assert "vector–Jacobian product" in _page(site, "derivations")


def test_the_training_guide_and_the_train_api_are_built(site: Path) -> None:
    guide = _page(site, "training")
    assert "How a run ends" in guide
    assert "metrics.schema.json" in guide
    api = _page(site, "api", "train")
    for name in ("models.register_model", "optimizers.make_optimizer",
                 "schedules.parse_schedule", "status.RunStatus", "metrics.load_schema"):
        assert f'id="handgrad.train.{name}"' in api, name
