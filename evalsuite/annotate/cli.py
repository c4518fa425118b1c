"""`evalsuite annotate [serve] RUN [RUN ...]`, `evalsuite annotate export --store FILE`,
`evalsuite annotate import FILE`: human judgments in a local web app.

The first word picks the action (serve when it is neither `export` nor `import`), so
`evalsuite annotate runs/a runs/b` starts a pairwise project at once. Only stdlib at import time.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import sys
from pathlib import Path
from typing import Any

from evalsuite.argtypes import positive

ACTIONS = ("serve", "export", "import")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Serve a web app to annotate run outputs (pairwise, Likert or ranking), export the "
                          "judgments as a run dir, or import items from a JSONL/CSV file.")
    parser.add_argument("paths", nargs="*", metavar="[serve|export|import] PATH",
                        help="serve: run directories of one task; import: a JSONL or CSV items file")
    parser.add_argument("--mode", choices=["pairwise", "likert", "ranking"],
                        help="pairwise (default for two+ runs), likert (default for one run or an items file), ranking")
    parser.add_argument("--items", help="JSONL/CSV items file to serve instead of runs (see import)")
    parser.add_argument("--task", help="the task to annotate when the runs hold several")
    parser.add_argument("--criteria", help="Likert criteria, comma-separated (default: helpfulness,accuracy,"
                                           "relevance,completeness; '' for labels only)")
    parser.add_argument("--labels", help="Likert mode: a label to pick per answer, comma-separated choices "
                                         "(e.g. 1_full_compliance,2_full_refusal,3_partial_refusal)")
    parser.add_argument("--store", help="the project's SQLite file (default: next to the runs or the items file)")
    parser.add_argument("--name", help="project name (default: the task)")
    parser.add_argument("--shared-only", action="store_true", help="annotate the samples every run answered")
    parser.add_argument("--limit", type=positive, help="at most N samples")
    parser.add_argument("--seed", type=int, default=0, help="item order shuffle (default 0)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; others need --token)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    parser.add_argument("--token", help="secret every API call must carry (required off loopback; 'auto' makes one)")
    parser.add_argument("--prompt-field", default="prompt", help="import: the prompt field/column (default prompt)")
    parser.add_argument("--answer-fields", help="import: answer fields/columns, comma-separated (default: 'answers')")
    parser.add_argument("--label-fields", help="import: columns holding labels already given (kept per item)")
    parser.add_argument("--id-field", default="id", help="import: the item id field/column (default id)")
    parser.add_argument("--model-field", help="import: the column naming the model that wrote a single answer")
    parser.add_argument("--output-dir", default="runs", help="export: where the run dir goes (default runs)")
    parser.add_argument("--bootstrap", type=positive, default=1000, help="export: bootstrap rounds for CIs (default 1000)")
    parser.add_argument("--arena", help="export: an arena run dir whose judge is compared with the humans")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")


def run(args: argparse.Namespace) -> int:
    from evalsuite.errors import UsageError

    paths = list(args.paths)
    action = paths.pop(0) if paths and paths[0] in ACTIONS else "serve"
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be a positive number, got {args.limit}")
    if action == "export":
        return _export(args, paths)
    if action == "serve" and not args.token:
        from evalsuite.annotate.app import is_loopback

        if not is_loopback(args.host):
            raise UsageError(f"--host {args.host} makes the app reachable from other machines: pass --token SECRET "
                             "(or --token auto; annotators open the URL with ?token=...)")
    store = _build(args, paths, action)
    if action == "import":
        print(f"{store.project['n_items']} items in {store.path} ({store.mode}); "
              f"serve them with: evalsuite annotate --store {store.path}")
        return 0
    return _serve(args, store)


# the names evalsuite.cli looks for when it delegates a command
configure_annotate, run_annotate = configure, run


def _split(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _build(args: argparse.Namespace, paths: list[str], action: str) -> Any:
    from evalsuite.annotate import sources
    from evalsuite.annotate.store import DEFAULT_CRITERIA, Store
    from evalsuite.errors import UsageError

    files = [args.items] if args.items else paths if action == "import" else []
    if action == "import" and not files:
        raise UsageError("import takes JSONL or CSV files: evalsuite annotate import FILE [FILE ...] [--store STORE]")
    if not files and not paths:
        if args.store and Path(args.store).is_file():
            return Store(args.store)  # serve an existing project
        raise UsageError("no runs given: pass run directories (evalsuite annotate RUN [RUN ...]), --items FILE, "
                         "or --store FILE of an existing project")
    if files:
        mode = args.mode or "likert"
        items, origin = sources.from_files(files, mode, prompt_field=args.prompt_field,
                                           answer_fields=_split(args.answer_fields), id_field=args.id_field,
                                           label_fields=_split(args.label_fields), model_field=args.model_field,
                                           limit=args.limit)
        home = Path(files[0]).resolve().parent
    else:
        mode = args.mode or ("pairwise" if len(paths) > 1 else "likert")
        items, origin = sources.from_runs(paths, mode, args.task, args.shared_only, args.limit)
        home = Path(paths[0]).resolve().parent
    labels = _split(args.labels)
    criteria = list(DEFAULT_CRITERIA) if args.criteria is None else _split(args.criteria)
    if mode == "likert" and not criteria and not labels:
        raise UsageError("--criteria '' leaves nothing to rate: give criteria or --labels")
    if mode != "likert" and (labels or args.criteria is not None):
        raise UsageError(f"--criteria and --labels are for likert mode, not {mode}")
    project = {"name": args.name or origin["task"], "mode": mode, "criteria": criteria if mode == "likert" else [],
               "labels": labels if mode == "likert" else [], **origin}
    if args.store:
        path = Path(args.store)
    else:
        digest = hashlib.sha256("|".join(sorted(origin["sources"])).encode()).hexdigest()[:8]
        path = home / f"annotate-{_safe(project['name'])}-{mode}-{digest}.sqlite"
    return Store.create(path, project, items, seed=args.seed)


def _safe(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:40] or "project"


def _serve(args: argparse.Namespace, store: Any) -> int:
    from evalsuite.annotate.app import bind, create_app, is_loopback, server

    token = secrets.token_urlsafe(16) if args.token == "auto" else args.token
    app = create_app(store, token=token, host=args.host)  # refuses a non-loopback host without a token
    sock = bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else (f"[{host}]" if ":" in host else host)
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    progress = store.progress()
    print(f"annotating {store.project['n_items']} {store.mode} items ({store.project.get('name')}); "
          f"{sum(a['done'] for a in progress['annotators'].values())} judgments so far in {store.path}")
    print(f"open {url}" + ("" if is_loopback(host) else "  (reachable from other machines)"))
    print("stop with Ctrl+C; every judgment is saved as it is made")
    sys.stdout.flush()
    try:
        server(app, sock).run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return 0


def _export(args: argparse.Namespace, paths: list[str]) -> int:
    import json

    from evalsuite import rundir
    from evalsuite.annotate.export import write_export
    from evalsuite.annotate.store import Store
    from evalsuite.errors import UsageError

    if not args.store and len(paths) == 1 and paths[0].endswith(".sqlite"):
        args.store = paths[0]
    if not args.store:
        raise UsageError("export needs the project's store: evalsuite annotate export --store FILE")
    store = Store(args.store)
    if not store.judgments():
        raise UsageError(f"{args.store} holds no judgments yet: nothing to export")
    extra = {}
    if args.arena:
        from evalsuite.annotate.stats import judge_agreement

        log = rundir.load_run(args.arena)
        if log.results.kind != "arena":
            raise UsageError(f"--arena {args.arena} is not an arena run (kind {log.results.kind}); pass the run dir "
                             "`evalsuite arena` wrote")
        extra["judge_agreement"] = judge_agreement(store, log.records, n_boot=args.bootstrap, seed=args.seed)
        print(json.dumps(extra, indent=2))
    out = write_export(store, args.output_dir, n_boot=args.bootstrap, seed=args.seed, extra=extra)
    print(f"{len(store.judgments())} judgments by {len(store.progress()['annotators'])} annotators -> {out}")
    return 0
