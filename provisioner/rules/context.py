"""What a rule sees: the validated rig, the catalog, and resolved references.

Lookups return None for unknown ids: the `reference` rules report those once,
at their position, and every other rule simply skips what it cannot resolve.

Nodes, GPUs and deployments are indexed once, on first use (the rig does not
change after loading): rules and planners look things up inside loops over
deployments and placements, and a linear scan there makes a fleet with one
deployment per node quadratic (issue 10: 35 s at 1,000 nodes, 250 s at 2,000).
Lists handed out are fresh copies, so a caller that edits one cannot corrupt the index.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ..spec.catalog import Catalog, CpuEntry, FormatEntry, GpuEntry, ModelEntry, _norm, for_node_memory
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
    def gpu_entry(self, gpu: Gpu, node: Node | None = None) -> GpuEntry | None:
        """The GPU's entry: an inline `gpu_models` definition, else the catalog's; an Apple
        chip is sized to its node's memory_gib when the node gives it."""
        e = self._inline_gpus.get(_norm(gpu.model)) or self.catalog.gpus.get(gpu.model)
        if e is not None and e.vendor == "apple" and node is not None and node.memory_gib:
            e = for_node_memory(e, node.memory_gib)
        return e

    @cached_property
    def _inline_gpus(self) -> dict[str, GpuEntry]:
        out: dict[str, GpuEntry] = {}
        for g in self.rig.gpu_models:
            out[_norm(g.id)] = GpuEntry.model_construct(**g.model_dump(), aliases=[], confidence="medium")
        return out

    def cpu_entry(self, node: Node) -> CpuEntry | None:
        if node.cpu is None or node.cpu.model is None:
            return None
        return self.catalog.cpus.get(node.cpu.model)

    @cached_property
    def _node_by_name(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for i, n in enumerate(self.rig.nodes):
            out.setdefault(n.name, i)  # the first of duplicate names wins, as a scan would find it
        return out

    @cached_property
    def _gpus_by_node(self) -> list[tuple[PlacedGpu, ...]]:
        entries: dict[tuple, GpuEntry | None] = {}  # catalog lookups normalise the id: once per model
        out = []
        for ni, node in enumerate(self.rig.nodes):
            placed = []
            for i, g in enumerate(node.gpus):
                key = (g.model, node.memory_gib)  # Apple entries depend on the node's RAM
                if key not in entries:
                    entries[key] = self.gpu_entry(g, node)
                placed.append(PlacedGpu(ni, node, i, g, entries[key]))
            out.append(tuple(placed))
        return out

    def node_index(self, name: str) -> int | None:
        return self._node_by_name.get(name)

    def node(self, name: str) -> Node | None:
        """The node called ``name`` (the first one, if the spec repeats the name)."""
        ni = self._node_by_name.get(name)
        return None if ni is None else self.rig.nodes[ni]

    def gpus(self, node_index: int) -> list[PlacedGpu]:
        return list(self._gpus_by_node[node_index])

    def gpu_by_id(self, node_index: int, gpu_id: str) -> PlacedGpu | None:
        """GPU ``gpu_id`` on a node (the first one, if the node repeats the id)."""
        return self._gpu_ids[node_index].get(gpu_id)

    @cached_property
    def _gpu_ids(self) -> list[dict[str, PlacedGpu]]:
        out = []
        for placed in self._gpus_by_node:
            by_id: dict[str, PlacedGpu] = {}
            for pg in placed:
                by_id.setdefault(pg.gpu.id, pg)
            out.append(by_id)
        return out

    def all_gpus(self) -> list[PlacedGpu]:
        return [pg for placed in self._gpus_by_node for pg in placed]

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
        return list(self._placed(dep))

    def _placed(self, dep: Deployment) -> tuple[PlacedGpu, ...]:
        key = id(dep)
        hit = self._placed_cache.get(key)
        if hit is not None and hit[0] is dep:
            return hit[1]
        out: list[PlacedGpu] = []
        for p in dep.placement:
            ni = self.node_index(p.node)
            if ni is None:
                continue
            if p.gpus is None:
                out.extend(self._gpus_by_node[ni])
            else:
                # a repeated id resolves to the last GPU with that id, as before the index
                by_id = {pg.gpu.id: pg for pg in self._gpus_by_node[ni]}
                out.extend(by_id[g] for g in p.gpus if g in by_id)
        # keep dep alive beside its id so that the id cannot be reused by another object
        self._placed_cache[key] = (dep, tuple(out))
        return self._placed_cache[key][1]

    @cached_property
    def _placed_cache(self) -> dict[int, tuple[Deployment, tuple[PlacedGpu, ...]]]:
        return {}

    @cached_property
    def _deployment_indices(self) -> dict[int, int]:
        return {id(d): i for i, d in enumerate(self.rig.serve)}

    def deployment_index(self, dep: Deployment) -> int:
        """Position of ``dep`` in serve (KeyError for a deployment of another rig)."""
        return self._deployment_indices[id(dep)]

    def deployment_nodes(self, dep: Deployment) -> list[Node]:
        """Nodes a deployment is placed on, once each, in placement order; unknown names are skipped."""
        return [self.rig.nodes[ni] for ni in self._node_indices(dep)]

    def _node_indices(self, dep: Deployment) -> list[int]:
        seen: set[int] = set()
        out: list[int] = []
        for p in dep.placement:
            ni = self.node_index(p.node)
            if ni is not None and ni not in seen:
                seen.add(ni)
                out.append(ni)
        return out

    def deployments_on(self, node_index: int) -> list[Deployment]:
        """Deployments placed on a node, in serve order."""
        return list(self._deployments_by_node.get(node_index, ()))

    @cached_property
    def _deployments_by_node(self) -> dict[int, list[Deployment]]:
        out: dict[int, list[Deployment]] = {}
        for dep in self.rig.serve:
            for ni in self._node_indices(dep):
                out.setdefault(ni, []).append(dep)
        return out

    @cached_property
    def multi_node(self) -> bool:
        return len(self.rig.nodes) > 1
