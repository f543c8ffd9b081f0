"""Forced alignment: transcripts → word / syllable / phone tiers, stored as Praat TextGrids.

`pocketsphinx.py` is the aligner (bundled US-English model + CMUdict), `syllables.py` groups phones
into syllables, `textgrid.py` reads and writes TextGrids (ours and the Montreal Forced Aligner's),
`run.py` aligns a manifest. ALIGNERS names the aligners by the name a command would take.
"""

ALIGNERS = {"pocketsphinx": "emofuse.align.pocketsphinx:PocketSphinxAligner"}
