"""neurotwin-dash: personalised neural-mass brain models for transcranial electrical stimulation."""

__version__ = "0.1.0"
