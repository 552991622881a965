"""Show a tutorial's figure inline in a notebook and save it (HTML, and PNG where Chromium is available).

Run as a plain script (as the test suite does), a figure is only saved: `fig.show()` outside a
notebook would open a browser. Files go to `$TL_VIDEO_TUTORIAL_OUT` (default `tutorial_outputs/`).
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from pathlib import Path

import plotly.graph_objects as go

from tl_video.plots import save_figure, static_export_available


def output_dir() -> Path:
    """The folder every tutorial writes into (videos, records, figures)."""
    folder = Path(os.environ.get("TL_VIDEO_TUTORIAL_OUT", "tutorial_outputs"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def fresh_dir(name: str) -> Path:
    """`<out>/<name>`, emptied: a pipeline refuses to overwrite earlier records (it offers resume=True),
    and a tutorial re-run from the top should start over."""
    folder = output_dir() / name
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def show(fig: go.Figure, name: str) -> list[Path]:
    """Display `fig` inline when running in Jupyter; always save it as `<out>/figures/<name>.html` (+ `.png`)."""
    formats = ("html", "png") if static_export_available() is None else ("html",)
    if "png" in formats:
        _keep_browser_open()
    with warnings.catch_warnings():
        # plotly passes its request headers to kaleido, which a running browser does not need
        warnings.filterwarnings("ignore", message="The kopts argument is ignored", category=UserWarning)
        paths = save_figure(fig, output_dir() / "figures" / name, formats=formats)
    if "ipykernel" in sys.modules:
        fig.show()
    else:
        print("figure:", ", ".join(str(path) for path in paths))
    return paths


def _keep_browser_open() -> None:
    """Start kaleido's shared headless browser once, for every PNG of the session (kaleido closes it at exit).

    Without it each PNG export launches and closes its own Chromium: 3 to 7 s a figure on a small CPU.
    """
    import kaleido

    kaleido.start_sync_server(silence_warnings=True)
