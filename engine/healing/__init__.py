"""Self-healing policies: error signatures, fixes and their remedies, retry policies, circuit
breakers, and the healer that decides among them when a step raises."""
