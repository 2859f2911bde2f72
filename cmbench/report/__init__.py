"""The HTML report: comparison tables, metric-vs-NFE plots and sample grids of a run directory.

``render_report(run_dir)`` writes ``run_dir/report.html``, one self-contained file;
``image_grid_png(images)`` tiles uint8 samples into the PNG grids the report shows.
"""

from cmbench.report.grids import image_grid_png
from cmbench.report.render import render_report

__all__ = ["image_grid_png", "render_report"]
