"""Using a trained network: labels for one video (``e3d predict``) and batch inference on Ray Data.

- :mod:`.views`: a video -> its evaluation views, decoded exactly as the training job's multi-view evaluation
  (:mod:`pipeline.video.ray_data`'s ``eval_dataset``) decodes them. No Ray.
- :mod:`.single`: top-k labels of a few videos in this process (``e3d predict``). No Ray.
- :mod:`.batch`: ``jobs/predict.py``: decoding as Ray Data CPU tasks, the network on an actor pool, the softmax
  averaged per video on the driver, one Parquet part per finished block of videos (resumable).
- :mod:`.inputs`: the videos to label (any dataset format, or a folder of unlabelled videos).

Importing this package imports nothing heavy; the modules import torch, PyAV or Ray themselves.
"""
