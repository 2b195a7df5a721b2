"""Stand-ins for the libraries that cannot run here: tensorrt and cuda-python/pycuda."""
