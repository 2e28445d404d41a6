"""The README's claims that code can check: its error table is the code's status table."""
import re

from app.errors import STATUS_TABLE
from tests.conftest import ROOT


def _markdown_table(text: str, header: list[str]) -> list[list[str]]:
    """The rows of the first table whose header row is `header`."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if [c.strip() for c in line.strip().strip("|").split("|")] == header:
            rows = []
            for row in lines[i + 2:]:  # past the |---| row
                if not row.startswith("|"):
                    break
                rows.append([c.strip() for c in row.strip().strip("|").split("|")])
            return rows
    raise AssertionError(f"no table with header {header} in the README")


def test_readme_error_table_is_the_code_status_table():
    documented = {}
    for status, types, _ in _markdown_table((ROOT / "README.md").read_text(), ["status", "type", "when"]):
        codes = [int(s) for s in status.split("/")]
        names = re.findall(r"`(\w+)`", types)
        # "404 / 405 | `not_found` / `method_not_allowed`" pairs up; one status may hold several types.
        assert len(codes) in (1, len(names)), (status, types)
        for i, name in enumerate(names):
            assert name not in documented, f"{name} documented twice"
            documented[name] = codes[i if len(codes) > 1 else 0]
    assert documented == STATUS_TABLE


def test_readme_interop_error_tables_are_the_protocols_tables():
    from app.protocols import kserve, tei

    readme = (ROOT / "README.md").read_text()
    kserve_rows = _markdown_table(readme, ["project type", "KServe v1 / v2 status"])
    assert {re.findall(r"`(\w+)`", t)[0]: int(s) for t, s in kserve_rows} == {c.type: s for c, s in kserve.STATUS.items()}
    tei_rows = _markdown_table(readme, ["project error", "TEI status", "error_type"])
    # One row per entry of tei.TABLE, in its (first match) order.
    assert [(int(s), k.strip("`")) for _, s, k in tei_rows] == [(s, k) for _, s, k in tei.TABLE]
