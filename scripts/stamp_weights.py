"""Record in each model folder's config.json the sha256 of its model.safetensors, which loading checks.

    python scripts/stamp_weights.py                  # every folder of the bundled weights/
    python scripts/stamp_weights.py runs/gru runs/x  # these folders

For weights written on purpose outside `zoo.checkpoint.save_model` (which records the checksum itself), or
before config.json recorded it. It trusts the weights as they are now: stamp only folders you vouch for.
Each folder is then loaded as the zoo loads it, so a stamped folder is known to load.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout: zoo need not be installed
from zoo.checkpoint import CONFIG, CheckpointError, atomic_write, load_model, record_sha256  # noqa: E402

BUNDLED = Path(__file__).resolve().parents[1] / "weights"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="*", type=Path,
                   help=f"model folders (default: every folder of {BUNDLED} with a {CONFIG})")
    args = p.parse_args(argv)
    folders = args.folders or sorted(path.parent for path in BUNDLED.glob(f"*/{CONFIG}"))
    failed = 0
    for folder in folders:
        before = (folder / CONFIG).read_bytes() if (folder / CONFIG).is_file() else None
        try:
            sha256 = record_sha256(folder)
            load_model(folder)
            print(f"{folder}: sha256 {sha256}")
        except CheckpointError as e:   # a folder that does not load is left as it was
            if before is not None:
                atomic_write(folder / CONFIG, before)
            print(f"stamp_weights: {e}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
