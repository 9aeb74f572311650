"""ssm: state space models derived and tested — the package behind the SSM book.

Every public function names the equation of the book it implements; see the notation page
for the symbols and shapes. Each module mirrors a chapter.
"""

from ssm.conv import causal_conv
from ssm.discretize import discretize
from ssm.hippo import hippo, hippo_coefficients, hippo_reconstruct, legendre_basis
from ssm.kernels import ssm_kernel
from ssm.layers import DSS, S4, S4D, SequenceBlock, ssm_parameters
from ssm.mamba import Mamba, MambaBlock, MambaStack
from ssm.s4 import dplr, s4_kernel
from ssm.s4d import dss_kernel, s4d_init, s4d_kernel
from ssm.scan import linear_scan, selective_scan
from ssm.utils import best_time, default_device, seed_everything, set_plot_style

__version__ = "0.1.0"

__all__ = [
    "dplr",
    "s4_kernel",
    "s4d_init",
    "s4d_kernel",
    "dss_kernel",
    "S4",
    "S4D",
    "DSS",
    "SequenceBlock",
    "ssm_parameters",
    "causal_conv",
    "discretize",
    "hippo",
    "hippo_coefficients",
    "hippo_reconstruct",
    "legendre_basis",
    "ssm_kernel",
    "best_time",
    "default_device",
    "Mamba",
    "MambaBlock",
    "MambaStack",
    "linear_scan",
    "selective_scan",
    "seed_everything",
    "set_plot_style",
]
