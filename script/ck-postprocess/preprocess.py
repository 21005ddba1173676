"""CK pre-processing hook shared by every program of this repository: a thin edge over ck_plugins.ckedge."""


def ck_preprocess(i):
    from ck_plugins.ckedge import preprocess

    return preprocess(i)
