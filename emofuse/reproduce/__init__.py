"""``emofuse reproduce``: a paper's tables as ordinary run folders, one per row and seed.

``tdfnet`` names TDFNet's Table I and Table V rows (slug, split, head overrides); ``runner``
trains each row and seed into ``DIR/<slug>/seed<k>`` with ``emofuse.train.run.train_run`` (a
finished run is reused, an interrupted one resumes); ``table`` writes ``DIR/table.md`` and
``DIR/table.png`` next to the paper's published figures (``paper_figures.json``).
"""
