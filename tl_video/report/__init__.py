"""The study's report: one self-contained `report.html` per run folder, built from its records.

`write_report(run_dir)` reads `run.json` and every analysis's records (through each result's
`.read`), draws the figures (`tl_video.plots.<analysis>.figures`), states the findings as
sentences with their tests, and embeds plotly.js once, so the page works offline.
"""

from tl_video.report.build import build_report, write_report

__all__ = ["build_report", "write_report"]
