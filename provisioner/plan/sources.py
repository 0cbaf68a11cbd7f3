"""Model sources: what the host downloads (or finds) before a service starts.

`serve[].source` names a Hugging Face repository at a pinned commit, a URL with its
sha256, or a path already on the host. The plan turns it into `Service.model_fetch`, the
data the base role's model_source.yml hands to the rigctl_model_fetch module; a token
reference becomes the secret `HF_TOKEN` (an env file under /etc/rigctl/secrets, never a
value in the plan), which the engines that download by themselves read as well.
"""

from __future__ import annotations

import posixpath
import re
from urllib.parse import urlsplit

from ..spec.models import Deployment

MODELS_DIR = "/var/lib/rigctl/models"
# huggingface_hub reads HF_TOKEN (https://huggingface.co/docs/huggingface_hub/package_reference/environment_variables#hftoken);
# vLLM and Petals download through it, TabbyAPI's downloader reads it too
TOKEN_ENV = "HF_TOKEN"
_SHARD = re.compile(r"-(\d{5})-of-\d{5}\.gguf$")


def url_file_name(url: str) -> str:
    return urlsplit(url).path.rsplit("/", 1)[-1]


def source_dir(dep: Deployment) -> str:
    """The deployment's own directory under the models disk (downloads land here)."""
    return posixpath.join(MODELS_DIR, dep.name)


def source_model_path(dep: Deployment, ext: str = ".gguf") -> str:
    src = dep.source
    if src.path:
        return src.path
    if src.url:
        return posixpath.join(source_dir(dep), url_file_name(src.url))
    files = src.hf.files or []
    ggufs = sorted(f for f in files if f.endswith(".gguf"))
    if ggufs and (ext == ".gguf" or len(ggufs) == len(files)):
        # a split GGUF is opened by its first shard; llama.cpp finds the others beside it
        first = next((f for f in ggufs if (m := _SHARD.search(f)) and m.group(1) == "00001"), ggufs[0])
        return posixpath.join(source_dir(dep), first)
    return source_dir(dep)


def model_fetch(dep: Deployment) -> dict | None:
    """What model_source.yml does for this deployment's service (VARIABLES.md: model_fetch)."""
    src = dep.source
    if src is None or not src.local:
        return None  # a token alone: the engine downloads by itself
    if src.path:
        return {"kind": "path", "path": src.path}
    if src.url:
        return {"kind": "url", "url": src.url, "sha256": src.sha256,
                "dest": posixpath.join(source_dir(dep), url_file_name(src.url))}
    return {"kind": "hf", "repo": src.hf.repo, "revision": src.hf.revision,
            "files": list(src.hf.files) if src.hf.files else None, "dest": source_dir(dep),
            "token": src.token is not None}


def token_env(dep: Deployment) -> dict[str, dict]:
    """secret_env entry for the deployment's Hugging Face token (empty without one)."""
    if dep.source is None or dep.source.token is None:
        return {}
    return {TOKEN_ENV: dep.source.token.model_dump(exclude_none=True)}


