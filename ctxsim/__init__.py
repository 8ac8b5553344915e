"""ctxsim: contextual-similarity metric learning (Liao, Tsiligkaridis, Kulis, ICML 2023).

Importing ``ctxsim`` is cheap: subpackages (and torch) load only when used. Dataset, loss and
arch names live in ``ctxsim.names``.
"""

__version__ = "0.1.0"
