"""pipeline: the distributed system on Ray (search actors, Tune, video data, training) and MLflow tracking."""
