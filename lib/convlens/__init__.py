"""convlens: train ResNets with Ray Train, sweep with Ray Tune, and look inside them."""
__version__ = "0.1.0"
