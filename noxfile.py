"""Developer sessions: `nox -s tests`, `nox -s lint`, `nox -s demo`.

Each session reuses its virtual environment. torch is pinned to the 2.13.0 CPU build that
these machines hold on local disk; any other torch would pull a multi-GB CUDA build.
"""

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests"]

TORCH = "torch==2.13.0"


def _install(session: nox.Session, extras: str = "") -> None:
    session.install(TORCH)
    session.install("-e", f".{extras}")


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """Run the test suite (pass pytest arguments after --)."""
    _install(session, "[test,postgres]")
    session.run("pytest", *(session.posargs or ["-q"]))


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff over the package, tests, benchmarks and this file."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", "rearm_dgl", "tests", "benchmarks", "noxfile.py")


@nox.session(python="3.11")
def demo(session: nox.Session) -> None:
    """Train REARM on the built-in demo dataset and print valid/test metrics."""
    _install(session)
    session.run("rearm-dgl", "train", *session.posargs)
