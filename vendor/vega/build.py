"""Rebuild ``template.html``: DVC's plots page with vega, vega-lite and vega-embed inlined.

``dvc plots show`` and ``dvc plots diff`` fill the page named by ``plots.html_template`` in
``.dvc/config`` (this directory's ``template.html``). DVC's own page loads the three
libraries from a public CDN and is blank offline; this one carries their minified UMD builds
inline, so every page DVC writes works from ``file://`` with no network, wherever ``-o`` puts
it (a ``<script src>`` relative to the template would break with each output folder).

The versions are pinned, and each npm tarball is checked against its registry integrity
hash before use. They are the newest releases of the majors DVC 3.67 targets: dvc-render
emits Vega-Lite v5 specs (``$schema .../vega-lite/v5.json``) and calls the global
``vegaEmbed`` from classic inline scripts, so UMD builds are needed (vega 6 and vega-lite 6
ship ES modules only). All three are BSD-3-Clause, (c) University of Washington Interactive
Data Lab: see LICENSE here; the notice is repeated in the page.

Run from anywhere (needs ``npm`` and the npm registry)::

    python vendor/vega/build.py
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "template.html"

# name -> (version, npm dist.integrity, file inside the tarball); loaded in this order.
PINS = {
    "vega": ("5.33.1", "sha512-1fArfVDUqVbb5z8n+/nVQb+VNBzx8svY6CrsyTK4Ujm4yrd9I1auoKxBAPXLCavY1LcrbHUskQbGUP8gXOzyQw==",
             "package/build/vega.min.js"),
    "vega-lite": ("5.23.0", "sha512-l4J6+AWE3DIjvovEoHl2LdtCUkfm4zs8Xxx7INwZEAv+XVb6kR6vIN1gt3t2gN2gs/y4DYTs/RPoTeYAuEg6mA==",
                  "package/build/vega-lite.min.js"),
    "vega-embed": ("6.29.0", "sha512-PmlshTLtLFLgWtF/b23T1OwX53AugJ9RZ3qPE2c01VFAbgt3/GSNI/etzA/GzdrkceXFma+FDHNXUppKuM0U6Q==",
                   "package/build/vega-embed.min.js"),
}

# dvc-render replaces these three placeholders by plain str.replace; {scripts} is left out
# on purpose: it is where DVC would insert its CDN <script> tags.
PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
{refresh_tag}
<title>DVC plots</title>
<!-- {versions}: BSD-3-Clause, Copyright (c) 2015, University of Washington Interactive
     Data Lab (vendor/vega/LICENSE). Inlined by vendor/vega/build.py; do not edit by hand. -->
<style>
body {{ font-family: sans-serif; margin: 16px; }}
body > div {{ display: inline-block; vertical-align: top; margin: 8px; }}
img {{ max-width: 640px; }}
table {{ border-spacing: 15px; }}
</style>
{scripts}
</head>
<body>
{{plot_divs}}
</body>
</html>
"""
PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")


def fetch(name: str, version: str, integrity: str, member: str, workdir: Path) -> str:
    """The minified build of ``name@version`` from its npm tarball, integrity checked."""
    subprocess.run(["npm", "pack", "--silent", f"{name}@{version}"], cwd=workdir, check=True,
                   stdout=subprocess.DEVNULL)
    tarball = workdir / f"{name}-{version}.tgz"
    algorithm, expected = integrity.split("-", 1)
    actual = base64.b64encode(hashlib.new(algorithm, tarball.read_bytes()).digest()).decode()
    if actual != expected:
        raise SystemExit(f"{tarball.name}: integrity {algorithm}-{actual}, expected {integrity}")
    with tarfile.open(tarball) as archive:
        source = archive.extractfile(member).read().decode("utf-8")
    # Inline <script> content ends at the first "</script"; placeholders would be replaced by DVC.
    for forbidden in ("</script", *PLACEHOLDERS):
        if forbidden in source:
            raise SystemExit(f"{name}@{version}: {member} contains {forbidden!r}; cannot inline it")
    return source


def build() -> str:
    with tempfile.TemporaryDirectory() as workdir:
        sources = [fetch(name, version, integrity, member, Path(workdir))
                   for name, (version, integrity, member) in PINS.items()]
    scripts = "".join(f'<script data-lib="{name}@{PINS[name][0]}">\n{source.strip()}\n</script>\n'
                      for name, source in zip(PINS, sources))
    versions = ", ".join(f"{name} {version}" for name, (version, _, _) in PINS.items())
    return PAGE.format(refresh_tag="{refresh_tag}", versions=versions, scripts=scripts.rstrip("\n"))


if __name__ == "__main__":
    TEMPLATE.write_text(build(), encoding="utf-8")
    print(f"wrote {TEMPLATE} ({TEMPLATE.stat().st_size // 1024} KiB)")
