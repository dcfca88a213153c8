"""The notebooks run top to bottom on the same engine (executed in a scratch folder), and
what they keep in the repository names no folder of the machine that ran them."""

import json
import re
import shutil
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
MACHINE_PATH = re.compile(r"(?<![\w.])(/(home|root|tmp|work|Users|var/folders)/|[A-Z]:\\\\)")


def execute(name: str, folder: Path) -> list[str]:
    """Run a copy of notebook ``name`` in ``folder``; the text of its outputs, by cell."""
    shutil.copy(NOTEBOOKS / name, folder / name)
    notebook = nbformat.read(folder / name, as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=900, resources={"metadata": {"path": folder}}
    ).execute()
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors[0].get("evalue")
    return ["".join(o.get("text", "") for o in c.get("outputs", [])) for c in notebook.cells]


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_a_kept_notebook_names_no_machine_folder(path: Path) -> None:
    outputs = [output for cell in json.loads(path.read_text())["cells"]
               for output in cell.get("outputs", [])]
    assert outputs, "kept without its outputs"
    text = json.dumps([[o.get("text"), o.get("data", {}).get("text/plain"), o.get("traceback")]
                       for o in outputs])
    assert not MACHINE_PATH.search(text), MACHINE_PATH.search(text)


@pytest.mark.slow
def test_the_tuning_notebook_writes_a_config_only_after_its_held_out_check(tmp_path) -> None:
    text = "\n".join(execute("tuning.ipynb", tmp_path))
    assert re.search(r"tuned +caught in time", text) and re.search(r"shipped +caught", text)
    written = (tmp_path / "tuned_scoring_config.json").exists()
    assert written == ("\nwrote tuned_scoring_config.json" in f"\n{text}")
    assert written != ("not written: on held-out seeds" in text)
    assert not MACHINE_PATH.search(text)


@pytest.mark.slow
def test_the_telemetry_notebook_replays_a_users_file_and_explains_its_revocations(
    tmp_path, monkeypatch
) -> None:
    from intentwatch.simulation.fleet import FleetSpec, generate, write_jsonl

    recording = tmp_path / "recorded" / "events.jsonl"
    write_jsonl(generate(FleetSpec(seed=8, agents_per_role=1, history_days=2.0,
                                   attack_days=1.0, attack_rate=0.3)), recording)
    with recording.open("a") as lines:
        lines.write('{"kind": "toolcall", "agent_id": "not a spiffe id"}\n')
    count = len(recording.read_text().splitlines())
    monkeypatch.setenv("INTENTWATCH_EVENTS", str(recording))
    text = "\n".join(execute("your_telemetry.ipynb", tmp_path))
    assert "events.jsonl: " in text and "1 unreadable line(s)" in text
    assert f"events.jsonl:{count}: " in text
    assert re.search(r"[1-9]\d* for cause", text)
    assert "revoked: " in text and "the call: " in text and "components: " in text
    assert not (tmp_path / "sample_events.jsonl").exists()
