"""security family: who can reach the endpoints and cluster ports, and no secrets in the spec.

Facts and sources (ports, binds, built-in auth): llama.cpp RPC "never run on an open
network" (https://github.com/ggml-org/llama.cpp/blob/master/tools/rpc/README.md); Ollama has
no auth (https://github.com/ollama/ollama/blob/main/envconfig/config.go); vLLM --api-key
covers /v1 only and inter-node traffic is insecure by default
(https://github.com/vllm-project/vllm/blob/main/docs/usage/security.md); exo's API has no
auth (https://github.com/exo-explore/exo/blob/main/src/exo/main.py); Petals
(https://github.com/bigscience-workshop/petals). Details in docs/endpoint-auth.md and
docs/cluster-port-exposure.md.
"""

from __future__ import annotations

import ipaddress
import re

from ..diagnostics import Severity
from ..exposure import KEYED_STACKS, LOOPBACK, is_loopback, is_wildcard  # noqa: F401 (is_wildcard: re-exported)
from ..spec.models import Deployment, Stack
from .context import Context
from .engine import rule
from .stack import stack_name

DEFAULT_PORTS = {
    Stack.llamacpp: 8080, Stack.llamacpp_rpc: 8080, Stack.ollama: 11434, Stack.vllm: 8000,
    Stack.tabbyapi: 5000, Stack.exo: 52415, Stack.petals: 31330,
}


def _not_quite_loopback(bind: str) -> str:
    """Why a bind that reads like loopback is not treated as one ("" when it does not read like it)."""
    if bind.startswith("unix:") or bind.endswith(".sock"):
        return (f" (a unix socket is not supported: rigctl's firewall and verify know only TCP ports, so "
                f"{bind!r} counts as reachable from the network — bind to 127.0.0.1 instead)")
    b = bind.strip().strip("[]")
    try:
        near = b in LOOPBACK or ipaddress.ip_address(b).is_loopback
    except ValueError:
        near = False
    if not near:
        return ""
    return (f" ({bind!r} is not exactly 127.0.0.1, ::1 or localhost, the only addresses rigctl "
            "treats as loopback, so it counts as reachable from the network — write one of those)")


def _port(dep: Deployment) -> int:
    return dep.port or DEFAULT_PORTS.get(dep.stack, 0)


# ---------------------------------------------------------------- endpoint-auth


# Routes vLLM's OpenAI server registers by default outside /v1, so its API-key middleware
# (which checks only paths under /v1) leaves them open: vllm/entrypoints/openai/api_server.py,
# https://github.com/vllm-project/vllm/blob/main/vllm/entrypoints/openai/api_server.py
VLLM_OPEN_ROUTES = ("/invocations (the same inference as /v1), /tokenize, /detokenize, /metrics, /health, "
                    "/ping and /version")

_AUTH_IGNORED_FIX = {
    Stack.ollama: "bind to 127.0.0.1 and put an authenticating reverse proxy (Caddy, nginx) in front",
    Stack.exo: "bind to 127.0.0.1 and put an authenticating reverse proxy in front",
    Stack.petals: "keep the swarm on a private fabric.subnet: rigctl's firewall admits only the rig subnet to its ports",
}


@rule("endpoint-auth", "error", "an endpoint reachable beyond loopback requires an API key", tags=("security",))
def endpoint_auth(ctx: Context):
    for i, dep in enumerate(ctx.rig.serve):
        if dep.auth is not None and dep.stack not in KEYED_STACKS:
            yield endpoint_auth.finding(
                f"{dep.name}: auth is ignored: {stack_name(dep.stack)} has no API key support, so rigctl passes the "
                f"key to nothing and the endpoint stays open to whoever reaches it — remove auth, then "
                f"{_AUTH_IGNORED_FIX[dep.stack]}",
                ("serve", i, "auth"), tag="auth-ignored", severity=Severity.warning)
        if is_loopback(dep.bind) or dep.stack == Stack.petals:
            continue  # Petals has no HTTP API; its peer ports are cluster-port-exposure's
        path = ("serve", i, "bind")
        where = f"bound to {dep.bind}:{_port(dep)}"
        why = _not_quite_loopback(dep.bind)
        if dep.stack == Stack.ollama:
            yield endpoint_auth.finding(
                f"{dep.name}: Ollama has no API key support; {where} lets anyone who reaches it run and pull models "
                f"(ollama#14003: ~175,000 exposed servers){why}; rigctl's firewall admits only the rig subnet "
                "to it — bind to 127.0.0.1 and put an authenticating reverse proxy (Caddy, nginx) in front",
                path, tag="ollama")
        elif dep.stack == Stack.exo:
            yield endpoint_auth.finding(
                f"{dep.name}: exo's API has no authentication, including /instance which creates and deletes "
                f"placements, and exo always listens on 0.0.0.0 (it has no listen-address option): {where}{why} "
                "leaves it to rigctl's firewall, which admits only the rig subnet — bind to 127.0.0.1 (the firewall "
                "then keeps the API to loopback) and put an authenticating reverse proxy in front",
                path, tag="exo")
        elif dep.auth is None and dep.stack == Stack.tabbyapi:
            yield endpoint_auth.finding(
                f"{dep.name}: TabbyAPI {where}{why} without auth generates a random api_key/admin_key into "
                "api_tokens.yml on first start, so clients only get in with a key read from the host — set "
                "auth: {file: …} or {vault: …} so rigctl manages the key",
                path, tag="generated-key", severity=Severity.warning)
        elif dep.auth is None:
            yield endpoint_auth.finding(
                f"{dep.name}: {stack_name(dep.stack)} {where}{why} with no API key: anyone who reaches it can use the "
                "model (rigctl's firewall admits only the rig subnet to a port without a key) — add auth: "
                "{env: NAME} (or file/vault), or bind to 127.0.0.1",
                path, tag="no-auth")
        elif dep.stack == Stack.vllm:
            yield endpoint_auth.finding(
                # vllm/entrypoints/openai/api_server.py: the key middleware passes every path not under
                # /v1; these routes are registered by default (/pause, /update_weights are not)
                f"{dep.name}: vLLM's --api-key protects only /v1/*; {VLLM_OPEN_ROUTES} stay open while "
                f"{where} — put a reverse proxy that allows only /v1 in front, or bind to 127.0.0.1",
                path, tag="vllm-partial", severity=Severity.warning)


# ---------------------------------------------------------------- cluster-port-exposure

_CLUSTER_PORTS = {
    Stack.llamacpp_rpc: "rpc-server 50052/tcp (no auth, no TLS: 'never run the RPC server on an open network')",
    Stack.vllm: ("Ray 6379-6385/tcp, 8265/tcp, 10001/tcp and workers 10002-19999/tcp, and torch.distributed/NCCL "
                 "(insecure by default, can execute arbitrary code)"),
    Stack.exo: "exo 52414/tcp libp2p and 52415/tcp API (bound to 0.0.0.0, no auth)",
    Stack.petals: "Petals 31330/tcp server and 31337/tcp DHT (libp2p on 0.0.0.0, no auth)",
}


def _has_cluster_ports(ctx: Context, dep: Deployment) -> bool:
    if dep.stack in (Stack.exo, Stack.petals):
        return True
    return dep.stack in (Stack.llamacpp_rpc, Stack.vllm) and len(ctx.deployment_nodes(dep)) > 1


def _ip(text: str | None):
    if not text:
        return None
    try:
        return ipaddress.ip_address(text.strip().split("/")[0])
    except ValueError:
        return None


@rule("cluster-port-exposure", "error", "cluster ports (RPC, Ray, exo, Petals) stay inside a private rig subnet",
      tags=("security", "network"))
def cluster_port_exposure(ctx: Context):
    fabric = ctx.rig.fabric
    clustered = [(i, dep) for i, dep in enumerate(ctx.rig.serve) if _has_cluster_ports(ctx, dep)]
    if not clustered:
        return
    if fabric is None:
        for i, dep in clustered:
            if len(ctx.deployment_nodes(dep)) > 1 or is_loopback(dep.bind):
                continue  # multi-node without fabric: fabric-required reports it
            yield cluster_port_exposure.finding(
                f"{dep.name} opens {_CLUSTER_PORTS[dep.stack]} and binds {dep.bind}, but the rig has no fabric "
                "subnet to restrict them to — add fabric.subnet (your LAN, e.g. 192.168.1.0/24), or bind to 127.0.0.1",
                ("serve", i, "bind"), tag="no-subnet")
        return

    net = ipaddress.ip_network(fabric.subnet, strict=False)
    ports = "; ".join(sorted({_CLUSTER_PORTS[dep.stack] for _, dep in clustered}))
    if net.prefixlen == 0 or net.is_global:
        yield cluster_port_exposure.finding(
            f"fabric subnet {fabric.subnet} is a public range, and rigctl opens {ports} to it — use a private "
            "subnet (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16) or a VPN overlay such as WireGuard/Tailscale",
            ("fabric", "subnet"), tag="public-subnet")
        return

    for i, dep in clustered:
        if dep.stack == Stack.vllm:
            yield cluster_port_exposure.finding(
                f"{dep.name}: rigctl pins Ray's listeners and admits only {fabric.subnet} to them, but NCCL, gloo and "
                "torch.distributed listen on ephemeral ports (net.ipv4.ip_local_port_range, 32768-60999 by default) "
                "that no setting pins, so rigctl's firewall leaves them to the host's own policy (a filter on that "
                "range would also drop the replies to the host's outgoing connections) — keep the nodes' other "
                "interfaces behind a firewall or on a network only the rig reaches",
                ("serve", i, "placement"), tag="unfiltered", severity=Severity.info)

    reported: set[int] = set()
    for _, dep in clustered:
        for node in ctx.deployment_nodes(dep):
            ni = ctx.node_index(node.name)
            if ni in reported:
                continue
            nic_ips = [(k, _ip(nic.address)) for k, nic in enumerate(node.nics) if _ip(nic.address)]
            if any(ip in net for _, ip in nic_ips):
                continue
            conn = _ip(node.connection.address) if node.connection else None
            if not nic_ips and (conn is None or conn in net):
                continue  # DNS name or an address on the fabric: nothing to compare
            reported.add(ni)
            if nic_ips:
                k, ip = nic_ips[0]
                where, path = f"NIC {node.nics[k].name} address {ip}", ("nodes", ni, "nics", k, "address")
            else:
                where, path = f"connection address {conn}", ("nodes", ni, "connection", "address")
            yield cluster_port_exposure.finding(
                f"node {node.name}'s {where} is outside the fabric subnet {fabric.subnet}: {dep.name}'s cluster "
                "traffic would use another network, or the firewall rules for the subnet would block it — give the "
                "node a NIC address in the subnet (nics[].address), or correct fabric.subnet",
                path, tag="outside-subnet", severity=Severity.warning)


# ---------------------------------------------------------------- inline-secret

_KEY_FLAGS = ("--api-key", "--admin-key", "--hf-token", "--token", "--hf_token", "--api_key")
_TOKEN_PATTERNS = (
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), "an OpenAI-style key (sk-…)"),
    (re.compile(r"\bhf_[A-Za-z0-9]{20,}"), "a Hugging Face token (hf_…)"),
)
# NAME=value where NAME ends like a secret (HF_TOKEN, VLLM_API_KEY); not TOKENIZERS_PARALLELISM or MAX_TOKENS=512
_ENV_SECRET = re.compile(r"^([A-Z0-9_]*(?:TOKEN|API_KEY|APIKEY|SECRET|PASSWORD))=(.+)$")


def _mask(value: str) -> str:
    return f"'{value[:4]}…' ({len(value)} characters)"


def _is_reference(value: str) -> bool:
    return value.startswith("$") or value.startswith("{{")


def _secrets(args: list[str]):
    """(index, what, value) for each literal secret in an argument list."""
    for k, arg in enumerate(args):
        flag, _, inline = arg.partition("=")
        if flag in _KEY_FLAGS:
            value = inline if inline else (args[k + 1] if k + 1 < len(args) else "")
            at = k if inline else k + 1
            if value and not value.startswith("-") and not _is_reference(value):
                yield at, f"a literal value for {flag}", value
                continue
        m = _ENV_SECRET.match(arg)
        if m and not _is_reference(m.group(2)) and not m.group(2).replace(".", "").isdigit():
            yield k, f"a literal {m.group(1)}", m.group(2)
            continue
        for pattern, what in _TOKEN_PATTERNS:
            found = pattern.search(arg)
            if found:
                yield k, what, found.group(0)
                break


@rule("inline-secret", "error", "no API keys or tokens written into extra_args", tags=("security",))
def inline_secret(ctx: Context):
    for i, dep in enumerate(ctx.rig.serve):
        seen: set[int] = set()
        for k, what, value in _secrets(dep.extra_args):
            if k in seen:
                continue
            seen.add(k)
            is_key = "key" in what.lower()
            hf = "hugging face" in what.lower() or "hf" in what.lower()
            fix = ("use auth: {env: NAME}, {file: PATH} or {vault: VAR} so rigctl passes the key itself" if is_key
                   else "reference it as source: {token: {env: NAME}} (or file/vault): rigctl hands it to the "
                        "download and the engine as HF_TOKEN" if hf
                   else "keep it out of the spec: set it in the host's environment or an ansible-vault variable")
            yield inline_secret.finding(
                f"{dep.name}: extra_args[{k}] holds {what} {_mask(value)}; extra_args land verbatim in compose "
                f"files, process lists and logs — remove it and {fix}",
                ("serve", i, "extra_args", k), tag="api-key" if is_key else "token")
