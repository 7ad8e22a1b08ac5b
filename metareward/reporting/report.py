"""The run report: what every iteration did, as tables and the paper's plots, from the run store alone.

Pure: reads manifests and records through `metareward.runstore.store`, no Prefect, no model. Shown in three places:
``metareward report RUN`` (HTML with the PNGs embedded, and Markdown), ``<run>/report/`` after each iteration,
and the Prefect UI (one markdown artifact and table artifacts per iteration, see tasks/ui.py).

    metareward report smoke                 # -> runs/smoke/report/report.html, report.md, *.png

The tables and the numbers behind them: `metareward.reporting.tables`.
"""

from __future__ import annotations

import hashlib
import json

from metareward.reporting.tables import RunReport, iteration_tables, load_run, table_html, table_markdown
from metareward.runstore import store
from metareward.runstore.layout import RunLayout
from metareward.runstore.code import code_digest

__all__ = ["STAMP", "iteration_markdown", "iteration_tables", "load_run", "to_html", "to_markdown",
           "write_report"]


def iteration_markdown(rep: RunReport, t: int, links: dict[str, str] | None = None) -> str:
    """One iteration as Markdown: its tables and links (name -> URI) to the store; the Prefect artifact."""
    parts = [f"# {rep.run}: iteration {t}", ""]
    parts += [table_markdown(tab) for tab in iteration_tables(rep.iterations[t], rep)]
    if links:
        parts += ["### Run store", ""] + [f"- {name}: `{uri}`" for name, uri in links.items()] + [""]
    return "\n".join(parts)


def to_markdown(rep: RunReport, images: list[str]) -> str:
    parts = [f"# Meta-Rewarding run {rep.run}", "", f"Run store: `{rep.uri}`", ""]
    parts += [table_markdown(tab) for tab in rep.run_tables()]
    parts += [f"![{name}]({name})\n" for name in images]
    for t in sorted(rep.iterations):
        if t > 0:
            parts += [f"## Iteration {t}", ""] + [table_markdown(tab) for tab in iteration_tables(rep.iterations[t])]
    return "\n".join(parts)


_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin-bottom:1.5em;font-size:90%}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}"
        "img{max-width:48%;margin:0.5%;border:1px solid #eee}")


def to_html(rep: RunReport, images: dict[str, bytes]) -> str:
    """A self-contained page: the PNGs are embedded as base64 data URIs."""
    import base64
    from html import escape

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(rep.run)}</title>"
             f"<style>{_CSS}</style></head><body>", f"<h1>Meta-Rewarding run {escape(rep.run)}</h1>",
             f"<p>Run store: <code>{escape(rep.uri)}</code></p>"]
    parts += [table_html(tab) for tab in rep.run_tables()]
    parts += [f"<img alt='{escape(name)}' src='data:image/png;base64,{base64.b64encode(data).decode()}'>"
              for name, data in images.items()]
    for t in sorted(rep.iterations):
        if t > 0:
            parts += [f"<h2>Iteration {t}</h2>"] + [table_html(tab) for tab in iteration_tables(rep.iterations[t])]
    return "\n".join(parts) + "\n</body></html>\n"


# The modules that draw the report: their code is part of its stamp.
DRAWN_BY = ("metareward.reporting.report", "metareward.reporting.tables", "metareward.reporting.plots",
            "metareward.reporting.measures")
STAMP = "inputs.json"  # in the report folder: the digest of what the report was drawn from, and its files


def inputs_digest(rep: RunReport) -> str:
    """What the report is drawn from: the loaded run (plain data and manifests, read in file order, so its repr
    is the same in every process) and the code that draws it."""
    h = hashlib.sha256(repr(rep).encode())
    h.update(code_digest(DRAWN_BY).encode())  # the code by content (a moved module keeps its digest)
    return h.hexdigest()


def _current(folder: str, digest: str) -> dict[str, str] | None:
    """The report's files when the folder already holds the report of these inputs, else None."""
    stamp = store.join(folder, STAMP)
    if not store.exists(stamp):
        return None
    try:
        known = json.loads(store.read_text(stamp))
    except ValueError:  # not JSON, or not UTF-8 (store.StoreError): draw it again
        return None
    if not isinstance(known, dict) or known.get("digest") != digest:
        return None
    out = {name: store.join(folder, name) for name in known.get("files", [])}
    return out if out and all(store.exists(uri) for uri in out.values()) else None


def write_report(run_uri: str, rep: RunReport | None = None) -> dict[str, str]:
    """Write ``<run>/report/``: report.html (self-contained), report.md and one PNG per figure; name -> URI.
    ``rep``: the run as already loaded by `load_run` (read again when None).

    A report of the same inputs is not drawn again: a cached rerun of an iteration spent 4.2 of its ~26 s in
    matplotlib (2-core AVX2 host) redrawing identical figures."""
    rep = rep or load_run(run_uri)
    folder = RunLayout.at(run_uri).report
    digest = inputs_digest(rep)
    done = _current(folder, digest)
    if done is not None:
        return done
    from metareward.reporting import plots

    images = plots.figures(rep)
    out = {}
    for name, data in images.items():
        out[name] = store.join(folder, name)
        store.write_bytes(out[name], data)
    for name, text in (("report.md", to_markdown(rep, list(images))), ("report.html", to_html(rep, images))):
        out[name] = store.join(folder, name)
        store.write_bytes(out[name], text.encode())
    # last: a crash before this line leaves no stamp, and the next call draws the report again
    store.write_bytes(store.join(folder, STAMP), json.dumps({"digest": digest, "files": list(out)}).encode())
    return out
