"""evalsuite's backends as an lm-evaluation-harness model: `--model evalsuite --model_args model=...`.

lm-eval users get evalsuite's HF / vLLM / OpenAI-compatible backends and its SQLite call cache
(a re-run asks the model nothing it has answered before). lm-eval has no plugin entry points:
its model registry only knows what has been imported. So run lm-eval through this module, which
registers "evalsuite" and then hands the command line to lm-eval's own CLI unchanged:

    python -m evalsuite.lm_eval_model --model evalsuite --model_args model=smollm2-135m --tasks hellaswag

or, in Python, `import evalsuite.lm_eval_model` before `lm_eval.simple_evaluate(model="evalsuite", ...)`.
For the plain `lm_eval` command, `python -m evalsuite.lm_eval_model --install-hook` writes a
startup hook (`evalsuite_lm_eval.pth` in site-packages; `--uninstall-hook` removes it): in a
process started as `lm_eval`, `lm-eval` or `python -m lm_eval` it imports this module just before
lm-eval's CLI loads; any other Python process only pays one argv comparison. lm-eval releases
that discover models through the `lm_eval.models` entry-point group need no hook.
model_args: `model` (any evalsuite model spec: alias, folder, .gguf, `vllm:PATH`, `openai:NAME`),
`backend` (default: chosen from the spec, else hf), `cache` (true), `cache_path`; every other key goes
to the backend (e.g. `dtype`, `base_url`, `max_concurrency`).
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path
from typing import Any

import lm_eval.models  # noqa: F401 - lm-eval imports its own models only while its registry is empty
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from evalsuite.errors import BackendError
from evalsuite.records import GenerateRequest, LoglikelihoodRequest, Output, Request


def _parse_bool(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")


class EvalsuiteLM(LM):
    """An lm-eval `LM` whose requests go through evalsuite's cache and backend."""

    def __init__(self, model: str, backend: str | None = None, cache: bool | str = True,
                 cache_path: str | None = None, backend_object: Any = None, **model_args: Any) -> None:
        super().__init__()
        from evalsuite.backends import Backend, require_backend
        from evalsuite.cache import CallCache, NullCache
        from evalsuite.runner import make_backend

        # the cache first: a bad cache path fails before a model loads
        self.cache = CallCache(Path(cache_path) if cache_path else None) if _parse_bool(cache) else NullCache()
        self.backend: Backend = require_backend(backend_object or make_backend(model, backend, model_args))
        self.spec = model

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> EvalsuiteLM:
        """lm-eval's batch_size/device flags belong to its own models: the backend has its own settings."""
        from lm_eval.utils import simple_parse_args_string

        return cls(**simple_parse_args_string(arg_string))

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict[str, Any], additional_config: dict | None = None) -> EvalsuiteLM:
        return cls(**arg_dict)

    # ---------------------------------------------------------------- serving
    def _serve(self, requests: list[Request], label: str) -> list[Output]:
        from evalsuite.progress import make_progress
        from evalsuite.runner import serve

        with make_progress() as progress:
            outs = serve(requests, self.backend, self.cache, self.backend.fingerprint, progress, label)
        failed = next((o.error for o in outs if o.error), None)
        if failed:  # lm-eval has no notion of a failed request: stop rather than score it as wrong
            raise BackendError(f"evalsuite backend failed a request: {failed}")
        return outs

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        outs = self._serve([LoglikelihoodRequest(*r.args) for r in requests], "loglikelihood")
        return [(float(o.logprob), bool(o.is_greedy)) for o in outs]  # type: ignore[arg-type]

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """One window from the EOT token: lm-eval's rolling value while the text fits the context."""
        outs = self._serve([LoglikelihoodRequest("", r.args[0]) for r in requests], "loglikelihood_rolling")
        return [float(o.logprob) for o in outs]  # type: ignore[arg-type]

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        reqs = []
        for r in requests:
            context, gen = r.args[0], dict(r.args[1] or {})
            until = gen.get("until") or []
            temperature = float(gen.get("temperature", 0.0)) if gen.get("do_sample", True) else 0.0
            reqs.append(GenerateRequest(prompt=context, max_tokens=int(gen.get("max_gen_toks", 256)),
                                        stop=tuple([until] if isinstance(until, str) else until),
                                        temperature=temperature, top_p=float(gen.get("top_p", 1.0))))
        return [o.text for o in self._serve(reqs, "generate_until")]

    def get_model_info(self) -> dict[str, Any]:
        return {"model_spec": self.spec, "evalsuite_fingerprint": self.backend.fingerprint,
                **{f"evalsuite_{k}": v for k, v in self.backend.info().items() if isinstance(v, (str, int, float, bool))}}

    def __del__(self) -> None:
        cache = getattr(self, "cache", None)
        if cache is not None:
            cache.close()


if __name__ != "__main__":  # `python -m` runs a second copy of this file: register the imported one only
    register_model("evalsuite")(EvalsuiteLM)


# ---------------------------------------------------------------- the `lm_eval` startup hook
HOOK_FILE = "evalsuite_lm_eval.pth"
# Run by `site` at every interpreter start, so: stdlib only, and nothing happens unless the process
# is lm-eval's CLI. It cannot import evalsuite yet (other .pth files, e.g. an editable install's,
# may not have run), so it waits on a meta-path finder until lm_eval/__main__ imports `lm_eval._cli`.
_HOOK_SOURCE = """
def _evalsuite_hook():
    import sys
    argv = [a.replace(chr(92), "/").rsplit("/", 1)[-1] for a in getattr(sys, "orig_argv", sys.argv)[1:3]]
    if not argv or not (argv[0].removesuffix(".exe") in ("lm_eval", "lm-eval") or argv == ["-m", "lm_eval"]):
        return
    class Finder:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name == "lm_eval._cli":
                sys.meta_path.remove(Finder)
                try:
                    import evalsuite.lm_eval_model
                except Exception as exc:
                    print(f"evalsuite: lm-eval model 'evalsuite' not registered: {exc!r}", file=sys.stderr)
            return None
    sys.meta_path.insert(0, Finder)
_evalsuite_hook()
del _evalsuite_hook
"""


def install_hook(site_dir: str | Path | None = None) -> Path:
    """Write the .pth hook into `site_dir` (default: this interpreter's site-packages)."""
    path = Path(site_dir or sysconfig.get_paths()["purelib"]) / HOOK_FILE
    path.write_text(f"import sys; exec({_HOOK_SOURCE!r})\n", encoding="utf-8")
    return path


def uninstall_hook(site_dir: str | Path | None = None) -> Path:
    path = Path(site_dir or sysconfig.get_paths()["purelib"]) / HOOK_FILE
    path.unlink(missing_ok=True)
    return path


def main(argv: list[str] | None = None) -> None:
    """lm-eval's CLI with the "evalsuite" model registered (or `--install-hook` / `--uninstall-hook [DIR]`)."""
    from lm_eval.__main__ import cli_evaluate

    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("--install-hook", "--uninstall-hook"):
        path = (install_hook if args[0] == "--install-hook" else uninstall_hook)(args[1] if len(args) > 1 else None)
        print(f"{'wrote' if path.exists() else 'removed'} {path}")
        return
    sys.argv = [sys.argv[0], *args]
    cli_evaluate()


if __name__ == "__main__":
    from evalsuite.lm_eval_model import main as _main  # registers "evalsuite"

    _main()
