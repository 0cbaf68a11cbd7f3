"""What a rule sees: the validated rig, the catalog, and resolved references.

Lookups return None for unknown ids: the `reference` rules report those once,
at their position, and every other rule simply skips what it cannot resolve.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ..spec.catalog import Catalog, CpuEntry, FormatEntry, GpuEntry, ModelEntry
from ..spec.models import Deployment, Gpu, ModelArch, Node, Rig


@dataclass(frozen=True)
class PlacedGpu:
    """One GPU a deployment runs on, with its spec paths."""

    node_index: int
    node: Node
    gpu_index: int
    gpu: Gpu
    entry: GpuEntry | None

    @property
    def path(self) -> tuple:
        return ("nodes", self.node_index, "gpus", self.gpu_index)

    @property
    def label(self) -> str:
        return f"{self.node.name}/{self.gpu.id}"


class Context:
    def __init__(self, rig: Rig, catalog: Catalog, file: str = "rig.yaml", model_files: dict | None = None):
        self.rig = rig
        self.catalog = catalog
        self.file = file
        # deployment name -> facts read from a real model file (GGUF/safetensors), set by the planner
        self.model_files = model_files or {}

    # ---------------------------------------------------------- hardware
    def gpu_entry(self, gpu: Gpu) -> GpuEntry | None:
        return self.catalog.gpus.get(gpu.model)

    def cpu_entry(self, node: Node) -> CpuEntry | None:
        if node.cpu is None or node.cpu.model is None:
            return None
        return self.catalog.cpus.get(node.cpu.model)

    def node_index(self, name: str) -> int | None:
        for i, n in enumerate(self.rig.nodes):
            if n.name == name:
                return i
        return None

    def gpus(self, node_index: int) -> list[PlacedGpu]:
        node = self.rig.nodes[node_index]
        return [PlacedGpu(node_index, node, i, g, self.gpu_entry(g)) for i, g in enumerate(node.gpus)]

    def all_gpus(self) -> list[PlacedGpu]:
        return [pg for i in range(len(self.rig.nodes)) for pg in self.gpus(i)]

    def cpu_power_w(self, node: Node) -> int | None:
        if node.cpu and node.cpu.power_w:
            return node.cpu.power_w
        entry = self.cpu_entry(node)
        return entry.power_w if entry else None

    def cpu_lanes(self, node: Node) -> int | None:
        if node.cpu and node.cpu.pcie_lanes is not None:
            return node.cpu.pcie_lanes
        entry = self.cpu_entry(node)
        return entry.pcie_lanes if entry else None

    # ---------------------------------------------------------- serving
    def model(self, dep: Deployment) -> ModelEntry | ModelArch | None:
        if isinstance(dep.model, ModelArch):
            return dep.model
        return self.catalog.models.get(dep.model)

    def format(self, dep: Deployment) -> FormatEntry | None:
        return self.catalog.formats.get(dep.format)

    def placed_gpus(self, dep: Deployment) -> list[PlacedGpu]:
        """GPUs a deployment runs on, in placement order; unknown nodes/GPUs are skipped."""
        out: list[PlacedGpu] = []
        for p in dep.placement:
            ni = self.node_index(p.node)
            if ni is None:
                continue
            gpus = self.gpus(ni)
            if p.gpus is None:
                out.extend(gpus)
            else:
                by_id = {pg.gpu.id: pg for pg in gpus}
                out.extend(by_id[g] for g in p.gpus if g in by_id)
        return out

    def deployment_index(self, dep: Deployment) -> int:
        return next(i for i, d in enumerate(self.rig.serve) if d is dep)

    def deployment_nodes(self, dep: Deployment) -> list[Node]:
        nodes = []
        for p in dep.placement:
            n = self.rig.node(p.node)
            if n is not None and n not in nodes:
                nodes.append(n)
        return nodes

    @cached_property
    def multi_node(self) -> bool:
        return len(self.rig.nodes) > 1
