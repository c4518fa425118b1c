"""MMLU and GSM8K: prompts identical to lm-eval's templates, extraction like lm-eval's filters."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest
import yaml

from evalsuite.records import Output, Sample
from evalsuite.task import TaskContext
from evalsuite.tasks.gsm8k import GSM8K, extract_flexible, extract_strict, normalize
from evalsuite.tasks.mmlu import MMLU

from .conftest import write_gsm8k, write_mmlu

LM_EVAL_TASKS = Path(__import__("lm_eval").__file__).parent / "tasks"


def _lm_eval_yaml(path: Path) -> dict:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)  # lm-eval's !function tags
    return yaml.load(path.read_text(), Loader=Loader)


def test_mmlu_prompt_is_lm_evals(tmp_path: Path) -> None:
    ctx = TaskContext(data_dir=write_mmlu(tmp_path))
    samples = MMLU(num_fewshot=2).load(ctx)
    template = _lm_eval_yaml(LM_EVAL_TASKS / "mmlu/default/_default_template_yaml")["doc_to_text"]
    render = jinja2.Template(template).render
    dev = [{"question": f"anatomy dev question {i}?", "choices": [f"w{i}", f"x{i}", f"y{i}", f"z, {i}"]} for i in range(2)]
    shots = "".join(render(**d) + " " + "ABCD"[i % 4] + "\n\n" for i, d in enumerate(dev))
    test = render(question="anatomy test question 0?", choices=["w0", "x0", "y0", "z, 0"])
    expected = "The following are multiple choice questions (with answers) about anatomy.\n\n" + shots + test
    first = next(s for s in samples if s.id == "anatomy/0")
    assert first.input == expected
    assert [r.continuation for r in MMLU().requests(first)] == [" A", " B", " C", " D"]


def test_mmlu_limit_spreads_over_subjects(tmp_path: Path) -> None:
    samples = MMLU().load(TaskContext(data_dir=write_mmlu(tmp_path)))
    assert [s.metadata["subject"] for s in samples[:4]] == ["anatomy", "astronomy"] * 2


def test_mmlu_scores_argmax_and_text() -> None:
    task, sample = MMLU(), Sample("s/0", "q", target="C", choices=list("ABCD"))
    lls = [Output(logprob=v) for v in (-3.0, -2.0, -0.5, -9.0)]
    assert task.score(sample, lls).values == {"acc": 1.0}
    assert task.score(sample, [Output(texts=["The answer is B."])]).answer == "B"


def test_gsm8k_prompt_is_lm_evals(tmp_path: Path) -> None:
    ctx = TaskContext(data_dir=write_gsm8k(tmp_path))
    sample = GSM8K().load(ctx)[0]
    config = _lm_eval_yaml(LM_EVAL_TASKS / "gsm8k/gsm8k.yaml")
    to_text, to_target = jinja2.Template(config["doc_to_text"]).render, jinja2.Template(config["doc_to_target"]).render
    train = [{"question": f"What is {i} plus {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"} for i in range(5)]
    shots = "".join(to_text(**d) + " " + to_target(**d) + "\n\n" for d in train)
    assert sample.input == shots + to_text(question="Tom has 0 apples and buys 1 more. How many?")
    (req,) = GSM8K().requests(sample)
    assert list(req.stop) == config["generation_kwargs"]["until"]


@pytest.mark.parametrize(("text", "strict", "flexible"), [
    ("so 5 + 3 = 8\n#### 8", "8", "8"),
    ("The total is $1,234.", "[invalid]", "$1,234."),
    ("answer -7 then 12 and finally 3", "[invalid]", "3"),
    ("#### 42\n\nQuestion: 7", "42", "7"),
    ("no numbers here", "[invalid]", "[invalid]"),
])
def test_gsm8k_extraction_matches_lm_eval_filters(text: str, strict: str, flexible: str) -> None:
    from lm_eval.filters.extraction import RegexFilter

    assert extract_strict(text) == strict
    assert extract_flexible(text) == flexible
    lm_strict = RegexFilter(regex_pattern=r"#### (\-?[0-9\.\,]+)").apply([[text]], [{}])
    lm_flex = RegexFilter(regex_pattern=r"(-?[$0-9.,]{2,})|(-?[0-9]+)", group_select=-1).apply([[text]], [{}])
    assert list(lm_strict)[0][0] == strict and list(lm_flex)[0][0] == flexible


def test_gsm8k_normalisation() -> None:
    assert normalize("Janet sells 9 eggs.\n#### 18") == "18"
    assert normalize("$1,234.") == "1234"
    task, sample = GSM8K(), Sample("0", "q", target="x\n#### 1234")
    assert task.score(sample, [Output(texts=["it is $1,234.\n#### 1,234"])]).values == {
        "exact_match_strict": 1.0, "exact_match_flexible": 1.0}


@pytest.mark.slow
def test_real_model_on_real_data(shared_data: Path, tmp_path: Path) -> None:
    """Five real MMLU and GSM8K questions through SmolLM2-135M, end to end."""
    from evalsuite.rundir import load_run
    from evalsuite.runner import RunConfig, run_eval

    run = load_run(run_eval(RunConfig(tasks=["mmlu", "gsm8k"], model="smollm2-135m", limit=5,
                                      data_dir=str(shared_data), output_dir=str(tmp_path))))
    assert run.tasks["mmlu"].n == 5 and run.tasks["gsm8k"].n == 5
    assert len({r.sample.metadata["subject"] for r in run.records_for("mmlu")}) == 5
    gsm = run.records_for("gsm8k")
    assert all(r.outputs[0].tokens_out > 0 and "Question:" not in r.outputs[0].text for r in gsm)
    # the model imitates the exemplars' "#### N" format on at least one question
    assert any(r.score.answer["strict"] != "[invalid]" for r in gsm)
