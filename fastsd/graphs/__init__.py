"""CUDA-graph capture and replay of a solver's repeated inner step (eager on CPU)."""
from fastsd.graphs.step_graph import BatchedNet, SDIStep, StepGraph, graph_safe_adam

__all__ = ["StepGraph", "SDIStep", "BatchedNet", "graph_safe_adam"]
