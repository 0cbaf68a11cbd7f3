"""What a new user meets first: the scripts' install step, the plan's API-key lines, the apply
summary, a missing secret on the controller, `plan --refresh` on GPU-less hosts, `rigctl lab
restart`, and what the demo and README say about the lab (issue 14)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def rigctl(*args: str, env: dict | None = None, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "provisioner", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env if env is not None else os.environ.copy(),
                          stdin=subprocess.DEVNULL)


# ---------------------------------------------------------------- install step of the scripts


def _install_args(script: str) -> list[str]:
    """The `pip install ... -e ...` arguments of a script (after `pip install`)."""
    line = next(ln for ln in (ROOT / "scripts" / script).read_text().splitlines()
                if "pip install" in ln and " -e " in ln)
    words = shlex.split(line)
    return words[words.index("install") + 1:]


@pytest.mark.parametrize("script", ["test.sh", "demo.sh"])
def test_script_install_shows_no_setuptools_warning_and_finds_playbooks(script, tmp_path):
    """The scripts' editable install prints no BuildBackendWarning box, and the installed
    rigctl finds playbooks/ and templates/ from the checkout."""
    if shutil.which("python3") is None:
        pytest.skip("no python3 to make a venv with")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("provisioner", "playbooks", "templates"):
        shutil.copytree(ROOT / name, src / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    args = [a if a != ".[test]" else "." for a in _install_args(script)] + ["--no-deps"]
    # this venv's pip installs into the new one (--python): the test venv is left alone
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", *args],
                       cwd=src, capture_output=True, text=True, timeout=300)
    if r.returncode != 0 and re.search(r"No matching distribution|Could not find a version|network", r.stderr + r.stdout):
        pytest.skip(f"no package index for the build backend here: {r.stderr.strip()[-200:]}")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "editable_mode=compat" not in " ".join(args)
    assert "BuildBackendWarning" not in out and "!!" not in out, out
    found = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "from provisioner.resources import package_dir as d; "
                            "print(d('playbooks') / 'site.yml'); print(d('templates') / 'systemd.service.j2')"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert found.returncode == 0, found.stderr
    for path in found.stdout.split():
        assert Path(path).is_file() and str(src) in path, found.stdout


# ---------------------------------------------------------------- secrets checked before any host


def _lab_spec(tmp_path: Path) -> Path:
    """examples/lab-cpu-rpc.yaml with its model file written under tmp_path."""
    from provisioner.testmodels import write_tiny_gguf

    model = write_tiny_gguf(tmp_path / "tiny.gguf")
    text = (ROOT / "examples" / "lab-cpu-rpc.yaml").read_text()
    text = text.replace("/var/tmp/rigctl-lab-cache/models/tiny-llama.gguf", str(model))
    spec = tmp_path / "lab.yaml"
    spec.write_text(text)
    return spec


@pytest.mark.parametrize("value", [None, ""])
def test_apply_with_unset_secret_env_stops_before_any_host(tmp_path, value):
    spec = _lab_spec(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "RIGCTL_LAB_API_KEY"}
    if value is not None:
        env["RIGCTL_LAB_API_KEY"] = value
    r = rigctl("apply", str(spec), "-i", str(ROOT / "inventories" / "lab"), "--yes", env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    line = next(i for i, ln in enumerate(spec.read_text().splitlines(), 1) if "auth: {env: RIGCTL_LAB_API_KEY}" in ln)
    assert re.search(rf"{re.escape(str(spec))}:{line}:\d+: error secret-env-unset: deployment tiny: .*"
                     r"RIGCTL_LAB_API_KEY", r.stderr), r.stderr
    assert "export RIGCTL_LAB_API_KEY" in r.stderr
    assert not (tmp_path / ".rigctl" / "runs").exists(), "a run started although the secret is missing"
    assert "Traceback" not in r.stderr


def test_apply_check_also_stops_on_unset_secret_env(tmp_path):
    spec = _lab_spec(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "RIGCTL_LAB_API_KEY"}
    r = rigctl("apply", str(spec), "-i", str(ROOT / "inventories" / "lab"), "--check", env=env)
    assert r.returncode == 2 and "secret-env-unset" in r.stderr, r.stdout + r.stderr


# ---------------------------------------------------------------- plan shows what the unit runs


def test_plan_shows_the_api_key_as_the_unit_receives_it(tmp_path):
    spec = _lab_spec(tmp_path)
    r = rigctl("plan", str(spec))
    assert r.returncode == 0, r.stdout + r.stderr
    server = next(ln.strip() for ln in r.stdout.splitlines() if ln.strip().startswith("llama-server "))
    assert server.endswith("--api-key-file ${CREDENTIALS_DIRECTORY}/tiny.key"), server
    assert "LLAMA_API_KEY_FILE" not in r.stdout  # no such variable reaches the service
    assert ("key file: systemd credential tiny.key (LoadCredential from /etc/rigctl/secrets/tiny.key, "
            "from env RIGCTL_LAB_API_KEY on the controller)") in r.stdout
    # the rendered unit says the same
    out = tmp_path / "out"
    rr = rigctl("render", str(spec), "-o", str(out), "-q")
    assert rr.returncode == 0, rr.stderr
    unit = (out / "files" / "h1" / "rigctl-tiny.service").read_text()
    assert "--api-key-file ${CREDENTIALS_DIRECTORY}/tiny.key" in unit or \
        '--api-key-file "${CREDENTIALS_DIRECTORY}/tiny.key"' in unit, unit
    assert "LoadCredential=tiny.key:/etc/rigctl/secrets/tiny.key" in unit
    assert "LLAMA_API_KEY_FILE" not in unit


def test_plan_of_a_container_rig_shows_the_mounted_key_file(tmp_path):
    from provisioner.testmodels import write_tiny_gguf

    model = write_tiny_gguf(tmp_path / "tiny.gguf")
    text = (ROOT / "examples" / "lab-cpu-containers.yaml").read_text()
    spec = tmp_path / "c.yaml"
    spec.write_text(re.sub(r"model_file: \S+", f"model_file: {model}", text))
    r = rigctl("plan", str(spec))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "--api-key-file /etc/rigctl/secrets/tiny.key" in r.stdout
    assert "key file /etc/rigctl/secrets/tiny.key (mounted read-only, from env" in r.stdout


# ---------------------------------------------------------------- apply summary names no_log changes


def test_apply_summary_lists_a_changed_no_log_task(tmp_path):
    """A real ansible-runner run on localhost: a changed no_log task (single and looped) is counted
    by Ansible's recap, and the summary names each, saying its output is hidden."""
    from rich.console import Console

    from provisioner.commands.apply import _Live, _summary
    from provisioner.execute import RunnerOptions, _run

    project = tmp_path / "run" / "project"
    (project / "inventory").mkdir(parents=True)
    (project / "ansible.cfg").write_text("[defaults]\nstdout_callback = default\n")
    (project / "inventory" / "hosts.yml").write_text(
        "all:\n  hosts:\n    h1:\n      ansible_connection: local\n"
        f"      ansible_python_interpreter: {sys.executable}\n")
    out_dir = tmp_path / "out"
    (project / "site.yml").write_text(f"""\
- hosts: all
  gather_facts: false
  tasks:
    - name: Write the secret of rigctl-tiny
      ansible.builtin.copy: {{content: "key", dest: "{out_dir}/tiny.key", mode: "0600"}}
      no_log: true
    - name: Write looped secrets
      ansible.builtin.copy: {{content: "key", dest: "{out_dir}/{{{{ item }}}}.key", mode: "0600"}}
      loop: [a, b]
      no_log: true
    - name: Plain change
      ansible.builtin.copy: {{content: "x", dest: "{out_dir}/plain.txt"}}
""")
    out_dir.mkdir()
    console = Console(file=(buf := __import__("io").StringIO()), width=200, force_terminal=False)
    view = _Live(console)
    result = _run(RunnerOptions(private_data_dir=tmp_path / "run", project_dir=project,
                                inventory=project / "inventory" / "hosts.yml"), view.update)
    assert result.exit_code == 0, result.message
    result.run_dir, result.elapsed_s = tmp_path / "run", 1.0
    _summary(console, result)
    text = buf.getvalue()
    assert "changed=3" in text, text
    # the pipe view names it as it happens, and the summary names every counted change
    assert "h1           changed     Write the secret of rigctl-tiny (output hidden (no_log))" in text, text
    assert ("changed: Write the secret of rigctl-tiny (output hidden (no_log)); "
            "Write looped secrets (output hidden (no_log)); Plain change") in text, text


# ---------------------------------------------------------------- plan --refresh says what it probed


def test_refresh_on_a_gpu_less_host_says_no_gpu_found():
    """The probe's own answer on this controller (no GPU here) is what a GPU-less host answers."""
    from provisioner.commands.plan import probe_summary
    from provisioner.probe import core

    try:
        core.collect()
    except core.ProbeUnavailable as exc:
        reason = exc.reason
    else:
        pytest.skip("this machine has an NVIDIA GPU")
    (line,) = probe_summary({"h1": {"unavailable": reason}})
    assert line == f"h1: probed over SSH (NVML): no GPU found ({reason})"


def test_refresh_prints_per_host_what_it_probed(tmp_path):
    spec = _lab_spec(tmp_path)
    inv = tmp_path / "hosts.yml"  # nothing listens on port 1: refused at once
    inv.write_text("all:\n  hosts:\n    h1: {ansible_host: 127.0.0.1, ansible_port: 1}\n"
                   "    h2: {ansible_host: 127.0.0.1, ansible_port: 1}\n  vars: {ansible_user: root}\n")
    r = rigctl("plan", str(spec), "--refresh", "-i", str(inv))
    for host in ("h1", "h2"):
        assert f"rigctl plan --refresh: {host}: not probed: unreachable over SSH (" in r.stderr, r.stderr
    assert "rigctl plan --refresh" not in r.stdout  # the plan text stays as it was


# ---------------------------------------------------------------- rigctl lab restart HOST


def _fake_lab(tmp_path: Path) -> dict:
    """A LAB_DIR that looks up (hosts.list + inventory), with nothing booted: 127.0.0.1 refuses ssh."""
    d = tmp_path / "lab"
    (d / "hosts" / "h1").mkdir(parents=True)
    (d / "hosts.list").write_text("127.0.0.1 h1\n")
    (d / "inventory.ini").write_text("[lab]\nh1 ansible_host=127.0.0.1\n")
    return dict(os.environ, LAB_DIR=str(d))


@pytest.mark.parametrize("args, code, message", [
    ((), 2, "the following arguments are required: HOST"),
    (("h1", "h2"), 2, "unrecognized arguments: h2"),
    (("h1;reboot",), 2, "restart: a lab host is named like h1, not 'h1;reboot'"),
    (("h7",), 2, "restart: no host h7 in the lab (hosts: h1)"),
])
def test_lab_restart_argument_errors(tmp_path, args, code, message):
    r = rigctl("lab", "restart", *args, env=_fake_lab(tmp_path))
    assert r.returncode == code and message in r.stderr, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr


def test_lab_restart_when_the_lab_is_down_says_so(tmp_path):
    r = rigctl("lab", "restart", "h1", env=dict(os.environ, LAB_DIR=str(tmp_path / "none")))
    assert r.returncode == 1 and "the lab is not up in" in r.stderr and "rigctl lab up N first" in r.stderr


@pytest.mark.parametrize("args", [(), ("h1", "h2"), ("../h1",)])
def test_lab_sh_restart_refuses_bad_arguments(tmp_path, args):
    from provisioner.lab import lab_script

    r = subprocess.run(["bash", str(lab_script()), "restart", *args], capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, LAB_DIR=str(tmp_path / "none")))
    assert r.returncode == 2 and "lab.sh restart: one host name like h1" in r.stderr, r.stderr


def test_lab_help_lists_restart():
    r = rigctl("lab", "--help")
    assert "restart" in r.stdout and "reboot one host" in r.stdout


# ---------------------------------------------------------------- rigctl bench without a lab


@pytest.mark.parametrize("soak, message", [("5x", "is not a duration like 30s, 5m or 1h"),
                                           ("0s", "a soak runs between 1 s and 24 h"),
                                           ("25h", "a soak runs between 1 s and 24 h")])
def test_bench_soak_duration_errors(tmp_path, soak, message):
    r = rigctl("bench", str(_lab_spec(tmp_path)), "--soak", soak)
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_bench_without_the_api_key_names_the_variable(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RIGCTL_LAB_API_KEY"}
    r = rigctl("bench", str(_lab_spec(tmp_path)), "-i", str(ROOT / "inventories" / "lab"), env=env)
    assert r.returncode == 2 and "secret-env-unset" in r.stderr and "RIGCTL_LAB_API_KEY" in r.stderr, r.stderr


def test_bench_of_an_unreachable_host_is_a_located_error(tmp_path):
    spec = _lab_spec(tmp_path)
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  hosts:\n    h1: {ansible_host: 127.0.0.1, ansible_port: 1}\n"
                   "    h2: {ansible_host: 127.0.0.1, ansible_port: 1}\n  vars: {ansible_user: root}\n")
    r = rigctl("bench", str(spec), "-i", str(inv), env=dict(os.environ, RIGCTL_LAB_API_KEY="k"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert re.search(rf"{re.escape(str(spec))}:\d+:\d+: error bench-endpoint\[tiny\]: tiny: cannot benchmark "
                     r"rigctl-tiny on h1 \(10\.213\.0\.11:8080\): could not run on h1: ", r.stdout), r.stdout
    assert "Traceback" not in r.stderr


def test_bench_speed_finding_only_outside_the_plan_range():
    from provisioner.plan.model import Speed
    from provisioner.verify.bench import Endpoint, EndpointResult, findings, percentile

    ep = Endpoint("tiny", 0, "h1", "rigctl-tiny", "llamacpp", "127.0.0.1", 8080, "/health", 1, 512, "native",
                  None, Speed(40.0, 60.0, 1000, 2000, "memory bandwidth"))
    def result(decode, prompt):
        return EndpointResult(ep, "m", lengths=[
            {"ok": True, "target_tokens": 32, "decode_tps": decode, "prompt_tps": 500.0},
            {"ok": True, "target_tokens": 432, "decode_tps": decode, "prompt_tps": prompt}])
    assert findings(result(50.0, 1500.0)) == []
    (low,) = findings(result(20.0, 1500.0))
    assert low.rule == "bench-speed[decode]" and low.path == ("serve", 0)
    assert "measured decode 20.0 tok/s (single stream, 32-token prompt) is below the plan's 40-60 tok/s" in low.message
    (high,) = findings(result(50.0, 5000.0))
    assert high.rule == "bench-speed[prompt]" and "5,000 tok/s (432-token prompt) is above" in high.message
    assert percentile([0.1, 0.2, 0.3, 0.4], 50) == 0.2 and percentile([0.1, 0.2, 0.3, 0.4], 99) == 0.4


# ---------------------------------------------------------------- what the demo and README say


def _lab_packages() -> list[str]:
    m = re.search(r"local pkgs=\(([^)]*)\)", (ROOT / "provisioner" / "lab" / "lab.sh").read_text())
    return m.group(1).split()


def _ci_packages() -> list[str]:
    line = next(ln for ln in (ROOT / ".ci" / "run").read_text().splitlines() if "apt-get install" in ln)
    return [w for w in line.split("-qq", 1)[1].split(">")[0].split() if not w.startswith("-")]


def test_demo_says_random_weights_build_time_and_packages():
    demo = (ROOT / "scripts" / "demo.sh").read_text()
    curl = demo.index("curl -sS")
    note = demo.rindex("RANDOM WEIGHTS", 0, curl)  # printed right before the completion
    assert demo[note:curl].count("echo ") >= 2 and "random tokens" in demo[note:curl]
    assert "15-40 min" in demo and "~8 min" not in demo
    shown = "\n".join(ln for ln in demo.splitlines() if ln.startswith("echo "))
    for pkg in _lab_packages():
        assert pkg in shown, f"demo.sh does not print that the lab installs {pkg}"


def test_readme_two_commands_says_the_same():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    assert "random weights" in section and "15-40 min" in section
    for pkg in _lab_packages() + _ci_packages() + ["nftables", "docker.io", "chromium"]:
        assert f"`{pkg}`" in section, f"README's 'The two commands' does not name {pkg}"
