"""storage family: do the model files fit on the nodes' disks, and how long do they take to load?

Weights come from provisioner.sizing (params x bpw / 8, or the real file size).
Disk capacities are in GB as sold; sizing works in GiB (GB = 1e9 B,
GiB = 2^30 B, a 7 % difference: https://en.wikipedia.org/wiki/Gibibyte), so both are printed.
"""

from __future__ import annotations

from .. import sizing
from ..diagnostics import Severity
from ..spec.models import Deployment, Node, Stack, Storage
from .context import Context
from .engine import rule
from .stack import model_name

GB_PER_GIB = sizing.GIB / 1e9  # 1.073741824
MIN_FREE_FRACTION = 0.20
LARGE_MODEL_GB = 30
# Typical sequential reads, GB/s (order of magnitude, L): NVMe ~3, SATA SSD ~0.5, HDD ~0.15.
READ_GBS = {"nvme": 3.0, "unified": 3.0, "sata-ssd": 0.5, "hdd": 0.15}
ASSUMED_NETWORK_GBPS = 1.0


def models_disk(node: Node) -> tuple[int, Storage] | None:
    """The disk marked models_dir, else the largest one."""
    if not node.storage:
        return None
    marked = [(k, s) for k, s in enumerate(node.storage) if s.models_dir]
    if marked:
        return marked[0]
    return max(enumerate(node.storage), key=lambda ks: ks[1].capacity_gb)


def _node_share(ctx: Context, dep: Deployment, node: Node, nodes: list[Node]) -> float:
    """Fraction of the model's files this node stores."""
    if dep.stack == Stack.llamacpp_rpc:
        return 1.0 if node is nodes[0] else 0.0  # rpc-server workers receive tensors over the network
    if dep.stack in (Stack.exo, Stack.petals):
        placed = [pg for pg in ctx.placed_gpus(dep) if pg.entry is not None]
        total = sum(pg.entry.memory_gib for pg in placed)
        if total:
            return sum(pg.entry.memory_gib for pg in placed if pg.node is node) / total
        return 1 / len(nodes)
    return 1.0  # vLLM needs the whole checkpoint on every node; the others run on one node


def _read_gbs(ctx: Context, node: Node, disk: Storage) -> tuple[float, str]:
    if disk.type != "network":
        return READ_GBS[disk.type], f"~{READ_GBS[disk.type]:g} GB/s"
    if ctx.rig.fabric is not None:
        gbps, why = ctx.rig.fabric.speed_gbps, "the fabric"
    elif node.nics:
        gbps, why = max(n.speed_gbps for n in node.nics), "the fastest NIC"
    else:
        gbps, why = ASSUMED_NETWORK_GBPS, "an assumed 1 GbE link"
    return gbps / 8, f"~{gbps / 8:g} GB/s over {why}"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


@rule("storage-fit", "error", "model files fit on each node's models disk with room to spare", tags=("storage",))
def storage_fit(ctx: Context):
    for ni, node in enumerate(ctx.rig.nodes):
        found = models_disk(node)
        if found is None:
            continue
        si, disk = found
        disk_path = ("nodes", ni, "storage", si)
        needs: list[tuple[Deployment, float]] = []
        for dep in ctx.deployments_on(ni):
            if dep.source is not None and dep.source.path:
                continue  # already on the host (a mounted share), not on the models disk
            nodes = ctx.deployment_nodes(dep)
            w_gib = sizing.weights_gib(ctx, dep)
            if w_gib is None:
                continue
            gb = w_gib * GB_PER_GIB * _node_share(ctx, dep, node, nodes)
            if gb > 0:
                needs.append((dep, gb))
        if not needs:
            continue

        total_gb = sum(gb for _, gb in needs)
        parts = " + ".join(f"{model_name(ctx, d)} {d.format} of deployment {d.name} {gb:.1f} GB" for d, gb in needs)
        what = f"{parts} = {total_gb:.1f} GB ({total_gb / GB_PER_GIB:.1f} GiB)" if len(needs) > 1 else \
            f"{parts} ({total_gb / GB_PER_GIB:.1f} GiB)"
        where = f"{disk.type} {disk.name or disk.mount} ({disk.capacity_gb:g} GB)"
        free_gb = disk.capacity_gb - total_gb
        if free_gb < 0:
            yield storage_fit.finding(
                f"node {node.name}: model files {what} do not fit on {where}, {-free_gb:.1f} GB short — use a "
                f"disk of at least {total_gb / (1 - MIN_FREE_FRACTION):.0f} GB for models_dir, or a smaller format",
                disk_path + ("capacity_gb",), tag="capacity")
        elif free_gb < MIN_FREE_FRACTION * disk.capacity_gb:
            yield storage_fit.finding(
                f"node {node.name}: model files {what} leave {free_gb:.1f} GB ({free_gb / disk.capacity_gb:.0%}) free "
                f"on {where}; downloads, caches and logs need room (keep ≥ {MIN_FREE_FRACTION:.0%}) — use a disk of "
                f"at least {total_gb / (1 - MIN_FREE_FRACTION):.0f} GB for models_dir",
                disk_path + ("capacity_gb",), tag="headroom", severity=Severity.warning)

        if disk.type in ("nvme", "unified"):
            continue
        rate, rate_desc = _read_gbs(ctx, node, disk)
        for dep, gb in needs:
            if gb <= LARGE_MODEL_GB:
                continue
            yield storage_fit.finding(
                f"node {node.name}: {model_name(ctx, dep)} {dep.format} ({gb:.1f} GB) loads from {disk.type} "
                f"{disk.name or disk.mount} at {rate_desc}: ~{_duration(gb / rate)} per (re)start, vs "
                f"~{_duration(gb / READ_GBS['nvme'])} from NVMe — put models_dir on an NVMe drive",
                disk_path + ("type",), tag="load-time", severity=Severity.warning)


# ---------------------------------------------------------------- gated repositories

# stacks that download a catalog model's repository by themselves when neither model_file nor
# source is given (vLLM and Petals load a repo id; the others need a local file)
SELF_DOWNLOAD = (Stack.vllm, Stack.petals)


def _gated_entry(ctx: Context, repo: str):
    """The catalog entry that lists ``repo`` among its aliases and is marked gated."""
    entry = ctx.catalog.models.get(repo)
    return entry if getattr(entry, "gated", False) and "/" in repo else None


def hf_repository(ctx: Context, dep: Deployment) -> tuple[str, tuple] | None:
    """(repository id, spec path) of the Hugging Face repository the deployment's weights come from."""
    if dep.source is not None and dep.source.local:
        return (dep.source.hf.repo, ("source", "hf", "repo")) if dep.source.hf else None
    if dep.model_file or dep.stack not in SELF_DOWNLOAD:
        return None
    entry = ctx.model(dep)
    repo = next((a for a in getattr(entry, "aliases", ()) if "/" in a), None)
    return (repo, ("model",)) if repo else None


@rule("model-source-token", "error", "a gated Hugging Face repository has a token reference", tags=("storage",))
def model_source_token(ctx: Context):
    for i, dep in enumerate(ctx.rig.serve):
        found = hf_repository(ctx, dep)
        if found is None or (dep.source is not None and dep.source.token is not None):
            continue
        repo, path = found
        entry = _gated_entry(ctx, repo)
        if entry is None:
            continue
        if dep.source is not None:
            who, fix = "rigctl's download on the host", f"add `token: {{env: HF_TOKEN}}` (or file/vault) under serve[{i}].source"
        else:
            who = f"{dep.stack.value} (it downloads {repo} itself)"
            fix = ("add `source: {token: {env: HF_TOKEN}}` (or file/vault); or let the host download a pinned "
                   f"revision first: `source: {{hf: {{repo: {repo}, revision: <40-hex commit>}}, token: {{env: HF_TOKEN}}}}`")
        yield model_source_token.finding(
            f"deployment {dep.name}: {repo} is a gated Hugging Face repository ({entry.name}); without a token "
            f"{who} gets 401 and the service never loads — accept the licence on "
            f"https://huggingface.co/{repo}, create a read token and {fix}",
            ("serve", i) + path, tag="gated")
