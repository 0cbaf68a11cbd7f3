"""GPU facts for rigctl: collect them through NVML, compare them with a spec.

The implementation lives in ``core.py`` (standalone, also shipped to remote
hosts as the Ansible module_util ``rigctl_probe``). This package adds
``spec_fragment``, which turns collected facts into a YAML fragment that a
user can paste under a node of a rig spec.
"""

import json
import re

from .core import ProbeUnavailable, collect, compare

__all__ = ["collect", "compare", "ProbeUnavailable", "spec_fragment"]

_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._/+()-]*$")


def _scalar(value):
    """A YAML scalar: plain when safe, else a JSON (= YAML) quoted string."""
    text = str(value)
    if (_PLAIN.match(text) and not text.endswith(" ")
            and text.lower() not in ("yes", "no", "on", "off", "true", "false", "null", "~")):
        try:
            float(text)
        except ValueError:
            return text
    return json.dumps(text)


def _w(value):
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _pcie_text(pcie):
    if not pcie:
        return "PCIe unknown"
    def part(gen, width):
        return "Gen%s x%s" % ("?" if gen is None else gen, "?" if width is None else width)
    return "PCIe %s (max %s)" % (part(pcie.get("gen_current"), pcie.get("width_current")),
                                 part(pcie.get("gen_max"), pcie.get("width_max")))


def spec_fragment(facts, catalog_lookup=None, indent=0):
    """YAML text for a node's ``gpus:`` list, built from ``collect()`` facts.

    ``catalog_lookup(nvml_name)`` may return a catalog id (e.g. "h200-141gb");
    when it returns None, or is not given, the NVML name is used as the model.
    ``power_limit_w`` is written only when the current limit differs from the
    card's default. UUID, bus id, memory and PCIe go in comments.
    """
    pad = " " * indent
    lines = []
    head = "# rigctl probe of %s" % facts.get("hostname", "?")
    bits = []
    if facts.get("driver_version"):
        bits.append("driver %s" % facts["driver_version"])
    if facts.get("cuda_driver_version"):
        bits.append("CUDA %s" % facts["cuda_driver_version"])
    if facts.get("collected_at"):
        bits.append("at %s" % facts["collected_at"])
    if bits:
        head += ": " + ", ".join(bits)
    lines.append(pad + head)
    lines.append(pad + "gpus:")
    for gpu in facts.get("gpus") or []:
        name = gpu.get("name") or "unknown"
        model = None
        if catalog_lookup is not None:
            try:
                model = catalog_lookup(name)
            except Exception:
                model = None
        item = pad + "  "
        lines.append(item + "- id: gpu%d" % gpu.get("index", 0))
        if model:
            lines.append(item + "  model: %s  # NVML name: %s" % (_scalar(model), name))
        else:
            lines.append(item + "  model: %s  # not in the catalog: NVML name as reported"
                         % _scalar(name))
        mib = gpu.get("memory_total_mib")
        mem = "%d MiB" % mib if mib is not None else "memory unknown"
        lines.append(item + "  # uuid %s, bus %s" % (gpu.get("uuid") or "?", gpu.get("pci_bus_id") or "?"))
        lines.append(item + "  # %s, %s, compute capability %s"
                     % (mem, _pcie_text(gpu.get("pcie")), gpu.get("compute_capability") or "?"))
        power = gpu.get("power") or {}
        limit, default = power.get("limit_w"), power.get("default_limit_w")
        if limit is not None and default is not None and abs(limit - default) > 0.5:
            lines.append(item + "  power_limit_w: %s  # card default %s W" % (_w(limit), _w(default)))
        active = [l for l in gpu.get("nvlink") or [] if l.get("active")]
        if active:
            lines.append(item + "  # NVLink: %d active link(s)" % len(active))
    linked = [[p["a"], p["b"]] for p in facts.get("p2p") or [] if p.get("nvlink")]
    if linked:
        lines.append(pad + "# NVLink pairs seen by NVML: %s" % json.dumps(linked))
    return "\n".join(lines) + "\n"
