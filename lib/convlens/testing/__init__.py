"""Hooks for convlens's own tests, inert in every real run:

    faults.py  fault injection (NaN losses, killed or held workers, killed analysis tasks), planned
               through CONVLENS_FAULTS and fired by the training loop and the analysis runner
"""
