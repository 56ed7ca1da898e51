"""Video data: PyAV decoding (decode), transforms, dataset formats, synthetic data, health check (no Ray), and
Ray Data datasets (ray_data, the only module here that imports ray). See docs/video.md."""
