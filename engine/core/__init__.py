"""The engine's floor, below the policies and the runner: what a step declares, the protocol a
task run offers the policies, the batch they append through, the lifecycle machines and the
engine's exceptions. It imports only :mod:`onward.projections` and :mod:`onward.events`."""
