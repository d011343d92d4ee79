"""lrprec: explainable visual recommendation with LRP."""
__version__ = "0.1.0"
