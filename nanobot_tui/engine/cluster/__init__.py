"""A pool of llama.cpp model hosts across a Ray cluster, sampled as one endpoint."""
