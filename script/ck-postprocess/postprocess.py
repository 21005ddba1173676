"""CK post-processing hook shared by every program of this repository: a thin edge over ck_plugins.ckedge."""


def ck_postprocess(i):
    from ck_plugins.ckedge import postprocess

    return postprocess(i)
