"""Fitted-model runtimes: load a saved model folder and predict, with no training code.

Training (``training/``) builds these objects and saves them; serving (``serving/``) loads them.
Each module here owns one artifact format (native files: LightGBM text, ``.npz`` without pickle,
JSON, Parquet) and the prediction methods that run on it.
"""
