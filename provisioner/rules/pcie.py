"""PCIe rules: slots, lanes, lane sharing, link width and generation, card thickness.

Numbers and sources: the lane counts and x16->x8 sharing in docs/pcie-lanes.md and docs/pcie-lane-sharing.md,
the link bandwidths in docs/pcie-generation.md (each with its URL), and the
GPU catalog's slot_width / pcie_gen fields. Boards are described by the user
(`board.slots`, `board.m2_slots`); nothing here is checked without them.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass

from ..diagnostics import Diagnostic, Severity
from ..spec.models import Deployment, M2Slot, Node, PcieSlot, Stack
from .context import Context, PlacedGpu
from .engine import rule
from .power import short_name

GEN4_X16_GBS = 32.0  # per direction (https://dev.to/jovan_chan_9500711396d4e6/multi-gpu-for-local-ai-in-2026-nvlink-vs-pcie-and-when-a-second-card-actually-helps-1egf; https://github.com/voipmonitor/rtx6kpro/blob/master/hardware/pcie-bandwidth.md)


def gbs(gen: int, lanes: int) -> float:
    """Approximate usable bandwidth per direction: Gen4 x16 ≈ 32 GB/s, doubling per generation."""
    return GEN4_X16_GBS * (2.0 ** (gen - 4)) * lanes / 16


def fmt_gbs(v: float) -> str:
    return f"{v:.0f}" if v >= 10 else f"{v:.1f}".rstrip("0").rstrip(".")


def board_slots(node: Node) -> dict[str, PcieSlot]:
    return {s.name: s for s in node.board.slots} if node.board else {}


def used_m2(node: Node) -> dict[str, str]:
    """M.2 slot name -> the storage device that occupies it."""
    return {s.m2_slot: (s.name or s.type) for s in node.storage if s.m2_slot}


def gpu_slot(pg: PlacedGpu) -> PcieSlot | None:
    if pg.gpu.slot is None:
        return None
    return board_slots(pg.node).get(pg.gpu.slot)


@dataclass
class Link:
    slot: PcieSlot
    lanes: int  # electrical lanes actually available
    gen: int  # generation the link trains at (min of slot and card)
    shared_with: list[tuple[str, str]]  # (m2 slot, storage) that take lanes from this slot


def link(pg: PlacedGpu) -> Link | None:
    slot = gpu_slot(pg)
    if slot is None:
        return None
    used = used_m2(pg.node)
    shared = [(m, used[m]) for m in slot.shared_with_m2 if m in used]
    lanes = min(slot.electrical_lanes, slot.lanes_when_shared) if shared else slot.electrical_lanes
    card_gen = pg.entry.pcie_gen if pg.entry and pg.entry.pcie_gen else slot.pcie_gen
    return Link(slot, lanes, min(slot.pcie_gen, card_gen), shared)


def tensor_parallel(ctx: Context, dep: Deployment) -> int:
    """Tensor-parallel degree of a deployment (1 when it splits by layer)."""
    placed = ctx.placed_gpus(dep)
    if dep.stack == Stack.vllm:
        try:
            from ..sizing import vllm_layout
        except ImportError:  # pragma: no cover - sizing ships with rules
            return dep.tensor_parallel or 1
        return vllm_layout(ctx, dep, len(placed))[0] if placed else 1
    if dep.stack == Stack.tabbyapi:
        return dep.tensor_parallel or 1
    return 1


def _bridged_with(pg: PlacedGpu) -> set[str]:
    """GPU ids an NVLink bridge joins to ``pg`` (itself included), empty without a bridge."""
    out: set[str] = set()
    for bridge in pg.node.nvlink:
        if pg.gpu.id in bridge.gpus:
            out |= set(bridge.gpus)
    return out


def tp_deployments(ctx: Context) -> Iterator[tuple[int, Deployment, int, list[PlacedGpu]]]:
    for di, dep in enumerate(ctx.rig.serve):
        tp = tensor_parallel(ctx, dep)
        if tp > 1:
            yield di, dep, tp, ctx.placed_gpus(dep)


# ------------------------------------------------------------------ pcie-slot


@rule("pcie-slot", "error", "each GPU sits in a slot the board has, one GPU per slot", tags=("pcie", "board"))
def pcie_slot(ctx: Context) -> Iterator[Diagnostic]:
    for ni, node in enumerate(ctx.rig.nodes):
        slots = board_slots(node)
        if not slots:
            continue
        taken: dict[str, str] = {}
        for pg in ctx.gpus(ni):
            name = pg.gpu.slot
            if name is None:
                yield pcie_slot.finding(
                    f"{pg.gpu.id} has no slot, but the board lists {len(slots)} ({', '.join(slots)}) — "
                    "set slot: so lanes, spacing and bridges can be checked",
                    pg.path + ("id",), tag="missing", severity=Severity.warning)
                continue
            if name not in slots:
                close = difflib.get_close_matches(name, list(slots), n=1, cutoff=0.5)
                hint = f"did you mean {close[0]}?" if close else f"the board has {', '.join(slots)}"
                yield pcie_slot.finding(
                    f"{pg.gpu.id} is in slot '{name}', which the board does not list — {hint}",
                    pg.path + ("slot",), tag="unknown")
                continue
            if name in taken:
                free = [s for s in slots if s not in taken and s != name]
                yield pcie_slot.finding(
                    f"{pg.gpu.id} and {taken[name]} are both in {name} — move {pg.gpu.id} to "
                    + (f"a free slot ({', '.join(free)})" if free else "another slot (none free on this board)"),
                    pg.path + ("slot",), tag="twice")
                continue
            taken[name] = pg.gpu.id


# ------------------------------------------------------------------ pcie-lanes


def _m2_slots(node: Node) -> dict[str, M2Slot]:
    return {m.name: m for m in node.board.m2_slots} if node.board else {}


@rule("pcie-lanes", "error", "GPUs and CPU-attached M.2 drives use no more lanes than the CPU has",
      tags=("pcie", "board"))
def pcie_lanes(ctx: Context) -> Iterator[Diagnostic]:
    for ni, node in enumerate(ctx.rig.nodes):
        if node.board is None or node.cpu is None:
            continue
        have = ctx.cpu_lanes(node)
        if have is None:
            continue
        parts: list[str] = []
        total = 0
        counted: set[str] = set()
        for pg in ctx.gpus(ni):
            lk = link(pg)
            if lk is None or lk.slot.source != "cpu" or lk.slot.name in counted:
                continue  # two GPUs in one slot are pcie-slot's finding
            counted.add(lk.slot.name)
            total += lk.lanes
            parts.append(f"{pg.gpu.id} x{lk.lanes}")
        m2 = _m2_slots(node)
        for slot_name, dev in used_m2(node).items():
            m = m2.get(slot_name)
            if m is None or m.source != "cpu":
                continue
            total += m.lanes
            parts.append(f"{dev} in {slot_name} x{m.lanes}")
        if total <= have:
            continue
        if node.cpu.pcie_lanes is not None:
            path, cpu = ("nodes", ni, "cpu", "pcie_lanes"), "the CPU"
        else:
            entry = ctx.cpu_entry(node)
            path, cpu = ("nodes", ni, "cpu", "model"), (entry.name if entry else "the CPU")
        yield pcie_lanes.finding(
            f"{' + '.join(parts)} = {total} CPU lanes; {cpu} has {have} — describe the slots as the board wires "
            "them when all are populated (e.g. x8/x8), move a card or drive to chipset lanes, or use a "
            "Threadripper/EPYC platform",
            path)


# ------------------------------------------------------------------ pcie-lane-sharing


@rule("pcie-lane-sharing", "warning", "a GPU slot that shares lanes with an occupied M.2 slot runs narrower or not at all",
      tags=("pcie", "board"))
def pcie_lane_sharing(ctx: Context) -> Iterator[Diagnostic]:
    for pg in ctx.all_gpus():
        lk = link(pg)
        if lk is None or not lk.shared_with:
            continue
        drives = ", ".join(f"'{dev}' in {m2}" for m2, dev in lk.shared_with)
        where = pg.path + ("slot",)
        if lk.slot.lanes_when_shared == 0:
            yield pcie_lane_sharing.finding(
                f"{lk.slot.name} is disabled while its shared M.2 slot is used ({drives}), so {pg.gpu.id} gets no "
                "lanes — move the drive to another M.2 slot or the GPU to another slot",
                where, tag="disabled", severity=Severity.error)
        elif lk.lanes < lk.slot.electrical_lanes:
            yield pcie_lane_sharing.finding(
                f"{lk.slot.name} drops from x{lk.slot.electrical_lanes} to x{lk.lanes} while {drives} is used: "
                f"{pg.gpu.id} gets ≈ {fmt_gbs(gbs(lk.gen, lk.lanes))} GB/s instead of "
                f"{fmt_gbs(gbs(lk.gen, lk.slot.electrical_lanes))} GB/s per direction — fine for layer split; "
                "move the drive to a non-shared M.2 slot if you want the full width",
                where)


# ------------------------------------------------------------------ pcie-width


@rule("pcie-width", "warning", "GPU links are wide enough for how the GPUs are used (tensor parallel, model load)",
      tags=("pcie", "performance"))
def pcie_width(ctx: Context) -> Iterator[Diagnostic]:
    reported: set[tuple[int, int]] = set()
    for _di, dep, tp, placed in tp_deployments(ctx):
        for pg in placed:
            key = (pg.node_index, pg.gpu_index)
            lk = link(pg)
            if lk is None or key in reported or lk.lanes == 0 or (lk.lanes >= 16 and lk.slot.source == "cpu"):
                continue  # a disabled slot (0 lanes) is pcie-lane-sharing's finding
            reported.add(key)
            bridged = _bridged_with(pg)
            group = {p.gpu.id for p in placed if p.node_index == pg.node_index}
            if len(group) > 1 and group <= bridged:
                continue  # the node's whole TP group is on one NVLink bridge: the all-reduce skips PCIe
            src = " through the chipset" if lk.slot.source == "chipset" else ""
            if bridged:
                others = ", ".join(sorted(bridged - {pg.gpu.id}))
                advice = (f"its NVLink bridge to {others} carries only part of the all-reduce — use x16 CPU slots, "
                          "tensor_parallel equal to the bridged group, ")
            elif pg.entry and pg.entry.nvlink.present:
                advice = "use x16 CPU slots, an NVLink bridge, "
            else:
                advice = "use x16 CPU slots "
            yield pcie_width.finding(
                f"{pg.gpu.id} in {lk.slot.name} runs PCIe {lk.gen}.0 x{lk.lanes}{src} ≈ "
                f"{fmt_gbs(gbs(lk.gen, lk.lanes))} GB/s per direction (x16 would be {fmt_gbs(gbs(lk.gen, 16))} GB/s); "
                f"tensor parallel ({tp}) in '{dep.name}' all-reduces over this link at every layer — {advice}"
                "or layer/pipeline split, which only passes activations",
                pg.path + ("slot",), tag="tensor-parallel")
    for pg in ctx.all_gpus():
        key = (pg.node_index, pg.gpu_index)
        lk = link(pg)
        if lk is None or key in reported or lk.lanes > 4 or lk.lanes == 0:
            continue
        src = "chipset" if lk.slot.source == "chipset" else "CPU"
        if lk.slot.source != "chipset" and lk.lanes > 2:
            continue
        mem = pg.entry.memory_gib if pg.entry else None
        load = (f"; loading {mem:.0f} GiB takes ≥ {mem * 1.074 / gbs(lk.gen, lk.lanes):.0f} s at best" if mem else "")
        yield pcie_width.finding(
            f"{pg.gpu.id} in {lk.slot.name} is on {src} PCIe {lk.gen}.0 x{lk.lanes} ≈ "
            f"{fmt_gbs(gbs(lk.gen, lk.lanes))} GB/s per direction{load}: fine for llama.cpp layer split, "
            "slow model load and poor tensor parallel — prefer a CPU x8/x16 slot for this GPU",
            pg.path + ("slot",), tag="narrow")


# ------------------------------------------------------------------ pcie-slot-spacing


@rule("pcie-slot-spacing", "error", "a thick card does not cover the slot another GPU sits in",
      tags=("pcie", "board"))
def pcie_slot_spacing(ctx: Context) -> Iterator[Diagnostic]:
    for ni in range(len(ctx.rig.nodes)):
        placed = [(pg, s) for pg in ctx.gpus(ni) if (s := gpu_slot(pg)) is not None]
        for pg, slot in placed:
            width = pg.entry.slot_width if pg.entry else None
            if not width or width < 2:
                continue
            last = slot.position + width - 1
            for other, oslot in placed:
                if other is pg or oslot.name == slot.name or not (slot.position < oslot.position <= last):
                    continue
                free = slot.position + width
                yield pcie_slot_spacing.finding(
                    f"{short_name(pg)} is {width} slots thick (reference design): in {slot.name} (position "
                    f"{slot.position}) it covers positions {slot.position + 1}–{last}, where {other.gpu.id} sits in "
                    f"{oslot.name} (position {oslot.position}) — use a slot at position ≥ {free}, a riser, or "
                    "thinner (blower/2-slot) cards",
                    other.path + ("slot",))


# ------------------------------------------------------------------ pcie-generation


@rule("pcie-generation", "warning", "cards run at the slot's PCIe generation; tensor-parallel GPUs share one",
      tags=("pcie", "performance"))
def pcie_generation(ctx: Context) -> Iterator[Diagnostic]:
    tp_gpus: dict[tuple[int, int], str] = {}
    for di, dep, tp, placed in tp_deployments(ctx):
        links = [(pg, lk) for pg in placed if (lk := link(pg)) is not None]
        for pg, _ in links:
            tp_gpus.setdefault((pg.node_index, pg.gpu_index), dep.name)
        gens = sorted({lk.gen for _, lk in links})
        if len(gens) > 1:
            detail = ", ".join(f"{pg.gpu.id} Gen{lk.gen}" for pg, lk in links)
            yield pcie_generation.finding(
                f"tensor parallel ({tp}) in '{dep.name}' spans PCIe Gen{gens[0]} and Gen{gens[-1]} links ({detail}); "
                f"the slowest link (≈ {fmt_gbs(gbs(gens[0], 16))} GB/s at x16) paces every all-reduce — put these "
                "GPUs in slots of the same generation",
                ("serve", di, "placement"), tag="mixed")
    for pg in ctx.all_gpus():
        slot = gpu_slot(pg)
        if slot is None or pg.entry is None or not pg.entry.pcie_gen or pg.entry.pcie_gen <= slot.pcie_gen:
            continue
        dep_name = tp_gpus.get((pg.node_index, pg.gpu_index))
        card, lanes = pg.entry.pcie_gen, slot.electrical_lanes
        msg = (f"{short_name(pg)} is PCIe {card}.0 but {slot.name} is PCIe {slot.pcie_gen}.0: {pg.gpu.id} runs at "
               f"{slot.pcie_gen}.0 x{lanes} ≈ {fmt_gbs(gbs(slot.pcie_gen, lanes))} GB/s per direction instead of "
               f"{fmt_gbs(gbs(card, lanes))} GB/s")
        if dep_name:
            yield pcie_generation.finding(
                msg + f"; tensor parallel in '{dep_name}' feels this — use a Gen{card} slot",
                pg.path + ("slot",), tag="slot")
        else:
            yield pcie_generation.finding(
                msg + "; harmless for layer split beyond slower model load",
                pg.path + ("slot",), tag="slot", severity=Severity.info)
