"""Paper-style reports from saved runs: tables (Markdown + LaTeX), figures, CSV and an index.

Reports read run directories only and never train. ``build_report`` is what
``rearm-dgl report`` calls; ``collect_runs`` gives the checked records behind it, and
``frame_from_records`` builds the same frame from records of another source.
"""

from rearm_dgl.reporting.frame import (
    RunFrame,
    RunRecord,
    frame_from_records,
    results_dataframe,
    runs_dataframe,
)
from rearm_dgl.reporting.report import ReportResult, build_report, report_command
from rearm_dgl.reporting.runs import collect_runs, read_run

__all__ = ["ReportResult", "RunFrame", "RunRecord", "build_report", "collect_runs",
           "frame_from_records", "read_run", "report_command", "results_dataframe",
           "runs_dataframe"]
