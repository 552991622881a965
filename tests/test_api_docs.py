"""The API reference builds from the docstrings without a single warning (docs/api/build_api_docs.py, pdoc)."""

from __future__ import annotations

import importlib.util
import typing
from pathlib import Path

import pytest

BUILDER = Path(__file__).resolve().parents[1] / "docs" / "api" / "build_api_docs.py"


def _builder():
    pytest.importorskip("pdoc", reason="the API reference needs pdoc: pip install -e '.[test]'")
    spec = importlib.util.spec_from_file_location("build_api_docs", BUILDER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_reference_builds_without_warnings(tmp_path):
    builder = _builder()
    problems = builder.build(tmp_path)
    assert problems == [], "pdoc warnings (fix the docstring or annotation it names):\n" + "\n".join(problems)
    names = builder.module_names()
    assert {"tl_video.interventions.knockout", "tl_video.analyses.flow", "tl_video.prompts.layout"} <= set(names)
    for name in names:  # every module has its page, linked from the index
        assert (tmp_path / f"{name.replace('.', '/')}.html").is_file(), name
    knockout = (tmp_path / "tl_video/interventions/knockout.html").read_text()
    assert "KnockoutSpec" in knockout and "knockout_hooks" in knockout
    assert "generate_benchmark" in (tmp_path / "tl_video/data.html").read_text()  # a lazily exported name is documented
    assert "tl_video.analyses.flow" in (tmp_path / "index.html").read_text()


def test_config_annotations_resolve():
    """Annotations the config inherits from TransformerLensConfig resolve (they name typing.Optional)."""
    from tl_video import VideoTransformerConfig

    hints = typing.get_type_hints(VideoTransformerConfig.__init__)
    assert hints["n_ctx"] is int
