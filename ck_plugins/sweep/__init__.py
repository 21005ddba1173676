"""The sweep: models x libs x batch sizes, recorded as CK experiment points (`python -m ck_plugins explore`).

One subprocess per (model, lib) measures all its batch sizes (fast: one torch import, one model build; on a GPU the
libs of a model that share cuDNN's autotuned plans share one subprocess, see plan.jobs) under a time limit
(unbreakable: a crash, OOM or hang records failed points and the sweep goes on). Every point carries the sweep's
id, so a sweep killed at any moment resumes where it stopped with no duplicate, while a new sweep of the same
configuration adds subpoints (.0002) to the same points. One worker per visible GPU; `--shard I/N`
splits a sweep deterministically over hosts. By job: config (presets, arguments), plan (tasks, shards, what is
left), journal (the sweep's file, what it recorded), worker (the subprocess), scheduler (the parent); the CK
route (CK's autotune pipeline) is in ckedge, with the rest of CK's dict protocol.
"""
