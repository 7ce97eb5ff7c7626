"""An assertion shared by the kernel tests (``from kernel_agreement import ...``: pytest puts this
folder on ``sys.path`` for the test modules in it)."""
import numpy as np


def assert_recorded_close(fast, ref, names, rel: float = 1e-9, what: str = ""):
    """Every recorded variable ``names`` of ``fast`` within ``rel`` times its scale of ``ref``.

    The scale is the variable's largest magnitude in ``ref`` (all-zero would compare nothing and
    fails); ``rtol`` is 0, so small values are held to the same absolute bound as large ones.
    """
    for name in names:
        scale = float(np.abs(ref[name]).max())
        assert scale > 0, f"{what}{name} is zero everywhere: nothing to compare"
        np.testing.assert_allclose(fast[name].values, ref[name].values, rtol=0, atol=rel * scale,
                                   err_msg=f"{what}{name}")
