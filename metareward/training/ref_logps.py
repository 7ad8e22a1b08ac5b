"""The reference model's log-probs of every pair, computed once and kept in the run store beside the pairs.

They depend on M_{t-1}, the tokenised pairs, truncation and precision, not on beta or the schedule, so a train stage
re-keyed by a DPO setting (or resumed) reads them back. Under ``accelerate launch`` the main process decides whether
they are reused and broadcasts the decision with the values, so every rank enters the same collectives; only the
main process writes the file. Heavy imports stay inside the functions.
"""

from __future__ import annotations


def ref_fingerprint(trainer, dataset) -> str:
    """What the reference log-probs depend on: the reference weights (TRL's own hash of them), the tokenised
    pairs, truncation and precision. Anything else (beta, learning rate, steps) leaves them valid."""
    import hashlib

    from trl import __version__ as trl_version

    h = hashlib.sha256()
    args = trainer.args
    h.update(repr((trainer._precompute_model_hash, args.max_length, getattr(args, "truncation_mode", None),
                   args.bf16, args.fp16, trl_version)).encode())
    for col in ("prompt_ids", "chosen_ids", "rejected_ids"):
        h.update(repr(dataset[col] if col in dataset.column_names else None).encode())
    return h.hexdigest()


def stored_ref_trainer(base):
    """``base`` (TRL's DPOTrainer) with its reference log-prob pass backed by a JSON file in the run store.

    TRL computes the reference log-probs in ``_precompute_ref_logps`` and caches them only in the datasets cache,
    keyed by an in-memory dataset's fingerprint: nothing survives a new process or machine (trl#3985), and under
    several processes each rank looks for the file the main process wrote in its own temporary folder
    (FileNotFoundError on rank 1, measured with 2 CPU processes). Overriding that one method keeps the rest TRL's.
    The main process decides (its fingerprint, its read of the store) and broadcasts, so all ranks enter the same
    collectives; only it writes the file.
    """
    from accelerate.utils import broadcast_object_list

    from metareward.runstore import store

    class StoredRefLogpsDPOTrainer(base):
        def __init__(self, *args, ref_logps_uri: str, **kwargs):
            self.ref_logps_uri = ref_logps_uri
            self.ref_logps_source = "computed"
            super().__init__(*args, **kwargs)

        def _precompute_ref_logps(self, dataset, name, batch_size):
            if name != "train":
                return super()._precompute_ref_logps(dataset, name, batch_size)
            is_main = self.accelerator.is_main_process
            fingerprint = ref_fingerprint(self, dataset) if is_main else None
            decided = [fingerprint, _read_stored(store, self.ref_logps_uri, fingerprint, len(dataset)) if is_main else None]
            broadcast_object_list(decided, from_process=0)
            fingerprint, stored = decided
            if stored is not None:
                self.ref_logps_source = "stored"
                chosen, rejected = stored["chosen"], stored["rejected"]
            else:
                chosen, rejected = _reference_pass(self, dataset, batch_size)
                if is_main:
                    store.write_json(self.ref_logps_uri, {"fingerprint": fingerprint, "rows": len(chosen),
                                                          "chosen": chosen, "rejected": rejected})
            self.accelerator.wait_for_everyone()
            return dataset.add_column("ref_chosen_logps", chosen).add_column("ref_rejected_logps", rejected)

    return StoredRefLogpsDPOTrainer


def _read_stored(store, uri: str, fingerprint: str, rows: int) -> dict | None:
    """The stored reference log-probs at ``uri`` when they were computed for ``fingerprint`` over ``rows`` pairs."""
    stored = store.read_json(uri) if store.exists(uri) else None
    if stored and stored.get("fingerprint") == fingerprint and len(stored["chosen"]) == rows:
        return stored
    return None


def _reference_pass(trainer, dataset, batch_size: int) -> tuple[list[float], list[float]]:
    """The reference model's summed log-probs of every pair's chosen and rejected completion, in dataset order, on
    every rank: each rank scores its share, gather_for_metrics joins them (TRL's own loop, without its cache file)."""
    import torch
    from torch.utils.data import DataLoader

    loader = trainer.accelerator.prepare(DataLoader(dataset, batch_size=batch_size, collate_fn=trainer.data_collator,
                                                    num_workers=0, shuffle=False))
    model = _reference_model(trainer)
    chosen, rejected = [], []
    with torch.no_grad():
        for batch in loader:
            c, r = trainer.accelerator.gather_for_metrics(trainer.compute_ref_log_probs(model, batch))
            chosen.append(c.float().cpu())
            rejected.append(r.float().cpu())
    return torch.cat(chosen).tolist(), torch.cat(rejected).tolist()


def _reference_model(trainer):
    """The frozen reference: the separate copy, or the policy before any step (its adapter off with LoRA); under
    ZeRO-3 without a copy, TRL's inference engine that gathers the sharded parameters."""
    if trainer.ref_model is None and trainer.is_deepspeed_enabled:
        if trainer._precompute_engine is None:
            from trl.models import prepare_deepspeed

            trainer._precompute_engine = prepare_deepspeed(trainer.model, trainer.accelerator)
        return trainer._precompute_engine
    return trainer.ref_model or trainer.model
