"""Training a model on records: DPO through TRL's DPOTrainer (M_{t-1} -> M_t), SFT for EFT (seed -> M_0), and
the multi-process `accelerate launch` on a machine with several GPUs.

May import `metareward.records`, `metareward.config`, `metareward.progress`, `metareward.runstore` (the stored
reference log-probs) and `metareward.engines` (the precision choice); torch, transformers and TRL inside
functions only.
"""
