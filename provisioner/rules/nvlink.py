"""NVLink rules: which cards have it, what a bridge may join, spacing, and what it does not do.

Sources: NVIDIA's GA102 whitepaper (https://www.nvidia.com/content/PDF/nvidia-ampere-ga-102-gpu-architecture-whitepaper-v2.pdf),
Ada without NVLink (https://videocardz.com/newz/gigabyte-rtx-4090-graphics-cards-have-hidden-and-unused-tracing-for-nvlink),
bridge spacings (https://www.pugetsystems.com/labs/articles/NVIDIA-NVLink-2021-Update-and-Compatibility-Chart-2074/,
https://www.zotac.com/eu/faq/sli-nvlink-spacing-recommendations), more in docs/nvlink-*.md; per-card facts come from the catalog's `nvlink` block.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator

from ..diagnostics import Diagnostic, Severity
from ..spec.models import NvlinkBridge, Stack
from .context import Context, PlacedGpu
from .engine import rule
from .pcie import gpu_slot
from .power import short_name


def _by_id(ctx: Context, ni: int) -> dict[str, PlacedGpu]:
    return {pg.gpu.id: pg for pg in ctx.gpus(ni)}


def _bridged(ctx: Context, ni: int, bridge: NvlinkBridge) -> list[PlacedGpu] | None:
    """The bridge's GPUs when every id resolves to a catalogued GPU with NVLink, else None."""
    by_id = _by_id(ctx, ni)
    out = []
    for gid in dict.fromkeys(bridge.gpus):
        pg = by_id.get(gid)
        if pg is None or pg.entry is None or not pg.entry.nvlink.present:
            return None
        out.append(pg)
    return out


def _or(values: list[int]) -> str:
    words = [str(v) for v in values]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _bridge_path(ni: int, bi: int, *rest) -> tuple:
    return ("nodes", ni, "nvlink", bi, *rest)


# ------------------------------------------------------------------ nvlink-unsupported-gpu


@rule("nvlink-unsupported-gpu", "error", "NVLink bridges only join GPUs that have an NVLink connector",
      tags=("nvlink",))
def nvlink_unsupported_gpu(ctx: Context) -> Iterator[Diagnostic]:
    for ni, node in enumerate(ctx.rig.nodes):
        by_id = _by_id(ctx, ni)
        for bi, bridge in enumerate(node.nvlink):
            for k, gid in enumerate(bridge.gpus):
                pg = by_id.get(gid)
                if pg is None or pg.entry is None or pg.entry.nvlink.present:
                    continue
                e = pg.entry
                arch = e.architecture.replace("-", " ")
                arch = arch.title() if arch.replace(" ", "").isalpha() else arch.upper()  # ada -> Ada, cdna3 -> CDNA3
                why = ""
                if e.vendor == "nvidia" and e.architecture in ("ada", "blackwell"):
                    why = "; NVIDIA removed it from Ada/Blackwell (GeForce, RTX 6000 Ada and L40S alike)"
                elif e.vendor != "nvidia":
                    why = "; NVLink is NVIDIA-only"
                yield nvlink_unsupported_gpu.finding(
                    f"{short_name(pg)} ({arch}) has no NVLink connector{why} — remove the bridge; layer split over "
                    "PCIe works (only activations cross between GPUs)",
                    _bridge_path(ni, bi, "gpus", k))


# ------------------------------------------------------------------ nvlink-pair


@rule("nvlink-pair", "error", "a bridge joins known GPUs of one model, no more than the link allows",
      tags=("nvlink",))
def nvlink_pair(ctx: Context) -> Iterator[Diagnostic]:
    for ni, node in enumerate(ctx.rig.nodes):
        by_id = _by_id(ctx, ni)
        partners: dict[str, tuple[frozenset, int]] = {}
        for bi, bridge in enumerate(node.nvlink):
            bad = False
            seen: set[str] = set()
            for k, gid in enumerate(bridge.gpus):
                if gid not in by_id:
                    close = difflib.get_close_matches(gid, list(by_id), n=1, cutoff=0.5)
                    hint = f"did you mean {close[0]}?" if close else f"this node has {', '.join(by_id) or 'no GPUs'}"
                    yield nvlink_pair.finding(f"the bridge names '{gid}', which is not a GPU of {node.name} — {hint}",
                                              _bridge_path(ni, bi, "gpus", k), tag="unknown-gpu")
                    bad = True
                elif gid in seen:
                    yield nvlink_pair.finding(f"'{gid}' is listed twice in this bridge — a bridge joins different GPUs",
                                              _bridge_path(ni, bi, "gpus", k), tag="duplicate")
                    bad = True
                seen.add(gid)
            pgs = None if bad else _bridged(ctx, ni, bridge)
            if pgs is None:
                continue  # unknown ids or GPUs without NVLink: reported by other rules
            where = _bridge_path(ni, bi, "gpus")
            if all(pg.entry.form_factor == "sxm" for pg in pgs):
                yield nvlink_pair.finding(
                    f"{short_name(pgs[0])} GPUs are joined by the baseboard's NVSwitch/NVLink "
                    f"({pgs[0].entry.nvlink.bandwidth_gbs:g} GB/s); there is no bridge to fit — remove the bridge entry",
                    where, tag="sxm", severity=Severity.info)
                continue
            models = {pg.entry.id for pg in pgs}
            if len(models) > 1:
                desc = ", ".join(f"{pg.gpu.id} is {short_name(pg)}" for pg in pgs)
                yield nvlink_pair.finding(
                    f"{desc}: a bridge joins cards of the same model (the connectors must line up and speak the "
                    "same link) — bridge identical cards or remove the bridge",
                    where, tag="mismatch")
                continue
            max_way = pgs[0].entry.nvlink.max_way
            if max_way and len(pgs) > max_way:
                yield nvlink_pair.finding(
                    f"{short_name(pgs[0])} NVLink is {max_way}-way at most; this bridge joins {len(pgs)} GPUs — "
                    f"split it into bridges of {max_way}",
                    where, tag="too-many")
                continue
            if pgs[0].entry.form_factor != "pcie":
                continue
            group = frozenset(pg.gpu.id for pg in pgs)
            for k, pg in enumerate(pgs):
                prev = partners.get(pg.gpu.id)
                # the same pair may carry several bridges (A100/H100 PCIe use three); a card in two
                # different pairs cannot: it has one NVLink edge connector
                if prev is not None and prev[0] != group:
                    yield nvlink_pair.finding(
                        f"{pg.gpu.id} is already bridged to {', '.join(sorted(prev[0] - {pg.gpu.id}))} (bridge "
                        f"{prev[1] + 1}); each {short_name(pg)} has one NVLink connector — keep one pairing per card",
                        _bridge_path(ni, bi, "gpus", bridge.gpus.index(pg.gpu.id)), tag="reused")
                else:
                    partners.setdefault(pg.gpu.id, (group, bi))


# ------------------------------------------------------------------ nvlink-bridge-spacing


@rule("nvlink-bridge-spacing", "error", "the bridge spans exactly the distance between the two cards' slots",
      tags=("nvlink", "pcie"))
def nvlink_bridge_spacing(ctx: Context) -> Iterator[Diagnostic]:
    for ni, node in enumerate(ctx.rig.nodes):
        for bi, bridge in enumerate(node.nvlink):
            pgs = _bridged(ctx, ni, bridge)
            if pgs is None or len(pgs) != 2 or len({pg.entry.id for pg in pgs}) != 1:
                continue
            e = pgs[0].entry
            if e.form_factor != "pcie":
                continue
            name = short_name(pgs[0])
            sizes = e.nvlink.bridge_spacings_slots
            sizes_txt = "/".join(str(s) for s in sizes) + "-slot" if sizes else "fixed sizes"
            slots = [gpu_slot(pg) for pg in pgs]
            dist = abs(slots[0].position - slots[1].position) if all(slots) else None
            apart = (f"{pgs[0].gpu.id} ({slots[0].name}, position {slots[0].position}) and {pgs[1].gpu.id} "
                     f"({slots[1].name}, position {slots[1].position}) are {dist} positions apart"
                     if dist is not None else "")
            given = bridge.bridge_slots
            if given is None:
                if dist is not None and sizes and dist not in sizes:
                    yield nvlink_bridge_spacing.finding(
                        f"{apart}; {name} bridges come in {sizes_txt} spacing, so none fits — move a card so the two "
                        f"are {_or(sizes)} positions apart",
                        _bridge_path(ni, bi, "gpus"), tag="distance")
                else:
                    need = f"; it needs a {dist}-slot bridge" if dist is not None else ""
                    yield nvlink_bridge_spacing.finding(
                        (f"{apart}{need}" if apart else f"the bridge between {' and '.join(bridge.gpus)} has no size")
                        + f" ({name} bridges: {sizes_txt}) — add bridge_slots"
                        + (f": {dist}" if dist is not None else " and the GPUs' slots so spacing can be checked"),
                        _bridge_path(ni, bi, "gpus"), tag="missing", severity=Severity.warning)
                continue
            at = _bridge_path(ni, bi, "bridge_slots")
            if sizes and given not in sizes:
                yield nvlink_bridge_spacing.finding(
                    f"there is no {given}-slot {name} bridge; they come in {sizes_txt} spacing — use one of those "
                    "and slots that far apart",
                    at, tag="size")
            if dist is not None and given != dist:
                yield nvlink_bridge_spacing.finding(
                    f"a {given}-slot bridge does not reach: {apart} — "
                    + (f"use a {dist}-slot bridge" if not sizes or dist in sizes else
                       f"move a card so the two are {given} positions apart"),
                    at, tag="distance")


# ------------------------------------------------------------------ nvlink-memory-pooling


def _split_none(args: list[str]) -> int | None:
    """Index of the extra_args item that sets llama.cpp split mode none, if any."""
    for i, a in enumerate(args):
        if a in ("-sm=none", "--split-mode=none"):
            return i
        if a in ("-sm", "--split-mode") and i + 1 < len(args) and args[i + 1] == "none":
            return i + 1
    return None


@rule("nvlink-memory-pooling", "warning", "a deployment does not count on NVLink to merge GPU memory",
      tags=("nvlink", "memory"))
def nvlink_memory_pooling(ctx: Context) -> Iterator[Diagnostic]:
    try:
        from ..sizing import weights_gib
    except ImportError:  # pragma: no cover - sizing ships with the rules
        return
    for di, dep in enumerate(ctx.rig.serve):
        placed = ctx.placed_gpus(dep)
        if not placed or any(pg.entry is None for pg in placed):
            continue
        weights = weights_gib(ctx, dep)
        if weights is None:
            continue
        placed_keys = {(pg.node_index, pg.gpu.id) for pg in placed}
        capacity = sum(pg.entry.usable_gib for pg in placed)
        none_at = _split_none(dep.extra_args) if dep.stack in (Stack.llamacpp, Stack.llamacpp_rpc) else None
        for pi, p in enumerate(dep.placement):
            ni = ctx.node_index(p.node)
            if ni is None:
                continue
            for bridge in ctx.rig.nodes[ni].nvlink:
                pair = _bridged(ctx, ni, bridge)
                if pair is None or len(pair) < 2:
                    continue
                inside = [pg for pg in pair if (ni, pg.gpu.id) in placed_keys]
                outside = [pg for pg in pair if (ni, pg.gpu.id) not in placed_keys]
                card = f"{pair[0].entry.memory_gib:g} GiB"
                merged = f"{sum(pg.entry.memory_gib for pg in pair):g} GiB"
                ids = "+".join(pg.gpu.id for pg in pair)
                if p.gpus is not None and inside and outside:
                    extra = sum(pg.entry.usable_gib for pg in outside)
                    if capacity < weights <= capacity + extra:
                        yield nvlink_memory_pooling.finding(
                            f"'{dep.name}' needs ≈ {weights:.1f} GiB of weights but its placement holds "
                            f"{capacity:.1f} GiB and lists only {', '.join(pg.gpu.id for pg in inside)} of the NVLinked "
                            f"pair {ids}: NVLink does not merge the cards into one {merged} device — list "
                            f"{', '.join(pg.gpu.id for pg in outside)} in placement too so the stack splits the model",
                            ("serve", di, "placement", pi, "gpus"))
                elif none_at is not None and len(inside) == len(pair):
                    main = inside[0].entry.usable_gib
                    if main < weights <= capacity:
                        yield nvlink_memory_pooling.finding(
                            f"'{dep.name}' runs llama.cpp with split mode none, which puts all {weights:.1f} GiB of "
                            f"weights on the main GPU ({card}): NVLink does not merge {ids} into one {merged} device "
                            "— drop split mode none so layers split across both GPUs (the default -sm layer)",
                            ("serve", di, "extra_args", none_at))
