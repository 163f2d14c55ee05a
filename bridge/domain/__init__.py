"""The domain: one agent turn from question to streamed answer (conversations), Dust events to
progress (relay), the agent directory (agents)."""
