"""The shared core of the pipeline stages: image I/O, annotations, cubes, the model, metrics
and outputs."""
