"""Your own keywords in minutes: a new head on the default model's speech backbone.

People who want keyword spotting want *their* words ("lights on", "next slide"). The shipped
default model (its fp32 export, ``service/default_model_fp32``) is a speech backbone trained on
many voices; a new head on top of it, trained on synthesised speech of the new phrases (plus a
few recordings of the user, when given), learns them on two CPU cores in minutes. The run, one
module per job:

- :mod:`.recipe`: every knob (:class:`KeywordRecipe`) and what a run returns;
- :mod:`.speech`: what to say and by which espeak-ng voice (phrases, near misses, ordinary
  words, Speech Commands words, non-speech), whole voice variants held out; the user's
  recordings;
- :mod:`.views`: the window the phrases' durations ask for, and each clip placed in it and
  augmented into log-mel views, in parallel processes;
- :mod:`.backbone`: the shipped graph, run by ONNX Runtime up to the features the head is trained
  on, and rebuilt in PyTorch for the export;
- :mod:`.head`: the new head and its training on the cached features;
- :mod:`.artifact`: the export as an ordinary verified artifact (int8 when it holds) and the
  held-out voices' summary, measured on the written artifact;
- :mod:`.run`: :func:`train_keywords`, the whole run.
"""

from arinext.training.keywords.recipe import (
    KeywordRecipe,
    KeywordResult,
    ProgressCallback,
    head_name,
)
from arinext.training.keywords.run import train_keywords
from arinext.training.keywords.views import phrase_window

__all__ = [
    "KeywordRecipe",
    "KeywordResult",
    "ProgressCallback",
    "head_name",
    "phrase_window",
    "train_keywords",
]
