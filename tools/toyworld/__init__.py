"""How the toy world's shipped models were made (training, not runtime) and its no-model baseline.

``train_itm`` (BLIP and BridgeTower, one loop; ``train_blip`` is its ``--arch blip`` command) and ``train_clip``
write the directories in ``pnpovss/toyworld/weights/``; the
recipe and the exact commands are in :mod:`pnpovss.toyworld`'s docstring. ``baselines`` holds the
``no_vlm`` row of ``bench/toyworld.py``. For the shape world, ``learnability`` measures how fast a small
CNN and the toy BLIP's vision tower learn its outlines from labels, and ``distill`` gives a tower a CNN's
shape features before ``train_itm --init`` (see ``docs/results/shape-world.md``).
"""
