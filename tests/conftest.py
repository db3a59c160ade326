"""Shared fixtures: ``browser`` renders a report in headless Chromium (the Debian package) and
returns what a probe injected into the page saw (used by the report's browser tests)."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FIG_WIDTH_PX = 8 * 150  # every figure: 8 in at 150 dpi
WINDOW = (1400, 1000)

# Injected right after <head> of a copy of index.html: collects load / script errors and
# console.error calls from the start, and after the load event writes what it saw into the DOM
# (read back with --dump-dom): every image's natural and shown width, the page height before and
# after the page's own "collapse all" button.
PROBE = """<script>
window.__probe = {errors: []};
window.addEventListener("error", function (e) {
  var t = e.target;
  window.__probe.errors.push(t && t.tagName ? "failed to load " + t.tagName + " " + (t.src || t.href)
                                            : "script error: " + e.message);
}, true);
(function () {
  var orig = console.error;
  console.error = function () {
    window.__probe.errors.push("console.error: " + Array.prototype.join.call(arguments, " "));
    return orig.apply(console, arguments);
  };
})();
window.addEventListener("load", function () {
  var main = document.querySelector("main");
  var out = {
    images: [].slice.call(document.images).map(function (i) {
      return {src: i.getAttribute("src"), complete: i.complete, natural_width: i.naturalWidth,
              shown_width: Math.round(i.getBoundingClientRect().width)};
    }),
    main_width: Math.round(main.getBoundingClientRect().width),
    height_open: document.documentElement.scrollHeight,
    errors: window.__probe.errors
  };
  var collapse = [].slice.call(document.querySelectorAll("nav button")).filter(function (b) {
    return b.textContent.trim() === "collapse all";
  });
  if (collapse.length) { collapse[0].click(); }
  out.height_collapsed = document.documentElement.scrollHeight;
  out.errors = window.__probe.errors;
  var pre = document.createElement("pre");
  pre.id = "tatvpr-probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def chromium() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("no headless Chromium on PATH (looked for " + ", ".join(BROWSERS) + "): this test renders the "
                "report in a real browser. Install the Debian package: `apt-get install -y chromium` "
                "(`make test` installs it when run as root).")


def load_in_browser(index: Path, profile: Path) -> tuple[dict, list[str]]:
    """(what the probe saw, the console lines Chromium logged) for ``index`` loaded from disk."""
    html = index.read_text()
    assert html.count("<head>") == 1
    page = index.with_name("_browser_probe.html")  # same folder: the figures' relative paths resolve
    page.write_text(html.replace("<head>", "<head>\n" + PROBE, 1))
    try:
        proc = subprocess.run(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-extensions", "--no-first-run", f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
             "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=180)
    finally:
        page.unlink()
    m = re.search(r'<pre id="tatvpr-probe">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"the probe did not run (rc {proc.returncode}); stderr:\n{proc.stderr[-3000:]}"
    probe = json.loads(m.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"')
                       .replace("&amp;", "&"))
    console = [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln]
    return probe, console


def png_width(path: Path) -> int:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">I", head[16:20])[0]




@pytest.fixture
def browser():
    """``browser.load(index, profile)`` -> (probe, console lines); ``browser.png_width(path)``;
    ``browser.FIG_WIDTH_PX``: the width every report figure is written at."""
    return SimpleNamespace(load=load_in_browser, png_width=png_width, FIG_WIDTH_PX=FIG_WIDTH_PX)
