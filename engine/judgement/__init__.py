"""Judgement policies: the decision rulebook, confidence-based execution of actions, approvals,
graceful degradation, the error budget and the flow monitor."""
