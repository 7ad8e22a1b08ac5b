"""The stages of a run, runnable without Prefect: the run-store contract (`contract`: stage keys from config and
code digests, `execute`, `Output`), the models passed between stages (`modelrefs`), the three roles' requests and
records (`roles`), one function per stage (`stages`: (config, t, input manifests) -> output manifest), the
iteration-0 stages (`bootstrap`), the benchmark stage's public benchmarks (`benchmark`), the input checks before
a run (`preflight`), the out-of-memory messages (`faults`), a stage of a stored run called from the store
(`calls`, what `metareward stage` runs), a GPU stage as processes of its own, replicas at once (`fanout`), and
a stage process's claim on its host's GPUs (`gpu_slots`).

The top of the library: may import every other subpackage of metareward/, never Prefect, flows/ or tasks/.
"""
