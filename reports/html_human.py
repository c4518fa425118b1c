"""The "Human judgments" section of the HTML report (`compare --human ... --html`).

It lays out the same tables as the terminal and Markdown (`human.tables`), escaped by jinja2's
autoescape: store paths, annotator and model names are user text. The report's template includes
what `human_section` returns as one already-safe block.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

TEMPLATE = """<section id="human">
  <h2>Human judgments</h2>
  {% for b in blocks %}
  <h3 class="human-source">{{ b.headline }}</h3>
  {% for t in b.tables %}
  <h4>{{ t.title }}</h4>
  {% if t.rows %}<div class="scroll"><table class="human-table"><tr>{% for h in t.header %}<th>{{ h }}</th>{% endfor %}</tr>
    {% for r in t.rows %}<tr>{% for c in r %}<td{% if not loop.first %} class="num"{% endif %}>{{ c }}</td>{% endfor %}</tr>{% endfor %}
  </table></div>{% endif %}
  {% if t.note %}<p class="muted">{{ t.note }}</p>{% endif %}
  {% endfor %}
  {% if b.judge_line %}<p class="muted judge-none">{{ b.judge_line }}</p>{% endif %}
  {% endfor %}
</section>
"""


def human_section(blocks: Sequence[Any]) -> str:
    """The section's HTML, or "" without --human (then the report has no such section)."""
    if not blocks:
        return ""
    import jinja2

    from evalsuite.reports.human import headline, judge_line, tables

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    views = [{"headline": headline(b), "tables": tables(b), "judge_line": judge_line(b)} for b in blocks]
    return env.from_string(TEMPLATE).render(blocks=views)
