"""ARC and HellaSwag: prompts and metrics identical to lm-eval's, from shared/data's forms and the hub's.

Also the one multiple-choice scorer they, MMLU and TruthfulQA share (`tasks/multiple_choice.py`), and
the plugin example of docs/plugins.md built on it."""

from __future__ import annotations

import bz2
import json
from pathlib import Path

import jinja2
import pytest
from evalsuite.tasks.arc import ARC
from evalsuite.tasks.hellaswag import HellaSwag, hub_sample, preprocess, text_sample
from evalsuite.tasks.mmlu import MMLU
from evalsuite.tasks.multiple_choice import MultipleChoiceTask, choice_metrics
from evalsuite.tasks.truthfulqa import TruthfulQAMC1, TruthfulQAMC2

from evalsuite import registry
from evalsuite.records import Output, Sample
from evalsuite.task import TaskContext

from .test_hub_loading import _hub_repo
from .test_spine_tasks import LM_EVAL_TASKS, _lm_eval_yaml

ROOF = {  # item 24 of Rowan/hellaswag validation, as published
    "ind": 24, "activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.", "ctx_b": "he",
    "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.", "is holding a rubik's cube.",
                "starts pulling up roofing on a roof."], "label": "3",
}
ROOF_TEXT = ["Roof shingle removal: A man is sitting on a roof. he\n", "3\n"] + [e + "\n" for e in ROOF["endings"]]
WIKIHOW = {
    "ind": 7, "activity_label": "Home and Garden", "ctx_b": "",
    "ctx_a": "[header] How to  grow basil [title] Pick a pot. [step] Use a pot with [www.pots.org] holes.",
    "endings": ["[substeps] Water it  daily.", " [title] Let it dry."], "label": "0",
}


def _lm_eval_hellaswag(rows: list[dict]) -> list[dict]:
    from datasets import Dataset
    from lm_eval.tasks.hellaswag.utils import process_docs

    return list(process_docs(Dataset.from_list(rows)))


def test_arc_prompt_is_lm_evals(tmp_path: Path) -> None:
    (tmp_path / "arc").mkdir()
    row = {"query": "Question: Which gas do plants take in?", "choices": ["oxygen", "carbon dioxide", "helium", "neon"], "gold": 1}
    (tmp_path / "arc" / "arc_easy_test.jsonl").write_text(json.dumps(row) + "\n")
    (sample,) = ARC("easy").load(TaskContext(data_dir=tmp_path))
    config = _lm_eval_yaml(LM_EVAL_TASKS / "arc/arc_easy.yaml")
    doc = {"question": "Which gas do plants take in?", "answerKey": "B",
           "choices": {"text": row["choices"], "label": ["A", "B", "C", "D"]}}
    render = lambda key: jinja2.Template(config[key]).render(**doc)
    assert sample.input == render("doc_to_text")
    assert sample.target == int(render("doc_to_target")) == 1
    assert [r.continuation for r in ARC().requests(sample)] == [" oxygen", " carbon dioxide", " helium", " neon"]


def test_arc_from_hub_layout(tmp_path: Path) -> None:
    rows = [{"id": "Mercury_1", "question": "What melts ice?", "answerKey": "2",
             "choices": {"text": ["cold", "heat", "dark"], "label": ["1", "2", "3"]}}]
    repo = _hub_repo(tmp_path / "ai2_arc", "ARC-Challenge", {"test": rows})
    (sample,) = ARC("challenge", hub_path=str(repo)).load(TaskContext(data_dir=None))
    assert (sample.id, sample.input, sample.target, sample.choices) == (
        "Mercury_1", "Question: What melts ice?\nAnswer:", 1, ["cold", "heat", "dark"])


def test_choice_metrics_are_lm_evals() -> None:
    """acc picks the raw argmax; acc_norm divides by characters, acc_bytes by UTF-8 bytes."""
    choices = ["ab", "a much longer answer", "éé"]
    logprobs = [-4.0, -6.0, -4.5]
    values, pred = choice_metrics(logprobs, choices, gold=1)
    assert pred == 0 and values == {"acc": 0.0, "acc_norm": 1.0, "acc_bytes": 1.0}
    values, _ = choice_metrics([-4.0, -60.0, -4.5], choices, gold=2)
    assert values == {"acc": 0.0, "acc_norm": 0.0, "acc_bytes": 1.0}  # 2 chars but 4 bytes
    sample = Sample("0", "Question: q\nAnswer:", target=1, choices=choices)
    score = ARC().score(sample, [Output(logprob=v) for v in logprobs])
    assert score.values["acc_norm"] == 1.0 and score.answer == 0
    assert ARC().score(sample, [Output(texts=["A much longer answer, surely"])]).values == {"acc": 1.0}


def test_hellaswag_preprocess_is_lm_evals() -> None:
    from lm_eval.tasks.hellaswag.utils import preprocess as lm_preprocess

    for text in (WIKIHOW["ctx_a"], " [title] x [step]  y", "a  b [x] [title]c", "plain."):
        assert preprocess(text) == lm_preprocess(text)


@pytest.mark.parametrize("row", [ROOF, WIKIHOW])
def test_hellaswag_hub_rows_match_lm_eval(row: dict) -> None:
    (doc,) = _lm_eval_hellaswag([row])
    sample = hub_sample(row, 0)
    assert (sample.input, sample.choices, sample.target) == (doc["query"], doc["choices"], doc["gold"])


def test_hellaswag_text_form_rebuilds_lm_evals_prompt() -> None:
    """The text form lost ctx_b's capital: "...roof. he" must become lm-eval's "...roof. He"."""
    (doc,) = _lm_eval_hellaswag([ROOF])
    sample = text_sample(ROOF_TEXT, 0)
    assert sample.input == doc["query"] == "Roof shingle removal: A man is sitting on a roof. He"
    assert (sample.choices, sample.target) == (doc["choices"], 3)
    assert text_sample(["A: Ends mid sentence so. fine\n", "0\n", "a\n", "b\n", "c\n", "d\n"], 1).input == "A: Ends mid sentence so. Fine"
    assert text_sample(["A: all lower case\n", "0\n", "a\n", "b\n", "c\n", "d\n"], 1).input == "A: all lower case"


def test_hellaswag_data_dir_and_hub_layout(tmp_path: Path) -> None:
    (tmp_path / "hellaswag").mkdir()
    with bz2.open(tmp_path / "hellaswag" / "hellaswag_val_full.txt.bz2", "wt", encoding="utf-8") as f:
        f.writelines(ROOF_TEXT * 2)
    samples = HellaSwag().load(TaskContext(data_dir=tmp_path))
    assert [s.id for s in samples] == ["0", "1"] and samples[1].input.endswith("roof. He")
    repo = _hub_repo(tmp_path / "hub", "default", {"validation": [ROOF, WIKIHOW]})
    samples = HellaSwag(hub_path=str(repo)).load(TaskContext(data_dir=None))
    assert [s.id for s in samples] == ["24", "7"] and samples[1].choices == [" Water it daily.", " Let it dry."]  # lm-eval strips before untagging


def test_hellaswag_bad_text_form_is_a_data_error(tmp_path: Path) -> None:
    from evalsuite.errors import DataError

    (tmp_path / "hellaswag").mkdir()
    with bz2.open(tmp_path / "hellaswag" / "hellaswag_val_full.txt.bz2", "wt") as f:
        f.writelines(ROOF_TEXT[:5])
    with pytest.raises(DataError, match="multiple of 6"):
        HellaSwag().load(TaskContext(data_dir=tmp_path))


@pytest.mark.slow
def test_real_model_on_real_arc_and_hellaswag(shared_data: Path, smollm2_dir: Path, tmp_path: Path) -> None:
    """A real question of each through SmolLM2-135M, end to end via the runner (arc_easy: same code).

    Agreement with lm-eval on 200 questions is benchmarks/bench_fidelity_lmeval.py's job, not a test's.
    """
    from evalsuite.rundir import load_run
    from evalsuite.runner import RunConfig, run_eval

    run = load_run(run_eval(RunConfig(tasks=["arc_challenge", "hellaswag"], model="smollm2-135m",
                                      limit=1, data_dir=str(shared_data), output_dir=str(tmp_path))))
    for name in ("arc_challenge", "hellaswag"):
        assert run.tasks[name].n == 1 and set(run.tasks[name].metrics) == {"acc", "acc_norm", "acc_bytes"}
        assert all(len(r.outputs) == 4 and all(o.logprob < 0 for o in r.outputs) for r in run.records_for(name))


def test_one_multiple_choice_scorer_for_every_multiple_choice_task() -> None:
    """Catches a second copy of multiple-choice requests or scoring coming back (ARC's own `choice_metrics`
    and `ChoiceTask`, MMLU's own argmax): every task here takes both from `MultipleChoiceTask`; only
    MC2's different metric and MMLU's letter reading of text answers are their own."""
    import evalsuite.tasks.arc as arc
    import evalsuite.tasks.hellaswag as hellaswag
    import evalsuite.tasks.mmlu as mmlu

    for cls in (ARC, HellaSwag, MMLU, TruthfulQAMC1, TruthfulQAMC2):
        assert issubclass(cls, MultipleChoiceTask), cls
        assert "requests" not in vars(cls), f"{cls.__name__} makes its own requests"
        assert "score" not in vars(cls) or cls is TruthfulQAMC2, f"{cls.__name__} scores on its own"
    for module in (arc, hellaswag, mmlu):
        assert not hasattr(module, "choice_metrics") and not hasattr(module, "ChoiceTask"), module.__name__


def test_mmlu_scores_through_the_helper_with_letters_as_answers() -> None:
    """Catches MMLU's answers or metrics changing on the shared scorer: `acc` only (lm-eval's mmlu), the
    answer is the letter (as before), ties go to A, a text answer's letter is read anywhere in it."""
    task = MMLU()
    sample = Sample("s/0", "q\nAnswer:", target="C", choices=list("ABCD"), metadata={"subject": "s"})
    assert [(r.context, r.continuation) for r in task.requests(sample)] == [("q\nAnswer:", f" {c}") for c in "ABCD"]
    score = task.score(sample, [Output(logprob=v) for v in (-3.0, -2.0, -0.5, -9.0)])
    assert (score.values, score.answer) == ({"acc": 1.0}, "C")
    tie = task.score(sample, [Output(logprob=-1.0) for _ in "ABCD"])
    assert (tie.values, tie.answer) == ({"acc": 0.0}, "A")
    assert task.score(sample, [Output(texts=["The answer is C."])]).values == {"acc": 1.0}
    text = task.score(sample, [Output(texts=["no letter here"])])
    assert (text.values, text.answer) == ({"acc": 0.0}, None)


def test_mmlu_letters_stay_one_token_requests_on_one_context(shared_data: Path, smollm2_dir: Path) -> None:
    """Catches the helper breaking the backends' fast path: MMLU's four answers must be one-token
    continuations of one identical context (hf computes that context once; vLLM reads all four from one
    next-token distribution). A delimiter joined to the context, or "A." as the choice, would end it."""
    from transformers import AutoTokenizer

    from evalsuite.backends.tokens import LocalTokenization

    class Tok(LocalTokenization):
        tokenizer, add_bos_token = AutoTokenizer.from_pretrained(smollm2_dir), False

    tok, task = Tok(), MMLU()
    for sample in task.load(TaskContext(data_dir=shared_data))[:5]:
        pairs = [tok._encode_pair(r.context, r.continuation) for r in task.requests(sample)]
        assert len({tuple(ctx) for ctx, _ in pairs}) == 1, sample.id
        assert [len(cont) for _, cont in pairs] == [1, 1, 1, 1], sample.id


def _docs_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """docs/plugins.md's multiple-choice plugin, installed from the page's code block as a package would be."""
    from tests.plugin_dist import install_entry_points

    page = (Path(__file__).parents[1] / "docs" / "plugins.md").read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in page.split("```python\n")[1:]]
    (code,) = [b for b in blocks if b.startswith("# evalsuite_truthful.py")]
    assert len(code.splitlines()) <= 30, "the docs' example is meant to stay short"
    (tmp_path / "evalsuite_truthful.py").write_text(code, encoding="utf-8")
    install_entry_points(tmp_path, monkeypatch, "evalsuite-truthful", {"evalsuite.tasks": {
        "truthful_mc1": "evalsuite_truthful:TruthfulMC1"}})
    return "truthful_mc1"


def test_docs_multiple_choice_plugin_loads_as_a_task(shared_data: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Catches docs/plugins.md's example going stale: it must resolve by entry point, read the real
    TruthfulQA file into the built-in MC1's choices and gold, and score with the helper (acc only)."""
    name = _docs_plugin(tmp_path, monkeypatch)
    task = registry.get("tasks", name)()
    ctx = TaskContext(data_dir=shared_data)
    ours, builtin = task.load(ctx), TruthfulQAMC1().load(ctx)
    assert len(ours) == len(builtin) == 817
    assert [(s.id, s.choices, s.target) for s in ours] == [(s.id, s.choices, s.target) for s in builtin]
    assert ours[0].input == f"Q: {json.loads((shared_data / 'truthfulqa' / 'mc_task.json').read_text())[0]['question']}\nA:"
    first = ours[0]
    assert [r.continuation for r in task.requests(first)] == [f" {c}" for c in first.choices]
    lls = [Output(logprob=-1.0 if i == first.target else -5.0) for i in range(len(first.choices))]
    assert task.score(first, lls).values == {"acc": 1.0}
    with pytest.raises(Exception, match="missing data"):
        task.load(TaskContext(data_dir=tmp_path))  # no truthfulqa/ there: the DataError names the path


@pytest.mark.slow
def test_docs_multiple_choice_plugin_runs_on_smollm2(shared_data: Path, smollm2_dir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Catches the docs' plugin failing in a real run (runner, backend, results) on real data."""
    from evalsuite.rundir import load_run
    from evalsuite.runner import RunConfig, run_eval

    name = _docs_plugin(tmp_path, monkeypatch)
    run = load_run(run_eval(RunConfig(tasks=[name], model="smollm2-135m", limit=3, data_dir=str(shared_data),
                                      output_dir=str(tmp_path / "runs"))))
    assert run.tasks[name].n == 3 and set(run.tasks[name].metrics) == {"acc"}
    assert all(all(o.logprob < 0 for o in r.outputs) and r.score.answer in range(len(r.sample.choices))
               for r in run.records_for(name))
