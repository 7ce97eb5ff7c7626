"""No tracked file may refer to a path outside the repository (users only have the repository)."""
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: references that only exist on a developer's machine: the sibling "shared" folder and /work/…
OUTSIDE = re.compile(r"\.\./shared|(?<![\w.])/work/")


def _tracked_files():
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / p for p in out.decode().split("\0") if p]


def test_no_tracked_file_refers_outside_the_repository():
    this = Path(__file__).resolve()
    bad = []
    for path in _tracked_files():
        if path.resolve() == this or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:              # binary files (figures) hold no paths to check
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                bad.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert not bad, "files refer to paths outside the repository:\n" + "\n".join(bad)


def test_science_notes_are_in_the_repository():
    text = (ROOT / "docs" / "science.md").read_text(encoding="utf-8")
    for section in ("## 1. Jansen–Rit", "## 7. tES physics", "## 10. Head models", "## References"):
        assert section in text
