"""Label-free hyper-parameter search (``pnpovss tune``): random search over pipeline settings,
scored by a CLIP reward (the default ``boundary``, :mod:`pnpovss.reward_region`; the paper's
masked-vs-blank ones, :mod:`pnpovss.reward`), selected by a rule, resumable and multi-process.

One module per job:

- :mod:`~pnpovss.search.space`: search spaces (named ones shipped in ``spaces/*.json``,
  :func:`list_spaces`), :func:`load_space`;
- :mod:`~pnpovss.search.cache`: every layer's and head's maps of an image from one
  forward/backward (:class:`MapCache`; the cost model);
- :mod:`~pnpovss.search.evaluator`: the CLIP-reward objective over a list of images
  (:class:`RewardEvaluator`; DropOut in the search);
- :mod:`~pnpovss.search.stats`: totals and the paired z-score against trial 0;
- :mod:`~pnpovss.search.trace`: a run directory's files (:class:`Trial` records in
  ``trace.jsonl``, ``run.json``, the lock);
- :mod:`~pnpovss.search.select`: the selection rules (``robust``, the default: keep the defaults
  unless a trial's lead is real; the paper's ``argmax``);
- :mod:`~pnpovss.search.loop`: :func:`run_search` (proposals, resume, applying the rule).

The tagging objective of the presence stage (:mod:`pnpovss.presence_tuning`) uses the same loop.
"""

from .cache import SALIENCIES, LayerHeadMaps, MapCache, layer_head_maps, model_fingerprint
from .evaluator import RewardEvaluator
from .loop import run_search
from .space import (DEFAULT_SPACE, DROPOUT_PARAMS, LAYER_HEAD_SPACE, MAP_PARAMS, MASK_PARAMS, SPACES_DIR, SearchSpace,
                    list_spaces, load_space, read_space)
from .stats import Z_CAP, paired_z, totals
from .trace import BEST_FILE, RUN_FILE, TRACE_FILE, TRACE_FORMAT, TraceLog, Trial

__all__ = ["BEST_FILE", "DEFAULT_SPACE", "DROPOUT_PARAMS", "LAYER_HEAD_SPACE", "LayerHeadMaps",
           "MAP_PARAMS", "MASK_PARAMS", "MapCache", "RUN_FILE", "RewardEvaluator", "SALIENCIES", "SPACES_DIR",
           "SearchSpace", "TRACE_FILE", "TRACE_FORMAT", "TraceLog", "Trial", "Z_CAP", "layer_head_maps", "list_spaces",
           "load_space", "model_fingerprint", "paired_z", "read_space", "run_search", "totals"]
