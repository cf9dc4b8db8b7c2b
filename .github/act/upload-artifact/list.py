"""What actions/upload-artifact v7 would upload for PATHS: files under each path, without any
whose path (relative to the workspace) has a part starting with "." unless HIDDEN is true."""

import os
import sys
from pathlib import Path

name, hidden = os.environ["NAME"], os.environ["HIDDEN"].strip().lower() == "true"
found: list[Path] = []
skipped: list[Path] = []
for entry in os.environ["PATHS"].split("\n"):
    entry = entry.strip()
    if not entry:
        continue
    base = Path(entry)
    for f in sorted([base] if base.is_file() else base.rglob("*") if base.is_dir() else []):
        if f.is_file():
            (found if hidden or not any(p.startswith(".") for p in f.parts) else skipped).append(f)
for f in skipped:
    print(f"not uploaded (hidden; include-hidden-files is false): {f}")
for f in found:
    print(f"would upload: {f} ({f.stat().st_size} bytes)")
print(f"artifact {name}: {len(found)} files (stand-in: act's server cannot take v7 uploads)")
if not found and os.environ["IF_NONE"] == "error":
    print(f"::error::no files found for artifact {name}")
    sys.exit(1)
if not found and os.environ["IF_NONE"] == "warn":
    print(f"::warning::no files found for artifact {name}")
