"""The synthetic video-text benchmark: real mp4 files in the MSR-VTT layout, captions of four
types (static content, motion direction, event order, small objects) and time-reversed twins.

Results on it are always labelled SYNTHETIC: it checks the pipeline and relative behaviour of
the reducers on a CPU, it is not MSR-VTT.
"""

from tokred.synth.generate import GENERATOR_VERSION, SynthConfig, SynthMeta, generate, load_meta
from tokred.synth.scenes import TYPES, Scene, caption, render

__all__ = ["GENERATOR_VERSION", "TYPES", "Scene", "SynthConfig", "SynthMeta", "caption",
           "generate", "load_meta", "render"]
