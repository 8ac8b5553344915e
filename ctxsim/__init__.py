"""ctxsim: contextual-similarity metric learning (Liao, Tsiligkaridis, Kulis, ICML 2023).

Importing ``ctxsim`` is cheap: subpackages (and torch) load only when used.
"""

__version__ = "0.1.0"

DATASETS = ("cub", "cars", "sop", "inat", "inshop", "fashion-mnist", "digits", "synthetic")
PAPER_DATASETS = ("cub", "cars", "sop", "inat", "inshop")
RESOLUTIONS = (224, 256)
