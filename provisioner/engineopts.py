"""Engine options that change memory and speed: from the spec's fields, else from extra_args.

A deployment may set an option as a field (validated, planned, rendered) or pass the
engine's own flag in `extra_args`. Sizing, speed and the planner read the option from
here, so a flag in extra_args is planned as the engine will run it; when both are given
and disagree, `conflicts` names the pair (rule `extra-args-conflict[field]`).

llama.cpp flags, from common/arg.cpp of the pinned build
(https://github.com/ggml-org/llama.cpp/blob/0c1e57098/common/arg.cpp, mirrored in
provisioner/contracts/llamacpp.yaml): `-sm, --split-mode {none,layer,row}`,
`-kvo, --kv-offload` / `-nkvo, --no-kv-offload`, `--swa-full`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .spec.models import Deployment, Stack

LLAMA_STACKS = (Stack.llamacpp, Stack.llamacpp_rpc)
# flag -> (option, value); None: the value is the flag's argument
_FLAGS = {
    "-sm": ("split_mode", None), "--split-mode": ("split_mode", None),
    "-kvo": ("kv_offload", True), "--kv-offload": ("kv_offload", True),
    "-nkvo": ("kv_offload", False), "--no-kv-offload": ("kv_offload", False),
    "--swa-full": ("swa_full", True),
}
DEFAULTS = {"split_mode": "layer", "kv_offload": True, "swa_full": False}


@dataclass(frozen=True)
class Conflict:
    index: int  # extra_args position of the flag
    arg: str
    option: str  # spec field
    field_value: object
    arg_value: object


@dataclass
class EngineOptions:
    split_mode: str = "layer"
    kv_offload: bool = True
    swa_full: bool = False
    from_args: dict[str, int] = field(default_factory=dict)  # option -> extra_args index that set it
    conflicts: list[Conflict] = field(default_factory=list)


def parse_args(args: list[str]) -> list[tuple[int, str, str, object]]:
    """(index, flag as written, option, value) of each known flag in an argument list."""
    out = []
    i = 0
    while i < len(args):
        start, arg = i, args[i]
        name, eq, val = arg.partition("=")
        hit = _FLAGS.get(name)
        if hit is not None:
            option, value = hit
            if value is None:
                if eq:
                    value = val
                elif i + 1 < len(args):
                    value = args[i + 1]
                    i += 1
                else:
                    value = ""
            out.append((start, arg, option, value))
        i += 1
    return out


def options(dep: Deployment) -> EngineOptions:
    """The options llama.cpp will run with: the field when given, else extra_args, else its default."""
    opts = EngineOptions()
    if dep.stack not in LLAMA_STACKS:
        return opts
    given = {"split_mode": dep.split_mode, "kv_offload": dep.kv_offload, "swa_full": None}
    for index, arg, option, value in parse_args(list(dep.extra_args)):
        if option == "split_mode" and value not in ("layer", "row", "none"):
            continue  # llama.cpp refuses it at start; the engine contract reports it
        if given[option] is not None and given[option] != value:
            opts.conflicts.append(Conflict(index, arg, option, given[option], value))
            continue
        setattr(opts, option, value)
        opts.from_args[option] = index
    for option, value in given.items():
        if value is not None:
            setattr(opts, option, value)
            opts.from_args.pop(option, None)
    return opts


def kv_types(dep: Deployment) -> tuple[str, str]:
    """(K, V) cache element types: the per-tensor fields over kv_cache_type ('auto' is f16)."""
    base = "f16" if dep.kv_cache_type == "auto" else dep.kv_cache_type
    return dep.kv_cache_type_k or base, dep.kv_cache_type_v or base
