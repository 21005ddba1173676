"""The sweep's entry point: `python script/explore-batch-size-libs-models/explore.py --config default`.

Same as `python -m ck_plugins explore ...`; the JSON configurations beside this file are its presets.
"""
import sys

from ck_plugins.cli import main

sys.exit(main(["explore", *sys.argv[1:]]))
