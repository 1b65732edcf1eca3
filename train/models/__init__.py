"""The models pairforge trains: the Stage I standardizer (``standardizer/``) and the tiny base
models that tests, the demo and the benchmarks build from configs (``tiny.py``). torch, diffusers
and transformers are imported inside functions and in the submodules that need them only."""
