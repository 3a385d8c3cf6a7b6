"""dldl_core: Deep Label Distribution Learning (Gao et al., IEEE TIP 2017).

Label distributions, the KL loss, models, face detection and alignment,
predictors, metrics and plots.
"""

__version__ = "0.1.0"
