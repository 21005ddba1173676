"""CK module: a thin adapter over ck_plugins (dict in, dict out). `ck analyse precision-bench --tags=...`."""

cfg = {}  # filled by CK
work = {}  # filled by CK
ck = None  # the CK kernel, set by CK


def init(i):
    return {"return": 0}


def analyse(i):
    from ck_plugins.ckedge import analyse as run

    return run(i)


def submit(i):
    from ck_plugins.ckedge import submit as run

    return run(i)
