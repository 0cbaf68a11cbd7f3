"""Power rules: PSU headroom, GPU power connectors, wall circuit, power caps.

Numbers and sources: the URLs beside each constant below and in docs/psu-*.md,
docs/wall-circuit.md and docs/power-limit-range.md, and the
GPU catalog's board_power_w / transient_peak_w / power_connector fields.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

from ..diagnostics import Diagnostic, Severity
from ..spec.models import Node
from .context import Context, PlacedGpu
from .engine import rule

HEADROOM = 1.25  # rigctl's rule of thumb, not a standard; docs/psu-headroom.md says why
HEADROOM_CAPPED = 1.15  # every GPU power-limited below board power (§7: ×1.15–1.2)
HEADROOM_TRANSIENT = 1.4  # non-ATX-3 PSU with spiky GPUs (§7: ×1.4–1.5 for ATX 2.x or Ampere)
TRANSIENT_SPIKY = 1.5  # ms peak of a spiky GPU without a measured figure (the catalog's 1.5x TGP rule, see rtx-3090)
# 100 µs excursion a PSU carries, times its rating: ATX 3.0/3.1 200 % for 100 µs
# (https://hothardware.com/news/psu-manufs-can-skirt-atx-30-tolerance-testing); ATX 2.x sets no excursion
# limit: units trip over-power protection on Ampere spikes
# (https://hardzone.es/noticias/tarjetas-graficas/nvidia-rtx-3090-fuente-alimentacion-750-vatios/), at about
# 120 % of rating (OPP measured at 119.2 % on a Corsair AX1600i:
# https://www.tomshardware.com/uk/reviews/corsair-ax1600i-psu,5406-6.html);
# Intel's example: a 300 W GPU needs ~750 W ATX 3.0 but ~1,100 W ATX 2.x (https://www.tweaktown.com/news/85717/)
ATX3_EXCURSION = 2.0
ATX2_EXCURSION = 1.2
ASSUMED_CPU_W = 150
PSU_SIZES_W = (750, 850, 1000, 1200, 1300, 1600, 2000, 2400)
MIN_SUGGESTED_CAP = 0.5  # never suggest a cap below half the board power
CONNECTOR_16PIN_W = 600  # 12VHPWR / 12V-2x6 (https://www.tomshardware.com/news/intel-atx-v3-psu-standard)
PCIE_8PIN_W = 150  # (http://igorscience.org/index-2106.html)
PCIE_6PIN_W = 75  # PCIe 6-pin auxiliary connector (http://igorscience.org/index-2106.html)
EPS_8PIN_W = 300  # CPU-style EPS-12V 8-pin on workstation/server cards (A6000, A100 PCIe)
SLOT_W = 75  # (http://igorscience.org/index-2106.html)

# 80 PLUS efficiency at 50-100 % load, 115 V internal (https://en.wikipedia.org/wiki/80_Plus); "none" = no certification
EFFICIENCY = {"none": 0.80, "white": 0.82, "bronze": 0.85, "silver": 0.87,
              "gold": 0.90, "platinum": 0.92, "titanium": 0.94}


@dataclass
class Load:
    """Sustained DC load of one node, with the parts named for messages."""

    gpus: list[tuple[PlacedGpu, int]]  # (gpu, watts it draws sustained)
    cpu_w: int
    cpu_assumed: bool
    platform_w: int

    @property
    def gpu_w(self) -> int:
        return sum(w for _, w in self.gpus)

    @property
    def total_w(self) -> int:
        return self.gpu_w + self.cpu_w + self.platform_w

    def describe(self) -> str:
        groups: dict[tuple[str, int, bool], int] = {}
        for pg, w in self.gpus:
            key = (short_name(pg), w, pg.gpu.power_limit_w is not None)
            groups[key] = groups.get(key, 0) + 1
        parts = []
        for (name, w, capped), n in groups.items():
            label = f"{w} W cap" if capped else f"{w} W"
            parts.append(f"{n}× {name} ({label})" if n > 1 else f"{name} ({label})")
        cpu = f"CPU {self.cpu_w} W" + (" (assumed: CPU power unknown)" if self.cpu_assumed else "")
        parts += [cpu, f"platform {self.platform_w} W"]
        return " + ".join(parts) + f" = {self.total_w} W"


def short_name(pg: PlacedGpu) -> str:
    name = pg.entry.name if pg.entry else pg.gpu.model
    return re.sub(r"^(NVIDIA|AMD)\s+(GeForce\s+)?", "", name)


def gpu_watts(pg: PlacedGpu) -> int | None:
    if pg.gpu.power_limit_w is not None:
        return pg.gpu.power_limit_w
    return pg.entry.board_power_w if pg.entry else None


def node_load(ctx: Context, node_index: int) -> Load | None:
    """Sustained DC load, or None when a GPU's power is unknown (unknown ids are reported elsewhere)."""
    node = ctx.rig.nodes[node_index]
    gpus = []
    for pg in ctx.gpus(node_index):
        w = gpu_watts(pg)
        if w is None:
            return None
        gpus.append((pg, w))
    cpu = ctx.cpu_power_w(node)
    return Load(gpus, cpu if cpu is not None else ASSUMED_CPU_W, cpu is None, node.platform_power_w)


def spiky(pg: PlacedGpu) -> bool:
    """Documented large transients: Ampere PCIe cards (https://hardzone.es/noticias/tarjetas-graficas/nvidia-rtx-3090-fuente-alimentacion-750-vatios/) or a catalog peak ≥ 1.5× board power (https://www.slashgear.com/1902896/rtx-5090-how-much-power-can-pull-nvidia-geforce-gpu/)."""
    e = pg.entry
    if e is None or e.board_power_w is None:
        return False
    if e.transient_peak_w is not None and e.transient_peak_w >= 1.5 * e.board_power_w:
        return True
    return e.architecture == "ampere" and e.form_factor == "pcie" and e.vendor == "nvidia"


def all_capped(load: Load) -> bool:
    return bool(load.gpus) and all(
        pg.gpu.power_limit_w is not None and pg.entry is not None and pg.entry.board_power_w is not None
        and pg.gpu.power_limit_w < pg.entry.board_power_w for pg, _ in load.gpus)


def suggest_cap(load: Load, budget_w: float, factor_when_capped: float, factor_uncapped: float) -> int | None:
    """Largest uniform GPU cap (10 W steps) that makes the load fit ``budget_w``, or None."""
    boards = [(pg.entry.board_power_w if pg.entry and pg.entry.board_power_w else w, w) for pg, w in load.gpus]
    if not boards:
        return None
    top = max(w for _, w in boards)
    floor = max(b for b, _ in boards) * MIN_SUGGESTED_CAP
    cap = int(top // 10 * 10)
    while cap >= floor:
        gpu_w = sum(min(cap, w) for _, w in boards)
        capped = all(min(cap, w) < b for b, w in boards)
        factor = factor_when_capped if capped else factor_uncapped
        if factor * (gpu_w + load.cpu_w + load.platform_w) <= budget_w:
            return cap if cap < top else None
        cap -= 10
    return None


def psu_size_for(needed_w: float, count: int) -> str:
    """The next standard PSU size for ``needed_w`` split over ``count`` units, as text."""
    per_unit = needed_w / count
    for size in PSU_SIZES_W:
        if size >= per_unit:
            return f"a {size} W unit" if count == 1 else f"{count}× {size} W units"
    units = math.ceil(needed_w / PSU_SIZES_W[-1])
    return f"{units}× {PSU_SIZES_W[-1]} W units sharing the load"


def psu_text(node: Node) -> str:
    psu = node.psu
    return f"{psu.watts} W" if psu.count == 1 else f"{psu.count}× {psu.watts} W = {psu.count * psu.watts} W"


# ------------------------------------------------------------------ psu-headroom


def transient_w(load: Load) -> int:
    """Millisecond peak of the node: documented GPU peaks (scaled to a cap), ×1.5 for spiky GPUs
    without a measured peak, board power otherwise; CPU and platform at their sustained draw."""
    total = load.cpu_w + load.platform_w
    for pg, w in load.gpus:
        e = pg.entry
        board = e.board_power_w if e and e.board_power_w else w
        if e and e.transient_peak_w:
            total += round(e.transient_peak_w * w / board)
        else:
            total += round(w * (TRANSIENT_SPIKY if spiky(pg) else 1.0))
    return total


@rule("psu-headroom", "error", "PSU capacity covers the sustained load and its transients; headroom below 25 % warns",
      tags=("power", "psu"))
def psu_headroom(ctx: Context) -> Iterator[Diagnostic]:
    for ni, node in enumerate(ctx.rig.nodes):
        if node.psu is None:
            continue
        load = node_load(ctx, ni)
        if load is None:
            continue
        capacity = node.psu.watts * node.psu.count
        base = HEADROOM_CAPPED if all_capped(load) else HEADROOM
        path = ("nodes", ni, "psu", "watts")
        need = base * load.total_w
        transient = not node.psu.atx3 and any(spiky(pg) for pg, _ in load.gpus)
        # what the unit carries for a millisecond: ATX 3.x is tested at 200 % for 100 µs,
        # an ATX 2.x unit only up to its over-power protection (~120 %)
        carries = capacity * (ATX3_EXCURSION if node.psu.atx3 else ATX2_EXCURSION)
        share = f"{load.total_w / capacity:.0%} of its rating"

        def fixes(factor: float) -> list[str]:
            if transient:
                spikers = " and ".join(sorted({short_name(pg) for pg, _ in load.gpus if spiky(pg)}))
                atx3 = psu_size_for(HEADROOM * load.total_w, node.psu.count)
                other = psu_size_for(HEADROOM_TRANSIENT * load.total_w, node.psu.count)
                out = [f"use {other}" if atx3 == other else
                       f"use {atx3} if ATX 3.x, else {other} (40 % headroom for {spikers} spikes)"]
            else:
                out = [f"use {psu_size_for(HEADROOM * load.total_w, node.psu.count)}"]
            cap = suggest_cap(load, capacity, factor if transient else HEADROOM_CAPPED, factor)
            if cap is not None:
                out.append(f"cap the GPUs at {cap} W (power_limit_w)")
            return out

        if load.total_w > capacity:
            yield psu_headroom.finding(
                f"{load.describe()} sustained is above the PSU's rating ({psu_text(node)}, {share}): it shuts down "
                f"or browns out under load; ≥ {need:.0f} W gives {round((base - 1) * 100)} % headroom — "
                + " or ".join(fixes(HEADROOM)), path)
        elif (peak := transient_w(load)) > carries:
            kind = "ATX 3.x units are tested to 200 %" if node.psu.atx3 else "an ATX 2.x unit trips its over-power protection at about 120 %"
            yield psu_headroom.finding(
                f"{load.describe()} sustained, but millisecond GPU spikes reach ~{peak} W on {psu_text(node)} "
                f"({kind}): expect shutdowns under load — " + " or ".join(fixes(HEADROOM_TRANSIENT)),
                path, tag="transient")
        elif capacity < need:
            yield psu_headroom.finding(
                f"{load.describe()} sustained is {share} ({psu_text(node)}): it runs, with less than the "
                f"{round((base - 1) * 100)} % headroom rigctl advises (≥ {need:.0f} W) for ageing, heat and "
                "efficiency — " + " or ".join(fixes(base)),
                path, tag="margin", severity=Severity.warning)
        elif transient and capacity < HEADROOM_TRANSIENT * load.total_w:
            spikers = sorted({short_name(pg) for pg, _ in load.gpus if spiky(pg)})
            need_t = HEADROOM_TRANSIENT * load.total_w
            cap = suggest_cap(load, capacity, HEADROOM_TRANSIENT, HEADROOM_TRANSIENT)
            fix = ["use an ATX 3.x PSU (atx3: true; tested for 200 % excursions for 100 µs)",
                   psu_size_for(need_t, node.psu.count)]
            if cap is not None:
                fix.append(f"cap the GPUs at {cap} W")
            yield psu_headroom.finding(
                f"{', '.join(spikers)} cards draw ms-scale spikes far above board power, and this PSU is not ATX 3.x: "
                f"{load.total_w} W sustained needs ≥ {need_t:.0f} W with 40 % headroom; PSU is {psu_text(node)} — "
                + " or ".join(fix),
                path, tag="transient", severity=Severity.warning)


# ------------------------------------------------------------------ psu-connectors


def connector_limit_w(connector: str | None) -> tuple[str, int] | None:
    """(kind, watts the card may draw through its connectors and slot), from the catalog string."""
    if not connector:
        return None
    c = connector.lower()
    n = int(m.group(1)) if (m := re.match(r"\s*(\d+)\s*x", c)) else 1
    if "12vhpwr" in c or "12v-2x6" in c:
        return "16pin", n * CONNECTOR_16PIN_W
    if "eps" in c:
        return "eps", n * EPS_8PIN_W
    if "8-pin" in c or "6-pin" in c:
        # "1x 8-pin + 1x 6-pin": each part with its own count
        watts = SLOT_W
        for part in c.split("+"):
            k = int(m.group(1)) if (m := re.match(r"\s*(\d+)\s*x", part)) else 1
            watts += k * (PCIE_8PIN_W if "8-pin" in part else PCIE_6PIN_W if "6-pin" in part else 0)
        return "8pin", watts
    return None


@rule("psu-connectors", "error", "each 12V-2x6 GPU has a native PSU cable and stays within its connectors' rating",
      tags=("power", "psu"))
def psu_connectors(ctx: Context) -> Iterator[Diagnostic]:
    for ni, node in enumerate(ctx.rig.nodes):
        hpwr: list[PlacedGpu] = []
        for pg in ctx.gpus(ni):
            if pg.entry is None:
                continue
            lim = connector_limit_w(pg.entry.power_connector)
            if lim is None:
                continue
            kind, max_w = lim
            if kind == "16pin":
                hpwr.append(pg)
            limit = pg.gpu.power_limit_w
            if limit is not None and limit > max_w:
                yield psu_connectors.finding(
                    f"{pg.gpu.id} ({short_name(pg)}, {pg.entry.power_connector}) is capped at {limit} W, but its "
                    f"power inputs are rated for {max_w} W"
                    + (" (600 W per 12V-2x6 connector)" if kind == "16pin" else
                       " (150 W per PCIe 8-pin + 75 W slot)" if kind == "8pin" else "")
                    + f" — set power_limit_w ≤ {max_w}",
                    pg.path + ("power_limit_w",), tag="rating")
        psu = node.psu
        if psu is None or not hpwr:
            continue
        if psu.connectors_12v_2x6 > 0 and psu.connectors_12v_2x6 < len(hpwr):
            names = ", ".join(f"{pg.gpu.id} ({short_name(pg)})" for pg in hpwr)
            yield psu_connectors.finding(
                f"{len(hpwr)} GPUs take a 12V-2x6/12VHPWR cable each ({names}); the PSU has "
                f"{psu.connectors_12v_2x6} native connector{'s' if psu.connectors_12v_2x6 > 1 else ''} — use a PSU "
                f"with ≥ {len(hpwr)} native 12V-2x6 outputs (never split one 600 W cable between cards), or feed "
                "the rest from the card's 8-pin adapter with one PSU cable per 8-pin",
                ("nodes", ni, "psu", "connectors_12v_2x6"), tag="count")
        elif psu.connectors_12v_2x6 == 0 and not psu.atx3:
            worst = max(hpwr, key=lambda pg: gpu_watts(pg) or 0)
            w = gpu_watts(worst) or CONNECTOR_16PIN_W
            yield psu_connectors.finding(
                f"{len(hpwr)} GPU{'s use' if len(hpwr) > 1 else ' uses'} a 12V-2x6/12VHPWR connector but the PSU lists "
                f"no native 12V-2x6 output: each card needs the 8-pin adapter, {math.ceil(w / PCIE_8PIN_W)} separate "
                f"8-pin PSU cables for {w} W — set connectors_12v_2x6 if the PSU has them, or plan the cables",
                ("nodes", ni, "psu"), tag="adapter", severity=Severity.info, at_key=True)



# ------------------------------------------------------------------ wall-circuit


@rule("wall-circuit", "error", "wall draw (DC load ÷ PSU efficiency) fits the circuit's continuous rating",
      tags=("power", "circuit"))
def wall_circuit(ctx: Context) -> Iterator[Diagnostic]:
    for ni, node in enumerate(ctx.rig.nodes):
        circuit = node.circuit
        if circuit is None:
            continue
        load = node_load(ctx, ni)
        if load is None:
            continue
        rating = node.psu.rating if node.psu else "gold"
        eff = EFFICIENCY[rating]
        wall = load.total_w / eff
        limit = circuit.volts * circuit.amps * circuit.continuous_fraction
        if wall <= limit:
            continue
        rated = "80 PLUS " + rating.capitalize() if rating != "none" else "uncertified"
        if node.psu is None:
            rated += ", assumed"
        fixes = []
        options = [(circuit.volts, 20), (240, 15), (240, 20), (240, 30)]
        for volts, amps in options:
            cont = volts * amps * circuit.continuous_fraction
            if volts * amps > circuit.volts * circuit.amps and cont >= wall:
                fixes.append(f"a {volts} V / {amps} A circuit ({cont:.0f} W continuous)")
                break
        cap = suggest_cap(load, limit * eff, 1.0, 1.0)
        if cap is not None:
            fixes.append(f"cap the GPUs at {cap} W (power_limit_w)")
        if not fixes:
            fixes.append("split the GPUs across circuits")
        yield wall_circuit.finding(
            f"{load.total_w} W DC ÷ {eff:.2f} ({rated}) = {wall:.0f} W at the wall; {circuit.volts} V × "
            f"{circuit.amps} A × {circuit.continuous_fraction:g} = {limit:.0f} W continuous — move to "
            + " or ".join(fixes),
            ("nodes", ni, "circuit", "amps"))



# ------------------------------------------------------------------ power-limit-range

LIMIT_LOW = 0.4
LIMIT_HIGH = 1.2


@rule("power-limit-range", "warning", "a GPU power cap is within what nvidia-smi -pl accepts for the card",
      tags=("power", "gpu"))
def power_limit_range(ctx: Context) -> Iterator[Diagnostic]:
    for pg in ctx.all_gpus():
        limit = pg.gpu.power_limit_w
        if limit is None or pg.entry is None or not pg.entry.board_power_w:
            continue
        board = pg.entry.board_power_w
        path = pg.path + ("power_limit_w",)
        if limit > LIMIT_HIGH * board:
            yield power_limit_range.finding(
                f"{pg.gpu.id} ({short_name(pg)}) power_limit_w {limit} W is {limit / board:.0%} of its {board} W "
                f"board power; nvidia-smi -pl refuses caps above the card's maximum (check `nvidia-smi -q -d POWER`) "
                f"— use ≤ {board} W",
                path, tag="high", severity=Severity.error)
        elif limit < LIMIT_LOW * board:
            yield power_limit_range.finding(
                f"{pg.gpu.id} ({short_name(pg)}) power_limit_w {limit} W is {limit / board:.0%} of its {board} W "
                f"board power; cards refuse caps below their minimum (`nvidia-smi -q -d POWER` shows it) and "
                f"throughput collapses — use ≥ {math.ceil(LIMIT_LOW * board / 10) * 10} W "
                f"(caps of 60–80 % are common and cost little token speed)",
                path, tag="low")

