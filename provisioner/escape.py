"""One escaping function per consumer of the text rigctl writes.

Every value that leaves rigctl reaches its consumer through exactly one function here:
systemd unit words and assignments, launchd property lists, Docker Compose values and names,
Ollama Modelfile arguments, YAML scalars, and the ``!unsafe`` marking of everything Ansible
reads. A value that a consumer has no way to say literally (a NUL byte in an argv, a newline
in a compose service name, `\"\"\"` in a Modelfile FROM) raises ``Unrepresentable`` rather than being
changed: a silently altered path or name would point somewhere else. The schema refuses
such values at validate with their location; this is the defence behind it.

Lowest layer (no rigctl imports): plan writes Modelfiles, render writes everything else.
"""

from __future__ import annotations

import re

# ------------------------------------------------------------------ shared


class Unrepresentable(ValueError):
    """A value the consumer cannot express literally; the message names value and consumer,
    ``path`` the spec path it came from where the raiser knows it."""

    def __init__(self, message: str, path: tuple = ()):
        super().__init__(message)
        self.path = path


def _printable(ch: str) -> bool:
    # str.isprintable() is false for C0/C1, DEL, U+2028/2029, format characters and
    # noncharacters (U+FFFE); space is the one printable separator
    return ch.isprintable()


def _show(text: str) -> str:
    return ascii(text) if len(text) <= 80 else ascii(text[:77]) + "..."


def no_nul(text: str, consumer: str) -> str:
    if "\0" in text:
        raise Unrepresentable(f"{_show(text)}: a NUL character cannot be passed in {consumer}")
    return text


# ------------------------------------------------------------------ systemd
# systemd.syntax(7) "Quoting": inside double quotes C escapes are resolved (\n, \xNN,
# \uNNNN, \UNNNNNNNN); "%" starts a specifier everywhere (systemd.unit(5) "Specifiers");
# "$" expands variables in ExecStart= only (systemd.service(5) "Command lines").
# https://www.freedesktop.org/software/systemd/man/latest/systemd.syntax.html

_SAFE_WORD = re.compile(r"[A-Za-z0-9_@+=:,./-]+")  # fullmatch: "$" would pass "a\n"
_C_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _c_escape(text: str) -> str:
    out = []
    for ch in text:
        if ch in _C_ESCAPES:
            out.append(_C_ESCAPES[ch])
        elif ch == "%":
            out.append("%%")
        elif not _printable(ch):
            cp = ord(ch)
            out.append(f"\\x{cp:02x}" if cp < 0x80 else f"\\u{cp:04x}" if cp <= 0xFFFF else f"\\U{cp:08x}")
        else:
            out.append(ch)
    return "".join(out)


def systemd_word(text: str, expand: bool = False) -> str:
    """One ExecStart word: literal unless expand=True (then ${VAR} is left to systemd)."""
    text = no_nul(str(text), "a systemd unit")
    if _SAFE_WORD.fullmatch(text):
        return text
    out = _c_escape(text)
    return '"' + (out if expand else out.replace("$", "$$")) + '"'


def systemd_env(value: str, key: str) -> str:
    """An Environment= assignment (systemd does not expand $ there; % it does)."""
    return '"' + _c_escape(no_nul(f"{key}={value}", "a systemd unit")) + '"'


def systemd_text(text: str) -> str:
    """Free text on one unit line (Description=, unquoted): specifiers doubled, one line."""
    return comment_text(text).replace("%", "%%")


def systemd_path(path: str) -> str:
    """A path in EnvironmentFile= or LoadCredential=: systemd takes these unquoted (quotes
    would become part of the path), so only specifiers are escaped and the rest refused."""
    path = no_nul(str(path), "a systemd unit")
    if not path.startswith("/") or any(c in path for c in "\\\"'") or \
            not all(_printable(c) and not c.isspace() for c in path):
        raise Unrepresentable(f"{_show(path)}: systemd needs an absolute path without spaces, quotes, "
                              "backslashes or control characters here")
    return path.replace("%", "%%")


_SYSTEMD_NAME = re.compile(r"[A-Za-z0-9_.@-]+")


def _matching(text, pattern: re.Pattern, refusal: str) -> str:
    """The text when the consumer's own pattern takes it whole; refused with `refusal` otherwise."""
    text = str(text)
    if not pattern.fullmatch(text):
        raise Unrepresentable(f"{_show(text)} {refusal}")
    return text


def systemd_name(text: str) -> str:
    """A user, group or credential name (unquoted settings): a plain name, or refused."""
    return _matching(text, _SYSTEMD_NAME, "cannot be a systemd user or credential name "
                                          "(letters, digits, '_', '.', '@', '-')")


def comment_text(text: str) -> str:
    """Text inside a `#` comment line of any rendered file: one line, printable only."""
    return "".join(ch if _printable(ch) else "?" for ch in str(text))


# ------------------------------------------------------------------ YAML
# YAML 1.2 §5.1 allows only printable characters in a stream and §5.7 defines the
# double-quoted escapes; an ASCII-only double-quoted scalar means the same to PyYAML,
# ruamel, go-yaml (compose) and Ansible, and cannot start a new key or line.
# https://yaml.org/spec/1.2.2/#57-escaped-characters

_YAML_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def yaml_quote(value) -> str:
    """A YAML double-quoted scalar in pure ASCII (numbers and booleans stay plain)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    out = []
    for ch in str(value):
        cp = ord(ch)
        if ch in _YAML_ESCAPES:
            out.append(_YAML_ESCAPES[ch])
        elif 0x20 <= cp < 0x7F:
            out.append(ch)
        else:
            out.append(f"\\x{cp:02x}" if cp <= 0xFF else f"\\u{cp:04x}" if cp <= 0xFFFF else f"\\U{cp:08x}")
    return '"' + "".join(out) + '"'


def yaml_flow(values) -> str:
    """A flow sequence of yaml_quote'd items: ["a", "b"]."""
    return "[" + ", ".join(yaml_quote(v) for v in values) + "]"


# ------------------------------------------------------------------ Docker Compose
# Compose interpolates `$VAR`/`${VAR}` in every value of the file and reads `$$` as a
# literal `$` (https://docs.docker.com/reference/compose-file/interpolation/). Names are
# not interpolated but must match the compose-spec patterns
# (https://github.com/compose-spec/compose-spec/blob/main/schema/compose-spec.json).

_COMPOSE_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def compose_escape(value):
    """A compose value that interpolates to itself: `$` doubled (recursively for lists)."""
    if isinstance(value, (list, tuple)):
        return [compose_escape(v) for v in value]
    return no_nul(str(value), "a container's command, environment or labels").replace("$", "$$")


def compose_name(text: str, what: str = "compose name") -> str:
    """A service, container, volume or project name: compose's own pattern, or refused."""
    return _matching(text, _COMPOSE_NAME, f"cannot be a {what}: compose allows only "
                                          "letters, digits, '_', '.' and '-' (starting with a letter or digit)")


def env_name(text: str) -> str:
    """An environment variable name (a compose environment key, a systemd assignment)."""
    return _matching(text, _ENV_NAME, "is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)")


def bind_path(path: str) -> str:
    """A host path in a short-syntax bind mount (`SRC:DST:ro`): ':' would split it."""
    path = no_nul(str(path), "a bind mount")
    if ":" in path or not all(_printable(c) for c in path):
        raise Unrepresentable(f"{_show(path)} cannot be bind-mounted: ':' and control characters "
                              "would change the mount")
    return path


# ------------------------------------------------------------------ Ollama Modelfile
# parser/parser.go (ollama): a value ends at a newline once it unquotes; "..." and
# """...""" quote it, there are no escape sequences, non-printable runes are dropped and
# FROM splits at " --remote_url ". https://github.com/ollama/ollama/blob/main/parser/parser.go

_REMOTE_URL = re.compile(r"\s--remote_url\s")


def modelfile_arg(text: str) -> str:
    """One Modelfile argument that parses back to exactly ``text``, or Unrepresentable."""
    text = str(text)
    bad = next((c for c in text if not (_printable(c) or c in " \t\n")), None)
    if bad is not None or '"""' in text or _REMOTE_URL.search(text) or not text.strip():
        why = f"the character {ascii(bad)}" if bad is not None else "it"
        raise Unrepresentable(f"{_show(text)}: {why} cannot be written in an Ollama Modelfile "
                              '(no escapes; \'"""\', " --remote_url " and control characters change the line)')
    if not any(c in text for c in ' \t\n"'):
        return text
    return f'"{text}"' if '"' not in text else f'"""{text}"""'


# ------------------------------------------------------------------ launchd property lists
# launchd reads its jobs from XML property lists (launchd.plist(5); Apple's DTD
# https://www.apple.com/DTDs/PropertyList-1.0.dtd); plistlib writes that format and escapes
# &, < and >. It raises on C0 controls, but silently turns "\r" into "\n", and XML 1.0 has
# no way to carry U+FFFE/U+FFFF or lone surrogates (https://www.w3.org/TR/xml/#charsets):
# those are refused here instead of being changed. launchd expands nothing in a plist
# (no $VAR, no %), so every other string reaches the job exactly as written.


def _plist_check(value, where: str = "") -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _plist_check(k, where)
            _plist_check(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, (list, tuple)):
        for v in value:
            _plist_check(v, where)
    elif isinstance(value, str):
        bad = next((c for c in value if (ord(c) < 0x20 and c not in "\t\n") or c in "\ufffe\uffff"
                    or 0xD800 <= ord(c) <= 0xDFFF), None)
        if bad is not None:
            raise Unrepresentable(f"{_show(value)}: the character {ascii(bad)} cannot be written in a launchd "
                                  f"property list{' (' + where + ')' if where else ''}")
    elif not isinstance(value, (bool, int)):
        raise Unrepresentable(f"{_show(str(value))}: a {type(value).__name__} has no launchd plist form")


def launchd_plist(job: dict, comment: str = "") -> str:
    """A launchd job as an XML property list (keys sorted: same job, same bytes), with
    ``comment`` as an XML comment after the declaration (plists have no other comments)."""
    import plistlib

    _plist_check(job)
    text = plistlib.dumps(job, fmt=plistlib.FMT_XML, sort_keys=True).decode("utf-8")
    if not comment:
        return text
    decl, _, rest = text.partition("\n")  # the <?xml ...?> declaration must stay first
    note = comment_text(comment).replace("--", "- -").rstrip("-")  # XML comments cannot hold "--"
    return f"{decl}\n<!-- {note} -->\n{rest}"


# ------------------------------------------------------------------ Ansible
# Strings Ansible reads from inventory and vars files are templates; `!unsafe` makes one
# a literal (https://docs.ansible.com/ansible/latest/playbook_guide/playbooks_advanced_syntax.html#unsafe-or-raw-strings).


class Unsafe(str):
    """A string Ansible must not template (dumped as !unsafe)."""


def ansible_unsafe(obj):
    """Every string value in obj marked !unsafe; numbers, booleans and None unchanged. Keys
    stay plain: Ansible templates values, never mapping keys (checked on ansible-core 2.19).
    The empty string stays plain: ansible-core 2.19 loads `!unsafe ''` as None (and an empty
    string holds nothing to template)."""
    if isinstance(obj, str):
        return Unsafe(obj) if obj else obj
    if isinstance(obj, dict):
        return {k: ansible_unsafe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [ansible_unsafe(v) for v in obj]
    return obj
