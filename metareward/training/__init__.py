"""Training a model on records: DPO through TRL's DPOTrainer (M_{t-1} -> M_t), SFT for EFT (seed -> M_0), and
the multi-process `accelerate launch` on a machine with several GPUs.

May import the top-level modules (`metareward.records`, `metareward.config`, `metareward.progress`,
`metareward.hardware`: the precision choice and the GPU count) and `metareward.runstore` (the stored reference
log-probs); nothing of the engines. torch, transformers and TRL inside functions only.
"""
