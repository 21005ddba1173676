"""Golden file check: `analyse --check-summary FILE` says whether a committed summary.json is what the points give
(CI runs it on the committed H200 report, beside the suite: a change that moves a published figure fails there,
not silently). After a change meant to move figures, regenerate the report and commit both:

    python -m ck_plugins analyse --repo . --title "ck-precision-bench on an NVIDIA H200" \\
        --out docs/results/nvidia-h200/report --latency-budget-ms 5

Here the check itself is tested on a fixture repository (never the live experiment/)."""
import json

from ck_plugins.cli import main
from fixtures import build as fixtures


def test_check_summary_passes_on_its_own_summary_and_names_a_moved_figure(tmp_path, capsys):
    repo = fixtures.build(tmp_path / "fixtures")["sweep"]
    golden = tmp_path / "summary.json"
    assert main(["analyse", "--repo", str(repo), "--latency-budget-ms", "5", "--summary", str(golden)]) == 0
    assert main(["analyse", "--repo", str(repo), "--latency-budget-ms", "5", "--check-summary", str(golden)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("0 figures differ")
    summary = json.loads(golden.read_text())
    summary["models"][0]["time_per_image_ms"] *= 1.01
    golden.write_text(json.dumps(summary))
    assert main(["analyse", "--repo", str(repo), "--latency-budget-ms", "5", "--check-summary", str(golden)]) == 1
    assert "/models/0/time_per_image_ms:" in capsys.readouterr().out
