"""Segment an image with the Python API and save the overlay.

    python examples/segment_api.py examples/shapes.png circle,star --model toy

With internet access, ``--model Salesforce/blip-itm-large-flickr`` (the default) downloads the
real BLIP checkpoint on first use.
"""

import argparse
import tempfile
from pathlib import Path

from pnpovss import Segmenter

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("image")
parser.add_argument("classes", help="comma-separated class names")
parser.add_argument("--model", default="Salesforce/blip-itm-large-flickr")
parser.add_argument("--out", default=None, help="overlay PNG to write [default: in a new temporary directory]")
args = parser.parse_args()

seg = Segmenter.from_pretrained(args.model, device="auto")
result = seg.segment(args.image, args.classes.split(","))
for name, fraction in result.fractions().items():
    print(f"{name:>20s}: {100 * fraction:5.1f}% of pixels")
# The image encoding is cached: asking again about the same image skips the vision encoder.
again = seg.segment(args.image, args.classes.split(",")[:1], threshold=0.3)
out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="pnpovss-example-")) / "overlay.png"
result.overlay().save(out)
print(f"overlay written to {out}")
