"""The shipped dashboards are well-formed and use fields the sinks write and map."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from copydicom.sinks.elasticsearch import index_template

DASHBOARDS = Path(__file__).resolve().parents[3] / "config" / "dashboards"


def test_kibana_saved_objects() -> None:
    objects = [json.loads(line) for line in (DASHBOARDS / "kibana_copydicom_dose.ndjson").read_text().splitlines()]
    ids = {(o["type"], o["id"]) for o in objects}
    for o in objects:
        for ref in o["references"]:
            assert (ref["type"], ref["id"]) in ids
    mapped = index_template("dicom")["template"]["mappings"]["properties"]
    fields = set()
    for o in objects:
        if o["type"] == "visualization":
            state = json.loads(o["attributes"]["visState"])
            fields |= {a["params"]["field"] for a in state["aggs"]}
    assert fields == {"StudyInstanceUID", "StudyDate", "Modality", "dlp", "ctdivol", "protocol", "dap", "procedure"}
    assert fields <= set(mapped)
    assert mapped["StudyDate"]["type"] == "date" and mapped["dlp"]["type"] == "float"


def test_splunk_dashboard() -> None:
    root = ET.parse(DASHBOARDS / "splunk_copydicom_dose.xml").getroot()
    queries = [q.text or "" for q in root.iter("query")]
    assert len(queries) == 3
    assert all("dedup doc_id" in q and 'index="$idx$"' in q for q in queries)
    used = {m for q in queries for m in re.findall(r"\b(dlp|ctdivol|dap|protocol|procedure|StudyDate|Modality)\b", q)}
    assert used == {"dlp", "ctdivol", "dap", "protocol", "procedure", "StudyDate", "Modality"}
