"""Helpers for the reader tests: write small JSON/JSONL files and placeholder videos into tmp_path.

The readers only check that video files exist; the end-to-end test in test_data_jsonl.py reads a
real mp4.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


class DatasetFiles:
    def __init__(self, root: Path) -> None:
        self.root = root

    def videos(self, *relpaths: str, folder: str = "videos") -> Path:
        """Create placeholder video files under ``root/folder``; return that folder."""
        base = self.root / folder
        for rel in relpaths:
            path = base / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\x00")
        base.mkdir(parents=True, exist_ok=True)
        return base

    def json(self, name: str, data: Any) -> Path:
        path = self.root / name
        path.write_text(json.dumps(data, indent=1))
        return path

    def text(self, name: str, text: str) -> Path:
        path = self.root / name
        path.write_text(text)
        return path


@pytest.fixture
def files(tmp_path: Path) -> DatasetFiles:
    return DatasetFiles(tmp_path)
