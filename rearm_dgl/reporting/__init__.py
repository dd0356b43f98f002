"""Paper-style reports from saved runs: tables (Markdown + LaTeX), figures and an index.

Reports read run directories only and never train. ``build_report`` is what
``rearm-dgl report`` calls; ``collect_runs`` gives the checked records behind it.
"""

from rearm_dgl.reporting.frame import RunFrame, RunRecord, collect_runs
from rearm_dgl.reporting.report import ReportResult, build_report, report_command

__all__ = ["ReportResult", "RunFrame", "RunRecord", "build_report", "collect_runs",
           "report_command"]
