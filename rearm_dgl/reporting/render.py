"""Rendering of :class:`~rearm_dgl.reporting.tables.Table` as Markdown and booktabs LaTeX.

``std`` chooses how a mean's standard deviation is shown: ``small`` (LaTeX: the std in
``\\scriptsize`` under the mean, so a column is no wider than its means; Markdown: as
``inline``), ``inline`` (``mean ± std``; wide: three datasets no longer fit the page) or
``none`` (means only, as REARM's and MMRec's tables print them). Bold and underline mark
the mean only. A table with more than one dataset is a ``table*`` spanning both columns of a
two-column paper. The generated LaTeX needs ``\\usepackage{booktabs}`` only.
"""

from __future__ import annotations

import re
from pathlib import Path

from rearm_dgl.io_utils import atomic_write_text
from rearm_dgl.reporting.stats import DECIMALS
from rearm_dgl.reporting.tables import DAGGER, PM, Table, TCell

STD_MODES = ("small", "inline", "none")


def _check_std(std: str) -> None:
    if std not in STD_MODES:
        raise ValueError(f"std must be one of {STD_MODES}, not {std!r}")


def _parts(c: TCell, std: str) -> tuple[str, str]:
    """(mean text, std text or "") of a cell; non-stat cells give (text, "")."""
    if c.stat is None:
        return c.text, ""
    mean = f"{c.stat.mean:.{DECIMALS}f}"
    if std == "none" or c.stat.n < 2:
        return mean, ""
    return mean, f"{c.stat.std:.{DECIMALS}f}"


def _md_cell(c: TCell, std: str) -> str:
    mean, sd = _parts(c, std)
    if c.bold:
        mean = f"**{mean}**"
    elif c.underline:
        mean = f"<u>{mean}</u>"
    if c.dagger:
        mean += DAGGER
    text = f"{mean} {PM} {sd}" if sd else mean
    return text.replace("|", "\\|")


def _md_caption(t: Table, std: str) -> list[str]:
    if std != "none":
        return t.caption
    return [line.replace(f"mean {PM} sample std (ddof=1)", "mean")
            .replace(f"mean {PM} sample std", "mean") for line in t.caption]


def to_markdown(t: Table, std: str = "inline") -> str:
    """GitHub Markdown: bold ``**x**``, underline ``<u>x</u>``, dagger after the mean."""
    _check_std(std)
    head = [t.corner] + [f"{g} {c}".strip() for g, cols in t.groups for c in cols]
    spec = t.colspec or ["r" if g else "l" for g, cols in t.groups for _ in cols]
    align = ["---"] + ["--:" if s == "r" else "---" for s in spec]
    lines = [f"### {t.title}", "", "| " + " | ".join(head) + " |",
             "|" + "|".join(align) + "|"]
    for label, cells in t.rows + t.footer:
        lines.append("| " + " | ".join([label.replace("|", "\\|")]
                                       + [_md_cell(c, std) for c in cells]) + " |")
    for line in _md_caption(t, std):
        lines += ["", f"*{line}*"]
    if t.notes:
        lines.append("")
        lines += [f"- {n}" for n in t.notes]
    return "\n".join(lines) + "\n"


_TEX_ESCAPE = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
               "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
               "^": r"\textasciicircum{}", PM: r"$\pm$", DAGGER: r"$^\dagger$",
               "Δ": r"$\Delta$", "<": r"$<$", ">": r"$>$", "×": r"$\times$",
               "\u2212": "$-$"}
# A hyphen that is a minus sign: before a digit, not inside a word or number (1e-05 stays).
_MINUS = re.compile(r"(?<![\w.])-(?=\.?\d)")


def tex_escape(text: str) -> str:
    """Escape LaTeX specials; a minus sign before a number becomes ``$-$``."""
    return "".join(_TEX_ESCAPE.get(ch, ch) for ch in _MINUS.sub("\u2212", text))


def _tex_cell(c: TCell, std: str) -> str:
    mean, sd = _parts(c, std)
    mean = tex_escape(mean)
    if c.bold:
        mean = rf"\textbf{{{mean}}}"
    elif c.underline:
        mean = rf"\underline{{{mean}}}"
    if c.dagger:
        mean += r"$^\dagger$"
    if not sd:
        return mean
    if std == "small":  # std under the mean: the column stays as narrow as the mean
        return (rf"\begin{{tabular}}[c]{{@{{}}r@{{}}}}{mean}\\[-2pt]"
                rf"{{\scriptsize$\pm${sd}}}\end{{tabular}}")
    return rf"{mean} $\pm$ {sd}"


def _tex_caption(t: Table, std: str) -> str:
    lines = _md_caption(t, std)
    if std == "small":
        lines = [re.sub(f"mean {PM} sample std( \\(ddof=1\\))?",
                        f"mean (under it, small: {PM} sample std, ddof=1)", line)
                 for line in lines]
    return tex_escape(" ".join(lines))


def to_latex(t: Table, std: str = "small") -> str:
    """A booktabs ``table`` (``table*`` when :attr:`Table.wide`)."""
    _check_std(std)
    n_cols = sum(len(cols) for _, cols in t.groups)
    if not all(len(cells) == n_cols for _, cells in t.rows + t.footer):
        raise ValueError(f"table {t.key}: rows do not have {n_cols} cells")
    colspec = t.colspec or ["r" if g else "l" for g, cols in t.groups for _ in cols]
    env = "table*" if t.wide else "table"
    # Many columns (three datasets x four metrics) fit the text width, and many rows (every
    # published number) the page height, in a smaller font.
    big = n_cols > 8 or len(t.rows) + len(t.footer) > 24
    size, sep = (r"\footnotesize", "3pt") if big else (r"\small", "4pt")
    out = [rf"\begin{{{env}}}[t]", r"\centering", size, rf"\setlength{{\tabcolsep}}{{{sep}}}",
           rf"\caption{{{_tex_caption(t, std)}}}",
           rf"\label{{tab:{t.key}}}", rf"\begin{{tabular}}{{l{''.join(colspec)}}}", r"\toprule"]
    if any(g for g, _ in t.groups):
        spans, rules, col = [""], [], 2
        for g, cols in t.groups:
            spans.append(rf"\multicolumn{{{len(cols)}}}{{c}}{{{tex_escape(g)}}}")
            rules.append(rf"\cmidrule(lr){{{col}-{col + len(cols) - 1}}}")
            col += len(cols)
        out.append(" & ".join(spans) + r" \\")
        out.append(" ".join(rules))
    out.append(" & ".join([tex_escape(t.corner)] + [tex_escape(c) for _, cols in t.groups
                                                    for c in cols]) + r" \\")
    out.append(r"\midrule")
    for i, (label, cells) in enumerate(t.rows):
        if i in t.rules and i > 0:
            out.append(r"\midrule")
        out.append(" & ".join([tex_escape(label)] + [_tex_cell(c, std) for c in cells])
                   + r" \\")
    if t.footer:
        out.append(r"\midrule")
        for label, cells in t.footer:
            out.append(" & ".join([tex_escape(label)] + [_tex_cell(c, std) for c in cells])
                       + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", rf"\end{{{env}}}"]
    return "\n".join(out) + "\n"


def write_tables(tables: list[Table], out_dir: Path, stem: str, heading: str,
                 std: str = "small") -> list[str]:
    """``<stem>.md`` and ``<stem>.tex`` holding ``tables``; returns the file names.

    Args:
        std: How standard deviations are shown (see the module docstring); Markdown shows
            ``small`` as ``inline``.
    """
    md = [f"# {heading}", ""] + [to_markdown(t, "inline" if std == "small" else std)
                                 for t in tables]
    tex = [f"% {heading}: generated by rearm-dgl report; needs \\usepackage{{booktabs}}", ""]
    tex += [to_latex(t, std) for t in tables]
    atomic_write_text(out_dir / f"{stem}.md", "\n".join(md))
    atomic_write_text(out_dir / f"{stem}.tex", "\n".join(tex))
    return [f"{stem}.md", f"{stem}.tex"]


__all__ = ["STD_MODES", "tex_escape", "to_latex", "to_markdown", "write_tables"]
