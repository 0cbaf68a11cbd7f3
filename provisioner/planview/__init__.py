"""`rigctl plan --format html`: the plan as one self-contained page.

``plan_page`` is pure (spec context + plan + findings -> HTML text). The page has
no script and loads nothing: CSS and SVG are inline, and a Content-Security-Policy
forbids scripts and every fetch, so it works offline, as a CI artifact, and a
spec string that slipped past escaping still could not run. Every piece of spec
or plan text goes through ``html.escape``.
"""

from __future__ import annotations

import shlex
from html import escape

from ..diagnostics import Diagnostic, Severity, path_str
from ..rules import power

# Segment colours: the browser test finds them in the screenshot, keep them distinct.
COLORS = {"weights": "#4e79a7", "kv": "#f28e2b", "overhead": "#b07aa1", "free": "#59a14f", "over": "#e15759"}
LABELS = {"weights": "weights", "kv": "KV cache", "overhead": "overhead", "free": "free", "over": "over capacity"}
BAR_W = 640  # px for the largest bar on the page

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:16px 0 6px}.muted{color:#666}
table{border-collapse:collapse;margin:6px 0}td,th{padding:3px 8px;text-align:left;vertical-align:top}
th{border-bottom:1px solid #ccc}tr.error td.sev{color:#b00020;font-weight:600}tr.warning td.sev{color:#a35f00}
pre{background:#f5f5f5;padding:8px;white-space:pre-wrap;word-break:break-all;margin:4px 0 10px}
.legend span{display:inline-block;margin-right:14px}.legend i{display:inline-block;width:12px;height:12px;
margin-right:4px;vertical-align:-1px}svg text{font:12px system-ui,sans-serif}
"""
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _e(value) -> str:
    return escape(str(value), quote=True)


def _legend(keys) -> str:
    return '<p class="legend">' + "".join(
        f'<span><i style="background:{COLORS[k]}"></i>{_e(LABELS[k])}</span>' for k in keys) + "</p>"


def _bar(label: str, parts: list[tuple[str, float]], capacity: float, scale: float, unit: str, *,
         css: str = "bar") -> str:
    """One horizontal stacked bar: ``parts`` (key, amount) left to right, a line at ``capacity``."""
    total = sum(max(v, 0.0) for _, v in parts)
    width = max(total, capacity) * scale
    h, y = 22, 18
    out = [f'<svg class="{css}" role="img" width="{width + 170:.0f}" height="{y + h + 4}" '
           f'viewBox="0 0 {width + 170:.0f} {y + h + 4}">',
           f"<title>{_e(label)}</title>", f'<text x="0" y="13">{_e(label)}</text>']
    x = 0.0
    for key, amount in parts:
        if amount <= 0:
            continue
        w = amount * scale
        out.append(f'<rect class="seg seg-{key}" data-amount="{amount:.3f}" x="{x:.1f}" y="{y}" width="{w:.1f}" '
                   f'height="{h}" fill="{COLORS[key]}"><title>{_e(LABELS[key])}: {amount:.2f} {_e(unit)}</title></rect>')
        x += w
    cx = capacity * scale
    out.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y - 3}" y2="{y + h + 3}" stroke="#222" stroke-width="2"/>')
    out.append(f'<text x="{width + 8:.0f}" y="{y + 15}">{total:.1f} of {capacity:.1f} {_e(unit)}</text>')
    out.append("</svg>")
    return "".join(out)


def _memory(plan) -> str:
    devices = [d for dp in plan.deployments if dp.fit for d in dp.fit.devices]
    if not devices:
        return "<h2>GPU memory</h2><p>No deployment places weights on a GPU.</p>"
    biggest = max(max(d.capacity_gib, d.weights_gib + d.kv_gib + d.overhead_gib) for d in devices) or 1.0
    scale = BAR_W / biggest
    out = ["<h2>GPU memory</h2>", _legend(("weights", "kv", "overhead", "free", "over"))]
    for dp in plan.deployments:
        f = dp.fit
        if f is None:
            continue
        out.append(f"<h3>{_e(dp.name)}: {_e(dp.model)} {_e(dp.format)} on {_e(dp.stack)}</h3>")
        out.append(f'<p class="muted">context {f.context_tokens:,} tokens × {f.parallel} sequence(s), KV {_e(f.kv_type)}; '
                   f"largest context that fits: {f'{f.max_context_tokens:,}' if f.max_context_tokens else 'none'}</p>")
        for d in f.devices:
            parts = [("weights", d.weights_gib), ("kv", d.kv_gib), ("overhead", d.overhead_gib)]
            parts.append(("free", d.free_gib) if d.free_gib >= 0 else ("over", -d.free_gib))
            if d.free_gib < 0:  # the overflow is drawn past the capacity line, not inside it
                parts = _clip(parts, d.capacity_gib)
            out.append(_bar(f"{d.label} ({d.name}), {d.layers} layers", parts, d.capacity_gib, scale, "GiB"))
    return "\n".join(out)


def _clip(parts, capacity):
    """Used parts cut at ``capacity``; what lies beyond becomes one over-capacity segment."""
    out, used = [], 0.0
    for key, v in parts:
        if key == "over":
            continue
        keep = max(0.0, min(v, capacity - used))
        out.append((key, keep))
        used += v
    out.append(("over", max(0.0, used - capacity)))
    return out


def _power(ctx) -> str:
    out = ["<h2>Power</h2>"]
    rows = []
    for ni, node in enumerate(ctx.rig.nodes):
        if not node.gpus:
            continue
        load = power.node_load(ctx, ni)
        if load is None:
            rows.append(f"<p>{_e(node.name)}: a GPU's power draw is unknown (see the findings).</p>")
            continue
        rows.append(f"<h3>{_e(node.name)}</h3><p class=\"muted\">{_e(load.describe())} sustained DC</p>")
        if node.psu is None:
            rows.append("<p>No PSU in the spec: psu-headroom is not checked.</p>")
        else:
            cap = node.psu.watts * node.psu.count
            factor = power.HEADROOM_CAPPED if power.all_capped(load) else power.HEADROOM
            need = factor * load.total_w
            rows.append(_bar(f"PSU {power.psu_text(node)}: load {load.total_w} W + {round((factor - 1) * 100)} % "
                             f"headroom = {need:.0f} W", [("weights", load.total_w), ("overhead", need - load.total_w)],
                             cap, BAR_W / max(cap, need), "W", css="bar power"))
        if node.circuit is None:
            rows.append("<p>No wall circuit in the spec: wall-circuit is not checked.</p>")
        else:
            c = node.circuit
            rating = node.psu.rating if node.psu else "gold"  # the wall-circuit rule's assumption
            wall = load.total_w / power.EFFICIENCY[rating]
            limit = c.volts * c.amps * c.continuous_fraction
            parts = [("weights", min(wall, limit)), ("over", max(0.0, wall - limit))]
            rows.append(_bar(f"circuit {c.volts} V × {c.amps} A × {c.continuous_fraction:g} = {limit:.0f} W continuous; "
                             f"wall draw {wall:.0f} W (80 PLUS {rating})", parts, limit,
                             BAR_W / max(limit, wall), "W", css="bar power"))
    if not rows:
        rows.append("<p>No node has GPUs.</p>")
    else:
        out.append('<p class="legend"><span><i style="background:%s"></i>sustained load</span>'
                   '<span><i style="background:%s"></i>headroom the PSU must also cover</span>'
                   '<span><i style="background:%s"></i>over the limit</span>; the black line is the limit</p>'
                   % (COLORS["weights"], COLORS["overhead"], COLORS["over"]))
    return "\n".join(out + rows)


def _topology(ctx) -> str:
    """Nodes side by side, their GPUs inside, NVLink bridges as green arcs, the fabric below."""
    nodes = ctx.rig.nodes
    gw, gh, pad, nw = 150, 34, 14, 190
    tallest = max((len(n.gpus) for n in nodes), default=0)
    nh = 54 + max(tallest, 1) * (gh + 8)
    fabric = ctx.rig.fabric
    width = max(len(nodes) * (nw + 30) + 20, 320)
    height = nh + (90 if fabric or len(nodes) > 1 or any(n.nics for n in nodes) else 30)
    s = [f'<svg class="topology" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
         'role="img"><title>nodes, GPUs, NVLink and network</title>']
    bus_y = nh + 60
    for i, node in enumerate(nodes):
        x = 10 + i * (nw + 30)
        s.append(f'<rect class="node" x="{x}" y="10" width="{nw}" height="{nh}" rx="8" fill="#f3f6fa" stroke="#567"/>')
        s.append(f'<text x="{x + 10}" y="30" font-weight="600">{_e(node.name)}</text>')
        s.append(f'<text x="{x + 10}" y="46" fill="#666">{_e(node.os)}</text>')
        centers = {}
        for gi, gpu in enumerate(node.gpus):
            gy = 56 + gi * (gh + 8)
            pg = ctx.gpu_by_id(i, gpu.id)
            name = power.short_name(pg) if pg else gpu.model
            s.append(f'<rect class="gpu" x="{x + pad}" y="{gy}" width="{gw}" height="{gh}" rx="4" fill="#fff" '
                     f'stroke="#4e79a7"/><text x="{x + pad + 6}" y="{gy + 14}">{_e(gpu.id)}</text>'
                     f'<text x="{x + pad + 6}" y="{gy + 28}" fill="#666">{_e(name)[:30]}</text>')
            centers[gpu.id] = gy + gh / 2
        for bridge in node.nvlink:
            ys = sorted(centers[g] for g in bridge.gpus if g in centers)
            if len(ys) >= 2:
                bx = x + pad + gw + 10
                s.append(f'<path class="nvlink" d="M{x + pad + gw} {ys[0]} H{bx} V{ys[-1]} H{x + pad + gw}" '
                         f'fill="none" stroke="#59a14f" stroke-width="4"><title>NVLink {_e(", ".join(bridge.gpus))}'
                         "</title></path>")
        if fabric or len(nodes) > 1 or node.nics:
            cx = x + nw / 2
            speeds = ", ".join(f"{n.name} {n.speed_gbps:g} Gb/s" for n in node.nics)
            s.append(f'<line class="link" x1="{cx}" y1="{nh + 10}" x2="{cx}" y2="{bus_y}" stroke="#f28e2b" '
                     f'stroke-width="3"/><text x="{cx + 6}" y="{nh + 34}">{_e(speeds or "")[:40]}</text>')
    if fabric or len(nodes) > 1 or any(n.nics for n in nodes):
        label = (f"fabric: {fabric.kind} {fabric.speed_gbps:g} Gb/s, {fabric.subnet}" if fabric
                 else "network (no fabric in the spec)")
        s.append(f'<line x1="10" x2="{width - 10}" y1="{bus_y}" y2="{bus_y}" stroke="#f28e2b" stroke-width="3"/>'
                 f'<text x="12" y="{bus_y + 18}">{_e(label)}</text>')
    s.append("</svg>")
    return "<h2>Topology</h2>" + "".join(s)


def _services(plan) -> str:
    out = ["<h2>Engine command lines</h2>"]
    for dp in plan.deployments:
        for svc in dp.services:
            where = f"{svc.bind}:{svc.port}" if svc.port else "no port"
            out.append(f"<h3>{_e(svc.node)} · {_e(svc.name)}</h3><p class=\"muted\">{_e(svc.role)}, {_e(where)}, "
                       f"{_e(svc.port_scope)}, {_e(svc.deploy_mode)}</p>")
            if svc.engine:  # the llama.cpp build, image or release it runs (plan/engines.py)
                out.append(f"<p>engine: {_e(svc.engine['label'])}</p>")
            lines = [shlex.join(svc.argv)] + [f"{k}={v}" for k, v in svc.env.items()]
            lines += [f"{k}=<secret reference>" for k in svc.secret_env]
            out.append(f"<pre>{_e(chr(10).join(lines))}</pre>")
        if dp.speed:
            sp = dp.speed
            prompt = f", prompt {sp.prompt_tps_low:,}-{sp.prompt_tps_high:,} tok/s" if sp.prompt_tps_low else ""
            out.append(f"<p>{_e(dp.name)}: decode {sp.decode_tps_low:g}-{sp.decode_tps_high:g} tok/s{_e(prompt)}; "
                       f"bottleneck: {_e(sp.bottleneck)}</p>")
    return "\n".join(out)


def _findings(diags: list[Diagnostic]) -> str:
    shown = sorted((d for d in diags if d.severity is not Severity.info), key=Diagnostic.sort_key)
    if not shown:
        return "<h2>Findings</h2><p>No errors or warnings.</p>"
    rows = []
    for d in shown:
        loc = str(d.location) if d.location else path_str(d.path) or "<rig>"
        rows.append(f'<tr class="finding {d.severity.value}"><td class="sev">{d.severity.value}</td>'
                    f"<td>{_e(d.rule)}</td><td>{_e(loc)}</td><td>{_e(d.message)}</td></tr>")
    return ("<h2>Findings</h2><table><tr><th>severity</th><th>rule</th><th>location</th><th>message</th></tr>"
            + "".join(rows) + "</table>")


def plan_page(ctx, plan, diags: list[Diagnostic], *, version: str = "") -> str:
    """The HTML page for ``plan`` of the rig in ``ctx``, with ``diags`` listed at their locations.

    With ``plan`` None (the spec has errors) the page shows the rig and the findings only."""
    rig = ctx.rig
    planned = [_memory(plan)] if plan else ["<h2>GPU memory</h2><p>Not planned: fix the errors below.</p>"]
    desc = f"<p>{_e(rig.description)}</p>" if rig.description else ""
    body = "\n".join([
        f"<h1>rig {_e(rig.name)}</h1>{desc}",
        f'<p class="muted">{_e(ctx.file or "")} · {len(rig.nodes)} node(s), {len(ctx.all_gpus())} GPU(s), '
        f"{len(rig.serve)} deployment(s) · rigctl {_e(version)}</p>",
        *planned, _power(ctx), _topology(ctx), _services(plan) if plan else "", _findings(diags),
    ])
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>rigctl plan: {_e(rig.name)}</title><style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n")
