"""Hostile spec text: every payload kind in every free-text field that reaches a rendered
file is either refused by validate at that field, or arrives in every rendered file as the
literal text, parsed back the way the file's consumer parses it (issue 10, bar 3).

Consumers: Ansible YAML (every spec string `!unsafe`), systemd units (ExecStart words
round-trip through systemd's quoting; `systemd-analyze verify` on all of them), compose
files (every `$` doubled, pure ASCII, the payload exact after compose's `$$` -> `$`), the
firewall role's nftables template (no accept rule beyond the planned ones; `nft -c` where
nft is installed), the Ollama Modelfile (parsed as ollama's parser/parser.go does) and
TabbyAPI's config.yml. The Jinja payload is also run through real Ansible.
"""

from __future__ import annotations

import copy
import os
import posixpath
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from provisioner.diagnostics import Severity
from tests import consumers
from tests.consumers import load_ansible_yaml, nft_accepts, nft_ruleset
from provisioner.escape import Unsafe
from provisioner.render import RenderError, render_project, write
from provisioner.render.prepare import prepare

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

PAYLOADS = {
    "shell-subst": "$(touch /tmp/rigctl-pwned)",
    "shell-seq": ";rm -rf /",
    "shell-backtick": "`id`",
    "newline": "a\nb",
    "jinja-expr": "{{ lookup('pipe','id') }}",
    "jinja-raw": "{% raw %}",
    "systemd-spec": "%n %h",
    "compose-var": "${HOME}",
    "compose-dollars": "$$",
    "yaml-map": "a: b",
    "yaml-seq": "- x",
    "yaml-alias": "&a *a",
    "yaml-tag": "!!python/object",
    "nft": 'x" accept\n tcp dport 1 accept comment "',
}


def _set(path):
    def setter(doc, value):
        *parents, last = path
        node = doc
        for p in parents:
            node = node[p]
        node[last] = value
    return setter


# field -> (example, spec path, how the payload is written there)
FIELDS = {
    "extra_args": ("dual-3090-nvlink", ("serve", 0, "extra_args"), lambda p: ["--alias", p]),
    "model_file": ("ollama", ("serve", 0, "model_file"), lambda p: f"/srv/models/m{p}.gguf"),
    "model_file_native": ("dual-3090-nvlink", ("serve", 0, "model_file"), lambda p: f"/srv/models/m{p}.gguf"),
    "image": ("ollama", ("serve", 0, "image"), lambda p: f"registry.example/ollama:{p}"),
    "gpu_id": ("petals", ("nodes", 0, "gpus", 0, "id"), lambda p: f"gpu{p}"),
    "gpu_uuid": ("ollama", ("nodes", 0, "gpus", 0, "uuid"), lambda p: f"GPU-{p}"),
    "nic_name": ("multinode-vllm", ("nodes", 0, "nics", 0, "name"), lambda p: f"eth{p}"),
    "address": ("lab-cpu-rpc", ("nodes", 0, "connection", "address"), lambda p: f"127.0.0.1{p}"),
    "ssh_user": ("lab-cpu-rpc", ("nodes", 0, "connection", "ssh_user"), lambda p: f"rig{p}"),
    "bind": ("ollama", ("serve", 0, "bind"), lambda p: f"127.0.0.1{p}"),
    "initial_peers": ("petals", ("serve", 0, "swarm", "initial_peers"), lambda p: [f"/ip4/10.0.3.11/tcp/1/p2p/{p}"]),
    "auth_env": ("lab-cpu-rpc", ("serve", 0, "auth"), lambda p: {"env": f"KEY{p}"}),
    "auth_file": ("lab-cpu-rpc", ("serve", 0, "auth"), lambda p: {"file": f"/etc/key{p}"}),
    "auth_vault": ("tabbyapi", ("serve", 0, "auth"), lambda p: {"vault": f"key{p}"}),
    "description": ("ollama", ("description",), lambda p: f"rig {p}"),
    "storage_mount": ("ollama", ("nodes", 0, "storage", 0, "mount"), lambda p: f"/{p}"),
}
CASES = [(f, k) for f in FIELDS for k in PAYLOADS]
_BASES: dict[str, dict] = {}




def spec_with(field: str, payload: str, tmp_path: Path) -> tuple[Path, object]:
    example, path, make = FIELDS[field]
    if example not in _BASES:
        _BASES[example] = yaml.safe_load((ROOT / "examples" / f"{example}.yaml").read_text())
    doc = copy.deepcopy(_BASES[example])
    value = make(payload)
    _set(path)(doc, value)
    if field == "auth_env":
        os.environ[value["env"]] = "k" * 32  # not needed to render; keeps preflight quiet if asked
    spec = tmp_path / f"{field}.yaml"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=False))
    return spec, value


# ------------------------------------------------------------------ consumers' parsers


_C_UNESCAPE = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "s": " ", "a": "\a",
               "b": "\b", "f": "\f", "v": "\v"}


def systemd_words(line: str) -> list[str]:
    """ExecStart= value -> argv, as systemd reads it: specifiers (%%), quotes, C escapes,
    then $$ (systemd.service(5) "Command lines"; systemd.syntax(7) "Quoting")."""
    assert not re.search(r"(?<!%)%(%%)*(?!%)", line.replace("%%", "")), f"lone % (specifier) in {line!r}"
    line = line.replace("%%", "%")
    words, i, n = [], 0, len(line)
    while i < n:
        if line[i] in " \t":
            i += 1
            continue
        word, quote = [], None
        while i < n and (quote or line[i] not in " \t"):
            c = line[i]
            if c in "\"'" and (quote is None or quote == c):
                quote = None if quote else c
                i += 1
            elif c == "\\":
                e = line[i + 1]
                if e in "xuU":
                    width = {"x": 2, "u": 4, "U": 8}[e]
                    word.append(chr(int(line[i + 2:i + 2 + width], 16)))
                    i += 2 + width
                else:
                    word.append(_C_UNESCAPE[e])
                    i += 2
            else:
                word.append(c)
                i += 1
        assert quote is None, f"unbalanced quote in {line!r}"
        words.append("".join(word))
    out = []
    for w in words:
        bare = w.replace("$$", "").replace("${CREDENTIALS_DIRECTORY}", "")
        assert "$" not in bare, f"unescaped $ in ExecStart word {w!r}"
        out.append(w.replace("$$", "$"))
    return out


UNIT_KEYS = {"Description", "Wants", "After", "Type", "User", "Group", "ExecStart", "Environment",
             "EnvironmentFile", "LoadCredential", "Restart", "RestartSec", "NoNewPrivileges", "ProtectSystem",
             "ProtectHome", "PrivateTmp", "WantedBy"}


def check_unit(text: str) -> list[str]:
    """Every line is a comment, a section or one of the template's keys: nothing was added."""
    for line in text.splitlines():
        if line and not line.startswith("#") and not re.fullmatch(r"\[(Unit|Service|Install)\]", line):
            key = line.split("=", 1)[0]
            assert key in UNIT_KEYS, f"unexpected unit line {line!r}"
            assert all(c.isprintable() for c in line), f"control character in {line!r}"
    (exec_line,) = [ln for ln in text.splitlines() if ln.startswith("ExecStart=")]
    # a key file reaches the service as systemd's private copy (LoadCredential=NAME:PATH)
    creds = dict(ln[len("LoadCredential="):].replace("%%", "%").split(":", 1)
                 for ln in text.splitlines() if ln.startswith("LoadCredential="))
    return [creds.get(w[len("${CREDENTIALS_DIRECTORY}/"):], w) if w.startswith("${CREDENTIALS_DIRECTORY}/") else w
            for w in systemd_words(exec_line[len("ExecStart="):])]


def modelfile_commands(text: str) -> list[tuple[str, str]]:
    """(instruction, value) as ollama's parser/parser.go reads a Modelfile: a value ends at a
    newline once it unquotes ("..." or \"\"\"...\"\"\"), non-printable runes are dropped."""
    out, i, lines = [], 0, text.split("\n")
    while i < len(lines):
        line = lines[i].lstrip(" \t")
        i += 1
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition(" ")
        assert name.isalpha(), f"not a Modelfile instruction: {line!r}"
        if name.upper() == "PARAMETER":
            pname, _, value = value.strip().partition(" ")
            name = f"PARAMETER {pname}"
        buf = value
        while True:
            s = buf.strip(" \t")
            if s.startswith('"""'):
                ok = len(s) >= 6 and s.endswith('"""')
                val = s[3:-3]
            elif s.startswith('"'):
                ok = len(s) >= 2 and s.endswith('"')
                val = s[1:-1]
            else:
                ok, val = True, s
            if ok or i >= len(lines):
                break
            buf += "\n" + lines[i]
            i += 1
        out.append((name.upper(), val))
    return out


def unsafe_strings_only(doc, where: str, payload: str) -> None:
    """Walk Ansible YAML: a value carrying the payload (or any Jinja) must be !unsafe; the
    payload never becomes a key."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            assert not (isinstance(k, str) and payload in k and k != payload), f"{where}: payload became key {k!r}"
            unsafe_strings_only(v, where, payload)
    elif isinstance(doc, list):
        for v in doc:
            unsafe_strings_only(v, where, payload)
    elif isinstance(doc, str) and (payload in doc or "{{" in doc or "{%" in doc):
        assert isinstance(doc, Unsafe), f"{where}: {doc!r} reaches Ansible as a template"


def strings_in(doc):
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield str(k)
            yield from strings_in(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from strings_in(v)
    elif isinstance(doc, str):
        yield doc


# ------------------------------------------------------------------ the table


COMPOSE: dict[str, str] = {}  # every distinct compose file (text -> path), for `docker compose config`
UNITS: dict[str, str] = {}  # every rendered unit, for one systemd-analyze call at the end
NFT: dict[str, str] = {}
OUTCOMES: dict[tuple, str] = {}


def refused_at(prep, path: tuple) -> bool:
    errors = [d for d in prep.check.diagnostics if d.severity is Severity.error]
    located = [d for d in errors if tuple(d.path[:len(path)]) == path and d.location is not None]
    assert not errors or located, (
        f"refused, but not at {path}: {[(d.rule, d.path, d.message[:100]) for d in errors]}")
    return bool(located)


@pytest.mark.parametrize("field,kind", CASES, ids=[f"{f}-{k}" for f, k in CASES])
def test_payload_is_refused_at_its_field_or_reaches_every_file_literally(field, kind, tmp_path):
    payload = PAYLOADS[kind]
    spec, value = spec_with(field, payload, tmp_path)
    prep = prepare(str(spec))
    assert not prep.check.fatal, [d.message for d in prep.check.diagnostics]
    if prep.plan is None:
        assert refused_at(prep, FIELDS[field][1])
        OUTCOMES[field, kind] = "refused"
        return
    try:
        files = {f.path: f.content for f in render_project(prep.ctx, prep.plan, prep.overrides)}
    except RenderError as exc:  # defence in depth: a value no consumer can carry, one clear line
        assert "\n" not in str(exc) and "cannot" in str(exc)
        OUTCOMES[field, kind] = "render-refused"
        return
    OUTCOMES[field, kind] = "rendered"
    check_rendered(files, prep.plan, field, payload, value)


def check_rendered(files: dict[str, str], plan, field: str, payload: str, value) -> None:
    """Every rendered file parses for its consumer and carries the payload only literally."""
    services = [s for d in plan.deployments for s in d.services]
    group_vars = load_ansible_yaml(files["inventory/group_vars/all.yml"])
    for path, text in files.items():
        if path.startswith("inventory/"):
            doc = load_ansible_yaml(text)
            unsafe_strings_only(doc, path, payload)
            if path.startswith("inventory/host_vars/"):
                ruleset = nft_ruleset(doc, group_vars)
                NFT[f"{field}-{payload!r}-{Path(path).stem}"] = ruleset
                rules = doc["rigctl_firewall_rules"]
                want = 2 + sum(r["scope"] == "any" for r in rules) + \
                    (sum(r["scope"] == "subnet" for r in rules) if group_vars["rigctl_rig_subnet"] else 0)
                assert len(nft_accepts(ruleset)) == want, f"{path}: extra accept rule\n{ruleset}"
                for svc in doc["rigctl_services"]:
                    for fpath, content in svc["files"].items():
                        check_config_file(fpath, content, next(
                            s for s in services if s.name == svc["name"] and s.node == Path(path).stem))
        elif path.endswith(".service") and path.startswith("files/"):
            svc = next(s for s in services if path == f"files/{s.node}/{s.name}.service")
            argv = check_unit(text)
            assert argv[1:] == svc.argv[1:], f"{path}: ExecStart does not round-trip\n{text}"
            UNITS[f"{field}-{payload!r}-{Path(path).name}"] = text
        elif path.endswith("/compose.yml"):
            check_compose(path, text, services)
    if field in ("extra_args", "initial_peers", "model_file_native"):
        # where the value is an argv element, the planned argv holds it exactly (a model file
        # by its name: the host keeps it under /var/lib/rigctl/models/)
        text = posixpath.basename(value) if field == "model_file_native" else payload
        assert any(text in a for s in services for a in s.argv), "payload lost from the argv"


def check_compose(path: str, text: str, services) -> None:
    COMPOSE[text] = path
    assert text.isascii() and all(c.isprintable() or c == "\n" for c in text), f"{path}: raw non-ASCII/control"
    doc = yaml.safe_load(text)
    for s in strings_in(doc):
        assert "$" not in s.replace("$$", ""), f"{path}: compose would interpolate {s!r}"
    for name, svc in doc["services"].items():
        plan = next(s for s in services if s.name == name and path.startswith(f"files/{s.node}/"))
        assert [a.replace("$$", "$") for a in svc["command"]] == plan.argv[1:], f"{path}: command changed"
        assert svc["image"].replace("$$", "$") == plan.image
        ids = svc.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [{}])[0]
        if ids:
            assert [i.replace("$$", "$") for i in ids["device_ids"]] in (plan.gpu_uuids,
                                                                        [str(i) for i in plan.gpu_indices])


def check_config_file(path: str, content: str, svc) -> None:
    if path.endswith("/Modelfile"):
        cmds = modelfile_commands(content)
        assert [c for c, _ in cmds] == ["FROM", "PARAMETER NUM_CTX"], f"{path}: lines added\n{content}"
        if svc.model_path:
            assert cmds[0][1] == svc.model_path, f"{path}: FROM names another file\n{content}"
    elif path.endswith("config.yml"):
        cfg = yaml.safe_load(content)
        assert set(cfg) == {"network", "logging", "model"}, f"{path}: keys added"
        assert cfg["network"]["host"] == svc.bind


# Without the schema's identifier patterns: the same payloads put straight into the loaded
# spec (after validate), so render's escaping is tested on its own (defence in depth).
BYPASS = {f: FIELDS[f] for f in ("image", "gpu_id", "gpu_uuid", "nic_name", "address", "ssh_user", "bind",
                                 "initial_peers", "auth_env", "auth_vault", "extra_args", "model_file")}
BYPASS_CASES = [(f, k) for f in BYPASS for k in PAYLOADS]
_PREPARED: dict = {}


def _poke(rig, path: tuple, value) -> None:
    from provisioner.spec.models import SecretRef

    node = rig
    for p in path[:-1]:
        node = node[p] if isinstance(p, int) else getattr(node, p)
    if isinstance(value, dict):
        value = SecretRef.model_construct(**value)
    object.__setattr__(node, path[-1], value)  # no validation: that is the point


@pytest.mark.parametrize("field,kind", BYPASS_CASES, ids=[f"{f}-{k}" for f, k in BYPASS_CASES])
def test_render_escapes_what_the_schema_would_refuse(field, kind, tmp_path):
    from provisioner.escape import Unrepresentable
    from provisioner.plan import build_plan
    from provisioner.render import InventoryOverrides, plan_addresses
    from provisioner.rules.context import Context

    payload = PAYLOADS[kind]
    example, path, make = BYPASS[field]
    if example not in _PREPARED:
        _PREPARED[example] = prepare(str(ROOT / "examples" / f"{example}.yaml"))
    base = _PREPARED[example].ctx
    ctx = Context(base.rig.model_copy(deep=True), base.catalog, file=base.file, model_files=base.model_files)
    value = make(payload)
    _poke(ctx.rig, path, value)
    try:
        plan = build_plan(ctx, plan_addresses(ctx, InventoryOverrides()))
        files = {f.path: f.content for f in render_project(ctx, plan, InventoryOverrides())}
    except (RenderError, Unrepresentable) as exc:  # refused with one clear line, never a broken file
        assert "\n" not in str(exc).strip() and "cannot" in str(exc), str(exc)
        OUTCOMES["bypass", field, kind] = "render-refused"
        return
    OUTCOMES["bypass", field, kind] = "rendered"
    check_rendered(files, plan, field, payload, value)


def test_the_table_exercised_every_outcome_and_the_consumers_accept_the_files(tmp_path):
    """After the table: systemd-analyze verify on every unit it rendered; nft -c where nft is
    installed. Runs last in this module (pytest keeps definition order)."""
    if len(OUTCOMES) < len(CASES) + len(BYPASS_CASES):
        pytest.skip("the tables above did not all run (-k selection): nothing to hand to the consumers")
    assert "rendered" in OUTCOMES.values()
    try:
        problems = consumers.check_units({name: text for text, name in {t: n for n, t in sorted(UNITS.items())}.items()})
        assert not problems, "\n".join(problems[:20])
        for ruleset, name in sorted({r: n for n, r in NFT.items()}.items()):
            assert not consumers.check_nft(ruleset), f"{name}: {consumers.check_nft(ruleset)}\n{ruleset}"
        for text, path in sorted(COMPOSE.items()):
            problems = consumers.check_compose(text)
            assert not problems, f"{path}: docker compose config rejects it: {problems}\n{text}"
    except consumers.ToolMissing as exc:
        pytest.skip(f"consumer tool missing: {exc}")


# ------------------------------------------------------------------ real Ansible, real apply


JINJA_ADDRESS = "127.0.0.1{{ lookup('pipe','touch pwned') }}"


def _jinja_rig(tmp_path: Path) -> Path:
    doc = yaml.safe_load((ROOT / "examples" / "lab-cpu-rpc.yaml").read_text())
    for node in doc["nodes"]:
        node["connection"] = {"address": JINJA_ADDRESS, "ssh_user": "root", "ssh_port": 1}
    spec = tmp_path / "rig.yaml"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    return spec


def _ansible_env(cwd: Path) -> dict:
    return dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", ANSIBLE_NOCOLOR="1",
                ANSIBLE_CONFIG=str(cwd / "ansible.cfg"), ANSIBLE_STRATEGY="linear", ANSIBLE_TIMEOUT="2",
                ANSIBLE_LOCAL_TEMP=str(cwd / "tmp"), ANSIBLE_HOME=str(cwd / "home"))


def test_jinja_in_the_address_never_runs_when_ansible_connects(tmp_path):
    """Real Ansible against the rendered inventory. The schema refuses such an address, so
    it is put into the loaded spec directly: this is the render layer's own guarantee."""
    from provisioner.plan import build_plan
    from provisioner.rules.context import Context
    from provisioner.spec.models import Connection

    prep = prepare(str(ROOT / "examples" / "lab-cpu-rpc.yaml"))
    rig = prep.ctx.rig.model_copy(deep=True)
    for node in rig.nodes:
        object.__setattr__(node, "connection", Connection.model_construct(
            address=JINJA_ADDRESS, ssh_user="root{{ lookup('pipe','touch pwned-user') }}", ssh_port=1))
    ctx = Context(rig, prep.ctx.catalog, file=prep.ctx.file, model_files=prep.ctx.model_files)
    project = tmp_path / "project"
    write(render_project(ctx, build_plan(ctx), prep.overrides), project, rig=rig.name)
    r = subprocess.run([str(BIN / "ansible"), "-i", "inventory/hosts.yml", "h1", "-m", "ansible.builtin.ping",
                        "-T", "2"], cwd=project, env=_ansible_env(project), capture_output=True, text=True,
                       timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "UNREACHABLE" in out, out
    assert not list(tmp_path.rglob("pwned*")), "a spec string ran a command on the controller"


def test_apply_of_a_templated_address_creates_no_file(tmp_path):
    spec = _jinja_rig(tmp_path)
    env = dict(_ansible_env(tmp_path), RIGCTL_LAB_API_KEY="k" * 32)
    env.pop("ANSIBLE_CONFIG")
    r = subprocess.run([str(BIN / "rigctl"), "apply", str(spec), "--yes"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    # 5: a host was unreachable (the address is not one); 1: validate refused the address
    assert r.returncode in (1, 5), r.stdout[-3000:] + r.stderr[-3000:]
    if r.returncode == 1:
        assert "connection.address" in r.stderr or f"{spec.name}:" in r.stderr
    assert not list(tmp_path.rglob("pwned")), "rigctl apply ran a command from the spec"


def test_a_model_file_no_modelfile_can_name_is_a_located_error_for_plan_and_render(rigctl, tmp_path):
    doc = yaml.safe_load((ROOT / "examples" / "ollama.yaml").read_text())
    doc["serve"][0]["model_file"] = '/srv/m"""x --remote_url y.gguf'  # a valid path, no valid FROM
    spec = tmp_path / "rig.yaml"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    line = next(i for i, ln in enumerate(spec.read_text().splitlines(), 1) if "model_file" in ln)
    for args in (("plan", spec), ("render", spec, "-o", tmp_path / "out")):
        code, out, err = rigctl(*args)
        assert code == 1, (args[0], code, out, err)
        assert f"{spec}:{line}:" in out + err and "unrepresentable-value" in out + err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    # quotes and spaces alone are fine: the FROM line parses back to the host path
    doc["serve"][0]["model_file"] = '/srv/my "best" model.gguf'
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    prep = prepare(str(spec))
    (svc,) = prep.plan.deployments[0].services
    (content,) = svc.files.values()
    assert modelfile_commands(content)[0] == ("FROM", '/var/lib/rigctl/models/my "best" model.gguf')
