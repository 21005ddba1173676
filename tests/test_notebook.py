"""The analysis notebook runs top to bottom (its code cells executed in order, from its own folder)."""
import json
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parent.parent / "script" / "analysis-notebook" / "analysis.ipynb"


def test_notebook_cells_run_in_order(monkeypatch):
    monkeypatch.chdir(NOTEBOOK.parent)
    cells = [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]
    namespace: dict = {}
    for cell in cells:
        exec(compile("".join(cell["source"]), str(NOTEBOOK), "exec"), namespace)
    assert not namespace["loaded"].skipped and not namespace["best"].empty
    ideal = namespace["ideal"]
    assert (ideal.summary["total_ms"] <= ideal.summary["best_single_lib_layers_ms"]).all() and len(ideal.summary) >= 1
    assert namespace["table"].shape[0] >= 5  # ResNet-50 layers over 2% of the time
