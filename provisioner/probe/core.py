# -*- coding: utf-8 -*-
"""GPU facts through NVML: the one probe implementation of rigctl.

This file is used three ways, so it must stay standalone (standard library
plus ``pynvml`` from ``nvidia-ml-py``, imported lazily; nothing from the
``provisioner`` package):

* ``rigctl probe`` imports it as ``provisioner.probe.core``;
* the Ansible role ``gpu_checks`` ships it to remote hosts as the module_util
  ``ansible.module_utils.rigctl_probe`` (a symlink to this file);
* ``rigctl verify`` compares recorded facts with a rig spec via ``compare``.

``collect()`` returns a JSON-serialisable dict. Every NVML query that a GPU,
driver or virtualisation layer may refuse is wrapped on its own, so one
unsupported query never kills the probe: the failure is written to the
``errors`` list and the field is left out or set to None. When there is no
NVML library, no driver, no pynvml or no GPU at all, ``collect()`` raises
``ProbeUnavailable`` with a one-line reason.

``compare(facts, expected)`` checks facts against expectations taken from a
rig spec and returns a list of problem dicts with readable messages.
"""

from __future__ import absolute_import, division, print_function

import datetime
import re
import shutil
import socket
import subprocess

SCHEMA_VERSION = 1

# NVML enums, written out here: some nvidia-ml-py releases define
# NVML_P2P_CAPS_INDEX_READ as the tuple ``(0,)`` (a stray trailing comma),
# and the link count constant grew from 18 to 36 between releases.
_P2P_CAPS = (("read", 0), ("write", 1), ("nvlink", 2), ("atomics", 3))
_P2P_STATUS = {
    0: "ok",
    1: "chipset_not_supported",
    2: "gpu_not_supported",
    3: "ioh_topology_not_supported",
    4: "disabled_by_regkey",
    5: "not_supported",
    6: "unknown",
}
# nvmlDeviceGetTopologyCommonAncestor -> the `nvidia-smi topo -m` legend.
_TOPOLOGY = {
    0: "internal",    # same board (multi-GPU board)
    10: "PIX",        # at most one PCIe bridge
    20: "PXB",        # several PCIe bridges, no host bridge
    30: "PHB",        # through a PCIe host bridge
    40: "NODE",       # host bridges within one NUMA node
    50: "SYS",        # across NUMA nodes (QPI/UPI/SMP interconnect)
}
_ERR_INVALID_ARGUMENT = 2
_ERR_NOT_SUPPORTED = 3
_ERR_DRIVER_NOT_LOADED = 9
_ERR_LIBRARY_NOT_FOUND = 12
_ERR_FUNCTION_NOT_FOUND = 13
_ERR_LIB_RM_VERSION_MISMATCH = 18
_MAX_LINKS_FALLBACK = 18


class ProbeUnavailable(Exception):
    """No NVML, no driver, no pynvml or no GPU on this host.

    ``reason`` is one line, meant to be shown to a user as is.
    """

    def __init__(self, reason):
        reason = " ".join(str(reason).split())
        super(ProbeUnavailable, self).__init__(reason)
        self.reason = reason


def _s(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").rstrip("\x00")
    return value


def _watts(milliwatts):
    if milliwatts is None:
        return None
    if milliwatts % 1000 == 0:
        return milliwatts // 1000
    return round(milliwatts / 1000.0, 1)


def _short_bus_id(bus_id):
    """'00000000:18:00.0' -> '0000:18:00.0' (the form lspci and sysfs use)."""
    if not bus_id:
        return bus_id
    bus_id = bus_id.lower()
    m = re.match(r"^([0-9a-f]+):([0-9a-f]{2}:[0-9a-f]{2}\.[0-7])$", bus_id)
    if not m:
        return bus_id
    return "%04x:%s" % (int(m.group(1), 16) & 0xFFFF, m.group(2))


def _load_nvml():
    try:
        import pynvml  # noqa: F401  (package nvidia-ml-py)
    except ImportError:
        raise ProbeUnavailable(
            "pynvml (nvidia-ml-py) is not installed for this Python: "
            "install it with `pip install nvidia-ml-py`")
    return pynvml


def _init(N):
    try:
        N.nvmlInit()
    except N.NVMLError as exc:
        code = getattr(exc, "value", None)
        if code == _ERR_LIBRARY_NOT_FOUND:
            raise ProbeUnavailable(
                "NVML library not found (libnvidia-ml.so.1): "
                "no NVIDIA driver installed on this host")
        if code == _ERR_DRIVER_NOT_LOADED:
            raise ProbeUnavailable(
                "NVIDIA driver is installed but not loaded (NVML: driver not "
                "loaded): reboot, or check `lsmod | grep nvidia` and dmesg")
        if code == _ERR_LIB_RM_VERSION_MISMATCH:
            raise ProbeUnavailable(
                "NVIDIA driver/library version mismatch (NVML): the driver "
                "was upgraded without a reboot; reboot the host")
        raise ProbeUnavailable("NVML initialisation failed: %s" % (exc,))
    except OSError as exc:  # a broken libnvidia-ml.so
        raise ProbeUnavailable("NVML library could not be loaded: %s" % (exc,))


class _Recorder(object):
    """Runs NVML calls, turning failures into entries of ``errors``."""

    def __init__(self, N):
        self.N = N
        self.errors = []

    def call(self, where, fn, *args, **kwargs):
        try:
            return getattr(self.N, fn)(*args, **kwargs)
        except self.N.NVMLError as exc:
            self.errors.append("%s: %s: %s" % (where, fn, _s(str(exc))))
        except AttributeError:
            self.errors.append(
                "%s: %s: not in this nvidia-ml-py release" % (where, fn))
        except Exception as exc:  # ctypes trouble with an odd driver
            self.errors.append("%s: %s: %s: %s" % (
                where, fn, type(exc).__name__, exc))
        return None


def _nvlinks(rec, handle, where):
    """Links that exist on this GPU; [] and a flag when it has no NVLink."""
    N = rec.N
    links = []
    max_links = getattr(N, "NVML_NVLINK_MAX_LINKS", _MAX_LINKS_FALLBACK)
    if not isinstance(max_links, int):
        max_links = _MAX_LINKS_FALLBACK
    supported = True
    for link in range(max_links):
        try:
            state = N.nvmlDeviceGetNvLinkState(handle, link)
        except N.NVMLError as exc:
            code = getattr(exc, "value", None)
            if code == _ERR_NOT_SUPPORTED:
                if link == 0:
                    supported = False
                break
            if code == _ERR_INVALID_ARGUMENT:
                break  # past the last link of this device
            rec.errors.append("%s: nvmlDeviceGetNvLinkState(link %d): %s"
                              % (where, link, _s(str(exc))))
            continue
        except Exception as exc:
            rec.errors.append("%s: nvmlDeviceGetNvLinkState(link %d): %s"
                              % (where, link, exc))
            break
        entry = {"link": link, "active": state == 1,
                 "version": None, "remote_pci_bus_id": None}
        version = rec.call("%s link %d" % (where, link),
                           "nvmlDeviceGetNvLinkVersion", handle, link)
        if version is not None:
            entry["version"] = int(version)
        if entry["active"]:
            remote = rec.call("%s link %d" % (where, link),
                              "nvmlDeviceGetNvLinkRemotePciInfo", handle, link)
            if remote is not None:
                entry["remote_pci_bus_id"] = _s(remote.busId) or None
        links.append(entry)
    return supported, links


def _gpu(rec, index):
    N = rec.N
    where = "gpu%d" % index
    handle = rec.call(where, "nvmlDeviceGetHandleByIndex", index)
    gpu = {"index": index}
    if handle is None:
        return gpu, None
    gpu["name"] = _s(rec.call(where, "nvmlDeviceGetName", handle))
    gpu["uuid"] = _s(rec.call(where, "nvmlDeviceGetUUID", handle))
    pci = rec.call(where, "nvmlDeviceGetPciInfo", handle)
    gpu["pci_bus_id"] = _s(pci.busId) if pci is not None else None
    if pci is not None:
        gpu["pci_device_id"] = "0x%08x" % pci.pciDeviceId
        gpu["pci_subsystem_id"] = "0x%08x" % pci.pciSubSystemId

    mem = rec.call(where, "nvmlDeviceGetMemoryInfo", handle)
    if mem is not None:
        gpu["memory_total_mib"] = int(mem.total // (1024 * 1024))
        gpu["memory_free_mib"] = int(mem.free // (1024 * 1024))
    else:
        gpu["memory_total_mib"] = None

    gpu["pcie"] = {
        "gen_current": rec.call(where, "nvmlDeviceGetCurrPcieLinkGeneration", handle),
        "gen_max": rec.call(where, "nvmlDeviceGetMaxPcieLinkGeneration", handle),
        "width_current": rec.call(where, "nvmlDeviceGetCurrPcieLinkWidth", handle),
        "width_max": rec.call(where, "nvmlDeviceGetMaxPcieLinkWidth", handle),
    }
    gpu_gen_max = rec.call(where, "nvmlDeviceGetGpuMaxPcieLinkGeneration", handle)
    if gpu_gen_max is not None:
        gpu["pcie"]["gpu_gen_max"] = gpu_gen_max

    constraints = rec.call(where, "nvmlDeviceGetPowerManagementLimitConstraints", handle)
    gpu["power"] = {
        "limit_w": _watts(rec.call(where, "nvmlDeviceGetPowerManagementLimit", handle)),
        "default_limit_w": _watts(rec.call(where, "nvmlDeviceGetPowerManagementDefaultLimit", handle)),
        "min_limit_w": _watts(constraints[0]) if constraints else None,
        "max_limit_w": _watts(constraints[1]) if constraints else None,
        "enforced_limit_w": _watts(rec.call(where, "nvmlDeviceGetEnforcedPowerLimit", handle)),
    }

    cc = rec.call(where, "nvmlDeviceGetCudaComputeCapability", handle)
    gpu["compute_capability"] = "%d.%d" % tuple(cc) if cc else None
    pm = rec.call(where, "nvmlDeviceGetPersistenceMode", handle)
    gpu["persistence_mode"] = None if pm is None else bool(pm)
    da = rec.call(where, "nvmlDeviceGetDisplayActive", handle)
    if da is not None:
        gpu["display_active"] = bool(da)
    numa = _quiet(N, "nvmlDeviceGetNumaNodeId", handle)
    if numa is not None:
        gpu["numa_node"] = numa
    vbios = _quiet(N, "nvmlDeviceGetVbiosVersion", handle)
    if vbios is not None:
        gpu["vbios_version"] = _s(vbios)
    mig = _quiet(N, "nvmlDeviceGetMigMode", handle)
    if mig is not None:
        gpu["mig_mode_current"] = bool(mig[0])
    ecc = _quiet(N, "nvmlDeviceGetEccMode", handle)
    if ecc is not None:
        gpu["ecc_mode_current"] = bool(ecc[0])

    supported, links = _nvlinks(rec, handle, where)
    gpu["nvlink_supported"] = supported
    gpu["nvlink"] = links
    return gpu, handle


def _quiet(N, fn, *args):
    """For extras not in the schema: a refusal is not worth an error line."""
    try:
        return getattr(N, fn)(*args)
    except Exception:
        return None


def _pairs(rec, gpus, handles):
    pairs = []
    for a in range(len(handles)):
        for b in range(a + 1, len(handles)):
            ha, hb = handles[a], handles[b]
            if ha is None or hb is None:
                continue
            where = "gpu%d-gpu%d" % (a, b)
            pair = {"a": gpus[a]["index"], "b": gpus[b]["index"]}
            for cap_name, cap in _P2P_CAPS:
                status = rec.call(where, "nvmlDeviceGetP2PStatus", ha, hb, cap)
                pair[cap_name if cap_name != "nvlink" else "nvlink_status"] = (
                    None if status is None else _P2P_STATUS.get(status, "status_%s" % status))
            pair["nvlink"] = pair.get("nvlink_status") == "ok"
            topo = rec.call(where, "nvmlDeviceGetTopologyCommonAncestor", ha, hb)
            pair["topology"] = None if topo is None else _TOPOLOGY.get(topo, str(topo))
            pairs.append(pair)
    return pairs


def _run(cmd, timeout=10):
    """Output of a command, or None if it is missing or fails. Never raises."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.decode("utf-8", "replace")


def _parse_vmm(text):
    """`lspci -vmm` records: blank-line separated `Key:\tvalue` lines."""
    records, cur = [], {}
    for line in text.splitlines():
        if not line.strip():
            if cur:
                records.append(cur)
            cur = {}
            continue
        if ":" in line:
            key, _, value = line.partition(":")
            cur[key.strip()] = value.strip()
    if cur:
        records.append(cur)
    return records


def _parse_dmidecode_slots(text):
    slots, cur = [], None
    for line in text.splitlines():
        if line.startswith("System Slot Information"):
            cur = {}
            slots.append(cur)
            continue
        if cur is None or not line.startswith("\t") or line.startswith("\t\t"):
            continue
        key, _, value = line.strip().partition(":")
        key = key.strip().lower().replace(" ", "_")
        if key in ("designation", "type", "current_usage", "length",
                   "id", "bus_address", "data_bus_width"):
            cur[key] = value.strip()
    return slots


def _slot_info(gpus, errors):
    """Best effort: lspci / dmidecode slot data. Missing tools are fine."""
    info = {}
    lspci_seen = False
    for gpu in gpus:
        bus = _short_bus_id(gpu.get("pci_bus_id"))
        if not bus:
            continue
        out = _run(["lspci", "-vmm", "-D", "-s", bus])
        if out is None:
            continue
        lspci_seen = True
        recs = _parse_vmm(out)
        if recs:
            keep = {}
            for key in ("Slot", "Class", "Vendor", "Device", "SVendor",
                        "SDevice", "PhySlot", "Rev", "NUMANode"):
                if key in recs[0]:
                    keep[key.lower()] = recs[0][key]
            gpu["lspci"] = keep
    if lspci_seen:
        info["lspci"] = True
    out = _run(["dmidecode", "-t", "slot"])
    if out is not None:
        slots = _parse_dmidecode_slots(out)
        info["dmidecode_slots"] = slots
        by_bus = dict((s.get("bus_address", "").lower(), s) for s in slots)
        for gpu in gpus:
            slot = by_bus.get(_short_bus_id(gpu.get("pci_bus_id")) or "")
            if slot is not None:
                gpu["slot"] = slot.get("designation")
    return info


def collect(include_slots=True):
    """Collect GPU facts on this host. Raises ProbeUnavailable."""
    N = _load_nvml()
    _init(N)
    try:
        rec = _Recorder(N)
        try:
            count = N.nvmlDeviceGetCount()
        except N.NVMLError as exc:
            raise ProbeUnavailable(
                "NVIDIA driver loaded but NVML could not count GPUs: %s" % (exc,))
        if count == 0:
            raise ProbeUnavailable("NVIDIA driver loaded but no GPU found")

        facts = {
            "schema_version": SCHEMA_VERSION,
            "hostname": socket.gethostname(),
            "collected_at": datetime.datetime.now(datetime.timezone.utc)
            .replace(microsecond=0).isoformat().replace("+00:00", "Z"),
            "driver_version": _s(rec.call("system", "nvmlSystemGetDriverVersion")),
            "cuda_driver_version": None,
            "nvml_version": _s(rec.call("system", "nvmlSystemGetNVMLVersion")),
            "gpu_count": count,
        }
        cuda = rec.call("system", "nvmlSystemGetCudaDriverVersion")
        if cuda:
            facts["cuda_driver_version"] = "%d.%d" % (cuda // 1000, (cuda % 1000) // 10)
        try:
            facts["pynvml_version"] = _pynvml_version()
        except Exception:
            pass

        gpus, handles = [], []
        for index in range(count):
            gpu, handle = _gpu(rec, index)
            gpus.append(gpu)
            handles.append(handle)
        facts["gpus"] = gpus
        facts["p2p"] = _pairs(rec, gpus, handles)
        if include_slots:
            try:
                facts["pci_slots"] = _slot_info(gpus, rec.errors)
            except Exception as exc:  # never fatal
                rec.errors.append("pci slot info: %s: %s" % (type(exc).__name__, exc))
        facts["errors"] = rec.errors
        return facts
    finally:
        try:
            N.nvmlShutdown()
        except Exception:
            pass


def _pynvml_version():
    try:
        from importlib import metadata
    except ImportError:  # Python < 3.8
        return None
    try:
        return metadata.version("nvidia-ml-py")
    except Exception:
        return None


# ----------------------------------------------------------------- compare


def _num(value):
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _fmt(value):
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _problem(check, gpu, expected, actual, message):
    return {"check": check, "gpu": gpu, "expected": expected,
            "actual": actual, "message": message}


def _nvlink_between(facts, i, j):
    """True/False if known, None if the facts cannot tell."""
    for pair in facts.get("p2p") or []:
        if set((pair.get("a"), pair.get("b"))) == set((i, j)):
            if pair.get("nvlink"):
                return True
            break
    gpus = facts.get("gpus") or []
    if i >= len(gpus) or j >= len(gpus):
        return None
    target = _short_bus_id(gpus[j].get("pci_bus_id"))
    for link in gpus[i].get("nvlink") or []:
        if link.get("active") and _short_bus_id(link.get("remote_pci_bus_id")) == target:
            return True
    return False


def compare(facts, expected):
    """Check ``facts`` (from collect) against ``expected``; return problems.

    ``expected`` keys, all optional::

        gpu_count: 2
        gpus:                         # by NVML index
          - name_contains: "H200"     # or a list; case-insensitive substring
            nvml_names: ["NVIDIA H200"]   # exact names, any of them
            memory_gib_min: 140
            pcie_width_min: 16        # judged on the current width
            pcie_gen_min: 5           # judged on the max gen (idle drops current)
            power_limit_w: 600        # +-1 W
        nvlink_pairs: [[0, 1]]

    Each problem is ``{check, gpu, expected, actual, message}``.
    """
    problems = []
    expected = expected or {}
    gpus = facts.get("gpus") or []
    exp_gpus = expected.get("gpus") or []

    want_count = expected.get("gpu_count")
    if want_count is None and exp_gpus:
        want_count = len(exp_gpus)
    if want_count is not None and _num(want_count) is not None:
        want_count = int(_num(want_count))
        if len(gpus) != want_count:
            names = ", ".join(str(g.get("name")) for g in gpus) or "none"
            hint = ("a GPU may be unseated, unpowered or lost from the bus; "
                    "check `nvidia-smi`, `lspci | grep -i nvidia` and dmesg"
                    if len(gpus) < want_count else
                    "update the rig spec or check CUDA_VISIBLE_DEVICES")
            problems.append(_problem(
                "gpu_count", None, want_count, len(gpus),
                "host has %d GPU(s) (%s), spec expects %d (%s)"
                % (len(gpus), names, want_count, hint)))

    for i, want in enumerate(exp_gpus):
        if i >= len(gpus) or not want:
            continue
        gpu = gpus[i]
        index = gpu.get("index", i)
        name = gpu.get("name") or ""
        problems.extend(_check_name(index, name, want))
        problems.extend(_check_memory(index, gpu, want))
        problems.extend(_check_pcie(index, gpu, want))
        problems.extend(_check_power(index, gpu, want))

    for pair in expected.get("nvlink_pairs") or []:
        try:
            i, j = int(pair[0]), int(pair[1])
        except (TypeError, ValueError, IndexError):
            problems.append(_problem("nvlink", None, pair, None,
                                     "nvlink_pairs entry %r is not a pair of GPU indexes" % (pair,)))
            continue
        if i >= len(gpus) or j >= len(gpus):
            problems.append(_problem(
                "nvlink", [i, j], True, None,
                "spec expects NVLink between GPU %d and GPU %d, but the host has only %d GPU(s)"
                % (i, j, len(gpus))))
            continue
        linked = _nvlink_between(facts, i, j) or _nvlink_between(facts, j, i)
        if not linked:
            if not gpus[i].get("nvlink_supported", True):
                why = "GPU %d reports no NVLink support at all" % i
            else:
                why = "no active NVLink joins them"
            problems.append(_problem(
                "nvlink", [i, j], True, False,
                "spec expects NVLink between GPU %d and GPU %d, but %s "
                "(check the bridge, `nvidia-smi nvlink -s`, and Fabric Manager on NVSwitch systems)"
                % (i, j, why)))
    return problems


def _check_name(index, name, want):
    out = []
    contains = want.get("name_contains")
    if contains:
        subs = [contains] if isinstance(contains, str) else list(contains)
        if not any(str(s).lower() in name.lower() for s in subs):
            out.append(_problem(
                "model", index, contains, name,
                "GPU %d is %r, spec expects a name containing %s (wrong card in this slot, "
                "or GPUs enumerated in another order)"
                % (index, name, " or ".join(repr(str(s)) for s in subs))))
    exact = want.get("nvml_names")
    if exact:
        names = [exact] if isinstance(exact, str) else list(exact)
        if name.lower() not in [str(n).lower() for n in names]:
            out.append(_problem(
                "model", index, names, name,
                "GPU %d is %r, spec expects one of %s"
                % (index, name, ", ".join(repr(str(n)) for n in names))))
    return out


def _check_memory(index, gpu, want):
    floor = _num(want.get("memory_gib_min"))
    if floor is None:
        return []
    mib = gpu.get("memory_total_mib")
    if mib is None:
        return [_problem("memory", index, floor, None,
                         "GPU %d memory size could not be read, spec expects at least %s GiB"
                         % (index, _fmt(floor)))]
    gib = mib / 1024.0
    if gib + 1e-9 < floor:
        return [_problem(
            "memory", index, floor, round(gib, 1),
            "GPU %d has %.1f GiB of memory, spec expects at least %s GiB "
            "(a smaller variant of the card, or MIG/vGPU slicing)"
            % (index, gib, _fmt(floor)))]
    return []


def _check_pcie(index, gpu, want):
    out = []
    pcie = gpu.get("pcie") or {}
    width_min = _num(want.get("pcie_width_min"))
    if width_min is not None:
        cur, mx = pcie.get("width_current"), pcie.get("width_max")
        if cur is None:
            out.append(_problem("pcie_width", index, int(width_min), None,
                                "GPU %d PCIe link width could not be read, spec expects x%d"
                                % (index, width_min)))
        elif cur < width_min:
            if mx is not None and mx < width_min:
                hint = ("the card or slot supports only x%d; use a full x%d slot or lower the spec"
                        % (mx, width_min))
            else:
                hint = "reseat the card or check the slot's lane sharing"
            out.append(_problem(
                "pcie_width", index, int(width_min), cur,
                "GPU %d PCIe link runs at x%d, spec expects x%d (%s)"
                % (index, cur, width_min, hint)))
    gen_min = _num(want.get("pcie_gen_min"))
    if gen_min is not None:
        mx = pcie.get("gen_max")
        if mx is None:
            out.append(_problem("pcie_gen", index, int(gen_min), None,
                                "GPU %d PCIe generation could not be read, spec expects Gen%d"
                                % (index, gen_min)))
        elif mx < gen_min:
            out.append(_problem(
                "pcie_gen", index, int(gen_min), mx,
                "GPU %d PCIe link can reach Gen%d at most in this system, spec expects Gen%d "
                "(check the BIOS PCIe speed setting, risers and the slot)"
                % (index, mx, gen_min)))
    return out


def _check_power(index, gpu, want):
    target = _num(want.get("power_limit_w"))
    if target is None:
        return []
    power = gpu.get("power") or {}
    actual = power.get("limit_w")
    if actual is None:
        actual = power.get("enforced_limit_w")
    if actual is None:
        return [_problem("power_limit", index, target, None,
                         "GPU %d power limit could not be read (not supported here), spec expects %s W"
                         % (index, _fmt(target)))]
    if abs(actual - target) <= 1:
        return []
    lo, hi = power.get("min_limit_w"), power.get("max_limit_w")
    if lo is not None and hi is not None and not (lo <= target <= hi):
        hint = ("%s W is outside this card's range of %s-%s W; fix the spec"
                % (_fmt(target), _fmt(lo), _fmt(hi)))
    else:
        hint = "set it as root with `nvidia-smi -i %d -pl %s`; it resets at reboot unless reapplied" % (
            index, _fmt(target))
    return [_problem(
        "power_limit", index, target, actual,
        "GPU %d power limit is %s W, spec expects %s W (%s)"
        % (index, _fmt(actual), _fmt(target), hint))]
