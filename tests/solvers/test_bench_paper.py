"""The benchmark's 'paper' section through ``python -m benchmarks.run``'s entry point at a tiny size:
one record per row in table order, the paper's numbers beside fastsd's, each row's own problem."""
import json

from benchmarks import harness
from benchmarks.sections import paper


def test_paper_section_mri_and_images(tmp_path):
    sets = dict(paper_parts=["mri", "images"], paper_mri_size=32, paper_mri_TK=[1, 2], paper_mri_seeds=2,
                paper_img_size=32, paper_img_TK=[1, 2], paper_img_seeds=2, paper_dip_width=8,
                paper_skip=["mri4x/sdi-resample"])
    report = harness.run_report(tmp_path, "paper", **sets)
    assert report["sections"]["paper"] == "ran"
    assert not [r for r in report["results"] if "error" in r or "skipped" in r]
    names = [r["name"] for r in report["results"]]
    assert names[:3] == ["paper/mri4x/sdi", "paper/mri4x/sdi-no-eps", "paper/mri4x/dip"]  # table order
    assert "paper/mri4x/sdi-resample" not in names and len(names) == 6 + 5 + 3 * 4
    recs = {r["name"][6:]: r for r in report["results"]}
    assert recs["mri4x/sdi"]["paper"] == "39.21" and recs["mri4x/cg-sense"]["paper"] == "—"
    for r in recs.values():
        assert len(r["values"]) == 2 and r["seeds"] == [0, 1] and "CPU" in r["setup"]
    # each acceleration and task is its own problem (closures bound per row)
    assert recs["mri4x/zero-filled"]["values"] != recs["mri6x/zero-filled"]["values"]
    assert recs["inpaint/pinv"]["values"] != recs["sr/pinv"]["values"]
    assert recs["mri4x/cg-sense"]["value_mean"] > recs["mri4x/zero-filled"]["value_mean"]
    assert "| MRI 6x, L1-wavelet | — |" in next(tmp_path.glob("*.md")).read_text()


def test_paper_section_rejects_an_unknown_part(tmp_path):
    argv = ["--only", "paper", "--out", str(tmp_path), "--set", 'paper_parts=["tomo"]']
    assert harness.main(argv) == 0  # a failing section is recorded, the report still written
    (path,) = tmp_path.glob("*.json")
    assert "unknown part 'tomo'" in json.loads(path.read_text())["sections"]["paper"]
    assert set(paper.PARTS) == {"cs1d", "mri", "images"}
