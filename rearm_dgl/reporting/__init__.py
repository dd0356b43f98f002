"""Paper-style reports from saved runs: tables (Markdown + LaTeX), figures, CSV and an index.

Reports read run directories only and never train. ``build_report`` is what
``rearm-dgl report`` calls; ``collect_runs`` gives the checked records behind it, and
``frame_from_records`` builds the same frame from records of another source.
"""

from rearm_dgl.reporting.frame import (
                                       RunFrame,
                                       RunRecord,
                                       collect_runs,
                                       frame_from_records,
                                       results_dataframe,
                                       runs_dataframe,
)
from rearm_dgl.reporting.report import ReportResult, build_report, report_command

__all__ = ["ReportResult", "RunFrame", "RunRecord", "build_report", "collect_runs",
           "frame_from_records", "report_command", "results_dataframe", "runs_dataframe"]
