"""JUnit XML for the gate: one test case per gated task/metric, so any CI system shows the result.

The output is valid against the Jenkins xunit schema (jenkinsci/xunit-plugin's junit-10.xsd):
`<testsuites name tests failures errors time><testsuite name tests failures errors skipped time
timestamp><properties/><testcase classname name time/>...<system-out/></testsuite></testsuites>`,
where a test case has an optional `<failure message type>` or `<skipped message>` child. The
schema allows `skipped` on a test suite only, not on `testsuites`. Built with the stdlib
ElementTree, which escapes text and attributes.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from evalsuite.reports.gate import GateResult


def _num(v: float | None) -> str:
    return f"{v:.6g}" if v is not None and math.isfinite(v) else "n/a"


def render_junit(gate_result: GateResult, suite_name: str = "evalsuite gate", summary: str = "") -> str:
    """The gate result as a JUnit XML document (str, UTF-8 declaration included)."""
    comp = gate_result.comparison
    checks = gate_result.checks
    failures = sum(c.status == "fail" for c in checks)
    skipped = sum(c.status == "skipped" for c in checks)
    root = ET.Element("testsuites", name=suite_name, tests=str(len(checks)), failures=str(failures),
                      errors="0", time="0")
    created = comp.runs[gate_result.candidate].results.created[:19] or "1970-01-01T00:00:00"
    suite = ET.SubElement(root, "testsuite", name=suite_name, tests=str(len(checks)), failures=str(failures),
                          errors="0", skipped=str(skipped), time="0", timestamp=created)
    props = ET.SubElement(suite, "properties")
    for key, value in (("baseline", comp.runs[0].path), ("candidate", comp.runs[gate_result.candidate].path),
                       ("baseline_model", comp.labels[0]), ("candidate_model", comp.labels[gate_result.candidate])):
        ET.SubElement(props, "property", name=key, value=str(value))
    for w in comp.warnings + gate_result.warnings:
        ET.SubElement(props, "property", name="warning", value=w)
    for c in checks:
        case = ET.SubElement(suite, "testcase", classname=f"evalsuite.{c.name}", name=c.metric, time="0")
        detail = (f"baseline={_num(c.baseline)} candidate={_num(c.candidate)} delta={_num(c.delta)} "
                  f"p={_num(c.pvalue)}: {c.message}")
        if c.status == "fail":
            ET.SubElement(case, "failure", message=c.message, type="regression").text = detail
        elif c.status == "skipped":
            ET.SubElement(case, "skipped", message=c.message)
        else:
            ET.SubElement(case, "system-out").text = detail
    lines = [summary] if summary else comp.warnings + gate_result.warnings
    ET.SubElement(suite, "system-out").text = "\n".join(lines + gate_result.notes)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
