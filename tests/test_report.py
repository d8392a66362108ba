"""The run report: self-contained HTML that renders in headless Chromium with every section."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import in_ci
from segmatch.api import demo_config, run_pipeline
from segmatch.cli import app

SECTIONS = (
    "overview", "timeline", "sweep", "sizes", "heatmap", "scatter", "lookalikes", "quality",
    "columns",
)  # fmt: skip
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--enable-logging=stderr", "--v=0",
]  # fmt: skip


@pytest.fixture(scope="module")
def reported(customers_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    first = run_pipeline(demo_config(customers_path, out, seed=3, tracking=False))
    second = run_pipeline(demo_config(customers_path, out, seed=4, tracking=False))
    return first, second, out


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if in_ci():
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package")
        pytest.skip("chromium is not installed (Debian package chromium)")
    return found


def test_the_report_is_self_contained_and_has_every_section(reported):
    _, second, _ = reported
    page = Path(second.outputs["report"]).read_text()
    for section in (*SECTIONS, "transitions"):
        assert f'id="{section}"' in page, section
    assert page.count("<svg") >= 5
    fetched = re.findall(r'(?:src|href)="(https?:[^"]+)"', page)
    assert fetched == []  # nothing to download: it opens offline
    assert "<script" not in page
    assert Path(second.outputs["report"]).stat().st_size < 5 * 2**20
    # The demo's categorical features: top levels beside the medians, roles in the plan.
    assert "<td>channel</td>" in page and re.search(r"<td>(web|store|app|phone) \d+%;", page)
    assert "<td>updated_at</td><td>ordering</td>" in page


def test_the_report_renders_in_headless_chromium(reported, tmp_path):
    browser = chromium()
    _, second, _ = reported
    url = Path(second.outputs["report"]).as_uri()
    profile = ["--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run(
        [browser, *CHROMIUM_FLAGS, *profile, "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    for section in SECTIONS:
        assert f'id="{section}"' in dom.stdout, section
    console_errors = [
        line
        for line in dom.stderr.splitlines()
        if "CONSOLE" in line or "Failed to load" in line or "Uncaught" in line
    ]
    assert console_errors == []
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            browser,
            *CHROMIUM_FLAGS,
            *profile,
            "--window-size=1280,4800",
            f"--screenshot={shot}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 50_000


# Measures the laid-out page: every table, figure and paragraph inside its card, and no legend
# over a plot's data area (the report's figures name them: legend-*, plot-area-*).
LAYOUT_PROBE = """<script>
const problems = [];
for (const section of document.querySelectorAll("section")) {
  const card = section.getBoundingClientRect();
  for (const element of section.querySelectorAll("table, figure, svg, p, h2, h3")) {
    const box = element.getBoundingClientRect();
    if (box.right > card.right + 1 || box.left < card.left - 1) {
      problems.push(`${section.id}: a ${element.tagName} spans ${box.left}..${box.right} `
        + `outside its card ${card.left}..${card.right}`);
    }
  }
}
const areas = [...document.querySelectorAll('[id^="plot-area"]')];
const legends = [...document.querySelectorAll('[id^="legend"]')];
for (const legend of legends) {
  const l = legend.getBoundingClientRect();
  for (const area of areas) {
    const a = area.getBoundingClientRect();
    if (l.left < a.right && l.right > a.left && l.top < a.bottom && l.bottom > a.top) {
      problems.push(`${legend.id} covers ${area.id}`);
    }
  }
}
const probe = document.createElement("pre");
probe.id = "layout-probe";
probe.textContent = JSON.stringify({problems, legends: legends.length, areas: areas.length});
document.body.appendChild(probe);
</script>"""


def layout_problems(report: Path, tmp_path: Path, width: int) -> dict:
    probed = tmp_path / f"probed-{width}.html"
    probed.write_text(report.read_text().replace("</body>", LAYOUT_PROBE + "</body>"))
    dom = subprocess.run(
        [
            chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / f'profile-{width}'}",
            f"--window-size={width},900",
            "--dump-dom",
            probed.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    found = re.search(r'<pre id="layout-probe">(.*?)</pre>', dom.stdout, re.S)
    assert found, dom.stdout[-2000:]
    return json.loads(html.unescape(found.group(1)))


@pytest.mark.parametrize("width", [1400, 1024])
def test_nothing_overflows_its_card_and_no_legend_covers_data(reported, tmp_path, width):
    _, second, _ = reported
    measured = layout_problems(Path(second.outputs["report"]), tmp_path, width)
    assert measured["legends"] >= 2 and measured["areas"] >= 3
    assert measured["problems"] == []


def test_the_report_explains_what_it_draws(reported):
    _, second, _ = reported
    page = Path(second.outputs["report"]).read_text()
    rejected = [c for c in second.candidates if c.rejected]
    assert ("✕ marks a rejected k" in page) == bool(rejected)
    # The timeline says where the time between the stages went.
    assert re.search(r"The stages took [\d.]+ s of the [\d.]+ s .* between them went to", page)


def test_report_command_rebuilds_a_report_from_stored_outputs(reported):
    first, _, out = reported
    report = Path(first.outputs["report"])
    report.unlink()
    rebuilt = CliRunner().invoke(app, ["report", first.run_id, "--output", str(out)])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert report.exists() and 'id="sweep"' in report.read_text()
    missing = CliRunner().invoke(app, ["report", "nope", "--output", str(out)])
    assert missing.exit_code == 2 and "no run 'nope'" in missing.output
