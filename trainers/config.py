"""The `evalsuite train` configuration: one YAML file, validated before any model loads.

Every key is a pydantic field with a description; `evalsuite train --explain` prints them all, so
the documentation cannot drift from the code. Unknown keys are errors (a typo such as `learning_rate`
for `lr` must not silently train with the default).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from evalsuite.errors import UsageError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class DatasetSpec(_Strict):
    path: str | None = Field(None, description="local .json/.jsonl file or a folder of them (relative to the config file)")
    hub: str | None = Field(None, description="a hub dataset id loaded with `datasets.load_dataset` (needs network)")
    subset: str | None = Field(None, description="hub dataset configuration name")
    split: str = Field("train", description="hub dataset split")
    format: Literal["auto", "alpaca", "messages", "sharegpt"] = Field(
        "auto",
        description="record layout: alpaca (instruction/input/output; self-instruct `instances` lists are expanded), "
        "messages (OpenAI-style role/content list), sharegpt (conversations of from/value); auto detects per record",
    )
    weight: float = Field(1.0, gt=0, description="mixture weight: share of training examples drawn from this dataset")
    limit: int | None = Field(None, ge=1, description="use only the first N conversations of this dataset")
    system_prompt: str | None = Field(None, description="system message added to conversations that have none")
    difficulty_field: str | None = Field(None, description="record field ordering the curriculum when curriculum: field")

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSpec:
        if bool(self.path) == bool(self.hub):
            raise ValueError("give exactly one of `path` or `hub`")
        return self

    @property
    def name(self) -> str:
        return Path(self.path).stem if self.path else str(self.hub).split("/")[-1]


class DataConfig(_Strict):
    datasets: list[DatasetSpec] = Field(..., min_length=1, description="training datasets (a mixture when several)")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="share of each dataset held out for validation loss")
    val_max: int = Field(64, ge=0, description="cap on validation conversations per dataset (keeps val loss cheap)")
    max_seq_len: int = Field(512, ge=16, description="tokens per training row; longer conversations are truncated")
    truncation: Literal["truncate", "drop"] = Field("truncate", description="what to do with conversations over max_seq_len")
    packing: bool = Field(True, description="pack several conversations per row (attention kept inside each)")
    curriculum: Literal["none", "length", "field"] = Field(
        "none", description="order of examples: shuffled (none), short to long (length), or by each dataset's difficulty_field"
    )
    decontaminate: bool | list[str] = Field(
        True, description="check the training data against evalsuite tasks (13-gram overlap, evalsuite.datagen."
        "decontam): true = the eval.tasks (default), a list = those tasks, false or [] = off. The report goes to "
        "<run>/decontamination.json and into every checkpoint's eval run directory")
    decontaminate_action: Literal["drop", "report"] = Field(
        "drop", description="drop contaminated conversations before the split, or only report them")
    fingerprints: bool = Field(
        True, description="write the training conversations' n-gram fingerprints (<run>/training_ngrams.npy, 8 bytes "
        "per distinct 13-gram and 8-gram) so that `evalsuite run --model CHECKPOINT` warns when a task's samples were "
        "trained on; false for a dataset too large to index (the checkpoint is then not checked)")
    chat_template: str = Field(
        "auto",
        description="auto (the tokenizer's own, else ChatML), chatml, or a Jinja template string; the evaluation of "
        "every checkpoint uses the same template, recorded in the run directory",
    )


class LoraConfig(_Strict):
    r: int = Field(16, ge=1, description="LoRA rank")
    alpha: float = Field(32, gt=0, description="LoRA alpha (scaling = alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA input")
    target_modules: str | list[str] = Field(
        "all-linear", description="modules to adapt: 'all-linear' (every linear layer but the output head) or a list of names"
    )


class TrainingConfig(_Strict):
    method: Literal["lora", "qlora", "full"] = Field(
        "lora", description="lora (adapters on a frozen base), qlora (4-bit base via bitsandbytes, CUDA only), full fine-tuning"
    )
    max_steps: int | None = Field(None, ge=1, description="optimizer steps to run (give this or epochs)")
    epochs: float | None = Field(None, gt=0, description="passes over the training data (sets max_steps when it is not given)")
    micro_batch_size: int = Field(4, ge=1, description="rows of max_seq_len tokens per forward pass")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step (effective batch = micro x accum x processes)")
    lr: float = Field(2e-4, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="learning-rate schedule after warmup")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="share of steps with linear warmup")
    max_grad_norm: float | None = Field(1.0, gt=0, description="gradient clipping norm (null: no clipping)")
    device: Literal["auto", "cuda", "cpu"] = Field("auto", description="auto: CUDA when torch sees a GPU, else CPU")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="the dtype: auto = bf16 autocast (fp32 master weights) on GPUs that support it, else fp32")
    neftune_alpha: float | None = Field(None, gt=0, description="NEFTune embedding-noise alpha (training only; null: off)")
    gradient_checkpointing: bool = Field(False, description="trade compute for memory on long rows")
    num_threads: int | None = Field(None, ge=1, description="CPU threads for torch (default: torch's choice)")
    keep_optimizer: Literal["last", "all"] = Field(
        "last", description="which checkpoints keep their optimizer state: the newest (all that resume needs) or all")

    @model_validator(mode="after")
    def _length(self) -> TrainingConfig:
        if self.max_steps is None and self.epochs is None:
            raise ValueError("give max_steps or epochs")
        return self


class EvalConfig(_Strict):
    every: int = Field(0, ge=0, description="save, validate and score a checkpoint every N steps (0: only at the end)")
    tasks: list[str] = Field(default_factory=list, description="evalsuite tasks scored on every checkpoint")
    at_start: bool = Field(False, description="also score step 0 (the untouched base model): the 'before' row")
    limit: int | None = Field(None, ge=1, description="samples per task (like `evalsuite run --limit`)")
    data_dir: str | None = Field(None, description="data dir for the tasks, relative to the config file (default: EVALSUITE_DATA_DIR)")
    task_args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for every task factory, or {TASK: {...}} per task")
    backend: str = Field(
        "hf", description="backend scoring saved checkpoints: it must load a PEFT adapter folder unmerged (hf, or vllm "
        "with LoRA). In-process, hf scores with the training model itself and vllm serves each checkpoint on one warm engine")
    model_args: dict[str, Any] = Field(default_factory=dict, description="extra backend arguments (e.g. batch_size)")
    best_metric: str = Field("val_loss", description="'val_loss' or 'TASK/METRIC' choosing the best checkpoint")
    best_mode: Literal["auto", "max", "min"] = Field("auto", description="auto: min for losses, max for scores")
    asynchronous: Literal["auto", "on", "off"] = Field(
        "auto", description="score checkpoints in a separate process while training goes on (auto: on with a GPU)"
    )
    keep_last: int | None = Field(None, ge=1, description="keep only the last N checkpoints (plus the best); null keeps all")

    @model_validator(mode="after")
    def _backend_needs_a_child(self) -> EvalConfig:
        if self.backend not in ("hf", "vllm") and self.asynchronous == "off":
            raise ValueError(f"backend '{self.backend}' scores saved checkpoints in a child process: "
                             "set asynchronous to auto or on")
        return self

    @property
    def minimise(self) -> bool:
        """auto: losses are minimised; a TASK/METRIC goes the way its task declares (`Task.higher_is_better`)."""
        if self.best_mode != "auto":
            return self.best_mode == "min"
        if "/" not in self.best_metric:
            return "loss" in self.best_metric
        task, metric = self.best_metric.split("/", 1)
        try:
            from evalsuite import registry

            factory = registry.get("tasks", task.partition(":")[0])
        except Exception:  # noqa: BLE001 - an unknown task is reported by the preflight, not here
            return False
        direction = getattr(factory, "metric_higher_is_better", None)  # a Task class: read its declaration
        return isinstance(factory, type) and callable(direction) and direction(factory, metric) is False


class ExportConfig(_Strict):
    merged: bool = Field(False, description="at the end, merge the best checkpoint into the base and save safetensors")
    gguf: list[Literal["f16", "q8_0", "q4_0"]] = Field(
        default_factory=list, description="GGUF files to write from the merged model (llama-architecture models, "
        "checked before training; k-quants such as q4_k_m need llama.cpp's llama-quantize run on the f16 file)")


class TrainConfig(_Strict):
    model: str = Field(..., description="base model: an evalsuite --model spec (alias, folder, .gguf, hub id)")
    run_name: str | None = Field(None, description="run directory name (default: train-<model>-<time>)")
    output_dir: str = Field("runs", description="where the run directory goes")
    seed: int = Field(1234, description="seed for data order, mixture sampling, initialisation and dropout")
    data: DataConfig
    training: TrainingConfig
    lora: LoraConfig = Field(default_factory=LoraConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)

    @model_validator(mode="after")
    def _best_metric_is_scored(self) -> TrainConfig:
        if (problem := best_metric_problem(self)) is not None:
            raise ValueError(problem)
        if self.eval.backend == "vllm" and self.eval.asynchronous == "off" and self.training.method == "full":
            raise ValueError("eval.backend vllm serves LoRA checkpoints in-process; a full fine-tune's checkpoints "
                             "are scored in a child process: set eval.asynchronous to auto or on")
        return self

    def decontamination_tasks(self) -> list[str]:
        """The tasks the training data is checked against: eval.tasks unless the config says otherwise."""
        d = self.data.decontaminate
        return list(self.eval.tasks) if d is True else [] if d is False else list(d)

    def fingerprint(self) -> str:
        """What must not change when a run resumes (everything but eval/export and output place).

        Dropping contaminated rows changes the training data, so the resolved decontamination
        tasks count even when they come from eval.tasks."""
        keep = self.model_dump(exclude={"eval": True, "export": True, "output_dir": True, "run_name": True,
                                        "training": {"keep_optimizer"}, "data": {"fingerprints"}})  # disk policy: not what is trained
        drop = self.data.decontaminate_action == "drop"
        d = self.data.decontaminate  # "report" leaves the data as it is: the value as written (older runs resume)
        keep["data"]["decontaminate"] = self.decontamination_tasks() if drop else (d if isinstance(d, list) else [])
        return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def best_metric_problem(cfg: TrainConfig) -> str | None:
    """Why best_metric can never name a checkpoint, or None.

    A mistyped metric would silently mark no best checkpoint, skip the export and leave keep_last
    nothing to protect. The default (val_loss) without a validation set is only refused when
    something depends on the best checkpoint (keep_last, export)."""
    e, d, metric = cfg.eval, cfg.data, cfg.eval.best_metric
    if metric == "train_loss":
        return None
    if metric == "val_loss":
        needed = "best_metric" in e.model_fields_set or e.keep_last or cfg.export.merged or cfg.export.gguf
        if needed and (d.val_fraction == 0 or d.val_max == 0):
            return ("eval.best_metric is val_loss but data.val_fraction or data.val_max is 0 (no validation set): "
                    "give both a value > 0, or best_metric: TASK/METRIC")
        return None
    if not any(metric.startswith(t + "/") and len(metric) > len(t) + 1 for t in e.tasks):
        return (f"eval.best_metric '{metric}' must be val_loss, train_loss or TASK/METRIC with TASK one of "
                f"eval.tasks {e.tasks}")
    return None


def _format_errors(exc: ValidationError, source: str) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (see `evalsuite train --explain`)"
        parts.append(f"{where}: {msg}" if err["loc"] else msg)
    return f"invalid train config {source}: " + "; ".join(parts)


def parse(raw: Any, source: str = "<config>", base_dir: Path | None = None) -> TrainConfig:
    """Validate a loaded YAML mapping; relative data paths are taken from the config's folder."""
    if not isinstance(raw, dict):
        raise UsageError(f"invalid train config {source}: expected a mapping of keys, got {type(raw).__name__}")
    try:
        cfg = TrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise UsageError(_format_errors(exc, source)) from None
    if base_dir is not None:
        for ds in cfg.data.datasets:
            if ds.path and not Path(ds.path).expanduser().is_absolute():
                ds.path = str((base_dir / ds.path).resolve())
        if cfg.eval.data_dir and not Path(cfg.eval.data_dir).expanduser().is_absolute():
            cfg.eval.data_dir = str((base_dir / cfg.eval.data_dir).resolve())
    return cfg


def load(path: str | Path) -> TrainConfig:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"train config not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UsageError(f"train config {p} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return parse(raw, str(p), p.resolve().parent)


def explain() -> str:
    """Every key with its type, default and description: the reference behind `--explain`."""
    lines: list[str] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            ann = field.annotation
            sub = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)), None)
            if sub is not None and prefix + name != "data.datasets" and name != "datasets":
                lines.append(f"{prefix}{name}:")
                walk(sub, prefix + name + ".")
                continue
            default = "required" if field.is_required() else f"default {field.get_default(call_default_factory=True)!r}"
            lines.append(f"{prefix}{name}  ({default})  {field.description or ''}")
            if name == "datasets":
                walk(DatasetSpec, prefix + "datasets[].")

    walk(TrainConfig, "")
    return "\n".join(lines)
