"""Jacobian singular-spectrum analysis (paper Sec. 3, Fig. 2, App. C): does augmentation
enlarge the small singular values of the network Jacobian and leave its leading singular
vectors in place, on *your* model and augmentation policy?

    from coreaug_fast import analysis
    res = analysis.jacobian_spectrum(model, images, labels, augment=my_policy, classes=[0, 1, 2])
    res.measures.value_diff   # (30,) mean σ(augmented) − σ(original) per bin, smallest first
    res.measures.angle        # (30,) mean principal angle per bin, radians

``python -m coreaug_fast.analysis`` runs it from the command line and writes JSON and PNG
plots (on scikit-learn's bundled digits with a small MLP when given no data).
"""
from .measures import BinnedMeasures, bin_bounds, binned_measures, principal_angles
from .plots import plot_bins, plot_histogram
from .spectrum import JacobianSpectrum, Spectrum, jacobian_spectrum, network_jacobian, subsample

__all__ = [
    "BinnedMeasures",
    "JacobianSpectrum",
    "Spectrum",
    "bin_bounds",
    "binned_measures",
    "jacobian_spectrum",
    "network_jacobian",
    "plot_bins",
    "plot_histogram",
    "principal_angles",
    "subsample",
]
