"""Offline evaluations behind `opencoach eval`: LoCoMo (memory), C-SSRS (crisis), ESConv (learning)."""
