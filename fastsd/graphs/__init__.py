"""CUDA-graph capture and replay of a solver's repeated inner step (eager on CPU)."""
from fastsd.graphs.step_graph import BatchedNet, SDIStep, StepGraph

__all__ = ["StepGraph", "SDIStep", "BatchedNet"]
