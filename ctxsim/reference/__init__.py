"""The rest of the seed: the authors released models, the ablation study and the toy experiment."""
