"""Tandem learns your code: workspace data, evaluation through the serving engine, model
versions and the opt-in feedback log. Training itself (torch, peft) lives in
tandem_models.learn and runs in its own process; nothing here imports torch."""
