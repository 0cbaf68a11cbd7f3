"""Who can reach an endpoint: the one reading of `bind` that the security rules and the plan share.

The rules decide whether an endpoint needs a key from the same answer the plan uses to
write the firewall scope, so the two cannot disagree about an address (an address the
rule took for loopback was once opened to any source by the firewall).
"""

from __future__ import annotations

from .spec.models import Deployment, Stack

# Only these spellings: the firewall's loopback scope drops everything not arriving on `lo`,
# so an address counts as loopback only where every engine binds it to lo. 127.0.0.2 would
# work on Linux but not on macOS; "[::1]" (brackets) and " 127.0.0.1" are not addresses an
# engine resolves; a unix socket has no port for the firewall to filter.
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
WILDCARD = frozenset({"0.0.0.0", "::"})

# Stacks whose HTTP API checks a key rigctl hands it (llama.cpp --api-key-file, vLLM
# VLLM_API_KEY, TabbyAPI api_tokens.yml, which TabbyAPI also generates when auth is unset).
# Ollama, exo and Petals have no key support at all.
KEYED_STACKS = frozenset({Stack.llamacpp, Stack.llamacpp_rpc, Stack.vllm, Stack.tabbyapi})
# exo has no option for the API's listen address (src/exo/main.py `Args`: --api-port only):
# it always listens on every interface, so only the firewall can honour `bind`.
ALWAYS_WILDCARD = frozenset({Stack.exo})


def is_loopback(bind: str) -> bool:
    """True only for exactly 127.0.0.1, ::1 or localhost."""
    return bind in LOOPBACK


def is_wildcard(bind: str) -> bool:
    return bind in WILDCARD


def checks_keys(dep: Deployment) -> bool:
    """The endpoint refuses requests without a key (TabbyAPI always: it generates one)."""
    return dep.stack in KEYED_STACKS and (dep.auth is not None or dep.stack == Stack.tabbyapi)


def endpoint_scope(dep: Deployment) -> str:
    """Firewall scope of the deployment's HTTP port: loopback | subnet | any.

    loopback: the spec binds loopback (for exo, which listens everywhere, the firewall is
    what keeps it there). any: the endpoint checks keys. subnet: no key, so the firewall
    admits only the rig subnet (nothing, when the rig has none), whatever endpoint-auth says.
    """
    if is_loopback(dep.bind):
        return "loopback"
    return "any" if checks_keys(dep) else "subnet"


def listen_address(dep: Deployment) -> str:
    """The address the process really listens on."""
    return "0.0.0.0" if dep.stack in ALWAYS_WILDCARD else dep.bind


def host_port(host: str, port: int) -> str:
    """host:port with an IPv6 literal in brackets (Ollama's OLLAMA_HOST)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
