"""Drawing a compiled pipeline: Mermaid, DOT, SVG, PNG and a self-contained HTML page.

Everything is drawn offline. Mermaid and DOT are text. SVG and PNG come from
Graphviz's ``dot`` when it is installed. The HTML page embeds an SVG: Graphviz's
when available, otherwise one laid out here, so it never needs a network.
Labels show stage ids, kinds, adapters with their provider and model, and a
compact policy summary; they never show DSNs, URLs or any secret.
"""

from __future__ import annotations

import html
import shutil
import subprocess

from funcpipe.compile import CompiledPipeline, NodeLabel, node_label, policy_summary
from funcpipe.errors import RunError

FORMATS = ("mermaid", "dot", "svg", "png", "html")


class GraphvizMissing(RunError):
    """Graphviz's ``dot`` is needed for this format but is not installed."""


def _edges(pipeline: CompiledPipeline) -> list[tuple[int, int]]:
    index = {s.id: i for i, s in enumerate(pipeline.stages)}
    return [(index[src], index[s.id]) for s in pipeline.stages for src in s.inputs]


def _mermaid_text(text: str) -> str:
    return html.escape(text, quote=True).replace("#", "&#35;")


def to_mermaid(pipeline: CompiledPipeline) -> str:
    """A Mermaid ``flowchart LR``."""
    out = ["flowchart LR"]
    for i, st in enumerate(pipeline.stages):
        label = "<br/>".join(_mermaid_text(x) for x in node_label(pipeline, st).lines())
        shape = ('[("', '")]') if st.kind.role == "sink" else (('(["', '"])') if not st.inputs else ('["', '"]'))
        out.append(f"  n{i}{shape[0]}{label}{shape[1]}")
    for a, b in _edges(pipeline):
        out.append(f"  n{a} --> n{b}")
    return "\n".join(out) + "\n"


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def to_dot(pipeline: CompiledPipeline) -> str:
    """A Graphviz ``digraph``, left to right."""
    out = [
        f'digraph "{_dot_text(pipeline.name)}" {{',
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fillcolor="#eef3fb", fontname="Helvetica", fontsize=11];',
        '  edge [color="#555555"];',
    ]
    for i, st in enumerate(pipeline.stages):
        lines = node_label(pipeline, st).lines()
        label = "\\n".join(_dot_text(x) for x in lines)
        shape = "cylinder" if st.kind.role == "sink" else ("cds" if not st.inputs else "box")
        out.append(f'  n{i} [label="{label}", shape={shape}];')
    for a, b in _edges(pipeline):
        out.append(f"  n{a} -> n{b};")
    out.append("}")
    return "\n".join(out) + "\n"


def graphviz(dot: str, fmt: str) -> bytes:
    """Render DOT text with Graphviz's ``dot`` to ``svg`` or ``png``.

    Raises:
        GraphvizMissing: when ``dot`` is not installed, naming the package.
    """
    exe = shutil.which("dot")
    if exe is None:
        raise GraphvizMissing(
            f"--format {fmt} needs Graphviz's `dot`, which is not installed: install the 'graphviz' package "
            "(apt-get install graphviz, brew install graphviz), or use --format mermaid, dot or html"
        )
    proc = subprocess.run([exe, f"-T{fmt}"], input=dot.encode(), capture_output=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise RunError(f"Graphviz failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def builtin_svg(pipeline: CompiledPipeline) -> str:
    """A layered left-to-right SVG drawn without Graphviz."""
    layer: dict[str, int] = {}
    for st in pipeline.stages:  # topological order
        layer[st.id] = 1 + max((layer[i] for i in st.inputs), default=-1)
    columns: dict[int, list[int]] = {}
    for i, st in enumerate(pipeline.stages):
        columns.setdefault(layer[st.id], []).append(i)
    labels = [node_label(pipeline, st).lines() for st in pipeline.stages]
    line_h, pad, gap_x, gap_y = 16, 10, 60, 24
    widths = [max(len(x) for x in lab) * 7 + 2 * pad for lab in labels]
    heights = [len(lab) * line_h + 2 * pad for lab in labels]
    col_w = {c: max(widths[i] for i in ids) for c, ids in columns.items()}
    pos: dict[int, tuple[float, float]] = {}
    x = 20.0
    total_h = 0.0
    for c in sorted(columns):
        y = 20.0
        for i in columns[c]:
            pos[i] = (x, y)
            y += heights[i] + gap_y
        total_h = max(total_h, y)
        x += col_w[c] + gap_x
    width, height = x, total_h + 20
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="Helvetica, Arial, sans-serif" font-size="12">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>',
    ]
    for a, b in _edges(pipeline):
        (ax, ay), (bx, by) = pos[a], pos[b]
        x1, y1 = ax + widths[a], ay + heights[a] / 2
        x2, y2 = bx, by + heights[b] / 2
        mid = (x1 + x2) / 2
        parts.append(
            f'<path d="M {x1:.0f} {y1:.0f} C {mid:.0f} {y1:.0f}, {mid:.0f} {y2:.0f}, {x2:.0f} {y2:.0f}" '
            'fill="none" stroke="#555" marker-end="url(#arrow)"/>'
        )
    for i, lab in enumerate(labels):
        nx, ny = pos[i]
        parts.append(
            f'<rect x="{nx:.0f}" y="{ny:.0f}" width="{widths[i]}" height="{heights[i]}" rx="8" '
            'fill="#eef3fb" stroke="#4a6fa5"/>'
        )
        for k, text in enumerate(lab):
            weight = ' font-weight="bold"' if k == 0 else ""
            parts.append(
                f'<text x="{nx + pad:.0f}" y="{ny + pad + (k + 1) * line_h - 4:.0f}"{weight}>{html.escape(text)}</text>'
            )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def to_html(pipeline: CompiledPipeline) -> str:
    """One self-contained page (inline SVG, no external URL) that renders offline."""
    try:
        svg = graphviz(to_dot(pipeline), "svg").decode("utf-8")
        svg = svg[svg.index("<svg") :]
    except GraphvizMissing:
        svg = builtin_svg(pipeline)
    title = html.escape(f"funcpipe: {pipeline.name}")
    desc = html.escape(pipeline.description or "")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{title}</title>\n"
        "<style>body{font-family:Helvetica,Arial,sans-serif;margin:2em;color:#222}"
        "svg{max-width:100%;height:auto}</style>\n</head>\n<body>\n"
        f"<h1>{title}</h1>\n<p>{desc}</p>\n{svg}</body>\n</html>\n"
    )


def render(pipeline: CompiledPipeline, fmt: str) -> bytes:
    """Render in one of `FORMATS`."""
    if fmt == "mermaid":
        return to_mermaid(pipeline).encode()
    if fmt == "dot":
        return to_dot(pipeline).encode()
    if fmt in ("svg", "png"):
        return graphviz(to_dot(pipeline), fmt)
    if fmt == "html":
        return to_html(pipeline).encode()
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


__all__ = [
    "FORMATS",
    "GraphvizMissing",
    "NodeLabel",
    "builtin_svg",
    "node_label",
    "policy_summary",
    "render",
    "to_dot",
    "to_html",
    "to_mermaid",
]
