"""Developer tools that are not part of the installed package: test and benchmark model builders
(``tools.testing``) and the toy world's training code (``tools.toyworld``).

Run from the repository root (``python -m tools.toyworld.train_blip ...``); the test suite and the
benchmarks put the repository root on ``sys.path`` themselves.
"""
